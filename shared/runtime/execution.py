"""Running one record in a lane: decode it, skip it if already handled, pass it through the
task gate, run its handler with a session committed together with the tracking row, route
its failure, and send its outputs asynchronously — reporting back when they are acknowledged."""

from __future__ import annotations

import itertools
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from confluent_kafka import KafkaException

from shared import metrics
from shared import retry as rules
from shared.db import Database
from shared.envelope import Envelope, MalformedEvent, from_kafka
from shared.events import Command, Payload, TaskState
from shared.logging import bind_event
from shared.producer import DeliveryFailed, OutgoingRecord, RecordRefused
from shared.runtime import gate
from shared.runtime.context import HandlerContext, HandlerOutcome
from shared.runtime.failures import FailureHook, FailureRouter
from shared.runtime.lanes import Job
from shared.runtime.ports import RecordProducer
from shared.runtime.processed import ProcessedEventStore
from shared.runtime.records import ConsumedRecord, TopicPartitionKey
from shared.tasks import RevocationRegistry, TaskStatusReporter
from shared.topics import TopicNames

log = logging.getLogger(__name__)

Handler = Callable[[Envelope, Any, HandlerContext], HandlerOutcome | None]
RawHandler = Callable[[ConsumedRecord], None]

# The broker or the database is away: the record is kept and tried again, never failed.
INFRASTRUCTURE_ERRORS = (KafkaException, DeliveryFailed, sa.exc.OperationalError)


@dataclass(frozen=True)
class Route:
    model: type[Payload]
    handler: Handler
    on_failure: FailureHook | None = None
    # The handler applies an event twice with the effect of once (a projection that checks
    # what it already holds): no tracking row is kept for its events.
    idempotent: bool = False


@dataclass(frozen=True)
class Finished:
    """A record's outputs were acknowledged: its offset may be committed."""

    tp: TopicPartitionKey
    offset: int
    event_id: str | None


@dataclass(frozen=True)
class Redo:
    """A record's outputs were not delivered: run it again, not before `not_before`. A tier
    record whose move to its tier's tail failed (`move_to_due`) is moved again, not run."""

    record: ConsumedRecord
    not_before: float
    move_to_due: int | None = None


class _NotGroupable(Exception):
    """A record that group commit leaves to the one-at-a-time path."""


@dataclass
class ExecutionSettings:
    default_time_limit: float
    infra_retries: int
    announce_started_after: float


