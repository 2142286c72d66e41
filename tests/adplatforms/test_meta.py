"""The Meta adapter on the real facebook-business SDK against the Graph API sandbox over
HTTP: the publish flow, resumption, error classification, insights, paging and batches."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import cast

import httpx
import pytest
from prometheus_client import REGISTRY

from adplatforms.base import (
    CampaignSpec,
    JobOpening,
    PermanentPlatformError,
    TransientPlatformError,
)
from adplatforms.meta import MetaAdsPlatform
from adplatforms.quota import PlatformQuota
from infra.waiting import wait_for
from shared.settings import PlatformSettings
from tests.conftest import running_sandbox
from tests.support.journal import MemoryJournal

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def graph_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with running_sandbox(Path(tmp_path_factory.mktemp("sandbox"))) as sandbox:
        yield sandbox.graph_url


@pytest.fixture
def meta(graph_url: str) -> MetaAdsPlatform:
    httpx.post(f"{graph_url}/_sandbox/reset").raise_for_status()
    return MetaAdsPlatform(PlatformSettings(meta_graph_url=graph_url))


def stats(graph_url: str) -> dict[str, int]:
    return dict(httpx.get(f"{graph_url}/_sandbox/stats").json()["meta"])


def fault(graph_url: str, **rule: object) -> None:
    httpx.post(f"{graph_url}/_sandbox/faults", json={"platform": "meta", **rule}).raise_for_status()


def spec(campaign_id: str = "c-1") -> CampaignSpec:
    job = JobOpening(
        "Nurse", "Night shifts", "Hospital Central", "Madrid", "https://jobs.example.org/1"
    )
    return CampaignSpec(
        campaign_id, "Nurses Madrid", Decimal("25.50"), "EUR", job, {"countries": ["ES"]}
    )


def test_publish_creates_exactly_one_tree(meta: MetaAdsPlatform, graph_url: str) -> None:
    ids = meta.create_campaign_flow(spec(), MemoryJournal())
    assert set(ids) == {"campaign", "adset", "creative", "ad"} and all(ids.values())
    assert stats(graph_url) == {"campaigns": 1, "adsets": 1, "adcreatives": 1, "ads": 1}
    adset = httpx.get(
        f"{graph_url}/v26.0/{ids['adset']}/",
        params={"access_token": "t", "fields": "daily_budget,targeting,campaign_id"},
    ).json()
    assert adset["daily_budget"] == "2550" and adset["campaign_id"] == ids["campaign"]
    assert adset["targeting"]["geo_locations"]["countries"] == ["ES"]


def test_resume_creates_only_the_missing_objects(meta: MetaAdsPlatform, graph_url: str) -> None:
    first = MemoryJournal()
    fault(graph_url, operation="create_adcreative", kind="transient", count=1)
    with pytest.raises(TransientPlatformError):
        meta.create_campaign_flow(spec(), first)
    assert set(first.ids) == {"campaign", "adset"}
    ids = meta.create_campaign_flow(spec(), first)
    assert ids["campaign"] == first.ids["campaign"]
    assert stats(graph_url) == {"campaigns": 1, "adsets": 1, "adcreatives": 1, "ads": 1}


def test_an_attempted_but_unrecorded_step_reuses_the_object_it_created(
    meta: MetaAdsPlatform, graph_url: str
) -> None:
    created = meta.create_campaign_flow(spec(), MemoryJournal())
    # A crash after the platform created the ad set, before its id was stored:
    journal = MemoryJournal({"campaign": created["campaign"]}, attempted={"adset"})
    ids = meta.create_campaign_flow(spec(), journal)
    assert ids["adset"] == created["adset"]
    assert stats(graph_url)["adsets"] == 1 and stats(graph_url)["campaigns"] == 1


def test_an_attempted_step_never_reuses_another_campaigns_object(
    meta: MetaAdsPlatform, graph_url: str
) -> None:
    other = meta.create_campaign_flow(spec("c-10"), MemoryJournal())
    ids = meta.create_campaign_flow(spec("c-1"), MemoryJournal(attempted={"campaign"}))
    assert ids["campaign"] != other["campaign"]
    assert stats(graph_url)["campaigns"] == 2


def test_permanent_error_carries_the_platform_code_and_message(
    meta: MetaAdsPlatform, graph_url: str
) -> None:
    fault(graph_url, operation="create_campaign", kind="permanent")
    with pytest.raises(PermanentPlatformError) as raised:
        meta.create_campaign_flow(spec(), MemoryJournal())
    assert raised.value.code == 100 and raised.value.subcode == 1885183
    assert "Invalid parameter" in raised.value.message and raised.value.http_status == 400


def test_expired_token_is_permanent(graph_url: str) -> None:
    from pydantic import SecretStr

    platform = MetaAdsPlatform(
        PlatformSettings(meta_graph_url=graph_url, meta_access_token=SecretStr("expired"))
    )
    with pytest.raises(PermanentPlatformError) as raised:
        platform.create_campaign_flow(spec(), MemoryJournal())
    assert raised.value.code == 190


def test_transient_and_rate_limit_errors_are_transient_with_retry_after(
    meta: MetaAdsPlatform, graph_url: str
) -> None:
    fault(graph_url, operation="create_campaign", kind="transient", count=1)
    with pytest.raises(TransientPlatformError) as transient:
        meta.create_campaign_flow(spec(), MemoryJournal())
    assert transient.value.code == 2 and transient.value.http_status == 500
    fault(graph_url, operation="create_campaign", kind="rate_limit", count=1)
    with pytest.raises(TransientPlatformError) as limited:
        meta.create_campaign_flow(spec(), MemoryJournal())
    assert limited.value.code == 17 and limited.value.retry_after == 1


def test_statuses_and_growing_insights_for_sync(meta: MetaAdsPlatform, graph_url: str) -> None:
    ids = [meta.create_campaign_flow(spec(f"c-{i}"), MemoryJournal())["campaign"] for i in range(3)]
    meta.set_campaign_status(ids[1], "paused")
    first = {s.external_id: s for s in meta.fetch_statuses_and_metrics(ids)}
    assert {k: v.status for k, v in first.items()} == {
        ids[0]: "active",
        ids[1]: "paused",
        ids[2]: "active",
    }
    # Metrics grow with the objects' age: wait until they have.
    later = wait_for(
        lambda: [
            snapshot
            for snapshot in meta.fetch_statuses_and_metrics(ids[:1])
            if snapshot.impressions > first[ids[0]].impressions
        ],
        timeout=15,
        what="impressions to grow",
    )
    assert [s.external_id for s in later] == [ids[0]]


def test_listing_follows_cursor_pages(graph_url: str, meta: MetaAdsPlatform) -> None:
    for i in range(7):
        meta.create_campaign_flow(spec(f"p-{i}"), MemoryJournal())
    params: dict[str, str | int] = {
        "access_token": "t",
        "limit": 3,
        "fields": "id,name",
        "summary": "true",
    }
    first = httpx.get(f"{graph_url}/v26.0/act_1000/campaigns", params=params).json()
    assert (
        len(first["data"]) == 3
        and "next" in first["paging"]
        and first["summary"]["total_count"] == 7
    )
    seen = [c["id"] for c in first["data"]]
    after = first["paging"]["cursors"]["after"]
    while True:
        page = httpx.get(
            f"{graph_url}/v26.0/act_1000/campaigns", params={**params, "after": after}
        ).json()
        seen += [c["id"] for c in page["data"]]
        if "next" not in page["paging"]:
            break
        after = page["paging"]["cursors"]["after"]
    assert len(seen) == len(set(seen)) == 7
    # The SDK's cursor walks the same pages.
    assert len(meta.fetch_statuses_and_metrics()) == 7
    forged = httpx.get(f"{graph_url}/v26.0/act_1000/campaigns", params={**params, "after": "x!"})
    assert forged.status_code == 400 and forged.json()["error"]["code"] == 100


def test_batch_answers_each_request(meta: MetaAdsPlatform, graph_url: str) -> None:
    ids = meta.create_campaign_flow(spec(), MemoryJournal())
    batch = [
        {"method": "GET", "relative_url": f"{ids['campaign']}?fields=name,status"},
        {"method": "GET", "relative_url": "999999?fields=name"},
    ]
    answers = httpx.post(
        f"{graph_url}/v26.0/", data={"access_token": "t", "batch": json.dumps(batch)}
    ).json()
    assert [a["code"] for a in answers] == [200, 400]
    assert json.loads(answers[0]["body"])["status"] == "ACTIVE"
    assert json.loads(answers[1]["body"])["error"]["code"] == 100


def test_a_publish_is_one_batch_request(meta: MetaAdsPlatform) -> None:
    def batches() -> float:
        sample = REGISTRY.get_sample_value(
            "adflux_platform_call_seconds_count",
            {"platform": "meta", "operation": "create_batch", "outcome": "ok"},
        )
        return sample or 0.0

    before = batches()
    meta.create_campaign_flow(spec("c-one"), MemoryJournal())
    assert batches() == before + 1


class CountingQuota:
    """Counts the tokens the adapter asks for; blocks nothing."""

    def __init__(self) -> None:
        self.admitted = 0

    def check(self, platform: str, account: str) -> None:
        pass

    def admit(self, platform: str, account: str) -> None:
        self.admitted += 1

    def observe(self, *_: object) -> None:
        pass

    def observe_meta_headers(self, *_: object) -> None:
        pass


def test_a_batch_takes_one_token_per_request_in_it(meta: MetaAdsPlatform, graph_url: str) -> None:
    quota = CountingQuota()
    paced = MetaAdsPlatform(PlatformSettings(meta_graph_url=graph_url), cast(PlatformQuota, quota))
    journal = MemoryJournal(
        ids={"campaign": meta.create_campaign_flow(spec("c-q0"), MemoryJournal())["campaign"]}
    )
    paced.create_campaign_flow(spec("c-q1"), MemoryJournal())
    assert quota.admitted == 4
    paced.create_campaign_flow(spec("c-q0"), journal)  # the campaign exists: three requests
    assert quota.admitted == 4 + 3


def test_batch_requests_refer_to_named_answers(meta: MetaAdsPlatform, graph_url: str) -> None:
    body = "name=Named+%5Badflux%3Ab-1%5D&objective=OUTCOME_LEADS&special_ad_categories=%5B%5D"
    batch = [
        {"method": "POST", "relative_url": "act_1/campaigns", "body": body, "name": "c"},
        {"method": "GET", "relative_url": "{result=c:$.id}?fields=name"},
        {
            "method": "POST",
            "relative_url": "act_1/campaigns",
            "body": body.replace("b-1", "b-2"),
            "name": "kept",
            "omit_response_on_success": False,
        },
        {"method": "GET", "relative_url": "{result=missing:$.id}?fields=name"},
        {"method": "GET", "relative_url": "{result=kept:$.id}?fields=name", "depends_on": "c"},
    ]
    answers = httpx.post(
        f"{graph_url}/v26.0/", data={"access_token": "t", "batch": json.dumps(batch)}
    ).json()
    assert answers[0] is None  # a named request's answer is omitted unless asked for
    assert json.loads(answers[1]["body"])["name"] == "Named [adflux:b-1]"
    assert answers[2]["code"] == 200 and json.loads(answers[2]["body"])["id"]
    assert answers[3]["code"] == 400  # no request of that name
    assert json.loads(answers[4]["body"])["name"] == "Named [adflux:b-2]"
    fault(graph_url, operation="create_campaign", kind="permanent", count=1)
    failing = [batch[0], {"method": "GET", "relative_url": "me", "depends_on": "c"}]
    answers = httpx.post(
        f"{graph_url}/v26.0/", data={"access_token": "t", "batch": json.dumps(failing)}
    ).json()
    assert [a["code"] for a in answers] == [400, 400]
    assert "depends on" in json.loads(answers[1]["body"])["error"]["message"]


def test_a_throttled_request_in_a_batch_keeps_its_wait(
    meta: MetaAdsPlatform, graph_url: str
) -> None:
    fault(graph_url, operation="create_adset", kind="throttle", count=1, block_seconds=7)
    journal = MemoryJournal()
    with pytest.raises(TransientPlatformError) as raised:
        meta.create_campaign_flow(spec("c-throttled"), journal)
    assert raised.value.retry_after == pytest.approx(7, abs=1)
    # The campaign came back before the block: kept, not redone (the rest met the block).
    assert set(journal.ids) == {"campaign"}


def test_fault_rules_fire_count_times_and_bad_rules_are_refused(
    meta: MetaAdsPlatform, graph_url: str
) -> None:
    fault(graph_url, operation="create_campaign", kind="transient", count=2)
    for _ in range(2):
        with pytest.raises(TransientPlatformError):
            meta.create_campaign_flow(spec(), MemoryJournal())
    meta.create_campaign_flow(spec(), MemoryJournal())
    bad = httpx.post(f"{graph_url}/_sandbox/faults", json={"platform": "meta", "rate": 3})
    assert bad.status_code == 422


def test_a_latency_fault_delays_only_its_own_call(meta: MetaAdsPlatform, graph_url: str) -> None:
    fault(graph_url, operation="create_campaign", kind="latency", latency_ms=1500, count=1)
    slow = threading.Thread(target=meta.create_campaign_flow, args=(spec(), MemoryJournal()))
    slow.start()
    wait_for(
        lambda: httpx.get(f"{graph_url}/_sandbox/stats").json()["requests"] > 0,
        timeout=5,
        interval=0.01,
        what="the slow call to reach the sandbox",
    )
    # Answered while the slow call still sleeps: a sandbox that served one call at a time
    # would have created the campaign before answering.
    assert stats(graph_url)["campaigns"] == 0
    assert slow.is_alive()
    slow.join(timeout=10)
    assert stats(graph_url) == {"campaigns": 1, "adsets": 1, "adcreatives": 1, "ads": 1}
