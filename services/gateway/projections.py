"""The gateway's read model: what each status or domain event changes in its tables.

Handlers write through the consumer runtime's session, so each projection commits together
with the event's tracking row (a redelivered event is not applied twice); the task-status
projection, the hottest, is idempotent by content instead and keeps no tracking row.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Self, cast

import sqlalchemy as sa
from sqlalchemy.orm import Session

from services.gateway.commands import release_campaign
from services.gateway.live import shown_attempts, supersedes
from services.gateway.models import (
    Campaign,
    CandidateSegment,
    DeadLetter,
    ScheduleView,
    SegmentationModel,
    Task,
)
from shared import retry as rules
from shared.db import Database
from shared.envelope import Envelope, MalformedEvent, from_kafka
from shared.events import (
    CampaignMetricsUpdated,
    CampaignPublished,
    CampaignPublishFailed,
    CampaignStatusChanged,
    CandidateSegmented,
    ModelTrained,
    ScheduleStateChanged,
    TaskState,
    TaskStatus,
)
from shared.runtime import ConsumedRecord, HandlerContext

HISTORY_LIMIT = 100


def _session(ctx: HandlerContext) -> Session:
    assert ctx.session is not None, "gateway projections run with a database session"
    return ctx.session


def schedule_state(envelope: Envelope, state: ScheduleStateChanged, ctx: HandlerContext) -> None:
    """`schedule.state` -> the schedule's `schedule_views` row (a newer announcement wins)."""
    session = _session(ctx)
    view = session.get(ScheduleView, state.schedule, with_for_update=True)
    if view is None:
        view = ScheduleView(schedule=state.schedule, changed_at=state.at)
        session.add(view)
    elif view.changed_at > state.at:
        return
    view.paused, view.last_slot, view.last_task_id = (
        state.paused,
        state.last_slot,
        state.last_task_id,
    )
    view.changed_at = state.at


_TASKS = cast(sa.Table, Task.__table__)
# What a status may change besides `attempts` and `history`; every update writes them all (one
# statement, compiled once), unchanged ones with the row's own values.
_PROJECTED = ("state", "progress", "result", "error", "next_attempt_at", "updated_at")
# Built once: the projection runs for every status of every task.
_CURRENT_OF_TASK = (
    sa.select(*(_TASKS.c[name] for name in ("attempts", "history", *_PROJECTED)))
    .where(_TASKS.c.id == sa.bindparam("task_id"))
    .with_for_update()
)
_UPDATE_TASK = (
    sa.update(_TASKS)
    .where(_TASKS.c.id == sa.bindparam("task_id"))
    .values({name: sa.bindparam(name) for name in ("attempts", "history", *_PROJECTED)})
)


def project_task_status(envelope: Envelope, status: TaskStatus, ctx: HandlerContext) -> None:
    """`task.status` -> the `tasks` row (live subscribers hear of it from `LiveTasks`).
    Idempotent (registered so, with no tracking row): a transition the row's history already
    holds (same state, time and attempt) changes nothing. Written with Core statements, not
    the ORM's unit of work, and through `TaskRowWrites`: a task's statuses in one transaction
    (a short task's STARTED and SUCCESS travel in one batch) cost one read and one write."""
    session = _session(ctx)
    rows = TaskRowWrites.of(session)
    current = rows.current(session, status.task_id)
    if current is not None and (
        not supersedes(
            TaskState(current["state"]), current["attempts"] or 0, status.state, status.attempt
        )
        or _recorded(current["history"] or [], status)
    ):
        return
    changes: dict[str, Any] = dict.fromkeys(_PROJECTED)
    if current is not None:
        changes.update(current)
    entry = {
        "state": status.state.value,
        "at": status.at.isoformat(),
        "attempt": status.attempt,
        "worker": envelope.source.removeprefix("adflux/"),
    }
    changes |= {
        "state": status.state.value,
        "attempts": shown_attempts(status.state, status.attempt, changes.get("attempts") or 0),
        "next_attempt_at": status.next_attempt_at,
        "updated_at": datetime.now(UTC),
    }
    if status.progress is not None:
        changes["progress"] = entry["progress"] = status.progress
    if status.result is not None or status.state is TaskState.SUCCESS:
        changes["result"] = status.result
    if status.error is not None:
        changes["error"] = status.error.model_dump(mode="json")
        entry["error"] = status.error.message
    changes["history"] = [*(changes.get("history") or []), entry][-HISTORY_LIMIT:]
    if current is None:  # a task started elsewhere (the ticker) appears on its first status
        kwargs = status.kwargs or {}
        rows.insert(
            status.task_id,
            {
                "name": status.name,
                "args": status.args or [],
                "kwargs": kwargs,
                "options": {},
                "campaign_id": _text(kwargs.get("campaign_id")),
                "correlation_id": envelope.correlationid,
                "created_at": status.at,
            },
            changes,
        )
    else:
        rows.update(status.task_id, changes)
    if status.state in (TaskState.REVOKED, TaskState.EXPIRED):
        rows.apply_pending(session)
        task = session.get(Task, status.task_id, populate_existing=True)
        if task is not None:
            release_campaign(session, task, status.at)


