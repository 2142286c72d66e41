"""The ML handlers and the online assigner against a real (SQLite) database migrated with
the service's own migrations: candidate upserts, training, batch assignment, and the
model cache of online assignment."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

import pytest
import sqlalchemy as sa

from services.ml.handlers import TrainModel, assign_segments, store_candidate
from services.ml.models import Candidate, Segment, SegmentationModel, latest_version, metadata
from services.ml.stream import OnlineAssigner, OnlineSegmentation, Tracker
from shared.db import Database
from shared.envelope import Envelope, from_kafka, new_event
from shared.events import (
    CandidateSegmented,
    CandidateSegmentsAssigned,
    CandidateUpserted,
    ModelTrained,
    Payload,
    SegmentationRequested,
    TaskState,
    TaskStatus,
    TrainingRequested,
)
from shared.producer import EventProducer, OutgoingRecord
from shared.retry import PermanentError
from shared.runtime import HandlerContext, HandlerOutcome
from shared.tasks import TaskStatusReporter
from shared.topics import TopicNames
from tests.unit.test_ml_segmentation import synthetic_profiles

NOW = datetime(2026, 1, 5, 3, 0, tzinfo=UTC)


class RecordingProducer:
    """Stands in for the producer of PROGRESS transitions (no broker in unit tests)."""

    def __init__(self) -> None:
        self.records: list[OutgoingRecord] = []

    def send_batch(self, records: Any, timeout: float = 60.0) -> None:
        self.records.extend(records)

    def send_nowait(self, records: Any) -> None:
        self.records.extend(records)


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    database = Database("", "ml", str(tmp_path))
    database.migrate()
    yield database
    database.dispose()


@pytest.fixture
def producer() -> RecordingProducer:
    return RecordingProducer()


def handle(
    db: Database, producer: RecordingProducer, handler: Any, payload: Payload, subject: str = "t"
) -> HandlerOutcome | None:
    """Run a handler as the runtime does: its session committed after it returns."""
    envelope = new_event(payload, source="test", subject=subject, taskid=f"task-{subject}")
    names = TopicNames("unit.")
    reporter = TaskStatusReporter(names, "ml")
    task_name = getattr(payload, "task_name", None)
    session = db.sessions()
    ctx = HandlerContext(envelope, session, reporter, cast(EventProducer, producer), task_name)
    try:
        outcome = handler(envelope, payload, ctx)
        session.commit()
        return cast(HandlerOutcome | None, outcome)
    finally:
        session.close()


def upsert(
    db: Database, producer: RecordingProducer, profile: dict[str, Any], at: datetime
) -> None:
    payload = CandidateUpserted(**profile, updated_at=at)
    handle(db, producer, store_candidate, payload, subject=profile["candidate_id"])


def load(db: Database, producer: RecordingProducer, per_group: int = 10) -> list[dict[str, Any]]:
    profiles = synthetic_profiles(per_group)
    for profile in profiles:
        upsert(db, producer, profile, NOW)
    return profiles


def progress_of(producer: RecordingProducer) -> list[int]:
    """The PROGRESS percentages reported, in order."""
    progress = []
    for record in producer.records:
        status = from_kafka(record.key, record.value, record.headers).payload()
        assert isinstance(status, TaskStatus) and status.state is TaskState.PROGRESS
        assert status.progress is not None
        progress.append(status.progress)
    return progress


def test_candidate_upsert_keeps_the_newest_profile(
    db: Database, producer: RecordingProducer
) -> None:
    profile = synthetic_profiles(1)[0]
    upsert(db, producer, profile, NOW)
    upsert(db, producer, {**profile, "years_experience": 9.0}, NOW + timedelta(minutes=1))
    upsert(db, producer, {**profile, "years_experience": 4.0}, NOW - timedelta(minutes=1))
    with db.session() as session:
        stored = session.get(Candidate, profile["candidate_id"])
        assert stored is not None
        assert stored.years_experience == 9.0
        assert stored.updated_at == NOW + timedelta(minutes=1)
        assert stored.skills == profile["skills"]


def test_training_stores_the_model_and_emits_model_trained(
    db: Database, producer: RecordingProducer
) -> None:
    load(db, producer)
    outcome = handle(db, producer, TrainModel(random_state=1), TrainingRequested())
    assert outcome is not None and outcome.result is not None
    result = outcome.result
    assert result["n_samples"] == 30
    assert result["n_clusters"] == 3
    assert result["message"] == "Model trained on 30 candidates"
    assert set(result["metrics"]) == {
        "silhouette",
        "calinski_harabasz",
        "davies_bouldin",
        "inertia",
        "k_sample",
        "training_seconds",
    }
    assert result["metrics"]["k_sample"] == 30  # under K_SAMPLE: every candidate
    assert result["metrics"]["training_seconds"] > 0
    [event] = outcome.events
    trained = event.payload()
    assert isinstance(trained, ModelTrained)
    assert trained.metrics == result["metrics"]
    assert event.subject == trained.model_version == result["model_version"]
    assert event.taskid == "task-t"
    with db.session() as session:
        assert latest_version(session) == result["model_version"]
        stored = session.get(SegmentationModel, result["model_version"])
        assert stored is not None and stored.n_clusters == 3 and len(stored.pipeline) > 0
    progress = progress_of(producer)
    assert progress == sorted(progress) and progress[0] < progress[-1] <= 100


def test_training_with_a_requested_number_of_clusters(
    db: Database, producer: RecordingProducer
) -> None:
    load(db, producer)
    outcome = handle(db, producer, TrainModel(), TrainingRequested(n_clusters=2))
    assert outcome is not None and outcome.result is not None
    assert outcome.result["n_clusters"] == 2
    assert "silhouette_by_k" not in outcome.result


def test_training_without_candidates_is_a_permanent_error(
    db: Database, producer: RecordingProducer
) -> None:
    with pytest.raises(PermanentError, match="no candidates to train on"):
        handle(db, producer, TrainModel(), TrainingRequested())


def test_assignment_without_a_model_is_a_permanent_error(
    db: Database, producer: RecordingProducer
) -> None:
    load(db, producer, per_group=2)
    with pytest.raises(PermanentError, match="no trained model"):
        handle(db, producer, assign_segments, SegmentationRequested())


def test_assignment_segments_every_candidate_and_emits_them_in_batches(
    db: Database, producer: RecordingProducer
) -> None:
    load(db, producer)
    trained = handle(db, producer, TrainModel(), TrainingRequested())
    assert trained is not None and trained.result is not None
    version = trained.result["model_version"]
    outcome = handle(db, producer, assign_segments, SegmentationRequested(), subject="assign")
    assert outcome is not None
    assert outcome.result == {
        "message": "Segments assigned to 30 candidates",
        "total_candidates": 30,
        "updated_candidates": 30,
        "changed_candidates": 30,
        "model_version": version,
        "events": 1,
    }
    [event] = outcome.events
    batch = event.payload()
    assert isinstance(batch, CandidateSegmentsAssigned)
    assert (batch.model_version, batch.part, batch.parts) == (version, 1, 1)
    assert event.subject == f"{version}/1" and event.causationid is not None
    segmented = batch.segments
    assert len(segmented) == 30
    by_group: dict[str, set[int]] = {}
    for candidate_id, segment in segmented.items():
        by_group.setdefault(candidate_id.split("-")[0], set()).add(segment)
    # Each synthetic group is one segment, and the groups are apart.
    assert all(len(segments) == 1 for segments in by_group.values())
    assert len(set.union(*by_group.values())) == 3
    with db.session() as session:
        rows = session.scalars(sa.select(Segment)).all()
        assert {r.candidate_id: r.segment for r in rows} == segmented
        assert {r.model_version for r in rows} == {version}
    again = handle(db, producer, assign_segments, SegmentationRequested(), subject="again")
    assert again is not None and again.result is not None
    assert again.result["changed_candidates"] == 0


def test_assignment_of_given_candidates_reports_unknown_ids(
    db: Database, producer: RecordingProducer
) -> None:
    load(db, producer)
    handle(db, producer, TrainModel(), TrainingRequested())
    request = SegmentationRequested(candidate_ids=["g0-1", "g2-3", "nobody"])
    outcome = handle(db, producer, assign_segments, request)
    assert outcome is not None and outcome.result is not None
    assert outcome.result["total_candidates"] == 2
    assert outcome.result["unknown_candidate_ids"] == ["nobody"]
    [event] = outcome.events
    assert sorted(event.payload().segments) == ["g0-1", "g2-3"]  # type: ignore[attr-defined]


def test_online_assigner_waits_for_a_model_then_follows_the_newest(
    db: Database, producer: RecordingProducer
) -> None:
    assigner = OnlineAssigner(db)
    profile = {**synthetic_profiles(1)[0], "candidate_id": "fresh"}
    upserted = new_event(
        CandidateUpserted(**profile, updated_at=NOW), source="test", subject="fresh"
    )
    assert assigner.assign(upserted) is None  # no model yet
    load(db, producer)
    first = handle(db, producer, TrainModel(), TrainingRequested(n_clusters=3))
    assert first is not None and first.result is not None
    event = assigner.assign(upserted)
    assert event is not None and event.subject == "fresh"
    assert event.causationid == upserted.id
    assert event.id == assigner.assign(upserted).id  # type: ignore[union-attr]
    assigned = event.payload()
    assert isinstance(assigned, CandidateSegmented)
    assert assigned.model_version == first.result["model_version"]
    second = handle(db, producer, TrainModel(), TrainingRequested(n_clusters=2))
    assert second is not None and second.result is not None
    newer = assigner.assign(upserted)
    assert newer is not None
    assert newer.payload().model_version == second.result["model_version"]  # type: ignore[attr-defined]
    with db.session() as session:
        row = session.get(Segment, "fresh")
        assert row is not None and row.model_version == second.result["model_version"]


class FakeAssigner:
    """Assigns segment 1 and records it through `track`; its first call fails with a database
    error when `flaky`."""

    def __init__(self, db: Database, *, flaky: bool = False) -> None:
        self.db = db
        self.flaky = flaky
        self.calls = 0

    def assign_batch(
        self, envelopes: list[Envelope], track: Tracker | None = None
    ) -> list[Envelope]:
        self.calls += 1
        if self.flaky and self.calls == 1:
            raise sa.exc.OperationalError("SELECT 1", {}, Exception("connection reset"))
        assigned = [
            new_event(
                CandidateSegmented(candidate_id=e.subject, segment=1, model_version="v1"),
                source="ml",
                subject=e.subject,
            )
            for e in envelopes
        ]
        with self.db.session() as session:
            if track is not None:
                track(session, list(zip(envelopes, assigned, strict=True)))
        return assigned


def online_segmentation(
    db: Database, assigner: FakeAssigner, producer: RecordingProducer, tmp_path: Path
) -> OnlineSegmentation:
    return OnlineSegmentation(
        bootstrap="unused:9092",
        names=TopicNames("unit."),
        data_dir=str(tmp_path),
        assigner=cast(OnlineAssigner, assigner),
        producer=cast(EventProducer, producer),
        db=db,
        processed=metadata.tables["processed_events"],
        retention=timedelta(days=1),
    )


def upserted(subject: str) -> Envelope:
    profile = synthetic_profiles(1)[0]
    return new_event(CandidateUpserted(**profile, updated_at=NOW), source="test", subject=subject)


def sent(producer: RecordingProducer) -> list[tuple[str, str]]:
    return [(r.topic, from_kafka(r.key, r.value, r.headers).subject) for r in producer.records]


def test_online_batch_is_tried_again_after_a_database_error(
    db: Database, producer: RecordingProducer, tmp_path: Path
) -> None:
    assigner = FakeAssigner(db, flaky=True)
    online_segmentation(db, assigner, producer, tmp_path).handle([upserted("g0-0")])
    assert assigner.calls == 2
    assert sent(producer) == [("unit.candidate.segmented", "g0-0")]


def test_a_redelivered_upsert_is_not_assigned_again_but_its_event_is_sent_again(
    db: Database, producer: RecordingProducer, tmp_path: Path
) -> None:
    assigner = FakeAssigner(db)
    online = online_segmentation(db, assigner, producer, tmp_path)
    first, second = upserted("g0-0"), upserted("g0-1")
    online.handle([first, first])
    online.handle([first, second])
    assert assigner.calls == 2
    assert sent(producer) == [
        ("unit.candidate.segmented", "g0-0"),
        ("unit.candidate.segmented", "g0-0"),
        ("unit.candidate.segmented", "g0-1"),
    ]
    assert producer.records[0] == producer.records[1]  # the stored event, byte for byte
