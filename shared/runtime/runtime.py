"""The one consumer runtime: a poll loop that never runs a handler. It hands each record to a
lane (same key, same lane, in order), holds not-yet-due tier records until their due time,
pauses partitions while too much is in flight, and stores each partition's offset only up to
its lowest unfinished record. Lanes decode, gate, run the handler, commit its writes with the
tracking row, and produce the outputs asynchronously; a record is finished once its outputs
are acknowledged.
"""

from __future__ import annotations

import heapq
import inspect
import itertools
import logging
import queue
import threading
import time
import typing
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

import sqlalchemy as sa
from confluent_kafka import OFFSET_BEGINNING, OFFSET_END, KafkaError, KafkaException, TopicPartition

from shared import metrics
from shared import retry as rules
from shared.background import BackgroundLoop
from shared.db import Database
from shared.envelope import Envelope
from shared.events import CONTRACT_BY_MODEL, Command, Payload
from shared.producer import OutgoingRecord
from shared.runtime.context import HandlerContext, HandlerOutcome
from shared.runtime.execution import (
    ExecutionSettings,
    Finished,
    RawHandler,
    RecordExecutor,
    Redo,
    Route,
    event_id_of,
)
from shared.runtime.failures import FailureHook, FailureRouter
from shared.runtime.lanes import Job, KeyedLanes
from shared.runtime.offsets import OffsetTracker
from shared.runtime.ports import ConsumerFactory, RecordConsumer, RecordProducer, kafka_consumer
from shared.runtime.processed import ProcessedEventStore
from shared.runtime.records import ConsumedRecord, KafkaMessage, TopicPartitionKey
from shared.tasks import RevocationRegistry, TaskStatusReporter
from shared.topics import DelayTier, TopicNames

log = logging.getLogger(__name__)

P = TypeVar("P", bound=Payload)


@dataclass(frozen=True)
class RuntimeOptions:
    """Per-runtime knobs; services take them from their settings."""

    default_max_retries: int = 3
    default_retry_delay: float = 60.0
    default_time_limit: float = 3600.0
    poll_interval: float = 0.5
    session_timeout_ms: int = 10000
    lanes: int = 16
    max_in_flight: int = 512
    max_held: int = 10000
    batch_size: int = 500
    revoke_timeout: float = 10.0
    time_limit_grace: float = 5.0
    # A task's STARTED leaves with its outcome when the handler is done within this many
    # seconds (one batch, one fetch for every subscriber), else on its own after it.
    announce_started_after: float = 0.02
    infra_retries: int = 4
    # Records of one lane polled together commit in one transaction (projections).
    group_commit: bool = False
    processed_retention: timedelta = timedelta(days=7)


