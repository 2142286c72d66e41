"""Reading what landed on a topic, straight from the broker, for assertions."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, Message, TopicPartition

from infra.waiting import wait_for
from shared.envelope import Envelope, MalformedEvent, from_kafka
from shared.events import TaskState, TaskStatus


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


class EventCollector:
    """Reads topics from their beginning in the background and keeps every event."""

    def __init__(self, bootstrap: str, topics: list[str]) -> None:
        self.events: list[Envelope] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._consumer = Consumer(
            {"bootstrap.servers": bootstrap, "group.id": "unused", "enable.auto.commit": False}
        )
        partitions = []
        for topic in topics:
            meta = self._consumer.list_topics(topic, timeout=30).topics[topic]
            partitions += [TopicPartition(topic, p, OFFSET_BEGINNING) for p in meta.partitions]
        self._consumer.assign(partitions)
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            msg = self._consumer.poll(0.1)
            if msg is None or msg.error() is not None:
                continue
            try:
                envelope = from_kafka(msg.key(), msg.value(), msg.headers())  # type: ignore[arg-type]
            except MalformedEvent:
                continue
            with self._lock:
                self.events.append(envelope)

    def of(self, event_type: str, where: Callable[[Envelope], bool] = lambda e: True) -> list[Any]:
        with self._lock:
            return [e for e in self.events if e.type == event_type and where(e)]

    def of_task(self, event_type: str, task_id: str, count: int = 0) -> list[Any]:
        """The task's event payloads of a type, once at least `count` of them arrived (they
        travel on their own topic, so they may arrive after the task's SUCCESS status)."""

        def arrived() -> list[Any] | None:
            found = [e.payload() for e in self.of(event_type, lambda e: e.taskid == task_id)]
            return found if len(found) >= count else None

        if count == 0:
            return [e.payload() for e in self.of(event_type, lambda e: e.taskid == task_id)]
        return wait_for(arrived, 30, 0.05, f"{count} {event_type} of {task_id}")

    def statuses(self, task_id: str) -> list[TaskStatus]:
        return [e.payload() for e in self.of("task.status", lambda e: e.subject == task_id)]

    def wait_state(self, task_id: str, state: TaskState, timeout: float = 60) -> TaskStatus:
        def reached() -> TaskStatus | None:
            return next((s for s in self.statuses(task_id) if s.state is state), None)

        return wait_for(reached, timeout, 0.1, f"{task_id} to reach {state}")

    def close(self) -> None:
        self._stop.set()
        self._thread.join(10)
        self._consumer.close()
