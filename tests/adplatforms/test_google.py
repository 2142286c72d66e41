"""The Google Ads adapter with the real `google-ads` SDK against the sandbox's gRPC server."""

from __future__ import annotations

import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import REGISTRY

from adplatforms.base import (
    CampaignSpec,
    JobOpening,
    PermanentPlatformError,
    TransientPlatformError,
)
from adplatforms.google import GoogleAdsPlatform
from infra.ports import free_port
from infra.waiting import wait_for
from services.sandbox.faults import FaultInjector, FaultRule
from services.sandbox.google import start_google_server
from services.sandbox.state import SandboxState
from shared.settings import PlatformSettings
from tests.support.journal import MemoryJournal, SimulatedCrash

API_VERSION = "v26"
CUSTOMER_ID = "1234567890"
ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Sandbox:
    state: SandboxState
    faults: FaultInjector
    endpoint: str

    def settings(self, **overrides: Any) -> PlatformSettings:
        values: dict[str, Any] = {
            "google_ads_endpoint": self.endpoint,
            "google_ads_api_version": API_VERSION,
            "google_ads_customer_id": CUSTOMER_ID,
            "google_ads_timeout": 10.0,
        }
        return PlatformSettings(**(values | overrides))

    def tree(self, spec: CampaignSpec) -> dict[str, list[Any]]:
        """The objects of one AdFlux campaign, found by the tag in their names."""
        tag = f"(adflux:{spec.campaign_id})"
        budgets = [b for b in self._objects("campaign_budgets") if tag in b.name]
        campaigns = [c for c in self._objects("campaigns") if tag in c.name]
        ad_groups = [g for g in self._objects("ad_groups") if tag in g.name]
        group_names = {g.resource_name for g in ad_groups}
        ads = [a for a in self._objects("ad_group_ads") if a.ad_group in group_names]
        return {"budget": budgets, "campaign": campaigns, "ad_group": ad_groups, "ad": ads}

    def _objects(self, kind: str) -> list[Any]:
        return list(self.state.google_objects(kind).values())


@pytest.fixture(scope="module")
def sandbox() -> Iterator[Sandbox]:
    port = free_port()
    state, faults = SandboxState(), FaultInjector()
    server = start_google_server(state, faults, "127.0.0.1", port, API_VERSION)
    yield Sandbox(state, faults, f"127.0.0.1:{port}")
    server.stop(grace=None)


@pytest.fixture(scope="module")
def platform(sandbox: Sandbox) -> GoogleAdsPlatform:
    return GoogleAdsPlatform(sandbox.settings())


@pytest.fixture
def faults(sandbox: Sandbox) -> Iterator[FaultInjector]:
    yield sandbox.faults
    sandbox.faults.clear()


def make_spec(name: str = "Night nurse") -> CampaignSpec:
    job = JobOpening(
        title="Night Nurse (m/f/d)",
        description="Care for patients on our night shift; full-time, permanent contract.",
        company="St. Mary's Hospital",
        location="Berlin",
        url="https://jobs.example.com/night-nurse",
    )
    return CampaignSpec(uuid.uuid4().hex, name, Decimal("25.50"), "EUR", job)


def counts(tree: dict[str, list[Any]]) -> dict[str, int]:
    return {step: len(objects) for step, objects in tree.items()}


ONE_EACH = {"budget": 1, "campaign": 1, "ad_group": 1, "ad": 1}


def test_publish_creates_exactly_one_budget_campaign_ad_group_and_ad(
    sandbox: Sandbox, platform: GoogleAdsPlatform
) -> None:
    spec = make_spec("Nurse's 'night' campaign")  # quotes must survive GAQL lookups
    journal = MemoryJournal()

    ids = platform.create_campaign_flow(spec, journal)

    tree = sandbox.tree(spec)
    assert counts(tree) == ONE_EACH
    assert ids == journal.ids
    assert ids["campaign"] == str(tree["campaign"][0].id)
    assert ids["budget"] == tree["budget"][0].resource_name
    assert ids["ad"].startswith(f"customers/{CUSTOMER_ID}/adGroupAds/")
    assert tree["budget"][0].amount_micros == 25_500_000
    assert tree["campaign"][0].advertising_channel_type.name == "SEARCH"
    assert tree["campaign"][0].status.name == "ENABLED"
    ad = tree["ad"][0].ad
    assert list(ad.final_urls) == [spec.job.url]
    assert len(ad.responsive_search_ad.headlines) >= 3
    assert len(ad.responsive_search_ad.descriptions) >= 2


def google_requests(sandbox: Sandbox) -> int:
    return int(sandbox.state.stats()["requests_by_platform"]["google"])


