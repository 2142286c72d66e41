"""The consumer runtime against the real broker and PostgreSQL: delay-tier retries, dead
letters, malformed records, idempotency, and the task options (countdown, expires, time
limit, revoke)."""

from __future__ import annotations

import json
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from infra.waiting import wait_for
from shared.runtime import (
    ConsumedRecord,
    ConsumerRuntime,
    HandlerContext,
    HandlerOutcome,
    RuntimeOptions,
)
from shared.db import Database, tracking_tables
from shared.envelope import Envelope, new_event
from shared.events import TaskOptions, TaskRevoked, TaskState, TrainingRequested
from shared.producer import EventProducer, OutgoingRecord
from shared.retry import PermanentError, RetryableError
from shared.tasks import RevocationRegistry
from shared.topics import TopicNames
from tests.support.kafka import read_events, read_topic

pytestmark = pytest.mark.integration

Behaviour = Callable[[HandlerContext], HandlerOutcome | None]


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


def fail_transient(ctx: HandlerContext) -> None:
    raise RetryableError("platform flaked")


def fail_permanent(ctx: HandlerContext) -> None:
    raise PermanentError("invalid parameter: budget")


@pytest.fixture
def db(tracking_db: Database) -> Database:
    return tracking_db


@pytest.fixture
def producer(kafka_bootstrap: str) -> EventProducer:
    return EventProducer(kafka_bootstrap, "test")


@pytest.fixture
def handler() -> ScriptedHandler:
    return ScriptedHandler()


@pytest.fixture
def revocations() -> RevocationRegistry:
    registry = RevocationRegistry()
    registry.caught_up.set()
    return registry


@pytest.fixture
def runtime(
    kafka_bootstrap: str,
    names: TopicNames,
    producer: EventProducer,
    db: Database,
    handler: ScriptedHandler,
    revocations: RevocationRegistry,
) -> Iterator[ConsumerRuntime]:
    rt = ConsumerRuntime(
        service="test",
        group=names.group("test"),
        bootstrap=kafka_bootstrap,
        names=names,
        producer=producer,
        db=db,
        processed_table=db_table(db),
        revocations=revocations,
        options=RuntimeOptions(default_time_limit=30, session_timeout_ms=6000),
    )
    rt.register(TrainingRequested, handler)
    rt.start()
    assert rt.assigned.wait(30)
    yield rt
    rt.stop()


def db_table(db: Database) -> sa.Table:
    metadata = sa.MetaData()
    processed, _ = tracking_tables(metadata)
    return processed


def command(subject: str, **options: Any) -> Envelope:
    return new_event(
        TrainingRequested(options=TaskOptions(**options)),
        source="test",
        subject=subject,
        taskid=f"task-{subject}",
    )


def send(producer: EventProducer, names: TopicNames, envelope: Envelope) -> None:
    producer.send(names.topic(envelope.type), envelope)


def statuses(
    bootstrap: str, names: TopicNames, task_id: str, until: str, timeout: float = 40
) -> list[Any]:
    """The task's transitions as seen on `task.status`, waiting for state `until`."""
    seen: list[Any] = []

    def reached() -> bool:
        seen[:] = [
            e.payload()
            for e in read_events(bootstrap, names.topic("task.status"), expect=10_000, timeout=1)
            if e.subject == task_id
        ]
        return any(s.state == until for s in seen)

    wait_for(reached, timeout, 0.5, f"{task_id} to reach {until}")
    return seen


def test_success_emits_started_and_success_with_the_result(
    runtime: ConsumerRuntime,
    producer: EventProducer,
    names: TopicNames,
    kafka_bootstrap: str,
    handler: ScriptedHandler,
) -> None:
    handler.scripts["ok"] = [lambda ctx: HandlerOutcome(result={"trained": 3})]
    send(producer, names, command("ok"))
    seen = statuses(kafka_bootstrap, names, "task-ok", "SUCCESS")
    assert [s.state for s in seen] == [TaskState.STARTED, TaskState.SUCCESS]
    assert seen[-1].result == {"trained": 3}


