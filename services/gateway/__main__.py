"""`python -m services.gateway`: builds the gateway's clients, its read-model consumer and
outbox relay, and serves the HTTP API with uvicorn until SIGTERM."""

from __future__ import annotations

import sys

import uvicorn

from adplatforms.quota import ThrottleTable
from adplatforms.quota_broadcast import throttle_listener
from services.gateway.app import create_app
from services.gateway.auth import check_exposure
from services.gateway.candidates import segments_assigned
from services.gateway.cluster import KafkaInspector, QueueWatch
from services.gateway.commands import fail_refused_commands
from services.gateway.live import LiveTasks, TaskUpdateHub
from services.gateway.models import metadata
from services.gateway.projections import (
    CampaignProjection,
    DeadLetterRecorder,
    SegmentProjection,
    project_task_status,
    schedule_state,
)
from services.gateway.settings import DEFAULT_API_TOKEN, GatewaySettings
from shared.events import (
    CampaignMetricsUpdated,
    CampaignPublished,
    CampaignPublishFailed,
    CampaignStatusChanged,
    CandidateSegmented,
    CandidateSegmentsAssigned,
    ModelTrained,
    ScheduleStateChanged,
    TaskStatus,
)
from shared.service import build_kit, freeze_startup_objects
from shared.settings import get_settings
from shared.topics import TOPICS


def main() -> None:
    settings = get_settings(GatewaySettings)
    check_exposure(settings.bind_address, settings.api_token.get_secret_value(), DEFAULT_API_TOKEN)
    kit = build_kit("gateway", settings, metadata)
    hub = TaskUpdateHub()
    live = LiveTasks(hub)
    feed = kit.broadcast_listener("live-tasks", TaskStatus, live.observe, from_end=True)
    throttles = ThrottleTable()  # for the console and /metrics: platform.throttled, read whole
    throttle_feed = throttle_listener(kit, throttles)
    # Projections commit a poll batch per lane in one transaction; few lanes, one writer.
    runtime = kit.runtime(
        "gateway.read-model",
        group_commit=True,
        lanes=settings.read_model_lanes,
        max_in_flight=settings.read_model_max_in_flight,
    )
    runtime.register(TaskStatus, project_task_status, idempotent=True)
    campaigns, segments = CampaignProjection(), SegmentProjection()
    runtime.register(CampaignPublished, campaigns.published)
    runtime.register(CampaignPublishFailed, campaigns.publish_failed)
    runtime.register(CampaignStatusChanged, campaigns.status_changed)
    runtime.register(CampaignMetricsUpdated, campaigns.metrics_updated)
    runtime.register(ModelTrained, segments.model_trained)
    runtime.register(CandidateSegmented, segments.segmented)
    runtime.register(CandidateSegmentsAssigned, segments_assigned)
    runtime.register(ScheduleStateChanged, schedule_state)
    recorder = DeadLetterRecorder(kit.db, kit.names.logical)
    for spec in TOPICS:
        if spec.consumed:
            runtime.register_raw(kit.names.dlq(spec.name), recorder)
    relay = kit.relay()
    relay.on_refused = lambda session, rows: fail_refused_commands(session, rows, hub.publish)
    inspector = KafkaInspector(settings.kafka_bootstrap, kit.names, settings.worker_health_urls)
    watch = [QueueWatch(inspector, settings.queue_watch_interval)]
    worker = kit.worker(
        runtime,
        runs_commands=False,
        relay=relay,
        extra_components=[feed, throttle_feed, *(watch if settings.queue_watch_interval else [])],
        extra_readiness={"live-tasks": feed.ready},
    )
    app = create_app(settings, kit, live, worker.components, worker.readiness, inspector)
    app.state.throttles = throttles
    freeze_startup_objects()
    uvicorn.run(app, host=settings.bind_address, port=settings.http_port, log_config=None)
    if app.state.dead_components:
        sys.exit(f"gateway: {', '.join(app.state.dead_components)} stopped unexpectedly")


if __name__ == "__main__":
    main()
