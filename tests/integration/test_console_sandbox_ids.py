"""The sandbox, like a real platform, never hands out an id twice: its id high-water mark
lives under its data dir, so a restart (while the services' databases keep the old ids)
cannot give a new campaign an old campaign's id."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from infra.ports import free_port
from infra.processes import ServiceProcess
from services.sandbox.state import ID_BLOCK, SandboxState

pytestmark = pytest.mark.integration


def _create_campaign(graph_url: str) -> str:
    response = httpx.post(
        f"{graph_url}/v26.0/act_1000/campaigns",
        data={
            "access_token": "t",
            "name": "Nurses",
            "objective": "OUTCOME_TRAFFIC",
            "special_ad_categories": json.dumps(["EMPLOYMENT"]),
        },
        timeout=10,
    )
    assert response.status_code == 200, response.text
    return str(response.json()["id"])


def test_a_restarted_sandbox_never_reuses_a_platform_id(tmp_path: Path) -> None:
    port = free_port()
    env = {
        "ADFLUX_SANDBOX_META_PORT": str(port),
        "ADFLUX_SANDBOX_GOOGLE_PORT": str(free_port()),
        "ADFLUX_DATA_DIR": str(tmp_path / "data"),
    }
    process = ServiceProcess("sandbox", env, tmp_path)
    graph_url = f"http://127.0.0.1:{port}"
    try:
        process.start().wait_http_ok(f"{graph_url}/_sandbox/stats")
        before = {_create_campaign(graph_url) for _ in range(3)}
        process.kill()  # a crash, not a clean stop: the mark was written before the ids
        process.start().wait_http_ok(f"{graph_url}/_sandbox/stats")
        after = {_create_campaign(graph_url) for _ in range(3)}
    finally:
        process.stop()
    assert len(before) == 3 and len(after) == 3 and not before & after
    assert min(int(i) for i in after) > max(int(i) for i in before)


def test_ids_stay_unique_across_many_blocks_and_restarts(tmp_path: Path) -> None:
    ids_file = tmp_path / "sandbox-ids"
    seen: set[int] = set()
    for _ in range(3):
        state = SandboxState(ids_file=ids_file)
        batch = [state.next_id() for _ in range(ID_BLOCK + 5)]
        assert not seen & set(batch) and len(set(batch)) == len(batch)
        seen |= set(batch)
    assert SandboxState().next_id() == min(seen)  # no file: a fresh platform