class RecordExecutor:
    """What a lane does with one record; it reports to `events` and never touches the consumer."""

    def __init__(
        self,
        *,
        service: str,
        names: TopicNames,
        producer: RecordProducer,
        routes: dict[str, Route],
        raw: dict[str, RawHandler],
        db: Database | None,
        store: ProcessedEventStore | None,
        failures: FailureRouter,
        reporter: TaskStatusReporter,
        revocations: RevocationRegistry | None,
        options: ExecutionSettings,
        events: queue.SimpleQueue[Finished | Redo],
        stop: threading.Event,
    ) -> None:
        self.service = service
        self.names = names
        self.producer = producer
        self._routes = routes
        self._raw = raw
        self.db = db
        self.store = store
        self.failures = failures
        self.reporter = reporter
        self.revocations = revocations
        self.options = options
        self._events = events
        self._stop = stop

    def execute(
        self, record: ConsumedRecord, known: dict[str, list[OutgoingRecord]] | None, job: Job
    ) -> None:
        """Handle one record and send its outputs; broker or database errors are tried again
        in place with backoff, then the record is deferred to a delay tier."""
        backoff = 0.25
        for attempt in itertools.count(1):
            try:
                outputs = self._handle(record, known, job)
                break
            except INFRASTRUCTURE_ERRORS as exc:
                if job.abandoned or self._stop.is_set():
                    return
                known = None
                if attempt >= self.options.infra_retries:
                    log.warning("deferring a record of %s after %s", record.topic, exc)
                    outputs = [self.failures.delayed(record, backoff, exc, _attempt_of(record))]
                    break
                log.warning("infrastructure error on %s: %s; trying again", record.topic, exc)
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 30.0)
        if job.abandoned:
            return
        self._send(record, [*job.take_announcement(), *outputs])

    def execute_group(
        self, records: list[ConsumedRecord], known: dict[str, list[OutgoingRecord]] | None, job: Job
    ) -> None:
        """Several records of one lane in one transaction (group commit, for projections):
        their handlers share a session, their tracking rows commit together and their outputs
        leave in one batch. Anything unusual — a failure, a command, a malformed or raw
        record — and the group is handled again one record at a time."""
        if len(records) > 1 and self.db is not None and self.store is not None:
            try:
                outputs = self._handle_group(records, known)
            except Exception as exc:  # each record then gets its own rules
                log.debug("group of %d falls back to one at a time: %s", len(records), exc)
            else:
                self._send_all(records, outputs)
                return
        for record in records:
            self.execute(record, known, job)

    def _handle_group(
        self, records: list[ConsumedRecord], known: dict[str, list[OutgoingRecord]] | None
    ) -> list[OutgoingRecord]:
        assert self.db is not None and self.store is not None
        session = self.db.sessions()
        outputs: list[OutgoingRecord] = []
        handled: list[tuple[str, str, list[OutgoingRecord]]] = []
        try:
            for record in records:
                if record.topic in self._raw:
                    raise _NotGroupable("raw record")
                envelope = from_kafka(record.key, record.value, record.headers)
                route = self._routes.get(envelope.type)
                if route is None:
                    raise _NotGroupable(f"no handler for {envelope.type!r}")
                payload = envelope.payload()
                if isinstance(payload, Command):
                    raise _NotGroupable("commands run alone")
                stored = None if route.idempotent else self._stored(envelope.id, known)
                if stored is not None:
                    outputs.extend(stored)
                    continue
                with bind_event(envelope):
                    ctx = HandlerContext(envelope, session, self.reporter, self.producer, None)
                    outcome = route.handler(envelope, payload, ctx) or HandlerOutcome()
                emitted = [OutgoingRecord.of(self.names.topic(e.type), e) for e in outcome.events]
                if not route.idempotent:
                    handled.append((envelope.id, envelope.type, emitted))
                outputs.extend(emitted)
            self.store.add_many(session, handled)  # the group's tracking rows, one statement
            session.commit()
        except BaseException:
            session.rollback()
            raise
        finally:
            session.close()
        for record in records:
            metrics.EVENTS_HANDLED.labels(
                self.service, self.names.logical(record.topic), "success"
            ).inc()
        return outputs

    def _send_all(self, records: list[ConsumedRecord], outputs: list[OutgoingRecord]) -> None:
        def done(error: Exception | None) -> None:
            for record in records:
                if error is None:
                    self._events.put(Finished(record.tp, record.offset, event_id_of(record)))
                else:
                    self._events.put(Redo(record, time.monotonic() + 1.0))

        self.producer.send_async(outputs, done)

    def _send(self, record: ConsumedRecord, outputs: list[OutgoingRecord]) -> None:
        def done(error: Exception | None) -> None:
            if error is None:
                self._events.put(Finished(record.tp, record.offset, event_id_of(record)))
            elif isinstance(error, RecordRefused):
                log.error("outputs of %s refused by the broker: %s", record.topic, error)
                self._send(record, [self.failures.dead(record, error, "refused")])
            else:
                log.warning("outputs of %s not delivered: %s; redoing", record.topic, error)
                self._events.put(Redo(record, time.monotonic() + 1.0))

        self.producer.send_async(outputs, done)

    def _handle(
        self, record: ConsumedRecord, known: dict[str, list[OutgoingRecord]] | None, job: Job
    ) -> list[OutgoingRecord]:
        raw = self._raw.get(record.topic)
        if raw is not None:
            raw(record)
            return []
        try:
            envelope = from_kafka(record.key, record.value, record.headers)
            route = self._routes.get(envelope.type)
            if route is None:
                raise MalformedEvent(f"no handler for {envelope.type!r} on {record.topic}")
            payload = envelope.payload()
        except MalformedEvent as exc:
            metrics.EVENTS_HANDLED.labels(self.service, "unknown", "malformed").inc()
            log.warning("dead-lettering malformed record from %s: %s", record.topic, exc)
            return [self.failures.dead(record, exc, "malformed")]
        with bind_event(envelope):
            return self._run(record, envelope, payload, route, known, job)

    def _run(
        self,
        record: ConsumedRecord,
        envelope: Envelope,
        payload: Payload,
        route: Route,
        known: dict[str, list[OutgoingRecord]] | None,
        job: Job,
    ) -> list[OutgoingRecord]:
        stored = None if route.idempotent else self._stored(envelope.id, known)
        if stored is not None:
            metrics.EVENTS_HANDLED.labels(self.service, envelope.type, "duplicate").inc()
            return stored  # re-send what the first handling emitted
        task = payload if isinstance(payload, Command) and envelope.taskid else None
        if task is not None:
            assert envelope.taskid is not None
            verdict = gate.admit(envelope.taskid, task, datetime.now(UTC), self.revocations)
            if verdict.final is not None:
                return self._end_unrun(envelope, task, verdict.final)
            if verdict.wait > 0:
                return self._defer(record, envelope, task, verdict.wait)
            job.hold_announcement(
                self._started(envelope, task),
                time.monotonic() + self.options.announce_started_after,
            )
        time_limit = task.options.time_limit if task else self.options.default_time_limit
        job.deadline = time.monotonic() + time_limit
        job.on_abandon = lambda: self._send(
            record,
            [
                *job.take_announcement(),
                *self.failures.failed(
                    record,
                    envelope,
                    payload,
                    task,
                    rules.TimeLimitExceeded(f"time limit of {time_limit:g}s exceeded"),
                    route.on_failure,
                ),
            ],
        )
        started = time.monotonic()
        try:
            return self._invoke(record, envelope, payload, route, task, job)
        finally:
            metrics.HANDLE_SECONDS.labels(self.service, envelope.type).observe(
                time.monotonic() - started
            )

    def _invoke(
        self,
        record: ConsumedRecord,
        envelope: Envelope,
        payload: Payload,
        route: Route,
        task: Command | None,
        job: Job,
    ) -> list[OutgoingRecord]:
        """Run the handler; commit its session with the tracking row, or route its failure."""
        session = self.db.sessions() if self.db is not None else None
        ctx = HandlerContext(
            envelope,
            session,
            self.reporter,
            _AnnouncedFirst(job, self.producer),
            task.task_name if task else None,
            cancelled=job.cancelled,
        )
        try:
            outcome = route.handler(envelope, payload, ctx) or HandlerOutcome()
            ctx.check_cancelled()
            records = [OutgoingRecord.of(self.names.topic(e.type), e) for e in outcome.events]
            if task is not None and envelope.taskid:
                records.append(
                    self.reporter.record(
                        envelope.taskid,
                        task.task_name,
                        TaskState.SUCCESS,
                        attempt=envelope.attempt,
                        cause=envelope,
                        progress=100,
                        result=outcome.result,
                    )
                )
            if session is not None:
                if self.store is not None and not route.idempotent:
                    self.store.add(session, envelope.id, envelope.type, records)
                ctx.check_cancelled()  # an abandoned handler must not commit
                session.commit()
        except INFRASTRUCTURE_ERRORS:
            _rollback(session)
            raise
        except sa.exc.IntegrityError:
            _rollback(session)
            stored = self.store.stored(envelope.id) if self.store is not None else None
            if stored is not None:
                return stored  # a concurrent redelivery recorded it first: same outputs
            raise
        except rules.Cancelled:
            _rollback(session)
            exc = rules.TimeLimitExceeded("time limit exceeded; handler cancelled")
            return self.failures.failed(record, envelope, payload, task, exc, route.on_failure)
        except Exception as exc:
            _rollback(session)
            return self.failures.failed(record, envelope, payload, task, exc, route.on_failure)
        finally:
            if session is not None:
                session.close()
        metrics.EVENTS_HANDLED.labels(self.service, envelope.type, "success").inc()
        if task is not None:
            metrics.TASKS.labels(self.service, task.task_name, TaskState.SUCCESS.value).inc()
            log.info("task %s succeeded", task.task_name)  # the line carries task_id
        return records

    def _stored(
        self, event_id: str, known: dict[str, list[OutgoingRecord]] | None
    ) -> list[OutgoingRecord] | None:
        if self.store is None:
            return None
        if known is not None:
            return known.get(event_id)
        return self.store.stored(event_id)

    def _end_unrun(
        self, envelope: Envelope, task: Command, final: TaskState
    ) -> list[OutgoingRecord]:
        assert envelope.taskid is not None
        status = self.reporter.record(
            envelope.taskid, task.task_name, final, attempt=envelope.attempt, cause=envelope
        )
        if self.store is not None:
            with self.store.db.session() as session:
                self.store.add(session, envelope.id, envelope.type, [status])
        metrics.EVENTS_HANDLED.labels(self.service, envelope.type, final.value.lower()).inc()
        metrics.TASKS.labels(self.service, task.task_name, final.value).inc()
        return [status]

    def _defer(
        self, record: ConsumedRecord, envelope: Envelope, task: Command, wait: float
    ) -> list[OutgoingRecord]:
        assert envelope.taskid is not None
        records = [self.failures.delayed(record, wait, None, envelope.attempt)]
        if self.names.tier_of(record.topic) is None:
            records.append(
                self.reporter.record(
                    envelope.taskid,
                    task.task_name,
                    TaskState.SCHEDULED,
                    attempt=envelope.attempt,
                    cause=envelope,
                    next_attempt_at=task.options.eta,
                )
            )
        return records

    def _started(self, envelope: Envelope, task: Command) -> OutgoingRecord:
        """The task's STARTED, stamped now (the job holds it back; see Job.announcement)."""
        assert envelope.taskid is not None
        metrics.TASKS.labels(self.service, task.task_name, TaskState.STARTED.value).inc()
        return self.reporter.record(
            envelope.taskid,
            task.task_name,
            TaskState.STARTED,
            attempt=envelope.attempt,
            cause=envelope,
        )


class _AnnouncedFirst:
    """A task handler's progress sink: the task's held STARTED goes out before its first
    progress report, so a subscriber sees the transitions in order."""

    def __init__(self, job: Job, producer: RecordProducer) -> None:
        self._job = job
        self._producer = producer

    def send_nowait(self, records: list[OutgoingRecord]) -> None:
        self._producer.send_nowait([*self._job.take_announcement(), *records])


def event_id_of(record: ConsumedRecord) -> str | None:
    raw = record.header_map().get("ce_id")
    return raw.decode(errors="replace") if raw is not None else None


def _attempt_of(record: ConsumedRecord) -> int:
    raw = record.header_map().get(rules.H_ATTEMPT, b"1")
    return int(raw) if raw.isdigit() else 1


def _rollback(session: Any) -> None:
    if session is not None:
        session.rollback()
