"""The schedules API: each schedule of the schedule file with its pause state and newest firing
as the ticker announces them (`schedule.state`) and that firing's task from the read model;
run now; and pause, resume and backfill, sent to the ticker as `schedule.control_requested`
through the outbox — the ticker owns firing and keeps the switches in its own tables."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Literal

import sqlalchemy as sa
from fastapi import APIRouter, Depends, HTTPException, Request, status

from services.gateway.api import DB, NamePath, OutboxDep, committed, refusal
from services.gateway.auth import require
from services.gateway.commands import CommandRejected, issue_task, options_from
from services.gateway.models import ScheduleView, Task
from services.gateway.schemas import (
    ERROR_RESPONSES,
    BackfillIn,
    LastRunOut,
    ScheduleControlOut,
    ScheduleOut,
)
from shared.envelope import new_event
from shared.events import ScheduleControlRequested
from shared.schedules import Schedule, load_schedules

router = APIRouter(prefix="/api/v1", responses=ERROR_RESPONSES)


def _schedules(request: Request) -> dict[str, Schedule]:
    return load_schedules(request.app.state.settings.schedules_file)


def _schedule(request: Request, name: str) -> Schedule:
    schedule = _schedules(request).get(name)
    if schedule is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"schedule {name!r} not found")
    return schedule


@router.get("/schedules", dependencies=[Depends(require("schedules:read"))])
def list_schedules(request: Request, session: DB) -> list[ScheduleOut]:
    now = datetime.now(UTC)
    schedules = _schedules(request)
    views = {
        v.schedule: v
        for v in session.scalars(
            sa.select(ScheduleView).where(ScheduleView.schedule.in_(list(schedules)))
        )
    }
    task_ids = [v.last_task_id for v in views.values() if v.last_task_id]
    tasks = {t.id: t for t in session.scalars(sa.select(Task).where(Task.id.in_(task_ids)))}
    out = []
    for schedule in schedules.values():
        view = views.get(schedule.name)
        paused = bool(view and view.paused)
        last = None
        if view is not None and view.last_slot is not None and view.last_task_id is not None:
            task = tasks.get(view.last_task_id)
            last = LastRunOut(
                slot=view.last_slot,
                task_id=view.last_task_id,
                state=task.state if task else None,
                updated_at=task.updated_at if task else None,
            )
        out.append(
            ScheduleOut(
                **schedule.model_dump(
                    include={"name", "task", "cron", "args", "kwargs", "misfire"}
                    | {"catch_up", "expires", "overlap"}
                ),
                paused=paused,
                next_run_at=None if paused else schedule.next_slot(now),
                last_run=last,
            )
        )
    return out


@router.post(
    "/schedules/{name}/run", status_code=202, dependencies=[Depends(require("schedules:write"))]
)
def run_schedule(
    name: NamePath, session: DB, outbox: OutboxDep, request: Request
) -> dict[str, str]:
    """Run the schedule's task now (a task of its own, outside the schedule's slots)."""
    schedule = _schedule(request, name)
    try:
        task = issue_task(
            session,
            outbox,
            schedule.task,
            args=schedule.args,
            kwargs=schedule.kwargs,
            options=options_from(expires=schedule.expires),
        )
    except CommandRejected as exc:
        raise refusal(exc) from exc
    committed(session, request, task)
    return {"task_id": task.id, "schedule": name}


def _control(
    request: Request,
    session: DB,
    outbox: OutboxDep,
    schedule: Schedule,
    action: Literal["pause", "resume", "backfill"],
    body: BackfillIn | None = None,
) -> None:
    control = ScheduleControlRequested(
        schedule=schedule.name,
        action=action,
        start=body.start if body else None,
        end=body.end if body else None,
        requested_at=datetime.now(UTC),
    )
    outbox.add(session, new_event(control, source="gateway", subject=schedule.name))
    committed(session, request)


@router.post(
    "/schedules/{name}/pause", status_code=202, dependencies=[Depends(require("schedules:write"))]
)
def pause_schedule(
    name: NamePath, session: DB, outbox: OutboxDep, request: Request
) -> ScheduleControlOut:
    """The ticker fires none of the schedule's slots from its next tick until it is resumed
    (the slots passed meanwhile are not owed; a backfill fires them)."""
    _control(request, session, outbox, _schedule(request, name), "pause")
    return ScheduleControlOut(schedule=name, action="pause")


@router.post(
    "/schedules/{name}/resume", status_code=202, dependencies=[Depends(require("schedules:write"))]
)
def resume_schedule(
    name: NamePath, session: DB, outbox: OutboxDep, request: Request
) -> ScheduleControlOut:
    _control(request, session, outbox, _schedule(request, name), "resume")
    return ScheduleControlOut(schedule=name, action="resume")


@router.post(
    "/schedules/{name}/backfill",
    status_code=202,
    dependencies=[Depends(require("schedules:write"))],
)
def backfill_schedule(
    name: NamePath, body: BackfillIn, session: DB, outbox: OutboxDep, request: Request
) -> ScheduleControlOut:
    """Fire each slot in [start, end] not fired yet, with its deterministic task id: a second
    backfill of the same range fires nothing twice. A paused schedule's backfill waits for
    its resume; under the `skip` overlap policy, slots fire one after the other."""
    schedule = _schedule(request, name)
    if body.end > datetime.now(UTC):
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_ENTITY, "end: must not be in the future")
    try:
        slots = schedule.backfill_slots(body.start, body.end)
    except ValueError as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_ENTITY, str(exc)) from exc
    except OverflowError as exc:  # a start at the very beginning of the calendar
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_ENTITY, "start: out of range") from exc
    _control(request, session, outbox, schedule, "backfill", body)
    return ScheduleControlOut(schedule=name, action="backfill", slots=len(slots))
