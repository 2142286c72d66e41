"""The operator console's API (docs/architecture.md): workers and queues as Kafka knows them, a
task's timeline, bulk revoke and replay by the task search's filters (a confirmation count
first), the overview's graphs from the read model, and the platform accounts under a quota
block."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

import sqlalchemy as sa
from fastapi import APIRouter, Depends, HTTPException, Query, Request, status
from pydantic import BaseModel
from sqlalchemy.orm import Session

from adplatforms.quota import ThrottleTable, remaining_of
from services.gateway.api import DB, IdPath, OutboxDep, committed, get_or_404
from services.gateway.auth import require
from services.gateway.cluster import ClusterUnavailable, KafkaInspector, Queue, Worker
from services.gateway.commands import revoke
from services.gateway.models import DeadLetter, Task
from services.gateway.replay import replay_dead_letter
from services.gateway.schemas import (
    ERROR_RESPONSES,
    BulkOut,
    MinuteOut,
    TaskHistoryOut,
    TransitionOut,
)
from services.gateway.search import TaskSelection
from shared.events import FINAL_STATES, TaskState

router = APIRouter(prefix="/api/v1", responses=ERROR_RESPONSES)
BULK_LIMIT = 10_000
GRAPH_TASKS = 50_000  # tasks read for one graph (the last hour's)


def inspector_of(request: Request) -> KafkaInspector:
    inspector: KafkaInspector = request.app.state.kafka
    return inspector


Inspector = Annotated[KafkaInspector, Depends(inspector_of)]


@router.get("/workers", dependencies=[Depends(require("tasks:read"))])
def list_workers(inspector: Inspector) -> list[Worker]:
    """Each service's consumer-group members (client id, host, assigned partitions), and its
    /readyz answer (ready, failing checks, records in flight per group). A member that stops
    heartbeating leaves its group, and this list, within the session timeout."""
    try:
        return inspector.workers()
    except ClusterUnavailable as exc:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, str(exc)) from exc


@router.get("/queues", dependencies=[Depends(require("tasks:read"))])
def list_queues(inspector: Inspector) -> list[Queue]:
    """Per consumed topic, its retry tiers and dead-letter topic: lag per consumer group and
    partition, records waiting and the age of the oldest of them."""
    try:
        return inspector.queues()
    except ClusterUnavailable as exc:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, str(exc)) from exc


class ThrottleOut(BaseModel):
    """A platform account's latest quota block, as the `platform.throttled` broadcast says."""

    platform: str
    account: str
    until: datetime
    blocked: bool
    remaining_seconds: float
    reason: str


def throttles_of(request: Request) -> ThrottleTable:
    """The gateway's throttle table (filled by its `platform.throttled` listener)."""
    table: ThrottleTable | None = getattr(request.app.state, "throttles", None)
    return table if table is not None else ThrottleTable()


@router.get("/platforms/throttles", dependencies=[Depends(require("tasks:read"))])
def list_throttles(table: Annotated[ThrottleTable, Depends(throttles_of)]) -> list[ThrottleOut]:
    """Every platform account a worker was told to leave alone, newest block first: until
    when, whether the block still holds (every publisher and sync worker defers its calls to
    that account until then), and the platform's words."""
    return [
        ThrottleOut(
            platform=block.platform,
            account=block.account,
            until=datetime.fromtimestamp(block.until, UTC),
            blocked=remaining_of(block) > 0,
            remaining_seconds=remaining_of(block),
            reason=block.reason,
        )
        for block in table.blocks()
    ]


