"""The gateway as a process against the real broker and PostgreSQL: authentication, input
validation, the command outbox, the read model, live updates, dead letters and schedules."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import websockets

from infra.waiting import wait_for
from shared.envelope import new_event
from shared.events import (
    CampaignPublished,
    ErrorInfo,
    TaskState,
    TaskStatus,
)
from shared.producer import EventProducer, OutgoingRecord
from shared.runtime import ConsumedRecord
from shared.topics import TopicNames
from tests.conftest import Gateway
from tests.support.kafka import read_events, read_topic

pytestmark = pytest.mark.integration

JOB = {
    "title": "Registered nurse",
    "description": "Night shifts in the ICU",
    "company": "Hospital Central",
    "location": "Madrid",
    "url": "https://jobs.example.org/nurse-1",
}


def create_campaign(gateway: Gateway, platform: str = "meta") -> str:
    job = gateway.client.post("/jobs", json=JOB)
    assert job.status_code == 201, job.text
    campaign = gateway.client.post(
        "/campaigns",
        json={
            "name": "Nurses Madrid",
            "platform": platform,
            "job_id": job.json()["id"],
            "daily_budget": "25.50",
            "currency": "EUR",
            "targeting": {"age_min": 21},
        },
    )
    assert campaign.status_code == 201, campaign.text
    assert campaign.json()["status"] == "draft"
    return str(campaign.json()["id"])


def status_event(task_id: str, state: TaskState, attempt: int = 1, **fields: Any) -> Any:
    payload = TaskStatus(
        task_id=task_id,
        name="campaign.publish",
        state=state,
        attempt=attempt,
        at=datetime.now(UTC),
        **fields,
    )
    return new_event(payload, source="publisher", subject=task_id, taskid=task_id, attempt=attempt)


def test_requests_without_a_valid_token_or_scope_are_refused(gateway: Gateway) -> None:
    import httpx

    anonymous = httpx.get(f"{gateway.url}/api/v1/tasks")
    assert anonymous.status_code == 401
    wrong = httpx.get(f"{gateway.url}/api/v1/tasks", headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401
    reader = {"Authorization": "Bearer reader-token"}
    assert httpx.get(f"{gateway.url}/api/v1/tasks", headers=reader).status_code == 200
    forbidden = httpx.post(f"{gateway.url}/api/v1/jobs", json=JOB, headers=reader)
    assert forbidden.status_code == 403
    assert "jobs:write" in forbidden.json()["detail"]


def test_bad_input_gets_a_4xx_with_the_reason(gateway: Gateway) -> None:
    bad_job = gateway.client.post("/jobs", json={**JOB, "url": "not a url", "title": ""})
    assert bad_job.status_code == 422
    fields = {tuple(e["loc"])[-1] for e in bad_job.json()["detail"]}
    assert {"url", "title"} <= fields
    no_job = gateway.client.post(
        "/campaigns",
        json={
            "name": "x",
            "platform": "meta",
            "job_id": "missing",
            "daily_budget": "1",
            "currency": "EUR",
        },
    )
    assert no_job.status_code == 422 and "does not exist" in no_job.json()["detail"]
    bad_platform = gateway.client.post(
        "/campaigns",
        json={
            "name": "x",
            "platform": "tiktok",
            "job_id": "j",
            "daily_budget": "-1",
            "currency": "euro",
        },
    )
    assert bad_platform.status_code == 422
    assert gateway.client.get("/campaigns/nope").status_code == 404
    unknown_task = gateway.client.post("/tasks", json={"name": "no.such.task"})
    assert unknown_task.status_code == 422 and "unknown task" in unknown_task.json()["detail"]
    bad_kwargs = gateway.client.post(
        "/tasks", json={"name": "campaign.sync", "kwargs": {"platform": "x"}}
    )
    assert bad_kwargs.status_code == 422
    both = gateway.client.post(
        "/tasks",
        json={
            "name": "ml.train",
            "countdown": 5,
            "eta": (datetime.now(UTC) + timedelta(days=1)).isoformat(),
        },
    )
    assert both.status_code == 422 and "not both" in both.json()["detail"]
    assert gateway.client.get("/tasks", params={"state": "DANCING"}).status_code == 422


def test_publish_emits_the_command_through_the_outbox_and_refuses_a_second_publish(
    gateway: Gateway, names: TopicNames, kafka_bootstrap: str
) -> None:
    campaign_id = create_campaign(gateway)
    response = gateway.client.post(f"/campaigns/{campaign_id}/publish")
    assert response.status_code == 202
    task_id = response.json()["task_id"]
    assert gateway.client.get(f"/campaigns/{campaign_id}").json()["status"] == "publishing"
    task = gateway.client.get(f"/tasks/{task_id}").json()
    assert task["state"] == "PENDING" and task["name"] == "campaign.publish"
    again = gateway.client.post(f"/campaigns/{campaign_id}/publish")
    assert again.status_code == 409
    [command] = read_events(kafka_bootstrap, names.topic("campaign.publish_requested"), 1)
    assert command.taskid == task_id and command.subject == campaign_id
    payload = command.payload()
    assert payload.job.title == JOB["title"]  # type: ignore[attr-defined]
    assert str(payload.daily_budget) == "25.50"  # type: ignore[attr-defined]


def test_read_model_follows_status_and_domain_events(
    gateway: Gateway, names: TopicNames, kafka_bootstrap: str
) -> None:
    campaign_id = create_campaign(gateway)
    task_id = gateway.client.post(f"/campaigns/{campaign_id}/publish").json()["task_id"]
    producer = EventProducer(kafka_bootstrap, "test")
    topic = names.topic("task.status")
    producer.send(topic, status_event(task_id, TaskState.STARTED))
    producer.send(topic, status_event(task_id, TaskState.PROGRESS, progress=50))
    producer.send(topic, status_event(task_id, TaskState.SUCCESS, progress=100, result={"ok": 1}))
    producer.send(topic, status_event(task_id, TaskState.PROGRESS, progress=75))  # stale: ignored
    published = CampaignPublished(
        campaign_id=campaign_id,
        platform="meta",
        external_ids={"campaign": "123"},
        published_at=datetime.now(UTC),
    )
    producer.send(
        names.topic("campaign.published"),
        new_event(published, source="publisher", subject=campaign_id, taskid=task_id),
    )

    task = wait_for(
        lambda: (t := gateway.client.get(f"/tasks/{task_id}").json())["state"] == "SUCCESS" and t,
        30,
        0.2,
        "task SUCCESS",
    )
    assert task["result"] == {"ok": 1} and task["progress"] == 100
    assert [h["state"] for h in task["history"]] == ["PENDING", "STARTED", "PROGRESS", "SUCCESS"]
    campaign = wait_for(
        lambda: (
            (c := gateway.client.get(f"/campaigns/{campaign_id}").json())["status"] == "active"
            and c
        ),
        30,
        0.2,
        "campaign active",
    )
    assert campaign["external_ids"] == {"campaign": "123"}
    # Listings read the read model, which commits a transition after GET /tasks/{id} (the
    # live view) shows it.
    listed = wait_for(
        lambda: gateway.client.get(
            "/tasks", params={"state": "SUCCESS", "name": "campaign.publish"}
        ).json(),
        30,
        0.1,
        "the task listed as SUCCESS",
    )
    assert [t["task_id"] for t in listed] == [task_id]
    stored = gateway.client.get(f"/tasks/{task_id}").json()
    assert [h["state"] for h in stored["history"]] == ["PENDING", "STARTED", "PROGRESS", "SUCCESS"]


def test_websocket_streams_every_transition(
    gateway: Gateway, names: TopicNames, kafka_bootstrap: str
) -> None:
    producer = EventProducer(kafka_bootstrap, "test")
    ws_url = gateway.url.replace("http", "ws") + "/api/v1/tasks/stream"

    async def scenario() -> list[dict[str, Any]]:
        async with websockets.connect(
            ws_url, additional_headers={"Authorization": "Bearer test-token"}
        ) as ws:
            await subscribed(ws)
            for state in (TaskState.STARTED, TaskState.RETRY, TaskState.FAILURE):
                error = (
                    ErrorInfo(error_class="X", message="boom")
                    if state is not TaskState.STARTED
                    else None
                )
                producer.send(
                    names.topic("task.status"), status_event("ws-task", state, error=error)
                )
            received: list[dict[str, Any]] = []
            while len(received) < 3:
                update = json.loads(await asyncio.wait_for(ws.recv(), 20))
                if update["task_id"] == "ws-task":  # late probe updates are not ours
                    received.append(update)
            return received

    async def subscribed(ws: Any) -> None:
        """Until a probe transition comes through: from then on the stream has every one."""
        deadline = asyncio.get_running_loop().time() + 20
        while True:
            producer.send(names.topic("task.status"), status_event("ws-probe", TaskState.STARTED))
            try:
                await asyncio.wait_for(ws.recv(), 0.5)
                return
            except TimeoutError:
                assert asyncio.get_running_loop().time() < deadline, "never subscribed"

    updates = asyncio.run(scenario())
    assert [u["state"] for u in updates] == ["STARTED", "RETRY", "FAILURE"]
    assert all(u["task_id"] == "ws-task" for u in updates)

    async def refused() -> None:
        async with websockets.connect(ws_url) as ws:
            await ws.recv()

    with pytest.raises(websockets.exceptions.ConnectionClosed) as closed:
        asyncio.run(refused())
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 4401


def test_dead_letters_are_listed_and_replayed_with_attempts_reset(
    gateway: Gateway, names: TopicNames, kafka_bootstrap: str
) -> None:
    campaign_id = create_campaign(gateway)
    task_id = gateway.client.post(f"/campaigns/{campaign_id}/publish").json()["task_id"]
    [original] = read_topic(kafka_bootstrap, names.topic("campaign.publish_requested"), 1)
    headers = [(k, v) for k, v in ConsumedRecord.of(original).headers if k != "ce_attempt"] + [
        ("ce_attempt", b"4"),
        ("adflux-original-topic", names.topic("campaign.publish_requested").encode()),
        ("adflux-original-partition", str(original.partition()).encode()),
        ("adflux-original-offset", str(original.offset()).encode()),
        ("adflux-error-class", b"PermanentPlatformError"),
        ("adflux-error-message", b"(#100) Invalid parameter"),
        ("adflux-reason", b"permanent"),
        ("adflux-consumer-group", names.group("publisher").encode()),
    ]
    producer = EventProducer(kafka_bootstrap, "test")
    producer.send_batch(
        [
            OutgoingRecord(
                names.dlq("campaign.publish_requested"), original.key(), original.value(), headers
            )
        ]
    )
    dead = wait_for(
        lambda: gateway.client.get("/dead-letters").json(), 30, 0.3, "dead letter listed"
    )
    assert dead[0]["task_id"] == task_id and dead[0]["error_message"] == "(#100) Invalid parameter"
    assert dead[0]["attempts"] == 4 and dead[0]["reason"] == "permanent"
    replay = gateway.client.post(f"/dead-letters/{dead[0]['id']}/replay")
    assert replay.status_code == 202
    records = read_topic(kafka_bootstrap, names.topic("campaign.publish_requested"), 2)
    assert len(records) == 2
    replayed = dict(records[1].headers() or [])
    assert replayed["ce_attempt"] == b"1" and replayed["ce_taskid"] == task_id.encode()
    assert "adflux-error-class" not in replayed
    assert records[1].value() == original.value()
    assert gateway.client.get("/dead-letters").json() == []
    assert gateway.client.get(f"/tasks/{task_id}").json()["state"] == "PENDING"
    assert gateway.client.post("/dead-letters/nope/replay").status_code == 404


def test_revoke_marks_a_pending_task_and_tells_the_workers(
    gateway: Gateway, names: TopicNames, kafka_bootstrap: str
) -> None:
    task_id = gateway.client.post("/tasks", json={"name": "ml.train", "countdown": 60}).json()[
        "task_id"
    ]
    assert gateway.client.get(f"/tasks/{task_id}").json()["state"] == "SCHEDULED"
    revoked = gateway.client.post(f"/tasks/{task_id}/revoke")
    assert revoked.status_code == 202 and revoked.json()["state"] == "REVOKED"
    [event] = read_events(kafka_bootstrap, names.topic("task.revoked"), 1)
    assert event.subject == task_id
    assert gateway.client.post(f"/tasks/{task_id}/revoke").status_code == 409


def test_schedules_are_listed_and_run_on_demand(
    gateway: Gateway, names: TopicNames, kafka_bootstrap: str
) -> None:
    schedules = {s["name"]: s for s in gateway.client.get("/schedules").json()}
    assert schedules["sync-meta-campaigns"]["cron"] == "*/30 * * * *"
    assert schedules["train-ml-model"]["task"] == "ml.train"
    run = gateway.client.post("/schedules/sync-google-campaigns/run")
    assert run.status_code == 202
    [command] = read_events(kafka_bootstrap, names.topic("campaign.sync_requested"), 1)
    assert command.payload().platform == "google"  # type: ignore[attr-defined]
    assert command.taskid == run.json()["task_id"]
    assert gateway.client.post("/schedules/nope/run").status_code == 404


def test_monitor_page_and_health_endpoints_are_served(gateway: Gateway) -> None:
    import httpx

    page = httpx.get(f"{gateway.url}/monitor")
    assert page.status_code == 200 and "AdFlux task monitor" in page.text
    assert httpx.get(f"{gateway.url}/healthz").json() == {"status": "ok"}
    assert httpx.get(f"{gateway.url}/readyz").json()["status"] == "ready"
    assert "adflux_outbox_sent_total" in httpx.get(f"{gateway.url}/metrics").text
    assert (
        httpx.get(f"{gateway.url}/openapi.json").json()["info"]["title"] == "AdFlux Events gateway"
    )
