"""`make observe` / `make observe-stop`: Debian's Prometheus scraping the processes `make up`
runs, with the compose config's jobs and alert rules pointed at 127.0.0.1.

The config is rendered from prometheus.yml (one list of targets for both): each `<service>:<port>`
target becomes `127.0.0.1:<port>`, or the port a caller gives for that service (tests run
services on free ports). The server keeps its data, PID and log under .run/prometheus.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "infra" / "prometheus" / "prometheus.yml"


@dataclass(frozen=True)
class LocalPrometheus:
    """One Prometheus server on 127.0.0.1:`port` with its files under `run_dir`."""

    port: int = 9090
    run_dir: Path = ROOT / ".run" / "prometheus"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid_file(self) -> Path:
        return self.run_dir / "prometheus.pid"

    def render(
        self, ports: Mapping[str, int] | None = None, scrape_interval: str | None = None
    ) -> Path:
        """The local config: targets on 127.0.0.1 (at `ports[service]` when given)."""
        config: dict[str, Any] = yaml.safe_load(CONFIG.read_text())
        config["rule_files"] = [str(CONFIG.parent / name) for name in config["rule_files"]]
        if scrape_interval:
            config["global"]["scrape_interval"] = scrape_interval
            config["global"]["evaluation_interval"] = scrape_interval
        for job in config["scrape_configs"]:
            for group in job["static_configs"]:
                service = group["labels"]["service"]
                group["targets"] = [
                    f"127.0.0.1:{(ports or {}).get(service, int(target.rpartition(':')[2]))}"
                    for target in group["targets"]
                ]
        self.run_dir.mkdir(parents=True, exist_ok=True)
        rendered = self.run_dir / "prometheus.yml"
        rendered.write_text(yaml.safe_dump(config, sort_keys=False))
        return rendered

    def running(self) -> int | None:
        if not self.pid_file.exists():
            return None
        pid = int(self.pid_file.read_text())
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        return pid

    def start(
        self,
        ports: Mapping[str, int] | None = None,
        scrape_interval: str | None = None,
        timeout: float = 30.0,
    ) -> int:
        """Start the server unless ours runs; returns its PID once it answers /-/ready."""
        pid = self.running()
        if pid:
            return pid
        binary = shutil.which("prometheus")
        if binary is None:
            raise RuntimeError("prometheus is missing: run `make container-tools`")
        config = self.render(ports, scrape_interval)
        with (self.run_dir / "prometheus.log").open("ab") as log:
            proc = subprocess.Popen(
                [
                    binary,
                    f"--config.file={config}",
                    f"--storage.tsdb.path={self.run_dir / 'data'}",
                    f"--web.listen-address=127.0.0.1:{self.port}",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.pid_file.write_text(str(proc.pid))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"prometheus exited; see {self.run_dir / 'prometheus.log'}")
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as response:
                    if response.status == 200:
                        return proc.pid
            except OSError:
                pass
            time.sleep(0.2)
        raise TimeoutError(f"prometheus not ready on {self.url} within {timeout}s")

    def stop(self, timeout: float = 20.0) -> bool:
        pid = self.running()
        if pid is None:
            self.pid_file.unlink(missing_ok=True)
            return False
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while self.running() and time.monotonic() < deadline:
            time.sleep(0.2)
        if self.running():
            os.kill(pid, signal.SIGKILL)
        self.pid_file.unlink(missing_ok=True)
        return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("command", choices=["start", "stop"])
    parser.add_argument("--port", type=int, default=9090)
    args = parser.parse_args(argv)
    server = LocalPrometheus(args.port)
    if args.command == "start":
        pid = server.start()
        print(f"prometheus pid {pid}: {server.url} (scraping the `make up` processes)")
    else:
        print("prometheus: stopped" if server.stop() else "prometheus: not running")
    return 0


if __name__ == "__main__":
    sys.exit(main())
