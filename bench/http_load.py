"""One HTTP load driver for any task front that speaks `POST <submit> -> {"task_id"}` and
`GET <status>/{task_id} -> {"state"}`: the same client code measures AdFlux and the Celery
baseline."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any

import httpx

# Between two GETs of a task that is not done yet (the same for every system measured).
POLL_INTERVAL = 0.002


class TaskFailed(RuntimeError):
    """A task reached a final state other than SUCCESS, or not SUCCESS in time."""


@dataclass(frozen=True)
class TaskFront:
    """Where and how to submit one kind of task and read its state."""

    base_url: str
    submit_path: str
    status_path: str
    body: dict[str, Any]
    headers: dict[str, str]

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.base_url, headers=self.headers, timeout=30)

    def submit(self, client: httpx.Client) -> str:
        response = client.post(self.submit_path, json=self.body)
        response.raise_for_status()
        return str(response.json()["task_id"])

    def wait_success(self, client: httpx.Client, task_id: str, deadline: float) -> float:
        """Poll until SUCCESS; returns the perf_counter time the GET that saw it returned."""
        while True:
            response = client.get(f"{self.status_path}/{task_id}")
            now = time.perf_counter()
            state = response.json().get("state") if response.status_code == 200 else None
            if state == "SUCCESS":
                return now
            if state in ("FAILURE", "REVOKED", "EXPIRED"):
                raise TaskFailed(f"task {task_id} ended {state}")
            if now > deadline:
                raise TaskFailed(f"task {task_id} not SUCCESS in time (last: {state})")
            time.sleep(POLL_INTERVAL)


def sequential(front: TaskFront, count: int, warmup: int, timeout: float = 30.0) -> list[float]:
    """POST one task, GET until SUCCESS, then the next: each round trip in ms."""
    latencies: list[float] = []
    with front.client() as client:
        for i in range(warmup + count):
            started = time.perf_counter()
            task_id = front.submit(client)
            done = front.wait_success(client, task_id, started + timeout)
            if i >= warmup:
                latencies.append((done - started) * 1000)
    return latencies


@dataclass(frozen=True)
class Burst:
    """`tasks` POSTed by `clients` concurrent clients, each then polling its own tasks."""

    tasks: int
    clients: int
    accepted_per_second: float
    done_per_second: float
    seconds: float


def burst(front: TaskFront, tasks: int, clients: int, timeout: float = 600.0) -> Burst:
    """Every client POSTs its share as fast as it is accepted, then GETs each of its tasks
    until SUCCESS. Rates are over the time from the first POST to the last acceptance / the
    last SUCCESS seen."""
    shares = [tasks // clients + (1 if i < tasks % clients else 0) for i in range(clients)]
    start = threading.Barrier(clients + 1)
    accepted_at = [0.0] * clients
    done_at = [0.0] * clients
    errors: list[BaseException] = []

    def client_run(index: int) -> None:
        try:
            with front.client() as client:
                start.wait()
                ids = [front.submit(client) for _ in range(shares[index])]
                accepted_at[index] = time.perf_counter()
                deadline = time.perf_counter() + timeout
                for task_id in ids:
                    done_at[index] = front.wait_success(client, task_id, deadline)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=client_run, args=(i,), daemon=True) for i in range(clients)]
    for thread in threads:
        thread.start()
    start.wait()
    began = time.perf_counter()
    for thread in threads:
        thread.join(timeout + 60)
    if any(thread.is_alive() for thread in threads):
        raise TaskFailed(f"burst of {tasks} tasks not done within {timeout:.0f} s")
    if errors:
        raise TaskFailed(f"{len(errors)} of {clients} clients failed: {errors[0]!r}")
    elapsed = max(done_at) - began
    return Burst(
        tasks=tasks,
        clients=clients,
        accepted_per_second=tasks / (max(accepted_at) - began),
        done_per_second=tasks / elapsed,
        seconds=elapsed,
    )
