"""The sync service's settings: the ad platforms' plus its health port and batch size."""

from __future__ import annotations

from shared.settings import PlatformSettings


class SyncSettings(PlatformSettings):
    metrics_port: int = 9102
    # Campaign ids per platform call.
    sync_batch_size: int = 100
