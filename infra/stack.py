"""`make up` / `make down`: run the sandbox and every service as background processes,
each with `.run/<service>.pid` and `.run/<service>.log`, and stop exactly those by PID."""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from infra import kafka_broker
from services.gateway.settings import GatewaySettings
from services.ml.settings import MlSettings
from services.publisher.settings import PublisherSettings
from services.sandbox.settings import SandboxSettings
from services.sync.settings import SyncSettings
from services.ticker.settings import TickerSettings

ROOT = Path(__file__).resolve().parent.parent
RUN = ROOT / ".run"
# Start order: the sandbox first (the workers talk to it), the gateway last (`up` waits for it).
SERVICES = ("sandbox", "publisher", "sync", "ml", "ticker", "gateway")
# Health ports of the workers, their settings' defaults (docs/architecture.md): `up` returns
# once each answers /readyz.
WORKER_PORTS: dict[str, int] = {
    name: settings.model_fields["metrics_port"].default
    for name, settings in (
        ("publisher", PublisherSettings),
        ("sync", SyncSettings),
        ("ml", MlSettings),
        ("ticker", TickerSettings),
    )
}
GATEWAY_PORT: int = GatewaySettings.model_fields["http_port"].default
SANDBOX_META_PORT: int = SandboxSettings.model_fields["sandbox_meta_port"].default


def _pid_file(service: str) -> Path:
    return RUN / f"{service}.pid"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def running(service: str) -> int | None:
    path = _pid_file(service)
    if not path.exists():
        return None
    pid = int(path.read_text().strip() or 0)
    return pid if pid and _alive(pid) else None


def _wait_http(url: str, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return True
        except OSError:
            pass
        time.sleep(0.3)
    return False


def start(service: str, env: dict[str, str]) -> int:
    pid = running(service)
    if pid:
        return pid
    RUN.mkdir(exist_ok=True)
    with (RUN / f"{service}.log").open("ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", f"services.{service}"],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    _pid_file(service).write_text(str(proc.pid))
    return proc.pid


KAFKA_MARK = RUN / "kafka.started-by-up"


def up(timeout: float) -> int:
    env = {**os.environ}
    broker = kafka_broker.BrokerSpec(port=int(env.get("KAFKA_PORT", "9092")))
    broker = kafka_broker.BrokerSpec(port=broker.port, controller_port=broker.port + 1)
    if kafka_broker.start(broker):
        KAFKA_MARK.write_text(str(broker.port))
        print(f"kafka      started on {broker.bootstrap}")
    env.setdefault("ADFLUX_DATA_DIR", str(RUN / "data"))
    gateway = f"http://127.0.0.1:{env.get('ADFLUX_HTTP_PORT', GATEWAY_PORT)}"
    sandbox = f"http://127.0.0.1:{env.get('ADFLUX_SANDBOX_META_PORT', SANDBOX_META_PORT)}"
    for service in SERVICES:
        if not (ROOT / "services" / service / "__main__.py").exists():
            continue
        pid = start(service, env)
        print(f"{service:10s} pid {pid}  log .run/{service}.log")
        if service == "sandbox" and not _wait_http(f"{sandbox}/_sandbox/stats", timeout):
            print("sandbox did not start; see .run/sandbox.log", file=sys.stderr)
            return 1
    ready_urls = {"gateway": f"{gateway}/readyz"}
    if "ADFLUX_METRICS_PORT" not in env:
        ready_urls |= {
            name: f"http://127.0.0.1:{port}/readyz"
            for name, port in WORKER_PORTS.items()
            if (ROOT / "services" / name / "__main__.py").exists()
        }
    for name, url in ready_urls.items():
        if not _wait_http(url, timeout):
            print(f"{name} is not ready; see .run/{name}.log", file=sys.stderr)
            return 1
    print(f"AdFlux is up: API {gateway}/docs, monitor {gateway}/monitor")
    return 0


def down(timeout: float = 20.0) -> int:
    for service in reversed(SERVICES):
        pid = running(service)
        if pid:
            os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + timeout
            while _alive(pid) and time.monotonic() < deadline:
                time.sleep(0.2)
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
            print(f"{service}: stopped")
        _pid_file(service).unlink(missing_ok=True)
    if KAFKA_MARK.exists():  # only a broker that `up` started
        port = int(KAFKA_MARK.read_text())
        kafka_broker.stop(kafka_broker.BrokerSpec(port=port, controller_port=port + 1))
        KAFKA_MARK.unlink()
        print("kafka: stopped")
    return 0


def status() -> int:
    for service in SERVICES:
        pid = running(service)
        print(f"{service:10s} {'running, pid ' + str(pid) if pid else 'stopped'}")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("command", choices=["up", "down", "status"])
    parser.add_argument("--timeout", type=float, default=120.0)
    args = parser.parse_args()
    if args.command == "up":
        return up(args.timeout)
    if args.command == "down":
        return down()
    return status()


if __name__ == "__main__":
    sys.exit(main())
