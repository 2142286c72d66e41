"""CPU time the processes of a measured system spend over a benchmark, read from Linux's /proc:
what one task costs each part (HTTP front, worker, broker), beside the wall-clock figures.
A part is a session (every benchmark process starts one: its pool children count with it)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

PROC = Path("/proc")


def _stat(pid: str) -> tuple[int, float] | None:
    """(session id, CPU seconds of the process and of its reaped children)."""
    try:
        raw = (PROC / pid / "stat").read_text()
    except OSError:
        return None
    fields = raw.rsplit(")", 1)[1].split()
    ticks = sum(int(f) for f in fields[11:15])  # utime, stime, cutime, cstime
    return int(fields[3]), ticks / os.sysconf("SC_CLK_TCK")


def session_cpu(sessions: dict[str, int]) -> dict[str, float]:
    """CPU seconds so far of every process in each named session."""
    spent = dict.fromkeys(sessions, 0.0)
    names = {sid: name for name, sid in sessions.items()}
    for entry in PROC.iterdir():
        if entry.name.isdigit() and (stat := _stat(entry.name)) is not None:
            name = names.get(stat[0])
            if name is not None:
                spent[name] += stat[1]
    return spent


@dataclass
class CpuUse:
    """CPU seconds per named part over one measured stretch."""

    seconds: dict[str, float] = field(default_factory=dict)

    def per_task_ms(self, tasks: int) -> dict[str, float]:
        return {name: s * 1000 / tasks for name, s in self.seconds.items()}

    def describe(self, tasks: int) -> str:
        parts = self.per_task_ms(tasks)
        shown = ", ".join(f"{name} {ms:.2f}" for name, ms in parts.items())
        return f"{sum(parts.values()):.2f} ms ({shown})"


@contextmanager
def measured(sessions: dict[str, int]) -> Iterator[CpuUse]:
    """CPU spent by each session between entering and leaving the block (Linux only: an
    empty result elsewhere)."""
    use = CpuUse()
    if not PROC.is_dir():
        yield use
        return
    before = session_cpu(sessions)
    yield use
    after = session_cpu(sessions)
    use.seconds = {name: after[name] - before[name] for name in sessions}


def broker_session(root: Path) -> dict[str, int]:
    """The local broker's session when this checkout started it (its pid file), else none."""
    pid_file = root / ".run" / "kafka.pid"
    try:
        stat = _stat(pid_file.read_text().strip())
    except OSError:
        return {}
    return {"broker": stat[0]} if stat is not None else {}
