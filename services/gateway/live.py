"""Live task updates: a hub that fans each task transition (worker-reported or made by the
gateway itself) out to WebSocket subscribers, each message with the time of its transition.

Projections run in the consumer thread; subscribers live on the server's event loop, so the
hub hands every update over with `call_soon_threadsafe`.
"""

from __future__ import annotations

import asyncio
import threading
from datetime import datetime
from typing import Any

from services.gateway.models import Task


def task_update(task: Task, at: datetime) -> dict[str, Any]:
    """The message every subscriber gets for one transition of `task`, made at `at`."""
    return {
        "task_id": task.id,
        "name": task.name,
        "state": task.state,
        "progress": task.progress,
        "result": task.result,
        "attempt": task.attempts,
        "at": at.isoformat(),
    }


class TaskUpdateHub:
    """Thread-safe publish, asyncio-side subscribe; slow subscribers drop old updates."""

    def __init__(self, queue_size: int = 1000) -> None:
        self._subscribers: set[tuple[asyncio.AbstractEventLoop, asyncio.Queue[dict[str, Any]]]] = (
            set()
        )
        self._lock = threading.Lock()
        self._queue_size = queue_size

    def subscribe(self) -> asyncio.Queue[dict[str, Any]]:
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(self._queue_size)
        with self._lock:
            self._subscribers.add((asyncio.get_running_loop(), queue))
        return queue

    def unsubscribe(self, queue: asyncio.Queue[dict[str, Any]]) -> None:
        with self._lock:
            self._subscribers = {s for s in self._subscribers if s[1] is not queue}

    def publish(self, update: dict[str, Any]) -> None:
        with self._lock:
            subscribers = list(self._subscribers)
        for loop, queue in subscribers:
            loop.call_soon_threadsafe(_offer, queue, update)


def _offer(queue: asyncio.Queue[dict[str, Any]], update: dict[str, Any]) -> None:
    if queue.full():
        queue.get_nowait()
    queue.put_nowait(update)
