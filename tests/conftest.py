"""Fixtures: the real Kafka broker and PostgreSQL server, started once per session, and per
test a unique topic prefix and a fresh database, so tests never see each other's data."""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from infra import kafka_broker
from infra.ports import free_port
from infra.processes import ServiceProcess
from shared.db import Database, tracking_tables
from shared.topics import TopicNames, delete_topics, parse_tiers, provision_topics
from tests.support.kafka import EventCollector

ROOT = Path(__file__).resolve().parent.parent
# Short delay tiers so retries happen within a test.
TEST_TIERS = "1s:1,3s:3,10s:10"
TEST_MAX_PARTITIONS = 2


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    """A real broker: the one answering on ADFLUX_TEST_KAFKA_PORT (9092), else started here."""
    port = int(os.environ.get("ADFLUX_TEST_KAFKA_PORT", "9092"))
    spec = kafka_broker.BrokerSpec(port=port, controller_port=port + 1)
    started = kafka_broker.start(spec)
    yield spec.bootstrap
    if started:
        kafka_broker.stop(spec)


@pytest.fixture(scope="session")
def postgres_url() -> str:
    """The server's URL (ADFLUX_TEST_DATABASE_URL, else ensured by infra/postgres.sh)."""
    url = os.environ.get("ADFLUX_TEST_DATABASE_URL")
    if not url:
        url = subprocess.run(
            [str(ROOT / "infra" / "postgres.sh")], check=True, capture_output=True, text=True
        ).stdout.strip()
    return url


@pytest.fixture
def database_url(postgres_url: str) -> Iterator[str]:
    """A fresh PostgreSQL database for one test, dropped afterwards."""
    name = f"adflux_t_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(postgres_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    yield make_url(postgres_url).set(database=name).render_as_string(hide_password=False)
    with admin.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture
def topic_prefix() -> str:
    return f"t{uuid.uuid4().hex[:10]}."


@pytest.fixture
def names(topic_prefix: str, kafka_bootstrap: str) -> Iterator[TopicNames]:
    """This test's topic names, created on the broker and deleted after the test (a broker
    keeps files open for every partition: thousands of test topics exhaust them)."""
    topic_names = TopicNames(topic_prefix, parse_tiers(TEST_TIERS), TEST_MAX_PARTITIONS)
    provision_topics(kafka_bootstrap, topic_names)
    yield topic_names
    delete_topics(kafka_bootstrap, topic_names)


@pytest.fixture
def service_env(
    kafka_bootstrap: str, names: TopicNames, database_url: str, tmp_path: Path
) -> dict[str, str]:
    """Environment for service processes of this test (shared broker, own topics and DB)."""
    return {
        "ADFLUX_KAFKA_BOOTSTRAP": kafka_bootstrap,
        "ADFLUX_TOPIC_PREFIX": names.prefix,
        "ADFLUX_TOPIC_MAX_PARTITIONS": str(TEST_MAX_PARTITIONS),
        "ADFLUX_DATABASE_URL": database_url,
        "ADFLUX_RETRY_TIERS": TEST_TIERS,
        "ADFLUX_DEFAULT_RETRY_DELAY": "1",
        "ADFLUX_METRICS_PORT": "0",
        "ADFLUX_DATA_DIR": str(tmp_path / "data"),
        "ADFLUX_API_TOKEN": "test-token",
        "ADFLUX_LOG_JSON": "true",
    }


@dataclass
class Gateway:
    """A running gateway process and an authenticated client of its API."""

    url: str
    process: ServiceProcess
    client: httpx.Client
    token: str = "test-token"


@pytest.fixture
def gateway(service_env: dict[str, str], tmp_path: Path) -> Iterator[Gateway]:
    port = free_port()
    env = {
        **service_env,
        "ADFLUX_HTTP_PORT": str(port),
        "ADFLUX_API_TOKENS": json.dumps({"reader-token": ["tasks:read", "campaigns:read"]}),
    }
    process = ServiceProcess("gateway", env, tmp_path).start()
    url = f"http://127.0.0.1:{port}"
    try:
        process.wait_http_ok(f"{url}/readyz")
        with httpx.Client(
            base_url=f"{url}/api/v1", headers={"Authorization": "Bearer test-token"}, timeout=30
        ) as client:
            yield Gateway(url, process, client)
    finally:
        process.stop()


