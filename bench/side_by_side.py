"""AdFlux against the seed's design (Celery 5 + Redis), in one run, through the same HTTP
client: the near-no-op task `metrics.refresh` for a platform without campaigns, one at a time
(POST -> SUCCESS seen by GET) and as a burst from concurrent clients; beside them, the same
figures for a bare Kafka floor (what two broker hops allow with no bookkeeping)."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bench import adflux_stack
from bench.celery_baseline import run as celery_baseline
from bench.cpu import CpuUse, broker_session, measured
from bench.http_load import Burst, TaskFront, burst, sequential
from bench.kafka_floor import run as kafka_floor
from bench.report import Section, percentile

ROOT = Path(__file__).resolve().parents[1]
TASK = {"name": "metrics.refresh", "kwargs": {"platform": "meta"}}
SEQUENTIAL, WARMUP = 200, 20
BURST_TASKS, BURST_CLIENTS = 2000, 16


@dataclass(frozen=True)
class Measured:
    p50_ms: float
    p99_ms: float
    burst: Burst
    burst_cpu: CpuUse
    client_cpu_ms: float  # the load client's CPU per task in the burst (this process)


def _measure(front: TaskFront, sessions: dict[str, int]) -> Measured:
    latencies = sequential(front, SEQUENTIAL, WARMUP)
    client_before = time.process_time()
    with measured(sessions) as cpu:
        result = burst(front, BURST_TASKS, BURST_CLIENTS)
    client_ms = (time.process_time() - client_before) * 1000 / BURST_TASKS
    return Measured(percentile(latencies, 0.5), percentile(latencies, 0.99), result, cpu, client_ms)


def _celery() -> tuple[Measured, str]:
    shape = celery_baseline.worker_shape()
    with celery_baseline.running(shape) as baseline:
        front = TaskFront(baseline.base, "/tasks", "/tasks", TASK, {})
        return _measure(front, baseline.sessions), shape.describe()


def _adflux(bootstrap: str, database_url: str) -> Measured:
    with adflux_stack.running(("sync", "gateway"), bootstrap, database_url) as stack:
        front = TaskFront(
            stack.api,
            "/tasks",
            "/tasks",
            TASK,
            {"Authorization": f"Bearer {adflux_stack.TOKEN}"},
        )
        sessions = {p.name: p.proc.pid for p in stack.processes if p.proc is not None}
        return _measure(front, sessions | broker_session(ROOT))


def _floor(bootstrap: str) -> Measured:
    with kafka_floor.running(bootstrap) as floor:
        front = TaskFront(floor.base, "/tasks", "/tasks", TASK, {})
        return _measure(front, floor.sessions | broker_session(ROOT))


def run(bootstrap: str, database_url: str) -> Section:
    celery, shape = _celery()
    adflux = _adflux(bootstrap, database_url)
    floor = _floor(bootstrap)
    header = ["", "Celery + Redis", "AdFlux", "AdFlux/Celery", "target", ""]
    rows = [[*header, "Kafka floor", "floor/Celery"]]

    def row(name: str, pick: Callable[[Measured], float], unit: str, at_most: bool) -> None:
        theirs, ours, bare = pick(celery), pick(adflux), pick(floor)
        ratio = ours / theirs if theirs else math.nan
        target, met = ("ratio <= 1", ratio <= 1) if at_most else ("ratio >= 3", ratio >= 3)
        rows.append(
            [
                name,
                f"{theirs:.1f} {unit}",
                f"{ours:.1f} {unit}",
                f"{ratio:.2f}",
                target,
                "met" if met else "MISSED",
                f"{bare:.1f} {unit}",
                f"{bare / theirs if theirs else math.nan:.2f}",
            ]
        )

    row(f"sequential p50 ({SEQUENTIAL} tasks)", lambda m: m.p50_ms, "ms", True)
    row(f"sequential p99 ({SEQUENTIAL} tasks)", lambda m: m.p99_ms, "ms", True)
    label = f"{BURST_TASKS} tasks, {BURST_CLIENTS} clients:"
    row(f"{label} done", lambda m: m.burst.done_per_second, "/s", False)
    row(f"{label} POSTs accepted", lambda m: m.burst.accepted_per_second, "/s", False)
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
            "CPU per task in the burst, every process of each system (Linux /proc): Celery "
            f"{celery.burst_cpu.describe(BURST_TASKS)}; AdFlux "
            f"{adflux.burst_cpu.describe(BURST_TASKS)}; Kafka floor "
            f"{floor.burst_cpu.describe(BURST_TASKS)}; the load client (this process) "
            f"{celery.client_cpu_ms:.2f} / {adflux.client_cpu_ms:.2f} / "
            f"{floor.client_cpu_ms:.2f} ms in the three runs",
            "Kafka floor: what the broker allows with none of AdFlux's bookkeeping, through the "
            "same client: a FastAPI front producing the command straight to Kafka and answering "
            "GET from a dict its status consumer fills, a worker answering STARTED and SUCCESS at "
            "once (no database, outbox, envelope, dedupe or retries; bench/kafka_floor)",
        ],
    )
