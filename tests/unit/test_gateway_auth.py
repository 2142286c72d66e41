"""Least privilege at the gateway, in-process: tokens looked up by digest, scopes per task name
on POST /tasks with the resource endpoints' preconditions, dead letters replayed once, the
default token refused off loopback, and the WebSocket authenticated by header or ticket."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from starlette.websockets import WebSocketDisconnect

from services.gateway.auth import TicketIssuer, TokenRegistry, check_exposure, is_loopback
from services.gateway.models import DeadLetter
from services.gateway.settings import DEFAULT_API_TOKEN
from tests.support.gateway import READER, TASK_WRITER, TOKEN, InProcessGateway, in_process_gateway


@pytest.fixture
def gw(tmp_path: Path) -> Iterator[InProcessGateway]:
    yield from in_process_gateway(tmp_path)


def test_tokens_are_kept_and_looked_up_by_digest_only() -> None:
    registry = TokenRegistry("master-token-1234", '{"reader-token-99": ["tasks:read"]}')
    assert registry.scopes_of("reader-token-99") == {"tasks:read"}
    assert "tasks:write" in (registry.scopes_of("master-token-1234") or set())
    assert registry.scopes_of("master-token-123") is None
    assert registry.scopes_of("") is None and registry.scopes_of(None) is None
    stored = repr(vars(registry))
    assert "master-token-1234" not in stored and "reader-token-99" not in stored
    with pytest.raises(ValueError, match="unknown scopes"):
        TokenRegistry("m" * 10, '{"t": ["root"]}')


def test_a_missing_token_is_401_and_a_missing_scope_403(gw: InProcessGateway) -> None:
    assert gw.client.get("/api/v1/tasks", headers=gw.as_(None)).status_code == 401
    assert gw.client.get("/api/v1/tasks", headers=gw.as_("nope")).status_code == 401
    assert gw.client.get("/api/v1/tasks", headers=gw.as_(READER)).status_code == 200
    forbidden = gw.client.post("/api/v1/jobs", json={}, headers=gw.as_(READER))
    assert forbidden.status_code == 403 and "jobs:write" in forbidden.json()["detail"]


def test_post_tasks_needs_the_scope_of_the_resource_the_task_acts_on(gw: InProcessGateway) -> None:
    campaign_id = gw.campaign()
    as_writer = gw.as_(TASK_WRITER)  # tasks:write, but neither campaigns:write nor ml:write
    publish = {"name": "campaign.publish", "kwargs": {"campaign_id": campaign_id}}
    refused = gw.client.post("/api/v1/tasks", json=publish, headers=as_writer)
    assert refused.status_code == 403 and "campaigns:write" in refused.json()["detail"]
    train = gw.client.post("/api/v1/tasks", json={"name": "ml.train"}, headers=as_writer)
    assert train.status_code == 403 and "ml:write" in train.json()["detail"]
    assert gw.client.get(f"/api/v1/campaigns/{campaign_id}").json()["status"] == "draft"
    assert gw.outbox_rows() == []


def test_publish_by_task_name_meets_the_publish_endpoints_preconditions(
    gw: InProcessGateway,
) -> None:
    campaign_id = gw.campaign()
    publish = {"name": "campaign.publish", "kwargs": {"campaign_id": campaign_id}}
    first = gw.client.post("/api/v1/tasks", json=publish)
    assert first.status_code == 202
    campaign = gw.client.get(f"/api/v1/campaigns/{campaign_id}").json()
    assert campaign["status"] == "publishing" and campaign["task_id"] == first.json()["task_id"]
    again = gw.client.post("/api/v1/tasks", json=publish)
    assert again.status_code == 409 and "only a draft" in again.json()["detail"]
    door = gw.client.post(f"/api/v1/campaigns/{campaign_id}/publish")
    assert door.status_code == 409
    assert len(gw.outbox_rows()) == 1
    extra = {"name": "campaign.publish", "kwargs": {"campaign_id": campaign_id, "x": 1}}
    assert gw.client.post("/api/v1/tasks", json=extra).status_code == 422


def _dead_letter(gw: InProcessGateway) -> str:
    with gw.db.session() as session:
        session.add(
            DeadLetter(
                id="unit.campaign.publish_requested.dlq:0:7",
                dlq_topic="unit.campaign.publish_requested.dlq",
                original_topic="unit.campaign.publish_requested",
                attempts=4,
                key=b"k",
                value=b"{}",
                headers=[["ce_type", "campaign.publish_requested"]],
                dead_at=datetime.now(UTC),
                replay_count=0,
            )
        )
    return "unit.campaign.publish_requested.dlq:0:7"


def test_a_dead_letter_is_replayed_once_unless_forced(gw: InProcessGateway) -> None:
    dead_id = _dead_letter(gw)
    assert gw.client.post(f"/api/v1/dead-letters/{dead_id}/replay").status_code == 202
    again = gw.client.post(f"/api/v1/dead-letters/{dead_id}/replay")
    assert again.status_code == 409 and "force=true" in again.json()["detail"]
    forced = gw.client.post(f"/api/v1/dead-letters/{dead_id}/replay", params={"force": "true"})
    assert forced.status_code == 202
    listed = gw.client.get("/api/v1/dead-letters", params={"include_replayed": "true"}).json()
    assert listed[0]["replay_count"] == 2
    assert len(gw.outbox_rows()) == 2


def test_the_default_token_is_refused_off_loopback() -> None:
    for address in ("127.0.0.1", "::1", "localhost", "127.0.0.2"):
        assert is_loopback(address)
        check_exposure(address, DEFAULT_API_TOKEN, DEFAULT_API_TOKEN)
    for address in ("0.0.0.0", "::", "10.1.2.3", "gateway"):
        assert not is_loopback(address)
        with pytest.raises(SystemExit, match="ADFLUX_API_TOKEN"):
            check_exposure(address, DEFAULT_API_TOKEN, DEFAULT_API_TOKEN)
        check_exposure(address, "a-long-random-secret", DEFAULT_API_TOKEN)


def test_tickets_are_short_lived_single_use_and_unforgeable() -> None:
    issuer = TicketIssuer(b"secret")
    ticket = issuer.issue(frozenset({"tasks:read"}), ttl=30)
    assert issuer.redeem(ticket) == {"tasks:read"}
    assert issuer.redeem(ticket) is None  # used
    payload, signature = issuer.issue(frozenset({"tasks:read"}), ttl=30).split(".")
    assert issuer.redeem(f"{payload}.{signature[:-2]}AA") is None
    assert TicketIssuer(b"other").redeem(issuer.issue(frozenset({"tasks:read"}), 30)) is None
    expired = issuer.issue(frozenset({"tasks:read"}), ttl=0.01)
    time.sleep(0.05)
    assert issuer.redeem(expired) is None
    assert issuer.redeem("garbage") is None and issuer.redeem(None) is None


def test_the_websocket_takes_the_header_or_a_ticket_never_a_token_in_the_url(
    gw: InProcessGateway,
) -> None:
    url = "/api/v1/tasks/stream"
    with gw.client.websocket_connect(url, headers=gw.as_(TOKEN)) as ws:
        gw.app.state.hub.publish({"task_id": "t", "state": "STARTED"})
        assert ws.receive_json()["task_id"] == "t"
    ticket = gw.client.post("/api/v1/tickets").json()
    assert ticket["expires_in"] > 0
    with gw.client.websocket_connect(
        f"{url}?ticket={ticket['ticket']}", headers=gw.as_(None)
    ) as ws:
        gw.app.state.hub.publish({"task_id": "u", "state": "STARTED"})
        assert ws.receive_json()["task_id"] == "u"
    for query in (f"?ticket={ticket['ticket']}", f"?token={TOKEN}", ""):  # reused; token; none
        with (
            pytest.raises(WebSocketDisconnect) as closed,
            gw.client.websocket_connect(url + query, headers=gw.as_(None)) as ws,
        ):
            ws.receive_json()
        assert closed.value.code == 4401
    reader_ticket = gw.client.post("/api/v1/tickets", headers=gw.as_(READER)).json()["ticket"]
    assert gw.client.post("/api/v1/tickets", headers=gw.as_(None)).status_code == 401
    with gw.client.websocket_connect(f"{url}?ticket={reader_ticket}", headers=gw.as_(None)) as ws:
        gw.app.state.hub.publish({"task_id": "v", "state": "STARTED"})
        assert ws.receive_json()["task_id"] == "v"
