"""The ticker's settings: tick interval, on-time grace, lease time-to-live, health port."""

from __future__ import annotations

from shared.settings import WORKER_METRICS_PORTS, ServiceSettings


class TickerSettings(ServiceSettings):
    metrics_port: int = WORKER_METRICS_PORTS["ticker"]
    # Seconds between ticks: how late an on-time slot fires at most (plus the database).
    ticker_interval: float = 1.0
    # A slot fired within this many seconds after its time is on time, not a misfire. It
    # covers a slow tick and a leader takeover, so a `skip` schedule loses no slot to either.
    ticker_grace: float = 30.0
    # Embedded SQLite only (PostgreSQL uses an advisory lock that dies with its holder): a
    # leader that has not renewed its lease for this long is replaced by a standby.
    ticker_lease_ttl: float = 10.0
