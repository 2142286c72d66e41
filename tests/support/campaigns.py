"""Publishing through the gateway's HTTP API as a user does — a job opening, a draft
campaign, its publish — in one place for every test that needs a campaign."""

from __future__ import annotations

from typing import Any

import httpx

JOB = {
    "title": "Registered nurse",
    "description": "Night shifts in the ICU of a public hospital.",
    "company": "Hospital Central",
    "location": "Madrid",
    "url": "https://jobs.example.org/nurse-1",
}


def create_job(client: httpx.Client) -> str:
    response = client.post("/jobs", json=JOB)
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def create_campaign(
    client: httpx.Client,
    platform: str,
    *,
    name: str | None = None,
    job_id: str | None = None,
    daily_budget: str = "25.50",
    targeting: dict[str, Any] | None = None,
) -> str:
    """A draft campaign (on a new job opening unless `job_id` is given); returns its id."""
    body: dict[str, Any] = {
        "name": name or f"Nurses Madrid ({platform})",
        "platform": platform,
        "job_id": job_id or create_job(client),
        "daily_budget": daily_budget,
        "currency": "EUR",
    }
    if targeting is not None:
        body["targeting"] = targeting
    response = client.post("/campaigns", json=body)
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def publish(client: httpx.Client, campaign_id: str, **options: Any) -> str:
    """Publish a draft campaign with task options; returns the publish's task id."""
    response = client.post(f"/campaigns/{campaign_id}/publish", json=options or None)
    assert response.status_code == 202, response.text
    return str(response.json()["task_id"])


def publish_new(client: httpx.Client, platform: str, **options: Any) -> tuple[str, str]:
    """A new campaign published: its id and the publish's task id."""
    campaign_id = create_campaign(client, platform)
    return campaign_id, publish(client, campaign_id, **options)
