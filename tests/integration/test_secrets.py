"""No secret leaves a process: every secret setting holds a sentinel, the gateway and the
publisher (as processes, against the sandbox) go through transient and permanent failures on
both platforms and an unreachable Graph API, and no sentinel appears in any API response,
Kafka record (value or header), table row or log line."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition
from pydantic import SecretStr
from sqlalchemy.engine import make_url

from infra.ports import free_port
from infra.processes import ServiceProcess
from infra.waiting import wait_for
from services.gateway.settings import GatewaySettings
from shared.settings import PlatformSettings
from shared.topics import TopicNames
from tests.conftest import Sandbox
from tests.support.campaigns import publish_new

pytestmark = pytest.mark.integration

RUN = uuid.uuid4().hex[:8]
# Setting it switches Google auth to an OAuth refresh against Google's token endpoint, which
# no test may call; its sentinel is still checked in every place below.
NOT_SET = {"google_ads_refresh_token"}


def secret_settings() -> list[str]:
    """Every SecretStr setting of the processes: a new one is covered without editing this."""
    names = set()
    for cls in (PlatformSettings, GatewaySettings):
        for name, info in cls.model_fields.items():
            if "SecretStr" in str(info.annotation) or info.annotation is SecretStr:
                names.add(name)
    return sorted(names)


SENTINELS = {name: f"SENTINEL{RUN}{name.replace('_', '')}" for name in secret_settings()}
DB_PASSWORD = f"SENTINEL{RUN}dbpassword"


@pytest.fixture
def secret_env(service_env: dict[str, str], database_url: str) -> Iterator[dict[str, str]]:
    """The test's environment with a sentinel in every secret setting, and a database role
    whose password is a sentinel too."""
    role = f"sentinel_{RUN}"
    url = make_url(database_url)
    admin = sa.create_engine(url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f"CREATE ROLE {role} LOGIN SUPERUSER PASSWORD '{DB_PASSWORD}'"))
    env = {
        **service_env,
        "ADFLUX_DATABASE_URL": url.set(username=role, password=DB_PASSWORD).render_as_string(
            hide_password=False
        ),
        "ADFLUX_LOG_LEVEL": "DEBUG",  # the most talkative the processes get
    }
    for name, value in SENTINELS.items():
        if name == "api_tokens":
            value = json.dumps({value: ["tasks:read"]})
        if name not in NOT_SET:
            env[f"ADFLUX_{name.upper()}"] = value
    yield env
    with admin.connect() as conn:
        conn.execute(sa.text(f'DROP OWNED BY "{role}" CASCADE'))
        conn.execute(sa.text(f'DROP ROLE IF EXISTS "{role}"'))
    admin.dispose()


def start(service: str, env: dict[str, str], tmp_path: Path, name: str) -> ServiceProcess:
    return ServiceProcess(service, env, tmp_path, name=name).start()


def final_task(client: httpx.Client, task_id: str, timeout: float = 90) -> dict[str, Any]:
    def done() -> dict[str, Any] | None:
        task: dict[str, Any] = client.get(f"/tasks/{task_id}").json()
        return task if task["state"] in ("SUCCESS", "FAILURE") else None

    return wait_for(done, timeout, 0.2, f"task {task_id} to finish")


def text_of(value: str | bytes | None) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value or "")


def kafka_texts(bootstrap: str, names: TopicNames) -> list[str]:
    """Every record of every topic of this test, value and headers, as text."""
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": f"leak-{RUN}", "enable.auto.commit": False}
    )
    texts: list[str] = []
    try:
        meta = consumer.list_topics(timeout=30)
        topics = [t for t in meta.topics if t.startswith(names.prefix)]
        consumer.assign(
            [
                TopicPartition(t, p, OFFSET_BEGINNING)
                for t in topics
                for p in meta.topics[t].partitions
            ]
        )
        idle = 0
        while idle < 20:
            msg = consumer.poll(0.25)
            if msg is None or msg.error() is not None:
                idle += 1
                continue
            idle = 0
            texts.append(text_of(msg.value()))
            headers: list[tuple[str, bytes]] = list(msg.headers() or [])  # type: ignore[arg-type]
            texts += [f"{key}={text_of(value)}" for key, value in headers]
    finally:
        consumer.close()
    return texts


def table_texts(database_url: str) -> list[str]:
    engine = sa.create_engine(database_url)
    texts: list[str] = []
    try:
        inspector = sa.inspect(engine)
        with engine.connect() as conn:
            for schema in ("gateway", "publisher"):
                for table in inspector.get_table_names(schema=schema):
                    rows = conn.execute(sa.text(f'SELECT * FROM "{schema}"."{table}"')).all()
                    texts += [repr(tuple(row)) for row in rows]
                    texts += [
                        bytes(v).decode(errors="replace")
                        for row in rows
                        for v in row
                        if isinstance(v, bytes | memoryview)
                    ]
    finally:
        engine.dispose()
    return texts


def test_no_sentinel_secret_leaves_any_process(
    secret_env: dict[str, str],
    sandbox: Sandbox,
    names: TopicNames,
    kafka_bootstrap: str,
    database_url: str,
    tmp_path: Path,
) -> None:
    assert {"meta_access_token", "google_ads_developer_token", "api_token"} <= set(SENTINELS)
    port = free_port()
    gateway = start("gateway", {**secret_env, "ADFLUX_HTTP_PORT": str(port)}, tmp_path, "gateway")
    url = f"http://127.0.0.1:{port}"
    closed_port = free_port()
    unreachable = {**secret_env, "ADFLUX_META_GRAPH_URL": f"http://127.0.0.1:{closed_port}"}
    responses: list[str] = []
    publisher = start("publisher", unreachable, tmp_path, "publisher-unreachable")
    try:
        gateway.wait_http_ok(f"{url}/readyz")
        token = SENTINELS["api_token"]
        client = httpx.Client(
            base_url=f"{url}/api/v1", headers={"Authorization": f"Bearer {token}"}, timeout=30
        )
        # The Graph API unreachable: the SDK's URL carries access_token and appsecret_proof.
        task = final_task(client, publish_new(client, "meta", max_retries=1, retry_delay=1)[1])
        assert task["state"] == "FAILURE", task
        assert "Graph API unreachable" in task["error"]["message"]
        publisher.stop()
        publisher = start("publisher", {**secret_env, **sandbox.env()}, tmp_path, "publisher")
        outcomes = {}
        for platform in ("meta", "google"):
            for kind, expected in (("transient", "SUCCESS"), ("permanent", "FAILURE")):
                sandbox.fault(platform=platform, operation="*", kind=kind, count=1)
                task = final_task(client, publish_new(client, platform, retry_delay=1)[1])
                sandbox.clear_faults()
                outcomes[(platform, kind)] = task["state"]
                assert task["state"] == expected, (platform, kind, task)
                if kind == "transient":
                    assert "RETRY" in [h["state"] for h in task["history"]], task
        # What a client (or an attacker with a reader token) can read back.
        for path in (
            "/tasks?limit=1000",
            "/campaigns?limit=1000",
            "/dead-letters?include_replayed=true",
            "/outbox/refused",
            "/schedules",
            "/segments",
            "/models",
        ):
            response = client.get(path)
            assert response.status_code == 200, (path, response.text)
            responses.append(response.text)
        for task in client.get("/tasks?limit=1000").json():
            responses.append(client.get(f"/tasks/{task['task_id']}").text)
        for dead in client.get("/dead-letters").json():
            replayed = client.post(f"/dead-letters/{dead['id']}/replay")
            responses.append(replayed.text)
        reader = SENTINELS["api_tokens"]
        for headers in ({"Authorization": f"Bearer {reader}"}, {"Authorization": "Bearer x"}, {}):
            responses.append(httpx.get(f"{url}/api/v1/tasks", headers=headers).text)
            responses.append(httpx.post(f"{url}/api/v1/jobs", headers=headers, json={}).text)
        responses.append(httpx.get(f"{url}/openapi.json").text)
        responses.append(httpx.get(f"{url}/metrics").text)
        assert len(client.get("/dead-letters?include_replayed=true").json()) >= 3
    finally:
        publisher.stop()
        gateway.stop()

    places = {
        "API responses": responses,
        "Kafka records": kafka_texts(kafka_bootstrap, names),
        "table rows": table_texts(secret_env["ADFLUX_DATABASE_URL"]),
        "log lines": [
            line
            for process in (gateway, publisher)
            for log in tmp_path.glob(f"{process.name.split('-')[0]}*.log")
            for line in log.read_text(errors="replace").splitlines()
        ],
    }
    assert places["Kafka records"] and places["table rows"] and places["log lines"]
    sentinels = [*SENTINELS.values(), DB_PASSWORD]
    leaks = [
        f"{where}: {value} in {text[:300]!r}"
        for where, texts in places.items()
        for text in texts
        for value in sentinels
        if value in text
    ]
    assert leaks == [], "\n".join(leaks[:20])
