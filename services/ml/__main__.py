"""`python -m services.ml`: wires the ML handlers to Kafka and the ML database, starts the
online segment assignment (faust), then runs until SIGTERM."""

from __future__ import annotations

from dataclasses import dataclass

from services.ml.handlers import TrainModel, assign_segments, store_candidate
from services.ml.models import metadata
from services.ml.settings import MlSettings
from services.ml.stream import OnlineAssigner, OnlineSegmentation
from shared.events import CandidateUpserted, SegmentationRequested, TrainingRequested
from shared.metrics import ReadyCheck
from shared.runtime import ConsumerRuntime
from shared.service import Component, ServiceKit, build_kit, serve
from shared.settings import get_settings


@dataclass
class MlService:
    """The ML process's parts, in start order."""

    runtime: ConsumerRuntime
    online: OnlineSegmentation | None
    components: list[Component]
    readiness: dict[str, ReadyCheck]


def compose(kit: ServiceKit, settings: MlSettings) -> MlService:
    runtime = kit.runtime()
    runtime.register(CandidateUpserted, store_candidate)
    runtime.register(
        TrainingRequested,
        TrainModel(random_state=settings.ml_random_state, max_clusters=settings.ml_max_clusters),
    )
    runtime.register(SegmentationRequested, assign_segments)
    components: list[Component] = [kit.revocation_listener(), runtime]
    readiness: dict[str, ReadyCheck] = {"database": kit.db.ready, "consumer": runtime.ready}
    online = None
    if settings.ml_online_enabled:
        online = OnlineSegmentation(
            bootstrap=settings.kafka_bootstrap,
            names=kit.names,
            data_dir=settings.data_dir,
            assigner=OnlineAssigner(kit.db),
            producer=kit.producer,
        )
        components.append(online)
        readiness["online"] = online.ready
    return MlService(runtime, online, components, readiness)


def main() -> None:
    settings = get_settings(MlSettings)
    kit = build_kit("ml", settings, metadata)
    service = compose(kit, settings)
    serve(kit, service.components, service.readiness, settings.metrics_port)


if __name__ == "__main__":
    main()
