"""The ML service's own tables (candidate profiles, trained models, assigned segments,
tracking/outbox) and the queries the handlers and the online stream run on them."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from services.ml import segmentation
from shared.db import UTCDateTime, utcnow
from shared.events import CandidateUpserted
from shared.service import with_tracking


class Base(DeclarativeBase):
    """The ML service's tables (their own metadata, migrated into the ml schema)."""


class Candidate(Base):
    """The latest profile of each candidate, as `candidate.upserted` carried it."""

    __tablename__ = "candidates"

    candidate_id: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    years_experience: Mapped[float] = mapped_column(sa.Float)
    education_level: Mapped[str] = mapped_column(sa.String(16))
    skills: Mapped[list[str]] = mapped_column(sa.JSON, default=list)
    location: Mapped[str] = mapped_column(sa.String(200), default="")
    desired_salary: Mapped[float | None] = mapped_column(sa.Float, nullable=True)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class SegmentationModel(Base):
    """One trained pipeline (joblib bytes) with how it scored; the newest one is current."""

    __tablename__ = "models"

    version: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    n_clusters: Mapped[int] = mapped_column(sa.Integer)
    n_samples: Mapped[int] = mapped_column(sa.Integer)
    metrics: Mapped[dict[str, Any]] = mapped_column(sa.JSON)
    pipeline: Mapped[bytes] = mapped_column(sa.LargeBinary)
    task_id: Mapped[str | None] = mapped_column(sa.String(64), nullable=True)


class Segment(Base):
    """The segment a candidate is in, and the model version that put it there."""

    __tablename__ = "segments"

    candidate_id: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    segment: Mapped[int] = mapped_column(sa.Integer)
    model_version: Mapped[str] = mapped_column(sa.String(64), index=True)
    assigned_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


metadata = with_tracking(Base.metadata)
CANDIDATE_COLUMNS = (*segmentation.PROFILE_COLUMNS, "updated_at", "received_at")
# How SQLAlchemy's DateTime stores a (UTC) timestamp in SQLite.
SQLITE_TIMESTAMP = "%Y-%m-%d %H:%M:%S.%f"
# Rows fetched (and turned into a DataFrame) at a time when profiles are read in bulk.
FETCH_CHUNK = 100_000
# The temporary table a bulk assignment is loaded into before one upsert into `segments`.
ASSIGNED = "assigned_segments"


def upsert_candidates(session: Session, profiles: Iterable[CandidateUpserted]) -> int:
    """Store the profiles with one bulk upsert, each unless a newer one (by `updated_at`) is
    already stored; of a candidate given twice only the newer profile counts. Returns how
    many distinct candidates were given."""
    newest: dict[str, CandidateUpserted] = {}
    for profile in profiles:
        seen = newest.get(profile.candidate_id)
        if seen is None or profile.updated_at >= seen.updated_at:
            newest[profile.candidate_id] = profile
    if not newest:
        return 0
    connection = session.connection()
    postgres = connection.dialect.name == "postgresql"
    # Straight to the driver's executemany: SQLAlchemy's per-row type processing was most of
    # the intake's time. SQLite compares the timestamps as text in SQLAlchemy's own format.
    placeholder = "%s" if postgres else "?"

    def stamp(moment: datetime) -> datetime | str:
        utc = moment.astimezone(UTC)
        return utc if postgres else utc.strftime(SQLITE_TIMESTAMP)

    now = stamp(utcnow())
    connection.exec_driver_sql(
        f"INSERT INTO candidates ({', '.join(CANDIDATE_COLUMNS)}) "
        f"VALUES ({', '.join([placeholder] * len(CANDIDATE_COLUMNS))}) "
        "ON CONFLICT (candidate_id) DO UPDATE SET "
        + ", ".join(f"{c} = excluded.{c}" for c in CANDIDATE_COLUMNS[1:])
        # A retried or replayed older version changes nothing.
        + " WHERE excluded.updated_at >= candidates.updated_at",
        [
            (
                p.candidate_id,
                p.years_experience,
                p.education_level,
                json.dumps(list(p.skills)),
                p.location,
                p.desired_salary,
                stamp(p.updated_at),
                now,
            )
            for p in newest.values()
        ],
    )
    return len(newest)


