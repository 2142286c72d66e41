"""Task bookkeeping shared by workers: publishing `task.status` transitions and knowing which
tasks were revoked (learned from the compacted `task.revoked` topic)."""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from typing import Any

from shared.envelope import Envelope, new_event
from shared.events import ErrorInfo, TaskRevoked, TaskState, TaskStatus
from shared.producer import OutgoingRecord
from shared.topics import TopicNames


class TaskStatusReporter:
    """Builds `task.status` records (keyed by task id)."""

    def __init__(self, names: TopicNames, source: str) -> None:
        self._names = names
        self._source = source

    def record(
        self,
        task_id: str,
        name: str,
        state: TaskState,
        *,
        attempt: int = 1,
        cause: Envelope | None = None,
        progress: int | None = None,
        result: dict[str, Any] | None = None,
        error: ErrorInfo | None = None,
        next_attempt_at: datetime | None = None,
    ) -> OutgoingRecord:
        """The outgoing record of one transition (sent by the caller, possibly in a batch)."""
        status = TaskStatus(
            task_id=task_id,
            name=name,
            state=state,
            attempt=attempt,
            progress=progress,
            result=result,
            error=error,
            next_attempt_at=next_attempt_at,
            at=datetime.now(UTC),
        )
        envelope = new_event(
            status,
            source=self._source,
            subject=task_id,
            taskid=task_id,
            correlationid=cause.correlationid if cause else None,
            causationid=cause.id if cause else None,
            attempt=attempt,
        )
        return OutgoingRecord.of(self._names.topic("task.status"), envelope)


class RevocationRegistry:
    """The set of revoked task ids, filled from `task.revoked` by a broadcast consumer."""

    def __init__(self) -> None:
        self._revoked: set[str] = set()
        self._lock = threading.Lock()
        self.caught_up = threading.Event()

    def add(self, task_id: str) -> None:
        with self._lock:
            self._revoked.add(task_id)

    def is_revoked(self, task_id: str | None) -> bool:
        if not task_id:
            return False
        with self._lock:
            return task_id in self._revoked

    def handle(self, envelope: Envelope, payload: TaskRevoked, _ctx: object) -> None:
        self.add(payload.task_id)
