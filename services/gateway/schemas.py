"""Request and response bodies of the gateway's HTTP API, with a bound on every free-form field
and list: hostile input is a 422 naming the field, never a 500 further down."""

from __future__ import annotations

import json
import math
import unicodedata
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    HttpUrl,
    ValidationInfo,
    field_validator,
    model_validator,
)

from shared.currencies import check_amount, check_currency
from shared.events import (
    MAX_RETRIES,
    MAX_RETRY_DELAY_SECONDS,
    MAX_SCHEDULE_AHEAD_SECONDS,
    MAX_TIME_LIMIT_SECONDS,
    CandidateUpserted,
)

# Free-form JSON (targeting, args, kwargs): serialized size and nesting depth.
MAX_JSON_BYTES = 16_384
MAX_JSON_DEPTH = 16
MAX_ARGS = 100
# Ids the gateway hands out (uuids) and the names of tasks, topics and schedules.
ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:\-]*$"


def _bad_character(value: str) -> str | None:
    if "\x00" in value:
        return "must not contain NUL characters"
    if any("\ud800" <= c <= "\udfff" for c in value):
        return "must not contain unpaired surrogates"
    return None


def single_line(value: str) -> str:
    """A name: printable text on one line (no control characters)."""
    if any(unicodedata.category(c) == "Cc" for c in value):
        raise ValueError("must not contain control characters")
    return value


def _check_json(value: Any) -> Any:
    def walk(node: Any, depth: int) -> None:
        if depth > MAX_JSON_DEPTH:
            raise ValueError(f"nested deeper than {MAX_JSON_DEPTH} levels")
        if isinstance(node, str):
            problem = _bad_character(node)
            if problem:
                raise ValueError(problem)
        elif isinstance(node, dict):
            for key, item in node.items():
                walk(key, depth + 1)
                walk(item, depth + 1)
        elif isinstance(node, list):
            for item in node:
                walk(item, depth + 1)
        elif isinstance(node, float) and not math.isfinite(node):
            raise ValueError("must not contain NaN or infinite numbers")

    walk(value, 0)
    size = len(json.dumps(value, ensure_ascii=False, default=str).encode())
    if size > MAX_JSON_BYTES:
        raise ValueError(f"is {size} bytes of JSON; at most {MAX_JSON_BYTES}")
    return value


Name = Annotated[str, Field(min_length=1, max_length=200), AfterValidator(single_line)]
OptionalName = Annotated[str, Field(max_length=200), AfterValidator(single_line)]
Id = Annotated[str, Field(min_length=1, max_length=64, pattern=ID_PATTERN)]
JsonObject = Annotated[dict[str, Any], AfterValidator(_check_json)]
JsonList = Annotated[list[Any], Field(max_length=MAX_ARGS), AfterValidator(_check_json)]


class Body(BaseModel):
    """Base of request bodies: unknown fields refused, and no string anywhere in the body
    (nested ones too) with a NUL or an unpaired surrogate, which no database stores."""

    model_config = ConfigDict(extra="forbid")

    @model_validator(mode="after")
    def _no_unstorable_text(self) -> Body:
        def walk(node: Any, path: str) -> None:
            if isinstance(node, str):
                problem = _bad_character(node)
                if problem:
                    raise ValueError(f"{path}: {problem}")
            elif isinstance(node, BaseModel):
                for name in type(node).model_fields:
                    walk(getattr(node, name), f"{path}.{name}" if path else name)
            elif isinstance(node, dict):
                for key, item in node.items():
                    walk(key, path)
                    walk(item, f"{path}.{key}")
            elif isinstance(node, list | tuple):
                for index, item in enumerate(node):
                    walk(item, f"{path}[{index}]")

        walk(self, "")
        return self


class JobIn(Body):
    title: Name
    description: str = Field(default="", max_length=5000)
    company: Name
    location: OptionalName = ""
    url: HttpUrl = Field(max_length=2000)


class CampaignIn(Body):
    name: Name
    platform: Literal["meta", "google"]
    job_id: Id
    currency: str = Field(
        min_length=3, max_length=3, pattern=r"^[A-Z]{3}$", description="ISO 4217 code."
    )
    daily_budget: Decimal = Field(
        gt=0,
        max_digits=12,
        decimal_places=2,
        description="Major units of the currency, with no more decimals than it has.",
    )
    targeting: JsonObject = Field(
        default_factory=dict, description=f"At most {MAX_JSON_BYTES} bytes of JSON."
    )

    _iso_currency = field_validator("currency")(check_currency)

    @field_validator("daily_budget")
    @classmethod
    def _budget_fits_currency(cls, value: Decimal, info: ValidationInfo) -> Decimal:
        currency = info.data.get("currency")
        return check_amount(value, currency) if currency else value


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


def _within_horizon(value: datetime | None, field: str) -> datetime | None:
    if value is None:
        return None
    horizon = timedelta(seconds=MAX_SCHEDULE_AHEAD_SECONDS)
    try:
        offset = value - datetime.now(UTC)
    except OverflowError:
        offset = None
    if offset is None or abs(offset) > horizon:
        raise ValueError(f"{field} must be within {horizon.days} days of now")
    return value


