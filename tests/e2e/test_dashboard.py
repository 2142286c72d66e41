"""Every Grafana panel shows data: the services run as processes (as `make up` runs them),
Debian's Prometheus scrapes them with the `make observe` config, traffic covers what the
panels plot (publishes on both platforms, a retried and a dead-lettered one, a schedule
firing), and each panel's expression, sent to that Prometheus, returns series."""

from __future__ import annotations

import json
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest

from infra.ports import free_port
from infra.processes import ServiceProcess
from infra.prometheus.observe import LocalPrometheus
from infra.waiting import wait_for
from tests.conftest import Sandbox
from tests.support.campaigns import publish_new

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(400)]

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "infra" / "grafana" / "dashboards" / "adflux.json"


def panels() -> list[tuple[str, str]]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [(p["title"], t["expr"]) for p in dashboard["panels"] for t in p["targets"]]


@pytest.fixture
def services(
    service_env: dict[str, str], sandbox: Sandbox, tmp_path: Path
) -> Iterator[dict[str, int]]:
    """Gateway, publisher and ticker on free ports (the ticker firing every minute); returns
    each service's metrics port."""
    schedules = tmp_path / "schedules.yaml"
    schedules.write_text(
        "schedules:\n  every-minute:\n    task: metrics.refresh\n    cron: '* * * * *'\n"
    )
    ports = {name: free_port() for name in ("gateway", "publisher", "sync", "ml", "ticker")}
    env = {**service_env, **sandbox.env(), "ADFLUX_SCHEDULES_FILE": str(schedules)}
    processes = [
        ServiceProcess("gateway", {**env, "ADFLUX_HTTP_PORT": str(ports["gateway"])}, tmp_path),
        ServiceProcess(
            "publisher", {**env, "ADFLUX_METRICS_PORT": str(ports["publisher"])}, tmp_path
        ),
        ServiceProcess("ticker", {**env, "ADFLUX_METRICS_PORT": str(ports["ticker"])}, tmp_path),
    ]
    try:
        for process in processes:
            process.start()
        for process in processes:
            process.wait_http_ok(f"http://127.0.0.1:{ports[process.service]}/readyz")
        yield ports
    finally:
        for process in processes:
            process.stop()


def query(server: LocalPrometheus, expr: str) -> list[dict[str, Any]]:
    answer = httpx.get(f"{server.url}/api/v1/query", params={"query": expr}, timeout=10).json()
    assert answer["status"] == "success", answer
    return list(answer["data"]["result"])


def test_every_dashboard_panel_returns_series_from_the_observe_prometheus(
    services: dict[str, int], sandbox: Sandbox, tmp_path: Path
) -> None:
    server = LocalPrometheus(free_port(), tmp_path / "prometheus")
    server.start(services, scrape_interval="1s")
    try:
        with httpx.Client(
            base_url=f"http://127.0.0.1:{services['gateway']}/api/v1",
            headers={"Authorization": "Bearer test-token"},
            timeout=30,
        ) as client:
            sandbox.fault(platform="meta", operation="create_adset", kind="permanent", rate=1.0)
            sandbox.fault(
                platform="google", operation="mutate_ad_groups", kind="transient", count=2, rate=1.0
            )
            tasks = [
                publish_new(client, "meta")[1],
                publish_new(client, "google", retry_delay=0.5)[1],
            ]

            def finished() -> bool:
                states = [client.get(f"/tasks/{t}").json()["state"] for t in tasks]
                return states == ["FAILURE", "SUCCESS"]

            wait_for(finished, 60, 0.5, "a dead-lettered Meta and a retried Google publish")
        running = {"gateway", "publisher", "ticker"}

        def scraped() -> bool:
            return {s["metric"]["service"] for s in query(server, "up == 1")} == running

        wait_for(scraped, 30, 0.5, f"{running} scraped and up")
        for title, expr in panels():
            # The ticker fires on the next minute boundary: allow one minute and a scrape.
            wait_for(partial(query, server, expr), 90, 1, f"panel {title!r}: {expr}")
    finally:
        server.stop()
