"""Hostile input against the running system: malformed JSON, unknown tasks, huge numbers,
2 MB bodies, a 1.5 MB targeting, unicode and NUL bytes in names each get a clear 4xx, and a
normal publish right after still ends SUCCESS (nothing stuck in the outbox or the workers)."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from infra.processes import ServiceProcess
from infra.waiting import wait_for
from tests.conftest import Gateway, Sandbox

pytestmark = pytest.mark.e2e

JOB = {
    "title": "Registered nurse",
    "company": "Hospital Central",
    "location": "Madrid",
    "url": "https://jobs.example.org/nurse-1",
}


def raw(gateway: Gateway, path: str, body: str | bytes) -> httpx.Response:
    return gateway.client.post(path, content=body, headers={"Content-Type": "application/json"})


def test_hostile_input_gets_clear_4xx_and_a_normal_publish_still_succeeds(
    gateway: Gateway, sandbox: Sandbox, publisher: ServiceProcess
) -> None:
    job_id = gateway.client.post("/jobs", json=JOB).json()["id"]
    campaign = {
        "name": "Nurses Madrid",
        "platform": "meta",
        "job_id": job_id,
        "daily_budget": "25.50",
        "currency": "EUR",
    }
    two_mb = json.dumps({**campaign, "targeting": {"blob": "x" * 2_000_000}})
    targeting = {"interests": [f"interest {i} " + "y" * 990 for i in range(1500)]}  # ~1.5 MB
    hostile: list[tuple[str, str, Any, set[int]]] = [
        ("malformed JSON", "/tasks", b'{"name": "ml.train", "kwargs": {', {422}),
        ("not JSON at all", "/campaigns", b"\xff\xfe garbage", {400, 422}),
        ("unknown task", "/tasks", {"name": "no.such.task"}, {422}),
        ("huge countdown", "/tasks", {"name": "ml.train", "countdown": 1e20}, {422}),
        ("huge time limit", "/tasks", {"name": "ml.train", "time_limit": 1e300}, {422}),
        ("huge retries", "/tasks", {"name": "ml.train", "max_retries": 10**40}, {422}),
        ("huge budget", "/campaigns", {**campaign, "daily_budget": "1e40"}, {422}),
        ("made-up currency", "/campaigns", {**campaign, "currency": "XYZ"}, {422}),
        ("yen with cents", "/campaigns", {**campaign, "currency": "JPY"}, {422}),
        ("2 MB body", "/campaigns", two_mb, {413}),
        ("1.5 MB targeting", "/campaigns", {**campaign, "targeting": targeting}, {413}),
        ("NUL in a name", "/campaigns", {**campaign, "name": "Nurses\x00Madrid"}, {422}),
        ("NUL in a job title", "/jobs", {**JOB, "title": "Nurse\x00"}, {422}),
        (
            "unpaired surrogate",
            "/jobs",
            '{"title": "\\ud83c", "company": "c", "url": "https://x.org"}',
            {422},
        ),
        ("control characters", "/campaigns", {**campaign, "name": "Nurses\u0007\u001b[31m"}, {422}),
        ("NUL in kwargs", "/tasks", {"name": "ml.train", "kwargs": {"n_clusters\x00": 2}}, {422}),
    ]
    for what, path, body, expected in hostile:
        if isinstance(body, dict):
            response = gateway.client.post(path, json=body)
        else:
            response = raw(gateway, path, body)
        assert response.status_code in expected, (what, response.status_code, response.text[:300])
        assert response.headers["content-type"].startswith(("application/json", "text/plain"))
        assert len(response.content) < 10_000, what  # the input is not echoed back
    assert gateway.client.get("/campaigns/%00").status_code == 422
    assert gateway.client.get("/tasks", params={"name": "x\x00"}).status_code == 422

    # Unicode that is merely unusual is a name like any other.
    unicode_name = {**campaign, "name": "Enfermería 🏥 — نرس — 看护"}
    created = gateway.client.post("/campaigns", json=unicode_name)
    assert created.status_code == 201, created.text
    campaign_id = created.json()["id"]
    task_id = gateway.client.post(f"/campaigns/{campaign_id}/publish").json()["task_id"]

    def finished() -> dict[str, Any] | None:
        task: dict[str, Any] = gateway.client.get(f"/tasks/{task_id}").json()
        return task if task["state"] in ("SUCCESS", "FAILURE") else None

    task = wait_for(finished, 60, 0.1, "the normal publish to finish")
    assert task["state"] == "SUCCESS", task
    assert sandbox.stats()["meta"]["campaigns"] == 1
    assert gateway.client.get("/outbox/refused").json() == []
    assert gateway.client.get("/dead-letters").json() == []
