"""`python -m services.publisher`: wires the publish handler to Kafka, its database and the
ad platforms, then runs until SIGTERM."""

from __future__ import annotations

import threading
from collections.abc import Callable

from services.publisher.handlers import PublishCampaign
from services.publisher.models import metadata
from services.publisher.platforms.base import AdPlatform
from services.publisher.settings import PublisherSettings
from shared.service import ServiceKit, build_kit, serve
from shared.settings import get_settings


def lazy(build: Callable[[], AdPlatform]) -> Callable[[], AdPlatform]:
    """Build an adapter on first use (the Google SDK is heavy) and reuse it afterwards."""
    built: list[AdPlatform] = []
    lock = threading.Lock()

    def get() -> AdPlatform:
        with lock:
            if not built:
                built.append(build())
            return built[0]

    return get


def platforms(settings: PublisherSettings) -> dict[str, Callable[[], AdPlatform]]:
    def meta() -> AdPlatform:
        from services.publisher.platforms.meta import MetaAdsPlatform

        return MetaAdsPlatform(settings)

    def google() -> AdPlatform:
        from services.publisher.platforms.google import GoogleAdsPlatform

        return GoogleAdsPlatform(settings)

    return {"meta": lazy(meta), "google": lazy(google)}


def bootstrap(settings: PublisherSettings) -> tuple[ServiceKit, list[object]]:
    kit = build_kit("publisher", settings, metadata)
    publish = PublishCampaign(kit.db, platforms(settings))
    runtime = kit.runtime()
    runtime.register("campaign.publish_requested", publish, on_failure=publish.on_failure)
    return kit, [kit.revocation_listener(), runtime]


def main() -> None:
    settings = get_settings(PublisherSettings)
    kit, components = bootstrap(settings)
    serve(
        kit,
        components,  # type: ignore[arg-type]
        {"database": kit.db.ready, "consumer": components[-1].healthy},  # type: ignore[attr-defined]
        settings.metrics_port,
    )


if __name__ == "__main__":
    main()
