"""The ML service, wired as `python -m services.ml` wires it, against the real broker and
PostgreSQL: candidates upserted, the `ml.train` and `ml.assign_segments` tasks, and the
faust agent's online assignment of new candidates."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
import sqlalchemy as sa

from infra.waiting import wait_for
from services.ml.__main__ import compose
from services.ml.models import Candidate, metadata
from services.ml.settings import MlSettings
from services.ml.stream import OnlineSegmentation
from shared.envelope import Envelope, new_event
from shared.events import (
    CandidateSegmented,
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
    topics = ["task.status", "ml.model_trained", "candidate.segmented"]
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


def test_training_then_assignment_emit_model_trained_and_candidate_segmented(
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
    segmented = wait_for(
        lambda: (
            found
            if len(found := collector.of("candidate.segmented", lambda e: e.taskid == "assign-1"))
            == 30
            else None
        ),
        20,
        what="30 candidate.segmented events",
    )
    by_group: dict[str, set[int]] = {}
    for event in segmented:
        assigned = event.payload()
        assert isinstance(assigned, CandidateSegmented)
        assert event.subject == assigned.candidate_id and assigned.model_version == version
        by_group.setdefault(assigned.candidate_id.split("-")[0], set()).add(assigned.segment)
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
    wait_for(
        lambda: len(collector.of("candidate.segmented", lambda e: e.taskid == "assign-a")) == 25,
        30,
        what="batch assignment",
    )
    batch = {
        e.subject: segment_of(e)
        for e in collector.of("candidate.segmented", lambda e: e.taskid == "assign-a")
    }
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