class TaskOptionsIn(Body):
    countdown: float | None = Field(
        default=None,
        ge=0,
        le=MAX_SCHEDULE_AHEAD_SECONDS,
        allow_inf_nan=False,
        description="Seconds from now.",
    )
    eta: AwareDatetime | None = Field(
        default=None, description="Run no earlier than this time (with its UTC offset)."
    )
    expires: (
        AwareDatetime
        | Annotated[float, Field(ge=0, le=MAX_SCHEDULE_AHEAD_SECONDS, allow_inf_nan=False)]
        | None
    ) = Field(default=None, description="A time, or seconds from now.")
    max_retries: int | None = Field(default=None, ge=0, le=MAX_RETRIES)
    retry_delay: float | None = Field(
        default=None, ge=0, le=MAX_RETRY_DELAY_SECONDS, allow_inf_nan=False
    )
    time_limit: float | None = Field(
        default=None, gt=0, le=MAX_TIME_LIMIT_SECONDS, allow_inf_nan=False
    )

    @field_validator("eta", "expires")
    @classmethod
    def _near_enough(cls, value: Any, info: ValidationInfo) -> Any:
        if isinstance(value, datetime):
            return _within_horizon(value, str(info.field_name))
        return value


class PublishIn(TaskOptionsIn):
    pass


class TaskIn(TaskOptionsIn):
    name: str = Field(min_length=1, max_length=100, pattern=ID_PATTERN)
    args: JsonList = Field(default_factory=list)
    kwargs: JsonObject = Field(default_factory=dict)


class TaskOut(BaseModel):
    task_id: str
    name: str
    state: str
    attempts: int
    progress: int | None
    result: dict[str, Any] | None
    error: dict[str, Any] | None
    next_attempt_at: datetime | None
    campaign_id: str | None = None
    correlation_id: str | None = None
    created_at: datetime
    updated_at: datetime
    history: list[dict[str, Any]]


class TransitionOut(BaseModel):
    state: str
    at: datetime
    attempt: int
    worker: str | None = Field(description="The service that reported it (gateway: its own)")
    error: str | None
    progress: int | None
    replay: bool = Field(description="A PENDING made by a dead-letter replay")
    duration: float | None = Field(description="Seconds the attempt ran, on its last transition")


class TaskHistoryOut(BaseModel):
    task_id: str
    name: str
    state: str
    campaign_id: str | None
    correlation_id: str | None
    args: list[Any]
    kwargs: dict[str, Any]
    options: dict[str, Any]
    result: dict[str, Any] | None
    error: dict[str, Any] | None
    transitions: list[TransitionOut]


class MinuteOut(BaseModel):
    minute: datetime
    succeeded: int = 0
    failed: int = 0
    retried: int = 0
    publish_latency_p50: float | None = None
    publish_latency_max: float | None = None


class BulkOut(BaseModel):
    matched: int = Field(description="Tasks (dead letters, for replay) the filters select now")
    done: int = Field(description="How many were acted on: 0 for a dry run without confirm")
    task_ids: list[str] = Field(description="The first 100 of them")


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


class RefusedRecordOut(BaseModel):
    """An outbox record the broker refused for good, set aside with its reason."""

    id: int
    topic: str
    event_type: str | None
    task_id: str | None
    size: int
    reason: str
    created_at: datetime | None
    refused_at: datetime | None


class TicketOut(BaseModel):
    ticket: str
    expires_in: float


class BackfillIn(Body):
    start: AwareDatetime = Field(description="The first slot time to fire (included)")
    end: AwareDatetime = Field(description="The last slot time to fire (included, not future)")


class LastRunOut(BaseModel):
    slot: datetime
    task_id: str
    state: str | None = Field(description="Its task's state (None until the read model has it)")
    updated_at: datetime | None


class ScheduleOut(BaseModel):
    name: str
    task: str
    cron: str
    args: list[Any]
    kwargs: dict[str, Any]
    misfire: str
    catch_up: float
    expires: float | None
    overlap: str = Field(description="skip: no firing while the previous one still runs")
    paused: bool = Field(description="As the ticker last announced it")
    next_run_at: datetime | None = Field(description="None while paused")
    last_run: LastRunOut | None = Field(description="The newest slot the ticker fired")


class ScheduleControlOut(BaseModel):
    schedule: str
    action: Literal["pause", "resume", "backfill"]
    slots: int | None = Field(default=None, description="Slots in a backfill's range")


def unstorable_text(profile: CandidateUpserted) -> tuple[str, str] | None:
    """The first field of a candidate profile whose text no database stores (NUL, unpaired
    surrogate), with why; None when every text is storable."""
    for field_name, texts in (
        ("candidate_id", [profile.candidate_id]),
        ("location", [profile.location]),
        ("skills", profile.skills),
    ):
        for text in texts:
            problem = _bad_character(text)
            if problem:
                return field_name, problem
    return None


class ErrorOut(BaseModel):
    """Why a request was refused: a sentence, or pydantic's list of field errors."""

    detail: str | list[dict[str, Any]]


_ERROR = {"model": ErrorOut}
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {**_ERROR, "description": "Malformed request"},
    401: {**_ERROR, "description": "Missing or invalid bearer token"},
    403: {**_ERROR, "description": "The token lacks the scope"},
    404: {**_ERROR, "description": "Not found"},
    409: {**_ERROR, "description": "Conflicts with the resource's state"},
    413: {
        "description": "Request body, or the command it makes, too large",
        "content": {
            "application/json": {"schema": ErrorOut.model_json_schema()},
            "text/plain": {"schema": {"type": "string"}},
        },
    },
    422: {**_ERROR, "description": "Invalid input; the detail names the field"},
}


def validation_errors(errors: Any) -> list[dict[str, Any]]:
    """Pydantic's errors as a 422 body: where and why, without echoing the input (which may
    be megabytes, NaN or text no JSON encoder takes)."""

    def safe(part: Any) -> Any:
        if isinstance(part, int):
            return part
        return str(part).encode("utf-8", "backslashreplace").decode()[:200]

    return [
        {
            "type": safe(error.get("type", "")),
            "loc": [safe(part) for part in error.get("loc", ())],
            "msg": safe(error.get("msg", "")),
        }
        for error in errors
    ]
