"""How close to its due time a retry runs, for 1 s, 5 s and 60 s retry delays, through the
real processes and contracts only: a sandbox that fails every Meta call (transient), the
publisher on the service's default tiers, `campaign.publish` commands (each of its own
campaign, so its own key) asking for the delay in their own `retry_delay` option, and
`task.status` telling when attempt 2 started.

Each task has its own key on purpose. Records of one key run one at a time (KEY ordering):
with one key for all 100 tasks (say `metrics.refresh` of one platform), the retries falling
due together queue behind each other's handlers, and the figure measures that queue rather
than when the retry became due."""

from __future__ import annotations

import json
import math
import uuid
from datetime import datetime

from bench import adflux_stack
from bench.publish_commands import publish_command
from bench.report import Figure, Section, percentile
from bench.status_watch import StatusWatch
from shared.envelope import Envelope
from shared.events import TaskOptions
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


def _command(delay: float) -> Envelope:
    options = TaskOptions(retry_delay=delay, max_retries=1)
    task_id = f"retry-{delay:g}s-{uuid.uuid4().hex[:8]}"
    return publish_command("meta", f"Retry {delay:g} s", options, task_id)


def run(bootstrap: str, database_url: str) -> Section:
    env = {"ADFLUX_SANDBOX_FAULTS": json.dumps(FAULTS)}
    services = ("sandbox", "publisher")
    with adflux_stack.running(services, bootstrap, database_url, **env) as stack:
        producer = EventProducer(bootstrap, "bench")
        watch = StatusWatch(bootstrap, f"{stack.prefix}task.status")
        try:
            tasks: dict[float, list[str]] = {delay: [] for delay in DELAYS}
            topic = f"{stack.prefix}campaign.publish_requested"
            for delay, count in DELAYS.items():
                for _ in range(count):
                    command = _command(delay)
                    producer.send(topic, command)
                    tasks[delay].append(str(command.taskid))
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
        "each task publishes its own campaign (its own key): retries due together run in "
        "parallel lanes instead of queueing behind one key's handlers",
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
