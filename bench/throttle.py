"""Platform quotas shared by every worker: four publisher processes under a steady stream of
Meta publishes, the sandbox signals a 10 s block on the Meta ad account (its usage header's
regain time), and the sandbox counts the Meta calls that still arrive during the block and
when the first one after it comes. Every publish must still end SUCCESS."""

from __future__ import annotations

import threading
import time
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from bench import adflux_stack
from bench.publish_commands import publish_command
from bench.report import Figure, Section
from bench.status_watch import StatusWatch
from shared.envelope import Envelope
from shared.events import TaskOptions
from shared.producer import EventProducer

WORKERS = 4
BLOCK_SECONDS = 10.0
RATE = 10.0  # Meta publishes per second, before, during and after the block
BEFORE, AFTER = 2.0, 4.0  # seconds of load around the block
WARMUP = 2 * WORKERS
TIMEOUT = 120.0
ACCOUNT = "act_1000"


def _command(index: int) -> Envelope:
    return publish_command("meta", f"Throttle bench {index}", TaskOptions(retry_delay=1))


def _known_until(metrics_url: str) -> float:
    """A worker's adflux_platform_throttled_until_seconds of the Meta account (0: unknown)."""
    try:
        text = httpx.get(metrics_url, timeout=2).text
    except httpx.HTTPError:
        return 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "adflux_platform_throttled_until_seconds" and sample.labels == {
                "platform": "meta",
                "account": ACCOUNT,
            }:
                return float(sample.value)
    return 0.0


def _block(sandbox: str) -> dict[str, Any] | None:
    found: dict[str, Any] | None = (
        httpx.get(f"{sandbox}/_sandbox/throttles", timeout=5).json().get("meta")
    )
    return found


def run(bootstrap: str, database_url: str) -> Section:
    services = ("sandbox", *(["publisher"] * WORKERS))
    with adflux_stack.running(services, bootstrap, database_url) as stack:
        topic = f"{stack.prefix}campaign.publish_requested"
        metrics_urls = [
            f"http://127.0.0.1:{p.env['ADFLUX_METRICS_PORT']}/metrics"
            for p in stack.processes
            if p.service == "publisher"
        ]
        producer = EventProducer(bootstrap, "bench-throttle")
        watch = StatusWatch(bootstrap, f"{stack.prefix}task.status")
        sent: list[str] = []
        stop = threading.Event()

        def succeeded(task_id: str) -> bool:
            return watch.first(task_id, "SUCCESS") is not None

        def load() -> None:
            index, started = 0, time.monotonic()
            while not stop.is_set():
                command = _command(index)
                producer.send_envelopes([(topic, command)])
                sent.append(str(command.taskid))
                index += 1
                stop.wait(max(0.0, started + index / RATE - time.monotonic()))

        try:
            warm = [_command(-i) for i in range(1, WARMUP + 1)]
            producer.send_envelopes([(topic, e) for e in warm])
            if watch.wait([str(e.taskid) for e in warm], succeeded, 120):
                raise TimeoutError("warm-up publishes did not succeed within 120 s")
            loader = threading.Thread(target=load, daemon=True)
            loader.start()
            stop.wait(BEFORE)
            httpx.post(
                f"{stack.sandbox}/_sandbox/faults",
                json={
                    "platform": "meta",
                    "kind": "throttle",
                    "block_seconds": BLOCK_SECONDS,
                    "count": 1,
                },
                timeout=5,
            ).raise_for_status()
            deadline = time.monotonic() + 10
            while (block := _block(stack.sandbox)) is None and time.monotonic() < deadline:
                time.sleep(0.01)
            if block is None:
                raise TimeoutError("no Meta call started the block within 10 s")
            # When each worker knew the block (polled: an upper bound).
            knew: dict[str, float] = {}
            while len(knew) < WORKERS and time.time() < block["until"]:
                for url in metrics_urls:
                    if url not in knew and _known_until(url) >= block["until"] - 0.5:
                        knew[url] = time.time()
                time.sleep(0.01)
            time.sleep(max(0.0, block["until"] - time.time()) + AFTER)
            stop.set()
            loader.join(5)
            missing = watch.wait(list(sent), succeeded, TIMEOUT)
            report = _block(stack.sandbox) or {}
            failures = sum(1 for t in sent if watch.first(t, "FAILURE") is not None)
            deferred = sum(1 for t in sent if watch.first(t, "RETRY") is not None)
            done_at = [seen[0] for t in sent if (seen := watch.first(t, "SUCCESS"))]
        finally:
            stop.set()
            watch.close()
            producer.close()
    all_knew = max(knew.values()) if len(knew) == WORKERS else float("nan")
    times = [float(t) for t in report.get("call_times_during_block", [])]
    after_all_knew = (
        float(sum(1 for t in times if t >= all_knew)) if len(knew) == WORKERS else float("nan")
    )
    first_after = report.get("first_call_after_block")
    resume = float(first_after) - float(report["until"]) if first_after else float("nan")
    drain = max(done_at) - min(done_at) if done_at else float("nan")
    return Section(
        f"throttling: a signalled {BLOCK_SECONDS:g} s block on Meta, {WORKERS} publisher processes",
        figures=[
            Figure(
                "Meta calls during the block once every worker knew it",
                after_all_knew,
                "calls",
                at_most=0,
            ),
            Figure("Meta calls during the block, all", float(len(times)), "calls"),
            Figure(
                "block signalled -> every worker knows it",
                (all_knew - float(report.get("started", block["started"]))) * 1000,
                "ms",
            ),
            Figure("block end -> first Meta call", resume, "s", at_most=1.0),
            Figure("publishes not SUCCESS", float(missing), "tasks", at_most=0),
            Figure("publishes FAILURE", float(failures), "tasks", at_most=0),
        ],
        notes=[
            f"{len(sent)} Meta publishes at {RATE:g}/s from {BEFORE:g} s before the block to "
            f"{AFTER:g} s after it ({deferred} deferred at least once); the sandbox's throttle "
            "fault answers every Meta call with error 80004 and the regain time until it ends",
            "calls 'during the block, all' include those already on their way while the "
            "broadcast travelled (the platform answers them with the throttling error)",
            f"all {len(done_at)} SUCCESS within {drain:.1f} s of the first; "
            "database: " + ("PostgreSQL" if database_url else "SQLite (embedded default)"),
        ],
    )