def test_a_publish_is_one_google_ads_mutate_request(
    sandbox: Sandbox, platform: GoogleAdsPlatform, faults: FaultInjector
) -> None:
    # Only GoogleAdsService.Mutate answers to "mutate": the rule proves which call it was.
    faults.add(FaultRule("google", "mutate", "latency", count=1, latency_ms=1))
    spec = make_spec()
    before = google_requests(sandbox)
    labels = {"platform": "google", "operation": "mutate", "outcome": "ok"}
    timed = REGISTRY.get_sample_value("adflux_platform_call_seconds_count", labels) or 0.0

    platform.create_campaign_flow(spec, MemoryJournal())

    assert google_requests(sandbox) == before + 1
    assert REGISTRY.get_sample_value("adflux_platform_call_seconds_count", labels) == timed + 1
    assert faults.rules()[0]["count"] == 0
    assert counts(sandbox.tree(spec)) == ONE_EACH


def test_resume_creates_only_the_missing_objects_under_the_existing_ones(
    sandbox: Sandbox, platform: GoogleAdsPlatform
) -> None:
    spec = make_spec()
    journal = MemoryJournal()
    first_half = GoogleAdsPlatform(sandbox.settings())
    first_half.steps = ("budget", "campaign")  # a publish that stopped after the campaign
    recorded = first_half.create_campaign_flow(spec, journal)
    assert counts(sandbox.tree(spec)) == {"budget": 1, "campaign": 1, "ad_group": 0, "ad": 0}
    before = google_requests(sandbox)

    ids = platform.create_campaign_flow(spec, journal)

    assert google_requests(sandbox) == before + 1  # no lookups: nothing was left unrecorded
    assert ids["budget"] == recorded["budget"] and ids["campaign"] == recorded["campaign"]
    tree = sandbox.tree(spec)
    assert counts(tree) == ONE_EACH
    assert tree["ad_group"][0].campaign == f"customers/{CUSTOMER_ID}/campaigns/{ids['campaign']}"
    assert ids["ad_group"] == tree["ad_group"][0].resource_name
    assert ids["ad"] == tree["ad"][0].resource_name


def test_a_fault_on_mutate_ad_groups_fails_the_whole_request_and_a_retry_creates_all(
    sandbox: Sandbox, platform: GoogleAdsPlatform, faults: FaultInjector
) -> None:
    spec = make_spec()
    journal = MemoryJournal()
    faults.add(FaultRule("google", "mutate_ad_groups", "transient", count=1))
    stored = sandbox.state.stats()["google"]

    with pytest.raises(TransientPlatformError):
        platform.create_campaign_flow(spec, journal)

    assert sandbox.state.stats()["google"] == stored  # the request created nothing
    assert counts(sandbox.tree(spec)) == {step: 0 for step in GoogleAdsPlatform.steps}
    assert journal.ids == {} and journal.attempted == set(GoogleAdsPlatform.steps)

    ids = platform.create_campaign_flow(spec, journal)  # looks each step up, then creates

    assert counts(sandbox.tree(spec)) == ONE_EACH
    assert ids == journal.ids


@pytest.mark.parametrize("step", GoogleAdsPlatform.steps)
def test_attempted_but_unrecorded_step_reuses_the_created_object(
    sandbox: Sandbox, platform: GoogleAdsPlatform, step: str
) -> None:
    spec = make_spec()
    journal = MemoryJournal(crash_on_record=step)
    with pytest.raises(SimulatedCrash):
        platform.create_campaign_flow(spec, journal)
    assert journal.was_attempted(step) and journal.created_id(step) is None

    ids = platform.create_campaign_flow(spec, journal)

    tree = sandbox.tree(spec)
    assert counts(tree) == ONE_EACH
    assert ids["ad"] == tree["ad"][0].resource_name


def test_permanent_fault_raises_permanent_error_with_the_api_message(
    platform: GoogleAdsPlatform, faults: FaultInjector
) -> None:
    faults.add(FaultRule("google", "mutate_campaigns", "permanent", count=1))

    with pytest.raises(PermanentPlatformError) as raised:
        platform.create_campaign_flow(make_spec(), MemoryJournal())

    assert raised.value.code == "field_error" and raised.value.subcode == "INVALID_VALUE"
    assert "The field's value is invalid" in raised.value.message
    assert "request-id" in raised.value.message


def test_transient_fault_raises_transient_error(
    platform: GoogleAdsPlatform, faults: FaultInjector
) -> None:
    faults.add(FaultRule("google", "search_stream", "transient", count=1))

    with pytest.raises(TransientPlatformError) as raised:
        platform.fetch_statuses_and_metrics()

    assert raised.value.code == "UNAVAILABLE"
    assert raised.value.retry_after is None


def test_rate_limit_raises_transient_error_with_the_quota_retry_delay(
    platform: GoogleAdsPlatform, faults: FaultInjector
) -> None:
    faults.add(FaultRule("google", "mutate_campaign_budgets", "rate_limit", count=1))

    with pytest.raises(TransientPlatformError) as raised:
        platform.create_campaign_flow(make_spec(), MemoryJournal())

    assert raised.value.code == "quota_error" and raised.value.subcode == "RESOURCE_EXHAUSTED"
    assert raised.value.retry_after == 1.0


