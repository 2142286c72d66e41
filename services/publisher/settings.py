"""The publisher's settings: the ad platforms' plus its health port."""

from __future__ import annotations

from shared.settings import WORKER_METRICS_PORTS, PlatformSettings


class PublisherSettings(PlatformSettings):
    metrics_port: int = WORKER_METRICS_PORTS["publisher"]
