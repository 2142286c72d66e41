"""What the ML service does on each event: keep the latest candidate profiles, train the
segmentation model (`ml.train`) and assign segments with the current model
(`ml.assign_segments`)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from sqlalchemy.orm import Session

from services.ml import segmentation
from services.ml.models import (
    SegmentationModel,
    candidates_frame,
    latest_model,
    store_segments,
    upsert_candidate,
)
from shared.envelope import Envelope, caused_by
from shared.events import (
    CandidateSegmented,
    CandidateUpserted,
    ModelTrained,
    SegmentationRequested,
    TrainingRequested,
)
from shared.retry import PermanentError
from shared.runtime import HandlerContext, HandlerOutcome

SOURCE = "ml"


def _session(ctx: HandlerContext) -> Session:
    if ctx.session is None:
        raise RuntimeError("the ML handlers need a runtime with a database")
    return ctx.session


def new_model_version(now: datetime) -> str:
    """Sortable by time, unique by its random tail: `20260105T030000Z-1a2b3c4d`."""
    return f"{now:%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:8]}"


def store_candidate(envelope: Envelope, profile: CandidateUpserted, ctx: HandlerContext) -> None:
    """Handles `candidate.upserted`: keep the candidate's latest profile for training."""
    upsert_candidate(_session(ctx), profile)


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
        now = datetime.now(UTC)
        version = new_model_version(now)
        session.add(
            SegmentationModel(
                version=version,
                created_at=now,
                n_clusters=trained.n_clusters,
                n_samples=trained.n_samples,
                metrics={**trained.metrics, "k_scores": trained.k_scores},
                pipeline=segmentation.dump_pipeline(trained.pipeline),
                task_id=envelope.taskid,
            )
        )
        ctx.check_cancelled()
        event = ModelTrained(
            model_version=version,
            n_clusters=trained.n_clusters,
            n_samples=trained.n_samples,
            metrics=trained.metrics,
            trained_at=now,
        )
        result = {
            "message": f"Model trained on {trained.n_samples} candidates",
            "metrics": trained.metrics,
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
    assignments = [
        (candidate_id, int(segment))
        for candidate_id, segment in zip(profiles["candidate_id"], segments, strict=True)
    ]
    changed = store_segments(
        session, assignments, model.version, every=command.candidate_ids is None
    )
    events = [
        caused_by(
            envelope,
            CandidateSegmented(
                candidate_id=candidate_id, segment=segment, model_version=model.version
            ),
            source=SOURCE,
            subject=candidate_id,
        )
        for candidate_id, segment in assignments
    ]
    result: dict[str, object] = {
        "message": f"Segments assigned to {len(events)} candidates",
        "total_candidates": len(events),
        # As in the seed: every candidate given the model's segment; `changed_candidates`
        # counts those whose stored segment or model version differed.
        "updated_candidates": len(events),
        "changed_candidates": changed,
        "model_version": model.version,
    }
    if command.candidate_ids is not None:
        found = set(profiles["candidate_id"])
        result["unknown_candidate_ids"] = sorted(set(command.candidate_ids) - found)
    return HandlerOutcome(result=result, events=events)
