"""Candidates at a million (issue #11): bulk intake through the gateway into the ML service's
table, training, batch assignment with its stored results and events, the ML process's peak
RSS, and the online assignment of single upserts — gateway and ML as real processes on the
running broker, candidates generated synthetically (`synthetic_profiles`, also used by tests)."""

from __future__ import annotations

import json
import math
import os
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import httpx
import numpy as np
import sqlalchemy as sa
from confluent_kafka import Consumer, Message

from bench import adflux_stack
from bench.report import Figure, Section, percentile
from shared.db import Database
from shared.envelope import from_kafka, new_event
from shared.events import CandidateSegmentsAssigned, CandidateUpserted
from shared.producer import EventProducer

CANDIDATES = int(os.environ.get("ADFLUX_BENCH_CANDIDATES", "1000000"))
PER_REQUEST = 10_000
SENDERS = 2
ONLINE_SAMPLES = 200
SKILLS = (
    "python", "sql", "excel", "sales", "leadership", "docker", "java", "nursing", "driving",
    "english", "spanish", "marketing", "accounting", "design", "react", "aws", "linux",
    "customer service", "logistics", "cooking", "welding", "teaching", "strategy", "finance",
)  # fmt: skip
LOCATIONS = (
    "Madrid", "Barcelona", "Valencia", "Sevilla", "Bilbao", "London", "Paris", "Berlin",
    "Lisbon", "Rome", "Milan", "Porto", "Lyon", "Munich", "Dublin", "Amsterdam",
)  # fmt: skip
EDUCATION = ("none", "secondary", "vocational", "bachelor", "master", "phd")


def synthetic_profiles(
    count: int, seed: int = 0, start: int = 0, prefix: str = "c"
) -> list[dict[str, Any]]:
    """`count` candidate profiles (JSON-ready dicts of `candidate.upserted`) from five kinds
    of candidate, noisy, a tenth without a desired salary; ids `<prefix><n>` from `start`."""
    rng = np.random.default_rng(seed)
    kind = rng.integers(0, 5, count)
    years = np.clip(rng.normal(2 + kind * 4, 1.5), 0, 60).round(1)
    education = np.clip(kind + rng.integers(0, 2, count), 0, 5)
    salary = ((20_000 + kind * 15_000) * (1 + rng.normal(0, 0.1, count))).round(2)
    no_salary = rng.random(count) < 0.1
    location = rng.integers(0, len(LOCATIONS), count)
    n_skills = rng.integers(0, 6, count)
    updated_at = datetime.now(UTC).isoformat()
    return [
        {
            "candidate_id": f"{prefix}{start + i:07d}",
            "years_experience": float(years[i]),
            "education_level": EDUCATION[education[i]],
            "skills": [
                SKILLS[(int(kind[i]) * 5 + j * 7) % len(SKILLS)] for j in range(n_skills[i])
            ],
            "location": LOCATIONS[location[i]],
            "desired_salary": None if no_salary[i] else float(salary[i]),
            "updated_at": updated_at,
        }
        for i in range(count)
    ]


def _bodies(total: int) -> list[bytes]:
    """NDJSON request bodies of PER_REQUEST profiles each."""
    return [
        b"\n".join(
            json.dumps(p).encode()
            for p in synthetic_profiles(min(PER_REQUEST, total - start), seed=start, start=start)
        )
        for start in range(0, total, PER_REQUEST)
    ]


def _headers(message: Message) -> list[tuple[str, bytes]]:
    return cast(list[tuple[str, bytes]], message.headers() or [])


def _peak_rss_mb(pid: int) -> float:
    """The process's peak resident set (VmHWM), in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return math.nan


def _wait_task(client: httpx.Client, task_id: str, timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        task: dict[str, Any] = client.get(f"/tasks/{task_id}").json()
        if task["state"] in ("SUCCESS", "FAILURE", "REVOKED", "EXPIRED"):
            if task["state"] != "SUCCESS":
                raise RuntimeError(f"task {task_id} ended {task['state']}: {task.get('error')}")
            return task
        time.sleep(0.05)
    raise TimeoutError(f"task {task_id} not done within {timeout} s")


def _run_task(client: httpx.Client, name: str, timeout: float) -> tuple[float, dict[str, Any]]:
    started = time.perf_counter()
    response = client.post("/tasks", json={"name": name})
    response.raise_for_status()
    task = _wait_task(client, response.json()["task_id"], timeout)
    return time.perf_counter() - started, task


def _intake(stack: adflux_stack.Stack, ml_db: Database, total: int) -> tuple[float, float]:
    """(seconds until every profile was accepted, seconds until all were in the ML table)."""
    bodies = _bodies(total)
    queue = list(reversed(bodies))
    lock = threading.Lock()
    errors: list[str] = []

    def send() -> None:
        with stack.client(timeout=120) as client:
            while True:
                with lock:
                    if not queue:
                        return
                    body = queue.pop()
                response = client.post(
                    "/candidates", content=body, headers={"Content-Type": "application/x-ndjson"}
                )
                if response.status_code != 202:
                    errors.append(f"{response.status_code} {response.text[:200]}")

    started = time.perf_counter()
    senders = [threading.Thread(target=send) for _ in range(SENDERS)]
    for sender in senders:
        sender.start()
    for sender in senders:
        sender.join()
    accepted = time.perf_counter() - started
    if errors:
        raise RuntimeError(f"intake refused: {errors[:3]}")
    deadline = time.monotonic() + 1200
    while _count(ml_db, "candidates") < total:
        if time.monotonic() > deadline:
            raise TimeoutError("candidates not all stored within 20 minutes")
        time.sleep(0.25)
    return accepted, time.perf_counter() - started


def _count(db: Database, table: str) -> int:
    with db.engine.connect() as conn:
        return int(conn.execute(sa.text(f"SELECT count(*) FROM {table}")).scalar_one())


def _assignment_events(bootstrap: str, topic: str, total: int, timeout: float) -> float:
    """Epoch seconds at which the last of the batch events covering `total` candidates was
    appended to `topic`."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"bench-{uuid.uuid4().hex[:8]}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([topic])
    seen, last = 0, 0.0
    deadline = time.monotonic() + timeout
    try:
        while seen < total and time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is None or message.error():
                continue
            envelope = from_kafka(message.key(), message.value(), _headers(message))
            payload = envelope.payload()
            assert isinstance(payload, CandidateSegmentsAssigned)
            seen += len(payload.segments)
            last = max(last, message.timestamp()[1] / 1000)
    finally:
        consumer.close()
    if seen < total:
        raise TimeoutError(f"only {seen} of {total} candidates' segments were emitted")
    return last


