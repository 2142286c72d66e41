"""AdFlux against the seed's design (Celery 5 + Redis), in one run, through the same HTTP
client: the near-no-op task `metrics.refresh` for a platform without campaigns, one at a time
(POST -> SUCCESS seen by GET) and as a burst from concurrent clients."""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

from bench import adflux_stack
from bench.celery_baseline import run as celery_baseline
from bench.cpu import CpuUse, broker_session, measured
from bench.http_load import Burst, TaskFront, burst, sequential
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


def _ceiling_note(celery: Measured, adflux: Measured) -> str:
    """What 3x Celery's throughput leaves per task on this machine's cores, after the load
    client's own CPU, beside what AdFlux spends."""
    cores = os.cpu_count() or 1
    wanted = 3 * celery.burst.done_per_second
    budget = cores * 1000 / wanted - adflux.client_cpu_ms
    spent = sum(adflux.burst_cpu.per_task_ms(BURST_TASKS).values())
    return (
        f"CPU ceiling: 3x Celery is {wanted:.0f} tasks/s; on {cores} cores that is "
        f"{cores * 1000 / wanted:.2f} ms of CPU per task for everything, of which the load "
        f"client takes {adflux.client_cpu_ms:.2f} ms, leaving {budget:.2f} ms for gateway, "
        f"worker and broker together (AdFlux spends {spent:.2f} ms; Celery's front, worker and "
        f"Redis {sum(celery.burst_cpu.per_task_ms(BURST_TASKS).values()):.2f} ms)"
    )


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
            "CPU per task in the burst, every process of each system (Linux /proc): Celery "
            f"{celery.burst_cpu.describe(BURST_TASKS)}; AdFlux "
            f"{adflux.burst_cpu.describe(BURST_TASKS)}; the load client (this process) "
            f"{celery.client_cpu_ms:.2f} ms in the Celery run, {adflux.client_cpu_ms:.2f} ms in "
            "AdFlux's",
            _ceiling_note(celery, adflux),
        ],
    )
