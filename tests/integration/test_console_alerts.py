"""Alerts shown firing from the real system: the outbox relay of a gateway whose broker is
unreachable exports its real unsent count, and that scraped value, held for the alert's
`for:`, fires AdfluxOutboxBacklog in promtool (and the drained value does not); a worker whose
task fails permanently counts it in adflux_tasks_total{state="FAILURE"}, scraped from its
/metrics, and that rise fires AdfluxTasksFailing (and a flat count does not)."""

from __future__ import annotations

import shutil
import subprocess
import uuid
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
import yaml
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from infra.ports import free_port
from infra.waiting import wait_for
from shared.db import Database, tracking_tables
from shared.envelope import Envelope, new_event
from shared.events import MetricsRefreshRequested, TaskState, TaskStatus
from shared.metrics import HealthServer
from shared.outbox import Outbox, OutboxRelay
from shared.producer import DeliveryFailed, EventProducer
from shared.retry import PermanentError
from shared.runtime import ConsumerRuntime, HandlerContext
from shared.topics import TopicNames
from tests.support.kafka import read_events

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


def fires(tmp_path: Path, alert: str, series: str, values: str, at: str) -> bool:
    """Whether `alert` fires at `at` with `series` taking `values`, one a minute in promtool's
    expanding notation (`"3x15"`: 3 for 16 minutes); promtool's verdict."""
    promtool = shutil.which("promtool")
    assert promtool, "promtool is missing: run `make container-tools` (infra/podman.sh)"
    case = {
        "rule_files": [str(ALERTS)],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": [{"series": series, "values": values}],
                "alert_rule_test": [{"eval_time": at, "alertname": alert, "exp_alerts": []}],
            }
        ],
    }
    test_file = tmp_path / f"{alert}-{abs(hash(values))}.yml"
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
    try:
        with pytest.raises(DeliveryFailed):
            OutboxRelay(tracking_db, outbox, dead, SERVICE).relay_once()
    finally:
        dead.close(timeout=0)  # or its client keeps dialling the dead port until exit
    backlog = scraped("adflux_outbox_pending", service=SERVICE)
    assert backlog == 1001
    series = f'adflux_outbox_pending{{service="{SERVICE}"}}'
    assert fires(tmp_path, "AdfluxOutboxBacklog", series, f"{backlog:g}x15", "8m")

    live = EventProducer(kafka_bootstrap, "relay")
    relay = OutboxRelay(tracking_db, outbox, live, SERVICE)
    try:
        wait_for(lambda: relay.relay_once() == 0, 60, 0.1, "the backlog relayed")
    finally:
        live.close()
    drained = scraped("adflux_outbox_pending", service=SERVICE)
    assert drained == 0
    assert not fires(tmp_path, "AdfluxOutboxBacklog", series, f"{drained:g}x15", "8m")


def test_the_relay_counts_its_backlog_at_most_once_a_second_and_when_it_empties(
    tracking_db: Database, names: TopicNames, kafka_bootstrap: str
) -> None:
    metadata = sa.MetaData()
    _, table = tracking_tables(metadata)
    outbox = Outbox(table, names)
    counts: list[str] = []

    def count_queries(_conn: object, _cursor: object, statement: str, *_: object) -> None:
        if "count(" in statement.lower():
            counts.append(statement)

    sa.event.listen(tracking_db.engine, "before_cursor_execute", count_queries)
    producer = EventProducer(kafka_bootstrap, "relay")
    relay = OutboxRelay(tracking_db, outbox, producer, SERVICE)
    try:
        for n in range(5):  # a command per pass, as POSTs one after another make them
            payload = TaskStatus(
                task_id=f"c{n}", name="ml.train", state=TaskState.PENDING, at=datetime.now(UTC)
            )
            with tracking_db.session() as session:
                outbox.add(session, new_event(payload, source="test", subject=f"c{n}"))
            assert relay.relay_once() == 1
        assert len(counts) == 1  # the first pass only: the others came within the second
        assert relay.relay_once() == 0  # empty while the gauge may still show rows: count
        assert scraped("adflux_outbox_pending", service=SERVICE) == 0
        assert relay.relay_once() == 0
        assert len(counts) <= 2
    finally:
        sa.event.remove(tracking_db.engine, "before_cursor_execute", count_queries)
        producer.close()


def scrape(url: str, name: str, **labels: str) -> float:
    """A sample's value from a process's /metrics over HTTP (0 when not exported yet)."""
    text = httpx.get(url, timeout=10).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return 0.0


def test_the_failing_tasks_alert_fires_from_a_worker_whose_task_fails_permanently(
    tracking_db: Database, names: TopicNames, kafka_bootstrap: str, tmp_path: Path
) -> None:
    def refresh(envelope: Envelope, command: MetricsRefreshRequested, ctx: HandlerContext) -> None:
        raise PermanentError("the platform refused the account")

    processed, _ = tracking_tables(sa.MetaData())
    producer = EventProducer(kafka_bootstrap, "failing-worker")
    worker = ConsumerRuntime(
        service=SERVICE,
        group=names.group("failing-worker"),
        bootstrap=kafka_bootstrap,
        names=names,
        producer=producer,
        db=tracking_db,
        processed_table=processed,
    )
    worker.register(MetricsRefreshRequested, refresh)
    health = HealthServer("127.0.0.1", 0, {"consumer": worker.ready}).start()
    metrics_url = f"http://127.0.0.1:{health.port}/metrics"
    labels = {"service": SERVICE, "task": "metrics.refresh", "state": "FAILURE"}
    worker.start()
    try:
        wait_for(worker.ready, 30, 0.1, "the worker assigned")
        before = scrape(metrics_url, "adflux_tasks_total", **labels)
        task_id = str(uuid.uuid4())
        producer.send(
            names.topic("metrics.refresh_requested"),
            new_event(MetricsRefreshRequested(), source="test", subject="x", taskid=task_id),
        )
        [status] = [
            e.payload()
            for e in read_events(kafka_bootstrap, names.topic("task.status"), 2, 30)
            if e.payload().state is TaskState.FAILURE  # type: ignore[attr-defined]
        ]
        assert status.task_id == task_id  # type: ignore[attr-defined]
        after = wait_for(
            lambda: (v := scrape(metrics_url, "adflux_tasks_total", **labels)) > before and v,
            10,
            0.1,
            "the FAILURE counted",
        )
    finally:
        worker.stop()
        health.stop()
        producer.close()
    assert after == before + 1
    series = "adflux_tasks_total{" + ",".join(f'{k}="{v}"' for k, v in labels.items()) + "}"
    # The scraped count before the failure for 5 minutes, then the scraped count after it.
    assert fires(tmp_path, "AdfluxTasksFailing", series, f"{before:g}x4 {after:g}x10", "6m")
    assert not fires(tmp_path, "AdfluxTasksFailing", series, f"{after:g}x15", "6m")
