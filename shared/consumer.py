"""The one consumer runtime: polls a group's topics and their retry tiers, dispatches each
record by event type to its handler, applies task options (revoke, expiry, ETA, time limit),
routes failures to delay tiers or the dead-letter topic, and stores an offset only once the
record's handling is durable.

Tier partitions whose head record is not yet due are paused and polled past, never slept on;
the pause bookkeeping is dropped on every rebalance and relearned from the next record.
"""

from __future__ import annotations

import base64
import contextlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    TopicPartition,
)
from sqlalchemy.orm import Session

from shared import metrics
from shared import retry as rules
from shared.background import BackgroundLoop
from shared.db import Database
from shared.envelope import Envelope, MalformedEvent, from_kafka
from shared.events import Command, ErrorInfo, Payload, TaskState
from shared.logging import bind_event
from shared.producer import DeliveryFailed, EventProducer, OutgoingRecord
from shared.tasks import RevocationRegistry, TaskStatusReporter
from shared.topics import DelayTier, TopicNames

log = logging.getLogger(__name__)


@dataclass
class HandlerOutcome:
    """What a handler produced: the task result and the events to emit."""

    result: dict[str, Any] | None = None
    events: list[Envelope] = field(default_factory=list)


class HandlerContext:
    """What a handler gets besides the event: its session, progress reporting, cancellation."""

    def __init__(
        self,
        envelope: Envelope,
        session: Session | None,
        reporter: TaskStatusReporter,
        producer: EventProducer,
        task_name: str | None,
    ) -> None:
        self.envelope = envelope
        self.session = session
        self.cancelled = threading.Event()
        self._reporter = reporter
        self._producer = producer
        self._task_name = task_name

    def check_cancelled(self) -> None:
        """Raise `Cancelled` once the time limit passed; call between side effects."""
        if self.cancelled.is_set():
            raise rules.Cancelled("handler cancelled (time limit)")

    def progress(self, percent: int, info: dict[str, Any] | None = None) -> None:
        """Publish a PROGRESS transition (not awaited: the task's final status, sent after it
        with the same key, is, and carries the ordering)."""
        self.check_cancelled()
        if self.envelope.taskid and self._task_name:
            self._producer.send_nowait(
                [
                    self._reporter.record(
                        self.envelope.taskid,
                        self._task_name,
                        TaskState.PROGRESS,
                        attempt=self.envelope.attempt,
                        cause=self.envelope,
                        progress=percent,
                        result=info,
                    )
                ]
            )


Handler = Callable[[Envelope, Any, HandlerContext], HandlerOutcome | None]
FailureHook = Callable[[Envelope, Any, ErrorInfo], list[Envelope]]


@dataclass(frozen=True)
class Route:
    event_type: str
    handler: Handler
    on_failure: FailureHook | None = None


@dataclass(frozen=True)
class RuntimeOptions:
    """Per-runtime knobs; defaults come from the service settings."""

    default_max_retries: int = 3
    default_retry_delay: float = 60.0
    default_time_limit: float = 3600.0
    poll_interval: float = 0.5
    session_timeout_ms: int = 10000


def encode_records(records: list[OutgoingRecord]) -> list[dict[str, Any]]:
    def b64(raw: bytes | None) -> str | None:
        return base64.b64encode(raw).decode() if raw is not None else None

    return [
        {
            "topic": r.topic,
            "key": b64(r.key),
            "value": b64(r.value),
            "headers": [[k, b64(v)] for k, v in r.headers],
        }
        for r in records
    ]


def decode_records(items: list[dict[str, Any]]) -> list[OutgoingRecord]:
    def unb64(raw: str | None) -> bytes | None:
        return base64.b64decode(raw) if raw is not None else None

    return [
        OutgoingRecord(
            i["topic"],
            unb64(i["key"]),
            unb64(i["value"]),
            [(k, unb64(v) or b"") for k, v in i["headers"]],
        )
        for i in items
    ]


