"""Reading what landed on a topic, straight from the broker, for assertions."""

from __future__ import annotations

import time
import uuid

from confluent_kafka import Consumer, Message

from shared.envelope import Envelope, from_kafka


def read_topic(bootstrap: str, topic: str, expect: int = 1, timeout: float = 30.0) -> list[Message]:
    """Every record of `topic` from the beginning, until `expect` arrived or `timeout`."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"test-reader-{uuid.uuid4()}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([topic])
    records: list[Message] = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline and len(records) < expect:
            msg = consumer.poll(0.2)
            if msg is not None and msg.error() is None:
                records.append(msg)
    finally:
        consumer.close()
    return records


def read_events(
    bootstrap: str, topic: str, expect: int = 1, timeout: float = 30.0
) -> list[Envelope]:
    return [
        from_kafka(m.key(), m.value(), m.headers())  # type: ignore[arg-type]
        for m in read_topic(bootstrap, topic, expect, timeout)
    ]
