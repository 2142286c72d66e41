"""A baseline's own child processes (server, worker, HTTP front), started as one group with
one environment and work directory, each in a session of its own so that stopping it stops
whatever it started too, with its output in a log file; and the one way a baseline starts
its front and waits for it."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from infra.ports import free_port
from infra.waiting import wait_for

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


@dataclass(frozen=True)
class Baseline:
    """A running baseline: its front's URL and each process's session (for CPU use)."""

    base: str
    sessions: dict[str, int]


class Children:
    """The processes a baseline starts, all with the same environment and work directory."""

    def __init__(self, env: dict[str, str], workdir: Path) -> None:
        self.env = env
        self.workdir = workdir
        self.processes: list[ChildProcess] = []

    def start(self, name: str, argv: list[str]) -> None:
        self.processes.append(ChildProcess(name, argv, self.env, self.workdir))

    def serve_front(self, name: str, app: str, ready: Callable[[str], bool], what: str) -> Baseline:
        """Serve the baseline's FastAPI app (`module:attribute`) with uvicorn on a free
        loopback port; once `ready(base)` holds (an HTTP error or a failed wait inside it
        counts as not yet; a dead process fails at once), the running baseline."""
        port = free_port()
        argv = [sys.executable, "-m", "uvicorn", app, "--host", "127.0.0.1", "--port", str(port)]
        self.start(name, [*argv, "--log-level", "warning"])
        base = f"http://127.0.0.1:{port}"

        def answers() -> bool:
            for process in self.processes:
                process.check_alive()
            try:
                return ready(base)
            except (httpx.HTTPError, AssertionError):
                return False

        wait_for(answers, 90, 0.2, what)
        return Baseline(base, {p.name: p.proc.pid for p in self.processes})


@contextmanager
def children(env: dict[str, str], workdir: Path) -> Iterator[Children]:
    """A baseline's processes (start them on what this yields): stopped in reverse order on
    exit; the work directory removed after a clean run, kept with its logs (and said) after a
    failure."""
    group = Children(env, workdir)
    finished = False
    try:
        yield group
        finished = True
    finally:
        for process in reversed(group.processes):
            process.stop()
        if finished:
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            print(f"  (logs of the failed run kept in {workdir})")
