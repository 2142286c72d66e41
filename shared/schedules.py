"""The schedule file (`config/schedules.yaml`): what the ticker fires and when, read by the
ticker to fire and by the gateway to list and run schedules on demand."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import yaml
from croniter import croniter
from pydantic import BaseModel, ConfigDict, Field, field_validator

from shared.events import TASK_COMMANDS

Misfire = Literal["run_once", "skip", "run_all"]
# `skip`: a slot due while the schedule's previous firing has not finished is not fired.
Overlap = Literal["allow", "skip"]
# A backfill fires at most this many slots (a minutely schedule: about 16 hours).
MAX_BACKFILL_SLOTS = 1000


class Schedule(BaseModel):
    """One periodic task: a cron expression (UTC) and the task it fires."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    task: str
    cron: str
    args: list[Any] = Field(default_factory=list)
    kwargs: dict[str, Any] = Field(default_factory=dict)
    misfire: Misfire = "run_once"
    overlap: Overlap = "allow"
    catch_up: float = Field(default=3600.0, ge=0, description="Seconds of missed slots to honour.")
    expires: float | None = Field(default=None, gt=0, description="Seconds a firing stays valid.")

    @field_validator("task")
    @classmethod
    def _known_task(cls, value: str) -> str:
        if value not in TASK_COMMANDS:
            raise ValueError(f"unknown task {value!r}")
        return value

    @field_validator("cron")
    @classmethod
    def _valid_cron(cls, value: str) -> str:
        if not croniter.is_valid(value):
            raise ValueError(f"invalid cron expression {value!r}")
        return value

    def slots_between(self, start: datetime, end: datetime) -> list[datetime]:
        """Slot times t with start < t <= end, oldest first."""
        slots: list[datetime] = []
        it = croniter(self.cron, start)
        while True:
            slot = it.get_next(datetime)
            if slot > end:
                return slots
            slots.append(slot)

    def previous_slot(self, at: datetime) -> datetime:
        """The latest slot at or before `at`."""
        it = croniter(self.cron, at)
        if croniter.match(self.cron, at) and at.second == 0 and at.microsecond == 0:
            return at
        result: datetime = it.get_prev(datetime)
        return result

    def backfill_slots(self, start: datetime, end: datetime) -> list[datetime]:
        """Slot times t with start <= t <= end, oldest first; ValueError naming the field when
        the range is reversed or holds more than MAX_BACKFILL_SLOTS."""
        if end < start:
            raise ValueError("end: must not be before start")
        slots: list[datetime] = []
        it = croniter(self.cron, start - timedelta(microseconds=1))
        while (slot := it.get_next(datetime)) <= end:
            slots.append(slot)
            if len(slots) > MAX_BACKFILL_SLOTS:
                raise ValueError(f"end: the range holds more than {MAX_BACKFILL_SLOTS} slots")
        return slots

    def next_slot(self, after: datetime) -> datetime:
        result: datetime = croniter(self.cron, after).get_next(datetime)
        return result


def load_schedules(path: str | Path) -> dict[str, Schedule]:
    """Parse the schedule file; raises ValueError naming the bad entry."""
    raw = yaml.safe_load(Path(path).read_text()) or {}
    entries = raw.get("schedules") or {}
    schedules = {}
    for name, body in entries.items():
        try:
            schedules[name] = Schedule(name=name, **(body or {}))
        except Exception as exc:
            raise ValueError(f"schedule {name!r} in {path}: {exc}") from exc
    return schedules