@router.get("/stats/tasks", dependencies=[Depends(require("tasks:read"))])
def task_graphs(
    session: DB, minutes: Annotated[int, Query(ge=1, le=24 * 60)] = 60
) -> list[MinuteOut]:
    """Per minute of the last `minutes`: tasks succeeded, failed and retried, and the
    latency of the publishes that succeeded then (seconds from request to SUCCESS)."""
    now = datetime.now(UTC).replace(second=0, microsecond=0) + timedelta(minutes=1)
    start = now - timedelta(minutes=minutes)
    buckets = {
        start + timedelta(minutes=i): MinuteOut(minute=start + timedelta(minutes=i))
        for i in range(minutes)
    }
    latencies: dict[datetime, list[float]] = {}
    tasks = session.scalars(sa.select(Task).where(Task.updated_at >= start).limit(GRAPH_TASKS))
    for task in tasks:
        for entry in task.history or []:
            at = datetime.fromisoformat(entry["at"])
            bucket = buckets.get(at.replace(second=0, microsecond=0))
            if bucket is None:
                continue
            if entry["state"] == TaskState.SUCCESS.value:
                bucket.succeeded += 1
                if task.name == "campaign.publish":
                    latency = (at - task.created_at).total_seconds()
                    latencies.setdefault(bucket.minute, []).append(latency)
            elif entry["state"] == TaskState.FAILURE.value:
                bucket.failed += 1
            elif entry["state"] == TaskState.RETRY.value:
                bucket.retried += 1
    for minute, values in latencies.items():
        values.sort()
        buckets[minute].publish_latency_p50 = values[len(values) // 2]
        buckets[minute].publish_latency_max = values[-1]
    return list(buckets.values())


@router.get("/tasks/{task_id}/history", dependencies=[Depends(require("tasks:read"))])
def task_history(task_id: IdPath, session: DB) -> TaskHistoryOut:
    """Every transition of a task with its time, attempt, worker, error and duration (seconds
    since the attempt started, on the attempt's end), and the command's args and result."""
    task = get_or_404(session, Task, task_id, "task")
    return TaskHistoryOut(
        task_id=task.id,
        name=task.name,
        state=task.state,
        campaign_id=task.campaign_id,
        correlation_id=task.correlation_id,
        args=task.args or [],
        kwargs=task.kwargs or {},
        options=task.options or {},
        result=task.result,
        error=task.error,
        transitions=transitions(task.history or []),
    )


def transitions(history: list[dict[str, Any]]) -> list[TransitionOut]:
    """The history entries, each attempt's end carrying how long the attempt ran."""
    started: dict[int, datetime] = {}
    out = []
    for entry in history:
        at = datetime.fromisoformat(entry["at"])
        attempt = int(entry.get("attempt") or 0)
        duration = None
        if entry["state"] == TaskState.STARTED.value:
            started[attempt] = at
        elif attempt in started and entry["state"] != TaskState.PROGRESS.value:
            duration = (at - started.pop(attempt)).total_seconds()
        out.append(
            TransitionOut(
                state=entry["state"],
                at=at,
                attempt=attempt,
                worker=entry.get("worker") or ("gateway" if "worker" not in entry else None),
                error=entry.get("error"),
                progress=entry.get("progress"),
                replay=bool(entry.get("replay")),
                duration=duration,
            )
        )
    return out


def _confirmed(selection: TaskSelection, matched: int, action: str) -> bool:
    """Whether to act: False for a dry run; 409 when the confirmation is stale."""
    if selection.confirm is None:
        return False
    if selection.confirm != matched:
        raise HTTPException(
            status.HTTP_409_CONFLICT,
            f"confirm: {selection.confirm} given but {matched} tasks would {action} now; "
            "ask again without confirm",
        )
    return True


def _selected(session: Session, selection: TaskSelection, query: sa.Select[Any]) -> list[Any]:
    rows = list(session.scalars(selection.apply(query).limit(BULK_LIMIT + 1)))
    if len(rows) > BULK_LIMIT:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            f"filters: more than {BULK_LIMIT} tasks match; narrow them",
        )
    return rows


@router.post("/tasks/revoke", dependencies=[Depends(require("tasks:write"))])
def bulk_revoke(
    selection: TaskSelection, session: DB, outbox: OutboxDep, request: Request
) -> BulkOut:
    """Revoke every task matching the filters that is not final yet. Without `confirm`: only
    the count; with `confirm` equal to it: revoked (409 if the count changed meanwhile)."""
    unfinished = [s.value for s in TaskState if s not in FINAL_STATES]
    query = sa.select(Task).where(Task.state.in_(unfinished)).with_for_update()
    tasks = _selected(session, selection, query)
    if not _confirmed(selection, len(tasks), "be revoked"):
        return BulkOut(matched=len(tasks), done=0, task_ids=[t.id for t in tasks[:100]])
    changed = [task for task in tasks if revoke(session, outbox, task)]
    committed(session, request, *changed)
    return BulkOut(matched=len(tasks), done=len(tasks), task_ids=[t.id for t in tasks[:100]])


@router.post(
    "/tasks/replay", dependencies=[Depends(require("tasks:write")), Depends(require("dlq:write"))]
)
def bulk_replay(
    selection: TaskSelection, session: DB, outbox: OutboxDep, request: Request
) -> BulkOut:
    """Replay the dead letters (not yet replayed) of every task matching the filters, except
    tasks that have succeeded since. Dry run and confirmation as for revoke."""
    query = (
        sa.select(DeadLetter)
        .join(Task, Task.id == DeadLetter.task_id)
        .where(DeadLetter.replayed_at.is_(None), Task.state != TaskState.SUCCESS.value)
        .order_by(DeadLetter.dead_at)
        .with_for_update()
    )
    letters = _selected(session, selection, query)
    ids = [d.task_id for d in letters[:100]]
    if not _confirmed(selection, len(letters), "be replayed"):
        return BulkOut(matched=len(letters), done=0, task_ids=ids)
    changed = {}
    for dead in letters:
        task = replay_dead_letter(session, outbox, dead)
        if task is not None:
            changed[task.id] = task
    committed(session, request, *changed.values())
    return BulkOut(matched=len(letters), done=len(letters), task_ids=ids)
