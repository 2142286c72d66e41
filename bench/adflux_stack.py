"""AdFlux as real processes for one benchmark: its own topic prefix, data directory and
(on PostgreSQL) database, on the running broker; everything removed again on exit."""

from __future__ import annotations

import shutil
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from infra.ports import free_port
from infra.processes import ServiceProcess
from shared.topics import TopicNames, delete_topics

TOKEN = "bench-token"


@dataclass
class Stack:
    """The running processes and how to reach them."""

    prefix: str
    workdir: Path
    env: dict[str, str]
    http_port: int = 0
    processes: list[ServiceProcess] = field(default_factory=list)

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.http_port}/api/v1"

    @property
    def sandbox(self) -> str:
        return self.env["ADFLUX_META_GRAPH_URL"]

    def client(self, timeout: float = 30.0) -> httpx.Client:
        return httpx.Client(
            base_url=self.api, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=timeout
        )


@contextmanager
def _database(server_url: str) -> Iterator[str]:
    """'' for the embedded SQLite default; else a fresh PostgreSQL database, dropped after."""
    if not server_url:
        yield ""
        return
    name = f"adflux_bench_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(server_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(server_url).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@contextmanager
def running(
    services: tuple[str, ...], bootstrap: str, database_url: str = "", **extra_env: str
) -> Iterator[Stack]:
    """Start `services` (among sandbox, the workers and gateway), wait until each is ready,
    and stop them, delete their topics and their database on exit."""
    prefix = f"bench{uuid.uuid4().hex[:8]}."
    workdir = Path(tempfile.mkdtemp(prefix="adflux-bench-"))
    meta_port, google_port = free_port(), free_port()
    with _database(database_url) as url:
        stack = Stack(
            prefix,
            workdir,
            {
                "ADFLUX_KAFKA_BOOTSTRAP": bootstrap,
                "ADFLUX_TOPIC_PREFIX": prefix,
                "ADFLUX_DATABASE_URL": url,
                "ADFLUX_DATA_DIR": str(workdir / "data"),
                "ADFLUX_API_TOKEN": TOKEN,
                "ADFLUX_SANDBOX_META_PORT": str(meta_port),
                "ADFLUX_SANDBOX_GOOGLE_PORT": str(google_port),
                "ADFLUX_META_GRAPH_URL": f"http://127.0.0.1:{meta_port}",
                "ADFLUX_GOOGLE_ADS_ENDPOINT": f"127.0.0.1:{google_port}",
                "ADFLUX_LOG_LEVEL": "WARNING",
                **extra_env,
            },
        )
        finished = False
        try:
            for service in services:
                _start(stack, service)
            yield stack
            finished = True
        finally:
            for process in reversed(stack.processes):
                process.stop()
            delete_topics(bootstrap, TopicNames(prefix))
            if finished:
                shutil.rmtree(workdir, ignore_errors=True)
            else:
                print(f"  (logs of the failed run kept in {workdir})")


def _start(stack: Stack, service: str) -> None:
    port = free_port()
    env = dict(stack.env)
    if service == "gateway":
        stack.http_port = port
        env |= {"ADFLUX_HTTP_PORT": str(port), "ADFLUX_METRICS_PORT": "0"}
        ready = f"http://127.0.0.1:{port}/readyz"
    elif service == "sandbox":
        ready = f"{stack.sandbox}/_sandbox/stats"
    else:  # a worker: /readyz on its metrics port once its consumer has partitions
        env["ADFLUX_METRICS_PORT"] = str(port)
        ready = f"http://127.0.0.1:{port}/readyz"
    process = ServiceProcess(service, env, stack.workdir).start()
    stack.processes.append(process)
    process.wait_http_ok(ready, timeout=120)
