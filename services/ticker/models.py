"""The ticker's own tables: the leader lease with its fencing epoch, one row per fired slot
with its task's latest state, each schedule's newest handled slot, its pause switch and the
backfills asked of it (plus the shared tracking and outbox tables)."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from shared.db import UTCDateTime, utcnow
from shared.service import with_tracking


class Base(DeclarativeBase):
    """The ticker's tables (migrated into its own schema)."""


class Lease(Base):
    """Who may fire: `epoch` grows on every acquisition and each firing checks it (fencing).
    `expires_at` is set by the SQLite lease (renewed every tick); on PostgreSQL the holder
    of an advisory lock leads and `expires_at` stays empty."""

    __tablename__ = "lease"

    name: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    owner: Mapped[str] = mapped_column(sa.String(128))
    epoch: Mapped[int] = mapped_column(sa.BigInteger)
    acquired_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class Firing(Base):
    """One fired slot; the primary key makes a second firing of the same slot impossible."""

    __tablename__ = "firings"

    schedule: Mapped[str] = mapped_column(sa.String(128), primary_key=True)
    slot: Mapped[datetime] = mapped_column(UTCDateTime, primary_key=True)
    task_id: Mapped[str] = mapped_column(sa.String(64), unique=True)
    epoch: Mapped[int] = mapped_column(sa.BigInteger)
    fired_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # The fired task's latest state, from `task.status` (None: fired before states were kept);
    # the overlap policy waits for a final one.
    state: Mapped[str | None] = mapped_column(sa.String(16), nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class ScheduleState(Base):
    """Where a schedule's catch-up starts: the newest slot dealt with (fired, or passed over
    by its misfire policy) and the newest slot actually fired."""

    __tablename__ = "schedule_state"

    schedule: Mapped[str] = mapped_column(sa.String(128), primary_key=True)
    last_slot: Mapped[datetime] = mapped_column(UTCDateTime)
    last_fired_slot: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class ScheduleControl(Base):
    """An operator's pause switch for one schedule (absent: running)."""

    __tablename__ = "schedule_control"

    schedule: Mapped[str] = mapped_column(sa.String(128), primary_key=True)
    paused: Mapped[bool] = mapped_column(sa.Boolean)
    changed_at: Mapped[datetime] = mapped_column(UTCDateTime)


class Backfill(Base):
    """A requested backfill of the slots in [start, end]; `done_at` once each one was fired."""

    __tablename__ = "backfills"

    id: Mapped[str] = mapped_column(sa.String(64), primary_key=True)  # the request's event id
    schedule: Mapped[str] = mapped_column(sa.String(128), index=True)
    start: Mapped[datetime] = mapped_column(UTCDateTime)
    end: Mapped[datetime] = mapped_column(UTCDateTime)
    requested_at: Mapped[datetime] = mapped_column(UTCDateTime)
    done_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


metadata = with_tracking(Base.metadata)
