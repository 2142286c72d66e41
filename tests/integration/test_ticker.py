"""The ticker in-process against the real database — PostgreSQL (advisory-lock lease) and the
embedded SQLite default (expiring lease) — and the real broker, with a controllable clock:
one leader, takeover when it dies, fencing of a stale leader, each slot fired exactly once,
catch-up after downtime by misfire policy."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path

import pytest
import sqlalchemy as sa

from infra.waiting import wait_for
from services.ticker.firing import task_id_for
from services.ticker.lease import LeaseLost, open_lease
from services.ticker.models import Firing, metadata
from services.ticker.ticker import Fired, Ticker
from shared.db import Database
from shared.events import ScheduleStateChanged, SyncRequested, TaskState, TaskStatus
from shared.outbox import Outbox, OutboxRelay
from shared.producer import EventProducer
from shared.schedules import Schedule
from shared.topics import TopicNames, parse_tiers
from tests.support.kafka import read_events

pytestmark = pytest.mark.integration

T0 = datetime(2026, 11, 30, 10, 0, tzinfo=UTC)
LEASE_TTL = 10.0


def at(minutes: int, seconds: int = 5) -> datetime:
    return T0 + timedelta(minutes=minutes, seconds=seconds)


def sync_meta(**fields: object) -> dict[str, Schedule]:
    schedule = Schedule(
        name="sync-meta",
        task="campaign.sync",
        cron="* * * * *",
        kwargs={"platform": "meta"},
        **fields,  # type: ignore[arg-type]
    )
    return {schedule.name: schedule}


class Clock:
    def __init__(self) -> None:
        self.now = at(0)

    def __call__(self) -> datetime:
        return self.now

    def set(self, now: datetime) -> None:
        self.now = now


@pytest.fixture(params=["postgres", "sqlite"])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    if request.param == "postgres":
        database = Database(request.getfixturevalue("database_url"), "ticker")
    else:
        database = Database("", "ticker", str(tmp_path))
    database.migrate()
    yield database
    database.dispose()


@pytest.fixture
def outbox() -> Outbox:
    """An outbox writing topic names of this test (the broker is not needed to fill it)."""
    names = TopicNames(f"t{uuid.uuid4().hex[:10]}.", parse_tiers("1s:1"))
    return Outbox(metadata.tables["outbox"], names)


MakeTicker = Callable[..., Ticker]


@pytest.fixture
def make_ticker(db: Database, outbox: Outbox) -> Iterator[MakeTicker]:
    made: list[Ticker] = []

    def make(
        owner: str, clock: Clock, schedules: dict[str, Schedule] | None = None, **kw: float
    ) -> Ticker:
        lease = open_lease(db, owner, LEASE_TTL, clock)
        ticker = Ticker(db, outbox, schedules or sync_meta(), lease, clock=clock, **kw)
        made.append(ticker)
        return ticker

    yield make
    for ticker in made:
        ticker.stop()
        ticker.lease.release()


def leader_dies(db: Database) -> None:
    """A crash: the leader stops renewing (SQLite; the test moves the clock past its lease)
    or its database session ends and its advisory lock with it (PostgreSQL)."""
    if db.is_sqlite:
        return
    holders = sa.text(
        "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted"
        " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
    )
    with db.engine.connect() as conn:
        pids: list[int] = list(conn.execute(holders).scalars())
        for pid in pids:
            conn.execute(sa.text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})

    def freed() -> bool:
        with db.engine.connect() as conn:
            return not conn.execute(holders).first()

    wait_for(freed, 10, 0.05, "the advisory lock to be freed")


def firings(db: Database) -> list[tuple[str, datetime, int]]:
    with db.session() as session:
        rows = session.execute(sa.select(Firing).order_by(Firing.slot)).scalars()
        return [(f.schedule, f.slot.astimezone(UTC), f.epoch) for f in rows]


def was_fired(db: Database, slot: datetime) -> bool:
    return slot in [f[1] for f in firings(db)]


def outbox_count(db: Database) -> int:
    """Rows in the outbox: three per firing (PENDING status, command, schedule state)."""
    with db.session() as session:
        return session.execute(
            sa.select(sa.func.count()).select_from(metadata.tables["outbox"])
        ).scalar_one()


def fired(*minutes: int) -> list[Fired]:
    slots = [T0 + timedelta(minutes=m) for m in minutes]
    return [Fired("sync-meta", s, task_id_for("sync-meta", s)) for s in slots]


def test_only_the_leader_fires_and_a_standby_takes_over_when_it_dies(
    db: Database, make_ticker: MakeTicker
) -> None:
    clock = Clock()
    leader, standby = make_ticker("a", clock), make_ticker("b", clock)
    assert leader.tick() == fired(0)
    assert standby.tick() == []
    clock.set(at(1))
    assert leader.tick() == fired(1)
    assert standby.tick() == []
    leader_dies(db)
    clock.set(at(2))  # past the SQLite lease too (renewed at 10:01:05 for 10 s)
    assert standby.tick() == fired(2)
    assert (leader.lease.epoch, standby.lease.epoch) == (1, 2)
    assert firings(db) == [
        ("sync-meta", T0 + timedelta(minutes=m), e) for m, e in ((0, 1), (1, 1), (2, 2))
    ]
    assert outbox_count(db) == 9


def test_a_stale_leader_is_fenced_off_and_a_fired_slot_is_never_fired_again(
    db: Database, make_ticker: MakeTicker
) -> None:
    clock = Clock()
    old, new = make_ticker("a", clock), make_ticker("b", clock)
    assert old.tick() == fired(0)
    leader_dies(db)
    clock.set(at(1))
    assert new.tick() == fired(1)
    # The old leader wakes up still believing it leads at epoch 1: its firing is refused.
    assert old.lease.epoch == 1
    with pytest.raises(LeaseLost):
        old.fire(sync_meta()["sync-meta"], T0 + timedelta(minutes=1))
    with pytest.raises(LeaseLost):
        old.fire(sync_meta()["sync-meta"], T0 + timedelta(minutes=2))
    assert old.tick() == []
    assert not old.leading
    # The leader itself cannot fire an already-fired slot again either.
    assert new.fire(sync_meta()["sync-meta"], T0) is None
    assert [f[1] for f in firings(db)] == [T0, T0 + timedelta(minutes=1)]
    assert outbox_count(db) == 6


def test_a_lone_leader_that_lost_its_lease_takes_it_again_and_goes_on_firing(
    db: Database, make_ticker: MakeTicker
) -> None:
    clock = Clock()
    ticker = make_ticker("a", clock)
    assert ticker.tick() == fired(0)
    leader_dies(db)  # its lock session ended (PostgreSQL) or its lease lapsed (SQLite)
    clock.set(at(1))
    assert ticker.tick() == fired(1)
    assert ticker.leading


def test_a_cleanly_stopped_leader_hands_over_at_once(db: Database, make_ticker: MakeTicker) -> None:
    clock = Clock()
    leader, standby = make_ticker("a", clock), make_ticker("b", clock)
    assert leader.tick() == fired(0)
    leader.lease.release()
    clock.set(at(0, 6))  # no waiting for a lease to lapse
    assert standby.tick() == []
    assert standby.leading and standby.lease.epoch == 2


def test_two_running_tickers_fire_every_slot_exactly_once_across_a_handover(
    db: Database, make_ticker: MakeTicker
) -> None:
    clock = Clock()
    tickers = [make_ticker(owner, clock, interval=0.02).start() for owner in ("a", "b")]
    minutes = 8
    for minute in range(minutes):
        clock.set(at(minute))
        slot = T0 + timedelta(minutes=minute)
        wait_for(partial(was_fired, db, slot), 10, 0.02, f"slot {slot}")
        if minute == 3:  # the leader stops; the other takes over
            leader = next(t for t in tickers if t.leading)
            leader.stop()
    slots = [f[1] for f in firings(db)]
    assert slots == [T0 + timedelta(minutes=m) for m in range(minutes)]
    # Leadership moved (the SQLite lease also lapses whenever the clock jumps a minute), but
    # never back: no slot was fired under an older epoch than an earlier one.
    epochs = [f[2] for f in firings(db)]
    assert epochs == sorted(epochs) and epochs[-1] > 1
    assert outbox_count(db) == 3 * minutes


@pytest.mark.parametrize(
    ("misfire", "caught_up"),
    [("run_all", [1, 2, 3, 4, 5]), ("run_once", [5]), ("skip", [])],
)
def test_a_restart_after_downtime_fires_the_missed_slots_by_misfire_policy(
    db: Database, make_ticker: MakeTicker, misfire: str, caught_up: list[int]
) -> None:
    clock = Clock()
    schedules = sync_meta(misfire=misfire)
    first = make_ticker("a", clock, schedules)
    assert first.tick() == fired(0)
    first.lease.release()
    # Restarted at once: the slot is not fired again.
    second = make_ticker("b", clock, schedules)
    assert second.tick() == []
    second.lease.release()
    # Down until 10:05:45 (10:05 is 45 s late, past the 30 s grace: a misfire too).
    clock.set(at(5, 45))
    third = make_ticker("c", clock, schedules)
    assert third.tick() == fired(*caught_up)
    clock.set(at(6))
    assert third.tick() == fired(6)


def test_missed_slots_older_than_the_catch_up_window_are_never_fired(
    db: Database, make_ticker: MakeTicker
) -> None:
    clock = Clock()
    schedules = sync_meta(misfire="run_all", catch_up=150)
    ticker = make_ticker("a", clock, schedules)
    assert ticker.tick() == fired(0)
    clock.set(at(10, 20))  # paused ten minutes: 10:08 to 10:10 are within 150 s
    assert ticker.tick() == fired(8, 9, 10)
    clock.set(at(11, 1))
    assert ticker.tick() == fired(11)


def test_a_fired_slot_reaches_kafka_as_one_pending_status_one_command_and_its_schedule_state(
    database_url: str, names: TopicNames, kafka_bootstrap: str
) -> None:
    db = Database(database_url, "ticker")
    db.migrate()
    outbox = Outbox(metadata.tables["outbox"], names)
    clock = Clock()
    first = Ticker(db, outbox, sync_meta(), open_lease(db, "a", LEASE_TTL, clock), clock=clock)
    second = Ticker(db, outbox, sync_meta(), open_lease(db, "b", LEASE_TTL, clock), clock=clock)
    producer = EventProducer(kafka_bootstrap, "test-ticker")
    relay = OutboxRelay(db, outbox, producer, "ticker")
    try:
        assert first.tick() == fired(0)
        assert second.tick() == []
        first.lease.release()
        assert second.tick() == []  # the new leader sees the slot already fired
        assert relay.relay_once() == 3
        task_id = task_id_for("sync-meta", T0)
        commands = read_events(kafka_bootstrap, names.topic("campaign.sync_requested"), 2, 3)
        statuses = read_events(kafka_bootstrap, names.topic("task.status"), 2, 3)
        assert [c.taskid for c in commands] == [task_id]
        command = commands[0].payload()
        assert isinstance(command, SyncRequested)
        assert command.platform == "meta"
        assert commands[0].subject == "meta"
        assert [s.taskid for s in statuses] == [task_id]
        status = statuses[0].payload()
        assert isinstance(status, TaskStatus)
        assert (status.task_id, status.name, status.state) == (
            task_id,
            "campaign.sync",
            TaskState.PENDING,
        )
        assert statuses[0].subject == task_id
        (announced,) = read_events(kafka_bootstrap, names.topic("schedule.state"), 1, 3)
        state = announced.payload()
        assert isinstance(state, ScheduleStateChanged)
        assert (state.schedule, state.paused, state.last_slot, state.last_task_id) == (
            "sync-meta",
            False,
            T0,
            task_id,
        )
    finally:
        first.lease.release()
        second.lease.release()
        producer.close()
        db.dispose()