class TransactionWrites:
    """Writes a projection buffers in one transaction and applies in bulk just before the
    session commits (or earlier, through `apply_pending`, when the transaction is about to
    read what they change); a rollback discards them. Subclasses say what they hold and how
    it is written (`_write`)."""

    _KEY = "adflux.writes"

    @classmethod
    def of(cls, session: Session) -> Self:
        writes: Self | None = session.info.get(cls._KEY)
        if writes is None:
            writes = session.info[cls._KEY] = cls()
            if not session.info.get(f"{cls._KEY}.hooked"):
                session.info[f"{cls._KEY}.hooked"] = True
                sa.event.listen(session, "before_commit", cls.apply_pending)
                sa.event.listen(session, "after_rollback", cls._discard)
        return writes

    @classmethod
    def apply_pending(cls, session: Session) -> None:
        writes: Self | None = session.info.pop(cls._KEY, None)
        if writes is not None:
            writes._write(session)

    @classmethod
    def _discard(cls, session: Session) -> None:
        session.info.pop(cls._KEY, None)

    def _write(self, session: Session) -> None:
        raise NotImplementedError


class TaskRowWrites(TransactionWrites):
    """The `tasks` rows the statuses of one transaction change, by task: each row read once,
    the changed ones written in one UPDATE (and one INSERT for tasks first seen) per commit."""

    _KEY = "adflux.task_rows"

    def __init__(self) -> None:
        self._rows: dict[str, dict[str, Any]] = {}  # task id -> attempts, history, _PROJECTED
        self._new: dict[str, dict[str, Any]] = {}  # task id -> the other columns of a new row
        self._changed: set[str] = set()

    def current(self, session: Session, task_id: str) -> dict[str, Any] | None:
        """The row's projected columns as this transaction has them (None: no such task)."""
        if task_id not in self._rows:
            row = session.execute(_CURRENT_OF_TASK, {"task_id": task_id}).first()
            if row is None:
                return None
            self._rows[task_id] = dict(row._mapping)
        return self._rows[task_id]

    def update(self, task_id: str, changes: dict[str, Any]) -> None:
        self._rows[task_id] = changes
        self._changed.add(task_id)

    def insert(self, task_id: str, columns: dict[str, Any], changes: dict[str, Any]) -> None:
        self._new[task_id] = columns
        self.update(task_id, changes)

    def _write(self, session: Session) -> None:
        inserted = [
            {"id": task_id, **columns, **self._rows[task_id]}
            for task_id, columns in self._new.items()
        ]
        updated = [
            {"task_id": task_id, **self._rows[task_id]}
            for task_id in self._changed
            if task_id not in self._new
        ]
        if inserted:
            session.execute(sa.insert(_TASKS), inserted)
        if updated:
            session.execute(_UPDATE_TASK, updated)