@dataclass
class Sandbox:
    """A running ad-platform sandbox process (Graph API over HTTP, Google Ads over gRPC)."""

    graph_url: str
    google_endpoint: str
    process: ServiceProcess

    def stats(self) -> dict[str, Any]:
        return dict(httpx.get(f"{self.graph_url}/_sandbox/stats", timeout=10).json())

    def fault(self, **rule: Any) -> None:
        response = httpx.post(f"{self.graph_url}/_sandbox/faults", json=rule, timeout=10)
        assert response.status_code < 300, response.text

    def assert_one_tree_per_publish(self, publishes: int) -> None:
        """Publishes alternate Meta (odd) and Google (even): exactly one object tree each."""
        metas, googles = (publishes + 1) // 2, publishes // 2
        stats = self.stats()
        assert stats["meta"] == {
            "campaigns": metas,
            "adsets": metas,
            "adcreatives": metas,
            "ads": metas,
        }
        assert stats["google"] == {
            "campaign_budgets": googles,
            "campaigns": googles,
            "ad_groups": googles,
            "ad_group_ads": googles,
        }

    def clear_faults(self) -> None:
        httpx.delete(f"{self.graph_url}/_sandbox/faults", timeout=10).raise_for_status()

    def env(self) -> dict[str, str]:
        """What a publisher or sync process needs to talk to this sandbox."""
        return {
            "ADFLUX_META_GRAPH_URL": self.graph_url,
            "ADFLUX_GOOGLE_ADS_ENDPOINT": self.google_endpoint,
        }


@contextmanager
def running_sandbox(directory: Path) -> Iterator[Sandbox]:
    """A sandbox process on free ports, logging into `directory`, stopped on exit."""
    meta_port, google_port = free_port(), free_port()
    env = {
        "ADFLUX_SANDBOX_META_PORT": str(meta_port),
        "ADFLUX_SANDBOX_GOOGLE_PORT": str(google_port),
    }
    process = ServiceProcess("sandbox", env, directory).start()
    graph_url = f"http://127.0.0.1:{meta_port}"
    try:
        process.wait_http_ok(f"{graph_url}/_sandbox/stats")
        yield Sandbox(graph_url, f"127.0.0.1:{google_port}", process)
    finally:
        process.stop()


@pytest.fixture
def sandbox(tmp_path: Path) -> Iterator[Sandbox]:
    with running_sandbox(tmp_path) as running:
        yield running


@pytest.fixture
def service_settings(
    kafka_bootstrap: str, names: TopicNames, database_url: str, tmp_path: Path
) -> dict[str, Any]:
    """Settings fields for building a service in-process on this test's topics and database."""
    return {
        "kafka_bootstrap": kafka_bootstrap,
        "topic_prefix": names.prefix,
        "topic_max_partitions": TEST_MAX_PARTITIONS,
        "database_url": database_url,
        "retry_tiers": TEST_TIERS,
        "default_retry_delay": 1,
        "data_dir": str(tmp_path / "data"),
        "metrics_port": 0,
        "log_json": False,
    }


@pytest.fixture
def tracking_db(database_url: str) -> Iterator[Database]:
    """A database schema holding only the shared tracking and outbox tables."""
    database = Database(database_url, "tracked")
    with database.engine.begin() as conn:
        conn.execute(sa.text('CREATE SCHEMA IF NOT EXISTS "tracked"'))
    metadata = sa.MetaData()
    tracking_tables(metadata)
    metadata.create_all(database.engine)
    yield database
    database.dispose()


@pytest.fixture
def sync_events(kafka_bootstrap: str, names: TopicNames) -> Iterator[EventCollector]:
    """What sync tests watch: task statuses and the campaign events a sync emits."""
    topics = ["task.status", "campaign.status_changed", "campaign.metrics_updated"]
    events = EventCollector(kafka_bootstrap, [names.topic(t) for t in topics])
    yield events
    events.close()
