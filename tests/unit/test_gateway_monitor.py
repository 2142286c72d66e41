"""The /monitor page and the refused-records view, in-process: the page runs only its own
script (CSP), builds the DOM from text, keeps no token in a URL or in localStorage; a command
the broker refused is listed with its reason and its task ends FAILURE."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa

from services.gateway.commands import fail_refused_commands
from shared.outbox import RefusedRow
from tests.support.gateway import READER, InProcessGateway, in_process_gateway


@pytest.fixture
def gw(tmp_path: Path) -> Iterator[InProcessGateway]:
    yield from in_process_gateway(tmp_path)


def test_the_page_runs_only_its_own_script_and_never_interpolates_html(
    gw: InProcessGateway,
) -> None:
    page = gw.client.get("/monitor", headers=gw.as_(None))
    assert page.status_code == 200 and "AdFlux task monitor" in page.text
    policy = page.headers["content-security-policy"]
    assert "script-src 'self'" in policy and "unsafe-inline" not in policy
    assert not re.search(r"<script(?![^>]*\bsrc=)", page.text), "no inline script"
    assert not re.search(r"\son[a-z]+\s*=", page.text), "no inline handler"
    script = gw.client.get("/monitor/monitor.js", headers=gw.as_(None))
    assert script.status_code == 200 and script.headers["content-type"].startswith(
        "text/javascript"
    )
    js = script.text
    for forbidden in (
        "innerHTML",
        "outerHTML",
        "insertAdjacentHTML",
        "onclick",
        "localStorage.setItem",
        "?token=",
    ):
        assert forbidden not in js, forbidden
    assert "textContent" in js or "createTextNode" in js
    assert "/tickets" in js and "?ticket=" in js
    assert gw.client.get("/monitor/other.js", headers=gw.as_(None)).status_code == 404
    assert gw.client.get("/monitor/monitor.css", headers=gw.as_(None)).status_code == 200


def test_refused_commands_are_listed_and_their_tasks_fail(gw: InProcessGateway) -> None:
    campaign_id = gw.campaign()
    task_id = gw.client.post(f"/api/v1/campaigns/{campaign_id}/publish").json()["task_id"]
    [row] = gw.outbox_rows()
    reason = 'KafkaError{code=MSG_SIZE_TOO_LARGE,str="Broker: Message size too large"}'
    updates: list[dict[str, object]] = []
    with gw.db.session() as session:
        session.execute(
            sa.update(gw.outbox.table)
            .where(gw.outbox.table.c.id == row.id)
            .values(refused_at=datetime.now(UTC), refused_reason=reason)
        )
        refused = RefusedRow(row.id, row.topic, row.key, 10, {"ce_taskid": task_id}, reason)
        fail_refused_commands(session, [refused], updates.append)
    listed = gw.client.get("/api/v1/outbox/refused").json()
    assert [(r["id"], r["task_id"], r["reason"]) for r in listed] == [(row.id, task_id, reason)]
    assert listed[0]["event_type"] == "campaign.publish_requested"
    task = gw.client.get(f"/api/v1/tasks/{task_id}").json()
    assert task["state"] == "FAILURE" and "MSG_SIZE_TOO_LARGE" in task["error"]["message"]
    campaign = gw.client.get(f"/api/v1/campaigns/{campaign_id}").json()
    assert (
        campaign["status"] == "failed" and campaign["last_error"]["error_class"] == "RecordRefused"
    )
    assert updates and updates[0]["state"] == "FAILURE"
    assert gw.client.get("/api/v1/outbox/refused", headers=gw.as_(READER)).status_code == 403
