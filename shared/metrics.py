"""Prometheus metrics of every service, and the small HTTP server that serves `/metrics`,
`/healthz` and `/readyz` on a worker's port (the gateway serves them through FastAPI)."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST, Counter, Gauge, Histogram, generate_latest

log = logging.getLogger(__name__)

EVENTS_HANDLED = Counter(
    "adflux_events_handled_total",
    "Records handled by a consumer, by event type and outcome.",
    ["service", "event_type", "outcome"],
)
HANDLE_SECONDS = Histogram(
    "adflux_handle_seconds",
    "Time spent in a handler.",
    ["service", "event_type"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
RETRIES = Counter(
    "adflux_retries_total", "Records sent to a retry tier.", ["service", "topic", "tier"]
)
DEAD_LETTERS = Counter(
    "adflux_dead_letters_total",
    "Records sent to a dead-letter topic.",
    ["service", "topic", "reason"],
)
PAUSED_PARTITIONS = Gauge(
    "adflux_paused_partitions", "Tier partitions paused until their head is due.", ["service"]
)
IN_FLIGHT = Gauge(
    "adflux_in_flight", "Records handed to lanes and not yet finished.", ["service", "group"]
)
HELD_RECORDS = Gauge(
    "adflux_held_records", "Tier records held in memory until their due time.", ["service"]
)
RETRY_LATENESS = Histogram(
    "adflux_retry_lateness_seconds",
    "How late a tier record was handled after its due time.",
    ["service"],
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30),
)
TASKS = Counter("adflux_tasks_total", "Task transitions emitted.", ["service", "task", "state"])
OUTBOX_SENT = Counter("adflux_outbox_sent_total", "Outbox rows produced by the relay.", ["service"])
OUTBOX_PENDING = Gauge("adflux_outbox_pending", "Outbox rows not yet produced.", ["service"])
OUTBOX_REFUSED = Counter(
    "adflux_outbox_refused_total",
    "Outbox rows the broker refused for good, set aside with their reason.",
    ["service"],
)
PLATFORM_CALLS = Histogram(
    "adflux_platform_call_seconds",
    "Ad-platform calls by platform, operation and outcome.",
    ["platform", "operation", "outcome"],
)
PLATFORM_THROTTLED_UNTIL = Gauge(
    "adflux_platform_throttled_until_seconds",
    "Unix time until which a platform account is blocked by its quota (in the past: not "
    "blocked), as this process knows it from the platform and the platform.throttled broadcast.",
    ["platform", "account"],
)
PLATFORM_DEFERRED = Counter(
    "adflux_platform_calls_deferred_total",
    "Platform calls not made because their account was blocked (the record was deferred).",
    ["platform", "account"],
)
PLATFORM_USAGE = Gauge(
    "adflux_platform_usage_percent",
    "The platform's own usage report of an account (Meta's x-business-use-case-usage), by "
    "measure: call_count, total_time, total_cputime.",
    ["platform", "account", "measure"],
)
SCHEDULE_FIRINGS = Counter(
    "adflux_schedule_firings_total", "Scheduled firings emitted by the ticker.", ["schedule"]
)

CONSUMER_LAG = Gauge(
    "adflux_consumer_lag",
    "Records not yet consumed, per consumer group, topic and partition (set by the gateway "
    "on each queue snapshot).",
    ["group", "topic", "partition"],
)
OLDEST_WAITING = Gauge(
    "adflux_oldest_waiting_seconds",
    "Age of the oldest record not yet consumed on a topic (0: none waiting).",
    ["topic"],
)

ReadyCheck = Callable[[], bool]


class HealthServer:
    """Serves /metrics, /healthz (process alive) and /readyz (every check passes, and
    the records each consumer group has in flight)."""

    def __init__(self, host: str, port: int, checks: dict[str, ReadyCheck]) -> None:
        """Listens on `host` (settings.bind_address: loopback unless deployed in a container)."""
        checks_ref = checks

        class _Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path == "/metrics":
                    self._reply(200, generate_latest(), CONTENT_TYPE_LATEST)
                elif self.path == "/healthz":
                    self._reply(200, b'{"status":"ok"}', "application/json")
                elif self.path == "/readyz":
                    failing = [name for name, check in checks_ref.items() if not _safe(check)]
                    status = "ready" if not failing else "not ready"
                    body = json.dumps(
                        {"status": status, "failing": failing, "in_flight": in_flight()}
                    ).encode()
                    self._reply(503 if failing else 200, body, "application/json")
                else:
                    self._reply(404, b'{"detail":"not found"}', "application/json")

            def _reply(self, code: int, body: bytes, content_type: str) -> None:
                self.send_response(code)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer((host, port), _Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def start(self) -> HealthServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def in_flight() -> dict[str, int]:
    """Records each of this process's consumer groups has in hand (the runtime's gauge)."""
    return {
        sample.labels["group"]: int(sample.value)
        for family in IN_FLIGHT.collect()
        for sample in family.samples
    }


def _safe(check: ReadyCheck) -> bool:
    try:
        return bool(check())
    except Exception:
        log.exception("readiness check failed")
        return False
