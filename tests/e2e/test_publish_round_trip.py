"""Publishing through the whole system, as a user does it: HTTP API → outbox → Kafka →
publisher (real SDKs) → sandbox → status events → read model."""

from __future__ import annotations

import time
from typing import Any

import pytest

from infra.processes import ServiceProcess
from infra.waiting import wait_for
from tests.conftest import Gateway, Sandbox
from tests.support.campaigns import create_campaign, publish

pytestmark = pytest.mark.e2e


TARGETING = {"age_min": 21, "countries": ["ES"]}


def final_task(gateway: Gateway, task_id: str, timeout: float = 60) -> dict[str, Any]:
    def done() -> dict[str, Any] | None:
        task: dict[str, Any] = gateway.client.get(f"/tasks/{task_id}").json()
        return task if task["state"] in ("SUCCESS", "FAILURE", "REVOKED", "EXPIRED") else None

    return wait_for(done, timeout, 0.1, f"task {task_id} to finish")


@pytest.mark.parametrize(
    ("platform", "tree"),
    [
        ("meta", {"campaigns": 1, "adsets": 1, "adcreatives": 1, "ads": 1}),
        ("google", {"campaign_budgets": 1, "campaigns": 1, "ad_groups": 1, "ad_group_ads": 1}),
    ],
)
def test_publish_ends_success_with_one_campaign_tree_on_the_platform(
    gateway: Gateway,
    sandbox: Sandbox,
    publisher: ServiceProcess,
    platform: str,
    tree: dict[str, int],
) -> None:
    campaign_id = create_campaign(gateway.client, platform, targeting=TARGETING)
    started = time.monotonic()
    task = final_task(gateway, publish(gateway.client, campaign_id))
    elapsed = time.monotonic() - started
    assert task["state"] == "SUCCESS", task
    states = [h["state"] for h in task["history"]]
    assert states[:2] == ["PENDING", "STARTED"] and "PROGRESS" in states
    campaign = wait_for(
        lambda: (
            (c := gateway.client.get(f"/campaigns/{campaign_id}").json())["status"] == "active"
            and c
        ),
        30,
        0.1,
        "campaign active",
    )
    assert campaign["external_ids"] == task["result"]["external_ids"]
    assert set(campaign["external_ids"]) == set(
        {
            "meta": ["campaign", "adset", "creative", "ad"],
            "google": ["budget", "campaign", "ad_group", "ad"],
        }[platform]
    )
    assert sandbox.stats()[platform] == tree
    print(f"{platform} publish round trip: {elapsed * 1000:.0f} ms")


def test_permanent_platform_error_fails_the_task_with_the_platform_message_and_replay_recovers(
    gateway: Gateway, sandbox: Sandbox, publisher: ServiceProcess
) -> None:
    sandbox.fault(platform="meta", operation="create_adset", kind="permanent", rate=1.0)
    campaign_id = create_campaign(gateway.client, "meta", targeting=TARGETING)
    task_id = publish(gateway.client, campaign_id)
    task = final_task(gateway, task_id)
    assert task["state"] == "FAILURE"
    assert task["error"]["transient"] is False and task["error"]["message"]
    assert task["error"]["code"] == "100"
    campaign = wait_for(
        lambda: (
            (c := gateway.client.get(f"/campaigns/{campaign_id}").json())["status"] == "failed"
            and c
        ),
        30,
        0.1,
        "campaign failed",
    )
    assert campaign["last_error"]["message"] == task["error"]["message"]
    dead = wait_for(lambda: gateway.client.get("/dead-letters").json(), 30, 0.2, "dead letter")
    assert dead[0]["task_id"] == task_id and dead[0]["reason"] == "permanent"

    sandbox.clear_faults()  # the cause is removed: replay
    assert gateway.client.post(f"/dead-letters/{dead[0]['id']}/replay").status_code == 202
    wait_for(
        lambda: gateway.client.get(f"/tasks/{task_id}").json()["state"] == "SUCCESS",
        60,
        0.2,
        "replayed task SUCCESS",
    )
    assert sandbox.stats()["meta"] == {"campaigns": 1, "adsets": 1, "adcreatives": 1, "ads": 1}


def test_transient_errors_are_retried_through_the_tiers_until_success(
    gateway: Gateway, sandbox: Sandbox, publisher: ServiceProcess
) -> None:
    sandbox.fault(
        platform="google", operation="mutate_ad_groups", kind="transient", rate=1.0, count=2
    )
    campaign_id = create_campaign(gateway.client, "google", targeting=TARGETING)
    task = final_task(gateway, publish(gateway.client, campaign_id, retry_delay=0.5))
    assert task["state"] == "SUCCESS"
    retries = [h for h in task["history"] if h["state"] == "RETRY"]
    assert len(retries) == 2 and task["attempts"] == 3
    assert sandbox.stats()["google"] == {
        "campaign_budgets": 1,
        "campaigns": 1,
        "ad_groups": 1,
        "ad_group_ads": 1,
    }


def test_publisher_killed_between_steps_resumes_without_duplicates(
    gateway: Gateway, sandbox: Sandbox, publisher: ServiceProcess
) -> None:
    # The ad set call hangs for 4 s: the publisher is SIGKILLed while waiting in it, after the
    # campaign was created and stored.
    sandbox.fault(
        platform="meta", operation="create_adset", kind="latency", latency_ms=4000, count=1
    )
    campaign_id = create_campaign(gateway.client, "meta", targeting=TARGETING)
    task_id = publish(gateway.client, campaign_id)
    wait_for(lambda: sandbox.stats()["meta"]["campaigns"] == 1, 30, 0.05, "campaign created")
    requests = sandbox.stats()["requests"]
    wait_for(lambda: sandbox.stats()["requests"] > requests, 10, 0.05, "the ad set call to start")
    # The killed member's partitions move only after its session times out (~10 s), so the
    # restarted publisher resumes after the slow call has landed, and must find its ad set.
    publisher.kill()
    publisher.start()
    task = final_task(gateway, task_id, timeout=90)
    assert task["state"] == "SUCCESS", task
    wait_for(lambda: sandbox.stats()["meta"]["ads"] == 1, 30, 0.1, "ad created")
    assert sandbox.stats()["meta"] == {"campaigns": 1, "adsets": 1, "adcreatives": 1, "ads": 1}
