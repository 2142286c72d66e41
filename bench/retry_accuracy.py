"""How close to its due time a retry runs, for 1 s, 5 s and 60 s retry delays, through the
real processes and contracts only: a sandbox that fails every Meta call (transient), the sync
worker on the service's default tiers, `metrics.refresh` commands asking for the delay in
their own `retry_delay` option, and `task.status` telling when attempt 2 started."""

from __future__ import annotations

import json
import math
import time
import uuid
from datetime import UTC, datetime

from bench import adflux_stack
from bench.report import Figure, Section, percentile
from bench.status_watch import StatusWatch
from shared.envelope import new_event
from shared.events import CampaignPublished, MetricsRefreshRequested, TaskOptions
from shared.producer import EventProducer

DELAYS = {1.0: 40, 5.0: 40, 60.0: 20}  # retry delay (s) -> tasks
# The run waits twice the longest delay plus this long, then a retry not started counts as never.
GRACE = 30.0
# A retry may be due anywhere in delay * (1 ± JITTER) (shared/retry.py's backoff jitter):
# lateness is measured from the runtime's own due time (next_attempt_at of the RETRY status)
# but never from later than delay * (1 + JITTER); a retry before delay * (1 - JITTER) is early.
JITTER = 0.25
FAULTS = [{"platform": "meta", "operation": "*", "kind": "transient", "rate": 1.0}]


def _at(status: dict[str, object], field: str) -> float:
    return datetime.fromisoformat(str(status[field])).timestamp()


def _lateness(watch: StatusWatch, task_id: str, delay: float) -> tuple[float, bool] | None:
    """Lateness as % of `delay` (inf: never retried) and whether it ran early; None when
    attempt 1 has not failed (nothing to measure)."""
    retry = watch.first(task_id, "RETRY", attempt=1)
    if retry is None:
        return None
    failed = _at(retry[1], "at")
    latest_due = failed + delay * (1 + JITTER)
    declared = _at(retry[1], "next_attempt_at") if retry[1].get("next_attempt_at") else latest_due
    started = watch.first(task_id, "STARTED", attempt=2)
    if started is None:
        return math.inf, False
    ran = _at(started[1], "at")
    early = ran < failed + delay * (1 - JITTER) - 0.005
    return (ran - min(declared, latest_due)) / delay * 100, early


def _command(delay: float) -> tuple[str, MetricsRefreshRequested]:
    options = TaskOptions(retry_delay=delay, max_retries=1)
    return f"retry-{delay:g}s-{uuid.uuid4().hex[:8]}", MetricsRefreshRequested(
        platform="meta", options=options
    )


def run(bootstrap: str, database_url: str) -> Section:
    env = {"ADFLUX_SANDBOX_FAULTS": json.dumps(FAULTS)}
    services = ("sandbox", "sync")
    with adflux_stack.running(services, bootstrap, database_url, **env) as stack:
        producer = EventProducer(bootstrap, "bench")
        watch = StatusWatch(bootstrap, f"{stack.prefix}task.status")
        try:
            _known_campaign(stack.prefix, producer, watch)
            tasks: dict[float, list[str]] = {delay: [] for delay in DELAYS}
            topic = f"{stack.prefix}metrics.refresh_requested"
            for delay, count in DELAYS.items():
                for _ in range(count):
                    task_id, command = _command(delay)
                    producer.send(
                        topic, new_event(command, source="bench", subject=task_id, taskid=task_id)
                    )
                    tasks[delay].append(task_id)
            every = [t for ids in tasks.values() for t in ids]
            watch.wait(
                every, lambda t: watch.first(t, "FAILURE") is not None, 2 * max(DELAYS) + GRACE
            )
        finally:
            watch.close()
            producer.close()
    figures: list[Figure] = []
    notes = [
        "retry tiers: the services' default; each task asks for its delay with retry_delay",
        "lateness: attempt 2 STARTED minus its due time (RETRY's next_attempt_at, capped at"
        f" failure + delay * {1 + JITTER:g}), as % of the delay",
    ]
    for delay, ids in tasks.items():
        measured = [m for t in ids if (m := _lateness(watch, t, delay)) is not None]
        late = [pct for pct, _early in measured]
        figures.append(
            Figure(f"{delay:g} s delay: p99 lateness", percentile(late, 0.99), "%", at_most=10)
        )
        figures.append(Figure(f"{delay:g} s delay: p50 lateness", percentile(late, 0.5), "%"))
        never = sum(1 for pct in late if math.isinf(pct))
        notes.append(
            f"{delay:g} s: {len(measured)} of {len(ids)} failed once; {never} not retried within"
            f" {2 * max(DELAYS) + GRACE:g} s (inf); {sum(1 for _p, e in measured if e)} early"
        )
    return Section("retry due-time accuracy (lateness as % of the delay)", figures, notes)


def _known_campaign(prefix: str, producer: EventProducer, watch: StatusWatch) -> None:
    """Give sync one published Meta campaign (so `metrics.refresh` calls the failing
    sandbox), and wait until a probe refresh fails because of it."""
    fact = CampaignPublished(
        campaign_id=f"bench-{uuid.uuid4().hex[:8]}",
        platform="meta",
        external_ids={"campaign": "120000000000001"},
        published_at=datetime.now(UTC),
    )
    producer.send(
        f"{prefix}campaign.published", new_event(fact, source="bench", subject=fact.campaign_id)
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        task_id = f"probe-{uuid.uuid4().hex[:8]}"
        probe = MetricsRefreshRequested(platform="meta", options=TaskOptions(max_retries=0))
        producer.send(
            f"{prefix}metrics.refresh_requested",
            new_event(probe, source="bench", subject=task_id, taskid=task_id),
        )

        def ended(t: str) -> bool:
            return any(watch.first(t, s) for s in ("SUCCESS", "FAILURE"))

        watch.wait([task_id], ended, 30)
        if watch.first(task_id, "FAILURE"):
            return
    raise TimeoutError("sync never saw the published campaign")
