"""Runs the baseline for one benchmark: Debian's redis-server on a free loopback port (no
persistence), a Celery worker and the FastAPI front, each as a process of its own; stops them
(and the worker's pool children) on exit."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from bench.child import Baseline, children
from infra.ports import free_port

ROOT = Path(__file__).resolve().parents[2]
QUEUES = "default,high_priority,low_priority"


@dataclass(frozen=True)
class WorkerShape:
    """How the Celery worker runs; said beside the numbers."""

    pool: str
    concurrency: int

    def describe(self) -> str:
        return (
            f"Celery worker: --pool {self.pool} --concurrency {self.concurrency}, queues {QUEUES}"
            " (the seed's config implies the default prefork pool: worker_max_tasks_per_child;"
            f" concurrency {self.concurrency} = the AdFlux worker's default lanes, where the"
            " seed's CLI default was 4; BENCH_CELERY_POOL / BENCH_CELERY_CONCURRENCY change it)"
        )


def worker_shape() -> WorkerShape:
    return WorkerShape(
        pool=os.environ.get("BENCH_CELERY_POOL", "prefork"),
        concurrency=int(os.environ.get("BENCH_CELERY_CONCURRENCY", "16")),
    )


def _redis_server() -> str:
    script = ROOT / "infra" / "redis.sh"
    found = subprocess.run([str(script)], check=True, capture_output=True, text=True)
    return found.stdout.strip().splitlines()[-1]


@contextmanager
def running(shape: WorkerShape) -> Iterator[Baseline]:
    """Redis, worker and front up."""
    workdir = Path(tempfile.mkdtemp(prefix="adflux-bench-celery-"))
    campaigns = workdir / "campaigns.db"
    with sqlite3.connect(campaigns) as conn:
        conn.execute("CREATE TABLE campaigns (id TEXT, platform TEXT, external_id TEXT)")
    redis_port = free_port()
    env = {
        "BENCH_REDIS_URL": f"redis://127.0.0.1:{redis_port}/0",
        "BENCH_CAMPAIGNS_DB": str(campaigns),
    }
    redis_argv = [_redis_server(), "--port", str(redis_port), "--bind", "127.0.0.1"]
    redis_argv += ["--save", "", "--appendonly", "no", "--dir", str(workdir)]

    def front_answers(base: str) -> bool:
        return httpx.get(f"{base}/tasks/probe", timeout=2).status_code == 200

    with children(env, workdir) as group:
        group.start("redis", redis_argv)
        celery_argv = [sys.executable, "-m", "celery", "-A", "bench.celery_baseline.app:celery"]
        celery_argv += ["worker", "--pool", shape.pool, "--concurrency", str(shape.concurrency)]
        celery_argv += ["--queues", QUEUES, "--loglevel", "WARNING"]
        celery_argv += ["--hostname", f"bench{redis_port}@%h"]
        group.start("celery-worker", celery_argv)
        front = "bench.celery_baseline.front:app"
        yield group.serve_front("front", front, front_answers, "the Celery baseline's front")
