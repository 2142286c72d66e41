"""What a handler gets besides its event (session, progress, cancellation) and what it
returns (the task result and the events to emit)."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any, Protocol

from sqlalchemy.orm import Session

from shared import retry as rules
from shared.envelope import Envelope
from shared.events import TaskState
from shared.producer import OutgoingRecord
from shared.tasks import TaskStatusReporter


@dataclass
class HandlerOutcome:
    """What a handler produced: the task result and the events to emit."""

    result: dict[str, Any] | None = None
    events: list[Envelope] = field(default_factory=list)


class InformationalSink(Protocol):
    def send_nowait(self, records: list[OutgoingRecord]) -> None: ...


class HandlerContext:
    """What a handler gets besides the event: its session, progress reporting, cancellation."""

    def __init__(
        self,
        envelope: Envelope,
        session: Session | None,
        reporter: TaskStatusReporter,
        sink: InformationalSink,
        task_name: str | None,
        cancelled: threading.Event | None = None,
    ) -> None:
        self.envelope = envelope
        self.session = session
        self.cancelled = cancelled or threading.Event()
        self._reporter = reporter
        self._sink = sink
        self._task_name = task_name

    def check_cancelled(self) -> None:
        """Raise `Cancelled` once the time limit passed; call between side effects."""
        if self.cancelled.is_set():
            raise rules.Cancelled("handler cancelled (time limit)")

    def progress(self, percent: int, info: dict[str, Any] | None = None) -> None:
        """Publish a PROGRESS transition (not awaited: the task's final status, sent after it
        with the same key, is, and carries the ordering)."""
        self.check_cancelled()
        if self.envelope.taskid and self._task_name:
            self._sink.send_nowait(
                [
                    self._reporter.record(
                        self.envelope.taskid,
                        self._task_name,
                        TaskState.PROGRESS,
                        attempt=self.envelope.attempt,
                        cause=self.envelope,
                        progress=percent,
                        result=info,
                    )
                ]
            )
