"""Runs the floor for one benchmark: its topics under a fresh prefix on the running broker,
the worker and the FastAPI front as processes of their own; all removed again on exit."""

from __future__ import annotations

import sys
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

from bench.child import Baseline, children
from infra.waiting import wait_for

# As AdFlux declares them: commands on 3 partitions, task.status on 6.
PARTITIONS = {"cmd": 3, "status": 6}


@contextmanager
def running(bootstrap: str) -> Iterator[Baseline]:
    """Topics, worker and front up; a task through them once before it yields."""
    prefix = f"floor-{uuid.uuid4().hex[:8]}."
    topics = [f"{prefix}{name}" for name in PARTITIONS]
    admin = AdminClient({"bootstrap.servers": bootstrap})
    created = admin.create_topics(
        [NewTopic(f"{prefix}{name}", n, 1) for name, n in PARTITIONS.items()]
    )
    for future in created.values():
        future.result()
    workdir = Path(tempfile.mkdtemp(prefix="adflux-bench-floor-"))
    env = {"BENCH_FLOOR_BOOTSTRAP": bootstrap, "BENCH_FLOOR_PREFIX": prefix}

    def a_task_went_through(base: str) -> bool:
        task_id = httpx.post(f"{base}/tasks", json={"name": "probe"}).json()["task_id"]
        wait_for(
            lambda: httpx.get(f"{base}/tasks/{task_id}").json()["state"] == "SUCCESS",
            5,
            0.05,
            "a probe task",
        )
        return True

    try:
        with children(env, workdir) as group:
            group.start("floor-worker", [sys.executable, "-m", "bench.kafka_floor.worker"])
            front = "bench.kafka_floor.front:app"
            yield group.serve_front("floor-front", front, a_task_went_through, "the Kafka floor")
    finally:
        for future in admin.delete_topics(topics).values():
            future.result()
