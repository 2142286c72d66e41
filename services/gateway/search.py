"""Task search over the read model: one filter (by name, state, campaign, correlation id,
time range and text in the error) shared by the listing and the bulk actions, and the opaque
cursor that pages through it newest first."""

from __future__ import annotations

import base64
import binascii
from datetime import datetime
from typing import Annotated, Any

import sqlalchemy as sa
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator

from services.gateway.models import Task
from shared.events import TaskState

ID = r"^[A-Za-z0-9][A-Za-z0-9._:\-]*$"
Ident = Annotated[str | None, Field(min_length=1, max_length=250, pattern=ID)]


class TaskFilter(BaseModel):
    """Which tasks: every given field must match (none given: all tasks)."""

    name: Ident = None
    state: TaskState | None = None
    campaign_id: Ident = None
    correlation_id: Ident = None
    since: AwareDatetime | None = Field(default=None, description="Updated at or after")
    until: AwareDatetime | None = Field(default=None, description="Updated before")
    error: Annotated[
        str | None,
        # No control characters: no database stores NUL in text (PostgreSQL refuses it).
        Field(
            min_length=1,
            max_length=200,
            pattern=r"^[^\x00-\x1f\x7f]+$",
            description="Text in the error (case-insensitive)",
        ),
    ] = None

    @field_validator("state", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value

    def apply(self, query: sa.Select[Any]) -> sa.Select[Any]:
        if self.name:
            query = query.where(Task.name == self.name)
        if self.state:
            query = query.where(Task.state == self.state.value)
        if self.campaign_id:
            query = query.where(Task.campaign_id == self.campaign_id)
        if self.correlation_id:
            query = query.where(Task.correlation_id == self.correlation_id)
        if self.since:
            query = query.where(Task.updated_at >= self.since)
        if self.until:
            query = query.where(Task.updated_at < self.until)
        if self.error:
            pattern = "%" + self.error.replace("\\", "\\\\").replace("%", r"\%").replace("_", r"\_")
            query = query.where(sa.cast(Task.error, sa.Text).ilike(pattern + "%", escape="\\"))
        return query


class TaskSelection(TaskFilter):
    """A bulk action's tasks. Without `confirm` nothing is done: the answer says how many
    tasks match; the action runs when `confirm` repeats that count (409 if it changed)."""

    model_config = ConfigDict(extra="forbid")

    confirm: int | None = Field(default=None, ge=0, le=100_000)


class BadCursor(ValueError):
    """The cursor was not made by `next_cursor`."""


def next_cursor(task: Task) -> str:
    """The cursor of the page after `task` (the last of a page)."""
    raw = f"{task.updated_at.isoformat()}|{task.id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def after_cursor(query: sa.Select[Any], cursor: str) -> sa.Select[Any]:
    """`query` (ordered newest first) from just after the task the cursor names."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        at_text, task_id = raw.split("|", 1)
        at = datetime.fromisoformat(at_text)
    except (binascii.Error, UnicodeDecodeError, ValueError) as exc:
        raise BadCursor("cursor: not a cursor this API returned") from exc
    if at.tzinfo is None or not task_id:
        raise BadCursor("cursor: not a cursor this API returned")
    return query.where(
        sa.or_(Task.updated_at < at, sa.and_(Task.updated_at == at, Task.id < task_id))
    )


def newest_first(query: sa.Select[Any]) -> sa.Select[Any]:
    return query.order_by(Task.updated_at.desc(), Task.id.desc())