def test_transient_failures_retry_through_delay_tiers_then_succeed(
    runtime: ConsumerRuntime,
    producer: EventProducer,
    names: TopicNames,
    kafka_bootstrap: str,
    handler: ScriptedHandler,
) -> None:
    handler.scripts["flaky"] = [fail_transient, fail_transient]
    send(producer, names, command("flaky", retry_delay=1, max_retries=3))
    seen = statuses(kafka_bootstrap, names, "task-flaky", "SUCCESS")
    states = [s.state for s in seen]
    assert states.count(TaskState.RETRY) == 2
    assert states[-1] is TaskState.SUCCESS
    retry = next(s for s in seen if s.state is TaskState.RETRY)
    assert retry.next_attempt_at is not None and retry.error is not None
    assert retry.error.message == "platform flaked"
    calls = handler.calls["flaky"]
    assert [attempt for _, attempt in calls] == [1, 2, 3]
    # Each retry ran at its announced time (backoff 1 s then 2 s, ± 25 % jitter): never
    # early, and not a tier's whole delay late.
    retries = [s for s in seen if s.state is TaskState.RETRY]
    for (ran_at, _attempt), announced in zip(calls[1:], retries, strict=True):
        assert announced.next_attempt_at is not None
        due = announced.next_attempt_at.timestamp()
        assert due - 0.05 <= ran_at <= due + 0.5
    # The two retries travelled through delay-tier topics (which tier depends on the jitter).
    parked = sum(
        len(read_topic(kafka_bootstrap, names.retry("ml.training_requested", tier), 2, 2))
        for tier in names.tiers
    )
    assert parked == 2


def test_permanent_failure_is_dead_lettered_with_its_cause(
    runtime: ConsumerRuntime,
    producer: EventProducer,
    names: TopicNames,
    kafka_bootstrap: str,
    handler: ScriptedHandler,
) -> None:
    handler.scripts["bad"] = [fail_permanent]
    envelope = command("bad")
    send(producer, names, envelope)
    seen = statuses(kafka_bootstrap, names, "task-bad", "FAILURE")
    assert seen[-1].error.message == "invalid parameter: budget"
    dead = read_topic(kafka_bootstrap, names.dlq("ml.training_requested"), 1)
    headers = ConsumedRecord.of(dead[0]).header_map()
    assert headers["adflux-original-topic"] == names.topic("ml.training_requested").encode()
    assert headers["adflux-error-class"] == b"PermanentError"
    assert headers["adflux-reason"] == b"permanent"
    assert headers["adflux-consumer-group"] == names.group("test").encode()
    assert {
        "adflux-original-partition",
        "adflux-original-offset",
        "adflux-original-timestamp",
        "adflux-first-failure-at",
    } <= set(headers)
    assert headers["ce_id"] == envelope.id.encode()
    assert len(handler.calls["bad"]) == 1


def test_exhausted_retries_end_in_the_dead_letters(
    runtime: ConsumerRuntime,
    producer: EventProducer,
    names: TopicNames,
    kafka_bootstrap: str,
    handler: ScriptedHandler,
) -> None:
    handler.scripts["doomed"] = [fail_transient] * 5
    send(producer, names, command("doomed", retry_delay=0.5, max_retries=1))
    seen = statuses(kafka_bootstrap, names, "task-doomed", "FAILURE")
    assert [s.state for s in seen].count(TaskState.RETRY) == 1
    dead = read_topic(kafka_bootstrap, names.dlq("ml.training_requested"), 1)
    headers = dict(dead[0].headers() or [])
    assert headers["adflux-reason"] == b"exhausted"
    assert headers["ce_attempt"] == b"2"
    assert len(handler.calls["doomed"]) == 2


def test_malformed_record_is_dead_lettered_and_the_next_one_processed(
    runtime: ConsumerRuntime,
    producer: EventProducer,
    names: TopicNames,
    kafka_bootstrap: str,
    handler: ScriptedHandler,
) -> None:
    topic = names.topic("ml.training_requested")
    good = command("after-garbage")
    wrong_shape = OutgoingRecord.of(topic, good)
    wrong_shape = OutgoingRecord(
        topic,
        b"x",
        json.dumps({"n_clusters": "many"}).encode(),
        [(k, v) for k, v in wrong_shape.headers if k != "ce_id"] + [("ce_id", b"other")],
    )
    producer.send_batch(
        [
            OutgoingRecord(
                topic,
                b"x",
                b"{not json",
                [
                    ("ce_id", b"1"),
                    ("ce_type", b"ml.training_requested"),
                    ("ce_source", b"x"),
                    ("ce_specversion", b"1.0"),
                ],
            ),
            OutgoingRecord(topic, b"x", b"no headers at all", []),
            wrong_shape,
        ]
    )
    send(producer, names, good)
    statuses(kafka_bootstrap, names, "task-after-garbage", "SUCCESS")
    dead = read_topic(kafka_bootstrap, names.dlq("ml.training_requested"), 3)
    assert len(dead) == 3
    assert {dict(m.headers() or [])["adflux-reason"] for m in dead} == {b"malformed"}


