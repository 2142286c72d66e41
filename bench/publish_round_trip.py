"""Publish latency and throughput through the whole system: HTTP publish → outbox → Kafka →
publisher (real SDK) → sandbox → task.status → read model, measured until the gateway
reports SUCCESS."""

from __future__ import annotations

import statistics
import tempfile
import time
import uuid
from functools import partial
from pathlib import Path
from typing import Any

import httpx

from infra.ports import free_port
from infra.processes import ServiceProcess
from infra.waiting import wait_for

JOB = {
    "title": "Nurse",
    "company": "Hospital Central",
    "location": "Madrid",
    "url": "https://jobs.example.org/1",
    "description": "ICU",
}


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


def run(
    bootstrap: str, database_url: str = "", sequential: int = 30, burst: int = 200
) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix="adflux-bench-"))
    meta_port, google_port, http_port = free_port(), free_port(), free_port()
    env = {
        "ADFLUX_KAFKA_BOOTSTRAP": bootstrap,
        "ADFLUX_TOPIC_PREFIX": f"bench{uuid.uuid4().hex[:8]}.",
        "ADFLUX_DATABASE_URL": database_url,
        "ADFLUX_DATA_DIR": str(workdir / "data"),
        "ADFLUX_METRICS_PORT": "0",
        "ADFLUX_HTTP_PORT": str(http_port),
        "ADFLUX_SANDBOX_META_PORT": str(meta_port),
        "ADFLUX_SANDBOX_GOOGLE_PORT": str(google_port),
        "ADFLUX_META_GRAPH_URL": f"http://127.0.0.1:{meta_port}",
        "ADFLUX_GOOGLE_ADS_ENDPOINT": f"127.0.0.1:{google_port}",
        "ADFLUX_LOG_LEVEL": "WARNING",
    }
    processes = [
        ServiceProcess("sandbox", env, workdir),
        ServiceProcess("publisher", env, workdir),
        ServiceProcess("gateway", env, workdir),
    ]
    for process in processes:
        process.start()
    base = f"http://127.0.0.1:{http_port}"
    api = httpx.Client(
        base_url=f"{base}/api/v1", headers={"Authorization": "Bearer dev-token"}, timeout=30
    )
    try:
        processes[0].wait_http_ok(f"http://127.0.0.1:{meta_port}/_sandbox/stats")
        processes[2].wait_http_ok(f"{base}/readyz")
        job_id = api.post("/jobs", json=JOB).json()["id"]

        def publish(platform: str) -> str:
            campaign = api.post(
                "/campaigns",
                json={
                    "name": "Bench",
                    "platform": platform,
                    "job_id": job_id,
                    "daily_budget": "10.00",
                    "currency": "EUR",
                },
            ).json()
            return str(api.post(f"/campaigns/{campaign['id']}/publish").json()["task_id"])

        def succeeded(task_id: str) -> bool:
            return bool(api.get(f"/tasks/{task_id}").json()["state"] == "SUCCESS")

        results: dict[str, Any] = {}
        for platform in ("meta", "google"):
            for _ in range(3):  # warm-up: group join, SDK clients
                wait_for(partial(succeeded, publish(platform)), 60, 0.005)
            latencies = []
            for _ in range(sequential):
                started = time.perf_counter()
                wait_for(partial(succeeded, publish(platform)), 60, 0.002)
                latencies.append((time.perf_counter() - started) * 1000)
            results[f"{platform}_round_trip_ms"] = {
                "p50": round(statistics.median(latencies), 1),
                "p95": round(_percentile(latencies, 0.95), 1),
                "max": round(max(latencies), 1),
                "n": len(latencies),
            }
        started = time.perf_counter()
        tasks = [publish("meta" if i % 2 else "google") for i in range(burst)]
        submitted = time.perf_counter() - started

        def all_done() -> bool:
            done = api.get(
                "/tasks", params={"state": "SUCCESS", "name": "campaign.publish", "limit": 1000}
            )
            return len(done.json()) >= burst + 6 + 2 * sequential

        wait_for(all_done, 600, 0.2)
        elapsed = time.perf_counter() - started
        results["burst"] = {
            "publishes": len(tasks),
            "submit_seconds": round(submitted, 2),
            "all_success_seconds": round(elapsed, 2),
            "publishes_per_second": round(len(tasks) / elapsed, 1),
            "one_publisher_process": True,
        }
        return results
    finally:
        api.close()
        for process in reversed(processes):
            process.stop()
