"""What an operator tripped over, in-process: a replay never regresses a SUCCESS task, a
publish revoked or expired before it ran gives its campaign back as a draft, and the live
stream carries the gateway's own transitions, each with the time it was made."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest

from services.gateway.models import DeadLetter, Task
from services.gateway.projections import project_task_status
from shared.envelope import new_event
from shared.events import TaskState, TaskStatus
from shared.runtime import HandlerContext
from tests.support.gateway import InProcessGateway, in_process_gateway


@pytest.fixture
def gw(tmp_path: Path) -> Iterator[InProcessGateway]:
    yield from in_process_gateway(tmp_path)


def _dead_letter(gw: InProcessGateway, task_id: str) -> str:
    with gw.db.session() as session, session.begin():
        session.add(
            DeadLetter(
                id=f"unit.campaign.publish_requested.dlq:0:{task_id[:8]}",
                dlq_topic="unit.campaign.publish_requested.dlq",
                original_topic="campaign.publish_requested",
                task_id=task_id,
                key=b"k",
                value=b"{}",
                headers=[["ce_taskid", task_id]],
            )
        )
    return f"unit.campaign.publish_requested.dlq:0:{task_id[:8]}"


def _set_state(gw: InProcessGateway, task_id: str, state: TaskState) -> None:
    with gw.db.session() as session, session.begin():
        task = session.get(Task, task_id)
        assert task is not None
        task.state = state.value


def test_a_replay_runs_once_and_never_moves_a_success_back_to_pending(
    gw: InProcessGateway,
) -> None:
    task_id = gw.client.post("/api/v1/tasks", json={"name": "ml.train"}).json()["task_id"]
    _set_state(gw, task_id, TaskState.FAILURE)
    dead_id = _dead_letter(gw, task_id)
    first = gw.client.post(f"/api/v1/dead-letters/{dead_id}/replay")
    assert first.status_code == 202, first.text
    task = gw.client.get(f"/api/v1/tasks/{task_id}").json()
    assert task["state"] == "PENDING" and task["history"][-1]["replay"] is True
    _set_state(gw, task_id, TaskState.SUCCESS)  # the replay ran
    again = gw.client.post(f"/api/v1/dead-letters/{dead_id}/replay", params={"force": "true"})
    assert again.status_code == 409 and "succeeded" in again.json()["detail"]
    assert gw.client.get(f"/api/v1/tasks/{task_id}").json()["state"] == "SUCCESS"


def test_a_publish_revoked_before_it_ran_gives_the_campaign_back_as_a_draft(
    gw: InProcessGateway,
) -> None:
    campaign_id = gw.campaign()
    scheduled = gw.client.post(f"/api/v1/campaigns/{campaign_id}/publish", json={"countdown": 600})
    task_id = scheduled.json()["task_id"]
    assert gw.client.get(f"/api/v1/tasks/{task_id}").json()["state"] == "SCHEDULED"
    revoked = gw.client.post(f"/api/v1/tasks/{task_id}/revoke")
    assert revoked.json()["state"] == "REVOKED"
    campaign = gw.client.get(f"/api/v1/campaigns/{campaign_id}").json()
    assert campaign["status"] == "draft" and campaign["last_error"]["error_class"] == "TaskRevoked"
    republished = gw.client.post(f"/api/v1/campaigns/{campaign_id}/publish")
    assert republished.status_code == 202, republished.text


def test_a_publish_that_expired_on_its_worker_gives_the_campaign_back_as_a_draft(
    gw: InProcessGateway,
) -> None:
    campaign_id = gw.campaign()
    task_id = gw.client.post(f"/api/v1/campaigns/{campaign_id}/publish").json()["task_id"]
    status = TaskStatus(
        task_id=task_id,
        name="campaign.publish",
        state=TaskState.EXPIRED,
        attempt=1,
        at=datetime.now(UTC),
    )
    envelope = new_event(status, source="publisher", subject=task_id, taskid=task_id)
    with gw.db.session() as session, session.begin():
        project_task_status(
            envelope, status, cast(HandlerContext, SimpleNamespace(session=session))
        )
    campaign = gw.client.get(f"/api/v1/campaigns/{campaign_id}").json()
    assert campaign["status"] == "draft" and "expired" in campaign["last_error"]["message"]
    assert gw.client.post(f"/api/v1/campaigns/{campaign_id}/publish").status_code == 202


def test_the_stream_carries_the_gateways_own_transitions_with_their_time(
    gw: InProcessGateway,
) -> None:
    with gw.client.websocket_connect("/api/v1/tasks/stream") as ws:
        task_id = gw.client.post(
            "/api/v1/tasks", json={"name": "ml.train", "countdown": 600}
        ).json()["task_id"]
        scheduled: dict[str, Any] = ws.receive_json()
        gw.client.post(f"/api/v1/tasks/{task_id}/revoke")
        revoked: dict[str, Any] = ws.receive_json()
        _set_state(gw, task_id, TaskState.FAILURE)
        gw.client.post(f"/api/v1/dead-letters/{_dead_letter(gw, task_id)}/replay")
        replayed: dict[str, Any] = ws.receive_json()
    assert [(m["task_id"], m["state"]) for m in (scheduled, revoked, replayed)] == [
        (task_id, "SCHEDULED"),
        (task_id, "REVOKED"),
        (task_id, "PENDING"),
    ]
    times = [datetime.fromisoformat(m["at"]) for m in (scheduled, revoked, replayed)]
    assert times == sorted(times) and all(t.tzinfo is not None for t in times)