def _recorded(history: list[dict[str, Any]], status: TaskStatus) -> bool:
    """Whether the history holds this transition already (a redelivered status event)."""
    at = status.at.isoformat()
    return any(
        e.get("state") == status.state.value
        and e.get("at") == at
        and e.get("attempt") == status.attempt
        for e in history
    )


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


class CampaignProjection:
    """Domain events -> the `campaigns` row (status, external ids, metrics).

    Status changes and metrics, which sync emits for every campaign at once, are buffered per
    transaction (`CampaignWrites`) and written in bulk just before it commits; group commit
    hands a whole poll batch of them to one transaction."""

    def published(self, envelope: Envelope, event: CampaignPublished, ctx: HandlerContext) -> None:
        session = _session(ctx)
        CampaignWrites.apply_pending(session)  # buffered earlier events land first
        campaign = session.get(Campaign, event.campaign_id)
        if campaign is not None:
            campaign.status = "active"
            campaign.external_ids = dict(event.external_ids)
            campaign.last_error = None
            campaign.updated_at = datetime.now(UTC)

    def publish_failed(
        self, envelope: Envelope, event: CampaignPublishFailed, ctx: HandlerContext
    ) -> None:
        session = _session(ctx)
        CampaignWrites.apply_pending(session)
        campaign = session.get(Campaign, event.campaign_id)
        if campaign is not None and campaign.status == "publishing":
            campaign.status = "failed"
            campaign.last_error = event.error.model_dump(mode="json")
            campaign.updated_at = datetime.now(UTC)

    def status_changed(
        self, envelope: Envelope, event: CampaignStatusChanged, ctx: HandlerContext
    ) -> None:
        session = _session(ctx)
        campaign_id = _campaign_id(session, event.campaign_id, event.platform, event.external_id)
        if campaign_id is not None:
            CampaignWrites.of(session).statuses[campaign_id] = event.status

    def metrics_updated(
        self, envelope: Envelope, event: CampaignMetricsUpdated, ctx: HandlerContext
    ) -> None:
        session = _session(ctx)
        campaign_id = _campaign_id(session, event.campaign_id, event.platform, event.external_id)
        if campaign_id is not None:
            CampaignWrites.of(session).metrics[campaign_id] = event.model_dump(
                mode="json", include={"impressions", "clicks", "spend", "conversions", "as_of"}
            )


_CAMPAIGNS = cast(sa.Table, Campaign.__table__)
# One statement each, run with every buffered row's parameters (executemany). A status
# change leaves a draft or a campaign being published alone, as the publish flow owns those.
_SET_STATUS = (
    sa.update(_CAMPAIGNS)
    .where(
        _CAMPAIGNS.c.id == sa.bindparam("row_id"),
        # Two comparisons, not NOT IN: an expanding IN cannot run as an executemany.
        _CAMPAIGNS.c.status != "draft",
        _CAMPAIGNS.c.status != "publishing",
    )
    .values(status=sa.bindparam("new_status"), updated_at=sa.bindparam("at"))
)
_SET_METRICS = (
    sa.update(_CAMPAIGNS)
    .where(_CAMPAIGNS.c.id == sa.bindparam("row_id"))
    .values(metrics=sa.bindparam("new_metrics"), updated_at=sa.bindparam("at"))
)


class CampaignWrites(TransactionWrites):
    """The campaign status and metrics writes of one transaction, by campaign (the last event
    wins), applied in two bulk statements before the session commits (or earlier, through
    `apply_pending`, when a row-by-row projection is about to touch campaigns)."""

    _KEY = "adflux.campaign_writes"

    def __init__(self) -> None:
        self.statuses: dict[str, str] = {}
        self.metrics: dict[str, dict[str, Any]] = {}

    def _write(self, session: Session) -> None:
        session.flush()  # rows changed one by one earlier in the transaction come first
        now = datetime.now(UTC)
        if self.statuses:
            session.execute(
                _SET_STATUS,
                [
                    {"row_id": campaign_id, "new_status": status, "at": now}
                    for campaign_id, status in self.statuses.items()
                ],
            )
        if self.metrics:
            session.execute(
                _SET_METRICS,
                [
                    {"row_id": campaign_id, "new_metrics": metrics, "at": now}
                    for campaign_id, metrics in self.metrics.items()
                ],
            )


