"""The ML service's own tables (candidate profiles, trained models, assigned segments,
tracking/outbox) and the queries the handlers and the online stream run on them."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
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


def upsert_candidate(session: Session, profile: CandidateUpserted) -> bool:
    """Store the profile unless a newer one is already stored; True when stored."""
    row = session.get(Candidate, profile.candidate_id)
    if row is None:
        row = Candidate(candidate_id=profile.candidate_id)
        session.add(row)
    elif row.updated_at > profile.updated_at:
        return False  # a retried or replayed older version
    row.years_experience = profile.years_experience
    row.education_level = profile.education_level
    row.skills = list(profile.skills)
    row.location = profile.location
    row.desired_salary = profile.desired_salary
    row.updated_at = profile.updated_at
    row.received_at = utcnow()
    return True


def candidates_frame(session: Session, candidate_ids: Iterable[str] | None = None) -> pd.DataFrame:
    """Stored profiles (all, or the given ids) as a DataFrame, ordered by candidate id."""
    query = sa.select(Candidate).order_by(Candidate.candidate_id)
    if candidate_ids is not None:
        query = query.where(Candidate.candidate_id.in_(list(candidate_ids)))
    return segmentation.profiles_frame(
        {
            "candidate_id": c.candidate_id,
            "years_experience": c.years_experience,
            "education_level": c.education_level,
            "skills": list(c.skills or []),
            "location": c.location,
            "desired_salary": c.desired_salary,
        }
        for c in session.scalars(query)
    )


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