def candidates_frame(session: Session, candidate_ids: Iterable[str] | None = None) -> pd.DataFrame:
    """Stored profiles (all, or the given ids) as a DataFrame, ordered by candidate id. Read
    through the driver in chunks, skills left as their JSON text (parsed by the features):
    ORM objects or SQLAlchemy's JSON processing of a million rows took 18 s and 1 GB."""
    # The columns of segmentation.PROFILE_COLUMNS, in its order.
    select = (
        "SELECT candidate_id, years_experience, education_level, CAST(skills AS TEXT), "
        "location, desired_salary FROM candidates"
    )
    connection = session.connection()
    result: Any
    if candidate_ids is None:  # the DB-API cursor's plain tuples: no Row per result row
        result = connection.connection.driver_connection.cursor()  # type: ignore[union-attr]
        result.execute(f"{select} ORDER BY candidate_id")
    else:
        result = connection.execute(
            sa.text(f"{select} WHERE candidate_id IN :ids ORDER BY candidate_id").bindparams(
                sa.bindparam("ids", expanding=True)
            ),
            {"ids": list(candidate_ids)},
        )
    columns = list(segmentation.PROFILE_COLUMNS)
    chunks = []
    while rows := result.fetchmany(FETCH_CHUNK):
        chunks.append(pd.DataFrame.from_records(rows, columns=columns))
    if not chunks:
        return pd.DataFrame(columns=columns)
    return chunks[0] if len(chunks) == 1 else pd.concat(chunks, ignore_index=True)


def latest_version(session: Session) -> str | None:
    """The current model's version, without loading its pipeline."""
    return session.scalar(
        sa.select(SegmentationModel.version)
        .order_by(SegmentationModel.created_at.desc(), SegmentationModel.version.desc())
        .limit(1)
    )


def latest_model(session: Session) -> SegmentationModel | None:
    version = latest_version(session)
    return session.get(SegmentationModel, version) if version is not None else None


def store_assignments(
    session: Session, candidate_ids: Sequence[str], segments: Iterable[int], model_version: str
) -> int:
    """Record the segments of many candidates with bulk writes: the assignments go into a
    temporary table (COPY on PostgreSQL, executemany on SQLite), then one statement counts
    those new or changed (the return value) and one upserts them all."""
    connection = session.connection()
    if connection.dialect.name == "postgresql":
        connection.exec_driver_sql(
            f"CREATE TEMPORARY TABLE {ASSIGNED} (candidate_id varchar(64), segment integer) "
            "ON COMMIT DROP"
        )
        cursor = connection.connection.driver_connection.cursor()  # type: ignore[union-attr]
        with cursor.copy(f"COPY {ASSIGNED} (candidate_id, segment) FROM STDIN") as copy:
            for row in zip(candidate_ids, map(int, segments), strict=True):
                copy.write_row(row)
    else:
        connection.exec_driver_sql(
            f"CREATE TEMPORARY TABLE IF NOT EXISTS {ASSIGNED} (candidate_id TEXT, segment INTEGER)"
        )
        connection.exec_driver_sql(f"DELETE FROM {ASSIGNED}")
        connection.exec_driver_sql(
            f"INSERT INTO {ASSIGNED} (candidate_id, segment) VALUES (?, ?)",
            list(zip(candidate_ids, map(int, segments), strict=True)),
        )
    version = {"version": model_version}
    changed: int = connection.execute(
        sa.text(
            f"SELECT count(*) FROM {ASSIGNED} a LEFT JOIN segments s "
            "ON s.candidate_id = a.candidate_id WHERE s.candidate_id IS NULL "
            "OR s.segment <> a.segment OR s.model_version <> :version"
        ),
        version,
    ).scalar_one()
    connection.execute(
        sa.text(
            "INSERT INTO segments (candidate_id, segment, model_version, assigned_at) "
            # WHERE true: SQLite's parser would take ON CONFLICT for a join constraint.
            f"SELECT candidate_id, segment, :version, :now FROM {ASSIGNED} WHERE true "
            "ON CONFLICT (candidate_id) DO UPDATE SET segment = excluded.segment, "
            "model_version = excluded.model_version, assigned_at = excluded.assigned_at"
        ).bindparams(sa.bindparam("now", type_=UTCDateTime())),
        {**version, "now": utcnow()},
    )
    if connection.dialect.name != "postgresql":
        connection.exec_driver_sql(f"DELETE FROM {ASSIGNED}")
    return int(changed)


def store_segments(
    session: Session, assignments: Iterable[tuple[str, int]], model_version: str, *, every: bool
) -> int:
    """Record candidates' segments; returns how many are new or changed. `every` says the
    assignments cover every candidate (their stored rows are loaded in one query, not an
    IN list of every id)."""
    assignments = list(assignments)
    query = sa.select(Segment)
    if not every:
        query = query.where(Segment.candidate_id.in_({cid for cid, _ in assignments}))
    stored = {row.candidate_id: row for row in session.scalars(query)}
    changed = 0
    for candidate_id, segment in assignments:
        row = stored.get(candidate_id)
        if row is None:
            row = stored[candidate_id] = Segment(candidate_id=candidate_id)
            session.add(row)
        elif (row.segment, row.model_version) == (segment, model_version):
            row.assigned_at = utcnow()
            continue
        row.segment, row.model_version, row.assigned_at = segment, model_version, utcnow()
        changed += 1
    return changed
