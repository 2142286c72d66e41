"""Candidates in bulk: the gateway's intake (`POST /api/v1/candidates`, a JSON list or NDJSON
of at most MAX_CANDIDATES profiles, sent as `candidate.batch_upserted` records through the
outbox in one transaction) and its projection of batch segment assignments into
`candidate_segments`."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Request, status
from fastapi.concurrency import run_in_threadpool
from pydantic import TypeAdapter, ValidationError
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from services.gateway.auth import require
from services.gateway.models import CandidateSegment, metadata
from services.gateway.schemas import ERROR_RESPONSES, unstorable_text, validation_errors
from shared.envelope import Envelope, new_event
from shared.events import (
    MAX_IDS_PER_COMMAND,
    CandidateSegmentsAssigned,
    CandidatesUpserted,
    CandidateUpserted,
)
from shared.outbox import Outbox, RecordTooLarge
from shared.runtime import HandlerContext

router = APIRouter(prefix="/api/v1", responses=ERROR_RESPONSES)

# Profiles per request, and the body size that many may take (each profile is at most
# ~11 kB: 100 skills of 100 characters); other routes keep ADFLUX_MAX_BODY_BYTES.
MAX_CANDIDATES = MAX_IDS_PER_COMMAND
MAX_BULK_BODY_BYTES = 32 * 1024 * 1024
NDJSON = "application/x-ndjson"
# Profiles travel in records of at most this much JSON (the broker takes ~1 MB a record).
BATCH_BYTES = 512 * 1024
# A bad NDJSON body reports this many bad lines at most.
MAX_REPORTED_ERRORS = 20

_PROFILES = TypeAdapter(list[CandidateUpserted])
_WRAPPED = TypeAdapter(dict[str, list[CandidateUpserted]])


class BadCandidates(Exception):
    """Input the intake refuses: the HTTP status and pydantic-style errors naming where."""

    def __init__(self, status_code: int, detail: str | list[dict[str, Any]]) -> None:
        super().__init__(str(detail))
        self.status_code = status_code
        self.detail = detail


def _too_many(count: int) -> BadCandidates:
    return BadCandidates(
        status.HTTP_413_CONTENT_TOO_LARGE,
        f"{count} candidates in one request; at most {MAX_CANDIDATES}",
    )


def _errors(exc: ValidationError, *prefix: str | int) -> list[dict[str, Any]]:
    return [{**e, "loc": ["body", *prefix, *e["loc"]]} for e in validation_errors(exc.errors())]


def parse_json(body: bytes) -> list[CandidateUpserted]:
    """A JSON list of profiles, or `{"candidates": [...]}` (the original form)."""
    try:
        shape = json.loads(body)
    except (ValueError, RecursionError) as exc:  # RecursionError: nested too deep
        raise BadCandidates(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            [{"type": "json_invalid", "loc": ["body"], "msg": f"invalid JSON: {exc}"}],
        ) from exc
    wrapped = isinstance(shape, dict) and set(shape) == {"candidates"}
    if wrapped:
        shape = shape["candidates"]
    elif not isinstance(shape, list):
        raise BadCandidates(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            [{"type": "list_type", "loc": ["body"], "msg": "expected a list of candidates"}],
        )
    if not isinstance(shape, list) or not shape:
        raise BadCandidates(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            [{"type": "too_short", "loc": ["body"], "msg": "no candidates"}],
        )
    if len(shape) > MAX_CANDIDATES:
        raise _too_many(len(shape))
    try:
        if wrapped:
            return _WRAPPED.validate_json(body)["candidates"]
        return _PROFILES.validate_json(body)
    except ValidationError as exc:
        raise BadCandidates(status.HTTP_422_UNPROCESSABLE_CONTENT, _errors(exc)) from exc


def parse_ndjson(body: bytes) -> list[CandidateUpserted]:
    """One profile per line (blank lines skipped); errors name the 1-based line."""
    lines = body.split(b"\n")
    filled = [(number, line) for number, line in enumerate(lines, start=1) if line.strip()]
    if not filled:
        raise BadCandidates(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            [{"type": "too_short", "loc": ["body"], "msg": "no candidates"}],
        )
    if len(filled) > MAX_CANDIDATES:
        raise _too_many(len(filled))
    profiles: list[CandidateUpserted] = []
    errors: list[dict[str, Any]] = []
    for number, line in filled:
        try:
            profiles.append(CandidateUpserted.model_validate_json(line))
        except ValidationError as exc:
            errors += _errors(exc, f"line {number}")
            if len(errors) >= MAX_REPORTED_ERRORS:
                break
    if errors:
        raise BadCandidates(status.HTTP_422_UNPROCESSABLE_CONTENT, errors[:MAX_REPORTED_ERRORS])
    return profiles


def parse_candidates(body: bytes, content_type: str) -> list[CandidateUpserted]:
    """The profiles of a request body, or BadCandidates naming what is wrong and where."""
    ndjson = content_type.split(";")[0].strip().lower() in (NDJSON, "application/ndjson")
    profiles = parse_ndjson(body) if ndjson else parse_json(body)
    bad = [
        {
            "type": "value_error",
            "loc": ["body", f"line {index + 1}" if ndjson else index, field],
            "msg": problem,
        }
        for index, profile in enumerate(profiles)
        if (found := unstorable_text(profile)) is not None
        for field, problem in [found]
    ]
    if bad:
        raise BadCandidates(status.HTTP_422_UNPROCESSABLE_CONTENT, bad[:MAX_REPORTED_ERRORS])
    return profiles


def batches(profiles: list[CandidateUpserted]) -> list[list[CandidateUpserted]]:
    """The profiles in order, cut into batches whose JSON stays within BATCH_BYTES."""
    cut: list[list[CandidateUpserted]] = [[]]
    size = 0
    for profile in profiles:
        length = len(profile.model_dump_json()) + 1
        if cut[-1] and size + length > BATCH_BYTES:
            cut.append([])
            size = 0
        cut[-1].append(profile)
        size += length
    return cut


def enqueue(session: Session, outbox: Outbox, profiles: list[CandidateUpserted]) -> int:
    """The profiles into the outbox as `candidate.batch_upserted` records, in the caller's
    transaction."""
    envelopes: list[Envelope] = [
        new_event(
            CandidatesUpserted(candidates=batch),
            source="gateway",
            subject=batch[0].candidate_id,
        )
        for batch in batches(profiles)
    ]
    outbox.add_many(session, envelopes)
    return len(profiles)


@router.post(
    "/candidates",
    status_code=202,
    dependencies=[Depends(require("ml:write"))],
    max_body_size=MAX_BULK_BODY_BYTES,
    openapi_extra={
        "requestBody": {
            "required": True,
            "description": f"At most {MAX_CANDIDATES} candidate profiles: a JSON list, "
            '`{"candidates": [...]}`, or NDJSON (`Content-Type: application/x-ndjson`, one '
            "profile per line). 413 above the cap; 422 naming the index or line and field.",
            "content": {
                "application/json": {
                    "schema": {
                        "type": "array",
                        "maxItems": MAX_CANDIDATES,
                        "items": CandidateUpserted.model_json_schema(),
                    }
                },
                NDJSON: {"schema": {"type": "string"}},
            },
        }
    },
)
async def upsert_candidates(request: Request) -> dict[str, int]:
    """Accept candidate profiles in bulk: they travel as `candidate.batch_upserted` records,
    all committed to the outbox together (202 once stored; none on any error)."""
    body = await request.body()
    content_type = request.headers.get("content-type", "application/json")
    return await run_in_threadpool(_accept, request, body, content_type)


def _accept(request: Request, body: bytes, content_type: str) -> dict[str, int]:
    try:
        profiles = parse_candidates(body, content_type)
    except BadCandidates as exc:
        raise HTTPException(exc.status_code, exc.detail) from exc
    with request.app.state.db.session() as session:
        try:
            accepted = enqueue(session, request.app.state.outbox, profiles)
        except RecordTooLarge as exc:
            raise HTTPException(status.HTTP_413_CONTENT_TOO_LARGE, str(exc)) from exc
        session.commit()
    request.app.state.outbox.notify()
    return {"accepted": accepted}


def segments_assigned(
    envelope: Envelope, event: CandidateSegmentsAssigned, ctx: HandlerContext
) -> None:
    """Project one batch of assigned segments into `candidate_segments` (one bulk upsert)."""
    session = ctx.session
    if session is None:
        raise RuntimeError("the segment projection needs a runtime with a database")
    table = metadata.tables[CandidateSegment.__tablename__]
    dialect = session.get_bind().dialect.name
    insert = (postgresql.insert if dialect == "postgresql" else sqlite.insert)(table)
    now = datetime.now(UTC)
    session.execute(
        insert.on_conflict_do_update(
            index_elements=[table.c.candidate_id],
            set_={
                "segment": insert.excluded.segment,
                "model_version": insert.excluded.model_version,
                "updated_at": insert.excluded.updated_at,
            },
        ),
        [
            {
                "candidate_id": candidate_id,
                "segment": segment,
                "model_version": event.model_version,
                "updated_at": now,
            }
            for candidate_id, segment in event.segments.items()
        ],
    )
