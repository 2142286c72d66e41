"""A schedule's state as the ticker keeps it in its tables — paused or not, its newest firing
and the state of that firing's task — read in the caller's transaction."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import sqlalchemy as sa
from sqlalchemy.orm import Session

from services.ticker.firing import state_event
from services.ticker.models import Firing, ScheduleControl
from shared.envelope import Envelope


@dataclass(frozen=True)
class ScheduleView:
    paused: bool
    last_slot: datetime | None  # the newest fired slot
    previous_state: str | None  # the state of the most recently fired task


def read_view(session: Session, schedule: str) -> ScheduleView:
    control = session.get(ScheduleControl, schedule)
    newest = session.scalar(sa.select(sa.func.max(Firing.slot)).where(Firing.schedule == schedule))
    latest = session.scalars(
        sa.select(Firing).where(Firing.schedule == schedule).order_by(Firing.fired_at.desc())
    ).first()
    return ScheduleView(
        paused=bool(control and control.paused),
        last_slot=newest.astimezone(UTC) if newest is not None else None,
        previous_state=latest.state if latest is not None else None,
    )


def announce(session: Session, schedule: str, at: datetime) -> Envelope:
    """The `schedule.state` event for `schedule` as its tables stand in `session`."""
    view = read_view(session, schedule)
    return state_event(schedule, view.paused, view.last_slot, at)
