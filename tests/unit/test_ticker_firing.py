"""Which slots the ticker fires and what a firing emits: on-time slots, missed slots after
downtime by misfire policy within the catch-up window, deterministic task and event ids."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from services.ticker.firing import NAMESPACE, firing_events, plan, task_id_for
from shared.commands import CommandInvalid
from shared.events import SyncRequested, TaskState, TaskStatus, TrainingRequested
from shared.schedules import Schedule

T0 = datetime(2026, 11, 30, 10, 0, tzinfo=UTC)
GRACE = 30.0


def every_minute(**fields: Any) -> Schedule:
    return Schedule(
        name="m", task="campaign.sync", cron="* * * * *", kwargs={"platform": "meta"}, **fields
    )


def at(minutes: int = 0, seconds: int = 0) -> datetime:
    return T0 + timedelta(minutes=minutes, seconds=seconds)


def test_first_start_owes_nothing_from_before_but_fires_a_slot_that_is_on_time() -> None:
    assert plan(every_minute(), None, at(0, 5), GRACE).fire == [T0]
    late = plan(every_minute(misfire="run_all"), None, at(0, 45), GRACE)
    assert late.fire == []
    assert late.handled_up_to == at(0, 45)


def test_an_on_time_slot_fires_once() -> None:
    first = plan(every_minute(), T0, at(1, 1), GRACE)
    assert first.fire == [at(1)]
    assert first.handled_up_to == at(1)
    assert plan(every_minute(), first.handled_up_to, at(1, 2), GRACE).fire == []


def test_nothing_is_due_between_slots() -> None:
    decided = plan(every_minute(), at(1), at(1, 59), GRACE)
    assert decided.fire == []
    assert decided.handled_up_to == at(1)


@pytest.mark.parametrize(
    ("misfire", "fired_minutes"),
    [("run_all", [1, 2, 3, 4, 5]), ("run_once", [5]), ("skip", [])],
)
def test_missed_slots_after_downtime_follow_the_misfire_policy(
    misfire: str, fired_minutes: list[int]
) -> None:
    # Last fired 10:00, back at 10:05:40: 10:01 to 10:05 were all missed (10:05 by 40 s).
    decided = plan(every_minute(misfire=misfire), T0, at(5, 40), GRACE)
    assert decided.fire == [at(m) for m in fired_minutes]
    assert decided.handled_up_to == at(5)  # whatever the policy, they are dealt with


def test_run_once_after_downtime_fires_just_the_on_time_slot_when_there_is_one() -> None:
    assert plan(every_minute(misfire="run_once"), T0, at(5, 10), GRACE).fire == [at(5)]
    assert plan(every_minute(misfire="skip"), T0, at(5, 10), GRACE).fire == [at(5)]
    assert plan(every_minute(misfire="run_all"), T0, at(5, 10), GRACE).fire == [
        at(m) for m in range(1, 6)
    ]


def test_slots_older_than_the_catch_up_window_are_never_fired() -> None:
    back = at(10, 40)
    decided = plan(every_minute(misfire="run_all", catch_up=180), T0, back, GRACE)
    assert decided.fire == [at(8), at(9), at(10)]
    assert decided.handled_up_to == at(10)
    assert plan(every_minute(catch_up=10), T0, back, GRACE).fire == []
    assert plan(every_minute(catch_up=0), T0, at(10, 5), GRACE).fire == [at(10)]


def test_a_weekly_schedule_catches_up_its_missed_run_within_a_day() -> None:
    training = Schedule(name="t", task="ml.train", cron="0 3 * * 1", catch_up=86400)
    monday_3am = datetime(2026, 11, 30, 3, 0, tzinfo=UTC)  # a Monday
    last_week = monday_3am - timedelta(days=7)
    assert plan(training, last_week, monday_3am + timedelta(hours=5), GRACE).fire == [monday_3am]
    too_late = plan(training, last_week, monday_3am + timedelta(days=2), GRACE)
    assert too_late.fire == []
    assert too_late.handled_up_to == monday_3am


def test_a_year_of_downtime_is_planned_without_walking_every_missed_slot(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    walked: list[datetime] = []
    slots_between = Schedule.slots_between

    def counted(schedule: Schedule, start: datetime, end: datetime) -> list[datetime]:
        slots = slots_between(schedule, start, end)
        walked.extend(slots)
        return slots

    monkeypatch.setattr(Schedule, "slots_between", counted)
    decided = plan(every_minute(misfire="run_all", catch_up=120), T0, T0 + timedelta(days=365), 30)
    assert len(walked) <= 3  # the catch-up window's slots, not half a million
    assert decided.fire == [T0 + timedelta(days=365, minutes=m) for m in (-2, -1, 0)]
    assert decided.handled_up_to == T0 + timedelta(days=365)


def test_task_ids_are_uuid5_of_schedule_and_slot() -> None:
    assert task_id_for("a", T0) == str(uuid.uuid5(NAMESPACE, f"a|{T0.isoformat()}"))
    assert task_id_for("a", T0) == task_id_for("a", T0.astimezone(timezone(timedelta(hours=2))))
    assert task_id_for("a", T0) != task_id_for("a", at(1))
    assert task_id_for("a", T0) != task_id_for("b", T0)


def test_a_firing_is_a_pending_status_and_the_command_with_the_schedules_options() -> None:
    schedule = Schedule(
        name="sync-google",
        task="campaign.sync",
        cron="*/30 * * * *",
        kwargs={"platform": "google"},
        expires=600,
    )
    events = firing_events(schedule, T0, at(0, 1))
    assert events.task_id == task_id_for("sync-google", T0)
    command = events.command.payload()
    assert isinstance(command, SyncRequested)
    assert command.platform == "google"
    assert command.options.expires == at(10)
    assert events.command.type == "campaign.sync_requested"
    assert events.command.subject == "google"
    assert events.command.taskid == events.task_id
    status = events.status.payload()
    assert isinstance(status, TaskStatus)
    assert (status.task_id, status.name, status.state) == (
        events.task_id,
        "campaign.sync",
        TaskState.PENDING,
    )
    assert status.kwargs == {"platform": "google"}
    assert events.status.subject == events.task_id
    again = firing_events(schedule, T0, at(0, 9))
    assert (again.status.id, again.command.id) == (events.status.id, events.command.id)
    assert events.status.id != events.command.id


def test_a_schedule_without_expiry_fires_commands_that_do_not_expire() -> None:
    training = Schedule(name="t", task="ml.train", cron="0 3 * * 1")
    events = firing_events(training, T0, T0)
    command = events.command.payload()
    assert isinstance(command, TrainingRequested)
    assert command.options.expires is None
    assert events.command.subject == "ml.train"


def test_kwargs_the_task_rejects_are_refused() -> None:
    with pytest.raises(CommandInvalid, match="bad kwargs for campaign"):
        firing_events(Schedule(name="x", task="campaign.sync", cron="* * * * *"), T0, T0)