def _online_p50(stack: adflux_stack.Stack, bootstrap: str) -> float:
    """Median ms from producing one `candidate.upserted` to its `candidate.segmented`."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"bench-{uuid.uuid4().hex[:8]}",
            "auto.offset.reset": "latest",
            "enable.auto.commit": False,
        }
    )
    topic = f"{stack.prefix}candidate.segmented"
    assigned = threading.Event()
    consumer.subscribe([topic], on_assign=lambda c, ps: assigned.set())
    while not assigned.is_set():
        consumer.poll(0.2)
    producer = EventProducer(bootstrap, "bench")
    latencies = []
    try:
        for index, profile in enumerate(synthetic_profiles(ONLINE_SAMPLES, seed=99, prefix="o")):
            upsert = CandidateUpserted.model_validate(profile)
            envelope = new_event(upsert, source="bench", subject=upsert.candidate_id)
            started = time.perf_counter()
            producer.send(f"{stack.prefix}candidate.upserted", envelope)
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                message = consumer.poll(0.5)
                if message is None or message.error():
                    continue
                event = from_kafka(message.key(), message.value(), _headers(message))
                if event.causationid == envelope.id:
                    if index >= 5:  # the first few load the model
                        latencies.append((time.perf_counter() - started) * 1000)
                    break
            else:
                raise TimeoutError(f"no online segment for {upsert.candidate_id}")
    finally:
        producer.close()
        consumer.close()
    return percentile(latencies, 0.5)


def run(bootstrap: str, database_url: str) -> Section:
    total = CANDIDATES
    backend = "PostgreSQL" if database_url else "SQLite"
    with adflux_stack.running(("gateway", "ml"), bootstrap, database_url) as stack:
        [ml] = [p for p in stack.processes if p.service == "ml"]
        ml_db = Database(stack.env["ADFLUX_DATABASE_URL"], "ml", stack.env["ADFLUX_DATA_DIR"])
        try:
            accepted, stored = _intake(stack, ml_db, total)
            with stack.client(timeout=60) as client:
                train_wall, trained = _run_task(client, "ml.train", 600)
                requested_at = time.time()
                assign_wall, assigned = _run_task(client, "ml.assign_segments", 600)
                last_event = _assignment_events(
                    bootstrap, f"{stack.prefix}candidate.segments_assigned", total, 300
                )
            online = _online_p50(stack, bootstrap)
            assert ml.proc is not None
            peak = _peak_rss_mb(ml.proc.pid)
        finally:
            ml_db.dispose()
    result, metrics = trained["result"], trained["result"]["metrics"]
    section = Section(f"Candidates at a million ({total:,} candidates, {backend})")
    section.figures = [
        Figure("intake into the ML table", total / stored, "candidates/s", at_least=20_000),
        Figure("  accepted by the gateway", total / accepted, "candidates/s"),
        Figure("training (ml.train, request to SUCCESS)", train_wall, "s", at_most=60),
        Figure("  of which fitting in the handler", metrics["training_seconds"], "s"),
        Figure("assignment with stored results", assign_wall, "s", at_most=10),
        Figure(
            "  then its last batch event",
            max(0.0, last_event - requested_at - assign_wall),
            "s",
            at_most=20,
        ),
        Figure("  request to last batch event", last_event - requested_at, "s", at_most=30),
        Figure("peak RSS of the ML process", ml_peak := peak, "MB", at_most=2048),
        Figure("online single-upsert assignment p50", online, "ms", at_most=50),
    ]
    section.notes = [
        "gateway and ML service run as processes (python -m services.gateway / services.ml) "
        "on the running broker; candidates are synthetic (five kinds, a tenth without salary), "
        f"sent as NDJSON in requests of {PER_REQUEST:,} by {SENDERS} clients",
        f"model: k={result['n_clusters']} chosen by silhouette "
        f"(silhouette {metrics.get('silhouette', math.nan):.3f} on a sample), KMeans on "
        f"{int(metrics['k_sample']):,} sampled rows then MiniBatchKMeans over all "
        f"{result['n_samples']:,}",
        f"assignment: {assigned['result']['events']} candidate.segments_assigned events, "
        f"{assigned['result']['changed_candidates']:,} segments stored; peak RSS "
        f"{ml_peak:.0f} MB covers intake, training, assignment and the online agent",
    ]
    return section
