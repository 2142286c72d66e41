"""Quota blocks shared by every process: a block one worker learns is announced on the
compacted `platform.throttled` topic (key `<platform>:<account>`), a broadcast listener in
every worker and in the gateway reads that topic into the process's throttle table, and the
live publisher and sync workers are counted to divide a calls-per-second limit."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import cast

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

from adplatforms.quota import Block, PlatformQuota, ThrottleTable
from shared.background import BackgroundLoop
from shared.envelope import Envelope, new_event
from shared.events import Platform, PlatformThrottled
from shared.producer import OutgoingRecord
from shared.runtime import ConsumerRuntime, HandlerContext, HandlerOutcome
from shared.service import ServiceKit
from shared.settings import PlatformSettings

log = logging.getLogger(__name__)

TOPIC = "platform.throttled"
# The groups whose members call the platforms and share a calls-per-second limit.
PLATFORM_GROUPS = ("publisher", "sync")


def throttle_key(platform: str, account: str) -> str:
    return f"{platform}:{account}"


class ThrottleListener:
    """Fills a throttle table from `platform.throttled` (every block any process announced)."""

    def __init__(self, table: ThrottleTable) -> None:
        self.table = table

    def handle(
        self, envelope: Envelope, event: PlatformThrottled, ctx: HandlerContext
    ) -> HandlerOutcome | None:
        self.table.block(
            Block(event.platform, event.account, event.until.timestamp(), event.reason)
        )
        return None


def throttle_listener(kit: ServiceKit, table: ThrottleTable) -> ConsumerRuntime:
    """The broadcast runtime that keeps `table` up to date in this process."""
    return kit.broadcast_listener("throttles", PlatformThrottled, ThrottleListener(table).handle)


def announcer(kit: ServiceKit) -> Callable[[Block], None]:
    """Produces a block to `platform.throttled` without waiting: a lost announcement costs only
    a call from another worker, which then learns the block from the platform itself."""
    topic = kit.names.topic(TOPIC)

    def announce(block: Block) -> None:
        event = PlatformThrottled(
            platform=cast(Platform, block.platform),
            account=block.account,
            until=datetime.fromtimestamp(block.until, UTC),
            reason=block.reason,
            signalled_at=datetime.now(UTC),
        )
        envelope = new_event(
            event, source=kit.service, subject=throttle_key(block.platform, block.account)
        )
        kit.producer.send_nowait([OutgoingRecord.of(topic, envelope)])
        log.warning(
            "%s account %s throttled until %s: %s",
            block.platform,
            block.account,
            event.until.isoformat(),
            block.reason,
        )

    return announce


class LiveWorkers(BackgroundLoop):
    """How many publisher and sync workers are alive, from their consumer groups' members
    (refreshed every `interval` seconds; the last count stands while the broker is away)."""

    thread_name = "live-workers"

    def __init__(self, bootstrap: str, groups: list[str], interval: float) -> None:
        super().__init__()
        self._admin = AdminClient({"bootstrap.servers": bootstrap})
        self._groups = groups
        self._interval = interval
        self.count = 1

    def run(self) -> None:
        while not self._stop.is_set():
            self.refresh()
            self._stop.wait(self._interval)

    def refresh(self) -> int:
        """Count again; the count (the previous one when the broker does not answer)."""
        try:
            described = self._admin.describe_consumer_groups(self._groups, request_timeout=5)
            members = sum(len(f.result(timeout=10).members) for f in described.values())
        except (KafkaException, TimeoutError) as exc:
            log.debug("counting live workers failed: %s", exc)
            return self.count
        self.count = max(1, members)
        return self.count


@dataclass
class SharedQuota:
    """A worker's quota and the parts that keep it shared (started with the worker)."""

    quota: PlatformQuota
    components: list[BackgroundLoop] = field(default_factory=list)
    listener: ConsumerRuntime | None = None

    def ready(self) -> bool:
        return self.listener is None or self.listener.ready()


def shared_quota(kit: ServiceKit, settings: PlatformSettings) -> SharedQuota:
    """The quota of a publisher or sync process: its throttle table filled by the broadcast,
    blocks announced, and the calls-per-second limits divided among the live workers."""
    table = ThrottleTable()
    listener = throttle_listener(kit, table)
    components: list[BackgroundLoop] = [listener]
    workers: Callable[[], int] = lambda: 1  # noqa: E731
    if settings.platform_calls_per_second:
        live = LiveWorkers(
            settings.kafka_bootstrap,
            [kit.names.group(g) for g in PLATFORM_GROUPS],
            settings.platform_workers_refresh,
        )
        components.append(live)
        workers = lambda: live.count  # noqa: E731
    quota = PlatformQuota(
        table,
        announce=announcer(kit),
        limits={str(p): rate for p, rate in settings.platform_calls_per_second.items()},
        workers=workers,
    )
    return SharedQuota(quota, components, listener)
