"""`python -m services.ml`: wires the ML handlers to Kafka and the ML database, starts the
online segment assignment (faust), then runs until SIGTERM."""

from __future__ import annotations

from services.ml.handlers import TrainModel, assign_segments, store_candidate
from services.ml.models import metadata
from services.ml.settings import MlSettings
from services.ml.stream import OnlineAssigner, OnlineSegmentation
from shared.events import CandidateUpserted, SegmentationRequested, TrainingRequested
from shared.service import ServiceKit, Worker, build_kit, serve
from shared.settings import get_settings


def compose(kit: ServiceKit, settings: MlSettings) -> Worker:
    """The worker around a runtime with the ML handlers registered, plus the online
    assignment when it is enabled."""
    runtime = kit.runtime()
    runtime.register(CandidateUpserted, store_candidate)
    runtime.register(
        TrainingRequested,
        TrainModel(random_state=settings.ml_random_state, max_clusters=settings.ml_max_clusters),
    )
    runtime.register(SegmentationRequested, assign_segments)
    if not settings.ml_online_enabled:
        return kit.worker(runtime)
    online = OnlineSegmentation(
        bootstrap=settings.kafka_bootstrap,
        names=kit.names,
        data_dir=settings.data_dir,
        assigner=OnlineAssigner(kit.db),
        producer=kit.producer,
        db=kit.db,
        processed=kit.processed,
        retention=kit.runtime_options().processed_retention,
    )
    return kit.worker(runtime, extra_components=[online], extra_readiness={"online": online.ready})


def main() -> None:
    settings = get_settings(MlSettings)
    kit = build_kit("ml", settings, metadata)
    serve(kit, compose(kit, settings), settings.metrics_port)


if __name__ == "__main__":
    main()
