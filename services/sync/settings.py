"""The sync service's settings: the ad platforms' plus its health port and batch size."""

from __future__ import annotations

from pydantic import Field

from shared.settings import WORKER_METRICS_PORTS, PlatformSettings


class SyncSettings(PlatformSettings):
    metrics_port: int = WORKER_METRICS_PORTS["sync"]
    # Campaign ids per platform call (Meta's `IN` filter and Google's GAQL `IN` both stay
    # well inside their limits at 100).
    sync_batch_size: int = Field(default=100, ge=1, le=1000)
