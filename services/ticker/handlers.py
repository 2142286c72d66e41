"""What the ticker does on the events it consumes: an operator's pause, resume or backfill of
a schedule (kept in its own tables, announced on `schedule.state`), and the status of the
tasks it fired (kept on their firing, for the overlap policy)."""

from __future__ import annotations

import logging

import sqlalchemy as sa
from sqlalchemy.orm import Session

from services.ticker.models import Backfill, Firing, ScheduleControl
from services.ticker.state import announce
from shared.envelope import Envelope
from shared.events import ScheduleControlRequested, TaskStatus
from shared.outbox import Outbox
from shared.runtime import HandlerContext
from shared.schedules import Schedule

log = logging.getLogger(__name__)


def _session(ctx: HandlerContext) -> Session:
    assert ctx.session is not None, "ticker handlers run with a database session"
    return ctx.session


class ScheduleHandlers:
    def __init__(self, outbox: Outbox, schedules: dict[str, Schedule]) -> None:
        self.outbox = outbox
        self.schedules = schedules

    def control(
        self, envelope: Envelope, request: ScheduleControlRequested, ctx: HandlerContext
    ) -> None:
        session = _session(ctx)
        schedule = self.schedules.get(request.schedule)
        if schedule is None:
            log.warning("control of unknown schedule %r ignored", request.schedule)
            return
        if request.action == "backfill":
            if request.start is None or request.end is None:
                log.warning("backfill of %s without a range ignored", schedule.name)
                return
            try:
                schedule.backfill_slots(request.start, request.end)
            except ValueError as exc:
                log.warning("backfill of %s ignored: %s", schedule.name, exc)
                return
            # The leader fires its slots on its next ticks (services/ticker/ticker.py).
            session.merge(
                Backfill(
                    id=envelope.id,
                    schedule=schedule.name,
                    start=request.start,
                    end=request.end,
                    requested_at=request.requested_at,
                )
            )
            log.info("backfill of %s from %s to %s", schedule.name, request.start, request.end)
            return
        paused = request.action == "pause"
        control = session.get(ScheduleControl, schedule.name, with_for_update=True)
        if control is None:
            session.add(
                ScheduleControl(
                    schedule=schedule.name, paused=paused, changed_at=request.requested_at
                )
            )
        else:
            control.paused, control.changed_at = paused, request.requested_at
        session.flush()
        self.outbox.add(session, announce(session, schedule.name, request.requested_at))
        log.info("schedule %s %s", schedule.name, "paused" if paused else "resumed")

    def task_status(self, envelope: Envelope, status: TaskStatus, ctx: HandlerContext) -> None:
        """Follow the tasks this ticker fired; any other task's status is none of its business."""
        session = _session(ctx)
        firing = session.scalars(
            sa.select(Firing).where(Firing.task_id == status.task_id).with_for_update()
        ).first()
        if firing is None:
            return
        firing.state = status.state.value
        firing.finished_at = status.at if status.state.is_final else None
