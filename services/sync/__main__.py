"""`python -m services.sync`: wires the sync handlers to Kafka, the sync service's database and
the ad platforms, then runs until SIGTERM."""

from __future__ import annotations

from services.publisher.platforms.registry import platform_factories
from services.sync.handlers import CampaignSync, remember_published
from services.sync.models import metadata
from services.sync.settings import SyncSettings
from shared.service import build_kit, serve
from shared.settings import get_settings


def main() -> None:
    settings = get_settings(SyncSettings)
    kit = build_kit("sync", settings, metadata)
    sync = CampaignSync(platform_factories(settings), settings.sync_batch_size)
    runtime = kit.runtime()
    runtime.register("campaign.published", remember_published)
    runtime.register("campaign.sync_requested", sync.sync)
    runtime.register("metrics.refresh_requested", sync.refresh_metrics)
    serve(
        kit,
        [kit.revocation_listener(), runtime],
        {"database": kit.db.ready, "consumer": runtime.healthy},
        settings.metrics_port,
    )


if __name__ == "__main__":
    main()
