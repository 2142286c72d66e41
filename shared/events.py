"""Event payload contracts: one pydantic model per event type, and one declaration per event
(`EVENTS`) from which its topic, schema and task routing are derived.

`schemas/<type>/v<N>.json` is generated from these models (`make schemas`); producers and
consumers validate every payload against its model.
"""

from __future__ import annotations

import builtins
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator

from shared.currencies import check_currency

Platform = Literal["meta", "google"]

# Bounds of every task option (docs/contracts.md): what a worker can honour without overflowing a
# timer or holding a record in the delay tiers for months.
MAX_SCHEDULE_AHEAD_SECONDS = 30 * 24 * 3600  # countdown, eta and expires: at most 30 days ahead
MAX_RETRIES = 100
MAX_RETRY_DELAY_SECONDS = 24 * 3600
MAX_TIME_LIMIT_SECONDS = 24 * 3600
# Identifiers chosen by clients (candidate ids) and how many one command may carry.
MAX_ID_LENGTH = 64
MAX_IDS_PER_COMMAND = 10_000
CandidateId = Annotated[str, Field(min_length=1, max_length=MAX_ID_LENGTH)]


class Payload(BaseModel):
    """Base of every event payload. Unknown fields are ignored, so a consumer accepts events
    from a newer producer that added optional fields (schemas evolve by addition)."""

    model_config = ConfigDict(extra="ignore", frozen=True)


class TaskState(StrEnum):
    """Task states, as Celery users know them (docs/contracts.md)."""

    PENDING = "PENDING"
    SCHEDULED = "SCHEDULED"
    STARTED = "STARTED"
    PROGRESS = "PROGRESS"
    RETRY = "RETRY"
    SUCCESS = "SUCCESS"
    FAILURE = "FAILURE"
    EXPIRED = "EXPIRED"
    REVOKED = "REVOKED"

    @property
    def is_final(self) -> bool:
        return self in FINAL_STATES


FINAL_STATES = frozenset(
    {TaskState.SUCCESS, TaskState.FAILURE, TaskState.EXPIRED, TaskState.REVOKED}
)


class TaskOptions(Payload):
    """Execution options a command carries (Celery's apply_async options)."""

    eta: AwareDatetime | None = Field(default=None, description="Run no earlier than this time.")
    expires: AwareDatetime | None = Field(default=None, description="Do not run after this time.")
    max_retries: int = Field(default=3, ge=0, le=MAX_RETRIES)
    retry_delay: float = Field(
        default=60.0,
        ge=0,
        le=MAX_RETRY_DELAY_SECONDS,
        allow_inf_nan=False,
        description="Seconds; grows per attempt.",
    )
    time_limit: float = Field(
        default=3600.0,
        gt=0,
        le=MAX_TIME_LIMIT_SECONDS,
        allow_inf_nan=False,
        description="Seconds before cancellation.",
    )


class Command(Payload):
    """Base of command payloads: every command is a task."""

    task_name: str
    options: TaskOptions = TaskOptions()


class JobOpening(Payload):
    title: str = Field(min_length=1, max_length=200)
    description: str = Field(default="", max_length=5000)
    company: str = Field(min_length=1, max_length=200)
    location: str = Field(default="", max_length=200)
    url: str = Field(min_length=1, max_length=2000)


class PublishRequested(Command):
    """Publish one campaign (event-carried state: the campaign and its job opening)."""

    task_name: Literal["campaign.publish"] = "campaign.publish"
    campaign_id: str
    platform: Platform
    name: str
    daily_budget: Decimal = Field(gt=0)
    currency: str = Field(min_length=3, max_length=3, description="ISO 4217 code.")
    targeting: dict[str, Any] = Field(default_factory=dict)
    job: JobOpening

    _iso_currency = field_validator("currency")(check_currency)


class SyncRequested(Command):
    """Sync the status and metrics of one platform's campaigns (seed: sync_*_campaigns)."""

    task_name: Literal["campaign.sync"] = "campaign.sync"
    platform: Platform


class MetricsRefreshRequested(Command):
    """Refresh every campaign's metrics (seed: update_all_campaign_metrics)."""

    task_name: Literal["metrics.refresh"] = "metrics.refresh"
    platform: Platform | None = None


