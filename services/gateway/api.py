"""The gateway's HTTP routes under /api/v1 (docs/architecture.md). Every route needs a bearer token
with its scope; every parameter is bounded, so bad input is a 4xx, never a 500."""

from __future__ import annotations

import asyncio
import uuid
from typing import Annotated, Any, Literal, TypeVar

import sqlalchemy as sa
from fastapi import (
    APIRouter,
    Depends,
    HTTPException,
    Path,
    Query,
    Request,
    Response,
    WebSocket,
    WebSocketDisconnect,
    status,
)
from fastapi.security import HTTPAuthorizationCredentials
from sqlalchemy.orm import Session

from services.gateway.auth import bearer, bearer_scopes, require, require_task_scope
from services.gateway.commands import (
    CommandConflict,
    CommandRejected,
    CommandTooLarge,
    options_from,
    revoke,
    start_publish,
)
from services.gateway.live import overlaid, task_update
from services.gateway.models import (
    Campaign,
    CandidateSegment,
    DeadLetter,
    Job,
    SegmentationModel,
    Task,
)
from services.gateway.replay import ReplayPointless, replay_dead_letter
from services.gateway.schemas import (
    ERROR_RESPONSES,
    ID_PATTERN,
    CampaignIn,
    CampaignOut,
    DeadLetterOut,
    JobIn,
    PublishIn,
    RefusedRecordOut,
    TaskIn,
    TaskOptionsIn,
    TaskOut,
    TicketOut,
)
from services.gateway.search import (
    BadCursor,
    TaskFilter,
    after_cursor,
    newest_first,
    next_cursor,
)
from shared.events import FINAL_STATES, MAX_ID_LENGTH, TaskState
from shared.outbox import Outbox, RecordTooLarge

router = APIRouter(prefix="/api/v1", responses=ERROR_RESPONSES)

# Path and query parameters: bounded, and free of what no database stores (NUL, controls).
IdPath = Annotated[str, Path(min_length=1, max_length=MAX_ID_LENGTH, pattern=ID_PATTERN)]
NamePath = Annotated[str, Path(min_length=1, max_length=100, pattern=ID_PATTERN)]
DeadLetterPath = Annotated[str, Path(min_length=1, max_length=300, pattern=ID_PATTERN)]
CandidatePath = Annotated[
    str, Path(min_length=1, max_length=MAX_ID_LENGTH, pattern=r"^[^\x00-\x1f\x7f]+$")
]
FilterQuery = Annotated[str | None, Query(min_length=1, max_length=250, pattern=ID_PATTERN)]
Limit = Annotated[int, Query(ge=1, le=1000)]
NEXT_CURSOR = "X-Next-Cursor"
JSON = "application/json"


def db_session(request: Request) -> Any:
    with request.app.state.db.session() as session:
        yield session


def committed(session: Session, request: Request, *changed: Task) -> None:
    """Commit a command now, not after the response is built: the write lock (SQLite) is
    held for as short a time as possible, and the events it added are produced at once
    (`Outbox.commit`). The transitions the gateway made itself (`changed` tasks) then go to
    live subscribers."""
    request.app.state.outbox.commit(session)
    for task in changed:
        request.app.state.hub.publish(task_update(task, task.updated_at))


async def outbox_of(request: Request) -> Outbox:
    # Async: a sync dependency costs every request a hop to the thread pool.
    outbox: Outbox = request.app.state.outbox
    return outbox


DB = Annotated[Session, Depends(db_session, scope="function")]
OutboxDep = Annotated[Outbox, Depends(outbox_of)]


M = TypeVar("M")


def get_or_404(session: Session, model: type[M], key: str, what: str, *, lock: bool = False) -> M:
    """The row with this key, or a 404 naming what was not found."""
    row = session.get(model, key, with_for_update=lock)
    if row is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"{what} {key} not found")
    return row


def refusal(exc: CommandRejected) -> HTTPException:
    """The HTTP answer to a command that cannot be issued."""
    if isinstance(exc, CommandConflict):
        return HTTPException(status.HTTP_409_CONFLICT, str(exc))
    if isinstance(exc, CommandTooLarge):
        return HTTPException(status.HTTP_413_CONTENT_TOO_LARGE, str(exc))
    return HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(exc))


