"""Publishes per second of one publisher process, the sandbox answering at once: publish
commands produced straight to `campaign.publish_requested`, timed until `task.status` carries
SUCCESS for every one of them."""

from __future__ import annotations

import json
import threading
import time
import uuid
from decimal import Decimal
from typing import Literal

from confluent_kafka import Consumer

from bench import adflux_stack
from bench.report import Figure, Section
from shared.envelope import Envelope, new_event
from shared.events import JobOpening, PublishRequested
from shared.producer import EventProducer

PUBLISHES, WARMUP = 600, 20
TIMEOUT = 300.0
JOB = JobOpening(
    title="Nurse",
    company="Hospital Central",
    location="Madrid",
    url="https://jobs.example.org/1",
    description="ICU",
)


def _command(index: int) -> Envelope:
    platform: Literal["meta", "google"] = "meta" if index % 2 else "google"
    campaign_id = str(uuid.uuid4())
    command = PublishRequested(
        campaign_id=campaign_id,
        platform=platform,
        name=f"Bench {index}",
        daily_budget=Decimal("10.00"),
        currency="EUR",
        job=JOB,
    )
    return new_event(command, source="bench", subject=campaign_id, taskid=str(uuid.uuid4()))


class SuccessWatch:
    """Reads `task.status` from the start and notes when each task's SUCCESS arrives."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.succeeded: dict[str, float] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._consumer = Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": f"bench-watch-{uuid.uuid4().hex[:8]}",
                "auto.offset.reset": "earliest",
                "enable.auto.commit": False,
            }
        )
        self._consumer.subscribe([topic])
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.is_set():
            msg = self._consumer.poll(0.05)
            raw = msg.value() if msg is not None and not msg.error() else None
            if raw is None:
                continue
            status = json.loads(raw)
            if status.get("state") == "SUCCESS":
                with self._lock:
                    self.succeeded.setdefault(str(status["task_id"]), time.perf_counter())

    def wait_all(self, task_ids: list[str], timeout: float) -> float:
        """perf_counter time of the last SUCCESS among `task_ids`; raises after `timeout`."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                times = [self.succeeded.get(t) for t in task_ids]
            if all(t is not None for t in times):
                return max(t for t in times if t is not None)
            time.sleep(0.05)
        missing = sum(1 for t in task_ids if t not in self.succeeded)
        raise TimeoutError(f"{missing} of {len(task_ids)} publishes not SUCCESS in {timeout} s")

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._consumer.close()


def run(bootstrap: str, database_url: str) -> Section:
    with adflux_stack.running(("sandbox", "publisher"), bootstrap, database_url) as stack:
        topic = f"{stack.prefix}campaign.publish_requested"
        producer = EventProducer(bootstrap, "bench")
        watch = SuccessWatch(bootstrap, f"{stack.prefix}task.status")
        try:
            warm = [_command(i) for i in range(WARMUP)]
            producer.send_envelopes([(topic, e) for e in warm])
            watch.wait_all([str(e.taskid) for e in warm], 120)
            commands = [_command(i) for i in range(PUBLISHES)]
            started = time.perf_counter()
            producer.send_envelopes([(topic, e) for e in commands])
            finished = watch.wait_all([str(e.taskid) for e in commands], TIMEOUT)
        finally:
            watch.close()
            producer.close()
    rate = PUBLISHES / (finished - started)
    return Section(
        "publishes per second, one publisher process, sandbox at zero latency",
        figures=[Figure("publishes per second", rate, "/s", at_least=200)],
        notes=[
            f"{PUBLISHES} campaign.publish commands (half Meta, half Google) produced at once "
            f"after {WARMUP} warm-up ones; timed until task.status has SUCCESS for all",
            "database: " + ("PostgreSQL" if database_url else "SQLite (embedded default)"),
        ],
    )
