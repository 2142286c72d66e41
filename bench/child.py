"""A benchmark's own child process (a baseline's server, worker or front) in a session of its
own, so that stopping it stops whatever it started too; its output goes to a log file."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


class ChildProcess:
    """A child in its own session, so that stopping it stops its children too."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], logs: Path) -> None:
        self.name = name
        self.log_path = logs / f"{name}.log"
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                argv,
                cwd=ROOT,
                env={**os.environ, **env},
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def check_alive(self) -> None:
        if self.proc.poll() is not None:
            tail = self.log_path.read_text(errors="replace")[-3000:]
            raise RuntimeError(f"{self.name} exited with {self.proc.returncode}:\n{tail}")

    def stop(self, timeout: float = 20.0) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        with contextlib.suppress(ProcessLookupError):  # pool children the worker left behind
            os.killpg(self.proc.pid, signal.SIGKILL)


def start_front(name: str, app: str, port: int, env: dict[str, str], logs: Path) -> ChildProcess:
    """A baseline's FastAPI app (`module:attribute`) served by uvicorn on loopback `port`."""
    argv = [sys.executable, "-m", "uvicorn", app, "--host", "127.0.0.1", "--port", str(port)]
    return ChildProcess(name, [*argv, "--log-level", "warning"], env, logs)


def check_alive(processes: list[ChildProcess]) -> None:
    """Raise with the log's tail if any of `processes` has exited."""
    for process in processes:
        process.check_alive()
