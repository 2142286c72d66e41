"""Schedule controls against the real broker and database: the gateway sends pause, resume and
backfill as `schedule.control_requested` and lists what the ticker announces; the ticker
applies them from its consumer — a pause is honoured by the next tick, a backfill fires each
owed slot once (twice asked, nothing fires twice), and the `skip` overlap policy waits for
the previous firing's final status."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from infra.waiting import wait_for
from services.ticker.firing import task_id_for
from services.ticker.handlers import ScheduleHandlers
from services.ticker.lease import open_lease
from services.ticker.models import Backfill, Firing, ScheduleControl, metadata
from services.ticker.ticker import Ticker
from shared.db import Database
from shared.envelope import new_event
from shared.events import (
    ScheduleControlRequested,
    ScheduleStateChanged,
    TaskState,
    TaskStatus,
)
from shared.outbox import Outbox
from shared.producer import EventProducer
from shared.runtime import ConsumerRuntime
from shared.schedules import Schedule
from shared.topics import TopicNames
from tests.conftest import Gateway
from tests.support.kafka import read_events

pytestmark = pytest.mark.integration

T0 = datetime(2026, 11, 30, 10, 0, tzinfo=UTC)


def at(minutes: int, seconds: int = 5) -> datetime:
    return T0 + timedelta(minutes=minutes, seconds=seconds)


class Clock:
    def __init__(self) -> None:
        self.now = at(0)

    def __call__(self) -> datetime:
        return self.now


@dataclass
class Rig:
    """A ticker with a controllable clock, its consumer, and a producer of what it consumes."""

    db: Database
    ticker: Ticker
    clock: Clock
    producer: EventProducer
    names: TopicNames

    def control(
        self, action: str, start: datetime | None = None, end: datetime | None = None
    ) -> None:
        request = ScheduleControlRequested(
            schedule="m",
            action=action,  # type: ignore[arg-type]
            start=start,
            end=end,
            requested_at=datetime.now(UTC),
        )
        self.producer.send(
            self.names.topic("schedule.control_requested"),
            new_event(request, source="test", subject="m"),
        )

    def tick_at(self, now: datetime) -> list[datetime]:
        self.clock.now = now
        return [f.slot for f in self.ticker.tick()]

    def paused(self) -> bool:
        with self.db.session() as session:
            control = session.get(ScheduleControl, "m")
            return bool(control and control.paused)

    def open_backfills(self) -> int:
        with self.db.session() as session:
            return len(session.scalars(sa.select(Backfill).where(Backfill.done_at.is_(None))).all())

    def backfills(self) -> int:
        with self.db.session() as session:
            return len(session.scalars(sa.select(Backfill)).all())

    def firing_state(self, slot: datetime) -> str | None:
        with self.db.session() as session:
            firing = session.get(Firing, ("m", slot))
            return firing.state if firing else None


MakeRig = Callable[..., Rig]


@pytest.fixture
def make_rig(database_url: str, names: TopicNames, kafka_bootstrap: str) -> Iterator[MakeRig]:
    made: list[tuple[Rig, ConsumerRuntime]] = []

    def make(overlap: str = "allow") -> Rig:
        schedule = Schedule(
            name="m",
            task="campaign.sync",
            cron="* * * * *",
            kwargs={"platform": "meta"},
            overlap=overlap,  # type: ignore[arg-type]
        )
        db = Database(database_url, "ticker")
        db.migrate()
        outbox = Outbox(metadata.tables["outbox"], names)
        clock = Clock()
        lease = open_lease(db, "a", 10.0, clock)
        ticker = Ticker(db, outbox, {"m": schedule}, lease, clock=clock)
        producer = EventProducer(kafka_bootstrap, "test-schedule-controls")
        handlers = ScheduleHandlers(outbox, {"m": schedule})
        runtime = ConsumerRuntime(
            service="ticker",
            group=names.group("ticker"),
            bootstrap=kafka_bootstrap,
            names=names,
            producer=producer,
            db=db,
            processed_table=metadata.tables["processed_events"],
        )
        runtime.register(ScheduleControlRequested, handlers.control)
        runtime.register(TaskStatus, handlers.task_status)
        runtime.start()
        rig = Rig(db, ticker, clock, producer, names)
        made.append((rig, runtime))
        wait_for(runtime.ready, 30, 0.1, "the ticker's consumer to be assigned")
        return rig

    yield make
    for rig, runtime in made:
        runtime.stop()
        rig.ticker.lease.release()
        rig.producer.close()
        rig.db.dispose()


def test_a_pause_is_honoured_by_the_next_tick_and_a_resume_fires_on_from_now(
    make_rig: MakeRig,
) -> None:
    rig = make_rig()
    assert rig.tick_at(at(0)) == [at(0, 0)]
    rig.control("pause")
    wait_for(rig.paused, 30, 0.05, "the pause applied")
    assert rig.tick_at(at(1)) == []  # the very next tick
    assert rig.tick_at(at(2)) == []
    rig.control("resume")
    wait_for(lambda: not rig.paused(), 30, 0.05, "the resume applied")
    assert rig.tick_at(at(3)) == [at(3, 0)]  # the slots passed while paused are not owed


def test_a_backfill_fires_each_missed_slot_once_and_a_second_one_fires_nothing(
    make_rig: MakeRig,
) -> None:
    rig = make_rig()
    assert rig.tick_at(at(0)) == [at(0, 0)]
    rig.control("pause")
    wait_for(rig.paused, 30, 0.05, "the pause applied")
    assert rig.tick_at(at(3)) == []
    rig.control("resume")
    wait_for(lambda: not rig.paused(), 30, 0.05, "the resume applied")
    assert rig.tick_at(at(4)) == [at(4, 0)]
    rig.control("backfill", at(0, 0), at(4, 0))
    wait_for(lambda: rig.backfills() == 1, 30, 0.05, "the backfill recorded")
    assert rig.tick_at(at(4, 20)) == [at(1, 0), at(2, 0), at(3, 0)]
    assert rig.open_backfills() == 0
    rig.control("backfill", at(0, 0), at(4, 0))
    wait_for(lambda: rig.backfills() == 2, 30, 0.05, "the second backfill recorded")
    assert rig.tick_at(at(4, 30)) == []
    assert rig.open_backfills() == 0
    with rig.db.session() as session:
        ids = set(session.scalars(sa.select(Firing.task_id)))
    assert ids == {task_id_for("m", at(m, 0)) for m in range(5)}


def test_skip_overlap_waits_for_the_previous_firing_to_finish(make_rig: MakeRig) -> None:
    rig = make_rig("skip")
    assert rig.tick_at(at(0)) == [at(0, 0)]
    task_id = task_id_for("m", at(0, 0))
    started = TaskStatus(task_id=task_id, name="campaign.sync", state=TaskState.STARTED, at=at(0))
    rig.producer.send(
        rig.names.topic("task.status"), new_event(started, source="test", subject=task_id)
    )
    wait_for(lambda: rig.firing_state(at(0, 0)) == "STARTED", 30, 0.05, "STARTED followed")
    assert rig.tick_at(at(1)) == []  # still running: this slot is skipped, not owed
    done = started.model_copy(update={"state": TaskState.SUCCESS, "at": at(1, 30)})
    rig.producer.send(
        rig.names.topic("task.status"), new_event(done, source="test", subject=task_id)
    )
    wait_for(lambda: rig.firing_state(at(0, 0)) == "SUCCESS", 30, 0.05, "SUCCESS followed")
    assert rig.tick_at(at(2)) == [at(2, 0)]


def test_the_gateway_sends_controls_and_lists_what_the_ticker_announces(
    gateway: Gateway, names: TopicNames, kafka_bootstrap: str
) -> None:
    assert gateway.client.post("/schedules/sync-meta-campaigns/pause").status_code == 202
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    body = {"start": (now - timedelta(hours=1)).isoformat(), "end": now.isoformat()}
    backfill = gateway.client.post("/schedules/sync-meta-campaigns/backfill", json=body)
    assert backfill.status_code == 202 and backfill.json()["slots"] in (2, 3)
    pause, fill = read_events(kafka_bootstrap, names.topic("schedule.control_requested"), 2)
    assert [pause.payload().action, fill.payload().action] == ["pause", "backfill"]  # type: ignore[attr-defined]
    future = {"start": now.isoformat(), "end": (now + timedelta(hours=1)).isoformat()}
    refused = gateway.client.post("/schedules/sync-meta-campaigns/backfill", json=future)
    assert refused.status_code == 422 and "end" in refused.text
    reversed_ = {"start": body["end"], "end": body["start"]}
    refused = gateway.client.post("/schedules/sync-meta-campaigns/backfill", json=reversed_)
    assert refused.status_code == 422 and "end" in refused.text
    ancient = {"start": "0001-01-01T00:00:00Z", "end": body["end"]}
    refused = gateway.client.post("/schedules/sync-meta-campaigns/backfill", json=ancient)
    assert refused.status_code == 422 and "start" in refused.text
    assert gateway.client.post("/schedules/nope/pause").status_code == 404

    slot = now - timedelta(minutes=30)
    announced = ScheduleStateChanged(
        schedule="sync-meta-campaigns",
        paused=True,
        last_slot=slot,
        last_task_id=task_id_for("sync-meta-campaigns", slot),
        at=datetime.now(UTC),
    )
    EventProducer(kafka_bootstrap, "test").send(
        names.topic("schedule.state"),
        new_event(announced, source="ticker", subject="sync-meta-campaigns"),
    )

    def listed() -> dict[str, object] | None:
        views = {s["name"]: s for s in gateway.client.get("/schedules").json()}
        return views["sync-meta-campaigns"] if views["sync-meta-campaigns"]["paused"] else None

    view = wait_for(listed, 30, 0.2, "the announced pause listed")
    assert view["next_run_at"] is None
    assert view["last_run"]["task_id"] == task_id_for("sync-meta-campaigns", slot)  # type: ignore[index]
    trainer = {s["name"]: s for s in gateway.client.get("/schedules").json()}["train-ml-model"]
    assert trainer["overlap"] == "skip" and trainer["paused"] is False
    assert trainer["next_run_at"] is not None
