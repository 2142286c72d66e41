"""The ML service, wired as `python -m services.ml` wires it, against the real broker and
PostgreSQL: candidates upserted, the `ml.train` and `ml.assign_segments` tasks, and the
faust agent's online assignment of new candidates."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
import sqlalchemy as sa

from bench.candidates_scale import synthetic_profiles as scale_profiles
from infra.waiting import wait_for
from services.ml.__main__ import compose
from services.ml.models import Candidate, Segment, metadata
from services.ml.settings import MlSettings
from services.ml.stream import OnlineSegmentation
from shared.envelope import Envelope, new_event
from shared.events import (
    CandidateSegmented,
    CandidateSegmentsAssigned,
    CandidatesUpserted,
    CandidateUpserted,
    Command,
    ModelTrained,
    SegmentationRequested,
    TaskState,
    TaskStatus,
    TrainingRequested,
)
from shared.producer import EventProducer
from shared.service import ServiceKit, Worker, build_kit
from shared.topics import TopicNames
from tests.support.kafka import EventCollector
from tests.unit.test_ml_segmentation import synthetic_profiles

pytestmark = pytest.mark.integration


@pytest.fixture
def kit(
    service_settings: dict[str, Any],
) -> Iterator[ServiceKit]:
    """The service's clients on this test's topics (created and deleted by `names`)."""
    settings = MlSettings(**service_settings)
    service_kit = build_kit("ml", settings, metadata)
    yield service_kit
    service_kit.producer.close()
    service_kit.db.dispose()


@pytest.fixture
def ml(kit: ServiceKit) -> Iterator[Worker]:
    assert isinstance(kit.settings, MlSettings)
    service = compose(kit, kit.settings)
    for component in service.components:
        component.start()
    assert service.runtime.assigned.wait(30)
    [online] = [c for c in service.components if isinstance(c, OnlineSegmentation)]
    assert online.assigned.wait(60)
    yield service
    for component in reversed(service.components):
        component.stop()


@pytest.fixture
def collector(kafka_bootstrap: str, kit: ServiceKit) -> Iterator[EventCollector]:
    names = kit.names
    topics = [
        "task.status",
        "ml.model_trained",
        "candidate.segmented",
        "candidate.segments_assigned",
    ]
    events = EventCollector(kafka_bootstrap, [names.topic(t) for t in topics])
    yield events
    events.close()


def upsert(producer: EventProducer, names: TopicNames, profile: dict[str, Any]) -> Envelope:
    payload = CandidateUpserted(**profile, updated_at=datetime.now(UTC))
    envelope = new_event(payload, source="test", subject=profile["candidate_id"])
    producer.send(names.topic("candidate.upserted"), envelope)
    return envelope


def request(producer: EventProducer, names: TopicNames, command: Command, task_id: str) -> None:
    envelope = new_event(command, source="test", subject=task_id, taskid=task_id)
    producer.send(names.topic(envelope.type), envelope)


def stored_candidates(kit: ServiceKit) -> int:
    with kit.db.session() as session:
        return int(session.scalar(sa.select(sa.func.count()).select_from(Candidate)) or 0)


def segment_of(event: Envelope) -> int:
    assigned = event.payload()
    assert isinstance(assigned, CandidateSegmented)
    return assigned.segment


def train(kit: ServiceKit, collector: EventCollector, task_id: str, **kwargs: Any) -> TaskStatus:
    request(kit.producer, kit.names, TrainingRequested(**kwargs), task_id)
    return collector.wait_state(task_id, TaskState.SUCCESS)


def test_training_then_assignment_emit_model_trained_and_segments_in_a_batch(
    ml: Worker, kit: ServiceKit, collector: EventCollector
) -> None:
    profiles = synthetic_profiles(per_group=10)
    for profile in profiles:
        upsert(kit.producer, kit.names, profile)
    wait_for(lambda: stored_candidates(kit) == 30, 30, what="30 stored candidates")

    success = train(kit, collector, "train-1")
    states = [s.state for s in collector.statuses("train-1")]
    assert states[0] is TaskState.STARTED and TaskState.PROGRESS in states
    assert success.result is not None
    assert success.result["n_samples"] == 30 and success.result["n_clusters"] == 3
    version = success.result["model_version"]
    [trained] = wait_for(lambda: collector.of("ml.model_trained"), 10, what="ml.model_trained")
    model = trained.payload()
    assert isinstance(model, ModelTrained)
    assert trained.subject == model.model_version == version and trained.taskid == "train-1"
    assert model.metrics == success.result["metrics"]

    request(kit.producer, kit.names, SegmentationRequested(), "assign-1")
    done = collector.wait_state("assign-1", TaskState.SUCCESS)
    assert done.result is not None
    assert done.result["total_candidates"] == 30 and done.result["updated_candidates"] == 30
    assert done.result["model_version"] == version
    [batch] = wait_for(
        lambda: collector.of("candidate.segments_assigned", lambda e: e.taskid == "assign-1"),
        20,
        what="candidate.segments_assigned",
    )
    assigned = batch.payload()
    assert isinstance(assigned, CandidateSegmentsAssigned)
    assert (assigned.model_version, assigned.part, assigned.parts) == (version, 1, 1)
    assert set(assigned.segments) == {p["candidate_id"] for p in profiles}
    by_group: dict[str, set[int]] = {}
    for candidate_id, segment in assigned.segments.items():
        by_group.setdefault(candidate_id.split("-")[0], set()).add(segment)
    assert sorted(len(s) for s in by_group.values()) == [1, 1, 1]
    assert len(set.union(*by_group.values())) == 3


def test_training_without_candidates_fails_the_task_without_retrying(
    ml: Worker, kit: ServiceKit, collector: EventCollector
) -> None:
    request(kit.producer, kit.names, TrainingRequested(), "train-empty")
    failure = collector.wait_state("train-empty", TaskState.FAILURE)
    assert failure.error is not None
    assert failure.error.message == "no candidates to train on"
    assert not failure.error.transient
    assert TaskState.RETRY not in [s.state for s in collector.statuses("train-empty")]


def test_assignment_before_any_model_fails_the_task(
    ml: Worker, kit: ServiceKit, collector: EventCollector
) -> None:
    request(kit.producer, kit.names, SegmentationRequested(), "assign-early")
    failure = collector.wait_state("assign-early", TaskState.FAILURE)
    assert failure.error is not None and "no trained model" in failure.error.message


def test_online_agent_segments_new_candidates_with_the_newest_model(
    ml: Worker, kit: ServiceKit, collector: EventCollector
) -> None:
    profiles = synthetic_profiles(per_group=8)
    for profile in profiles:
        upsert(kit.producer, kit.names, profile)
    wait_for(lambda: stored_candidates(kit) == 24, 30, what="24 stored candidates")
    first = train(kit, collector, "train-a", n_clusters=3)
    assert first.result is not None
    phd_like = {**profiles[-1], "candidate_id": "newcomer"}
    cause = upsert(kit.producer, kit.names, phd_like)

    def online(candidate_id: str, version: str) -> Envelope | None:
        return next(
            (
                e
                for e in collector.of("candidate.segmented", lambda e: e.subject == candidate_id)
                if e.taskid is None and e.payload().model_version == version
            ),
            None,
        )

    event = wait_for(
        lambda: online("newcomer", first.result["model_version"]),  # type: ignore[index]
        30,
        what="online candidate.segmented",
    )
    assert event.causationid == cause.id
    request(kit.producer, kit.names, SegmentationRequested(), "assign-a")
    [assigned] = wait_for(
        lambda: collector.of("candidate.segments_assigned", lambda e: e.taskid == "assign-a"),
        30,
        what="batch assignment",
    )
    batch = assigned.payload().segments
    assert len(batch) == 25
    # The online segment is the batch one: the newcomer sits with the candidates it copies.
    assert segment_of(event) == batch["newcomer"] == batch[profiles[-1]["candidate_id"]]

    second = train(kit, collector, "train-b", n_clusters=2)
    assert second.result is not None
    upsert(kit.producer, kit.names, {**profiles[0], "candidate_id": "latecomer"})
    wait_for(
        lambda: online("latecomer", second.result["model_version"]),  # type: ignore[index]
        30,
        what="online assignment with the newer model",
    )


SCALE = 20_000


def test_twenty_thousand_upserts_are_stored_trained_on_and_assigned_in_batches(
    ml: Worker, kit: ServiceKit, collector: EventCollector
) -> None:
    profiles = scale_profiles(SCALE, seed=11)
    updated_at = datetime.now(UTC)
    upserts = [CandidateUpserted(**{**p, "updated_at": updated_at}) for p in profiles]
    # Half one record per candidate (as upstream producers send them), half in records of
    # 1,000 (as the gateway's bulk intake sends them).
    half = SCALE // 2
    singles = [new_event(u, source="test", subject=u.candidate_id) for u in upserts[half:]]
    batches = [
        new_event(
            CandidatesUpserted(candidates=upserts[i : i + 1000]),
            source="test",
            subject=upserts[i].candidate_id,
        )
        for i in range(0, half, 1000)
    ]
    # One of them again, older: it must not overwrite the newer profile.
    stale = CandidateUpserted(
        **{**profiles[0], "years_experience": 69.0, "updated_at": datetime(2020, 1, 1, tzinfo=UTC)}
    )
    singles.append(new_event(stale, source="test", subject=stale.candidate_id))
    kit.producer.send_envelopes(
        [(kit.names.topic("candidate.batch_upserted"), e) for e in batches]
        + [(kit.names.topic("candidate.upserted"), e) for e in singles]
    )
    wait_for(lambda: stored_candidates(kit) == SCALE, 60, what=f"{SCALE} stored candidates")
    with kit.db.session() as session:
        kept = session.get(Candidate, profiles[0]["candidate_id"])
        assert kept is not None and kept.years_experience == profiles[0]["years_experience"]
        # Batched: far fewer intake transactions than candidates (one tracking row each,
        # but profiles received within the same few instants).
        distinct = session.scalar(sa.select(sa.func.count(sa.distinct(Candidate.received_at))))
        assert distinct is not None and distinct < SCALE // 50

    success = train(kit, collector, "train-scale")
    assert success.result is not None
    metrics = success.result["metrics"]
    assert metrics["k_sample"] == SCALE and metrics["training_seconds"] > 0
    assert {"silhouette", "calinski_harabasz", "davies_bouldin", "inertia"} <= set(metrics)
    version = success.result["model_version"]
    [trained] = wait_for(
        lambda: collector.of("ml.model_trained", lambda e: e.taskid == "train-scale"),
        10,
        what="ml.model_trained",
    )
    assert trained.payload().metrics == metrics

    request(kit.producer, kit.names, SegmentationRequested(), "assign-scale")
    done = collector.wait_state("assign-scale", TaskState.SUCCESS, timeout=120)
    assert done.result is not None and done.result["total_candidates"] == SCALE
    assert done.result["changed_candidates"] == SCALE
    parts = wait_for(
        lambda: (
            found
            if len(
                found := collector.of(
                    "candidate.segments_assigned", lambda e: e.taskid == "assign-scale"
                )
            )
            == 2
            else None
        ),
        30,
        what="two candidate.segments_assigned events",
    )
    events: dict[str, int] = {}
    for part in parts:
        payload = part.payload()
        assert isinstance(payload, CandidateSegmentsAssigned) and payload.parts == 2
        assert payload.model_version == version
        events.update(payload.segments)
    with kit.db.session() as session:
        stored = dict(session.execute(sa.select(Segment.candidate_id, Segment.segment)).all())
        versions = set(session.scalars(sa.select(Segment.model_version).distinct()))
    assert stored == events and len(stored) == SCALE and versions == {version}
    assert len(set(stored.values())) == success.result["n_clusters"]
