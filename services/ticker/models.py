"""The ticker's own tables: the leader lease, one row per fired slot, and each schedule's
last handled slot (plus tracking/outbox)."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from shared.db import UTCDateTime, utcnow
from shared.service import with_tracking


class Base(DeclarativeBase):
    """The ticker's tables (migrated into its own schema)."""


class Lease(Base):
    """Who may fire: the owner while `expires_at` is ahead; `epoch` grows on every takeover."""

    __tablename__ = "lease"

    name: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    owner: Mapped[str] = mapped_column(sa.String(128))
    epoch: Mapped[int] = mapped_column(sa.BigInteger)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)


class Firing(Base):
    """One fired slot; the primary key makes a second firing of the same slot impossible."""

    __tablename__ = "firings"

    schedule: Mapped[str] = mapped_column(sa.String(128), primary_key=True)
    slot: Mapped[datetime] = mapped_column(UTCDateTime, primary_key=True)
    task_id: Mapped[str] = mapped_column(sa.String(64), unique=True)
    epoch: Mapped[int] = mapped_column(sa.BigInteger)
    fired_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class ScheduleState(Base):
    """The newest slot each schedule has dealt with (fired or skipped by its misfire policy)."""

    __tablename__ = "schedule_state"

    schedule: Mapped[str] = mapped_column(sa.String(128), primary_key=True)
    last_slot: Mapped[datetime] = mapped_column(UTCDateTime)


metadata = with_tracking(Base.metadata)
