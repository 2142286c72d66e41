"""The sync service's settings: the ad platforms' plus its health port and how many campaigns
it still asks for by id."""

from __future__ import annotations

from pydantic import Field

from shared.settings import WORKER_METRICS_PORTS, PlatformSettings


class SyncSettings(PlatformSettings):
    metrics_port: int = WORKER_METRICS_PORTS["sync"]
    # Up to this many known campaigns of a platform are fetched with an id filter (Meta's
    # `IN` filter and GAQL's `IN`, both well inside their limits at 100) in one call; beyond
    # it (or at 0) sync reads the account's whole campaign list, whose call count does not
    # grow with the id count (README, "Sync").
    sync_id_filter_max: int = Field(default=100, ge=0, le=1000)
