"""The publisher's own tables: the step journal of every publish flow, and tracking/outbox."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from shared.db import UTCDateTime, utcnow
from shared.service import with_tracking


class Base(DeclarativeBase):
    """The publisher's tables (their own metadata, migrated into the publisher's schema)."""


class PublishStep(Base):
    """One object of a campaign tree: attempted, then created with its platform id."""

    __tablename__ = "publish_steps"

    campaign_id: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    step: Mapped[str] = mapped_column(sa.String(32), primary_key=True)
    platform: Mapped[str] = mapped_column(sa.String(16))
    external_id: Mapped[str | None] = mapped_column(sa.String(200), nullable=True)
    attempted_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    created_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


metadata = with_tracking(Base.metadata)
