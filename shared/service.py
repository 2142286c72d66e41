"""What every service's composition root needs, built once: settings-derived topic names,
the producer, the database with its tracking and outbox tables, the revocation listener,
consumer runtimes, a worker's parts with its readiness checks, the health server, and a
run-until-SIGTERM loop."""

from __future__ import annotations

import gc
import logging
import signal
import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import timedelta
from typing import Any, Protocol, TypeVar

import sqlalchemy as sa

from shared.db import Database, tracking_tables
from shared.envelope import Envelope
from shared.events import Payload, TaskRevoked
from shared.logging import configure_logging
from shared.metrics import HealthServer, ReadyCheck
from shared.outbox import Outbox, OutboxRelay
from shared.producer import EventProducer
from shared.runtime import ConsumerRuntime, HandlerContext, HandlerOutcome, RuntimeOptions
from shared.settings import ServiceSettings
from shared.tasks import RevocationRegistry
from shared.topics import TopicNames, parse_tiers, provision_topics

log = logging.getLogger(__name__)

P = TypeVar("P", bound=Payload)


class Component(Protocol):
    def start(self) -> object: ...

    def stop(self, timeout: float = ...) -> None: ...

    def healthy(self) -> bool: ...


@dataclass(frozen=True)
class Worker:
    """A process's consumer runtime, its parts in start order (stopped in reverse) and the
    checks its /readyz answers."""

    runtime: ConsumerRuntime
    components: list[Component]
    readiness: dict[str, ReadyCheck]


@dataclass
class ServiceKit:
    """The clients one service process shares between its handlers."""

    service: str
    settings: ServiceSettings
    names: TopicNames
    producer: EventProducer
    db: Database
    processed: sa.Table
    outbox: Outbox
    revocations: RevocationRegistry = field(default_factory=RevocationRegistry)

    def runtime_options(self) -> RuntimeOptions:
        s = self.settings
        return RuntimeOptions(
            default_max_retries=s.default_max_retries,
            default_retry_delay=s.default_retry_delay,
            default_time_limit=s.default_time_limit,
            lanes=s.lanes,
            max_in_flight=s.max_in_flight,
            processed_retention=timedelta(days=s.processed_retention_days),
        )

    def runtime(self, group: str | None = None, **options: Any) -> ConsumerRuntime:
        """A consumer runtime for this service's group (or a named one); `options` override
        the settings' RuntimeOptions."""
        return ConsumerRuntime(
            service=self.service,
            group=self.names.group(group or self.service),
            bootstrap=self.settings.kafka_bootstrap,
            names=self.names,
            producer=self.producer,
            db=self.db,
            processed_table=self.processed,
            revocations=self.revocations,
            options=replace(self.runtime_options(), **options),
        )

    def revocation_listener(self) -> ConsumerRuntime:
        """Reads every revocation into `self.revocations` (each process sees all of them);
        command runtimes start once it has caught up."""
        return self.broadcast_listener(
            "revocations",
            TaskRevoked,
            self.revocations.handle,
            on_caught_up=self.revocations.caught_up.set,
        )

    def broadcast_listener(
        self,
        name: str,
        model: type[P],
        handler: Callable[[Envelope, P, HandlerContext], HandlerOutcome | None],
        on_caught_up: Callable[[], None] | None = None,
        from_end: bool = False,
    ) -> ConsumerRuntime:
        """A runtime that reads every record of `model`'s topic from its start (or, `from_end`,
        what arrives after it starts), without a group's offsets, into `handler`: each process
        sees all of them (revocations, quota blocks, the gateway's live task feed)."""
        listener = ConsumerRuntime(
            service=self.service,
            group=self.names.group(f"{self.service}.{name}"),
            bootstrap=self.settings.kafka_bootstrap,
            names=self.names,
            producer=self.producer,
            broadcast=True,
            from_end=from_end,
            on_caught_up=on_caught_up,
        )
        listener.register(model, handler)
        return listener

    def relay(self) -> OutboxRelay:
        return OutboxRelay(self.db, self.outbox, self.producer, self.service)

    def worker(
        self,
        runtime: ConsumerRuntime,
        *,
        runs_commands: bool = True,
        relay: OutboxRelay | None = None,
        extra_components: Sequence[Component] = (),
        extra_readiness: Mapping[str, ReadyCheck] | None = None,
    ) -> Worker:
        """The parts around `runtime`, in start order: the outbox relay if given, the
        revocation listener if the runtime runs commands (they wait for it to catch up), the
        runtime, then `extra_components`. Ready while the database answers, the relay lives,
        the runtime is assigned, and each of `extra_readiness` holds."""
        components: list[Component] = [
            *([relay] if relay is not None else []),
            *([self.revocation_listener()] if runs_commands else []),
            runtime,
            *extra_components,
        ]
        readiness: dict[str, ReadyCheck] = {
            "database": self.db.ready,
            **({"relay": relay.healthy} if relay is not None else {}),
            "consumer": runtime.ready,
            **(extra_readiness or {}),
        }
        return Worker(runtime, components, readiness)


