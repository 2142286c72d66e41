"""The console's platform quotas: the blocks the gateway learned from `platform.throttled`, in
the API (blocked or over, time left, the platform's reason) and on the Workers view."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from adplatforms.quota import Block, ThrottleTable
from adplatforms.quota_broadcast import ThrottleListener
from shared.envelope import new_event
from shared.events import PlatformThrottled
from tests.support.gateway import READER, InProcessGateway, in_process_gateway


@pytest.fixture
def gw(tmp_path: Path) -> Iterator[InProcessGateway]:
    yield from in_process_gateway(tmp_path)


def test_the_console_lists_each_blocked_account_with_its_time_left(gw: InProcessGateway) -> None:
    table = ThrottleTable()
    gw.app.state.throttles = table
    assert gw.client.get("/api/v1/platforms/throttles").json() == []
    until = datetime.fromtimestamp(time.time() + 30, UTC)
    event = PlatformThrottled(
        platform="meta",
        account="act_1000",
        until=until,
        reason="80004: too many calls",
        signalled_at=datetime.now(UTC),
    )
    envelope = new_event(event, source="publisher", subject="meta:act_1000")
    ThrottleListener(table).handle(envelope, event, None)  # type: ignore[arg-type]
    table.block(Block("google", "123", time.time() - 5, "quota_error: over"))

    listed = gw.client.get("/api/v1/platforms/throttles", headers=gw.as_(READER)).json()
    assert [(b["platform"], b["account"], b["blocked"]) for b in listed] == [
        ("meta", "act_1000", True),
        ("google", "123", False),
    ]
    assert 28 < listed[0]["remaining_seconds"] <= 30 and listed[1]["remaining_seconds"] == 0
    assert datetime.fromisoformat(listed[0]["until"]) == until
    assert listed[0]["reason"] == "80004: too many calls"


def test_throttles_need_a_token_and_are_in_the_schema_and_on_the_page(
    gw: InProcessGateway,
) -> None:
    assert gw.client.get("/api/v1/platforms/throttles", headers=gw.as_(None)).status_code == 401
    assert "/api/v1/platforms/throttles" in gw.client.get("/openapi.json").json()["paths"]
    html = gw.client.get("/monitor", headers=gw.as_(None)).text
    js = gw.client.get("/monitor/monitor.js", headers=gw.as_(None)).text
    assert 'id="throttles"' in html and 'id="throttles-error"' in html
    assert '"/platforms/throttles"' in js and '"throttles-error", loadThrottles' in js
