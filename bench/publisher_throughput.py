"""Publishes per second of one publisher process, the sandbox answering at once: publish
commands produced straight to `campaign.publish_requested`, timed until `task.status` carries
SUCCESS for every one of them."""

from __future__ import annotations

import time

from bench import adflux_stack
from bench.publish_commands import publish_command
from bench.report import Figure, Section
from bench.status_watch import StatusWatch
from shared.envelope import Envelope
from shared.producer import EventProducer

PUBLISHES, WARMUP = 600, 20
TIMEOUT = 300.0


def _command(index: int) -> Envelope:
    return publish_command("meta" if index % 2 else "google", f"Bench {index}")


def run(bootstrap: str, database_url: str) -> Section:
    with adflux_stack.running(("sandbox", "publisher"), bootstrap, database_url) as stack:
        topic = f"{stack.prefix}campaign.publish_requested"
        producer = EventProducer(bootstrap, "bench")
        watch = StatusWatch(bootstrap, f"{stack.prefix}task.status")

        def succeeded(task_id: str) -> bool:
            return watch.first(task_id, "SUCCESS") is not None

        try:
            warm = [_command(i) for i in range(WARMUP)]
            producer.send_envelopes([(topic, e) for e in warm])
            if watch.wait([str(e.taskid) for e in warm], succeeded, 120):
                raise TimeoutError("warm-up publishes did not succeed within 120 s")
            commands = [_command(i) for i in range(PUBLISHES)]
            task_ids = [str(e.taskid) for e in commands]
            started = time.perf_counter()
            producer.send_envelopes([(topic, e) for e in commands])
            missing = watch.wait(task_ids, succeeded, TIMEOUT)
            if missing:
                raise TimeoutError(f"{missing} of {PUBLISHES} publishes not SUCCESS in {TIMEOUT} s")
            finished = max(seen[0] for t in task_ids if (seen := watch.first(t, "SUCCESS")))
        finally:
            watch.close()
            producer.close()
    rate = PUBLISHES / (finished - started)
    return Section(
        "publishes per second, one publisher process, sandbox at zero latency",
        figures=[Figure("publishes per second", rate, "/s", at_least=200)],
        notes=[
            f"{PUBLISHES} campaign.publish commands (half Meta, half Google) produced at once "
            f"after {WARMUP} warm-up ones; timed until task.status has SUCCESS for all",
            "database: " + ("PostgreSQL" if database_url else "SQLite (embedded default)"),
        ],
    )
