"""How close to its due time a retry runs, for 1 s, 5 s and 60 s retry delays: tasks whose
handler fails their first attempt with a retryable error, the delay asked for through the
task's own `retry_delay` option and the runtime left on the service's default tiers."""

from __future__ import annotations

import json
import math
import threading
import time
import uuid
from datetime import datetime
from typing import Any

from confluent_kafka import Consumer

from bench.report import Figure, Section, percentile
from shared.runtime import ConsumerRuntime, HandlerContext, RuntimeOptions
from shared.envelope import Envelope, new_event
from shared.events import MetricsRefreshRequested, TaskOptions
from shared.producer import EventProducer
from shared.retry import RetryableError
from shared.settings import ServiceSettings
from shared.topics import TopicNames, delete_topics, parse_tiers, provision_topics

DELAYS = {1.0: 40, 5.0: 40, 60.0: 20}  # retry delay (s) -> tasks
# A retry may be due anywhere in delay * (1 ± JITTER) (shared/retry.py's backoff jitter):
# lateness is measured from the runtime's own due time (next_attempt_at of the RETRY status)
# but never from later than delay * (1 + JITTER); a retry before delay * (1 - JITTER) is early.
JITTER = 0.25
COMMAND = "metrics.refresh_requested"


class Observed:
    """Per task: when attempt 1 failed, when the runtime said it is due, when attempt 2 ran."""

    def __init__(self) -> None:
        self.failed: dict[str, float] = {}
        self.due: dict[str, float] = {}
        self.retried: dict[str, float] = {}
        self.lock = threading.Lock()

    def handler(self, envelope: Envelope, payload: Any, ctx: HandlerContext) -> None:
        now = time.time()
        task_id = str(envelope.taskid)
        with self.lock:
            if task_id not in self.failed:
                self.failed[task_id] = now
                raise RetryableError("bench: fail the first attempt")
            self.retried.setdefault(task_id, now)

    def watch_status(self, consumer: Consumer, stop: threading.Event) -> None:
        while not stop.is_set():
            msg = consumer.poll(0.1)
            raw = msg.value() if msg is not None and not msg.error() else None
            if raw is None:
                continue
            status = json.loads(raw)
            if status.get("state") == "RETRY" and status.get("next_attempt_at"):
                due = datetime.fromisoformat(status["next_attempt_at"]).timestamp()
                with self.lock:
                    self.due.setdefault(str(status["task_id"]), due)


def _lateness(observed: Observed, task_id: str, delay: float) -> tuple[float, bool]:
    """Lateness as % of `delay` (inf: never retried), and whether the retry ran early."""
    failed = observed.failed[task_id]
    latest_due = failed + delay * (1 + JITTER)
    due = min(observed.due.get(task_id, latest_due), latest_due)
    ran = observed.retried.get(task_id)
    if ran is None:
        return math.inf, False
    return (ran - due) / delay * 100, ran < failed + delay * (1 - JITTER) - 0.005


def run(bootstrap: str, database_url: str) -> Section:
    """In-process runtime (no database needed: `database_url` is not used)."""
    tiers = ServiceSettings().retry_tiers
    names = TopicNames(f"bench{uuid.uuid4().hex[:8]}.", parse_tiers(tiers))
    provision_topics(bootstrap, names)
    producer = EventProducer(bootstrap, "bench")
    observed = Observed()
    stop = threading.Event()
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"{names.prefix}bench-status",
            "auto.offset.reset": "earliest",
        }
    )
    consumer.subscribe([names.topic("task.status")])
    watcher = threading.Thread(target=observed.watch_status, args=(consumer, stop), daemon=True)
    watcher.start()
    runtime = ConsumerRuntime(
        service="bench",
        group=names.group("bench"),
        bootstrap=bootstrap,
        names=names,
        producer=producer,
        options=RuntimeOptions(default_time_limit=30),
    )
    runtime.register(COMMAND, observed.handler)
    tasks: dict[float, list[str]] = {delay: [] for delay in DELAYS}
    try:
        runtime.start()
        runtime.assigned.wait(30)
        for delay, count in DELAYS.items():
            for i in range(count):
                options = TaskOptions(retry_delay=delay, max_retries=1)
                task_id = f"retry-{delay:g}s-{i}-{uuid.uuid4().hex[:6]}"
                command = MetricsRefreshRequested(platform="meta", options=options)
                envelope = new_event(command, source="bench", subject=task_id, taskid=task_id)
                producer.send(names.topic(COMMAND), envelope)
                tasks[delay].append(task_id)
        # Bounded: each retry gets twice its delay plus 30 s, then counts as never retried.
        deadline = time.monotonic() + 2 * max(DELAYS) + 30
        every = [t for ids in tasks.values() for t in ids]
        while time.monotonic() < deadline:
            with observed.lock:
                if all(t in observed.retried for t in every):
                    break
            time.sleep(0.2)
    finally:
        runtime.stop()
        stop.set()
        watcher.join(5)
        consumer.close()
        producer.close()
        delete_topics(bootstrap, names)
    figures: list[Figure] = []
    notes = [f"retry tiers: the service default ({tiers}); tasks retry_delay = the delay"]
    for delay, ids in tasks.items():
        with observed.lock:
            measured = [_lateness(observed, t, delay) for t in ids if t in observed.failed]
        late = [pct for pct, _early in measured]
        early = sum(1 for _pct, was_early in measured if was_early)
        never = sum(1 for pct in late if math.isinf(pct))
        figures.append(
            Figure(f"{delay:g} s delay: p99 lateness", percentile(late, 0.99), "%", at_most=10)
        )
        figures.append(Figure(f"{delay:g} s delay: p50 lateness", percentile(late, 0.5), "%"))
        notes.append(
            f"{delay:g} s: {len(measured)} of {len(ids)} failed once, {never} not retried within"
            f" {2 * max(DELAYS) + 30:g} s, {early} early"
        )
    return Section("retry due-time accuracy (lateness as % of the delay)", figures, notes)
