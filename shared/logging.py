"""Logging set-up: JSON lines carrying the task and correlation ids of the event in hand."""

from __future__ import annotations

import contextvars
import json
import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from shared.envelope import Envelope

_task_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("task_id", default=None)
_correlation_id: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "correlation_id", default=None
)
_event_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("event_id", default=None)


@contextmanager
def bind_event(envelope: Envelope) -> Iterator[None]:
    """Log records emitted inside carry this event's task, correlation and event ids."""
    tokens = (
        _task_id.set(envelope.taskid),
        _correlation_id.set(envelope.correlationid),
        _event_id.set(envelope.id),
    )
    try:
        yield
    finally:
        _task_id.reset(tokens[0])
        _correlation_id.reset(tokens[1])
        _event_id.reset(tokens[2])


class JsonFormatter(logging.Formatter):
    """One JSON object per line."""

    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname,
            "service": self.service,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, var in (
            ("task_id", _task_id),
            ("correlation_id", _correlation_id),
            ("event_id", _event_id),
        ):
            value = var.get()
            if value:
                entry[key] = value
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def configure_logging(service: str, level: str = "INFO", as_json: bool = True) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if as_json:
        handler.setFormatter(JsonFormatter(service))
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("urllib3", "httpx", "uvicorn.access", "alembic"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