class TrainingRequested(Command):
    """Train the candidate segmentation model (seed: train_segmentation_model_task)."""

    task_name: Literal["ml.train"] = "ml.train"
    n_clusters: int | None = Field(default=None, ge=2, le=50)


class SegmentationRequested(Command):
    """Assign segments to candidates with the current model (seed: assign_segments_task)."""

    task_name: Literal["ml.assign_segments"] = "ml.assign_segments"
    candidate_ids: list[CandidateId] | None = Field(default=None, max_length=MAX_IDS_PER_COMMAND)


class CandidateUpserted(Payload):
    """A candidate's current profile (compacted topic keyed by candidate id)."""

    candidate_id: CandidateId
    years_experience: float = Field(ge=0, le=70)
    education_level: Literal["none", "secondary", "vocational", "bachelor", "master", "phd"]
    skills: list[Annotated[str, Field(max_length=100)]] = Field(
        default_factory=list, max_length=100
    )
    location: str = Field(default="", max_length=200)
    desired_salary: float | None = Field(default=None, ge=0, le=1e12)
    updated_at: datetime


class CandidatesUpserted(Payload):
    """Many candidates' current profiles in one record: what the bulk intake produces, so
    that a record's costs (envelope, outbox row, tracking row) are paid once per batch. The
    ML service stores them like `candidate.upserted`; they feed training and the batch
    assignment, and are not assigned online one by one."""

    candidates: list[CandidateUpserted] = Field(min_length=1, max_length=MAX_IDS_PER_COMMAND)


class CampaignPublished(Payload):
    campaign_id: str
    platform: Platform
    external_ids: dict[str, str]
    published_at: datetime


class ErrorInfo(Payload):
    """Why something failed, as the platform or the worker said it."""

    error_class: str
    message: str
    code: str | None = None
    subcode: str | None = None
    transient: bool = False


class CampaignPublishFailed(Payload):
    campaign_id: str
    platform: Platform
    error: ErrorInfo


class CampaignStatusChanged(Payload):
    campaign_id: str | None = None
    platform: Platform
    external_id: str
    status: str
    previous_status: str | None = None


class CampaignMetricsUpdated(Payload):
    campaign_id: str | None = None
    platform: Platform
    external_id: str
    impressions: int = Field(ge=0)
    clicks: int = Field(ge=0)
    spend: Decimal = Field(ge=0)
    conversions: float = Field(ge=0)
    as_of: datetime


class ModelTrained(Payload):
    model_version: str
    n_clusters: int
    n_samples: int
    metrics: dict[str, float]
    trained_at: datetime


class CandidateSegmented(Payload):
    """One candidate's segment (the online assignment of a single upsert)."""

    candidate_id: str
    segment: int
    model_version: str


class CandidateSegmentsAssigned(Payload):
    """Segments of many candidates, one part of a batch assignment (`ml.assign_segments`).

    An assignment is split into `parts` events of at most MAX_IDS_PER_COMMAND candidates."""

    model_version: str
    segments: dict[CandidateId, int] = Field(
        min_length=1, max_length=MAX_IDS_PER_COMMAND, description="candidate id -> segment"
    )
    part: int = Field(ge=1, description="This event's number among the assignment's parts")
    parts: int = Field(ge=1)


class TaskStatus(Payload):
    """One task transition; `task.status` is keyed by task id so transitions stay ordered."""

    task_id: str
    name: str
    state: TaskState
    attempt: int = Field(default=1, ge=1)
    progress: int | None = Field(default=None, ge=0, le=100)
    result: dict[str, Any] | None = None
    error: ErrorInfo | None = None
    next_attempt_at: datetime | None = None
    args: list[Any] | None = None
    kwargs: dict[str, Any] | None = None
    at: datetime


class TaskRevoked(Payload):
    """A revocation; `task.revoked` is compacted so every worker learns all of them."""

    task_id: str
    reason: str = ""
    revoked_at: datetime


class ScheduleControlRequested(Payload):
    """An operator's request to the ticker: pause or resume a schedule, or fire its slots in
    `[start, end]` that were never fired (backfill)."""

    schedule: str
    action: Literal["pause", "resume", "backfill"]
    start: AwareDatetime | None = None
    end: AwareDatetime | None = None
    requested_at: datetime