@dataclass(frozen=True)
class ConsumedRecord:
    """A polled Kafka record with its fields resolved (confluent's Message has getters)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]]
    timestamp_ms: int
    message: Message

    @classmethod
    def of(cls, msg: Message) -> ConsumedRecord:
        raw_headers = msg.headers() or []
        pairs = raw_headers.items() if isinstance(raw_headers, dict) else raw_headers
        headers = [(k, v.encode() if isinstance(v, str) else v) for k, v in pairs if v is not None]
        key, value = msg.key(), msg.value()
        return cls(
            topic=msg.topic() or "",
            partition=msg.partition() or 0,
            offset=msg.offset() or 0,
            key=key.encode() if isinstance(key, str) else key,
            value=value.encode() if isinstance(value, str) else value,
            headers=headers,
            timestamp_ms=msg.timestamp()[1],
            message=msg,
        )

    def header_map(self) -> dict[str, bytes]:
        return dict(self.headers)


RawHandler = Callable[[ConsumedRecord], None]


class ConsumerRuntime(BackgroundLoop):
    """One consumer group's loop. `broadcast` runtimes read every partition from the start
    without a group (each process sees all records, e.g. revocations)."""

    def __init__(
        self,
        *,
        service: str,
        group: str,
        bootstrap: str,
        names: TopicNames,
        producer: EventProducer,
        db: Database | None = None,
        processed_table: sa.Table | None = None,
        revocations: RevocationRegistry | None = None,
        options: RuntimeOptions | None = None,
        broadcast: bool = False,
    ) -> None:
        super().__init__()
        self.thread_name = f"consumer-{group}"
        self.service = service
        self.group = group
        self.names = names
        self.producer = producer
        self.db = db
        self.processed = processed_table
        self.revocations = revocations
        self.options = options or RuntimeOptions()
        self.broadcast = broadcast
        self.reporter = TaskStatusReporter(producer, names, service)
        self._routes: dict[str, Route] = {}
        self._raw: dict[str, RawHandler] = {}
        self._bootstrap = bootstrap
        self._paused: dict[tuple[str, int], int] = {}
        self.assigned = threading.Event()
        self.last_poll = 0.0

    # --- registration -------------------------------------------------------------------
    def register(
        self, event_type: str, handler: Handler, on_failure: FailureHook | None = None
    ) -> None:
        self._routes[event_type] = Route(event_type, handler, on_failure)

    def register_raw(self, physical_topic: str, handler: RawHandler) -> None:
        """Handle a topic's records undecoded (the gateway's dead-letter recorder)."""
        self._raw[physical_topic] = handler

    def ready(self) -> bool:
        """Running and holding partitions: records sent now will be handled."""
        return self.healthy() and self.assigned.is_set()

    def topics(self) -> list[str]:
        topics = []
        for event_type in self._routes:
            topics.append(self.names.topic(event_type))
            if not self.broadcast:
                topics.extend(self.names.retry(event_type, t) for t in self.names.tiers)
        return topics + list(self._raw)

    # --- lifecycle ----------------------------------------------------------------------
    def run(self) -> None:
        consumer = Consumer(self._consumer_config())
        try:
            if self.broadcast:
                self._assign_all(consumer)
            else:
                consumer.subscribe(
                    self.topics(),
                    on_assign=self._on_assign,
                    on_revoke=self._on_revoke,
                    on_lost=self._on_revoke,
                )
            while not self._stop.is_set():
                self._resume_due(consumer)
                msg = consumer.poll(self._poll_timeout())
                self.last_poll = time.monotonic()
                if msg is None:
                    continue
                error = msg.error()
                if error is not None:
                    self._on_error(error)
                    continue
                self._process(consumer, ConsumedRecord.of(msg))
        except Exception:
            log.exception("consumer loop of %s crashed", self.group)
            raise
        finally:
            if not self.broadcast:
                with contextlib.suppress(KafkaException):
                    consumer.commit(asynchronous=False)
            consumer.close()

    def _consumer_config(self) -> dict[str, Any]:
        limit_ms = int((self.options.default_time_limit + 120) * 1000)
        return {
            "bootstrap.servers": self._bootstrap,
            "group.id": self.group,
            "client.id": f"{self.service}-{self.group}",
            "enable.auto.commit": not self.broadcast,
            "enable.auto.offset.store": False,
            "auto.commit.interval.ms": 500,
            "auto.offset.reset": "earliest",
            "max.poll.interval.ms": max(300000, limit_ms),
            "session.timeout.ms": self.options.session_timeout_ms,
            "heartbeat.interval.ms": max(1000, self.options.session_timeout_ms // 4),
            "topic.metadata.refresh.interval.ms": 10000,
            "fetch.wait.max.ms": 100,
        }

    def _assign_all(self, consumer: Consumer) -> None:
        parts: list[TopicPartition] = []
        for topic in self.topics():
            meta = consumer.list_topics(topic, timeout=30).topics[topic]
            parts.extend(TopicPartition(topic, p, OFFSET_BEGINNING) for p in meta.partitions)
        consumer.assign(parts)
        self.assigned.set()

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._paused.clear()
        metrics.PAUSED_PARTITIONS.labels(self.service).set(0)
        self.assigned.set()

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        with contextlib.suppress(KafkaException):  # nothing stored since the last commit
            consumer.commit(asynchronous=False)
        self._paused.clear()
        metrics.PAUSED_PARTITIONS.labels(self.service).set(0)

    def _on_error(self, error: KafkaError) -> None:
        if error.code() == KafkaError._PARTITION_EOF:
            return
        log.warning("consumer %s: %s", self.group, error)

    # --- tier pausing ---------------------------------------------------------------------
    def _poll_timeout(self) -> float:
        if not self._paused:
            return self.options.poll_interval
        soonest = min(self._paused.values()) - rules.now_ms()
        return max(0.0, min(self.options.poll_interval, soonest / 1000))

    def _resume_due(self, consumer: Consumer) -> None:
        now = rules.now_ms()
        due = [tp for tp, at in self._paused.items() if at <= now]
        if due:
            consumer.resume([TopicPartition(t, p) for t, p in due])
            for tp in due:
                del self._paused[tp]
            metrics.PAUSED_PARTITIONS.labels(self.service).set(len(self._paused))

    def _pause_until(self, consumer: Consumer, msg: ConsumedRecord, due_ms: int) -> None:
        tp = TopicPartition(msg.topic, msg.partition)
        consumer.pause([tp])
        # librdkafka drops what it buffered for a paused partition: re-read from this record.
        consumer.seek(TopicPartition(msg.topic, msg.partition, msg.offset))
        self._paused[(msg.topic, msg.partition)] = due_ms
        metrics.PAUSED_PARTITIONS.labels(self.service).set(len(self._paused))

    # --- processing -------------------------------------------------------------------------
    def _done(self, consumer: Consumer, msg: ConsumedRecord) -> None:
        if not self.broadcast:
            consumer.store_offsets(message=msg.message)

    def _process(self, consumer: Consumer, msg: ConsumedRecord) -> None:
        topic = msg.topic
        headers = msg.header_map()
        tier = self.names.tier_of(topic)
        if tier is not None:
            owner = headers.get(rules.H_CONSUMER_GROUP)
            if owner is not None and owner.decode() != self.group:
                self._done(consumer, msg)  # another group's retry
                return
            due = int(headers.get(rules.H_DUE_AT, b"0") or 0)
            if due > rules.now_ms():
                self._pause_until(consumer, msg, due)
                return
            if due:
                metrics.RETRY_LATENESS.labels(self.service).observe(
                    max(0, rules.now_ms() - due) / 1000
                )
        raw = self._raw.get(topic)
        if raw is not None:
            raw(msg)
            self._done(consumer, msg)
            return
        while not self._stop.is_set():
            try:
                self._handle(msg, headers)
                break
            except (
                rules.Cancelled,
                KafkaException,
                DeliveryFailed,
                sa.exc.OperationalError,
            ) as exc:
                # The broker or database is away: keep the record and try it again.
                log.warning("infrastructure error on %s: %s; retrying", topic, exc)
                time.sleep(1.0)
        else:
            return  # stopping: the record is not done, it is redelivered to the next owner
        self._done(consumer, msg)

    def _handle(self, msg: ConsumedRecord, headers: dict[str, bytes]) -> None:
        try:
            envelope = from_kafka(msg.key, msg.value, msg.headers)
            route = self._routes.get(envelope.type)
            if route is None:
                raise MalformedEvent(f"no handler for event type {envelope.type!r} on {msg.topic}")
            payload = envelope.payload()
        except MalformedEvent as exc:
            metrics.EVENTS_HANDLED.labels(self.service, "unknown", "malformed").inc()
            log.warning("dead-lettering malformed record from %s: %s", msg.topic, exc)
            self.producer.send_batch([self._dead_record(msg, headers, exc, "malformed")])
            return
        with bind_event(envelope):
            self._dispatch(msg, headers, envelope, payload, route)

    def _dispatch(
        self,
        msg: ConsumedRecord,
        headers: dict[str, bytes],
        envelope: Envelope,
        payload: Payload,
        route: Route,
    ) -> None:
        outputs = self._already_handled(envelope)
        if outputs is not None:
            self.producer.send_batch(outputs)  # re-send what the first handling emitted
            metrics.EVENTS_HANDLED.labels(self.service, envelope.type, "duplicate").inc()
            return
        task = payload if isinstance(payload, Command) and envelope.taskid else None
        if task is not None and self._skip_task(msg, headers, envelope, task):
            return
        if task is not None:
            self._send_status(envelope, task, TaskState.STARTED)
        time_limit = task.options.time_limit if task else self.options.default_time_limit
        started = time.monotonic()
        try:
            records = self._run_handler(envelope, payload, route, task, time_limit)
        except (rules.Cancelled, KafkaException, DeliveryFailed, sa.exc.OperationalError):
            raise
        except Exception as exc:
            metrics.HANDLE_SECONDS.labels(self.service, envelope.type).observe(
                time.monotonic() - started
            )
            self._on_failure(msg, headers, envelope, payload, route, task, exc)
            return
        metrics.HANDLE_SECONDS.labels(self.service, envelope.type).observe(
            time.monotonic() - started
        )
        self.producer.send_batch(records)
        metrics.EVENTS_HANDLED.labels(self.service, envelope.type, "success").inc()

    def _already_handled(self, envelope: Envelope) -> list[OutgoingRecord] | None:
        if self.db is None or self.processed is None:
            return None
        table = self.processed
        with self.db.session() as session:
            row = session.execute(
                sa.select(table.c.outputs).where(
                    table.c.consumer == self.group, table.c.event_id == envelope.id
                )
            ).first()
        return decode_records(row[0]) if row is not None else None

    def _skip_task(
        self, msg: ConsumedRecord, headers: dict[str, bytes], envelope: Envelope, task: Command
    ) -> bool:
        """Apply revoke, expiry and ETA; True when the record must not run now."""
        assert envelope.taskid is not None
        now = datetime.now(UTC)
        final: TaskState | None = None
        if self.revocations is not None and self.revocations.is_revoked(envelope.taskid):
            final = TaskState.REVOKED
        elif task.options.expires is not None and task.options.expires <= now:
            final = TaskState.EXPIRED
        if final is not None:
            status = self.reporter.record(
                envelope.taskid, task.task_name, final, attempt=envelope.attempt, cause=envelope
            )
            self._record_handled(envelope, [status])
            self.producer.send_batch([status])
            metrics.EVENTS_HANDLED.labels(self.service, envelope.type, final.value.lower()).inc()
            return True
        if task.options.eta is not None and task.options.eta > now:
            wanted = (task.options.eta - now).total_seconds()
            tier = rules.choose_tier(self.names.tiers, wanted)
            forward = self._tier_record(msg, headers, envelope, tier, None, envelope.attempt)
            records = [forward]
            if self.names.tier_of(msg.topic) is None:
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
            self.producer.send_batch(records)
            return True
        return False

    def _run_handler(
        self,
        envelope: Envelope,
        payload: Payload,
        route: Route,
        task: Command | None,
        time_limit: float,
    ) -> list[OutgoingRecord]:
        """Run the handler in a thread bounded by the time limit; commit its session together
        with the tracking row. Returns the records to send."""
        box: dict[str, Any] = {}
        done = threading.Event()
        session = self.db.sessions() if self.db is not None else None
        ctx = HandlerContext(
            envelope, session, self.reporter, self.producer, task.task_name if task else None
        )

        def work() -> None:
            try:
                outcome = route.handler(envelope, payload, ctx) or HandlerOutcome()
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
                ctx.check_cancelled()
                if session is not None and self.processed is not None:
                    session.execute(
                        sa.insert(self.processed).values(
                            consumer=self.group,
                            event_id=envelope.id,
                            event_type=envelope.type,
                            outputs=encode_records(records),
                            handled_at=datetime.now(UTC),
                        )
                    )
                    session.commit()
                box["records"] = records
            except BaseException as exc:
                if session is not None:
                    session.rollback()
                box["error"] = exc
            finally:
                if session is not None:
                    session.close()
                done.set()

        thread = threading.Thread(target=work, name=f"handler-{envelope.id[:8]}", daemon=True)
        thread.start()
        if not done.wait(time_limit):
            ctx.cancelled.set()
            raise rules.TimeLimitExceeded(f"time limit of {time_limit:g}s exceeded")
        if "error" in box:
            exc = box["error"]
            if (
                isinstance(exc, sa.exc.IntegrityError)
                and self._already_handled(envelope) is not None
            ):
                return []  # a concurrent redelivery recorded it first
            raise exc
        records: list[OutgoingRecord] = box["records"]
        return records

    def _record_handled(self, envelope: Envelope, records: list[OutgoingRecord]) -> None:
        if self.db is None or self.processed is None:
            return
        with self.db.session() as session:
            session.execute(
                sa.insert(self.processed).values(
                    consumer=self.group,
                    event_id=envelope.id,
                    event_type=envelope.type,
                    outputs=encode_records(records),
                    handled_at=datetime.now(UTC),
                )
            )

    def _on_failure(
        self,
        msg: ConsumedRecord,
        headers: dict[str, bytes],
        envelope: Envelope,
        payload: Payload,
        route: Route,
        task: Command | None,
        exc: Exception,
    ) -> None:
        max_retries = task.options.max_retries if task else self.options.default_max_retries
        retry_delay = task.options.retry_delay if task else self.options.default_retry_delay
        decision = rules.decide(
            exc,
            attempt=envelope.attempt,
            max_retries=max_retries,
            retry_delay=retry_delay,
            tiers=self.names.tiers,
        )
        error = ErrorInfo(
            error_class=type(exc).__name__,
            message=rules.error_text(exc),
            code=_str_or_none(getattr(exc, "code", None)),
            subcode=_str_or_none(getattr(exc, "subcode", None)),
            transient=decision.transient,
        )
        records: list[OutgoingRecord] = []
        if decision.disposition is rules.Disposition.RETRY:
            assert decision.tier is not None
            records.append(
                self._tier_record(msg, headers, envelope, decision.tier, exc, envelope.attempt + 1)
            )
            if task is not None and envelope.taskid:
                next_at = datetime.now(UTC) + timedelta(seconds=decision.delay)
                records.append(
                    self.reporter.record(
                        envelope.taskid,
                        task.task_name,
                        TaskState.RETRY,
                        attempt=envelope.attempt,
                        cause=envelope,
                        error=error,
                        next_attempt_at=next_at,
                    )
                )
            metrics.RETRIES.labels(self.service, envelope.type, decision.tier.name).inc()
            metrics.EVENTS_HANDLED.labels(self.service, envelope.type, "retry").inc()
            log.info("retrying %s in tier %s: %s", envelope.type, decision.tier.name, error.message)
        else:
            reason = "exhausted" if decision.transient else "permanent"
            records.append(self._dead_record(msg, headers, exc, reason))
            if route.on_failure is not None:
                records.extend(
                    OutgoingRecord.of(self.names.topic(e.type), e)
                    for e in route.on_failure(envelope, payload, error)
                )
            if task is not None and envelope.taskid:
                records.append(
                    self.reporter.record(
                        envelope.taskid,
                        task.task_name,
                        TaskState.FAILURE,
                        attempt=envelope.attempt,
                        cause=envelope,
                        error=error,
                    )
                )
            metrics.EVENTS_HANDLED.labels(self.service, envelope.type, "dead").inc()
            log.warning("dead-lettering %s (%s): %s", envelope.type, reason, error.message)
        self.producer.send_batch(records)

    # --- forwarding -------------------------------------------------------------------------
    def _forward_headers(
        self,
        msg: ConsumedRecord,
        headers: dict[str, bytes],
        exc: BaseException | None,
        attempt: int,
    ) -> list[tuple[str, bytes]]:
        kept = [(k, v) for k, v in headers.items() if k not in rules.HOP_HEADERS]
        if rules.H_ORIGINAL_TOPIC not in headers:
            ts = msg.timestamp_ms
            kept += [
                (rules.H_ORIGINAL_TOPIC, msg.topic.encode()),
                (rules.H_ORIGINAL_PARTITION, str(msg.partition).encode()),
                (rules.H_ORIGINAL_OFFSET, str(msg.offset).encode()),
                (rules.H_ORIGINAL_TIMESTAMP, str(ts).encode()),
            ]
        if exc is not None and rules.H_FIRST_FAILURE_AT not in headers:
            kept.append((rules.H_FIRST_FAILURE_AT, str(rules.now_ms()).encode()))
        kept += [
            (rules.H_CONSUMER_GROUP, self.group.encode()),
            (rules.H_ATTEMPT, str(attempt).encode()),
        ]
        if exc is not None:
            kept += [
                (rules.H_ERROR_CLASS, type(exc).__name__.encode()),
                (rules.H_ERROR_MESSAGE, rules.error_text(exc).encode()),
            ]
        return kept

    def _tier_record(
        self,
        msg: ConsumedRecord,
        headers: dict[str, bytes],
        envelope: Envelope,
        tier: DelayTier,
        exc: BaseException | None,
        attempt: int,
    ) -> OutgoingRecord:
        forwarded = self._forward_headers(msg, headers, exc, attempt)
        forwarded.append((rules.H_DUE_AT, str(rules.now_ms() + int(tier.delay * 1000)).encode()))
        return OutgoingRecord(self.names.retry(envelope.type, tier), msg.key, msg.value, forwarded)

    def _dead_record(
        self, msg: ConsumedRecord, headers: dict[str, bytes], exc: BaseException, reason: str
    ) -> OutgoingRecord:
        raw_attempt = headers.get(rules.H_ATTEMPT, b"1")
        attempt = int(raw_attempt) if raw_attempt.isdigit() else 1
        forwarded = self._forward_headers(msg, headers, exc, attempt)
        forwarded.append((rules.H_REASON, reason.encode()))
        metrics.DEAD_LETTERS.labels(self.service, self.names.logical(msg.topic), reason).inc()
        return OutgoingRecord(
            self.names.dlq(self.names.logical(msg.topic)), msg.key, msg.value, forwarded
        )

    def _send_status(self, envelope: Envelope, task: Command, state: TaskState) -> None:
        assert envelope.taskid is not None
        self.producer.send_nowait(
            [
                self.reporter.record(
                    envelope.taskid, task.task_name, state, attempt=envelope.attempt, cause=envelope
                )
            ]
        )
        metrics.TASKS.labels(self.service, task.task_name, state.value).inc()


def _str_or_none(value: object) -> str | None:
    return None if value is None else str(value)
