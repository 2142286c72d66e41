"""The ticker against the real PostgreSQL and broker, with a controllable clock: one leader,
takeover after the lease expires, fencing of a stale leader, exactly one firing per slot."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from services.ticker.lease import LeaseLost, TickerLease
from services.ticker.models import metadata
from services.ticker.planning import firing_id
from services.ticker.ticker import Ticker
from shared.db import Database
from shared.events import TaskState
from shared.outbox import Outbox, OutboxRelay
from shared.producer import EventProducer
from shared.schedules import Schedule
from shared.topics import TopicNames
from tests.support.kafka import read_events

pytestmark = pytest.mark.integration

T0 = datetime(2026, 11, 30, 10, 0, 5, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture
def db(database_url: str) -> Iterator[Database]:
    database = Database(database_url, "ticker")
    database.migrate()
    yield database
    database.dispose()


SCHEDULES = {
    "sync-meta": Schedule(
        name="sync-meta", task="campaign.sync", cron="* * * * *", kwargs={"platform": "meta"}
    ),
}


def make_ticker(db: Database, names: TopicNames, owner: str, clock: Clock) -> Ticker:
    outbox = Outbox(metadata.tables["outbox"], names)
    return Ticker(
        db, outbox, SCHEDULES, TickerLease(db, owner, ttl=10, clock=clock), grace=30, clock=clock
    )


def test_only_the_leader_fires_and_a_standby_takes_over_when_it_stops(
    db: Database, names: TopicNames, kafka_bootstrap: str
) -> None:
    clock = Clock()
    leader, standby = make_ticker(db, names, "a", clock), make_ticker(db, names, "b", clock)
    assert leader.tick() == [("sync-meta", T0.replace(second=0))]
    assert standby.tick() == []
    clock.advance(60)  # 10:01:05 (the leader renews on every tick; here first)
    assert leader.tick() == [("sync-meta", T0.replace(minute=1, second=0))]
    assert standby.tick() == []
    # The leader dies (stops renewing). After the lease's 10 s the standby fires the next slot.
    clock.advance(60)  # 10:02:05, lease expired at 10:01:15
    assert standby.tick() == [("sync-meta", T0.replace(minute=2, second=0))]
    assert standby.lease.epoch == 2
    # The old leader wakes up: it cannot renew, and a direct firing is fenced off.
    assert leader.tick() == []
    leader.lease.epoch = 1  # as if it still believed it led
    with pytest.raises(LeaseLost):
        leader.fire(SCHEDULES["sync-meta"], T0.replace(minute=3, second=0))

    relay = OutboxRelay(
        db, Outbox(metadata.tables["outbox"], names), EventProducer(kafka_bootstrap, "t"), "ticker"
    )
    assert relay.relay_once() == 6
    commands = read_events(kafka_bootstrap, names.topic("campaign.sync_requested"), 3)
    slots = [T0.replace(minute=m, second=0) for m in range(3)]
    assert sorted(c.taskid or "" for c in commands) == sorted(
        firing_id("sync-meta", s) for s in slots
    )
    assert {c.payload().platform for c in commands} == {"meta"}  # type: ignore[attr-defined]
    statuses = read_events(kafka_bootstrap, names.topic("task.status"), 3)
    assert {s.payload().state for s in statuses} == {TaskState.PENDING}  # type: ignore[attr-defined]


def test_a_restart_never_fires_a_slot_twice_and_catches_up_once(
    db: Database, names: TopicNames
) -> None:
    clock = Clock()
    first = make_ticker(db, names, "a", clock)
    assert len(first.tick()) == 1
    first.lease.release()
    # Restarted right away at the same instant: the slot is already fired.
    second = make_ticker(db, names, "b", clock)
    assert second.tick() == []
    assert second.fire(SCHEDULES["sync-meta"], T0.replace(second=0)) is False
    # Down for five minutes: run_once fires only the newest missed slot.
    second.lease.release()
    clock.advance(5 * 60 + 40)
    third = make_ticker(db, names, "c", clock)
    assert third.tick() == [("sync-meta", T0.replace(minute=5, second=0))]
