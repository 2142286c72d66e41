"""Reads a run's `task.status` topic from its start and keeps every transition per task, with
the time it arrived: what the benchmarks that bypass the HTTP front time against."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

from confluent_kafka import Consumer

Status = dict[str, Any]


class StatusWatch:
    """Every `task.status` event of the topic, by task id, as (perf_counter time, event)."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self._seen: dict[str, list[tuple[float, Status]]] = {}
        self._cond = threading.Condition()
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
            with self._cond:
                self._seen.setdefault(str(status["task_id"]), []).append(
                    (time.perf_counter(), status)
                )
                self._cond.notify_all()

    def first(
        self, task_id: str, state: str, attempt: int | None = None
    ) -> tuple[float, Status] | None:
        """The first `state` transition of `task_id` (of that attempt, when given)."""
        with self._cond:
            for seen in self._seen.get(task_id, []):
                status = seen[1]
                if status.get("state") == state and attempt in (None, status.get("attempt")):
                    return seen
        return None

    def wait(self, task_ids: list[str], done: Callable[[str], bool], timeout: float) -> int:
        """Wait until `done` holds for every task; returns how many it does not hold for."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                left = sum(1 for t in task_ids if not done(t))
                remaining = deadline - time.monotonic()
                if not left or remaining <= 0:
                    return left
                self._cond.wait(min(remaining, 0.5))

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._consumer.close()
