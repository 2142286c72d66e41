"""`python -m services.ml` as a process: it becomes ready (database, command consumer and
the faust agent), segments a new candidate online once a model exists, and exits cleanly
and promptly on SIGTERM."""

from __future__ import annotations

import signal
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa

from infra.ports import free_port
from infra.processes import ServiceProcess
from infra.waiting import wait_for
from shared.envelope import new_event
from shared.events import CandidateUpserted, TaskState, TrainingRequested
from shared.producer import EventProducer
from shared.topics import TopicNames
from tests.integration.test_ml_service import EventCollector
from tests.unit.test_ml_segmentation import synthetic_profiles

pytestmark = pytest.mark.integration


def stored_candidates(database_url: str) -> int:
    engine = sa.create_engine(database_url)
    try:
        with engine.connect() as conn:
            return int(conn.execute(sa.text("SELECT count(*) FROM ml.candidates")).scalar_one())
    except sa.exc.ProgrammingError:  # not migrated yet
        return 0
    finally:
        engine.dispose()


def test_ml_process_trains_segments_online_and_stops_on_sigterm(
    service_env: dict[str, str],
    names: TopicNames,
    kafka_bootstrap: str,
    database_url: str,
    tmp_path: Path,
) -> None:
    port = free_port()
    process = ServiceProcess("ml", {**service_env, "ADFLUX_METRICS_PORT": str(port)}, tmp_path)
    producer = EventProducer(kafka_bootstrap, "test")
    collector = EventCollector(
        kafka_bootstrap, [names.topic("task.status"), names.topic("candidate.segmented")]
    )
    try:
        process.start()
        process.wait_http_ok(f"http://127.0.0.1:{port}/readyz", timeout=90)
        profiles = synthetic_profiles(per_group=5)
        for profile in profiles:
            upserted = CandidateUpserted(**profile, updated_at=datetime.now(UTC))
            envelope = new_event(upserted, source="test", subject=profile["candidate_id"])
            producer.send(names.topic("candidate.upserted"), envelope)
        # The consumer handles partitions in any order: train once all 15 are stored.
        wait_for(lambda: stored_candidates(database_url) == 15, 30, what="15 stored candidates")
        command = new_event(TrainingRequested(), source="test", subject="t1", taskid="t1")
        producer.send(names.topic("ml.training_requested"), command)
        done = collector.wait_state("t1", TaskState.SUCCESS)
        assert done.result is not None and done.result["n_samples"] == 15
        newcomer = CandidateUpserted(
            **{**profiles[0], "candidate_id": "newcomer"}, updated_at=datetime.now(UTC)
        )
        producer.send(
            names.topic("candidate.upserted"),
            new_event(newcomer, source="test", subject="newcomer"),
        )
        wait_for(
            lambda: collector.of("candidate.segmented", lambda e: e.subject == "newcomer"),
            30,
            what="online candidate.segmented for the newcomer",
        )
        metrics = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
        assert 'adflux_ml_online_assignments_total{outcome="assigned"}' in metrics

        assert process.proc is not None
        started = time.monotonic()
        process.proc.send_signal(signal.SIGTERM)
        assert process.proc.wait(30) == 0, process.log()[-3000:]
        assert time.monotonic() - started < 20
        assert "online segment assignment stopped" in process.log()
    finally:
        process.kill()
        collector.close()
        producer.close()
