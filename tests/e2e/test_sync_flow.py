"""Syncing through the whole system: a published campaign's status and metrics flow from the
sandbox through the sync service into the gateway's read model."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from infra.processes import ServiceProcess
from infra.waiting import wait_for
from tests.conftest import Gateway, Sandbox
from tests.e2e.test_publish_round_trip import final_task
from tests.support.campaigns import create_campaign, publish

pytestmark = pytest.mark.e2e


def run_task(gateway: Gateway, name: str, **kwargs: Any) -> dict[str, Any]:
    response = gateway.client.post("/tasks", json={"name": name, "kwargs": kwargs})
    assert response.status_code == 202, response.text
    return final_task(gateway, response.json()["task_id"])


def test_sync_brings_platform_status_and_metrics_into_the_read_model(
    gateway: Gateway, sandbox: Sandbox, publisher: ServiceProcess, sync_worker: ServiceProcess
) -> None:
    campaign_id = create_campaign(gateway.client, "meta")
    published = final_task(gateway, publish(gateway.client, campaign_id))
    assert published["state"] == "SUCCESS", published
    # The task's result carries the ids; the campaign row gets them when the read model commits
    # campaign.published, a few milliseconds after the task shows SUCCESS.
    external_id = published["result"]["external_ids"]["campaign"]

    # The sync service learns the campaign from campaign.published; wait until a sync sees it.
    def synced() -> dict[str, Any] | None:
        task = run_task(gateway, "campaign.sync", platform="meta")
        return task if task["state"] == "SUCCESS" and task["result"]["updated"] == 1 else None

    task = wait_for(synced, 60, 0.5, "a sync that updates the campaign")
    assert task["result"]["total"] == 1 and task["result"]["failed"] == 0
    campaign = wait_for(
        lambda: (c := gateway.client.get(f"/campaigns/{campaign_id}").json())["metrics"] and c,
        30,
        0.2,
        "metrics in the read model",
    )
    assert campaign["status"] == "active"
    first_impressions = campaign["metrics"]["impressions"]

    # Someone pauses the campaign on the platform; the next sync notices.
    paused = httpx.post(
        f"{sandbox.graph_url}/v26.0/{external_id}/", data={"access_token": "t", "status": "PAUSED"}
    )
    assert paused.json() == {"success": True}
    assert run_task(gateway, "campaign.sync", platform="meta")["state"] == "SUCCESS"
    campaign = wait_for(
        lambda: (
            (c := gateway.client.get(f"/campaigns/{campaign_id}").json())["status"] == "paused"
            and c
        ),
        30,
        0.2,
        "status paused",
    )
    refreshed = run_task(gateway, "metrics.refresh")
    assert refreshed["state"] == "SUCCESS" and refreshed["result"]["updated"] == 1
    wait_for(
        lambda: (
            gateway.client.get(f"/campaigns/{campaign_id}").json()["metrics"]["impressions"]
            >= first_impressions
        ),
        30,
        0.2,
        "metrics refreshed",
    )