class ConsumerRuntime(BackgroundLoop):
    """One consumer group's loop. `broadcast` runtimes read every partition without a group
    (each process sees all records, e.g. revocations): from the start, or with `from_end` only
    what arrives after they start (a live feed)."""

    def __init__(
        self,
        *,
        service: str,
        group: str,
        names: TopicNames,
        producer: RecordProducer,
        bootstrap: str = "",
        consumer_factory: ConsumerFactory | None = None,
        db: Database | None = None,
        processed_table: sa.Table | None = None,
        revocations: RevocationRegistry | None = None,
        options: RuntimeOptions | None = None,
        broadcast: bool = False,
        from_end: bool = False,
        on_caught_up: Callable[[], None] | None = None,
    ) -> None:
        super().__init__()
        self.thread_name = f"consumer-{group}"
        self.service = service
        self.group = group
        self.names = names
        self.producer = producer
        self.db = db
        self.revocations = revocations
        self.options = options or RuntimeOptions()
        self.broadcast = broadcast
        self.from_end = from_end
        self.reporter = TaskStatusReporter(names, service)
        self.failures = FailureRouter(
            service,
            group,
            names,
            self.reporter,
            self.options.default_max_retries,
            self.options.default_retry_delay,
        )
        self.store = (
            ProcessedEventStore(db, processed_table, group)
            if db is not None and processed_table is not None
            else None
        )
        self.assigned = threading.Event()
        self._bootstrap = bootstrap
        self._consumer_factory = consumer_factory or kafka_consumer
        self._on_caught_up = on_caught_up
        self._routes: dict[str, Route] = {}
        self._raw: dict[str, RawHandler] = {}
        self._tracker = OffsetTracker()
        self._lanes: KeyedLanes | None = None
        self._events: queue.SimpleQueue[Finished | Redo] = queue.SimpleQueue()
        self._redo: list[Redo] = []
        self._held: list[tuple[int, int, ConsumedRecord]] = []  # (due ms, seq, record)
        self._seq = itertools.count()
        self._due_paused: dict[TopicPartitionKey, int] = {}  # resume at (epoch ms)
        self._backpressured = False
        self._catching_up: dict[TopicPartitionKey, int] = {}
        self._last_purge = time.monotonic()
        self._running_ids: Counter[str] = Counter()
        self.last_poll = time.monotonic()
        self._executor = RecordExecutor(
            service=service,
            names=names,
            producer=producer,
            routes=self._routes,
            raw=self._raw,
            db=db,
            store=self.store,
            failures=self.failures,
            reporter=self.reporter,
            revocations=revocations,
            options=ExecutionSettings(
                self.options.default_time_limit,
                self.options.infra_retries,
                self.options.announce_started_after,
            ),
            events=self._events,
            stop=self._stop,
        )

    # --- registration -------------------------------------------------------------------
    def register(
        self,
        model: type[P],
        handler: Callable[[Envelope, P, HandlerContext], HandlerOutcome | None],
        on_failure: FailureHook | None = None,
        *,
        idempotent: bool = False,
    ) -> None:
        """Route events whose payload is `model` to `handler`, whose payload parameter must be
        annotated with `model` (or a base of it). An `idempotent` handler applies an event
        twice with the effect of once (a projection that checks what it already holds): its
        events get no tracking row, so no dedupe query and no insert."""
        contract = CONTRACT_BY_MODEL.get(model)
        if contract is None:
            raise TypeError(f"{model.__name__} is not a declared event payload")
        _check_payload_annotation(handler, model)
        self._routes[contract.type] = Route(model, handler, on_failure, idempotent)

    def register_raw(self, physical_topic: str, handler: RawHandler) -> None:
        """Handle a topic's records undecoded (the gateway's dead-letter recorder)."""
        self._raw[physical_topic] = handler

    def topics(self) -> list[str]:
        topics = []
        for event_type in self._routes:
            topics.append(self.names.topic(event_type))
            if not self.broadcast:
                topics.extend(self.names.retry(event_type, t) for t in self.names.tiers)
        return topics + list(self._raw)

    def ready(self) -> bool:
        """Running and holding partitions: records sent now will be handled."""
        return self.healthy() and self.assigned.is_set()

    def in_flight(self) -> int:
        return self._tracker.in_flight()

    # --- lifecycle ----------------------------------------------------------------------
    def run(self) -> None:
        self._lanes = None if self.broadcast else KeyedLanes(self.options.lanes, self.group)
        consumer = self._consumer_factory(self._consumer_config())
        try:
            if self.broadcast:
                self._assign_all(consumer)
            else:
                if not self._await_revocations():
                    return
                consumer.subscribe(
                    self.topics(),
                    on_assign=self._on_assign,
                    on_revoke=self._on_revoke,
                    on_lost=self._on_lost,
                )
            while not self._stop.is_set():
                self._tick(consumer)
        except Exception:
            log.exception("consumer loop of %s crashed", self.group)
            raise
        finally:
            self._shutdown(consumer)

    def _await_revocations(self) -> bool:
        """Take no command before every revocation so far is known (a restarted worker must
        not run a task revoked while it was away)."""
        runs_tasks = any(issubclass(r.model, Command) for r in self._routes.values())
        if self.revocations is None or not runs_tasks:
            return True
        while not self.revocations.caught_up.wait(0.2):
            if self._stop.is_set():
                return False
        return True

    def _consumer_config(self) -> dict[str, Any]:
        return {
            "bootstrap.servers": self._bootstrap,
            "group.id": self.group,
            "client.id": f"{self.service}-{self.group}",
            "enable.auto.commit": not self.broadcast,
            "enable.auto.offset.store": False,
            "auto.commit.interval.ms": 500,
            "auto.offset.reset": "earliest",
            # The loop polls at least every poll_interval whatever the handlers do.
            "max.poll.interval.ms": 300000,
            "session.timeout.ms": self.options.session_timeout_ms,
            "heartbeat.interval.ms": max(1000, self.options.session_timeout_ms // 4),
            "topic.metadata.refresh.interval.ms": 10000,
            "fetch.wait.max.ms": 100,
            "socket.nagle.disable": True,
        }

    def _assign_all(self, consumer: RecordConsumer) -> None:
        parts: list[TopicPartition] = []
        for topic in self.topics():
            meta = consumer.list_topics(topic, timeout=30).topics[topic]
            for p in meta.partitions:
                if self.from_end:
                    parts.append(TopicPartition(topic, p, OFFSET_END))
                    continue
                parts.append(TopicPartition(topic, p, OFFSET_BEGINNING))
                high = self._high_watermark(consumer, TopicPartition(topic, p))
                if high > 0:
                    self._catching_up[(topic, p)] = high
        consumer.assign(parts)
        self.assigned.set()
        self._check_caught_up()

    def _high_watermark(self, consumer: RecordConsumer, tp: TopicPartition) -> int:
        """The partition's end offset, waiting out a leader election (new topics)."""
        deadline = time.monotonic() + 60
        while True:
            try:
                return consumer.get_watermark_offsets(tp, timeout=10)[1]
            except KafkaException:
                if time.monotonic() > deadline or self._stop.is_set():
                    raise
                self._stop.wait(0.5)

    def _shutdown(self, consumer: RecordConsumer) -> None:
        """Let in-flight records finish within the revoke bound, commit, and close."""
        deadline = time.monotonic() + self.options.revoke_timeout
        while self._tracker.in_flight() - len(self._held) > 0 and time.monotonic() < deadline:
            self._drain_events(consumer, wait=0.05)
        self._store_offsets(consumer)
        if not self.broadcast:
            self._commit(consumer, None)
        try:
            consumer.close()
        except (KafkaException, RuntimeError):
            log.warning("closing the consumer of %s failed", self.group, exc_info=True)
        if self._lanes is not None:
            self._lanes.stop(1.0)

    # --- rebalances ---------------------------------------------------------------------
    def _on_assign(self, consumer: RecordConsumer, partitions: list[TopicPartition]) -> None:
        # An application pause survives a rebalance that gives the partition back to the same
        # member: assign explicitly, then set every partition's pause state deliberately.
        consumer.assign(partitions)
        if partitions:
            consumer.resume(partitions)
            if self._backpressured:
                consumer.pause(partitions)
        for p in partitions:
            self._due_paused.pop((p.topic, p.partition), None)
        metrics.PAUSED_PARTITIONS.labels(self.service).set(len(self._due_paused))
        self.assigned.set()

    def _on_revoke(self, consumer: RecordConsumer, partitions: list[TopicPartition]) -> None:
        """Give in-flight records of the revoked partitions a bounded time to finish, commit
        what finished, and forget the rest (redelivered to the next owner, deduplicated)."""
        tps = [(p.topic, p.partition) for p in partitions]
        deadline = time.monotonic() + self.options.revoke_timeout
        held = {(r.topic, r.partition) for _due, _seq, r in self._held}

        def busy() -> bool:
            return any(self._tracker.in_flight(tp) and tp not in held for tp in tps)

        while busy() and time.monotonic() < deadline:
            self._drain_events(consumer, wait=0.05)
        self._store_offsets(consumer)
        self._commit(consumer, tps)
        self._forget(tps)

    def _on_lost(self, consumer: RecordConsumer, partitions: list[TopicPartition]) -> None:
        self._forget([(p.topic, p.partition) for p in partitions])

    def _forget(self, tps: list[TopicPartitionKey]) -> None:
        gone = set(tps)
        self._tracker.forget(tps)
        self._held = [h for h in self._held if h[2].tp not in gone]
        heapq.heapify(self._held)
        self._redo = [r for r in self._redo if r.record.tp not in gone]
        for tp in tps:
            self._due_paused.pop(tp, None)
        metrics.PAUSED_PARTITIONS.labels(self.service).set(len(self._due_paused))
        metrics.HELD_RECORDS.labels(self.service).set(len(self._held))

    def _commit(self, consumer: RecordConsumer, tps: list[TopicPartitionKey] | None) -> None:
        wanted = tps if tps is not None else self._tracker.partitions()
        offsets = [
            TopicPartition(t, p, off)
            for t, p in wanted
            if (off := self._tracker.committable((t, p))) is not None
        ]
        if not offsets:
            return
        try:
            consumer.commit(offsets=offsets, asynchronous=False)
        except KafkaException as exc:  # nothing new to commit, or the group moved on
            log.debug("commit of %s: %s", self.group, exc)

    # --- the loop -----------------------------------------------------------------------
    def healthy(self) -> bool:
        """The loop thread is alive and has polled recently (a wedged loop is not healthy)."""
        return super().healthy() and time.monotonic() - self.last_poll < 120

    def _tick(self, consumer: RecordConsumer) -> None:
        self.last_poll = time.monotonic()
        self._resume_due(consumer)
        self._release_held()
        self._watch_time_limits()
        self._announce_started()
        self._drain_events(consumer, wait=0)
        self._apply_backpressure(consumer)
        self._purge_processed()
        free = max(1, self.options.max_in_flight - self._working())
        limit = min(self.options.batch_size, free)
        # consume() waits for a full batch or its timeout: take what is there, else wait for one.
        messages: Sequence[KafkaMessage] = consumer.consume(limit, 0)
        if not messages:
            first = consumer.poll(self._poll_timeout())
            if first is None:
                return
            messages = [first, *consumer.consume(limit - 1, 0)] if limit > 1 else [first]
        self._accept(consumer, messages)

    def _working(self) -> int:
        return self._tracker.in_flight() - len(self._held)

    def _poll_timeout(self) -> float:
        timeout = self.options.poll_interval
        if self._working() > 0:
            timeout = min(timeout, 0.05)  # finished records are drained between polls
        now = rules.now_ms()
        soonest = [at for at in self._due_paused.values()]
        if self._held:
            soonest.append(self._held[0][0])
        if self._redo:
            soonest.append(int(min(r.not_before for r in self._redo) * 1000))
        if soonest:
            timeout = min(timeout, max(0.0, (min(soonest) - now) / 1000))
        return timeout

    def _accept(self, consumer: RecordConsumer, messages: Sequence[KafkaMessage]) -> None:
        """Sort a polled batch: hold or pause tier records not yet due, dispatch the rest
        with one dedupe query for the whole batch."""
        now = rules.now_ms()
        skipped: set[TopicPartitionKey] = set()
        ready: list[ConsumedRecord] = []
        for message in messages:
            error = message.error()
            if error is not None:
                if error.code() != KafkaError._PARTITION_EOF:
                    log.warning("consumer %s: %s", self.group, error)
                continue
            record = ConsumedRecord.of(message)
            if record.tp in skipped or record.tp in self._due_paused:
                continue
            if self._tracker.is_pending(record.tp, record.offset):
                continue  # already held or running (re-read after a seek)
            tier = self.names.tier_of(record.topic)
            if tier is not None:
                headers = record.header_map()
                owner = headers.get(rules.H_CONSUMER_GROUP)
                if owner is not None and owner.decode() != self.group:
                    self._tracker.skipped(record.tp, record.offset)  # another group's retry
                    continue
                due = int(headers.get(rules.H_DUE_AT, b"0") or 0)
                if due > now:
                    if not self._wait_for_due(consumer, record, tier, due, now):
                        skipped.add(record.tp)
                    continue
                if due:
                    metrics.RETRY_LATENESS.labels(self.service).observe((now - due) / 1000)
            self._tracker.started(record.tp, record.offset)
            ready.append(record)
        self._dispatch(ready)

    def _wait_for_due(
        self, consumer: RecordConsumer, record: ConsumedRecord, tier: DelayTier, due: int, now: int
    ) -> bool:
        """A tier record not due yet waits in memory when it is due within the tier's hold
        window; else its partition pauses until records behind it may be due, or, when that
        moment has passed (a far ETA in the last tier), it moves to the tier's tail. False when
        the partition paused (the rest of the batch from it is dropped and read again)."""
        tiers = self.names.tiers
        if len(self._held) >= self.options.max_held:
            self._pause_until(consumer, record, max(self._held[0][0], now + 1))  # a slot frees
            return False
        if due - now <= int(rules.hold_window(tiers, tier) * 1000):
            self._tracker.started(record.tp, record.offset)
            heapq.heappush(self._held, (due, next(self._seq), record))
            metrics.HELD_RECORDS.labels(self.service).set(len(self._held))
            return True
        resume = rules.resume_at(tiers, tier, due, record.timestamp_ms)
        if resume > now:
            self._pause_until(consumer, record, resume)
            return False
        self._tracker.started(record.tp, record.offset)
        self._move(record, due)
        return True

    def _move(self, record: ConsumedRecord, due: int) -> None:
        """Write the record again, due time unchanged, at the tail of the tier that fits what
        is left of its wait; its offset is done once the copy is acknowledged."""

        def done(error: Exception | None) -> None:
            if error is None:
                self._events.put(Finished(record.tp, record.offset, None))
            else:
                log.warning("moving a record of %s failed: %s; trying again", record.topic, error)
                self._events.put(Redo(record, time.monotonic() + 1.0, move_to_due=due))

        self.producer.send_async([self.failures.moved(record, due)], done)

    def _dispatch(self, records: list[ConsumedRecord]) -> None:
        if not records:
            return
        known = self._lookup(records)
        groups: dict[int, list[ConsumedRecord]] = {}
        for record in records:
            event_id = event_id_of(record)
            # A copy of an event still in flight is looked up again once its lane reaches it.
            again = event_id is not None and self._running_ids[event_id] > 0
            if event_id is not None:
                self._running_ids[event_id] += 1
            if self.options.group_commit and not again:
                groups.setdefault(self._lane_of(record), []).append(record)
            else:
                self._submit(record, None if again else known)
        for group in groups.values():
            self._submit_group(group, known)
        metrics.IN_FLIGHT.labels(self.service, self.group).set(self._tracker.in_flight())

    def _submit(
        self, record: ConsumedRecord, known: dict[str, list[OutgoingRecord]] | None
    ) -> None:
        job = Job(run=lambda: None)
        job.run = lambda: self._executor.execute(record, known, job)
        self._start(_lane_key(record), job)

    def _submit_group(
        self, records: list[ConsumedRecord], known: dict[str, list[OutgoingRecord]] | None
    ) -> None:
        job = Job(run=lambda: None)
        job.run = lambda: self._executor.execute_group(records, known, job)
        self._start(_lane_key(records[0]), job)

    def _start(self, key: bytes, job: Job) -> None:
        if self._lanes is None:
            # A broadcast listener keeps an in-memory view (live tasks, revocations, quota
            # blocks) and has no group membership to keep alive: it has no lanes, and its
            # handler runs on the poll thread, a thread hop less between broker and view.
            job.run()
        else:
            self._lanes.submit(key, job)

    def _lane_of(self, record: ConsumedRecord) -> int:
        assert self._lanes is not None
        return self._lanes.index_of(_lane_key(record))

    def _tracked(self, record: ConsumedRecord) -> bool:
        """Whether the record's handling keeps a tracking row (not raw, not idempotent)."""
        if record.topic in self._raw:
            return False
        event_type = record.header_map().get("ce_type")
        route = self._routes.get(event_type.decode(errors="replace")) if event_type else None
        return route is None or not route.idempotent

    def _lookup(self, records: list[ConsumedRecord]) -> dict[str, list[OutgoingRecord]] | None:
        """The stored outputs of already handled events in the batch (one query); None when
        the database cannot say (each lane then asks for its own record)."""
        if self.store is None:
            return {}
        ids = [i for r in records if self._tracked(r) and (i := event_id_of(r))]
        try:
            return self.store.lookup(ids)
        except sa.exc.SQLAlchemyError as exc:
            log.warning("dedupe lookup of %s failed: %s", self.group, exc)
            return None

    def _release_held(self) -> None:
        now = rules.now_ms()
        due: list[ConsumedRecord] = []
        while self._held and self._held[0][0] <= now:
            _at, _seq, record = heapq.heappop(self._held)
            metrics.RETRY_LATENESS.labels(self.service).observe((now - _at) / 1000)
            due.append(record)
        if due:
            metrics.HELD_RECORDS.labels(self.service).set(len(self._held))
            self._dispatch(due)
        if self._redo:
            mono = time.monotonic()
            again = [r for r in self._redo if r.not_before <= mono]
            self._redo = [r for r in self._redo if r.not_before > mono]
            for redo in again:
                if not self._tracker.is_pending(redo.record.tp, redo.record.offset):
                    continue
                if redo.move_to_due is not None:
                    self._move(redo.record, redo.move_to_due)
                else:
                    self._submit(redo.record, None)

    def _pause_until(self, consumer: RecordConsumer, record: ConsumedRecord, at_ms: int) -> None:
        tp = TopicPartition(record.topic, record.partition)
        consumer.pause([tp])
        # librdkafka drops what it buffered for a paused partition: re-read from this record.
        consumer.seek(TopicPartition(record.topic, record.partition, record.offset))
        self._due_paused[record.tp] = at_ms
        metrics.PAUSED_PARTITIONS.labels(self.service).set(len(self._due_paused))

    def _resume_due(self, consumer: RecordConsumer) -> None:
        now = rules.now_ms()
        due = [tp for tp, at in self._due_paused.items() if at <= now]
        if not due:
            return
        for tp in due:
            del self._due_paused[tp]
        if not self._backpressured:
            consumer.resume([TopicPartition(t, p) for t, p in due])
        metrics.PAUSED_PARTITIONS.labels(self.service).set(len(self._due_paused))

    def _apply_backpressure(self, consumer: RecordConsumer) -> None:
        """Pause every partition while the lanes hold `max_in_flight` records; keep polling."""
        working = self._working()
        if not self._backpressured and working >= self.options.max_in_flight:
            parts = consumer.assignment()
            if parts:
                consumer.pause(parts)
                for p in parts:
                    tp = (p.topic, p.partition)
                    position = self._tracker.position(tp)
                    if position is not None and tp not in self._due_paused:
                        consumer.seek(TopicPartition(p.topic, p.partition, position))
            self._backpressured = True
        elif self._backpressured and working <= self.options.max_in_flight // 2:
            parts = [
                p for p in consumer.assignment() if (p.topic, p.partition) not in self._due_paused
            ]
            if parts:
                consumer.resume(parts)
            self._backpressured = False

    def _announce_started(self) -> None:
        """Send the STARTED of tasks still running `announce_started_after` their start (at
        the loop's next turn: while records are in flight it turns at least every 50 ms)."""
        if self._lanes is not None:
            self._lanes.announce_due(time.monotonic(), self.producer.send_nowait)

    def _watch_time_limits(self) -> None:
        if self._lanes is None:
            return
        for job in self._lanes.overdue(time.monotonic(), self.options.time_limit_grace):
            if job.on_abandon is not None:
                job.on_abandon()

    def _drain_events(self, consumer: RecordConsumer, wait: float) -> None:
        try:
            item = self._events.get(timeout=wait) if wait > 0 else self._events.get_nowait()
        except queue.Empty:
            return
        while True:
            if isinstance(item, Finished):
                self._tracker.finished(item.tp, item.offset)
                if item.event_id is not None:
                    self._running_ids[item.event_id] -= 1
                    if self._running_ids[item.event_id] <= 0:
                        del self._running_ids[item.event_id]
            else:
                self._redo.append(item)
            try:
                item = self._events.get_nowait()
            except queue.Empty:
                break
        self._store_offsets(consumer)
        self._check_caught_up()
        metrics.IN_FLIGHT.labels(self.service, self.group).set(self._tracker.in_flight())

    def _store_offsets(self, consumer: RecordConsumer) -> None:
        moved = self._tracker.take_dirty()
        if moved and not self.broadcast:
            try:
                consumer.store_offsets(
                    offsets=[TopicPartition(t, p, off) for (t, p), off in moved.items()]
                )
            except KafkaException as exc:  # the partition was revoked meanwhile
                log.debug("store_offsets of %s: %s", self.group, exc)

    def _check_caught_up(self) -> None:
        if not self._catching_up:
            if self._on_caught_up is not None and self.broadcast and self.assigned.is_set():
                self._on_caught_up()
                self._on_caught_up = None
            return
        for tp, high in list(self._catching_up.items()):
            position = self._tracker.committable(tp)
            if position is not None and position >= high and not self._tracker.in_flight(tp):
                del self._catching_up[tp]
        if not self._catching_up:
            self._check_caught_up()

    def _purge_processed(self) -> None:
        if self.store is None or time.monotonic() - self._last_purge < 600:
            return
        self._last_purge = time.monotonic()
        try:
            purged = self.store.purge(self.options.processed_retention)
            if purged:
                log.info("purged %d tracking rows of %s", purged, self.group)
        except sa.exc.SQLAlchemyError as exc:
            log.warning("purging tracking rows of %s failed: %s", self.group, exc)


def _lane_key(record: ConsumedRecord) -> bytes:
    return record.key or f"{record.topic}:{record.partition}".encode()


def _check_payload_annotation(handler: Callable[..., Any], model: type[Payload]) -> None:
    """The handler's second parameter must be annotated with `model` or a base of it."""
    target: Callable[..., Any] = handler
    if not (inspect.isfunction(handler) or inspect.ismethod(handler)):
        target = type(handler).__call__
    try:
        hints = typing.get_type_hints(target)
    except NameError as exc:
        raise TypeError(f"cannot resolve the annotations of {handler!r}: {exc}") from exc
    params = list(inspect.signature(handler).parameters.values())
    if len(params) < 2:
        raise TypeError(f"{handler!r} must take (envelope, payload, context)")
    annotation = hints.get(params[1].name)
    if not (isinstance(annotation, type) and issubclass(model, annotation)):
        raise TypeError(
            f"{handler!r} handles {annotation!r}, not {model.__name__}: "
            "annotate its payload parameter with the registered model"
        )
