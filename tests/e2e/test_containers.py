"""The container deployment end to end: build every image, bring compose.yaml up with
podman-compose, publish a Meta and a Google campaign through the gateway container, check
that Prometheus scrapes every service and holds the task and consumer series, then tear the
stack down and check that no container, network or volume of it is left.

The first run builds the Debian bases and the images (~5 min on 2 cores); later runs reuse
every image whose inputs are unchanged. No engine is a failure, never a skip.
"""

from __future__ import annotations

import json
import secrets
import time
from functools import partial
from typing import Any

import httpx
import pytest

from infra.images import build
from infra.images.compose import Stack
from infra.ports import free_port
from infra.waiting import wait_for
from tests.support.campaigns import publish_new

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1800)]

SCRAPED = {"gateway", "publisher", "sync", "ml", "ticker"}
EXTERNAL_STEPS = {
    "meta": {"campaign", "adset", "creative", "ad"},
    "google": {"budget", "campaign", "ad_group", "ad"},
}


def engine() -> build.Engine:
    try:
        return build.detect_engine()
    except SystemExit as missing:
        pytest.fail(f"the container e2e needs podman or docker: {missing}")


def finished(client: httpx.Client, task_id: str) -> dict[str, Any] | None:
    task: dict[str, Any] = client.get(f"/tasks/{task_id}").json()
    return task if task["state"] in ("SUCCESS", "FAILURE", "REVOKED", "EXPIRED") else None


def active(client: httpx.Client, campaign_id: str) -> dict[str, Any] | None:
    campaign: dict[str, Any] = client.get(f"/campaigns/{campaign_id}").json()
    return campaign if campaign["status"] == "active" else None


def prometheus(stack: Stack, expr: str) -> list[dict[str, Any]]:
    """An instant query, sent from inside the gateway container (Prometheus is unpublished)."""
    url = httpx.URL("http://prometheus:9090/api/v1/query", params={"query": expr})
    fetch = "import sys, urllib.request; print(urllib.request.urlopen(sys.argv[1]).read().decode())"
    gateway = stack.container("gateway")
    assert gateway is not None
    answer = stack.engine.run("exec", gateway, "python", "-c", fetch, str(url), capture=True)
    body = json.loads(answer.stdout)
    assert body["status"] == "success", body
    return list(body["data"]["result"])


def every_target_up(stack: Stack) -> list[dict[str, Any]] | None:
    series = prometheus(stack, "up")
    services = {s["metric"].get("service") for s in series}
    return series if services == SCRAPED and all(s["value"][1] == "1" for s in series) else None


def test_compose_stack_publishes_is_scraped_and_leaves_nothing_behind() -> None:
    token, port = secrets.token_urlsafe(24), free_port()
    stack = Stack(
        engine(),
        project=f"adflux-e2e-{secrets.token_hex(4)}",
        variables={"ADFLUX_API_TOKEN": token, "ADFLUX_GATEWAY_PORT": str(port)},
    )
    started = time.monotonic()
    build.build_all(stack.engine)
    print(f"images ready in {time.monotonic() - started:.0f}s")
    try:
        print(f"stack healthy {stack.up(timeout=300):.0f}s after `up`")
        with httpx.Client(
            base_url=f"http://127.0.0.1:{port}/api/v1",
            headers={"Authorization": f"Bearer {token}"},
            timeout=30,
        ) as client:
            assert client.get("/tasks", headers={"Authorization": "Bearer wrong"}).is_client_error
            published = {platform: publish_new(client, platform) for platform in EXTERNAL_STEPS}
            for platform, (campaign_id, task_id) in published.items():
                task = wait_for(
                    partial(finished, client, task_id), 120, 0.5, f"{platform} task to finish"
                )
                assert task["state"] == "SUCCESS", task
                campaign = wait_for(
                    partial(active, client, campaign_id), 60, 0.5, f"{platform} campaign active"
                )
                assert set(campaign["external_ids"]) == EXTERNAL_STEPS[platform]
                assert all(campaign["external_ids"].values()), campaign
        wait_for(lambda: every_target_up(stack), 90, 2, "every scrape target up == 1")
        for series in ("adflux_tasks_total", "adflux_events_handled_total"):
            wait_for(partial(prometheus, stack, series), 60, 2, f"{series} in Prometheus")
        states = {s["metric"]["state"] for s in prometheus(stack, "adflux_tasks_total")}
        assert "SUCCESS" in states, states
        # PID 1 of every container handles its stop signal: all stop before the 20 s SIGKILL
        # (the services first, as compose stops them: before the broker and the database).
        stopping = time.monotonic()
        services = stack.services()
        backing = [name for name, service in services.items() if service in ("kafka", "postgres")]
        for wave in ([name for name in services if name not in backing], backing):
            stack.engine.run("stop", "--time", "20", *wave, capture=True)
        print(f"every container stopped on its stop signal in {time.monotonic() - stopping:.0f}s")
        codes = {service: stack.exit_code(name) for name, service in stack.services().items()}
        assert all(code != 137 for code in codes.values()), codes
        assert {codes[service] for service in SCRAPED | {"sandbox"}} == {0}, codes
    except BaseException:
        for service in ("kafka", "postgres", "sandbox", *sorted(SCRAPED), "prometheus"):
            print(f"--- {service} ---\n{stack.logs(service, tail=40)}")
        raise
    finally:
        removing = time.monotonic()
        leftovers = stack.down()
        print(f"stack removed in {time.monotonic() - removing:.0f}s")
    assert leftovers == [], f"compose down left {leftovers}"
    assert (stack.containers(), stack.networks(), stack.volumes()) == ([], [], [])