def _options(body: TaskOptionsIn) -> Any:
    try:
        return options_from(
            countdown=body.countdown,
            eta=body.eta,
            expires=body.expires,
            max_retries=body.max_retries,
            retry_delay=body.retry_delay,
            time_limit=body.time_limit,
        )
    except CommandRejected as exc:
        raise refusal(exc) from exc


def _task_out(task: Task) -> TaskOut:
    return TaskOut(
        task_id=task.id,
        name=task.name,
        state=task.state,
        attempts=task.attempts,
        progress=task.progress,
        result=task.result,
        error=task.error,
        next_attempt_at=task.next_attempt_at,
        campaign_id=task.campaign_id,
        correlation_id=task.correlation_id,
        created_at=task.created_at,
        updated_at=task.updated_at,
        history=task.history or [],
    )


def _campaign_out(c: Campaign) -> CampaignOut:
    return CampaignOut.model_validate(c, from_attributes=True)


# --- tasks (first: routes are matched in the order they are declared, and these are the
# hottest, polled by every client waiting on a task) -----------------------------------------
TaskWriter = Annotated[frozenset[str], Depends(require("tasks:write"))]


@router.post("/tasks", status_code=202)
async def run_task(body: TaskIn, request: Request, scopes: TaskWriter) -> dict[str, str]:
    """Run a task by name. Besides tasks:write, the token needs the scope of the resource the
    task acts on (campaigns:write for campaign.*, metrics.*; ml:write for ml.*), and the task
    meets the same preconditions as that resource's endpoint (409 for a campaign.publish of
    a campaign that is not a draft)."""
    # The hottest write route: recorded by the task intake, group-committed on its own
    # thread (no thread-pool hop, and the event loop never waits on the database).
    require_task_scope(body.name, scopes)
    options = _options(body)
    try:
        task = await request.app.state.intake.issue(
            body.name, args=body.args, kwargs=body.kwargs, options=options
        )
    except CommandRejected as exc:
        raise refusal(exc) from exc
    return {"task_id": task.id}


@router.get(
    "/tasks",
    dependencies=[Depends(require("tasks:read"))],
    responses={
        200: {
            "headers": {
                NEXT_CURSOR: {
                    "description": "Pass as `cursor` for the next page; absent on the last page",
                    "schema": {"type": "string"},
                }
            }
        }
    },
)
def list_tasks(
    session: DB,
    response: Response,
    filters: Annotated[TaskFilter, Query()],
    cursor: Annotated[str | None, Query(min_length=1, max_length=200)] = None,
    limit: Limit = 100,
) -> list[TaskOut]:
    """Tasks matching every given filter, most recently updated first, `limit` per page."""
    query = newest_first(filters.apply(sa.select(Task)))
    if cursor:
        try:
            query = after_cursor(query, cursor)
        except BadCursor as exc:
            raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(exc)) from exc
    page = list(session.scalars(query.limit(limit + 1)))
    if len(page) > limit:
        page = page[:limit]
        response.headers[NEXT_CURSOR] = next_cursor(page[-1])
    return [_task_out(t) for t in page]


_TASKS = Task.__table__.c
# Built once: polled by every client waiting on a task. TaskOut's fields, by name.
_TASK_VIEW = sa.select(
    _TASKS.id.label("task_id"),
    *(_TASKS[field] for field in TaskOut.model_fields if field != "task_id"),
).where(_TASKS.id == sa.bindparam("task_id"))


@router.get(
    "/tasks/{task_id}", dependencies=[Depends(require("tasks:read"))], response_model=TaskOut
)
async def get_task(task_id: IdPath, request: Request) -> Response:
    # Polled by every client waiting on a task: one prebuilt primary-key read on a bare
    # connection, done on the event loop (no thread-pool hop; a read never waits for SQLite's
    # writer), and the row serialized once, by TaskOut's own serializer.
    with request.app.state.db.engine.connect() as connection:
        row = connection.execute(_TASK_VIEW, {"task_id": task_id}).first()
    if row is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"task {task_id} not found")
    view = dict(row._mapping)
    view["history"] = view["history"] or []
    view = overlaid(view, request.app.state.live.transitions(task_id))
    return Response(TaskOut.model_construct(**view).model_dump_json(), media_type=JSON)


