"""The Celery application as the seed configured it (background-tasks.md: `make_celery`, its
queues and routes), with one task: a near-no-op `metrics.refresh` that, like the seed's sync
tasks, looks up the platform's campaigns in a database, finds none and says so."""

from __future__ import annotations

import os
import sqlite3
import threading
from typing import Any

from celery import Celery

REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
# SQLite file with an empty `campaigns` table (created by the harness before the worker).
CAMPAIGNS_DB = os.environ.get("BENCH_CAMPAIGNS_DB", ":memory:")

celery = Celery("adflux")
celery.conf.update(
    # core/celery_utils.py: make_celery
    broker_url=REDIS_URL,
    result_backend=REDIS_URL,
    task_serializer="json",
    accept_content=["json"],
    result_serializer="json",
    timezone="UTC",
    enable_utc=True,
    task_track_started=True,
    task_time_limit=3600,
    worker_max_tasks_per_child=200,
    worker_prefetch_multiplier=1,
    # "Colas de Tareas": the three queues; sync tasks (metrics included) go to low_priority.
    task_queues={
        "default": {"exchange": "default", "routing_key": "default"},
        "high_priority": {"exchange": "high_priority", "routing_key": "high_priority"},
        "low_priority": {"exchange": "low_priority", "routing_key": "low_priority"},
    },
    task_routes={"metrics.refresh": {"queue": "low_priority"}},
)

_local = threading.local()


def _campaigns() -> sqlite3.Connection:
    """This worker process's (or thread's) connection to the campaigns database."""
    conn: sqlite3.Connection | None = getattr(_local, "conn", None)
    if conn is None:
        conn = sqlite3.connect(CAMPAIGNS_DB)
        _local.conn = conn
    return conn


def refresh_metrics(platform: str | None = None) -> dict[str, Any]:
    """The seed's sync task for a platform without campaigns: one query, nothing to do."""
    platforms = [platform] if platform else ["meta", "google"]
    total = 0
    for name in platforms:
        rows = _campaigns().execute(
            "SELECT id, external_id FROM campaigns WHERE platform = ?", (name,)
        )
        total += len(rows.fetchall())
    which = " and ".join(platforms)
    return {"status": "success", "total": total, "message": f"no {which} campaigns to sync"}


refresh = celery.task(name="metrics.refresh")(refresh_metrics)
TASKS: dict[str, Any] = {"metrics.refresh": refresh}
