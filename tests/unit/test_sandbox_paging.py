"""The sandbox at scale: seeding many campaigns, the Graph API's page-size maximum and cursor
paging on the listing and insights edges, and Google's SearchStream over many rows."""

from __future__ import annotations

import base64
import importlib
from typing import Any

import pytest
from fastapi.testclient import TestClient

from services.sandbox.app import build_graph_app
from services.sandbox.faults import FaultInjector
from services.sandbox.google_search import SearchEngine
from services.sandbox.meta import MAX_PAGE_LIMIT
from services.sandbox.state import SandboxState

ACCOUNT = "act_1234"
TOKEN = {"access_token": "t"}


@pytest.fixture
def state() -> SandboxState:
    return SandboxState()


@pytest.fixture
def graph(state: SandboxState) -> TestClient:
    return TestClient(build_graph_app(state, FaultInjector()))


def follow(graph: TestClient, path: str, params: dict[str, Any]) -> list[dict[str, Any]]:
    """Every page of an edge, by its `paging.next` links as the SDKs do; one list per page."""
    pages = []
    answer = graph.get(path, params={**TOKEN, **params})
    while True:
        assert answer.status_code == 200, answer.text
        body = answer.json()
        pages.append(body)
        if "next" not in body["paging"]:
            return pages
        answer = graph.get(body["paging"]["next"])


@pytest.mark.parametrize("edge", ["campaigns", "insights"])
def test_a_limit_above_the_maximum_gets_the_graph_api_error(graph: TestClient, edge: str) -> None:
    for limit in (MAX_PAGE_LIMIT + 1, 0, -1, "many"):
        answer = graph.get(f"/v23.0/{ACCOUNT}/{edge}", params={**TOKEN, "limit": limit})
        assert answer.status_code == 400
        error = answer.json()["error"]
        assert error["code"] == 100 and error["type"] == "OAuthException"
        assert "limit" in error["message"]


def test_listing_pages_by_cursor_at_the_maximum(graph: TestClient, state: SandboxState) -> None:
    ids = state.seed_campaigns("meta", ACCOUNT, 12_000, paused_every=4)
    state.seed_campaigns("meta", "act_9999", 10)  # another account's: never listed

    pages = follow(
        graph,
        f"/v23.0/{ACCOUNT}/campaigns",
        {"limit": MAX_PAGE_LIMIT, "fields": "id,effective_status"},
    )

    assert [len(page["data"]) for page in pages] == [5000, 5000, 2000]
    listed = [row["id"] for page in pages for row in page["data"]]
    assert listed == ids
    statuses = [row["effective_status"] for page in pages for row in page["data"]]
    assert statuses.count("PAUSED") == 3000 and statuses[3] == "PAUSED"


def test_default_page_is_25_and_insights_page_the_same_way(
    graph: TestClient, state: SandboxState
) -> None:
    ids = state.seed_campaigns("meta", ACCOUNT, 60)
    small = graph.get(f"/v23.0/{ACCOUNT}/campaigns", params=TOKEN).json()
    assert len(small["data"]) == 25 and "next" in small["paging"]

    pages = follow(graph, f"/v23.0/{ACCOUNT}/insights", {"level": "campaign", "limit": 50})

    assert [len(page["data"]) for page in pages] == [50, 10]
    rows = [row for page in pages for row in page["data"]]
    assert [row["campaign_id"] for row in rows] == ids
    assert all(int(row["impressions"]) > 0 for row in rows)  # seeded an hour old


def test_a_forged_cursor_is_refused(graph: TestClient, state: SandboxState) -> None:
    state.seed_campaigns("meta", ACCOUNT, 3)
    for forged in ("%%%", '{"a": 1}', "[1]", base64.b64encode(b"-3").decode()):
        answer = graph.get(f"/v23.0/{ACCOUNT}/campaigns", params={**TOKEN, "after": forged})
        assert answer.status_code == 400 and answer.json()["error"]["code"] == 100, forged


def test_seed_endpoint_validates_and_counts_requests_per_platform(
    graph: TestClient, state: SandboxState
) -> None:
    made = graph.post("/_sandbox/seed", json={"platform": "meta", "owner": ACCOUNT, "count": 3})
    assert made.status_code == 201 and len(made.json()["external_ids"]) == 3
    for bad in ({"platform": "meta", "owner": ACCOUNT, "count": 0}, {"platform": "x", "count": 1}):
        assert graph.post("/_sandbox/seed", json=bad).status_code == 422
    graph.get(f"/v23.0/{ACCOUNT}/campaigns", params=TOKEN)
    stats = graph.get("/_sandbox/stats").json()
    assert stats["meta"]["campaigns"] == 3
    assert stats["requests_by_platform"] == {"meta": 1, "google": 0}


def test_search_stream_serves_every_row_in_one_call(state: SandboxState) -> None:
    ids = state.seed_campaigns("google", "555", 12_000, paused_every=10)
    types = importlib.import_module(
        f"google.ads.googleads.{state.google_api_version}.services.types.google_ads_service"
    )
    request = types.SearchGoogleAdsStreamRequest(
        customer_id="555",
        query="SELECT campaign.id, campaign.status, metrics.impressions FROM campaign"
        " WHERE segments.date DURING LAST_7_DAYS",
    )

    responses = SearchEngine(state, types).search_stream(request)

    assert [len(r.results) for r in responses] == [10_000, 2_000]  # the API's rows per message
    rows = [row for r in responses for row in r.results]
    assert [str(row.campaign.id) for row in rows] == ids
    assert sum(row.campaign.status.name == "PAUSED" for row in rows) == 1200
    assert all(row.metrics.impressions > 0 for row in rows[:50])
