"""The benchmarks' CPU meter counts what a session's processes spend, children included."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from bench.cpu import measured

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")


def test_cpu_spent_by_a_sessions_child_counts_and_an_idle_session_spends_none() -> None:
    idle = subprocess.Popen(["sleep", "30"], start_new_session=True)
    try:
        sessions = {"here": os.getsid(0), "idle": idle.pid}
        with measured(sessions) as use:
            subprocess.run(
                [sys.executable, "-c", "sum(i * i for i in range(3_000_000))"], check=True
            )
        assert use.seconds["here"] >= 0.05  # the reaped child's time is ours
        assert use.seconds["idle"] == 0
        assert use.per_task_ms(10)["here"] == pytest.approx(use.seconds["here"] * 100)
    finally:
        idle.kill()
        idle.wait()
