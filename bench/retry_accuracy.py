"""How close to its due time a retried record runs: records fail once, wait in a 1 s or
3 s delay tier, and we measure when the handler sees them again minus when they were due."""

from __future__ import annotations

import statistics
import threading
import time
import uuid
from typing import Any

from shared.consumer import ConsumerRuntime, HandlerContext, RuntimeOptions
from shared.envelope import Envelope, new_event
from shared.events import TaskOptions, TrainingRequested
from shared.producer import EventProducer
from shared.retry import RetryableError
from shared.topics import TopicNames, parse_tiers, provision_topics


def run(bootstrap: str, records: int = 200) -> dict[str, Any]:
    names = TopicNames(f"bench{uuid.uuid4().hex[:8]}.", parse_tiers("1s:1,3s:3"))
    provision_topics(bootstrap, names)
    producer = EventProducer(bootstrap, "bench")
    first_failure: dict[str, float] = {}
    lateness: list[float] = []
    done = threading.Event()
    lock = threading.Lock()

    def handler(envelope: Envelope, payload: Any, ctx: HandlerContext) -> None:
        now = time.time()
        with lock:
            if envelope.attempt == 1:
                first_failure[envelope.subject] = now
                raise RetryableError("fail once")
            delay = 1.0 if payload.options.retry_delay < 1 else 3.0
            lateness.append(now - (first_failure[envelope.subject] + delay))
            if len(lateness) >= records:
                done.set()

    runtime = ConsumerRuntime(
        service="bench",
        group=names.group("bench"),
        bootstrap=bootstrap,
        names=names,
        producer=producer,
        options=RuntimeOptions(default_time_limit=30),
    )
    runtime.register("ml.training_requested", handler)
    runtime.start()
    runtime.assigned.wait(30)
    topic = names.topic("ml.training_requested")
    for i in range(records):
        # retry_delay 0.5 -> the 1 s tier; 2.0 (±25 % jitter) -> the 3 s tier
        options = TaskOptions(retry_delay=0.5 if i % 2 else 2.0, max_retries=2)
        envelope = new_event(
            TrainingRequested(options=options), source="bench", subject=f"r{i}", taskid=f"r{i}"
        )
        producer.send(topic, envelope)
        time.sleep(0.01)
    done.wait(120)
    runtime.stop()
    ordered = sorted(lateness)
    return {
        "records": len(ordered),
        "lateness_p50_ms": round(statistics.median(ordered) * 1000, 1),
        "lateness_p95_ms": round(ordered[int(len(ordered) * 0.95) - 1] * 1000, 1),
        "lateness_max_ms": round(ordered[-1] * 1000, 1),
        "early": sum(1 for x in ordered if x < -0.005),
    }
