"""Which slots of a schedule to fire now: on-time slots, and missed ones by the schedule's
misfire policy within its catch-up window (pure logic, no clock or database)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from shared.schedules import Schedule

FIRING_NAMESPACE = uuid.UUID("6f9d7c64-55c1-4c35-9d43-1f1d5a0a7a10")


def firing_id(schedule: str, slot: datetime, kind: str = "task") -> str:
    """Deterministic id of a firing: the same schedule and slot always give the same id."""
    return str(uuid.uuid5(FIRING_NAMESPACE, f"{kind}|{schedule}|{slot.isoformat()}"))


@dataclass(frozen=True)
class Plan:
    fire: list[datetime]
    handled_up_to: datetime  # becomes the schedule's last slot


def plan(schedule: Schedule, last_slot: datetime | None, now: datetime, grace: float) -> Plan:
    """Slots to fire at `now` given the last slot handled (None: never ran; start from now)."""
    if last_slot is None:
        # First start ever: nothing from before is owed; a slot that has just passed is on time.
        previous = schedule.previous_slot(now)
        just_passed = now - previous <= timedelta(seconds=grace)
        return Plan([previous] if just_passed else [], now)
    slots = schedule.slots_between(last_slot, now)
    if not slots:
        return Plan([], last_slot)
    newest = slots[-1]
    on_time = [s for s in slots if now - s <= timedelta(seconds=grace)]
    window_start = now - timedelta(seconds=schedule.catch_up)
    missed = [s for s in slots if s not in on_time and s >= window_start]
    if schedule.misfire == "run_all":
        fire = missed + on_time
    elif schedule.misfire == "skip":
        fire = on_time
    else:  # run_once: everything owed collapses into one run, the newest
        owed = missed + on_time
        fire = owed[-1:]
    return Plan(fire, newest)
