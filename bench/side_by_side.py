"""AdFlux against the seed's design (Celery 5 + Redis), in one run, through the same HTTP
client: the near-no-op task `metrics.refresh` for a platform without campaigns, one at a time
(POST -> SUCCESS seen by GET) and as a burst from concurrent clients; beside them, the same
figures for a bare Kafka floor (what two broker hops allow with no bookkeeping).

The three systems run at once and are measured in interleaved rounds, each system once per
round in a rotating order, after the same warm-up: a machine whose speed drifts over a minute
(a shared VM does) then weighs on all three alike, and none is measured cold (a broker's JIT,
topics just created) while another is measured warm."""

from __future__ import annotations

import contextlib
import math
import statistics
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from bench import adflux_stack
from bench.celery_baseline import run as celery_baseline
from bench.cpu import CpuUse, broker_session, measured
from bench.http_load import Burst, TaskFront, burst, sequential
from bench.kafka_floor import run as kafka_floor
from bench.report import Section, percentile

ROOT = Path(__file__).resolve().parents[1]
TASK = {"name": "metrics.refresh", "kwargs": {"platform": "meta"}}
SEQUENTIAL, BURST_TASKS, BURST_CLIENTS = 200, 2000, 16
ROUNDS = 3  # of both the sequential run and the burst, per system
WARMUP_SECONDS, WARMUP_BURST = 3.0, 500  # per system, before any round


@dataclass
class Contender:
    """One measured system: its front, its processes and what its rounds measured."""

    name: str
    front: TaskFront
    sessions: dict[str, int]
    latencies: list[list[float]] = field(default_factory=list)  # per round, ms
    bursts: list[Burst] = field(default_factory=list)
    burst_cpu: CpuUse = field(default_factory=CpuUse)
    client_cpu_s: float = 0.0  # the load client's CPU over every burst

    def warm_up(self) -> None:
        ends = time.monotonic() + WARMUP_SECONDS
        while time.monotonic() < ends:
            sequential(self.front, 20, 0)
        burst(self.front, WARMUP_BURST, BURST_CLIENTS)

    def run_sequential(self) -> None:
        self.latencies.append(sequential(self.front, SEQUENTIAL, 0))

    def run_burst(self) -> None:
        client_before = time.process_time()
        with measured(self.sessions) as cpu:
            self.bursts.append(burst(self.front, BURST_TASKS, BURST_CLIENTS))
        self.client_cpu_s += time.process_time() - client_before
        for name, seconds in cpu.seconds.items():
            self.burst_cpu.seconds[name] = self.burst_cpu.seconds.get(name, 0.0) + seconds

    # --- figures over the rounds ----------------------------------------------------------
    def p50_ms(self) -> float:
        return statistics.median(percentile(round_, 0.5) for round_ in self.latencies)

    def p99_ms(self) -> float:  # of every sequential task of every round
        return percentile([ms for round_ in self.latencies for ms in round_], 0.99)

    def done_per_second(self) -> float:
        return statistics.median(b.done_per_second for b in self.bursts)

    def accepted_per_second(self) -> float:
        return statistics.median(b.accepted_per_second for b in self.bursts)

    def burst_tasks(self) -> int:
        return BURST_TASKS * len(self.bursts)

    def rounds(self) -> str:
        p50s = ", ".join(f"{percentile(r, 0.5):.1f}" for r in self.latencies)
        done = ", ".join(f"{b.done_per_second:.0f}" for b in self.bursts)
        return f"{self.name}: p50 {p50s} ms; done {done}/s"


@contextlib.contextmanager
def _celery() -> Iterator[tuple[Contender, str]]:
    shape = celery_baseline.worker_shape()
    with celery_baseline.running(shape) as baseline:
        front = TaskFront(baseline.base, "/tasks", "/tasks", TASK, {})
        yield Contender("Celery", front, baseline.sessions), shape.describe()


