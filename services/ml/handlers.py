"""What the ML service does on each event: keep the latest candidate profiles (in batches),
train the segmentation model (`ml.train`) and assign segments with the current model
(`ml.assign_segments`, one `candidate.segments_assigned` per batch of candidates)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import sqlalchemy as sa
from sqlalchemy.orm import Session

from services.ml import segmentation
from services.ml.models import (
    SegmentationModel,
    candidates_frame,
    latest_model,
    store_assignments,
    upsert_candidates,
)
from shared.envelope import Envelope, caused_by
from shared.events import (
    MAX_IDS_PER_COMMAND,
    CandidateSegmentsAssigned,
    CandidatesUpserted,
    CandidateUpserted,
    ModelTrained,
    SegmentationRequested,
    TrainingRequested,
)
from shared.retry import PermanentError
from shared.runtime import HandlerContext, HandlerOutcome

SOURCE = "ml"
# The consumer group that stores `candidate.upserted` (apart from the commands' group).
INTAKE_GROUP = "ml.candidates"
# Where a transaction's candidate profiles wait for their one bulk upsert (Session.info).
PENDING_PROFILES = "ml.pending_profiles"
# Candidates per `candidate.segments_assigned` event (each well under a Kafka record's limit).
SEGMENTS_PER_EVENT = MAX_IDS_PER_COMMAND


def _session(ctx: HandlerContext) -> Session:
    if ctx.session is None:
        raise RuntimeError("the ML handlers need a runtime with a database")
    return ctx.session


def new_model_version(now: datetime) -> str:
    """Sortable by time, unique by its random tail: `20260105T030000Z-1a2b3c4d`."""
    return f"{now:%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:8]}"


def store_candidate(envelope: Envelope, profile: CandidateUpserted, ctx: HandlerContext) -> None:
    """Handles `candidate.upserted`: keep the candidate's latest profile for training. The
    profile joins its transaction's batch, written by one bulk upsert when the transaction
    commits: the intake runtime commits each lane's polled records together (group commit),
    so hundreds of profiles cost one statement, and a failed batch is handled again one
    record at a time by the runtime, each then its own batch of one."""
    session = _session(ctx)
    pending: list[CandidateUpserted] | None = session.info.get(PENDING_PROFILES)
    if pending is None:
        pending = session.info[PENDING_PROFILES] = []
        sa.event.listen(session, "before_commit", _store_pending_profiles, once=True)
    pending.append(profile)


def store_candidates(envelope: Envelope, batch: CandidatesUpserted, ctx: HandlerContext) -> None:
    """Handles `candidate.batch_upserted` (the bulk intake): its profiles join the
    transaction's batch as `store_candidate` does."""
    for profile in batch.candidates:
        store_candidate(envelope, profile, ctx)


def _store_pending_profiles(session: Session) -> None:
    upsert_candidates(session, session.info.pop(PENDING_PROFILES, []))