@router.post(
    "/tasks/{task_id}/revoke", status_code=202, dependencies=[Depends(require("tasks:write"))]
)
def revoke_task(
    task_id: IdPath, session: DB, outbox: OutboxDep, request: Request
) -> dict[str, str]:
    task = get_or_404(session, Task, task_id, "task", lock=True)
    if TaskState(task.state) in FINAL_STATES:
        raise HTTPException(status.HTTP_409_CONFLICT, f"task is already {task.state}")
    if revoke(session, outbox, task):
        committed(session, request, task)
    else:
        committed(session, request)
    return {"task_id": task_id, "state": task.state}


@router.post("/tickets", status_code=201)
def issue_ticket(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> TicketOut:
    """A short-lived, single-use ticket for `WS /tasks/stream?ticket=...`, carrying this
    token's scopes: browsers cannot set the WebSocket's headers, and a long-lived token must
    never be put in a URL."""
    scopes = bearer_scopes(request, credentials)
    ttl = float(request.app.state.settings.ticket_ttl)
    return TicketOut(ticket=request.app.state.tokens.tickets.issue(scopes, ttl), expires_in=ttl)


@router.websocket("/tasks/stream")
async def task_stream(websocket: WebSocket) -> None:
    """Every task transition as `{task_id, state, progress, result}`. Authenticated by the
    Authorization header, or by a ticket from POST /tickets in the `ticket` query parameter."""
    registry = websocket.app.state.tokens
    header = websocket.headers.get("authorization", "")
    if header:
        scheme, _, token = header.partition(" ")
        scopes = registry.scopes_of(token.strip()) if scheme.lower() == "bearer" else None
    else:
        scopes = registry.tickets.redeem(websocket.query_params.get("ticket"))
    await websocket.accept()
    if scopes is None or "tasks:read" not in scopes:
        # Accepted first so the client sees why: 4401 unauthenticated, 4403 missing scope.
        await websocket.close(code=4401 if scopes is None else 4403)
        return
    hub = websocket.app.state.hub
    queue = hub.subscribe()
    try:
        while True:
            update = await queue.get()
            await websocket.send_json(update)
    except (WebSocketDisconnect, asyncio.CancelledError, RuntimeError):
        pass
    finally:
        hub.unsubscribe(queue)


# --- jobs and campaigns ---------------------------------------------------------------------
@router.post("/jobs", status_code=201, dependencies=[Depends(require("jobs:write"))])
def create_job(body: JobIn, session: DB) -> dict[str, str]:
    job = Job(id=str(uuid.uuid4()), **body.model_dump(mode="json"))
    session.add(job)
    return {"id": job.id}


@router.post("/campaigns", status_code=201, dependencies=[Depends(require("campaigns:write"))])
def create_campaign(body: CampaignIn, session: DB) -> dict[str, str]:
    if session.get(Job, body.job_id) is None:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT, f"job_id: job {body.job_id} does not exist"
        )
    campaign = Campaign(id=str(uuid.uuid4()), status="draft", external_ids={}, **body.model_dump())
    session.add(campaign)
    return {"id": campaign.id, "status": campaign.status}


@router.get("/campaigns", dependencies=[Depends(require("campaigns:read"))])
def list_campaigns(
    session: DB,
    status_: Annotated[
        str | None, Query(alias="status", min_length=1, max_length=16, pattern=r"^[a-z_]+$")
    ] = None,
    platform: Literal["meta", "google"] | None = None,
    limit: Limit = 100,
) -> list[CampaignOut]:
    query = sa.select(Campaign).order_by(Campaign.created_at.desc()).limit(limit)
    if status_:
        query = query.where(Campaign.status == status_)
    if platform:
        query = query.where(Campaign.platform == platform)
    return [_campaign_out(c) for c in session.scalars(query)]


@router.get("/campaigns/{campaign_id}", dependencies=[Depends(require("campaigns:read"))])
def get_campaign(campaign_id: IdPath, session: DB) -> CampaignOut:
    campaign = get_or_404(session, Campaign, campaign_id, "campaign")
    return _campaign_out(campaign)


@router.post(
    "/campaigns/{campaign_id}/publish",
    status_code=202,
    dependencies=[Depends(require("campaigns:write"))],
)
def publish_campaign(
    campaign_id: IdPath,
    session: DB,
    outbox: OutboxDep,
    request: Request,
    body: PublishIn | None = None,
) -> dict[str, str]:
    campaign = get_or_404(session, Campaign, campaign_id, "campaign", lock=True)
    options = _options(body or PublishIn())
    try:
        task = start_publish(session, outbox, campaign, options)
    except CommandRejected as exc:
        raise refusal(exc) from exc
    committed(session, request, task)
    return {"task_id": task.id}


