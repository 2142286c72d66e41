"""The ticker's settings: tick interval, lease time-to-live, health port."""

from __future__ import annotations

from shared.settings import ServiceSettings


class TickerSettings(ServiceSettings):
    metrics_port: int = 9104
    ticker_interval: float = 1.0
    # A leader that has not renewed its lease for this long is replaced by a standby.
    ticker_lease_ttl: float = 10.0
    # A slot fired within this many seconds after its time is on time, not a misfire.
    ticker_grace: float = 30.0
