"""What a tick fires, as pure logic (no clock, database or broker): a schedule's due slots —
on time, and missed ones by its misfire policy within its catch-up window — whether a pause or
the overlap policy holds a slot back, which slots of a backfill are still owed, and the
deterministic task and events of one firing."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from shared.commands import build_command, command_key
from shared.envelope import Envelope, new_event
from shared.events import (
    ScheduleStateChanged,
    TaskOptions,
    TaskState,
    TaskStatus,
)
from shared.schedules import Schedule

NAMESPACE = uuid.UUID("6f9d7c64-55c1-4c35-9d43-1f1d5a0a7a10")
SOURCE = "ticker"


def task_id_for(schedule: str, slot: datetime) -> str:
    """The firing's task id: the same schedule and slot give the same id on every ticker."""
    return str(uuid.uuid5(NAMESPACE, f"{schedule}|{slot.astimezone(UTC).isoformat()}"))


def _event_id(task_id: str, kind: str) -> str:
    return str(uuid.uuid5(NAMESPACE, f"{task_id}|{kind}"))


@dataclass(frozen=True)
class Plan:
    """The slots to fire now, oldest first, and the slot the schedule has dealt with up to."""

    fire: list[datetime]
    handled_up_to: datetime


def plan(schedule: Schedule, last_slot: datetime | None, now: datetime, grace: float) -> Plan:
    """Which slots of `schedule` to fire at `now`, given the newest slot already dealt with
    (None: the schedule never ran here, so nothing before now is owed).

    A slot at most `grace` seconds old is on time and always fires. Older ones are misfires:
    within the last `catch_up` seconds, `run_all` fires each, `run_once` only the newest slot
    owed (an on-time one if there is one), `skip` none; older than that, never.
    """
    on_time_window = timedelta(seconds=grace)
    if last_slot is None:
        previous = schedule.previous_slot(now)
        return Plan([previous] if now - previous <= on_time_window else [], now)
    # Slots before the horizon can never fire: do not walk them (a minutely schedule after a
    # month of downtime would be forty thousand slots).
    horizon = now - max(timedelta(seconds=schedule.catch_up), on_time_window)
    slots = schedule.slots_between(max(last_slot, horizon - timedelta(microseconds=1)), now)
    newest = schedule.previous_slot(now)
    handled_up_to = newest if newest > last_slot else last_slot
    on_time = [s for s in slots if now - s <= on_time_window]
    catch_up_start = now - timedelta(seconds=schedule.catch_up)
    missed = [s for s in slots if now - s > on_time_window and s >= catch_up_start]
    if schedule.misfire == "run_all":
        fire = missed + on_time
    elif schedule.misfire == "skip":
        fire = on_time
    else:  # run_once: everything owed collapses into one run, the newest
        fire = (missed + on_time)[-1:]
    return Plan(fire, handled_up_to)


def held_back(schedule: Schedule, paused: bool, previous_state: str | None) -> str | None:
    """Why a due slot of `schedule` is not fired now — "paused", or "overlap" when the policy
    is `skip` and the previous firing (in `previous_state`; None: none, or not known) has not
    reached a final state — or None to fire it."""
    if paused:
        return "paused"
    running = previous_state is not None and not TaskState(previous_state).is_final
    if schedule.overlap == "skip" and running:
        return "overlap"
    return None


def backfill_owed(
    schedule: Schedule, start: datetime, end: datetime, fired: set[datetime]
) -> list[datetime]:
    """The slots in [start, end] not fired yet, oldest first: a second backfill of the same
    range owes nothing."""
    return [s for s in schedule.backfill_slots(start, end) if s.astimezone(UTC) not in fired]


def state_event(schedule: str, paused: bool, last_slot: datetime | None, at: datetime) -> Envelope:
    """The `schedule.state` event announcing `schedule` paused or not, with its newest fired
    slot (whose task id follows from it)."""
    state = ScheduleStateChanged(
        schedule=schedule,
        paused=paused,
        last_slot=last_slot,
        last_task_id=task_id_for(schedule, last_slot) if last_slot is not None else None,
        at=at,
    )
    return new_event(state, source=SOURCE, subject=schedule)


@dataclass(frozen=True)
class FiringEvents:
    """One firing's task id and what goes to the outbox: its PENDING status, then its command."""

    task_id: str
    status: Envelope
    command: Envelope


def firing_events(schedule: Schedule, slot: datetime, at: datetime) -> FiringEvents:
    """The events of firing `schedule` for `slot` at time `at`; their ids are deterministic
    too, so even a re-sent firing is one event to every consumer."""
    task_id = task_id_for(schedule.name, slot)
    expires = slot + timedelta(seconds=schedule.expires) if schedule.expires else None
    command = build_command(schedule.task, schedule.kwargs, TaskOptions(expires=expires))
    status = TaskStatus(
        task_id=task_id,
        name=schedule.task,
        state=TaskState.PENDING,
        attempt=1,
        args=list(schedule.args),
        kwargs=dict(schedule.kwargs),
        at=at,
    )
    return FiringEvents(
        task_id,
        new_event(
            status,
            source=SOURCE,
            subject=task_id,
            taskid=task_id,
            correlationid=task_id,
            event_id=_event_id(task_id, "pending"),
        ),
        new_event(
            command,
            source=SOURCE,
            subject=command_key(command),
            taskid=task_id,
            correlationid=task_id,
            event_id=_event_id(task_id, "command"),
        ),
    )
