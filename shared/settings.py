"""Settings from `ADFLUX_*` environment variables: one base class, one subclass per service."""

from __future__ import annotations

from functools import cache
from typing import Any, Literal, TypeVar

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from shared.redaction import register_secrets
from shared.topics import DEFAULT_TIERS

# Each worker's /metrics, /healthz and /readyz port by default (the gateway serves them on
# its HTTP port). One table: the workers' settings and the gateway's health checks read it.
WORKER_METRICS_PORTS = {"publisher": 9101, "sync": 9102, "ml": 9103, "ticker": 9104}


class ServiceSettings(BaseSettings):
    """What every AdFlux process reads: broker, database, topic namespace, logging."""

    model_config = SettingsConfigDict(env_prefix="ADFLUX_", extra="ignore")

    kafka_bootstrap: str = "127.0.0.1:9092"
    # Address every server of the process listens on (the gateway's HTTP API, a worker's
    # /metrics, /healthz and /readyz): loopback unless a container file says 0.0.0.0.
    bind_address: str = "127.0.0.1"
    # Prepended to every topic and consumer group name; tests give each run its own.
    topic_prefix: str = ""
    # Caps every topic's partitions (0: as declared in shared/topics.py).
    topic_max_partitions: int = 0
    # Partitions of each delay-tier and dead-letter topic (docs/guarantees.md: one keeps every
    # consumer's fetches small; raise it when retries are a large share of a worker's load).
    retry_topic_partitions: int = Field(default=1, ge=1)
    # Replicas of every topic and the in-sync replicas a write needs: 1/1 on one broker, 3/2 on
    # a three-broker cluster (`make kafka BROKERS=3`, compose's cluster profile).
    topic_replication_factor: int = 1
    topic_min_insync_replicas: int = 1
    # SQLAlchemy URL. Empty: an SQLite file per service under `data_dir` (embedded default).
    database_url: str = ""
    data_dir: str = ".run/data"
    log_level: str = "INFO"
    log_json: bool = True
    # Port of /metrics, /healthz and /readyz (each service sets its own default).
    metrics_port: int = 0
    # Retry tiers as "<name>:<seconds>" (docs/guarantees.md); tests use seconds.
    retry_tiers: str = DEFAULT_TIERS
    default_max_retries: int = 3
    default_retry_delay: float = 60.0
    default_time_limit: float = 3600.0
    # Worker runtime: concurrent lanes (same key, same lane) and records in flight at most.
    lanes: int = Field(default=16, ge=1, le=1024)
    max_in_flight: int = Field(default=512, ge=1)
    # How long a handled event's tracking row (its dedupe key and outputs) is kept.
    processed_retention_days: float = Field(default=7.0, gt=0)
    schedules_file: str = "config/schedules.yaml"

    def model_post_init(self, context: Any, /) -> None:
        # Every secret this process knows is redacted from whatever text leaves it.
        register_secrets(secret_values(self))


def secret_values(settings: BaseSettings) -> list[str]:
    """The values of a settings object that must never leave the process: every `SecretStr`
    field, and the password of the database URL."""
    values = [
        value.get_secret_value()
        for name in type(settings).model_fields
        if isinstance(value := getattr(settings, name), SecretStr)
    ]
    url = getattr(settings, "database_url", "")
    if url:
        try:
            password = make_url(url).password
        except ArgumentError:
            password = None
        if password:
            values.append(str(password))
    return values


class PlatformSettings(ServiceSettings):
    """Credentials and endpoints of the two ad platforms (defaults: the local sandbox)."""

    meta_graph_url: str = "http://127.0.0.1:8010"
    meta_api_version: str = "v26.0"
    meta_access_token: SecretStr = SecretStr("sandbox-token")
    meta_app_secret: SecretStr | None = None
    meta_ad_account_id: str = "act_1000"
    meta_page_id: str = "2000"
    meta_timeout: float = 30.0

    google_ads_endpoint: str = "127.0.0.1:8011"
    # True for the local plaintext sandbox; False uses TLS (the real API).
    google_ads_insecure: bool = True
    google_ads_api_version: str = "v26"
    google_ads_developer_token: SecretStr = SecretStr("sandbox-developer-token")
    google_ads_customer_id: str = "1234567890"
    google_ads_login_customer_id: str | None = None
    google_ads_oauth_token: SecretStr = SecretStr("sandbox-oauth-token")
    google_ads_client_id: str | None = None
    google_ads_client_secret: SecretStr | None = None
    google_ads_refresh_token: SecretStr | None = None
    google_ads_timeout: float = 30.0

    # Calls per second per platform account across every worker, e.g. {"meta": 20} (JSON);
    # each worker takes its share (docs/platforms.md, rate limits). Empty: no limit.
    platform_calls_per_second: dict[Literal["meta", "google"], float] = {}
    # How often a worker counts the live workers that share those limits (seconds).
    platform_workers_refresh: float = 5.0


S = TypeVar("S", bound=ServiceSettings)


@cache
def get_settings(cls: type[S]) -> S:
    """The process-wide settings of one class, read once from the environment."""
    return cls()
