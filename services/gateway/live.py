"""Live task updates: the newest transition of each recent task as `task.status` reports it,
and a hub that fans each transition (worker-reported or made by the gateway itself) out to
WebSocket subscribers, each message with the time of its transition.

Every gateway process reads the whole `task.status` feed into `LiveTasks` (a broadcast
listener, no database): a transition is visible to `GET /tasks/{id}` and the WebSocket as soon
as it is consumed, a few milliseconds before the read model's transaction commits it, and
whichever process serves the request knows it. The read model stays the record; the live view
only lays a newer state over it. Listeners run on consumer threads; subscribers live on the
server's event loop, so the hub hands every update over with `call_soon_threadsafe`.
"""

from __future__ import annotations

import asyncio
import threading
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from services.gateway.models import Task
from shared.envelope import Envelope
from shared.events import FINAL_STATES, TaskState, TaskStatus
from shared.runtime import HandlerContext


def supersedes(current: TaskState, current_attempts: int, state: TaskState, attempt: int) -> bool:
    """Whether a transition to `state` in `attempt` replaces what a task shows now. Nothing
    moves a task out of SUCCESS or REVOKED: a succeeded task never runs again, so a later
    transition is a duplicate copy of its command starting before it finds the tracking row
    (after a crash, a copy in a delay tier and the redelivered original can both be
    consumed). Only a newer attempt moves a task out of FAILURE or EXPIRED (a replayed dead
    letter)."""
    if current in (TaskState.SUCCESS, TaskState.REVOKED):
        return False
    if current in FINAL_STATES and state not in FINAL_STATES:
        return attempt > current_attempts
    if current in FINAL_STATES and state in FINAL_STATES:
        return attempt >= current_attempts
    return True


def shown_attempts(state: TaskState, attempt: int, before: int) -> int:
    """The attempts a task shows after a transition (a PENDING re-queue does not count one)."""
    return max(before, attempt if state is not TaskState.PENDING else 0)


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


@dataclass(frozen=True)
class Transition:
    """One task transition as the feed reported it."""

    name: str
    state: TaskState
    attempt: int
    progress: int | None
    result: dict[str, Any] | None
    error: dict[str, Any] | None
    next_attempt_at: datetime | None
    at: datetime
    worker: str

    @classmethod
    def of(cls, envelope: Envelope, status: TaskStatus) -> Transition:
        return cls(
            name=status.name,
            state=status.state,
            attempt=status.attempt,
            progress=status.progress,
            result=status.result,
            error=status.error.model_dump(mode="json") if status.error is not None else None,
            next_attempt_at=status.next_attempt_at,
            at=status.at,
            worker=envelope.source.removeprefix("adflux/"),
        )

    def update(self, task_id: str, attempts: int) -> dict[str, Any]:
        return {
            "task_id": task_id,
            "name": self.name,
            "state": self.state.value,
            "progress": self.progress,
            "result": self.result,
            "attempt": attempts,
            "at": self.at.isoformat(),
        }


@dataclass
class _Recent:
    state: TaskState
    attempts: int
    transitions: list[Transition]


class LiveTasks:
    """The transitions of the `capacity` most recently changed tasks (the last `keep` of each),
    fed by every `task.status` record; each accepted transition goes to the hub. The read
    model commits a transition milliseconds after it is consumed, so a small window is
    enough; a task that fell out of it is answered from the read model alone."""

    def __init__(self, hub: TaskUpdateHub, capacity: int = 10_000, keep: int = 10) -> None:
        self.hub = hub
        self.capacity = capacity
        self.keep = keep
        self._tasks: OrderedDict[str, _Recent] = OrderedDict()
        self._lock = threading.Lock()

    def observe(self, envelope: Envelope, status: TaskStatus, ctx: HandlerContext) -> None:
        transition = Transition.of(envelope, status)
        with self._lock:
            known = self._tasks.get(status.task_id)
            if known is None:
                known = self._tasks[status.task_id] = _Recent(status.state, 0, [])
            elif not supersedes(known.state, known.attempts, status.state, status.attempt) or any(
                (t.state, t.at) == (transition.state, transition.at) for t in known.transitions
            ):
                return  # a stale or redelivered transition
            known.state = status.state
            known.attempts = shown_attempts(status.state, status.attempt, known.attempts)
            known.transitions = [*known.transitions, transition][-self.keep :]
            attempts = known.attempts
            self._tasks.move_to_end(status.task_id)
            while len(self._tasks) > self.capacity:
                self._tasks.popitem(last=False)
        self.hub.publish(transition.update(status.task_id, attempts))

    def transitions(self, task_id: str) -> list[Transition]:
        with self._lock:
            known = self._tasks.get(task_id)
            return list(known.transitions) if known is not None else []


def overlaid(view: dict[str, Any], transitions: list[Transition]) -> dict[str, Any]:
    """The read model's view of a task (`TaskOut`'s fields) with the consumed transitions it
    has not committed yet laid over it, by the projection's own rules."""
    history = view["history"]
    last_at = datetime.fromisoformat(history[-1]["at"]) if history else view["created_at"]
    newer = [t for t in transitions if t.at > last_at]
    if not newer:
        return view
    view = dict(view)
    for t in newer:
        if not supersedes(TaskState(view["state"]), view["attempts"], t.state, t.attempt):
            continue
        entry: dict[str, Any] = {
            "state": t.state.value,
            "at": t.at.isoformat(),
            "attempt": t.attempt,
            "worker": t.worker,
        }
        if t.progress is not None:
            view["progress"] = entry["progress"] = t.progress
        if t.result is not None or t.state is TaskState.SUCCESS:
            view["result"] = t.result
        if t.error is not None:
            view["error"] = t.error
            entry["error"] = t.error.get("message")
        view["state"] = t.state.value
        view["attempts"] = shown_attempts(t.state, t.attempt, view["attempts"])
        view["next_attempt_at"] = t.next_attempt_at
        view["history"] = [*view["history"], entry]
    return view


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