def test_slow_answer_past_the_timeout_raises_transient_error(
    sandbox: Sandbox, faults: FaultInjector
) -> None:
    impatient = GoogleAdsPlatform(sandbox.settings(google_ads_timeout=0.3))
    faults.add(FaultRule("google", "search_stream", "latency", count=1, latency_ms=1500))

    with pytest.raises(TransientPlatformError) as raised:
        impatient.fetch_statuses_and_metrics()

    assert raised.value.code == "DEADLINE_EXCEEDED"


def test_sandbox_rejects_a_responsive_search_ad_with_too_few_headlines(
    platform: GoogleAdsPlatform,
) -> None:
    from google.ads.googleads.errors import GoogleAdsException

    ids = platform.create_campaign_flow(make_spec(), MemoryJournal())
    sdk = platform._sdk  # the adapter's own service clients: the SDK exactly as it calls
    operation = sdk.client.get_type("MutateOperation")
    ad_group_ad = operation.ad_group_ad_operation.create
    ad_group_ad.ad_group = ids["ad_group"]
    ad_group_ad.ad.final_urls.append("https://jobs.example.com/x")
    rsa = ad_group_ad.ad.responsive_search_ad
    for text in ("Only one", "Only two"):
        headline = sdk.client.get_type("AdTextAsset")
        headline.text = text
        rsa.headlines.append(headline)
    for text in ("First description", "Second description"):
        description = sdk.client.get_type("AdTextAsset")
        description.text = text
        rsa.descriptions.append(description)

    with pytest.raises(GoogleAdsException) as raised:
        sdk.search.mutate(customer_id=CUSTOMER_ID, mutate_operations=[operation], timeout=10)

    (error,) = raised.value.failure.errors
    assert error.error_code.collection_size_error.name == "TOO_FEW"
    elements = error.location.field_path_elements
    assert [element.field_name for element in elements] == [
        "mutate_operations",
        "ad_group_ad_operation",
        "create",
        "ad",
        "responsive_search_ad",
        "headlines",
    ]
    assert elements[0].index == 0
    assert raised.value.request_id


def test_search_stream_reports_statuses_and_growing_metrics(
    platform: GoogleAdsPlatform,
) -> None:
    campaign_id = platform.create_campaign_flow(make_spec(), MemoryJournal())["campaign"]

    (first,) = platform.fetch_statuses_and_metrics([campaign_id])
    later = wait_for(
        lambda: [
            snapshot
            for snapshot in platform.fetch_statuses_and_metrics([campaign_id])
            if snapshot.impressions > first.impressions
        ],
        timeout=15,
        what="impressions to grow",
    )[0]

    assert first.external_id == later.external_id == campaign_id
    assert first.status == later.status == "active"
    assert later.clicks >= first.clicks and later.spend >= first.spend
    assert isinstance(later.spend, Decimal)
    everything = platform.fetch_statuses_and_metrics()
    assert campaign_id in {snapshot.external_id for snapshot in everything}


def test_status_changes_through_an_update_mask(
    sandbox: Sandbox, platform: GoogleAdsPlatform
) -> None:
    spec = make_spec()
    campaign_id = platform.create_campaign_flow(spec, MemoryJournal())["campaign"]

    platform.set_campaign_status(campaign_id, "paused")
    (paused,) = platform.fetch_statuses_and_metrics([campaign_id])
    platform.set_campaign_status(campaign_id, "active")
    (active,) = platform.fetch_statuses_and_metrics([campaign_id])

    assert (paused.status, active.status) == ("paused", "active")
    (campaign,) = sandbox.tree(spec)["campaign"]
    assert campaign.name == f"{spec.name} (adflux:{spec.campaign_id})"  # untouched by the mask


def test_search_pages_through_results(platform: GoogleAdsPlatform) -> None:
    for _ in range(2):
        platform.create_campaign_flow(make_spec(), MemoryJournal())

    pager = platform._sdk.search.search(
        request={
            "customer_id": CUSTOMER_ID,
            "query": "SELECT campaign.id FROM campaign WHERE campaign.name LIKE '%(adflux:%)'",
            "page_size": 1,
        },
        timeout=10,
    )
    pages = list(pager.pages)

    assert len(pages) >= 2 and all(len(page.results) == 1 for page in pages)


def test_importing_the_adapter_does_not_import_the_sdk() -> None:
    check = (
        "import sys, adplatforms.google\n"
        "assert 'google.ads.googleads' not in sys.modules, 'google-ads imported'\n"
    )
    subprocess.run([sys.executable, "-c", check], cwd=ROOT, check=True)