class TrainModel:
    """Handles `ml.training_requested` (task `ml.train`; seed: train_segmentation_model_task)."""

    def __init__(self, random_state: int = 42, max_clusters: int = segmentation.MAX_CLUSTERS):
        self.random_state = random_state
        self.max_clusters = max_clusters

    def __call__(
        self, envelope: Envelope, command: TrainingRequested, ctx: HandlerContext
    ) -> HandlerOutcome:
        session = _session(ctx)
        ctx.progress(5, {"stage": "loading candidates"})
        profiles = candidates_frame(session)
        if profiles.empty:
            raise PermanentError("no candidates to train on")
        ctx.progress(10, {"stage": "training", "n_samples": len(profiles)})

        def tried(done: int, total: int) -> None:
            ctx.progress(10 + 75 * done // total, {"stage": "choosing k", "tried": done})

        trained = segmentation.train(
            profiles,
            command.n_clusters,
            random_state=self.random_state,
            max_clusters=self.max_clusters,
            progress=tried,
        )
        ctx.progress(90, {"stage": "storing model", "n_clusters": trained.n_clusters})
        # How the model was fitted travels with its scores (ml.model_trained, GET /models).
        metrics = {
            **trained.metrics,
            "k_sample": float(trained.k_sample),
            "training_seconds": round(trained.seconds, 3),
        }
        now = datetime.now(UTC)
        version = new_model_version(now)
        session.add(
            SegmentationModel(
                version=version,
                created_at=now,
                n_clusters=trained.n_clusters,
                n_samples=trained.n_samples,
                metrics={**metrics, "k_scores": trained.k_scores},
                pipeline=segmentation.dump_pipeline(trained.pipeline),
                task_id=envelope.taskid,
            )
        )
        ctx.check_cancelled()
        event = ModelTrained(
            model_version=version,
            n_clusters=trained.n_clusters,
            n_samples=trained.n_samples,
            metrics=metrics,
            trained_at=now,
        )
        result = {
            "message": f"Model trained on {trained.n_samples} candidates",
            "metrics": metrics,
            "n_clusters": trained.n_clusters,
            "n_samples": trained.n_samples,
            "model_version": version,
        }
        if trained.k_scores:
            result["silhouette_by_k"] = {str(k): s for k, s in trained.k_scores.items()}
        return HandlerOutcome(
            result=result, events=[caused_by(envelope, event, source=SOURCE, subject=version)]
        )


def assign_segments(
    envelope: Envelope, command: SegmentationRequested, ctx: HandlerContext
) -> HandlerOutcome:
    """Handles `ml.segmentation_requested` (task `ml.assign_segments`; seed:
    assign_segments_task): the current model's segment for every (or each given) candidate."""
    session = _session(ctx)
    model = latest_model(session)
    if model is None:
        raise PermanentError("no trained model yet: run ml.train first")
    ctx.progress(5, {"stage": "loading candidates", "model_version": model.version})
    profiles = candidates_frame(session, command.candidate_ids)
    if profiles.empty:
        raise PermanentError("no candidates to assign segments to")
    pipeline = segmentation.load_pipeline(model.pipeline)
    ctx.progress(30, {"stage": "predicting", "n_candidates": len(profiles)})
    segments = segmentation.predict(pipeline, profiles)
    ctx.check_cancelled()
    ctx.progress(70, {"stage": "storing segments"})
    candidate_ids = profiles["candidate_id"].tolist()
    del profiles
    changed = store_assignments(session, candidate_ids, segments, model.version)
    events = segments_events(envelope, candidate_ids, segments.tolist(), model.version)
    result: dict[str, object] = {
        "message": f"Segments assigned to {len(candidate_ids)} candidates",
        "total_candidates": len(candidate_ids),
        # As in the seed: every candidate given the model's segment; `changed_candidates`
        # counts those whose stored segment or model version differed.
        "updated_candidates": len(candidate_ids),
        "changed_candidates": changed,
        "model_version": model.version,
        "events": len(events),
    }
    if command.candidate_ids is not None:
        result["unknown_candidate_ids"] = sorted(set(command.candidate_ids) - set(candidate_ids))
    return HandlerOutcome(result=result, events=events)


def segments_events(
    cause: Envelope, candidate_ids: list[str], segments: list[int], model_version: str
) -> list[Envelope]:
    """`candidate.segments_assigned` events of SEGMENTS_PER_EVENT candidates each, keyed by
    model version and part (spread over the partitions)."""
    parts = -(-len(candidate_ids) // SEGMENTS_PER_EVENT)
    return [
        caused_by(
            cause,
            CandidateSegmentsAssigned(
                model_version=model_version,
                segments=dict(
                    zip(
                        candidate_ids[start : start + SEGMENTS_PER_EVENT],
                        segments[start : start + SEGMENTS_PER_EVENT],
                        strict=True,
                    )
                ),
                part=part,
                parts=parts,
            ),
            source=SOURCE,
            subject=f"{model_version}/{part}",
        )
        for part, start in enumerate(range(0, len(candidate_ids), SEGMENTS_PER_EVENT), start=1)
    ]
