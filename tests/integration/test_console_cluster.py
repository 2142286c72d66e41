"""Workers and queues from the real broker: a consumer-group member is listed with its
client id, host and partitions and its process's readiness (with records in flight), and
disappears when it leaves; a command topic's lag, records waiting and oldest waiting age
are read from the group's committed offsets and set as Prometheus gauges."""

from __future__ import annotations

import time

import pytest
from confluent_kafka import Consumer, Producer

from infra.waiting import wait_for
from services.gateway.cluster import KafkaInspector, Worker
from shared import metrics
from shared.metrics import HealthServer
from shared.topics import TopicNames

pytestmark = pytest.mark.integration


def test_members_lag_and_oldest_waiting_come_from_the_broker(
    kafka_bootstrap: str, names: TopicNames
) -> None:
    topic = names.topic("ml.training_requested")
    producer = Producer({"bootstrap.servers": kafka_bootstrap})
    for n in range(3):
        producer.produce(topic, key=b"k", value=f"record {n}".encode(), partition=0)
    producer.flush(10)
    group = names.group("ml")
    consumer = Consumer(
        {
            "bootstrap.servers": kafka_bootstrap,
            "group.id": group,
            "client.id": f"ml-{group}",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "max.poll.interval.ms": 60000,
        }
    )
    health = HealthServer("127.0.0.1", 0, {"database": lambda: True}).start()
    inspector = KafkaInspector(
        kafka_bootstrap, names, {"ml": f"http://127.0.0.1:{health.port}/readyz"}
    )
    try:
        consumer.subscribe([topic])
        deadline = time.monotonic() + 30
        message = None
        while message is None and time.monotonic() < deadline:
            polled = consumer.poll(0.5)
            message = polled if polled is not None and not polled.error() else None
        assert message is not None and message.offset() == 0
        consumer.commit(message=message, asynchronous=False)

        def ml_worker() -> Worker | None:
            found = [w for w in inspector.workers() if w.service == "ml" and w.members]
            return found[0] if found else None

        wait_for(ml_worker, 30, 0.5, "the ml member in its group")
        worker = ml_worker()
        assert worker is not None
        [member] = worker.members
        assert member.client_id == f"ml-{group}" and member.group == "ml"
        assert "ml.training_requested[0]" in member.partitions and member.host
        assert worker.ready is True and worker.readiness is not None
        assert "in_flight" in worker.readiness

        queues = {q.physical: q for q in inspector.queues()}
        main = queues[topic]
        assert main.kind == "main" and main.waiting == 2
        [lag] = [entry for entry in main.lags if entry.partition == 0]
        assert (lag.group, lag.committed, lag.end, lag.lag) == ("ml", 1, 3, 2)
        assert main.oldest_waiting_seconds is not None and 0 <= main.oldest_waiting_seconds < 60
        assert queues[names.dlq("ml.training_requested")].kind == "dlq"
        assert any(q.kind.startswith("retry:") for q in queues.values())
        gauge = metrics.CONSUMER_LAG.labels("ml", topic, "0")._value.get()
        assert gauge == 2
    finally:
        consumer.close()
        health.stop()
    wait_for(
        lambda: not any(w.members for w in inspector.workers() if w.service == "ml"),
        30,
        0.5,
        "the ml member gone after it left its group",
    )