def test_a_redelivered_event_runs_once_and_its_outputs_are_resent(
    runtime: ConsumerRuntime,
    producer: EventProducer,
    names: TopicNames,
    kafka_bootstrap: str,
    handler: ScriptedHandler,
) -> None:
    envelope = command("twice")
    send(producer, names, envelope)
    statuses(kafka_bootstrap, names, "task-twice", "SUCCESS")
    send(producer, names, envelope)  # the same event id again, as after a crash

    def successes() -> int:
        events = read_events(kafka_bootstrap, names.topic("task.status"), 10_000, 1)
        return len(
            [
                e
                for e in events
                if e.subject == "task-twice" and e.payload().state is TaskState.SUCCESS  # type: ignore[attr-defined]
            ]
        )

    wait_for(lambda: successes() == 2, 30, 0.5, "the stored SUCCESS to be re-sent")
    assert len(handler.calls["twice"]) == 1


def test_countdown_schedules_then_runs_when_due_without_blocking_others(
    runtime: ConsumerRuntime,
    producer: EventProducer,
    names: TopicNames,
    kafka_bootstrap: str,
    handler: ScriptedHandler,
) -> None:
    eta = datetime.now(UTC) + timedelta(seconds=3)
    send(producer, names, command("later", eta=eta))
    send(producer, names, command("now"))
    statuses(kafka_bootstrap, names, "task-now", "SUCCESS", timeout=10)
    assert "later" not in handler.calls  # waiting in a tier, not blocking "now"
    seen = statuses(kafka_bootstrap, names, "task-later", "SUCCESS")
    assert seen[0].state is TaskState.SCHEDULED and seen[0].next_attempt_at is not None
    started_at = handler.calls["later"][0][0]
    assert started_at >= eta.timestamp() - 0.05


def test_expired_task_is_not_run(
    runtime: ConsumerRuntime,
    producer: EventProducer,
    names: TopicNames,
    kafka_bootstrap: str,
    handler: ScriptedHandler,
) -> None:
    send(producer, names, command("stale", expires=datetime.now(UTC) - timedelta(seconds=1)))
    seen = statuses(kafka_bootstrap, names, "task-stale", "EXPIRED")
    assert [s.state for s in seen] == [TaskState.EXPIRED]
    assert "stale" not in handler.calls


def test_time_limit_cancels_the_handler_and_retries_it(
    runtime: ConsumerRuntime,
    producer: EventProducer,
    names: TopicNames,
    kafka_bootstrap: str,
    handler: ScriptedHandler,
) -> None:
    def slow(ctx: HandlerContext) -> None:
        ctx.cancelled.wait(10)
        ctx.check_cancelled()

    handler.scripts["slow"] = [slow]
    send(producer, names, command("slow", time_limit=0.5, retry_delay=0.5))
    seen = statuses(kafka_bootstrap, names, "task-slow", "SUCCESS")
    retry = next(s for s in seen if s.state is TaskState.RETRY)
    assert retry.error is not None and retry.error.error_class == "TimeLimitExceeded"
    assert len(handler.calls["slow"]) == 2


def test_revoked_task_that_has_not_started_never_runs(
    kafka_bootstrap: str,
    names: TopicNames,
    producer: EventProducer,
    runtime: ConsumerRuntime,
    handler: ScriptedHandler,
    revocations: RevocationRegistry,
) -> None:
    listener = ConsumerRuntime(
        service="test",
        group=names.group("test.revocations"),
        bootstrap=kafka_bootstrap,
        names=names,
        producer=producer,
        broadcast=True,
    )
    listener.register(TaskRevoked, revocations.handle)
    listener.start()
    try:
        eta = datetime.now(UTC) + timedelta(seconds=2)
        send(producer, names, command("revoke-me", eta=eta))
        statuses(kafka_bootstrap, names, "task-revoke-me", "SCHEDULED", timeout=10)
        revoked = new_event(
            TaskRevoked(task_id="task-revoke-me", revoked_at=datetime.now(UTC)),
            source="test",
            subject="task-revoke-me",
            taskid="task-revoke-me",
        )
        producer.send(names.topic("task.revoked"), revoked)
        wait_for(lambda: revocations.is_revoked("task-revoke-me"), 10, what="revocation learned")
        seen = statuses(kafka_bootstrap, names, "task-revoke-me", "REVOKED")
        assert TaskState.STARTED not in [s.state for s in seen]
        assert "revoke-me" not in handler.calls
    finally:
        listener.stop()
