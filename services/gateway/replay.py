"""Replaying a dead letter: the original record goes back to its original topic with the same
event and task ids, attempts reset, hop headers dropped, through the outbox."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy.orm import Session

from services.gateway.models import DeadLetter, Task
from shared import retry as rules
from shared.events import TaskState
from shared.outbox import Outbox
from shared.producer import OutgoingRecord

DROPPED = set(rules.HOP_HEADERS) | set(rules.ORIGIN_HEADERS)


class ReplayPointless(ValueError):
    """The dead letter's task has succeeded since (an earlier replay ran): its workers would
    drop the record as a duplicate, so a replay would only move a SUCCESS back to PENDING."""


def replay_dead_letter(session: Session, outbox: Outbox, dead: DeadLetter) -> Task | None:
    """Replay `dead`; its task (PENDING again, with a `replay` history entry), if known."""
    task = session.get(Task, dead.task_id, with_for_update=True) if dead.task_id else None
    if task is not None and task.state == TaskState.SUCCESS.value:
        raise ReplayPointless(
            f"task {task.id} has succeeded since it was dead-lettered; nothing to replay"
        )
    headers = [(k, v.encode("latin-1")) for k, v in dead.headers if k not in DROPPED]
    headers.append((rules.H_ATTEMPT, b"1"))
    outbox.add_records(
        session, [OutgoingRecord(dead.original_topic, dead.key, dead.value, headers)]
    )
    now = datetime.now(UTC)
    dead.replayed_at = now
    dead.replay_count = (dead.replay_count or 0) + 1
    if task is not None:
        task.state = TaskState.PENDING.value
        task.attempts = 0
        task.error = None
        task.history = [
            *(task.history or []),
            {"state": "PENDING", "at": now.isoformat(), "attempt": 0, "replay": True},
        ]
        task.updated_at = now
    return task
