"""The `adflux` CLI: one line, no traceback, when the gateway is down; and every Celery-style
option of `task run` reaches the task."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from infra.ports import free_port
from services.gateway import cli
from tests.support.gateway import TOKEN, InProcessGateway, in_process_gateway


@pytest.fixture
def gw(tmp_path: Path) -> Iterator[InProcessGateway]:
    yield from in_process_gateway(tmp_path)


def test_a_gateway_that_is_down_is_one_line_not_a_traceback(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ADFLUX_API_URL", f"http://127.0.0.1:{free_port()}")
    result = CliRunner().invoke(cli.app, ["task", "status", "some-id"])
    assert result.exit_code == 1
    assert "cannot reach the gateway" in result.output and "ADFLUX_API_URL" in result.output
    assert "Traceback" not in result.output and len(result.output.splitlines()) == 1


def test_task_run_passes_eta_time_limit_and_retry_options(
    gw: InProcessGateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    def client() -> TestClient:
        return TestClient(
            gw.app,
            base_url="http://gateway/api/v1",
            headers={"Authorization": f"Bearer {TOKEN}"},
        )

    monkeypatch.setattr(cli, "_client", client)
    eta = (datetime.now(UTC) + timedelta(days=2)).replace(microsecond=0)
    result = CliRunner().invoke(
        cli.app,
        [
            "task",
            "run",
            "ml.train",
            "--eta",
            eta.isoformat(),
            "--time-limit",
            "30",
            "--max-retries",
            "2",
            "--retry-delay",
            "4",
        ],
    )
    assert result.exit_code == 0, result.output
    task_id = result.output.split()[-1]
    task = gw.client.get(f"/api/v1/tasks/{task_id}").json()
    assert task["state"] == "SCHEDULED" and datetime.fromisoformat(task["next_attempt_at"]) == eta
    [row] = gw.outbox_rows()
    assert b'"time_limit":30.0' in row.value and b'"max_retries":2' in row.value
    assert b'"retry_delay":4.0' in row.value
    naive = CliRunner().invoke(cli.app, ["task", "run", "ml.train", "--eta", "2099-01-01"])
    assert naive.exit_code == 2 and "--eta" in naive.output
