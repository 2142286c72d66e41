"""The gateway's settings: HTTP port, API tokens, request limits, where the schedules file
is, and where the console finds each worker's readiness (the address it listens on is the
common `bind_address`)."""

from __future__ import annotations

from pydantic import Field, SecretStr

from shared.settings import WORKER_METRICS_PORTS, ServiceSettings

DEFAULT_API_TOKEN = "dev-token"
WORKER_HEALTH_URLS = {
    service: f"http://127.0.0.1:{port}/readyz" for service, port in WORKER_METRICS_PORTS.items()
}


class GatewaySettings(ServiceSettings):
    # Bearer token with every scope. The default is refused on a non-loopback bind_address.
    api_token: SecretStr = SecretStr(DEFAULT_API_TOKEN)
    # Extra tokens with limited scopes, as JSON: {"<token>": ["tasks:read", ...]}.
    api_tokens: SecretStr = SecretStr("")
    http_port: int = 8000
    # Lanes of the read-model consumer (its projections group-commit per lane).
    read_model_lanes: int = Field(default=2, ge=1, le=64)
    # Records the read-model consumer holds in flight. Projections are small and group-commit,
    # so a wide window costs little, and a burst (a sync's 10,000 metric events) flows instead
    # of stalling on backpressure's pause, seek and refetch every 512 records.
    read_model_max_in_flight: int = Field(default=4096, ge=1)
    # Largest request body accepted (413 above it).
    max_body_bytes: int = Field(default=1_048_576, ge=1024)
    # Lifetime of a WebSocket ticket (POST /api/v1/tickets).
    ticket_ttl: float = Field(default=60.0, gt=0, le=3600)
    # Each worker service's /readyz, as JSON {"<service>": "<url>"} (the console's workers).
    worker_health_urls: dict[str, str] = Field(default_factory=lambda: dict(WORKER_HEALTH_URLS))
    # Seconds between queue snapshots (lag gauges); 0: none in the background.
    queue_watch_interval: float = Field(default=15.0, ge=0)
