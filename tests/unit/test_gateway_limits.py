"""Hostile input at the gateway, in-process: every bad body, parameter or number is a 4xx that
names the field (413 for size), never a 500, and nothing of it reaches the outbox."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from services.gateway.api import outbox_of
from shared.outbox import Outbox
from tests.support.gateway import InProcessGateway, in_process_gateway


@pytest.fixture
def gw(tmp_path: Path) -> Iterator[InProcessGateway]:
    yield from in_process_gateway(tmp_path)


def fields_of(response: Any) -> set[str]:
    detail = response.json()["detail"]
    if isinstance(detail, str):
        return {detail.split(":")[0]}
    return {str(error["loc"][-1]) for error in detail} | {
        str(part) for error in detail for part in error["loc"]
    }


def post_raw(gw: InProcessGateway, path: str, raw: str | bytes) -> Any:
    return gw.client.post(path, content=raw, headers={"Content-Type": "application/json"})


def test_a_body_over_the_cap_is_413_before_it_is_read(gw: InProcessGateway) -> None:
    huge = {"name": "ml.train", "kwargs": {"x": "a" * 2_000_000}}
    response = post_raw(gw, "/api/v1/tasks", json.dumps(huge))
    assert response.status_code == 413
    campaign_id = gw.campaign()
    targeting = {"interests": ["x" * 1000] * 1500}  # 1.5 MB
    assert len(json.dumps(targeting)) > 1_400_000
    job_id = gw.client.get(f"/api/v1/campaigns/{campaign_id}").json()["job_id"]
    body = {
        "name": "n",
        "platform": "meta",
        "job_id": job_id,
        "daily_budget": "1",
        "currency": "EUR",
        "targeting": targeting,
    }
    assert gw.client.post("/api/v1/campaigns", json=body).status_code == 413
    assert gw.outbox_rows() == []


def test_free_form_fields_and_lists_are_capped(gw: InProcessGateway) -> None:
    campaign_id = gw.campaign()
    job_id = gw.client.get(f"/api/v1/campaigns/{campaign_id}").json()["job_id"]
    base = {"name": "n", "platform": "meta", "job_id": job_id, "daily_budget": "1"}
    big_targeting = {**base, "currency": "EUR", "targeting": {"k": "v" * 100_000}}
    response = gw.client.post("/api/v1/campaigns", json=big_targeting)
    assert response.status_code == 422 and "targeting" in fields_of(response)
    deep: dict[str, Any] = {}
    node = deep
    for _ in range(40):
        node["n"] = {}
        node = node["n"]
    response = gw.client.post(
        "/api/v1/campaigns", json={**base, "currency": "EUR", "targeting": deep}
    )
    assert response.status_code == 422 and "targeting" in fields_of(response)
    for body, field in (
        ({"name": "ml.train", "args": list(range(101))}, "args"),
        ({"name": "ml.train", "kwargs": {"k": "v" * 20_000}}, "kwargs"),
        ({"name": "x" * 101}, "name"),
    ):
        response = gw.client.post("/api/v1/tasks", json=body)
        assert response.status_code == 422 and field in fields_of(response), (field, response.text)
    ids = {"name": "ml.assign_segments", "kwargs": {"candidate_ids": ["c"] * 10_001}}
    assert gw.client.post("/api/v1/tasks", json=ids).status_code == 422
    assert (
        gw.client.post(
            "/api/v1/jobs", json={"title": "t" * 201, "company": "c", "url": "https://x.example"}
        ).status_code
        == 422
    )
    assert len(gw.outbox_rows()) == 0


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"countdown": 1e20}, "countdown"),
        ({"countdown": -1}, "countdown"),
        ({"time_limit": 1e9}, "time_limit"),
        ({"time_limit": 0}, "time_limit"),
        ({"retry_delay": 10**12}, "retry_delay"),
        ({"max_retries": 10**30}, "max_retries"),
        ({"expires": 1e300}, "expires"),
        ({"expires": "2031-01-01T00:00:00"}, "expires"),  # no UTC offset
        ({"eta": "2030-01-01T00:00:00"}, "eta"),
        ({"eta": "0001-01-01T00:00:00+14:00"}, "eta"),
        ({"eta": "9999-12-31T23:59:59Z"}, "eta"),
        ({"priority": "high"}, "priority"),  # no such option: refused, never ignored
    ],
)
def test_out_of_bounds_task_options_are_a_422_naming_the_field(
    gw: InProcessGateway, options: dict[str, Any], field: str
) -> None:
    response = gw.client.post("/api/v1/tasks", json={"name": "ml.train", **options})
    assert response.status_code == 422, response.text
    assert field in fields_of(response)
    campaign_id = gw.campaign()
    publish = gw.client.post(f"/api/v1/campaigns/{campaign_id}/publish", json=options)
    assert publish.status_code == 422 and field in fields_of(publish)
    assert gw.client.get(f"/api/v1/campaigns/{campaign_id}").json()["status"] == "draft"


def test_non_finite_numbers_are_refused(gw: InProcessGateway) -> None:
    for raw in (
        '{"name": "ml.train", "countdown": NaN}',
        '{"name": "ml.train", "time_limit": Infinity}',
    ):
        assert post_raw(gw, "/api/v1/tasks", raw).status_code == 422
    raw = '{"name": "ml.train", "kwargs": {"n_clusters": NaN}}'
    assert post_raw(gw, "/api/v1/tasks", raw).status_code == 422


def test_bounded_options_within_the_horizon_are_accepted(gw: InProcessGateway) -> None:
    eta = (datetime.now(UTC) + timedelta(days=29)).isoformat()
    ok = gw.client.post(
        "/api/v1/tasks",
        json={"name": "ml.train", "eta": eta, "time_limit": 86_400, "max_retries": 100},
    )
    assert ok.status_code == 202, ok.text
    assert gw.client.get(f"/api/v1/tasks/{ok.json()['task_id']}").json()["state"] == "SCHEDULED"


def test_currencies_are_iso_4217_and_budgets_fit_their_minor_units(gw: InProcessGateway) -> None:
    job_id = gw.client.post(
        "/api/v1/jobs", json={"title": "t", "company": "c", "url": "https://x.example"}
    ).json()["id"]
    base = {"name": "n", "platform": "meta", "job_id": job_id}
    xyz = gw.client.post("/api/v1/campaigns", json={**base, "daily_budget": "1", "currency": "XYZ"})
    assert xyz.status_code == 422 and "currency" in fields_of(xyz)
    cents = gw.client.post(
        "/api/v1/campaigns", json={**base, "daily_budget": "25.50", "currency": "JPY"}
    )
    assert cents.status_code == 422 and "daily_budget" in fields_of(cents)
    assert "JPY has 0 decimal places" in cents.text
    yen = gw.client.post(
        "/api/v1/campaigns", json={**base, "daily_budget": "2500", "currency": "JPY"}
    )
    assert yen.status_code == 201
    huge = gw.client.post(
        "/api/v1/campaigns", json={**base, "daily_budget": "1e30", "currency": "EUR"}
    )
    assert huge.status_code == 422 and "daily_budget" in fields_of(huge)


def test_malformed_json_and_unknown_tasks_are_clear_4xx(gw: InProcessGateway) -> None:
    broken = post_raw(gw, "/api/v1/tasks", b'{"name": "ml.train",')
    assert broken.status_code == 422 and broken.json()["detail"][0]["type"] == "json_invalid"
    unknown = gw.client.post("/api/v1/tasks", json={"name": "no.such.task"})
    assert unknown.status_code == 422 and "unknown task" in unknown.json()["detail"]
    assert post_raw(gw, "/api/v1/tasks", b"[1, 2]").status_code == 422
    assert gw.client.post("/api/v1/tasks", json={"name": "ml.train", "extra": 1}).status_code == 422


def test_nul_bytes_surrogates_and_control_characters_are_refused_unicode_kept(
    gw: InProcessGateway,
) -> None:
    job = {"title": "t", "company": "c", "url": "https://x.example"}
    for title in ("nul\x00name", "line\nbreak", "bell\x07"):
        response = gw.client.post("/api/v1/jobs", json={**job, "title": title})
        assert response.status_code == 422 and "title" in fields_of(response), title
    surrogate = '{"title": "bad \\ud800 half", "company": "c", "url": "https://x.example"}'
    response = post_raw(gw, "/api/v1/jobs", surrogate)
    assert response.status_code == 422 and "title" in fields_of(response)
    in_kwargs = '{"name": "ml.train", "kwargs": {"k": "\\udfff"}}'
    response = post_raw(gw, "/api/v1/tasks", in_kwargs)
    assert response.status_code == 422 and "surrogates" in response.text
    nul_description = gw.client.post("/api/v1/jobs", json={**job, "description": "a\x00b"})
    assert nul_description.status_code == 422 and "description" in nul_description.text
    nul_key = gw.client.post("/api/v1/tasks", json={"name": "ml.train", "kwargs": {"a\x00": 1}})
    assert nul_key.status_code == 422
    kept = gw.client.post("/api/v1/jobs", json={**job, "title": "Enfermería 🏥 نرس 看护"})
    assert kept.status_code == 201


def test_path_and_query_parameters_are_bounded(gw: InProcessGateway) -> None:
    for path in (
        "/api/v1/campaigns/%00",
        "/api/v1/tasks/" + "a" * 65,
        "/api/v1/tasks/%0A",
        "/api/v1/segments/%00",
        "/api/v1/tasks?name=%00",
        "/api/v1/dead-letters?topic=%00",
        "/api/v1/campaigns?platform=tiktok",
        "/api/v1/tasks?limit=100000000000000000000000",
    ):
        assert gw.client.get(path).status_code == 422, path
    assert gw.client.post("/api/v1/schedules/%00/run").status_code == 422
    assert gw.client.get("/api/v1/campaigns/nope").status_code == 404


def test_a_command_larger_than_the_broker_takes_is_413_and_not_stored(
    gw: InProcessGateway,
) -> None:
    tiny = Outbox(gw.outbox.table, gw.outbox.names, max_record_bytes=400)
    gw.app.dependency_overrides[outbox_of] = lambda: tiny
    intake = gw.app.state.intake
    intake.outbox, outbox = tiny, intake.outbox  # POST /tasks records through the intake
    try:
        response = gw.client.post("/api/v1/tasks", json={"name": "ml.train"})
        assert response.status_code == 413 and "too large" in response.json()["detail"]
        campaign_id = gw.campaign()
        publish = gw.client.post(f"/api/v1/campaigns/{campaign_id}/publish")
        assert publish.status_code == 413
    finally:
        gw.app.dependency_overrides.clear()
        intake.outbox = outbox
    assert gw.client.get(f"/api/v1/campaigns/{campaign_id}").json()["status"] == "draft"
    assert gw.client.get("/api/v1/tasks").json() == []
    assert gw.outbox_rows() == []
