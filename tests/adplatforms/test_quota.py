"""Both adapters with a shared quota against the sandbox process: a throttling answer (Meta's
usage header or Retry-After, Google's RESOURCE_EXHAUSTED retry delay) blocks the account, the
block is announced, and no call reaches the platform until it ends."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest

from adplatforms.base import CampaignSpec, JobOpening, PlatformBlocked, TransientPlatformError
from adplatforms.google import GoogleAdsPlatform
from adplatforms.meta import MetaAdsPlatform
from adplatforms.quota import Block, PlatformQuota
from infra.waiting import wait_for
from shared.settings import PlatformSettings
from tests.conftest import running_sandbox
from tests.support.journal import MemoryJournal

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PlatformSettings]:
    with running_sandbox(Path(tmp_path_factory.mktemp("sandbox"))) as running:
        yield PlatformSettings(
            meta_graph_url=running.graph_url,
            google_ads_endpoint=running.google_endpoint,
            google_ads_timeout=10,
        )


@pytest.fixture
def graph(sandbox: PlatformSettings) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=f"{sandbox.meta_graph_url}/_sandbox") as client:
        client.post("/reset").raise_for_status()
        yield client


def spec() -> CampaignSpec:
    job = JobOpening("Nurse", "Nights", "Hospital", "Madrid", "https://jobs.example.org/1")
    return CampaignSpec(uuid.uuid4().hex, "Nurses", Decimal("25.50"), "EUR", job)


def throttle(graph: httpx.Client, platform: str, seconds: float, **rule: Any) -> None:
    body = {"platform": platform, "kind": "throttle", "block_seconds": seconds, "count": 1}
    graph.post("/faults", json=body | rule).raise_for_status()


def sandbox_block(graph: httpx.Client, platform: str) -> dict[str, Any]:
    report: dict[str, Any] = graph.get("/throttles").json()[platform]
    return report


@pytest.mark.parametrize(("signal", "code"), [("business_use_case", 80004), ("retry_after", 17)])
def test_a_meta_throttle_blocks_the_ad_account_until_the_signalled_time(
    sandbox: PlatformSettings, graph: httpx.Client, signal: str, code: int
) -> None:
    announced: list[Block] = []
    quota = PlatformQuota(announce=announced.append)
    meta = MetaAdsPlatform(sandbox, quota)
    throttle(graph, "meta", 2, signal=signal)

    with pytest.raises(TransientPlatformError) as signalled:
        meta.create_campaign_flow(spec(), MemoryJournal())
    # The sandbox rounds the regain time up to 1/10,000 of a minute (6 ms).
    assert signalled.value.code == code and 1.9 <= (signalled.value.retry_after or 0) <= 2.01
    assert [(b.platform, b.account) for b in announced] == [("meta", "act_1000")]

    with pytest.raises(PlatformBlocked) as blocked:
        meta.create_campaign_flow(spec(), MemoryJournal())
    with pytest.raises(PlatformBlocked):
        meta.fetch_statuses_and_metrics()
    assert 0 < blocked.value.delay <= 2.01
    assert sandbox_block(graph, "meta")["calls_during_block"] == 0

    wait_for(lambda: quota.table.remaining("meta", "act_1000") == 0, timeout=5)
    assert set(meta.create_campaign_flow(spec(), MemoryJournal())) == set(meta.steps)
    report = sandbox_block(graph, "meta")
    assert report["calls_during_block"] == 0 and report["first_call_after_block"] >= report["until"]
    assert len(announced) == 1


def test_a_google_quota_error_blocks_the_customer_for_its_retry_delay(
    sandbox: PlatformSettings, graph: httpx.Client
) -> None:
    announced: list[Block] = []
    quota = PlatformQuota(announce=announced.append)
    google = GoogleAdsPlatform(sandbox, quota)
    throttle(graph, "google", 1.5)

    with pytest.raises(TransientPlatformError) as signalled:
        google.fetch_statuses_and_metrics()
    assert signalled.value.code == "quota_error"
    assert 1.4 <= (signalled.value.retry_after or 0) <= 1.5
    assert [(b.platform, b.account) for b in announced] == [("google", "1234567890")]

    started = time.monotonic()
    with pytest.raises(PlatformBlocked):
        google.create_campaign_flow(spec(), MemoryJournal())
    assert time.monotonic() - started < 0.5  # refused here, not after a round trip
    assert sandbox_block(graph, "google")["calls_during_block"] == 0

    wait_for(lambda: quota.table.remaining("google", "1234567890") == 0, timeout=5)
    assert google.fetch_statuses_and_metrics() == []
    assert sandbox_block(graph, "google")["calls_during_block"] == 0


def test_the_calls_per_second_limit_paces_every_adapter_call(
    sandbox: PlatformSettings, graph: httpx.Client
) -> None:
    meta = MetaAdsPlatform(sandbox, PlatformQuota(limits={"meta": 5}))
    before = graph.get("/stats").json()["requests_by_platform"]["meta"]
    started = time.monotonic()
    for _ in range(4):  # two calls each (listing and insights): a burst of 5, then 5 per second
        meta.fetch_statuses_and_metrics()
    assert time.monotonic() - started >= 0.55
    assert graph.get("/stats").json()["requests_by_platform"]["meta"] - before == 8
