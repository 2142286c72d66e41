"""Request and response bodies of the gateway's HTTP API."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, HttpUrl

from shared.events import CandidateUpserted


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class JobIn(Body):
    title: str = Field(min_length=1, max_length=200)
    description: str = Field(default="", max_length=5000)
    company: str = Field(min_length=1, max_length=200)
    location: str = Field(default="", max_length=200)
    url: HttpUrl


class CampaignIn(Body):
    name: str = Field(min_length=1, max_length=200)
    platform: Literal["meta", "google"]
    job_id: str
    daily_budget: Decimal = Field(gt=0, max_digits=12, decimal_places=2)
    currency: str = Field(pattern=r"^[A-Z]{3}$")
    targeting: dict[str, Any] = Field(default_factory=dict)


class CampaignOut(BaseModel):
    id: str
    name: str
    platform: str
    job_id: str
    daily_budget: Decimal
    currency: str
    targeting: dict[str, Any]
    status: str
    external_ids: dict[str, str]
    task_id: str | None
    last_error: dict[str, Any] | None
    metrics: dict[str, Any] | None
    created_at: datetime
    updated_at: datetime


class TaskOptionsIn(Body):
    countdown: float | None = Field(default=None, ge=0, description="Seconds from now.")
    eta: datetime | None = None
    expires: datetime | float | None = Field(
        default=None, description="A time, or seconds from now."
    )
    priority: Literal["high", "normal", "low"] | None = None
    max_retries: int | None = Field(default=None, ge=0, le=100)
    retry_delay: float | None = Field(default=None, ge=0)
    time_limit: float | None = Field(default=None, gt=0)


class PublishIn(TaskOptionsIn):
    pass


class TaskIn(TaskOptionsIn):
    name: str
    args: list[Any] = Field(default_factory=list)
    kwargs: dict[str, Any] = Field(default_factory=dict)


class TaskOut(BaseModel):
    task_id: str
    name: str
    state: str
    attempts: int
    progress: int | None
    result: dict[str, Any] | None
    error: dict[str, Any] | None
    next_attempt_at: datetime | None
    created_at: datetime
    updated_at: datetime
    history: list[dict[str, Any]]


class DeadLetterOut(BaseModel):
    id: str
    original_topic: str
    original_partition: int | None
    original_offset: int | None
    event_type: str | None
    event_id: str | None
    task_id: str | None
    consumer_group: str | None
    reason: str | None
    error_class: str | None
    error_message: str | None
    attempts: int
    dead_at: datetime
    replayed_at: datetime | None
    replay_count: int


class CandidatesIn(Body):
    candidates: list[CandidateUpserted] = Field(min_length=1, max_length=10000)
