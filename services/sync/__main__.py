"""`python -m services.sync`: wires the sync handlers to Kafka, the sync service's database and
the ad platforms, then runs until SIGTERM."""

from __future__ import annotations

from collections.abc import Mapping

from adplatforms.quota_broadcast import shared_quota
from adplatforms.registry import PlatformFactory, platform_factories
from services.sync.handlers import CampaignSync, remember_published
from services.sync.models import metadata
from services.sync.settings import SyncSettings
from shared.events import CampaignPublished, MetricsRefreshRequested, SyncRequested
from shared.metrics import ReadyCheck
from shared.service import Component, ServiceKit, Worker, build_kit, serve
from shared.settings import get_settings


def compose(
    kit: ServiceKit,
    settings: SyncSettings,
    platforms: Mapping[str, PlatformFactory] | None = None,
) -> Worker:
    """The worker around a runtime with the sync handlers registered; the real adapters,
    sharing the platform quotas with every worker, unless `platforms` is given (tests pass
    in-memory ones)."""
    parts: list[Component] = []
    readiness: dict[str, ReadyCheck] = {}
    if platforms is None:
        quota = shared_quota(kit, settings)
        platforms = platform_factories(settings, quota.quota)
        parts, readiness = list(quota.components), {"quotas": quota.ready}
    sync = CampaignSync(platforms, settings.sync_id_filter_max)
    runtime = kit.runtime()
    runtime.register(CampaignPublished, remember_published)
    runtime.register(SyncRequested, sync.sync)
    runtime.register(MetricsRefreshRequested, sync.refresh_metrics)
    return kit.worker(runtime, extra_components=parts, extra_readiness=readiness)


def main() -> None:
    settings = get_settings(SyncSettings)
    kit = build_kit("sync", settings, metadata)
    serve(kit, compose(kit, settings), settings.metrics_port)


if __name__ == "__main__":
    main()
