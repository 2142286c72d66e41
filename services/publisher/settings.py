"""The publisher's settings: the ad platforms' plus its health port."""

from __future__ import annotations

from shared.settings import PlatformSettings


class PublisherSettings(PlatformSettings):
    metrics_port: int = 9101
