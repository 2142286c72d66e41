"""The topic registry: one topic per event declared in shared/events.py (partitions,
retention, compaction), its retry tiers and dead-letter topic, and their creation at start-up
with the AdminClient.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field, replace
from typing import Any

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

from shared.events import EVENTS

log = logging.getLogger(__name__)

DAY_MS = 24 * 3600 * 1000
# Delay tiers from 1 s to 1 h: a retry, countdown or ETA is due at its own time, never a tier's.
DEFAULT_TIERS = "1s:1,5s:5,15s:15,1m:60,5m:300,15m:900,1h:3600"


@dataclass(frozen=True)
class DelayTier:
    """One retry tier: records wait `delay` seconds in `<topic>.retry.<name>`."""

    name: str
    delay: float


def parse_tiers(raw: str) -> tuple[DelayTier, ...]:
    """`"1m:60,5m:300,30m:1800"` -> tiers sorted by delay."""
    tiers = []
    for part in raw.split(","):
        name, _, seconds = part.strip().partition(":")
        if not name or not seconds:
            raise ValueError(f"bad retry tier {part!r}: expected <name>:<seconds>")
        tiers.append(DelayTier(name, float(seconds)))
    return tuple(sorted(tiers, key=lambda t: t.delay))


@dataclass(frozen=True)
class TopicSpec:
    """A logical topic. `consumed` topics get retry tiers and a dead-letter topic."""

    name: str
    partitions: int
    retention_ms: int = 7 * DAY_MS
    compacted: bool = False
    consumed: bool = False

    def config(self) -> dict[str, str]:
        if self.compacted:
            return {"cleanup.policy": "compact", "min.compaction.lag.ms": "0"}
        return {"retention.ms": str(self.retention_ms)}


# One topic per declared event, named after its type.
TOPICS: tuple[TopicSpec, ...] = tuple(
    TopicSpec(e.type, e.partitions, compacted=e.compacted, consumed=e.consumed) for e in EVENTS
)
TOPIC_SPECS: dict[str, TopicSpec] = {t.name: t for t in TOPICS}


@dataclass(frozen=True)
class TopicNames:
    """Physical topic names under a prefix (tests give each run its own)."""

    prefix: str = ""
    tiers: tuple[DelayTier, ...] = field(default_factory=lambda: parse_tiers(DEFAULT_TIERS))
    # Caps every topic's partitions (0: as declared); tests use small topics.
    max_partitions: int = 0
    # Partitions of each delay-tier and dead-letter topic: holding pens that carry only the
    # failures, so few partitions. Every consumer fetches them all, and each partition in a
    # fetch session costs the broker work on every fetch, so they are kept out of the way.
    holding_partitions: int = 1

    def topic(self, name: str) -> str:
        return f"{self.prefix}{name}"

    def retry(self, name: str, tier: DelayTier) -> str:
        return f"{self.prefix}{name}.retry.{tier.name}"

    def dlq(self, name: str) -> str:
        return f"{self.prefix}{name}.dlq"

    def group(self, name: str) -> str:
        return f"{self.prefix}adflux.{name}"

    def logical(self, physical: str) -> str:
        """Strip the prefix and any `.retry.<tier>` / `.dlq` suffix."""
        name = physical.removeprefix(self.prefix)
        if name.endswith(".dlq"):
            return name.removesuffix(".dlq")
        base, sep, _tier = name.rpartition(".retry.")
        return base if sep else name

    def tier_of(self, physical: str) -> DelayTier | None:
        _base, sep, tier = physical.rpartition(".retry.")
        if not sep:
            return None
        return next((t for t in self.tiers if t.name == tier), None)

    def all_specs(self) -> list[tuple[str, TopicSpec]]:
        """Every physical topic with the spec it is created from."""
        specs: list[tuple[str, TopicSpec]] = []
        for declared in TOPICS:
            spec = declared
            if self.max_partitions and spec.partitions > self.max_partitions:
                spec = replace(spec, partitions=self.max_partitions)
            specs.append((self.topic(spec.name), spec))
            if spec.consumed:
                # Tier and dead-letter topics are keyed like their source (docs/guarantees.md).
                held = min(self.holding_partitions, spec.partitions)
                delayed = TopicSpec(spec.name, held, 7 * DAY_MS)
                specs.extend((self.retry(spec.name, t), delayed) for t in self.tiers)
                specs.append((self.dlq(spec.name), TopicSpec(spec.name, held, 30 * DAY_MS)))
        return specs


def provision_topics(
    bootstrap: str,
    names: TopicNames,
    timeout: float = 60.0,
    replication_factor: int | None = None,
    min_insync_replicas: int | None = None,
) -> list[str]:
    """Create every missing topic; returns the names created. Existing ones are left alone.
    Replication defaults to the `topic_replication_factor` / `topic_min_insync_replicas`
    settings. Waits up to `timeout` for the broker, and for enough brokers to hold the
    replicas (a cluster's brokers register one by one), so services may start before it."""
    from shared.settings import ServiceSettings, get_settings  # settings import this module

    settings = get_settings(ServiceSettings)
    replicas = replication_factor or settings.topic_replication_factor
    min_isr = min_insync_replicas or settings.topic_min_insync_replicas
    admin = AdminClient({"bootstrap.servers": bootstrap})
    deadline = time.monotonic() + timeout
    created: list[str] = []
    while True:
        try:
            existing = set(admin.list_topics(timeout=5).topics)
            wanted = [
                NewTopic(
                    name,
                    num_partitions=spec.partitions,
                    replication_factor=replicas,
                    config={**spec.config(), "min.insync.replicas": str(min_isr)},
                )
                for name, spec in names.all_specs()
                if name not in existing
            ]
            if wanted:
                futures = admin.create_topics(wanted, operation_timeout=timeout)
                created += _created(futures, timeout)
                _await_leaders(admin, {t.topic: t.num_partitions for t in wanted}, deadline)
            break
        except KafkaException as exc:
            if time.monotonic() > deadline:
                raise
            log.warning("topics on %s not provisioned yet (%s); retrying", bootstrap, exc)
            time.sleep(1.0)
    if created:
        log.info("created %d topics", len(created))
    return created


def _await_leaders(admin: AdminClient, wanted: dict[str, int], deadline: float) -> None:
    """Wait until the broker's metadata shows each new topic with a leader for every
    partition. A consumer that subscribes before that sees some of its topics missing, and
    their appearance later makes its group rebalance, with nothing fetched meanwhile."""
    while True:
        topics = admin.list_topics(timeout=5).topics
        missing = [
            name
            for name, partitions in wanted.items()
            if name not in topics
            or topics[name].error is not None
            or len(topics[name].partitions) < partitions
            or any(p.leader < 0 for p in topics[name].partitions.values())
        ]
        if not missing:
            return
        if time.monotonic() > deadline:
            log.warning("%d new topics still without leaders, e.g. %s", len(missing), missing[0])
            return
        time.sleep(0.05)


def _created(futures: dict[str, Any], timeout: float) -> list[str]:
    """Names whose creation succeeded; one another process created first counts as done.
    Raises the first other error (e.g. fewer live brokers than replicas: the caller retries)."""
    created = []
    for name, future in futures.items():
        try:
            future.result(timeout)
            created.append(name)
        except KafkaException as exc:
            if exc.args[0].name() != "TOPIC_ALREADY_EXISTS":
                raise
    return created


def delete_topics(bootstrap: str, names: TopicNames, timeout: float = 30.0) -> None:
    """Delete every topic under `names.prefix` (test clean-up: a broker has finite files)."""
    if not names.prefix:
        raise ValueError("refusing to delete topics without a prefix")
    admin = AdminClient({"bootstrap.servers": bootstrap})
    mine = [t for t in admin.list_topics(timeout=timeout).topics if t.startswith(names.prefix)]
    if mine:
        for future in admin.delete_topics(mine, operation_timeout=timeout).values():
            try:
                future.result(timeout)
            except KafkaException:
                log.warning("could not delete a test topic", exc_info=True)
