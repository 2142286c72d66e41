"""Logging set-up: JSON lines carrying the task and correlation ids of the event in hand,
every line redacted of secrets (shared.redaction) whichever library wrote it."""

from __future__ import annotations

import contextvars
import json
import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from shared.redaction import redact

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


class RedactingFilter(logging.Filter):
    """Rewrites each record's message and traceback without secrets, before any formatter
    sees it (an SDK's exception text may carry a token in a request URL)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = redact(record.getMessage())
        record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True


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
        if record.exc_info and not record.exc_text:
            record.exc_text = redact(self.formatException(record.exc_info))
        if record.exc_text:
            entry["exc"] = record.exc_text
        return json.dumps(entry, default=str)


def configure_logging(service: str, level: str = "INFO", as_json: bool = True) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(RedactingFilter())
    if as_json:
        handler.setFormatter(JsonFormatter(service))
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("urllib3", "httpx", "uvicorn.access", "alembic"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
