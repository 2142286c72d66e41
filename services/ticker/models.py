"""The ticker's own tables: the leader lease with its fencing epoch, one row per fired slot,
and each schedule's newest handled slot (plus the shared tracking and outbox tables)."""

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


class ScheduleState(Base):
    """Where a schedule's catch-up starts: the newest slot dealt with (fired, or passed over
    by its misfire policy) and the newest slot actually fired."""

    __tablename__ = "schedule_state"

    schedule: Mapped[str] = mapped_column(sa.String(128), primary_key=True)
    last_slot: Mapped[datetime] = mapped_column(UTCDateTime)
    last_fired_slot: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


metadata = with_tracking(Base.metadata)
