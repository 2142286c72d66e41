"""Operating the system as a user does: health endpoints, clean shutdown on SIGTERM, and the
`adflux` command line against a running gateway."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from infra.ports import free_port
from infra.processes import ServiceProcess
from infra.waiting import wait_for
from shared.producer import EventProducer, OutgoingRecord
from shared.topics import TopicNames
from tests.conftest import Gateway
from tests.support.kafka import read_topic

pytestmark = pytest.mark.e2e


def test_worker_serves_health_and_metrics_and_stops_cleanly_on_sigterm(
    service_env: dict[str, str], tmp_path: Path
) -> None:
    port = free_port()
    worker = ServiceProcess(
        "publisher", {**service_env, "ADFLUX_METRICS_PORT": str(port)}, tmp_path
    ).start()
    try:
        worker.wait_http_ok(f"http://127.0.0.1:{port}/readyz")
        assert httpx.get(f"http://127.0.0.1:{port}/healthz").json() == {"status": "ok"}
        assert "adflux_paused_partitions" in httpx.get(f"http://127.0.0.1:{port}/metrics").text
        assert worker.proc is not None
        worker.proc.send_signal(signal.SIGTERM)
        assert worker.proc.wait(20) == 0
        lines = [json.loads(line) for line in worker.log().splitlines() if line.startswith("{")]
        assert any(entry["message"] == "publisher stopping" for entry in lines)
        assert all(entry["service"] == "publisher" for entry in lines)
    finally:
        worker.kill()


def adflux(gateway: Gateway, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "ADFLUX_API_URL": gateway.url, "ADFLUX_API_TOKEN": gateway.token}
    return subprocess.run(
        [sys.executable, "-m", "services.gateway.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_cli_runs_tasks_and_operates_dead_letters(
    gateway: Gateway, names: TopicNames, kafka_bootstrap: str
) -> None:
    run = adflux(
        gateway,
        "task",
        "run",
        "campaign.sync",
        "--kwargs",
        '{"platform": "meta"}',
        "--countdown",
        "30",
    )
    assert run.returncode == 0, run.stderr
    task_id = run.stdout.strip().rsplit(" ", 1)[-1]
    status = adflux(gateway, "task", "status", task_id)
    assert json.loads(status.stdout)["state"] == "SCHEDULED"
    assert adflux(gateway, "task", "revoke", task_id).returncode == 0
    bad = adflux(gateway, "task", "run", "nope")
    assert bad.returncode == 1 and "unknown task" in bad.stderr
    assert adflux(gateway, "task", "run", "ml.train", "--kwargs", "{oops").returncode == 2

    dead_topic = names.dlq("campaign.sync_requested")
    EventProducer(kafka_bootstrap, "test").send_batch(
        [
            OutgoingRecord(
                dead_topic,
                b"k",
                b"{broken",
                [
                    ("adflux-reason", b"malformed"),
                    ("adflux-error-class", b"MalformedEvent"),
                    ("adflux-original-topic", names.topic("campaign.sync_requested").encode()),
                ],
            )
        ]
    )
    listing = wait_for(
        lambda: (out := adflux(gateway, "dlq", "list").stdout) and out, 30, 0.5, "dlq listing"
    )
    assert "MalformedEvent" in listing
    dead_id = listing.split()[0]
    replay = adflux(gateway, "dlq", "replay", dead_id)
    assert replay.returncode == 0 and "replayed to" in replay.stdout
    records = read_topic(kafka_bootstrap, names.topic("campaign.sync_requested"), 2, timeout=20)
    assert any(r.value() == b"{broken" for r in records)
