"""Which slots the ticker fires: on time, after downtime by misfire policy, within the
catch-up window, with deterministic firing ids."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from services.ticker.planning import firing_id, plan
from shared.schedules import Schedule

T0 = datetime(2026, 11, 30, 10, 0, tzinfo=UTC)


def every_minute(**fields: Any) -> Schedule:
    return Schedule(
        name="m", task="campaign.sync", cron="* * * * *", kwargs={"platform": "meta"}, **fields
    )


def test_first_start_owes_nothing_from_before_but_fires_a_slot_that_just_passed() -> None:
    assert plan(every_minute(), None, T0 + timedelta(seconds=5), grace=30).fire == [T0]
    late = plan(every_minute(), None, T0 + timedelta(seconds=45), grace=30)
    assert late.fire == [] and late.handled_up_to == T0 + timedelta(seconds=45)


def test_on_time_slot_fires_once() -> None:
    first = plan(every_minute(), T0, T0 + timedelta(minutes=1, seconds=1), grace=30)
    assert first.fire == [T0 + timedelta(minutes=1)]
    again = plan(
        every_minute(), first.handled_up_to, T0 + timedelta(minutes=1, seconds=2), grace=30
    )
    assert again.fire == []


def test_misfire_policies_after_downtime() -> None:
    back = T0 + timedelta(minutes=5, seconds=40)  # down from 10:00 to 10:05:40; 10:05 is late
    missed = [T0 + timedelta(minutes=m) for m in range(1, 6)]
    assert plan(every_minute(misfire="run_all"), T0, back, grace=30).fire == missed
    assert plan(every_minute(misfire="run_once"), T0, back, grace=30).fire == missed[-1:]
    assert plan(every_minute(misfire="skip"), T0, back, grace=30).fire == []
    assert plan(every_minute(misfire="skip"), T0, back, grace=30).handled_up_to == missed[-1]


def test_slots_older_than_the_catch_up_window_are_never_fired() -> None:
    back = T0 + timedelta(minutes=10, seconds=40)
    decided = plan(every_minute(misfire="run_all", catch_up=180), T0, back, grace=30)
    assert decided.fire == [T0 + timedelta(minutes=m) for m in (8, 9, 10)]
    assert plan(every_minute(catch_up=10), T0, back, grace=30).fire == []


def test_firing_ids_are_deterministic_per_schedule_and_slot() -> None:
    assert firing_id("a", T0) == firing_id("a", T0)
    assert firing_id("a", T0) != firing_id("a", T0 + timedelta(minutes=1))
    assert firing_id("a", T0) != firing_id("b", T0)
    assert firing_id("a", T0, "status") != firing_id("a", T0)
