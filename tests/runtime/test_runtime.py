"""The consumer runtime's contract, run twice: on the in-memory broker fake (with SQLite) and on
the real broker (with PostgreSQL) — delay-tier retries due at their own time, dead letters,
malformed records, idempotency, task options, lanes by key, offsets, back-pressure,
rebalances, revocations and infrastructure errors."""

from __future__ import annotations

import json
import logging
import threading
import time
import zlib
from collections import defaultdict
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from infra.waiting import wait_for
from shared.db import Database, tracking_tables
from shared.envelope import Envelope, new_event
from shared.events import TaskOptions, TaskRevoked, TaskState, TaskStatus, TrainingRequested
from shared.logging import JsonFormatter
from shared.producer import OutgoingRecord
from shared.retry import H_DUE_AT, PermanentError, RetryableError
from shared.runtime import (
    ConsumedRecord,
    ConsumerRuntime,
    HandlerContext,
    HandlerOutcome,
    RuntimeOptions,
)
from shared.tasks import RevocationRegistry
from shared.topics import TopicNames, delete_topics, parse_tiers, provision_topics
from tests.conftest import TEST_MAX_PARTITIONS, TEST_TIERS
from tests.support.buses import Bus, kafka_bus, memory_bus

Behaviour = Callable[[HandlerContext], HandlerOutcome | None]
COMMANDS = "ml.training_requested"


class ScriptedHandler:
    """Runs the next scripted behaviour for the event's subject; records every call."""

    def __init__(self) -> None:
        self.scripts: dict[str, list[Behaviour]] = {}
        self.calls: dict[str, list[tuple[float, int]]] = defaultdict(list)
        self.lock = threading.Lock()

    def __call__(
        self, envelope: Envelope, payload: TrainingRequested, ctx: HandlerContext
    ) -> HandlerOutcome | None:
        with self.lock:
            self.calls[envelope.subject].append((time.time(), envelope.attempt))
            script = self.scripts.get(envelope.subject, [])
            behaviour = (
                script.pop(0) if script else (lambda ctx: HandlerOutcome(result={"ok": True}))
            )
        return behaviour(ctx)


def blocked(until: threading.Event) -> Behaviour:
    """A handler that waits for `until` (and ignores cancellation while it waits)."""

    def behaviour(ctx: HandlerContext) -> None:
        until.wait(30)

    return behaviour


def fail_transient(ctx: HandlerContext) -> None:
    raise RetryableError("platform flaked")


def fail_permanent(ctx: HandlerContext) -> None:
    raise PermanentError("invalid parameter: budget")


@pytest.fixture(params=["memory", "kafka"])
def bus(request: pytest.FixtureRequest, topic_prefix: str) -> Iterator[Bus]:
    names = TopicNames(topic_prefix, parse_tiers(TEST_TIERS), TEST_MAX_PARTITIONS)
    if request.param == "memory":
        yield memory_bus(names)
        return
    bootstrap: str = request.getfixturevalue("kafka_bootstrap")
    provision_topics(bootstrap, names)
    kafka = kafka_bus(names, bootstrap)
    try:
        yield kafka
    finally:
        kafka.close()
        delete_topics(bootstrap, names)