@contextlib.contextmanager
def _adflux(bootstrap: str, database_url: str) -> Iterator[Contender]:
    with adflux_stack.running(("sync", "gateway"), bootstrap, database_url) as stack:
        front = TaskFront(
            stack.api,
            "/tasks",
            "/tasks",
            TASK,
            {"Authorization": f"Bearer {adflux_stack.TOKEN}"},
        )
        sessions = {p.name: p.proc.pid for p in stack.processes if p.proc is not None}
        yield Contender("AdFlux", front, sessions | broker_session(ROOT))


@contextlib.contextmanager
def _floor(bootstrap: str) -> Iterator[Contender]:
    with kafka_floor.running(bootstrap) as floor:
        front = TaskFront(floor.base, "/tasks", "/tasks", TASK, {})
        yield Contender("Kafka floor", front, floor.sessions | broker_session(ROOT))


def _measure(contenders: list[Contender]) -> None:
    """Warm every system up, then ROUNDS rounds of sequential runs and of bursts, each round
    starting with the next system (C A F, A F C, F C A)."""
    for contender in contenders:
        contender.warm_up()
    for step in (Contender.run_sequential, Contender.run_burst):
        for round_ in range(ROUNDS):
            shift = round_ % len(contenders)
            for contender in contenders[shift:] + contenders[:shift]:
                step(contender)


def run(bootstrap: str, database_url: str) -> Section:
    with contextlib.ExitStack() as stack:
        celery, shape = stack.enter_context(_celery())
        adflux = stack.enter_context(_adflux(bootstrap, database_url))
        floor = stack.enter_context(_floor(bootstrap))
        _measure([celery, adflux, floor])
    header = ["", "Celery + Redis", "AdFlux", "AdFlux/Celery", "target", ""]
    rows = [[*header, "Kafka floor", "floor/Celery"]]

    def row(name: str, pick: Callable[[Contender], float], unit: str, at_most: bool) -> None:
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

    row(f"sequential p50 ({ROUNDS} x {SEQUENTIAL} tasks)", Contender.p50_ms, "ms", True)
    row(f"sequential p99 ({ROUNDS} x {SEQUENTIAL} tasks)", Contender.p99_ms, "ms", True)
    label = f"{BURST_TASKS} tasks, {BURST_CLIENTS} clients:"
    row(f"{label} done", Contender.done_per_second, "/s", False)
    row(f"{label} POSTs accepted", Contender.accepted_per_second, "/s", False)
    return Section(
        "side by side: metrics.refresh (no campaigns) via HTTP, AdFlux vs the seed's Celery",
        table=rows,
        notes=[
            shape,
            "AdFlux: gateway + sync worker processes, "
            + ("PostgreSQL" if database_url else "SQLite (embedded default)"),
            "Celery: FastAPI front (apply_async / AsyncResult) + worker, redis-server on loopback",
            "latency: POST until a GET returns SUCCESS (polled every 2 ms); burst: each client "
            "POSTs its share, then polls its own tasks",
            f"the three systems run at once; each first gets {WARMUP_SECONDS:g} s of sequential "
            f"tasks and a {WARMUP_BURST}-task burst, then {ROUNDS} interleaved rounds (rotating "
            "order); p50 and done/s are the median of the rounds, p99 is over every round's tasks",
            "per round: " + "; ".join(c.rounds() for c in (celery, adflux, floor)),
            "CPU per task in the bursts, every process of each system (Linux /proc): "
            + "; ".join(
                f"{c.name} {c.burst_cpu.describe(c.burst_tasks())}" for c in (celery, adflux, floor)
            )
            + "; the load client (this process) "
            + " / ".join(
                f"{c.client_cpu_s * 1000 / c.burst_tasks():.2f}" for c in (celery, adflux, floor)
            )
            + " ms",
            "Kafka floor: what the broker allows with none of AdFlux's bookkeeping, through the "
            "same client: a FastAPI front producing the command straight to Kafka and answering "
            "GET from a dict its status consumer fills, a worker answering STARTED and SUCCESS at "
            "once (no database, outbox, envelope, dedupe or retries; bench/kafka_floor)",
        ],
    )
