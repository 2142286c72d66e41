"""AdFlux against the seed's design (Celery 5 + Redis), in one run, through the same HTTP
client: the near-no-op task `metrics.refresh` for a platform without campaigns, one at a time
(POST -> SUCCESS seen by GET) and as a burst from concurrent clients."""

from __future__ import annotations

import math
from dataclasses import dataclass

from bench import adflux_stack
from bench.celery_baseline import run as celery_baseline
from bench.http_load import Burst, TaskFront, burst, sequential
from bench.report import Section, percentile

TASK = {"name": "metrics.refresh", "kwargs": {"platform": "meta"}}
SEQUENTIAL, WARMUP = 200, 20
BURST_TASKS, BURST_CLIENTS = 2000, 16


@dataclass(frozen=True)
class Measured:
    p50_ms: float
    p99_ms: float
    burst: Burst


def _measure(front: TaskFront) -> Measured:
    latencies = sequential(front, SEQUENTIAL, WARMUP)
    return Measured(
        percentile(latencies, 0.5),
        percentile(latencies, 0.99),
        burst(front, BURST_TASKS, BURST_CLIENTS),
    )


def _celery() -> tuple[Measured, str]:
    shape = celery_baseline.worker_shape()
    with celery_baseline.running(shape) as base:
        front = TaskFront(base, "/tasks", "/tasks", TASK, {})
        return _measure(front), shape.describe()


def _adflux(bootstrap: str, database_url: str) -> Measured:
    with adflux_stack.running(("sync", "gateway"), bootstrap, database_url) as stack:
        front = TaskFront(
            stack.api,
            "/tasks",
            "/tasks",
            TASK,
            {"Authorization": f"Bearer {adflux_stack.TOKEN}"},
        )
        return _measure(front)


def run(bootstrap: str, database_url: str) -> Section:
    celery, shape = _celery()
    adflux = _adflux(bootstrap, database_url)
    rows = [["", "Celery + Redis", "AdFlux", "AdFlux/Celery", "target", ""]]

    def row(name: str, ours: float, theirs: float, unit: str, at_most: float | None) -> None:
        ratio = ours / theirs if theirs else math.nan
        if at_most is not None:
            target, met = f"ratio <= {at_most:g}", ratio <= at_most
        else:
            target, met = "ratio >= 3", ratio >= 3
        verdict = "met" if met else "MISSED"
        rows.append(
            [name, f"{theirs:.1f} {unit}", f"{ours:.1f} {unit}", f"{ratio:.2f}", target, verdict]
        )

    row(f"sequential p50 ({SEQUENTIAL} tasks)", adflux.p50_ms, celery.p50_ms, "ms", 1)
    row(f"sequential p99 ({SEQUENTIAL} tasks)", adflux.p99_ms, celery.p99_ms, "ms", 1)
    label = f"{BURST_TASKS} tasks, {BURST_CLIENTS} clients:"
    row(f"{label} done", adflux.burst.done_per_second, celery.burst.done_per_second, "/s", None)
    row(
        f"{label} POSTs accepted",
        adflux.burst.accepted_per_second,
        celery.burst.accepted_per_second,
        "/s",
        None,
    )
    return Section(
        "side by side: metrics.refresh (no campaigns) via HTTP, AdFlux vs the seed's Celery",
        table=rows,
        notes=[
            shape,
            "AdFlux: gateway + sync worker processes, "
            + ("PostgreSQL" if database_url else "SQLite (embedded default)"),
            "Celery: FastAPI front (apply_async / AsyncResult) + worker, redis-server on loopback",
            f"latency: POST until a GET returns SUCCESS (polled every 2 ms), after {WARMUP} "
            "warm-up tasks; burst: each client POSTs its share, then polls its own tasks",
        ],
    )
