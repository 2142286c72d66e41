"""The transactional outbox against the real broker and PostgreSQL: rows committed before a
crash are produced after it, and a relay that re-sends a row causes no second effect."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import cast

import pytest
import sqlalchemy as sa

import shared.outbox
from infra.waiting import wait_for
from shared.db import Database, tracking_tables
from shared.envelope import Envelope, new_event
from shared.events import TaskState, TaskStatus
from shared.outbox import Outbox, OutboxRelay
from shared.producer import EventProducer, OutgoingRecord
from shared.runtime import ConsumerRuntime, HandlerContext
from shared.topics import TopicNames
from tests.support.kafka import read_events

pytestmark = pytest.mark.integration


@pytest.fixture
def db(tracking_db: Database) -> Database:
    return tracking_db


def outbox_of(names: TopicNames) -> Outbox:
    metadata = sa.MetaData()
    _, table = tracking_tables(metadata)
    return Outbox(table, names)


def relay_of(db: Database, names: TopicNames, bootstrap: str) -> tuple[Outbox, OutboxRelay]:
    """An outbox and its relay (not started: tests run its passes themselves)."""
    outbox = outbox_of(names)
    return outbox, OutboxRelay(db, outbox, EventProducer(bootstrap, "relay"), "test")


def status(task_id: str) -> Envelope:
    payload = TaskStatus(
        task_id=task_id, name="ml.train", state=TaskState.PENDING, at=datetime.now(UTC)
    )
    return new_event(payload, source="test", subject=task_id, taskid=task_id)


def test_rows_committed_before_a_crash_are_produced_by_the_next_relay(
    db: Database, names: TopicNames, kafka_bootstrap: str
) -> None:
    outbox = outbox_of(names)
    with db.session() as session:  # the "request" commits; the process dies before relaying
        for i in range(5):
            outbox.add(session, status(f"task-{i}"))
    with db.session() as session:
        pending = session.execute(
            sa.select(sa.func.count()).where(outbox.table.c.sent_at.is_(None))
        ).scalar()
    assert pending == 5
    relay = OutboxRelay(db, outbox, EventProducer(kafka_bootstrap, "relay"), "test").start()
    try:
        events = read_events(kafka_bootstrap, names.topic("task.status"), 5)
        assert sorted(e.subject for e in events) == [f"task-{i}" for i in range(5)]
        wait_for(lambda: relay.relay_once() == 0, 10, what="all rows marked sent")
    finally:
        relay.stop()


def test_a_row_relayed_twice_is_handled_once(
    db: Database, names: TopicNames, kafka_bootstrap: str
) -> None:
    outbox, relay = relay_of(db, names, kafka_bootstrap)
    producer = relay.producer
    with db.session() as session:
        outbox.add(session, status("dup"))
    assert relay.relay_once() == 1
    with db.session() as session:  # as if the relay died after producing, before marking
        session.execute(sa.update(outbox.table).values(sent_at=None))
    assert relay.relay_once() == 1
    assert len(read_events(kafka_bootstrap, names.topic("task.status"), 2)) == 2

    handled: list[str] = []

    def handler(envelope: Envelope, payload: TaskStatus, ctx: HandlerContext) -> None:
        handled.append(envelope.id)

    metadata = sa.MetaData()
    processed, _ = tracking_tables(metadata)
    runtime = ConsumerRuntime(
        service="test",
        group=names.group("dedup"),
        bootstrap=kafka_bootstrap,
        names=names,
        producer=producer,
        db=db,
        processed_table=processed,
    )
    runtime.register(TaskStatus, handler)
    runtime.start()
    try:
        sentinel = status("dup")  # same key, so the same partition, after the duplicate
        producer.send(names.topic("task.status"), sentinel)
        wait_for(lambda: sentinel.id in handled, 30, 0.1, "the sentinel handled")
    finally:
        runtime.stop()
    assert len(handled) == 2  # the original once, the re-sent copy skipped, the sentinel


def _sent_at(db: Database, outbox: Outbox) -> list[datetime | None]:
    with db.session() as session:
        return list(session.scalars(sa.select(outbox.table.c.sent_at).order_by(outbox.table.c.id)))


@pytest.mark.parametrize(("end_first", "left_to_pass"), [("rollback", 0), ("commit", 1)])
def test_a_command_commit_hands_over_its_rows_at_once_and_only_its_own(
    db: Database, names: TopicNames, kafka_bootstrap: str, end_first: str, left_to_pass: int
) -> None:
    """`Outbox.commit` hands the transaction's rows straight to the relay, before any pass of
    it: produced once, marked sent by a later pass, never sent again. Rows of an earlier
    transaction on the same session are not handed over: rolled back, they are never sent;
    committed on their own (a handler's transaction), a pass sends them."""
    outbox, relay = relay_of(db, names, kafka_bootstrap)
    session = db.sessions()
    try:
        outbox.add(session, status("first"))
        getattr(session, end_first)()
        outbox.add(session, status("express"))
        outbox.commit(session)
    finally:
        session.close()
    events = read_events(kafka_bootstrap, names.topic("task.status"), 1)
    assert [e.subject for e in events] == ["express"]  # no pass of the relay has run
    assert not any(_sent_at(db, outbox))  # only passes mark rows sent
    assert relay.relay_once() == left_to_pass
    assert wait_for(lambda: relay.relay_once() == 0 and all(_sent_at(db, outbox)), 10)
    again = read_events(kafka_bootstrap, names.topic("task.status"), 3, timeout=2)
    expected = ["express", "first"] if left_to_pass else ["express"]
    assert sorted(e.subject for e in again) == expected


def test_rows_whose_delivery_fails_at_commit_go_to_the_relay_pass(
    db: Database, names: TopicNames, kafka_bootstrap: str
) -> None:
    outbox, relay = relay_of(db, names, kafka_bootstrap)
    producer = relay.producer
    failing = EventProducer(
        "127.0.0.1:1", "unreachable", {"message.timeout.ms": 500, "log_level": 0}
    )
    relay.producer = failing  # the broker is unreachable when the request commits
    try:
        with db.session() as session:
            outbox.add(session, status("late"))
            outbox.commit(session)
        relay.producer = producer  # back before the failure is known: the pass waits for it
        wait_for(lambda: relay.relay_once() == 1, 10, what="the released row sent by a pass")
    finally:
        failing.close(0)
    events = read_events(kafka_bootstrap, names.topic("task.status"), 1)
    assert [e.subject for e in events] == ["late"]
    assert _sent_at(db, outbox)[0] is not None


def test_rows_are_left_to_the_relay_pass_while_the_producer_has_a_backlog(
    db: Database, names: TopicNames, kafka_bootstrap: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the broker away, produce() would wait for room in librdkafka's queue: the
    committing request must not, so its rows go to the relay's passes."""
    monkeypatch.setattr(shared.outbox, "EXPRESS_BACKLOG_LIMIT", -1)  # any backlog is too much
    outbox, relay = relay_of(db, names, kafka_bootstrap)
    with db.session() as session:
        outbox.add(session, status("queued"))
        outbox.commit(session)
    assert relay.relay_once() == 1  # unclaimed: the pass sent it
    events = read_events(kafka_bootstrap, names.topic("task.status"), 1)
    assert [e.subject for e in events] == ["queued"]


class RecordingRelay:
    """Takes what `Outbox.commit` hands over, without producing it."""

    def __init__(self) -> None:
        self.claimed: list[int] = []
        self.sent: list[tuple[int, OutgoingRecord]] = []

    def claim(self, ids: list[int]) -> None:
        self.claimed.extend(ids)

    def release(self, ids: list[int]) -> None:
        raise AssertionError("nothing to release: the commit succeeds")

    def send_claimed(self, rows: list[tuple[int, OutgoingRecord]]) -> None:
        self.sent.extend(rows)


def test_events_added_together_are_handed_over_with_their_own_row_ids(
    db: Database, names: TopicNames
) -> None:
    """`insert` writes many events with one statement (here on a bare connection, as the
    task intake does); each row id handed to the relay is the id of that record's row, in
    the order added (else the relay marks the wrong rows)."""
    outbox = outbox_of(names)
    relay = RecordingRelay()
    outbox.relay = cast(OutboxRelay, relay)
    envelopes = [status(f"t{i}") for i in range(7)]
    with db.engine.connect() as connection:
        outbox.hand_over(connection.commit, outbox.insert(connection, outbox.encode(envelopes)))
    table = outbox.table
    with db.session() as session:
        stored: dict[int, bytes] = dict(
            (row.id, row.value) for row in session.execute(sa.select(table.c.id, table.c.value))
        )
    assert [row_id for row_id, _ in relay.sent] == relay.claimed and len(stored) == 7
    assert {row_id: record.value for row_id, record in relay.sent} == stored
    topic = names.topic("task.status")
    assert [record.value for _, record in relay.sent] == [
        OutgoingRecord.of(topic, e).value for e in envelopes
    ]