def _campaign_id(
    session: Session, campaign_id: str | None, platform: str, external_id: str
) -> str | None:
    """The campaign an event is about: its id when it carries one (sync's always do), else the
    campaign whose platform id it names."""
    if campaign_id:
        return campaign_id
    for campaign in session.scalars(sa.select(Campaign).where(Campaign.platform == platform)):
        if (campaign.external_ids or {}).get("campaign") == external_id:
            return campaign.id
    return None


class SegmentProjection:
    """ML events -> `segmentation_models` and `candidate_segments`."""

    def model_trained(self, envelope: Envelope, event: ModelTrained, ctx: HandlerContext) -> None:
        session = _session(ctx)
        if session.get(SegmentationModel, event.model_version) is None:
            session.add(
                SegmentationModel(
                    version=event.model_version,
                    n_clusters=event.n_clusters,
                    n_samples=event.n_samples,
                    metrics=dict(event.metrics),
                    trained_at=event.trained_at,
                )
            )

    def segmented(self, envelope: Envelope, event: CandidateSegmented, ctx: HandlerContext) -> None:
        session = _session(ctx)
        row = session.get(CandidateSegment, event.candidate_id)
        if row is None:
            row = CandidateSegment(candidate_id=event.candidate_id)
            session.add(row)
        row.segment = event.segment
        row.model_version = event.model_version
        row.updated_at = datetime.now(UTC)


class DeadLetterRecorder:
    """Raw records of every dead-letter topic -> `dead_letters` (listed and replayed by the API)."""

    def __init__(self, db: Database, logical_of: Any) -> None:
        self.db = db
        self.logical_of = logical_of

    def __call__(self, record: ConsumedRecord) -> None:
        headers = record.header_map()

        def text(name: str) -> str | None:
            raw = headers.get(name)
            return raw.decode(errors="replace") if raw is not None else None

        def number(name: str) -> int | None:
            raw = text(name)
            return int(raw) if raw is not None and raw.lstrip("-").isdigit() else None

        event_type = event_id = task_id = None
        try:
            envelope = from_kafka(record.key, record.value, record.headers)
            event_type, event_id, task_id = envelope.type, envelope.id, envelope.taskid
        except MalformedEvent:
            event_type = text("ce_type")
        dead_id = f"{record.topic}:{record.partition}:{record.offset}"
        with self.db.session() as session:
            if session.get(DeadLetter, dead_id) is not None:
                return
            session.add(
                DeadLetter(
                    id=dead_id,
                    dlq_topic=record.topic,
                    original_topic=text(rules.H_ORIGINAL_TOPIC) or self.logical_of(record.topic),
                    original_partition=number(rules.H_ORIGINAL_PARTITION),
                    original_offset=number(rules.H_ORIGINAL_OFFSET),
                    event_type=event_type,
                    event_id=event_id,
                    task_id=task_id,
                    consumer_group=text(rules.H_CONSUMER_GROUP),
                    reason=text(rules.H_REASON),
                    error_class=text(rules.H_ERROR_CLASS),
                    error_message=text(rules.H_ERROR_MESSAGE),
                    attempts=number(rules.H_ATTEMPT) or 1,
                    key=record.key,
                    value=record.value,
                    headers=[[k, v.decode("latin-1")] for k, v in record.headers],
                    dead_at=datetime.fromtimestamp(record.timestamp_ms / 1000, UTC)
                    if record.timestamp_ms > 0
                    else datetime.now(UTC),
                )
            )
