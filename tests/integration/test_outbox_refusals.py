"""The outbox relay against the real broker: a record the broker refuses is set aside with its
reason, counted, and the rows after it keep flowing; a record too large is refused on entry."""

from __future__ import annotations

import base64
import os
from collections.abc import Sequence
from datetime import UTC, datetime

import pytest
import sqlalchemy as sa
from confluent_kafka.admin import (
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    ResourceType,
)
from prometheus_client import REGISTRY
from sqlalchemy.orm import Session

from infra.waiting import wait_for
from shared.db import Database, tracking_tables
from shared.envelope import new_event
from shared.events import TaskState, TaskStatus
from shared.outbox import Outbox, OutboxRelay, RecordTooLarge, RefusedRow
from shared.producer import DeliveryFailed, EventProducer, OutgoingRecord
from shared.topics import TopicNames
from tests.support.kafka import read_events

pytestmark = pytest.mark.integration


def outbox_of(names: TopicNames) -> Outbox:
    _, table = tracking_tables(sa.MetaData())
    return Outbox(table, names)


def status(task_id: str) -> TaskStatus:
    return TaskStatus(
        task_id=task_id, name="ml.train", state=TaskState.PENDING, at=datetime.now(UTC)
    )


def refused_count() -> float:
    return REGISTRY.get_sample_value("adflux_outbox_refused_total", {"service": "refusals"}) or 0.0


@pytest.fixture
def small_topic(kafka_bootstrap: str, names: TopicNames) -> str:
    """A declared topic of this test whose broker-side limit is now 1 KiB, so the broker
    refuses a bigger record."""
    topic = names.topic("ml.model_trained")
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    resource = ConfigResource(
        ResourceType.TOPIC,
        topic,
        incremental_configs=[
            ConfigEntry("max.message.bytes", "1024", incremental_operation=AlterConfigOpType.SET)
        ],
    )
    for future in admin.incremental_alter_configs([resource]).values():
        future.result(30)
    probe = EventProducer(kafka_bootstrap, "probe")

    def refused() -> bool:  # the broker applies a topic's new config a moment later
        try:
            probe.send_batch([OutgoingRecord(topic, b"k", base64.b64encode(os.urandom(6000)), [])])
        except DeliveryFailed:
            return True
        return False

    wait_for(refused, 30, 0.5, "the broker to apply the topic's 1 KiB limit")
    probe.close()
    return topic


def test_a_record_too_large_is_refused_before_it_enters_the_outbox(
    tracking_db: Database, names: TopicNames
) -> None:
    outbox = outbox_of(names)
    huge = OutgoingRecord(names.topic("task.status"), b"k", b"x" * 1_000_000, [])
    with pytest.raises(RecordTooLarge) as refused, tracking_db.session() as session:
        outbox.add_records(session, [huge])
    assert refused.value.size > refused.value.limit
    with tracking_db.session() as session:
        assert session.execute(sa.select(sa.func.count()).select_from(outbox.table)).scalar() == 0


def test_the_relay_sets_refused_rows_aside_and_keeps_later_rows_flowing(
    tracking_db: Database, names: TopicNames, kafka_bootstrap: str, small_topic: str
) -> None:
    outbox = outbox_of(names)
    seen: list[RefusedRow] = []

    def on_refused(session: Session, rows: Sequence[RefusedRow]) -> None:
        assert isinstance(session, Session)
        seen.extend(rows)

    noise = base64.b64encode(os.urandom(6000))  # incompressible: over the topic's 1 KiB
    with tracking_db.session() as session:
        outbox.add(session, new_event(status("before"), source="test", subject="before"))
        outbox.add_records(
            session, [OutgoingRecord(small_topic, b"k", noise, [("ce_taskid", b"t1")])]
        )
        # A row written by older code, over today's limit: set aside without producing it.
        session.execute(
            sa.insert(outbox.table).values(
                topic=names.topic("task.status"),
                key=b"k",
                value=b"y" * 1_100_000,
                headers=[],
                created_at=datetime.now(UTC),
            )
        )
        undeclared = OutgoingRecord(names.topic("no.such.topic"), b"k", b"{}", [])
        outbox.add_records(session, [undeclared])
        for i in range(3):
            outbox.add(
                session, new_event(status(f"after-{i}"), source="test", subject=f"after-{i}")
            )
    before = refused_count()
    relay = OutboxRelay(
        tracking_db,
        outbox,
        EventProducer(kafka_bootstrap, "relay"),
        "refusals",
        on_refused=on_refused,
    ).start()
    try:
        # Rows produced before the refusal in the same batch may be produced twice (consumers
        # skip a repeated event id); none is missing.
        wanted = {"before", "after-0", "after-1", "after-2"}
        wait_for(
            lambda: (
                wanted
                <= {
                    e.subject
                    for e in read_events(kafka_bootstrap, names.topic("task.status"), 99, 3)
                }
            ),
            60,
            0.5,
            "every row around the refused ones produced",
        )
        wait_for(lambda: len(seen) == 3, 60, 0.2, "the three refused rows set aside")
        assert relay.healthy()
        with tracking_db.session() as session:
            listed = outbox.refused(session)
            unsent = session.execute(
                sa.select(sa.func.count()).where(
                    outbox.table.c.sent_at.is_(None), outbox.table.c.refused_at.is_(None)
                )
            ).scalar()
        assert unsent == 0
        by_topic = {row.topic: row for row in listed}
        assert "MSG_SIZE_TOO_LARGE" in by_topic[small_topic].reason
        assert by_topic[small_topic].task_id == "t1"
        assert "over the 900000-byte limit" in by_topic[names.topic("task.status")].reason
        assert "is not declared" in by_topic[names.topic("no.such.topic")].reason
        assert refused_count() - before == 3
        # Later commands still flow after the refusals.
        with tracking_db.session() as session:
            outbox.add(session, new_event(status("later"), source="test", subject="later"))
        outbox.notify()
        wait_for(
            lambda: (
                "later"
                in {
                    e.subject
                    for e in read_events(kafka_bootstrap, names.topic("task.status"), 99, 3)
                }
            ),
            30,
            0.5,
            "a later row produced",
        )
    finally:
        relay.stop()
