"""The /monitor page without a token: a sign-in form, the console hidden (no raw 401 above
empty tables); a refused token signs out with the reason; the Kafka views use the API."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.gateway import InProcessGateway, in_process_gateway


@pytest.fixture
def gw(tmp_path: Path) -> Iterator[InProcessGateway]:
    yield from in_process_gateway(tmp_path)


def test_without_a_token_the_page_is_a_sign_in_form(gw: InProcessGateway) -> None:
    page = gw.client.get("/monitor", headers=gw.as_(None))
    assert page.status_code == 200
    html = page.text
    assert re.search(r'<form id="login"(?![^>]*hidden)', html), "the form shows first"
    assert re.search(r'<main id="console"[^>]*\bhidden\b', html), "the tables wait for sign-in"
    js = gw.client.get("/monitor/monitor.js", headers=gw.as_(None)).text
    assert "r.status === 401" in js and "signedIn(false" in js
    assert '"/workers"' in js and '"/queues"' in js