@pytest.fixture
def db(bus: Bus, request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    if bus.kind == "kafka":
        yield request.getfixturevalue("tracking_db")
        return
    database = Database("", "tracked", str(tmp_path))
    metadata = sa.MetaData()
    tracking_tables(metadata)
    metadata.create_all(database.engine)
    yield database
    database.dispose()


@pytest.fixture
def handler() -> ScriptedHandler:
    return ScriptedHandler()


@pytest.fixture
def revocations() -> RevocationRegistry:
    registry = RevocationRegistry()
    registry.caught_up.set()
    return registry


def processed_table(db: Database) -> sa.Table:
    metadata = sa.MetaData()
    processed, _ = tracking_tables(metadata)
    return processed


def runtime_on(
    bus: Bus,
    db: Database,
    group: str,
    revocations: RevocationRegistry | None = None,
    producer: Any = None,
    **options: Any,
) -> ConsumerRuntime:
    """A runtime of this test's bus and database (or another producer), nothing registered."""
    return ConsumerRuntime(
        service="test",
        group=bus.names.group(group),
        bootstrap=bus.bootstrap,
        consumer_factory=bus.consumer_factory,
        names=bus.names,
        producer=producer or bus.producer,
        db=db,
        processed_table=processed_table(db),
        revocations=revocations,
        options=RuntimeOptions(session_timeout_ms=6000, revoke_timeout=2, **options),
    )


def make_runtime(
    bus: Bus,
    db: Database,
    handler: ScriptedHandler,
    revocations: RevocationRegistry,
    **options: Any,
) -> ConsumerRuntime:
    rt = runtime_on(bus, db, "test", revocations, **{"default_time_limit": 30, **options})
    rt.register(TrainingRequested, handler)
    return rt


@pytest.fixture
def runtime(
    bus: Bus, db: Database, handler: ScriptedHandler, revocations: RevocationRegistry
) -> Iterator[ConsumerRuntime]:
    rt = make_runtime(bus, db, handler, revocations).start()
    assert rt.assigned.wait(30)
    yield rt
    rt.stop()


def command(subject: str, **options: Any) -> Envelope:
    return new_event(
        TrainingRequested(options=TaskOptions(**options)),
        source="test",
        subject=subject,
        taskid=f"task-{subject}",
    )


def wait_state(bus: Bus, task_id: str, state: str, timeout: float = 40) -> list[TaskStatus]:
    """The task's transitions as seen on `task.status`, once one reached `state`."""
    seen: list[TaskStatus] = []

    def reached() -> bool:
        seen[:] = bus.statuses(task_id)
        return any(s.state == state for s in seen)

    wait_for(reached, timeout, 0.1, f"{task_id} to reach {state}")
    return seen


def test_success_emits_started_and_success_with_the_result(
    runtime: ConsumerRuntime, bus: Bus, handler: ScriptedHandler
) -> None:
    handler.scripts["ok"] = [lambda ctx: HandlerOutcome(result={"trained": 3})]
    bus.send(command("ok"))
    seen = wait_state(bus, "task-ok", "SUCCESS")
    assert [s.state for s in seen] == [TaskState.STARTED, TaskState.SUCCESS]
    assert seen[-1].result == {"trained": 3}


class RecordingProducer:
    """The bus's producer, keeping the task states of each call (one call, one batch)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.batches: list[list[str]] = []

    def _keep(self, records: list[OutgoingRecord]) -> None:
        states = [
            json.loads(r.value or b"{}")["state"]
            for r in records
            if r.topic.endswith("task.status")
        ]
        if states:
            self.batches.append(states)

    def send_async(
        self, records: list[OutgoingRecord], on_done: Callable[[Exception | None], None]
    ) -> None:
        self._keep(records)
        self.inner.send_async(records, on_done)

    def send_nowait(self, records: list[OutgoingRecord]) -> None:
        self._keep(records)
        self.inner.send_nowait(records)


def test_a_short_task_sends_started_with_its_outcome_a_long_one_at_once(
    bus: Bus, db: Database, handler: ScriptedHandler, revocations: RevocationRegistry
) -> None:
    recording = RecordingProducer(bus.producer)
    rt = runtime_on(bus, db, "test", revocations, recording, announce_started_after=0.2)
    rt.register(TrainingRequested, handler)
    release = threading.Event()
    handler.scripts["long"] = [blocked(release)]

    def reports(ctx: HandlerContext) -> None:
        ctx.progress(50)

    handler.scripts["reporting"] = [reports]
    rt.start()
    try:
        bus.send(command("short"))
        wait_state(bus, "task-short", "SUCCESS")
        assert ["STARTED", "SUCCESS"] in recording.batches  # one batch, in order
        bus.send(command("long"))
        # Announced on its own while the handler still runs (after 0.2 s, not at its end).
        seen = wait_state(bus, "task-long", "STARTED", timeout=10)
        assert [s.state for s in seen] == [TaskState.STARTED]
        release.set()
        assert [s.state for s in wait_state(bus, "task-long", "SUCCESS")] == [
            TaskState.STARTED,
            TaskState.SUCCESS,
        ]
        bus.send(command("reporting"))  # a progress report takes the STARTED along, first
        seen = wait_state(bus, "task-reporting", "SUCCESS")
        assert [s.state for s in seen] == [TaskState.STARTED, TaskState.PROGRESS, TaskState.SUCCESS]
    finally:
        release.set()
        rt.stop()


def test_transient_failures_retry_when_due_then_succeed(
    runtime: ConsumerRuntime, bus: Bus, handler: ScriptedHandler
) -> None:
    handler.scripts["flaky"] = [fail_transient, fail_transient]
    bus.send(command("flaky", retry_delay=1, max_retries=3))
    seen = wait_state(bus, "task-flaky", "SUCCESS")
    states = [s.state for s in seen]
    assert states.count(TaskState.RETRY) == 2
    assert states[-1] is TaskState.SUCCESS
    retries = [s for s in seen if s.state is TaskState.RETRY]
    assert retries[0].error is not None and retries[0].error.message == "platform flaked"
    calls = handler.calls["flaky"]
    assert [attempt for _, attempt in calls] == [1, 2, 3]
    # Each retry ran at its announced time (backoff 1 s then 2 s, ± 25 % jitter): never
    # early, and not a tier's whole delay late.
    for (ran_at, _attempt), announced in zip(calls[1:], retries, strict=True):
        assert announced.next_attempt_at is not None
        due = announced.next_attempt_at.timestamp()
        assert due - 0.05 <= ran_at <= due + 0.5
    parked = sum(len(bus.records(bus.names.retry(COMMANDS, t))) for t in bus.names.tiers)
    assert parked == 2


def test_permanent_failure_is_dead_lettered_with_its_cause(
    runtime: ConsumerRuntime, bus: Bus, handler: ScriptedHandler
) -> None:
    handler.scripts["bad"] = [fail_permanent]
    envelope = command("bad")
    bus.send(envelope)
    seen = wait_state(bus, "task-bad", "FAILURE")
    assert seen[-1].error is not None and seen[-1].error.message == "invalid parameter: budget"
    dead = wait_for(lambda: bus.records(bus.names.dlq(COMMANDS)), 10, what="a dead letter")
    headers = dead[0].header_map()
    assert headers["adflux-original-topic"] == bus.names.topic(COMMANDS).encode()
    assert headers["adflux-error-class"] == b"PermanentError"
    assert headers["adflux-reason"] == b"permanent"
    assert headers["adflux-consumer-group"] == bus.names.group("test").encode()
    assert {
        "adflux-original-partition",
        "adflux-original-offset",
        "adflux-original-timestamp",
        "adflux-first-failure-at",
    } <= set(headers)
    assert headers["ce_id"] == envelope.id.encode()
    assert len(handler.calls["bad"]) == 1


def test_exhausted_retries_end_in_the_dead_letters(
    runtime: ConsumerRuntime, bus: Bus, handler: ScriptedHandler
) -> None:
    handler.scripts["doomed"] = [fail_transient] * 5
    bus.send(command("doomed", retry_delay=0.5, max_retries=1))
    seen = wait_state(bus, "task-doomed", "FAILURE")
    assert [s.state for s in seen].count(TaskState.RETRY) == 1
    dead = wait_for(lambda: bus.records(bus.names.dlq(COMMANDS)), 10, what="a dead letter")
    headers = dead[0].header_map()
    assert headers["adflux-reason"] == b"exhausted"
    assert headers["ce_attempt"] == b"2"
    assert len(handler.calls["doomed"]) == 2


def test_malformed_record_is_dead_lettered_and_the_next_one_processed(
    runtime: ConsumerRuntime, bus: Bus
) -> None:
    topic = bus.names.topic(COMMANDS)
    good = command("after-garbage")
    shaped = OutgoingRecord.of(topic, good)
    wrong_shape = OutgoingRecord(
        topic,
        b"x",
        json.dumps({"n_clusters": "many"}).encode(),
        [(k, v) for k, v in shaped.headers if k != "ce_id"] + [("ce_id", b"other")],
    )
    garbage_headers = [
        ("ce_id", b"1"),
        ("ce_type", COMMANDS.encode()),
        ("ce_source", b"x"),
        ("ce_specversion", b"1.0"),
    ]
    bus.send_records(
        [
            OutgoingRecord(topic, b"x", b"{not json", garbage_headers),
            OutgoingRecord(topic, b"x", b"no headers at all", []),
            wrong_shape,
        ]
    )
    bus.send(good)
    wait_state(bus, "task-after-garbage", "SUCCESS")

    def three_dead() -> list[ConsumedRecord] | None:
        dead = bus.records(bus.names.dlq(COMMANDS))
        return dead if len(dead) == 3 else None

    dead = wait_for(three_dead, 10, what="three dead letters")
    assert {r.header_map()["adflux-reason"] for r in dead} == {b"malformed"}


def test_a_redelivered_event_runs_once_and_its_outputs_are_resent(
    runtime: ConsumerRuntime, bus: Bus, handler: ScriptedHandler
) -> None:
    envelope = command("twice")
    bus.send(envelope)
    wait_state(bus, "task-twice", "SUCCESS")
    bus.send(envelope)  # the same event id again, as after a crash
    bus.send(envelope)  # and again in the same poll batch

    def successes() -> int:
        return [s.state for s in bus.statuses("task-twice")].count(TaskState.SUCCESS)

    wait_for(lambda: successes() == 3, 30, 0.1, "the stored SUCCESS to be re-sent twice")
    assert len(handler.calls["twice"]) == 1


def test_a_concurrent_redelivery_returns_the_stored_outputs(
    runtime: ConsumerRuntime, bus: Bus, db: Database, handler: ScriptedHandler
) -> None:
    """Another member recorded the event while this one ran it: its SUCCESS is not lost."""
    envelope = command("raced")
    table = processed_table(db)
    other = runtime.reporter.record(
        "task-raced", "ml.train", TaskState.SUCCESS, result={"by": "other"}
    )

    def recorded_elsewhere(ctx: HandlerContext) -> HandlerOutcome:
        from shared.runtime.records import encode_outputs

        with db.session() as session:
            session.execute(
                sa.insert(table).values(
                    consumer=runtime.group,
                    event_id=envelope.id,
                    event_type=envelope.type,
                    outputs=encode_outputs([other]),
                    handled_at=datetime.now(UTC),
                )
            )
        return HandlerOutcome(result={"by": "me"})

    handler.scripts["raced"] = [recorded_elsewhere]
    bus.send(envelope)
    seen = wait_state(bus, "task-raced", "SUCCESS")
    assert seen[-1].result == {"by": "other"}
    assert [s.state for s in seen].count(TaskState.FAILURE) == 0


def test_countdown_schedules_then_runs_when_due_without_blocking_others(
    runtime: ConsumerRuntime, bus: Bus, handler: ScriptedHandler
) -> None:
    eta = datetime.now(UTC) + timedelta(seconds=3)
    bus.send(command("later", eta=eta))
    bus.send(command("now"))
    wait_state(bus, "task-now", "SUCCESS", timeout=10)
    assert "later" not in handler.calls  # waiting in a tier, not blocking "now"
    seen = wait_state(bus, "task-later", "SUCCESS")
    assert seen[0].state is TaskState.SCHEDULED and seen[0].next_attempt_at is not None
    started_at = handler.calls["later"][0][0]
    assert eta.timestamp() - 0.05 <= started_at <= eta.timestamp() + 0.5


def test_expired_task_is_not_run(
    runtime: ConsumerRuntime, bus: Bus, handler: ScriptedHandler
) -> None:
    bus.send(command("stale", expires=datetime.now(UTC) - timedelta(seconds=1)))
    seen = wait_state(bus, "task-stale", "EXPIRED")
    assert [s.state for s in seen] == [TaskState.EXPIRED]
    assert "stale" not in handler.calls


def test_time_limit_cancels_the_handler_and_retries_it(
    runtime: ConsumerRuntime, bus: Bus, handler: ScriptedHandler
) -> None:
    def slow(ctx: HandlerContext) -> None:
        ctx.cancelled.wait(10)
        ctx.check_cancelled()

    handler.scripts["slow"] = [slow]
    bus.send(command("slow", time_limit=0.5, retry_delay=0.5))
    seen = wait_state(bus, "task-slow", "SUCCESS")
    retry = next(s for s in seen if s.state is TaskState.RETRY)
    assert retry.error is not None and retry.error.error_class == "TimeLimitExceeded"
    assert len(handler.calls["slow"]) == 2


def test_a_handler_that_ignores_its_time_limit_is_abandoned_and_its_lane_goes_on(
    bus: Bus, db: Database, handler: ScriptedHandler, revocations: RevocationRegistry
) -> None:
    release = threading.Event()
    handler.scripts["stuck"] = [blocked(release)]
    rt = make_runtime(bus, db, handler, revocations, lanes=1, time_limit_grace=0.5).start()
    try:
        bus.send(command("stuck", time_limit=0.5, retry_delay=0.5))
        bus.send(command("behind"))  # same lane (one lane): must not wait for "stuck"
        wait_state(bus, "task-behind", "SUCCESS", timeout=15)
        seen = wait_state(bus, "task-stuck", "SUCCESS", timeout=15)
        assert [s.state for s in seen].count(TaskState.RETRY) == 1
    finally:
        release.set()
        rt.stop()


def test_revoked_task_that_has_not_started_never_runs(
    runtime: ConsumerRuntime, bus: Bus, handler: ScriptedHandler, revocations: RevocationRegistry
) -> None:
    listener = revocation_listener(bus, revocations).start()
    try:
        eta = datetime.now(UTC) + timedelta(seconds=2)
        bus.send(command("revoke-me", eta=eta))
        wait_state(bus, "task-revoke-me", "SCHEDULED", timeout=10)
        bus.send(revocation("task-revoke-me"))
        wait_for(lambda: revocations.is_revoked("task-revoke-me"), 10, what="revocation learned")
        seen = wait_state(bus, "task-revoke-me", "REVOKED")
        assert TaskState.STARTED not in [s.state for s in seen]
        assert "revoke-me" not in handler.calls
    finally:
        listener.stop()


def test_a_restarted_worker_takes_no_command_before_it_knows_the_revocations(
    bus: Bus, db: Database, handler: ScriptedHandler
) -> None:
    bus.send(revocation("task-gone"))
    bus.send(command("gone"))
    registry = RevocationRegistry()  # a fresh process: nothing known yet
    rt = make_runtime(bus, db, handler, registry).start()
    time.sleep(0.5)  # the command runtime waits for the listener, which is not started yet
    assert not rt.assigned.is_set()
    listener = revocation_listener(bus, registry).start()
    try:
        seen = wait_state(bus, "task-gone", "REVOKED")
        assert [s.state for s in seen] == [TaskState.REVOKED]
        assert "gone" not in handler.calls
    finally:
        listener.stop()
        rt.stop()


def test_same_key_runs_in_order_and_other_keys_run_meanwhile(
    runtime: ConsumerRuntime, bus: Bus, handler: ScriptedHandler
) -> None:
    gate = threading.Event()
    first = command("k")
    second = new_event(
        TrainingRequested(), source="test", subject="k", taskid="task-k2"
    )  # same subject, so the same key
    handler.scripts["k"] = [blocked(gate), lambda ctx: None]
    bus.send(first)
    bus.send(second)
    bus.send(command("other"))
    wait_state(bus, "task-other", "SUCCESS", timeout=15)  # not held behind key "k"
    assert len(handler.calls["k"]) == 1  # the second "k" waits for the first
    gate.set()
    wait_state(bus, "task-k2", "SUCCESS", timeout=15)
    assert [a for _, a in handler.calls["k"]] == [1, 1]
    assert handler.calls["k"][0][0] <= handler.calls["k"][1][0]


def test_offsets_are_committed_only_up_to_the_lowest_unfinished_record(
    bus: Bus, db: Database, handler: ScriptedHandler, revocations: RevocationRegistry
) -> None:
    gate = threading.Event()
    handler.scripts["slowest"] = [blocked(gate)]
    rt = make_runtime(bus, db, handler, revocations).start()
    try:
        assert rt.assigned.wait(30)
        slowest = command("slowest")
        bus.send(slowest)
        [record] = wait_for(lambda: bus.records(bus.names.topic(COMMANDS)), 10)
        topic, partition, offset = record.topic, record.partition, record.offset
        # Later records on the same partition (other keys) finish first.
        later = [
            e for e in (command(f"fast-{i}") for i in range(40)) if _partition(bus, e) == partition
        ][:3]
        for envelope in later:
            bus.send(envelope)
        for envelope in later:
            wait_state(bus, envelope.taskid or "", "SUCCESS", timeout=15)
        time.sleep(1.0)  # several auto-commit intervals: nothing may pass the blocked record
        assert (bus.committed(rt.group, topic, partition) or 0) <= offset
        gate.set()
        wait_state(bus, "task-slowest", "SUCCESS", timeout=15)
        wait_for(
            lambda: (bus.committed(rt.group, topic, partition) or 0) >= offset + 4,
            10,
            0.2,
            "the offset to move past every finished record",
        )
    finally:
        gate.set()
        rt.stop()


def test_in_flight_work_is_bounded_and_the_loop_keeps_polling(
    bus: Bus, db: Database, handler: ScriptedHandler, revocations: RevocationRegistry
) -> None:
    gate = threading.Event()
    for i in range(12):
        handler.scripts[f"b{i}"] = [blocked(gate)]
    rt = make_runtime(bus, db, handler, revocations, lanes=8, max_in_flight=4).start()
    try:
        assert rt.assigned.wait(30)
        for i in range(12):
            bus.send(command(f"b{i}"))
        wait_for(lambda: rt.in_flight() == 4, 10, what="four records in flight")
        polled = rt.last_poll
        time.sleep(0.6)
        assert rt.in_flight() == 4 and len(handler.calls) == 4
        assert rt.last_poll > polled  # still polling (heartbeats, rebalances) while full
        gate.set()
        for i in range(12):
            wait_state(bus, f"task-b{i}", "SUCCESS", timeout=20)
    finally:
        gate.set()
        rt.stop()


def test_a_paused_tier_partition_is_resumed_after_a_rebalance_gives_it_back(
    runtime: ConsumerRuntime, bus: Bus, handler: ScriptedHandler
) -> None:
    """librdkafka keeps an application pause across a rebalance: the runtime must set the
    pause state itself on every assignment, or the waiting record is never read again."""
    eta = datetime.now(UTC) + timedelta(seconds=14)  # longest tier: paused, not held
    bus.send(command("parked", eta=eta))
    wait_state(bus, "task-parked", "SCHEDULED", timeout=10)
    wait_for(lambda: runtime._due_paused, 10, 0.05, "the tier partition paused")
    bus.rebalance(runtime.group, runtime.topics())
    seen = wait_state(bus, "task-parked", "SUCCESS", timeout=40)
    assert seen[-1].state is TaskState.SUCCESS
    assert handler.calls["parked"][0][0] >= eta.timestamp() - 0.05


def test_a_far_eta_in_the_last_tier_does_not_hold_back_a_nearer_one(
    runtime: ConsumerRuntime, bus: Bus, handler: ScriptedHandler
) -> None:
    """The last tier takes every long wait, so its records are not due in the order they were
    written: one due far ahead must not keep the partition paused past the due time of those
    behind it. It moves to the tier's tail, due time unchanged, and the nearer one runs on
    time."""
    now = datetime.now(UTC)
    far, near = now + timedelta(seconds=40), now + timedelta(seconds=12)
    bus.send(command("far", eta=far))
    wait_state(bus, "task-far", "SCHEDULED", timeout=10)
    bus.send(command("near", eta=near))  # both in the last tier (10 s), one partition
    wait_state(bus, "task-near", "SUCCESS", timeout=30)
    started_at = handler.calls["near"][0][0]
    assert near.timestamp() - 0.05 <= started_at <= near.timestamp() + 1.2  # <= 10 % late
    assert "far" not in handler.calls
    last = bus.names.retry(COMMANDS, bus.names.tiers[-1])
    copies = [r for r in bus.records(last) if r.header_map().get("ce_taskid") == b"task-far"]
    assert len(copies) >= 2  # moved at least once
    assert len({r.header_map()[H_DUE_AT] for r in copies}) == 1  # never due earlier


def test_a_full_hold_pauses_until_the_earliest_held_record_is_due(
    bus: Bus, db: Database, handler: ScriptedHandler, revocations: RevocationRegistry
) -> None:
    """With no room to hold another record, the partition waits for the first held one to
    come due (a slot frees then), instead of pausing and resuming in a loop until then."""
    rt = make_runtime(bus, db, handler, revocations, max_held=1)
    pauses: list[int] = []
    pause_until = rt._pause_until

    def counted(consumer: Any, record: Any, at_ms: int) -> None:
        pauses.append(at_ms)
        pause_until(consumer, record, at_ms)

    rt._pause_until = counted  # type: ignore[method-assign]
    rt.start()
    try:
        assert rt.assigned.wait(30)
        eta = datetime.now(UTC) + timedelta(seconds=2)
        bus.send(command("first", eta=eta))
        bus.send(command("second", eta=eta))
        for subject in ("first", "second"):
            wait_state(bus, f"task-{subject}", "SUCCESS", timeout=20)
            started_at = handler.calls[subject][0][0]
            # within 25 % of the 2 s wait: the second is read again after the resume
            assert eta.timestamp() - 0.05 <= started_at <= eta.timestamp() + 0.5
        assert len(pauses) <= 3
    finally:
        rt.stop()


def test_a_database_outage_is_tried_in_place_then_deferred_and_other_keys_go_on(
    bus: Bus, db: Database, handler: ScriptedHandler, revocations: RevocationRegistry
) -> None:
    outage = {"left": 3}

    def database_away(ctx: HandlerContext) -> None:
        with handler.lock:
            outage["left"] -= 1
        raise sa.exc.OperationalError("SELECT 1", {}, Exception("connection refused"))

    handler.scripts["db"] = [database_away] * 3
    rt = make_runtime(bus, db, handler, revocations, infra_retries=2).start()
    try:
        bus.send(command("db"))
        bus.send(command("unaffected"))
        wait_state(bus, "task-unaffected", "SUCCESS", timeout=15)
        seen = wait_state(bus, "task-db", "SUCCESS", timeout=30)
        assert TaskState.FAILURE not in [s.state for s in seen]
        deferred = sum(len(bus.records(bus.names.retry(COMMANDS, t))) for t in bus.names.tiers)
        assert deferred >= 1  # after two tries in place it went to a delay tier
        assert all(a == 1 for _, a in handler.calls["db"])  # infrastructure: no attempt used
    finally:
        rt.stop()


def test_undelivered_outputs_are_redone_not_lost(
    bus: Bus, db: Database, handler: ScriptedHandler, revocations: RevocationRegistry
) -> None:
    if bus.kind != "memory":
        pytest.skip("delivery failures are injected with the in-memory producer")
    rt = make_runtime(bus, db, handler, revocations).start()
    try:
        assert rt.assigned.wait(10)
        bus.producer.fail_next(1)  # type: ignore[union-attr]
        bus.send(command("lossy"))
        seen = wait_state(bus, "task-lossy", "SUCCESS", timeout=15)
        assert [s.state for s in seen].count(TaskState.SUCCESS) == 1
        assert len(handler.calls["lossy"]) == 1  # redone from the tracking row, not re-run
    finally:
        rt.stop()


def revocation_listener(
    bus: Bus,
    registry: RevocationRegistry,
    handler: Callable[[Envelope, TaskRevoked, HandlerContext], None] | None = None,
) -> ConsumerRuntime:
    listener = ConsumerRuntime(
        service="test",
        group=bus.names.group("test.revocations"),
        bootstrap=bus.bootstrap,
        consumer_factory=bus.consumer_factory,
        names=bus.names,
        producer=bus.producer,
        broadcast=True,
        on_caught_up=registry.caught_up.set,
    )
    listener.register(TaskRevoked, handler or registry.handle)
    return listener


def test_a_broadcast_listener_runs_its_handler_on_the_poll_thread(bus: Bus) -> None:
    """A broadcast listener keeps an in-memory view and has no group to keep alive: its
    handler runs on the consumer loop's thread, with no hop to a lane."""
    registry = RevocationRegistry()
    threads: list[str] = []

    def handle(envelope: Envelope, revoked: TaskRevoked, ctx: HandlerContext) -> None:
        threads.append(threading.current_thread().name)
        registry.handle(envelope, revoked, ctx)

    listener = revocation_listener(bus, registry, handle)
    listener.start()
    try:
        bus.send(revocation("gone"))
        wait_for(lambda: registry.is_revoked("gone"), 15, 0.02, "the revocation heard")
        assert threads == [listener.thread_name]
    finally:
        listener.stop()


def revocation(task_id: str) -> Envelope:
    return new_event(
        TaskRevoked(task_id=task_id, revoked_at=datetime.now(UTC)),
        source="test",
        subject=task_id,
        taskid=task_id,
    )


def _partition(bus: Bus, envelope: Envelope) -> int:
    """librdkafka's default partitioner (consistent_random: CRC-32 of the key), as the fake's."""
    key = OutgoingRecord.of(bus.names.topic(envelope.type), envelope).key or b""
    return zlib.crc32(key) % TEST_MAX_PARTITIONS


def test_group_commit_applies_a_batch_in_one_transaction_and_isolates_a_failure(
    bus: Bus, db: Database
) -> None:
    """Projections commit a lane's records together; one failing record falls back to
    one-at-a-time handling, so the others still commit and it alone is dead-lettered."""
    applied: list[str] = []

    def project(envelope: Envelope, status: TaskStatus, ctx: HandlerContext) -> None:
        if status.task_id == "poison":
            raise PermanentError("cannot project")
        assert ctx.session is not None
        ctx.session.execute(sa.text("SELECT 1"))
        applied.append(status.task_id)

    rt = runtime_on(bus, db, "projection", lanes=1, group_commit=True)
    rt.register(TaskStatus, project)
    reporter = rt.reporter
    ids = [f"t{i}" for i in range(30)]
    bus.send_records(
        [reporter.record(i, "ml.train", TaskState.SUCCESS) for i in ids[:15]]
        + [reporter.record("poison", "ml.train", TaskState.SUCCESS)]
        + [reporter.record(i, "ml.train", TaskState.SUCCESS) for i in ids[15:]]
    )
    rt.start()
    try:
        wait_for(lambda: set(ids) <= set(applied), 30, 0.1, "every status projected")
        dead = wait_for(lambda: bus.records(bus.names.dlq("task.status")), 10, what="poison")
        assert len(dead) == 1
        with db.engine.connect() as conn:
            rows = conn.execute(
                sa.select(sa.func.count()).select_from(processed_table(db))
            ).scalar_one()
        assert rows == 30  # every good event tracked once; the poison one is not
    finally:
        rt.stop()


def test_an_idempotent_route_keeps_no_tracking_row_and_applies_a_redelivery_again(
    bus: Bus, db: Database
) -> None:
    """A handler registered idempotent is trusted with redeliveries: no dedupe, no row."""
    applied: list[str] = []

    def project(envelope: Envelope, status: TaskStatus, ctx: HandlerContext) -> None:
        applied.append(status.task_id)

    rt = runtime_on(bus, db, "idempotent", lanes=1, group_commit=True)
    rt.register(TaskStatus, project, idempotent=True)
    twice = rt.reporter.record("twice", "ml.train", TaskState.SUCCESS)
    bus.send_records([twice, rt.reporter.record("once", "ml.train", TaskState.SUCCESS)])
    rt.start()
    try:
        wait_for(lambda: {"twice", "once"} <= set(applied), 30, 0.1, "both projected")
        bus.send_records([twice])  # the same event again, as after a crash
        wait_for(lambda: applied.count("twice") == 2, 30, 0.1, "the redelivery applied")
        with db.engine.connect() as conn:
            rows = conn.execute(
                sa.select(sa.func.count()).select_from(processed_table(db))
            ).scalar_one()
        assert rows == 0
    finally:
        rt.stop()


def test_a_successful_task_leaves_a_log_line_with_its_task_id(
    runtime: ConsumerRuntime, bus: Bus
) -> None:
    lines: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(self.format(record))

    collector = Collect()
    collector.setFormatter(JsonFormatter("test"))
    logger = logging.getLogger("shared.runtime.execution")
    logger.addHandler(collector)
    logger.setLevel(logging.INFO)
    try:
        bus.send(command("logged"))
        wait_state(bus, "task-logged", "SUCCESS")
        entries = [json.loads(line) for line in lines]
        assert any(
            e.get("task_id") == "task-logged" and "succeeded" in e["message"] for e in entries
        )
    finally:
        logger.removeHandler(collector)
