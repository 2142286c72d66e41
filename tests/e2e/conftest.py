"""End-to-end fixtures: the publisher as a process pointed at the sandbox."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from infra.processes import ServiceProcess
from tests.conftest import Sandbox


@pytest.fixture
def publisher(
    service_env: dict[str, str], sandbox: Sandbox, tmp_path: Path
) -> Iterator[ServiceProcess]:
    process = ServiceProcess("publisher", {**service_env, **sandbox.env()}, tmp_path).start()
    yield process
    process.stop()


@pytest.fixture
def sync_worker(
    service_env: dict[str, str], sandbox: Sandbox, tmp_path: Path
) -> Iterator[ServiceProcess]:
    process = ServiceProcess("sync", {**service_env, **sandbox.env()}, tmp_path).start()
    yield process
    process.stop()
