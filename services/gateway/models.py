"""The gateway's own tables: jobs and campaigns it owns, and the read model it projects from
status events (tasks, dead letters, segments, models, schedules as the ticker announces them)."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from shared.db import UTCDateTime, utcnow
from shared.service import with_tracking


class Base(DeclarativeBase):
    """The gateway's tables (migrated into the gateway's schema)."""


class Job(Base):
    __tablename__ = "jobs"

    id: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    title: Mapped[str] = mapped_column(sa.String(200))
    description: Mapped[str] = mapped_column(sa.Text, default="")
    company: Mapped[str] = mapped_column(sa.String(200))
    location: Mapped[str] = mapped_column(sa.String(200), default="")
    url: Mapped[str] = mapped_column(sa.String(2000))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Campaign(Base):
    __tablename__ = "campaigns"

    id: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(200))
    platform: Mapped[str] = mapped_column(sa.String(16), index=True)
    job_id: Mapped[str] = mapped_column(sa.ForeignKey("jobs.id"))
    daily_budget: Mapped[Decimal] = mapped_column(sa.Numeric(14, 2))
    currency: Mapped[str] = mapped_column(sa.String(3))
    targeting: Mapped[dict[str, Any]] = mapped_column(sa.JSON, default=dict)
    status: Mapped[str] = mapped_column(sa.String(16), default="draft", index=True)
    external_ids: Mapped[dict[str, str]] = mapped_column(sa.JSON, default=dict)
    task_id: Mapped[str | None] = mapped_column(sa.String(64), nullable=True)
    last_error: Mapped[dict[str, Any] | None] = mapped_column(sa.JSON, nullable=True)
    metrics: Mapped[dict[str, Any] | None] = mapped_column(sa.JSON, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Task(Base):
    """The read model of one task, projected from `task.status`."""

    __tablename__ = "tasks"

    id: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(64), index=True)
    state: Mapped[str] = mapped_column(sa.String(16), index=True)
    attempts: Mapped[int] = mapped_column(sa.Integer, default=0)
    progress: Mapped[int | None] = mapped_column(sa.Integer, nullable=True)
    result: Mapped[dict[str, Any] | None] = mapped_column(sa.JSON, nullable=True)
    error: Mapped[dict[str, Any] | None] = mapped_column(sa.JSON, nullable=True)
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    args: Mapped[list[Any]] = mapped_column(sa.JSON, default=list)
    kwargs: Mapped[dict[str, Any]] = mapped_column(sa.JSON, default=dict)
    options: Mapped[dict[str, Any]] = mapped_column(sa.JSON, default=dict)
    history: Mapped[list[dict[str, Any]]] = mapped_column(sa.JSON, default=list)
    campaign_id: Mapped[str | None] = mapped_column(sa.String(64), nullable=True, index=True)
    correlation_id: Mapped[str | None] = mapped_column(sa.String(64), nullable=True, index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)


class DeadLetter(Base):
    """A record found on a dead-letter topic, kept for listing and replay."""

    __tablename__ = "dead_letters"

    id: Mapped[str] = mapped_column(sa.String(300), primary_key=True)  # <dlq topic>:<p>:<offset>
    dlq_topic: Mapped[str] = mapped_column(sa.String(250))
    original_topic: Mapped[str] = mapped_column(sa.String(250), index=True)
    original_partition: Mapped[int | None] = mapped_column(sa.Integer, nullable=True)
    original_offset: Mapped[int | None] = mapped_column(sa.BigInteger, nullable=True)
    event_type: Mapped[str | None] = mapped_column(sa.String(100), nullable=True)
    event_id: Mapped[str | None] = mapped_column(sa.String(64), nullable=True)
    task_id: Mapped[str | None] = mapped_column(sa.String(64), nullable=True, index=True)
    consumer_group: Mapped[str | None] = mapped_column(sa.String(200), nullable=True)
    reason: Mapped[str | None] = mapped_column(sa.String(32), nullable=True)
    error_class: Mapped[str | None] = mapped_column(sa.String(200), nullable=True)
    error_message: Mapped[str | None] = mapped_column(sa.Text, nullable=True)
    attempts: Mapped[int] = mapped_column(sa.Integer, default=1)
    key: Mapped[bytes | None] = mapped_column(sa.LargeBinary, nullable=True)
    value: Mapped[bytes | None] = mapped_column(sa.LargeBinary, nullable=True)
    headers: Mapped[list[list[str]]] = mapped_column(sa.JSON, default=list)
    dead_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    replayed_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    replay_count: Mapped[int] = mapped_column(sa.Integer, default=0)


class CandidateSegment(Base):
    __tablename__ = "candidate_segments"

    candidate_id: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    segment: Mapped[int] = mapped_column(sa.Integer, index=True)
    model_version: Mapped[str] = mapped_column(sa.String(64))
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class SegmentationModel(Base):
    __tablename__ = "segmentation_models"

    version: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    n_clusters: Mapped[int] = mapped_column(sa.Integer)
    n_samples: Mapped[int] = mapped_column(sa.Integer)
    metrics: Mapped[dict[str, float]] = mapped_column(sa.JSON, default=dict)
    trained_at: Mapped[datetime] = mapped_column(UTCDateTime)


class ScheduleView(Base):
    """A schedule as the ticker last announced it (`schedule.state`): paused or not, and its
    newest firing. A schedule never announced is running and has not fired yet."""

    __tablename__ = "schedule_views"

    schedule: Mapped[str] = mapped_column(sa.String(128), primary_key=True)
    paused: Mapped[bool] = mapped_column(sa.Boolean)
    last_slot: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    last_task_id: Mapped[str | None] = mapped_column(sa.String(64), nullable=True)
    changed_at: Mapped[datetime] = mapped_column(UTCDateTime)


metadata = with_tracking(Base.metadata)
