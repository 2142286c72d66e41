"""The chaos test (issue: reliability core): ≥ 200 publishes across both platforms while the
sandbox fails 10 % of calls transiently, publishers are SIGKILLed and restarted, and the
broker is restarted once. Every task must end SUCCESS, with exactly one campaign tree per
publish on the sandbox and nothing dead-lettered."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from infra import kafka_broker
from infra.ports import free_port
from infra.processes import ServiceProcess
from infra.waiting import wait_for
from tests.conftest import Sandbox

pytestmark = [pytest.mark.e2e, pytest.mark.chaos]

PUBLISHES = int(os.environ.get("ADFLUX_CHAOS_PUBLISHES", "200"))
JOB = {
    "title": "Warehouse operator",
    "company": "Logistica SA",
    "location": "Zaragoza",
    "url": "https://jobs.example.org/warehouse",
    "description": "Shifts, forklift licence.",
}


@pytest.fixture
def chaos_broker(tmp_path: Path) -> Iterator[kafka_broker.BrokerSpec]:
    """A broker of this test's own, so restarting it disturbs no other test."""
    port = free_port()
    controller = free_port()
    spec = kafka_broker.BrokerSpec(
        port=port,
        controller_port=controller,
        data_dir=tmp_path / "kafka",
        pid_file=tmp_path / "kafka.pid",
        log_file=tmp_path / "kafka.log",
    )
    kafka_broker.start(spec)
    yield spec
    kafka_broker.stop(spec, sig=9)


def test_chaos_every_publish_succeeds_exactly_once(
    chaos_broker: kafka_broker.BrokerSpec,
    sandbox: Sandbox,
    service_env: dict[str, str],
    tmp_path: Path,
) -> None:
    env = {**service_env, **sandbox.env(), "ADFLUX_KAFKA_BOOTSTRAP": chaos_broker.bootstrap}
    port = free_port()
    gateway = ServiceProcess("gateway", {**env, "ADFLUX_HTTP_PORT": str(port)}, tmp_path).start()
    publishers = [
        ServiceProcess("publisher", env, tmp_path, name=f"publisher-{i}").start() for i in range(2)
    ]
    api = httpx.Client(
        base_url=f"http://127.0.0.1:{port}/api/v1",
        headers={"Authorization": "Bearer test-token"},
        timeout=30,
    )
    try:
        gateway.wait_http_ok(f"http://127.0.0.1:{port}/readyz")
        for platform in ("meta", "google"):
            sandbox.fault(platform=platform, operation="*", kind="transient", rate=0.1)

        started = time.monotonic()
        job_id = api.post("/jobs", json=JOB).json()["id"]
        tasks: list[str] = []
        kills = 0
        broker_restarted = False
        for i in range(PUBLISHES):
            platform = "meta" if i % 2 == 0 else "google"
            campaign = api.post(
                "/campaigns",
                json={
                    "name": f"Chaos {i}",
                    "platform": platform,
                    "job_id": job_id,
                    "daily_budget": "10.00",
                    "currency": "EUR",
                },
            ).json()
            # Generous retries: at a 10 % fault rate a 4-call flow fails ~34 % of attempts.
            response = api.post(
                f"/campaigns/{campaign['id']}/publish", json={"max_retries": 15, "retry_delay": 0.5}
            )
            assert response.status_code == 202, response.text
            tasks.append(response.json()["task_id"])
            if i in (40, 90, 140):
                victim = publishers[kills % 2]
                victim.kill()
                victim.start()
                kills += 1
            if i == 110:
                kafka_broker.stop(chaos_broker, sig=15)
                kafka_broker.start(chaos_broker)
                broker_restarted = True
        assert kills >= 3 and broker_restarted

        def all_succeeded() -> bool:
            done = api.get(
                "/tasks", params={"state": "SUCCESS", "name": "campaign.publish", "limit": 1000}
            )
            return done.status_code == 200 and len(done.json()) == PUBLISHES

        wait_for(all_succeeded, 300, 1.0, f"{PUBLISHES} publishes to succeed")
        elapsed = time.monotonic() - started
        failures = api.get("/tasks", params={"state": "FAILURE"}).json()
        assert failures == []
        stats = sandbox.stats()
        metas, googles = (PUBLISHES + 1) // 2, PUBLISHES // 2
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
        assert api.get("/dead-letters", params={"include_replayed": True}).json() == []
        active = api.get("/campaigns", params={"status": "active", "limit": 1000}).json()
        assert len(active) == PUBLISHES
        retried = sum(1 for t in tasks if api.get(f"/tasks/{t}").json()["attempts"] > 1)
        print(
            f"chaos: {PUBLISHES} publishes in {elapsed:.1f}s, {retried} retried, "
            f"{kills} publisher kills, 1 broker restart, {stats['requests']} platform requests"
        )
    finally:
        api.close()
        for process in (*publishers, gateway):
            process.stop()
