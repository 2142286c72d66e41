"""What holds a due slot back (a pause, the `skip` overlap policy while the previous firing
runs), which slots a backfill owes (every slot of its range not fired yet, so a second
backfill owes none), and the bounds of a backfill's range."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from services.ticker.firing import backfill_owed, held_back, state_event, task_id_for
from shared.events import ScheduleStateChanged, TaskState
from shared.schedules import MAX_BACKFILL_SLOTS, Schedule, load_schedules

T0 = datetime(2026, 11, 30, 10, 0, tzinfo=UTC)


def every_minute(**fields: Any) -> Schedule:
    return Schedule(
        name="m", task="campaign.sync", cron="* * * * *", kwargs={"platform": "meta"}, **fields
    )


def at(minutes: int) -> datetime:
    return T0 + timedelta(minutes=minutes)


def test_a_paused_schedule_fires_nothing_whatever_its_overlap_policy() -> None:
    assert held_back(every_minute(), True, None) == "paused"
    assert held_back(every_minute(overlap="skip"), True, "SUCCESS") == "paused"


@pytest.mark.parametrize("state", [s.value for s in TaskState if not s.is_final])
def test_skip_overlap_holds_a_slot_back_while_the_previous_firing_runs(state: str) -> None:
    assert held_back(every_minute(overlap="skip"), False, state) == "overlap"
    assert held_back(every_minute(), False, state) is None  # `allow` fires regardless


@pytest.mark.parametrize("state", [s.value for s in TaskState if s.is_final] + [None])
def test_skip_overlap_fires_once_the_previous_firing_ended_or_there_was_none(
    state: str | None,
) -> None:
    assert held_back(every_minute(overlap="skip"), False, state) is None


def test_the_weekly_training_never_overlaps_itself() -> None:
    schedules = load_schedules("config/schedules.yaml")
    assert schedules["train-ml-model"].overlap == "skip"


def test_a_backfill_owes_every_slot_of_its_range_bounds_included() -> None:
    assert backfill_owed(every_minute(), at(0), at(3), set()) == [at(0), at(1), at(2), at(3)]


def test_a_backfill_owes_nothing_already_fired_so_a_second_one_fires_nothing() -> None:
    schedule = every_minute()
    first = backfill_owed(schedule, at(0), at(3), {at(1)})
    assert first == [at(0), at(2), at(3)]
    assert backfill_owed(schedule, at(0), at(3), {at(1), *first}) == []


def test_the_schedule_state_names_its_newest_firing_by_its_deterministic_task_id() -> None:
    event = state_event("m", False, at(2), at(5))
    state = event.payload()
    assert isinstance(state, ScheduleStateChanged)
    assert state.last_task_id == task_id_for("m", at(2))
    assert event.subject == "m"  # compacted by schedule name


def test_a_backfill_range_is_bounded_and_ordered() -> None:
    schedule = every_minute()
    with pytest.raises(ValueError, match=r"^end: must not be before start"):
        schedule.backfill_slots(at(3), at(0))
    with pytest.raises(ValueError, match=f"more than {MAX_BACKFILL_SLOTS} slots"):
        schedule.backfill_slots(at(0), at(MAX_BACKFILL_SLOTS))
    assert len(schedule.backfill_slots(at(0), at(MAX_BACKFILL_SLOTS - 1))) == MAX_BACKFILL_SLOTS
