"""`python -m services.publisher`: wires the publish handler to Kafka, its database and the
ad platforms, then runs until SIGTERM."""

from __future__ import annotations

from adplatforms.quota_broadcast import shared_quota
from adplatforms.registry import platform_factories
from services.publisher.handlers import PublishCampaign
from services.publisher.models import metadata
from services.publisher.settings import PublisherSettings
from shared.events import PublishRequested
from shared.service import build_kit, serve
from shared.settings import get_settings


def main() -> None:
    settings = get_settings(PublisherSettings)
    kit = build_kit("publisher", settings, metadata)
    quota = shared_quota(kit, settings)
    publish = PublishCampaign(kit.db, platform_factories(settings, quota.quota))
    runtime = kit.runtime()
    runtime.register(PublishRequested, publish, on_failure=publish.on_failure)
    worker = kit.worker(
        runtime, extra_components=quota.components, extra_readiness={"quotas": quota.ready}
    )
    serve(kit, worker, settings.metrics_port)


if __name__ == "__main__":
    main()
