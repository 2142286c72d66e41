"""HTTP publish -> SUCCESS on the WebSocket: campaigns published through the gateway at a
steady pace, each timed from its POST until `WS /api/v1/tasks/stream` reports its SUCCESS
(sandbox, publisher and gateway as processes)."""

from __future__ import annotations

import json
import math
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from bench import adflux_stack
from bench.report import Figure, Section, percentile

RATE = 50.0  # publishes per second
PUBLISHES, WARMUP = 300, 10
SENDERS = 8  # HTTP clients sharing the schedule, so that one slow POST does not delay the next
TIMEOUT = 120.0
JOB = {
    "title": "Nurse",
    "company": "Hospital Central",
    "location": "Madrid",
    "url": "https://jobs.example.org/1",
    "description": "ICU",
}


class StreamWatch:
    """Notes when the WebSocket first reports SUCCESS for each task."""

    def __init__(self, ws: ClientConnection) -> None:
        self.succeeded: dict[str, float] = {}
        self.cond = threading.Condition()
        self._ws = ws
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        try:
            for message in self._ws:
                update = json.loads(message)
                now = time.perf_counter()
                if update.get("state") == "SUCCESS":
                    with self.cond:
                        self.succeeded.setdefault(str(update["task_id"]), now)
                        self.cond.notify_all()
        except ConnectionClosed:
            pass

    def wait_all(self, task_ids: list[str], timeout: float) -> int:
        """How many of `task_ids` are still without SUCCESS after at most `timeout`."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                missing = sum(1 for t in task_ids if t not in self.succeeded)
                left = deadline - time.monotonic()
                if not missing or left <= 0:
                    return missing
                self.cond.wait(min(left, 0.5))


def _drafts(api: httpx.Client, count: int) -> list[str]:
    job_id = api.post("/jobs", json=JOB).json()["id"]
    ids = []
    for i in range(count):
        body = {
            "name": f"Bench {i}",
            "platform": "meta" if i % 2 else "google",
            "job_id": job_id,
            "daily_budget": "10.00",
            "currency": "EUR",
        }
        response = api.post("/campaigns", json=body)
        response.raise_for_status()
        ids.append(str(response.json()["id"]))
    return ids


def run(bootstrap: str, database_url: str) -> Section:
    services = ("sandbox", "publisher", "gateway")
    with adflux_stack.running(services, bootstrap, database_url) as stack, stack.client() as api:
        drafts = _drafts(api, WARMUP + PUBLISHES)
        ws_url = stack.api.replace("http://", "ws://") + "/tasks/stream"
        auth = {"Authorization": f"Bearer {adflux_stack.TOKEN}"}
        with connect(ws_url, additional_headers=auth) as ws:
            watch = StreamWatch(ws)
            for campaign_id in drafts[:WARMUP]:  # group joins, SDK clients, connections
                task_id = api.post(f"/campaigns/{campaign_id}/publish").json()["task_id"]
                if watch.wait_all([task_id], 60):
                    raise TimeoutError("warm-up publish did not succeed within 60 s")
            sent: dict[str, float] = {}
            local = threading.local()
            clients: list[httpx.Client] = []
            began = time.perf_counter()

            def publish(slot: int) -> None:
                client: httpx.Client | None = getattr(local, "client", None)
                if client is None:
                    client = local.client = stack.client()
                    clients.append(client)
                time.sleep(max(0.0, began + slot / RATE - time.perf_counter()))
                started = time.perf_counter()
                campaign_id = drafts[WARMUP + slot]
                response = client.post(f"/campaigns/{campaign_id}/publish")
                response.raise_for_status()
                sent[str(response.json()["task_id"])] = started

            try:
                with ThreadPoolExecutor(SENDERS) as pool:
                    list(pool.map(publish, range(PUBLISHES)))
            finally:
                for client in clients:
                    client.close()
            pace = PUBLISHES / (time.perf_counter() - began)
            missing = watch.wait_all(list(sent), TIMEOUT)
    # A publish without SUCCESS counts as infinitely late, so it cannot flatter the percentiles.
    latencies = [(watch.succeeded.get(t, math.inf) - s) * 1000 for t, s in sent.items()]
    notes = [
        f"{PUBLISHES} publishes of draft campaigns (half Meta, half Google) paced at {RATE:g}/s "
        f"(achieved {pace:.1f}/s) after {WARMUP} warm-up ones; sandbox at zero latency",
        "database: " + ("PostgreSQL" if database_url else "SQLite (embedded default)"),
    ]
    if missing:
        notes.append(f"{missing} publishes had no SUCCESS within {TIMEOUT:g} s (counted as inf)")
    return Section(
        f"HTTP publish -> SUCCESS on the WebSocket at {RATE:g} publishes/s",
        figures=[
            Figure("p50", percentile(latencies, 0.5), "ms", at_most=25),
            Figure("p95", percentile(latencies, 0.95), "ms"),
        ],
        notes=notes,
    )
