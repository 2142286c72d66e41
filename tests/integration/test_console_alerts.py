"""Alerts shown firing from the real system: the outbox relay of a gateway whose broker is
unreachable exports its real unsent count, and that scraped value, held for the alert's
`for:`, fires AdfluxOutboxBacklog in promtool (and the drained value does not)."""

from __future__ import annotations

import shutil
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa
import yaml
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from infra.ports import free_port
from infra.waiting import wait_for
from shared.db import Database, tracking_tables
from shared.envelope import new_event
from shared.events import TaskState, TaskStatus
from shared.outbox import Outbox, OutboxRelay
from shared.producer import DeliveryFailed, EventProducer
from shared.topics import TopicNames

pytestmark = pytest.mark.integration
ALERTS = Path(__file__).resolve().parents[2] / "infra" / "prometheus" / "alerts.yml"
SERVICE = "console-alert-test"


def scraped(name: str, **labels: str) -> float:
    """A sample's value as Prometheus would scrape it from this process."""
    for family in text_string_to_metric_families(generate_latest().decode()):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    raise AssertionError(f"{name}{labels} not exported")


def fires(tmp_path: Path, alert: str, series: str, value: float, at: str) -> bool:
    """Whether `alert` fires at `at` with `series` held at `value` (promtool's verdict)."""
    promtool = shutil.which("promtool")
    assert promtool, "promtool is missing: run `make container-tools` (infra/podman.sh)"
    case = {
        "rule_files": [str(ALERTS)],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": [{"series": series, "values": f"{value:g}x15"}],
                "alert_rule_test": [{"eval_time": at, "alertname": alert, "exp_alerts": []}],
            }
        ],
    }
    test_file = tmp_path / f"{alert}-{value:g}.yml"
    test_file.write_text(yaml.safe_dump(case))
    result = subprocess.run(
        [promtool, "test", "rules", str(test_file)], capture_output=True, text=True, timeout=60
    )
    return result.returncode != 0 and "exp:[]" in (result.stdout + result.stderr).replace(" ", "")


def test_the_outbox_backlog_alert_fires_from_a_relay_whose_broker_is_down(
    tracking_db: Database, names: TopicNames, kafka_bootstrap: str, tmp_path: Path
) -> None:
    metadata = sa.MetaData()
    _, table = tracking_tables(metadata)
    outbox = Outbox(table, names)
    with tracking_db.session() as session:
        for n in range(1001):
            payload = TaskStatus(
                task_id=f"t{n}", name="ml.train", state=TaskState.PENDING, at=datetime.now(UTC)
            )
            outbox.add(session, new_event(payload, source="test", subject=f"t{n}"))
    dead = EventProducer(
        f"127.0.0.1:{free_port()}",
        "relay",
        {"message.timeout.ms": 1000, "delivery.timeout.ms": 1000, "request.timeout.ms": 500},
    )
    with pytest.raises(DeliveryFailed):
        OutboxRelay(tracking_db, outbox, dead, SERVICE).relay_once()
    backlog = scraped("adflux_outbox_pending", service=SERVICE)
    assert backlog == 1001
    series = f'adflux_outbox_pending{{service="{SERVICE}"}}'
    assert fires(tmp_path, "AdfluxOutboxBacklog", series, backlog, "8m")

    relay = OutboxRelay(tracking_db, outbox, EventProducer(kafka_bootstrap, "relay"), SERVICE)
    wait_for(lambda: relay.relay_once() == 0, 60, 0.1, "the backlog relayed")
    drained = scraped("adflux_outbox_pending", service=SERVICE)
    assert drained == 0
    assert not fires(tmp_path, "AdfluxOutboxBacklog", series, drained, "8m")