def build_kit(service: str, settings: ServiceSettings, metadata: sa.MetaData) -> ServiceKit:
    """Configure logging, create topics, migrate the database and build the shared clients."""
    configure_logging(service, settings.log_level, settings.log_json)
    # Lanes, the poll loop and the HTTP server share the GIL: hand it over within 1 ms
    # rather than 5, or a record waits behind a busy thread's whole slice.
    sys.setswitchinterval(0.001)
    names = TopicNames(
        settings.topic_prefix,
        parse_tiers(settings.retry_tiers),
        settings.topic_max_partitions,
        settings.retry_topic_partitions,
    )
    provision_topics(settings.kafka_bootstrap, names)
    db = Database(settings.database_url, service, settings.data_dir)
    db.migrate()
    processed, outbox_table = metadata.tables["processed_events"], metadata.tables["outbox"]
    producer = EventProducer(settings.kafka_bootstrap, client_id=f"adflux-{service}")
    return ServiceKit(
        service, settings, names, producer, db, processed, Outbox(outbox_table, names)
    )


def with_tracking(metadata: sa.MetaData) -> sa.MetaData:
    """Add the shared tracking and outbox tables to a service's metadata (once)."""
    if "processed_events" not in metadata.tables:
        tracking_tables(metadata)
    return metadata


def freeze_startup_objects() -> None:
    """Put what starting allocated (modules, the SDKs' descriptors and generated types, the
    ORM's mappings: ~250,000 long-lived objects) out of the cyclic collector's reach. Each
    full collection otherwise walks them all: a 40-90 ms stop of every thread of the process,
    seen as lone outliers in retry due times and request latencies."""
    gc.collect()
    gc.freeze()


def serve(kit: ServiceKit, worker: Worker, health_port: int | None) -> None:
    """Start the worker's components and the health server, then block until SIGTERM or
    SIGINT."""
    freeze_startup_objects()
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    health = (
        HealthServer(kit.settings.bind_address, health_port, worker.readiness).start()
        if health_port
        else None
    )
    for component in worker.components:
        component.start()
    log.info("%s running", kit.service)
    dead = supervise(worker.components, stop)
    log.info("%s stopping", kit.service)
    for component in reversed(worker.components):
        component.stop()
    kit.producer.close()
    if health is not None:
        health.stop()
    kit.db.dispose()
    if dead:
        # A process that lost a part must not live on doing nothing: its supervisor restarts it.
        sys.exit(f"{kit.service}: {', '.join(dead)} stopped unexpectedly")


def supervise(components: list[Component], stop: threading.Event) -> list[str]:
    """Wait for `stop`; return the names of components that died before it was set."""
    while not stop.wait(1.0):
        dead = [type(c).__name__ for c in components if not c.healthy()]
        if dead:
            log.error("components stopped unexpectedly: %s", ", ".join(dead))
            return dead
    return []
