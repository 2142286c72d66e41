"""`POST /tasks`'s writes, on one thread and group-committed: the requests that arrive while a
transaction commits go into the next one together (one commit and one produce batch for all
of them), and the event loop never waits on the database.

A rejected command (`CommandRejected`: 409, 413, 422) or a database error in a group sends
every request of it through again alone, each in its own transaction, so one request's
failure is never another's.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from services.gateway.commands import TaskRequest, issue_tasks
from services.gateway.live import TaskUpdateHub, task_update
from services.gateway.models import Task
from shared.background import BackgroundLoop
from shared.db import Database
from shared.events import TaskOptions
from shared.outbox import Outbox

log = logging.getLogger(__name__)


class IntakeStopped(RuntimeError):
    """The gateway is shutting down: the task was not recorded."""


@dataclass
class WaitingRequest:
    """One `POST /tasks`, waiting on the event loop for its task."""

    task: TaskRequest
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[Task]

    def settle(self, outcome: Task | BaseException) -> None:
        """Hand the outcome to the request's event loop (from the intake thread)."""
        with contextlib.suppress(RuntimeError):  # a closed loop: the server stopped
            self.loop.call_soon_threadsafe(_settle, self.future, outcome)


def _settle(future: asyncio.Future[Task], outcome: Task | BaseException) -> None:
    if future.done():  # the client went away: nothing waits for it
        return
    if isinstance(outcome, BaseException):
        future.set_exception(outcome)
    else:
        future.set_result(outcome)


class TaskIntake(BackgroundLoop):
    """Records tasks and their commands for `POST /tasks`, at most `max_group` per
    transaction."""

    thread_name = "task-intake"

    def __init__(
        self, db: Database, outbox: Outbox, hub: TaskUpdateHub, max_group: int = 100
    ) -> None:
        super().__init__()
        self.db = db
        self.outbox = outbox
        self.hub = hub
        self.max_group = max_group
        self._requests: queue.SimpleQueue[WaitingRequest | None] = queue.SimpleQueue()
        self._held: sa.Connection | None = None  # SQLite's, see `_connection`

    async def issue(
        self,
        name: str,
        *,
        args: list[Any] | None = None,
        kwargs: dict[str, Any] | None = None,
        options: TaskOptions,
    ) -> Task:
        """The recorded task (its command committed to the outbox and handed to the
        producer); raises what `issue_task` raises for this request."""
        if self._stop.is_set():
            raise IntakeStopped("the gateway is stopping")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Task] = loop.create_future()
        self._requests.put(WaitingRequest(TaskRequest(name, args, kwargs, options), loop, future))
        return await future

    def _wake(self) -> None:
        self._requests.put(None)

    def run(self) -> None:
        while not self._stop.is_set():
            first = self._requests.get()
            if first is None:
                continue
            group = [first]
            while len(group) < self.max_group:
                try:
                    request = self._requests.get_nowait()
                except queue.Empty:
                    break
                if request is not None:
                    group.append(request)
            self._record(group)
        self._close()
        while True:  # stopped: nothing more is recorded
            try:
                left = self._requests.get_nowait()
            except queue.Empty:
                return
            if left is not None:
                left.settle(IntakeStopped("the gateway is stopping"))

    def _record(self, group: list[WaitingRequest]) -> None:
        outcomes: list[Task | BaseException] | None = None
        if len(group) > 1:
            try:
                outcomes = list(self._together(group))
            except Exception as exc:  # each request then gets its own transaction
                log.debug("a group of %d tasks falls back to one at a time: %s", len(group), exc)
        if outcomes is None:
            outcomes = [self._alone(request) for request in group]
        for request, outcome in zip(group, outcomes, strict=True):
            if isinstance(outcome, Task):
                self.hub.publish(task_update(outcome, outcome.updated_at))
            request.settle(outcome)

    def _together(self, group: list[WaitingRequest]) -> list[Task]:
        with self._connection() as connection:
            return issue_tasks(connection, self.outbox, [request.task for request in group])

    def _alone(self, request: WaitingRequest) -> Task | BaseException:
        try:
            with self._connection() as connection:
                (task,) = issue_tasks(connection, self.outbox, [request.task])
            return task
        except Exception as exc:
            return exc

    @contextlib.contextmanager
    def _connection(self) -> Iterator[sa.Connection]:
        """The connection a group is recorded on. SQLite's is kept open for the intake's
        life (no pool checkout and reset per POST), and rolled back after a failure; a
        server's is taken from the pool each time, which checks that it is still alive."""
        if not self.db.is_sqlite:
            with self.db.engine.connect() as connection:
                yield connection
            return
        if self._held is None:
            self._held = self.db.engine.connect()
        try:
            yield self._held
        except BaseException:
            self._held.rollback()
            raise

    def _close(self) -> None:
        if self._held is not None:
            self._held.close()
            self._held = None
