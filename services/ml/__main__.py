"""`python -m services.ml`: wires the ML handlers to Kafka and the ML database, starts the
online segment assignment (faust), then runs until SIGTERM."""

from __future__ import annotations

from typing import Any

from services.ml.handlers import (
    INTAKE_GROUP,
    TrainModel,
    assign_segments,
    store_candidate,
    store_candidates,
)
from services.ml.models import metadata
from services.ml.settings import MlSettings
from services.ml.stream import OnlineAssigner, OnlineSegmentation
from shared.events import (
    CandidatesUpserted,
    CandidateUpserted,
    SegmentationRequested,
    TrainingRequested,
)
from shared.service import ServiceKit, Worker, build_kit, serve
from shared.settings import get_settings


def compose(kit: ServiceKit, settings: MlSettings) -> Worker:
    """The worker around a runtime with the ML commands registered, the candidate intake on a
    runtime of its own, plus the online assignment when it is enabled."""
    # Its own group, so a minute of training never holds candidates back; group commit with
    # big polls, so each lane's profiles are stored by one bulk upsert.
    intake = kit.runtime(
        INTAKE_GROUP,
        group_commit=True,
        batch_size=settings.ml_intake_batch,
        max_in_flight=settings.ml_intake_batch * 2,
        lanes=settings.ml_intake_lanes,
    )
    intake.register(CandidateUpserted, store_candidate)
    intake.register(CandidatesUpserted, store_candidates)
    runtime = kit.runtime()
    runtime.register(
        TrainingRequested,
        TrainModel(random_state=settings.ml_random_state, max_clusters=settings.ml_max_clusters),
    )
    runtime.register(SegmentationRequested, assign_segments)
    parts: dict[str, Any] = {"intake": intake}
    if settings.ml_online_enabled:
        parts["online"] = OnlineSegmentation(
            bootstrap=settings.kafka_bootstrap,
            names=kit.names,
            data_dir=settings.data_dir,
            assigner=OnlineAssigner(kit.db),
            producer=kit.producer,
            db=kit.db,
            processed=kit.processed,
            retention=kit.runtime_options().processed_retention,
        )
    return kit.worker(
        runtime,
        extra_components=list(parts.values()),
        extra_readiness={name: part.ready for name, part in parts.items()},
    )


def main() -> None:
    settings = get_settings(MlSettings)
    kit = build_kit("ml", settings, metadata)
    serve(kit, compose(kit, settings), settings.metrics_port)


if __name__ == "__main__":
    main()
