"""The sync service's own tables: the campaigns it knows (learned from `campaign.published`)
with their last synced status and metrics, plus tracking/outbox."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from shared.db import UTCDateTime, utcnow
from shared.service import with_tracking


class Base(DeclarativeBase):
    """The sync service's tables (migrated into its own schema)."""


class KnownCampaign(Base):
    """A campaign learned from `campaign.published`, with what its platform last reported."""

    __tablename__ = "known_campaigns"

    campaign_id: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    platform: Mapped[str] = mapped_column(sa.String(16), index=True)
    external_id: Mapped[str | None] = mapped_column(sa.String(200), nullable=True)
    status: Mapped[str | None] = mapped_column(sa.String(16), nullable=True)
    impressions: Mapped[int] = mapped_column(sa.BigInteger, default=0)
    clicks: Mapped[int] = mapped_column(sa.BigInteger, default=0)
    spend: Mapped[Decimal] = mapped_column(sa.Numeric(16, 2), default=Decimal(0))
    conversions: Mapped[float] = mapped_column(sa.Float, default=0.0)
    synced_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    published_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


metadata = with_tracking(Base.metadata)
