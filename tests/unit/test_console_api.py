"""The console's task API in-process: search by every filter with cursor pages, a task's
timeline, and bulk revoke / replay that act only on a confirmation count."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from services.gateway.models import DeadLetter, Task
from tests.support.gateway import READER, InProcessGateway, in_process_gateway


@pytest.fixture
def gw(tmp_path: Path) -> Iterator[InProcessGateway]:
    yield from in_process_gateway(tmp_path)


def _run(gw: InProcessGateway, name: str = "ml.train", **body: object) -> str:
    response = gw.client.post("/api/v1/tasks", json={"name": name, **body})
    assert response.status_code == 202, response.text
    return str(response.json()["task_id"])


def _fail(gw: InProcessGateway, task_id: str, message: str) -> None:
    with gw.db.session() as session, session.begin():
        task = session.get(Task, task_id)
        assert task is not None
        task.state = "FAILURE"
        task.error = {"error_class": "PlatformError", "message": message, "transient": False}


def test_search_filters_and_pages_by_cursor_without_gaps_or_repeats(
    gw: InProcessGateway,
) -> None:
    ids = {_run(gw) for _ in range(7)}
    campaign_id = gw.campaign()
    publish = gw.client.post(f"/api/v1/campaigns/{campaign_id}/publish").json()["task_id"]
    _fail(gw, publish, "Invalid parameter: 100% bogus_budget")
    seen: list[str] = []
    cursor = None
    while True:
        params = {"name": "ml.train", "limit": 3, **({"cursor": cursor} if cursor else {})}
        page = gw.client.get("/api/v1/tasks", params=params)
        assert page.status_code == 200 and len(page.json()) <= 3
        seen += [t["task_id"] for t in page.json()]
        cursor = page.headers.get("x-next-cursor")
        if cursor is None:
            break
    assert len(seen) == 7 and set(seen) == ids

    def found(**params: str) -> list[str]:
        response = gw.client.get("/api/v1/tasks", params=params, headers=gw.as_(READER))
        assert response.status_code == 200, response.text
        return [t["task_id"] for t in response.json()]

    assert found(campaign_id=campaign_id) == [publish]
    assert found(state="failure") == [publish]
    assert found(error="100% BOGUS") == [publish] and found(error="100%_") == []
    [task] = gw.client.get("/api/v1/tasks", params={"campaign_id": campaign_id}).json()
    assert found(correlation_id=task["correlation_id"]) == [publish]
    future = (datetime.now(UTC) + timedelta(minutes=1)).isoformat()
    assert found(since=future) == [] and len(found(until=future)) == 8
    for bad, field in (({"cursor": "!!"}, "cursor"), ({"state": "DANCING"}, "state")):
        refused = gw.client.get("/api/v1/tasks", params=bad)
        assert refused.status_code == 422 and field in refused.text


def test_history_lists_every_transition_with_worker_error_and_duration(
    gw: InProcessGateway,
) -> None:
    task_id = _run(gw, kwargs={"n_clusters": 3})
    start = datetime.now(UTC)
    with gw.db.session() as session, session.begin():
        task = session.get(Task, task_id)
        assert task is not None
        task.history = [
            *task.history,
            {"state": "STARTED", "at": start.isoformat(), "attempt": 1, "worker": "ml"},
            {
                "state": "RETRY",
                "at": (start + timedelta(seconds=2)).isoformat(),
                "attempt": 1,
                "worker": "ml",
                "error": "timeout",
            },
            {
                "state": "STARTED",
                "at": (start + timedelta(seconds=5)).isoformat(),
                "attempt": 2,
                "worker": "ml",
            },
            {
                "state": "SUCCESS",
                "at": (start + timedelta(seconds=8.5)).isoformat(),
                "attempt": 2,
                "worker": "ml",
            },
        ]
        task.state, task.result = "SUCCESS", {"model_version": "v1"}
    history = gw.client.get(f"/api/v1/tasks/{task_id}/history", headers=gw.as_(READER)).json()
    assert history["kwargs"] == {"n_clusters": 3} and history["result"] == {"model_version": "v1"}
    steps = [
        (t["state"], t["attempt"], t["worker"], t["error"], t["duration"])
        for t in history["transitions"]
    ]
    assert steps == [
        ("PENDING", 0, "gateway", None, None),
        ("STARTED", 1, "ml", None, None),
        ("RETRY", 1, "ml", "timeout", 2.0),
        ("STARTED", 2, "ml", None, None),
        ("SUCCESS", 2, "ml", None, 3.5),
    ]
    assert gw.client.get("/api/v1/tasks/nope/history").status_code == 404


def test_bulk_revoke_acts_only_on_a_matching_confirmation(gw: InProcessGateway) -> None:
    scheduled = {_run(gw, countdown=600) for _ in range(3)}
    done = _run(gw)
    _fail(gw, done, "final already")
    dry = gw.client.post("/api/v1/tasks/revoke", json={"name": "ml.train"})
    assert dry.status_code == 200 and dry.json()["matched"] == 3 and dry.json()["done"] == 0
    assert set(dry.json()["task_ids"]) == scheduled
    stale = gw.client.post("/api/v1/tasks/revoke", json={"name": "ml.train", "confirm": 2})
    assert stale.status_code == 409 and "confirm" in stale.text
    assert gw.client.get("/api/v1/tasks", params={"state": "REVOKED"}).json() == []
    acted = gw.client.post("/api/v1/tasks/revoke", json={"name": "ml.train", "confirm": 3})
    assert acted.json()["done"] == 3
    revoked = gw.client.get("/api/v1/tasks", params={"state": "REVOKED"}).json()
    assert {t["task_id"] for t in revoked} == scheduled
    unknown = gw.client.post("/api/v1/tasks/revoke", json={"nmae": "ml.train"})
    assert unknown.status_code == 422 and "nmae" in unknown.text
    reader = gw.client.post("/api/v1/tasks/revoke", json={}, headers=gw.as_(READER))
    assert reader.status_code == 403


def test_bulk_replay_replays_dead_letters_of_failed_tasks_only(gw: InProcessGateway) -> None:
    failed, succeeded = _run(gw), _run(gw)
    _fail(gw, failed, "boom")
    with gw.db.session() as session, session.begin():
        task = session.get(Task, succeeded)
        assert task is not None
        task.state = "SUCCESS"
        for n, task_id in enumerate((failed, succeeded)):
            session.add(
                DeadLetter(
                    id=f"unit.ml.training_requested.dlq:0:{n}",
                    dlq_topic="unit.ml.training_requested.dlq",
                    original_topic="ml.training_requested",
                    task_id=task_id,
                    key=b"k",
                    value=b"{}",
                    headers=[],
                )
            )
    dry = gw.client.post("/api/v1/tasks/replay", json={"name": "ml.train"}).json()
    assert (dry["matched"], dry["task_ids"]) == (1, [failed])
    acted = gw.client.post("/api/v1/tasks/replay", json={"name": "ml.train", "confirm": 1})
    assert acted.json()["done"] == 1
    assert gw.client.get(f"/api/v1/tasks/{failed}").json()["state"] == "PENDING"
    assert gw.client.get(f"/api/v1/tasks/{succeeded}").json()["state"] == "SUCCESS"
    again = gw.client.post("/api/v1/tasks/replay", json={"name": "ml.train"}).json()
    assert again["matched"] == 0


def test_every_console_endpoint_is_in_the_openapi_schema(gw: InProcessGateway) -> None:
    paths = gw.client.get("/openapi.json").json()["paths"]
    for path in (
        "/api/v1/tasks",
        "/api/v1/tasks/{task_id}/history",
        "/api/v1/tasks/revoke",
        "/api/v1/tasks/replay",
    ):
        assert path in paths, path
    assert "X-Next-Cursor" in paths["/api/v1/tasks"]["get"]["responses"]["200"]["headers"]


def test_an_error_filter_with_control_characters_is_a_422_naming_it(gw: InProcessGateway) -> None:
    bulk = gw.client.post("/api/v1/tasks/revoke", json={"error": "r\u0000x"})
    listing = gw.client.get("/api/v1/tasks", params={"error": "a\x7fb"})
    for answer in (bulk, listing):
        assert answer.status_code == 422, answer.text
        assert "error" in str(answer.json()["detail"])
    assert gw.client.post("/api/v1/tasks/revoke", json={"error": "timeout"}).status_code == 200