class ScheduleStateChanged(Payload):
    """The ticker's view of a schedule after a change: paused or not, and its newest firing
    (`schedule.state` is compacted by schedule name, so the latest view survives)."""

    schedule: str
    paused: bool
    last_slot: datetime | None = None
    last_task_id: str | None = None
    at: datetime


class PlatformThrottled(Payload):
    """A platform account takes no call until `until`, as the platform signalled to one worker
    (`platform.throttled` is compacted by `<platform>:<account>`, so the latest block of each
    account survives and every worker backs off together)."""

    platform: Platform
    account: str = Field(min_length=1, max_length=100)
    until: AwareDatetime
    reason: str = Field(default="", max_length=1000)
    signalled_at: AwareDatetime


@dataclass(frozen=True)
class EventDeclaration:
    """An event type, declared once: its payload model and schema version, its topic (named
    after the type: partitions, compaction, and whether a service consumes it, which gives it
    retry tiers and a dead-letter topic), and for a command the payload field that keys its
    record. Topics, schemas and task routing are derived from these (docs/contracts.md)."""

    type: str
    model: builtins.type[Payload]
    version: int = 1
    partitions: int = 3
    compacted: bool = False
    consumed: bool = True
    # A command's key: this payload field's value, or the task name when it is None or empty.
    key: str | None = None
    # How systems outside AdFlux may produce this event themselves (asyncapi.yaml documents
    # it as a `send` operation); empty when only AdFlux produces it.
    upstream: str = ""

    @property
    def dataschema(self) -> str:
        return f"schemas/{self.type}/v{self.version}.json"

    @property
    def task_name(self) -> str | None:
        """The task a command event runs (its model's `task_name`); None for other events."""
        if not issubclass(self.model, Command):
            return None
        name: str = self.model.model_fields["task_name"].default
        return name


EVENTS: tuple[EventDeclaration, ...] = (
    EventDeclaration(
        "campaign.publish_requested", PublishRequested, partitions=6, key="campaign_id"
    ),
    EventDeclaration("campaign.sync_requested", SyncRequested, key="platform"),
    EventDeclaration("metrics.refresh_requested", MetricsRefreshRequested, key="platform"),
    EventDeclaration("ml.training_requested", TrainingRequested, partitions=1),
    EventDeclaration("ml.segmentation_requested", SegmentationRequested),
    EventDeclaration(
        "candidate.upserted",
        CandidateUpserted,
        compacted=True,
        upstream=(
            "Upstream systems may produce candidate profiles here directly instead of through "
            "POST /api/v1/candidates: one record per candidate, key = candidate_id (UTF-8), "
            "value = the JSON payload, CloudEvents binary-mode headers with at least ce_id "
            "(unique per event), ce_type=candidate.upserted, ce_source, ce_specversion=1.0 "
            "and ce_time. The ML service stores them in batches; a profile older "
            "(updated_at) than the stored one is ignored, and a malformed record goes to "
            "candidate.upserted.dlq."
        ),
    ),
    EventDeclaration("candidate.batch_upserted", CandidatesUpserted),
    EventDeclaration("campaign.published", CampaignPublished),
    EventDeclaration("campaign.publish_failed", CampaignPublishFailed),
    EventDeclaration("campaign.status_changed", CampaignStatusChanged),
    EventDeclaration("campaign.metrics_updated", CampaignMetricsUpdated),
    EventDeclaration("ml.model_trained", ModelTrained),
    EventDeclaration("candidate.segmented", CandidateSegmented),
    EventDeclaration("candidate.segments_assigned", CandidateSegmentsAssigned),
    EventDeclaration("task.status", TaskStatus, partitions=6),
    EventDeclaration("task.revoked", TaskRevoked, partitions=1, compacted=True, consumed=False),
    EventDeclaration("schedule.control_requested", ScheduleControlRequested, partitions=1),
    EventDeclaration("schedule.state", ScheduleStateChanged, partitions=1, compacted=True),
    EventDeclaration(
        "platform.throttled", PlatformThrottled, partitions=1, compacted=True, consumed=False
    ),
)

CONTRACTS: dict[str, EventDeclaration] = {e.type: e for e in EVENTS}
CONTRACT_BY_MODEL: dict[type[Payload], EventDeclaration] = {e.model: e for e in EVENTS}
# Task name -> the command event type that runs it (docs/contracts.md).
TASK_COMMANDS: dict[str, str] = {e.task_name: e.type for e in EVENTS if e.task_name is not None}