# --- dead letters -----------------------------------------------------------------------------
@router.get("/dead-letters", dependencies=[Depends(require("dlq:read"))])
def list_dead_letters(
    session: DB,
    topic: FilterQuery = None,
    include_replayed: bool = False,
    limit: Limit = 100,
) -> list[DeadLetterOut]:
    query = sa.select(DeadLetter).order_by(DeadLetter.dead_at.desc()).limit(limit)
    if topic:
        query = query.where(DeadLetter.original_topic == topic)
    if not include_replayed:
        query = query.where(DeadLetter.replayed_at.is_(None))
    return [DeadLetterOut.model_validate(d, from_attributes=True) for d in session.scalars(query)]


@router.post(
    "/dead-letters/{dead_letter_id}/replay",
    status_code=202,
    dependencies=[Depends(require("dlq:write"))],
)
def replay(
    dead_letter_id: DeadLetterPath,
    session: DB,
    outbox: OutboxDep,
    request: Request,
    force: Annotated[bool, Query(description="Replay again one already replayed.")] = False,
) -> dict[str, Any]:
    """Send a dead letter back to its topic, once: 409 if it was replayed already, unless
    `force`."""
    dead = get_or_404(session, DeadLetter, dead_letter_id, "dead letter", lock=True)
    if dead.replayed_at is not None and not force:
        raise HTTPException(
            status.HTTP_409_CONFLICT,
            f"dead letter was replayed {dead.replay_count} time(s), last at "
            f"{dead.replayed_at.isoformat()}; pass force=true to replay it again",
        )
    try:
        task = replay_dead_letter(session, outbox, dead)
    except ReplayPointless as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from exc
    except RecordTooLarge as exc:
        raise HTTPException(status.HTTP_413_CONTENT_TOO_LARGE, str(exc)) from exc
    committed(session, request, *([task] if task is not None else []))
    return {"id": dead.id, "replayed_to": dead.original_topic, "task_id": dead.task_id}


# --- the outbox --------------------------------------------------------------------------------
@router.get("/outbox/refused", dependencies=[Depends(require("dlq:read"))])
def list_refused_records(
    session: DB, outbox: OutboxDep, limit: Limit = 100
) -> list[RefusedRecordOut]:
    """Commands the broker refused for good (e.g. too large), set aside so that later ones
    keep flowing; their tasks ended FAILURE with the reason."""
    return [
        RefusedRecordOut(
            id=row.id,
            topic=row.topic,
            event_type=row.event_type,
            task_id=row.task_id,
            size=row.size,
            reason=row.reason,
            created_at=row.created_at,
            refused_at=row.refused_at,
        )
        for row in outbox.refused(session, limit)
    ]


# --- segmentation (candidates arrive through services/gateway/candidates.py) --------------------
@router.get("/segments", dependencies=[Depends(require("ml:read"))])
def list_segments(session: DB) -> list[dict[str, Any]]:
    rows = session.execute(
        sa.select(CandidateSegment.segment, CandidateSegment.model_version, sa.func.count())
        .group_by(CandidateSegment.segment, CandidateSegment.model_version)
        .order_by(CandidateSegment.segment)
    ).all()
    return [{"segment": s, "model_version": v, "candidates": n} for s, v, n in rows]


@router.get("/segments/{candidate_id}", dependencies=[Depends(require("ml:read"))])
def candidate_segment(candidate_id: CandidatePath, session: DB) -> dict[str, Any]:
    row = session.get(CandidateSegment, candidate_id)
    if row is None:
        raise HTTPException(
            status.HTTP_404_NOT_FOUND, f"candidate {candidate_id} has no segment yet"
        )
    return {
        "candidate_id": row.candidate_id,
        "segment": row.segment,
        "model_version": row.model_version,
    }


@router.get("/models", dependencies=[Depends(require("ml:read"))])
def list_models(session: DB) -> list[dict[str, Any]]:
    models = session.scalars(
        sa.select(SegmentationModel).order_by(SegmentationModel.trained_at.desc())
    )
    return [
        {
            "version": m.version,
            "n_clusters": m.n_clusters,
            "n_samples": m.n_samples,
            "metrics": m.metrics,
            "trained_at": m.trained_at,
        }
        for m in models
    ]
