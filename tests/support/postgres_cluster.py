"""A PostgreSQL cluster of one test's own (Debian's postgresql-common tools), on a free port,
so the test can stop and restart it without disturbing the shared server other tests use."""

from __future__ import annotations

import shutil
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from infra.ports import free_port
from infra.waiting import wait_for

ROLE = "adflux"
PASSWORD = "adflux"
DATABASE = "adflux"
# Durability the test does not need costs I/O on a shared machine.
SETTINGS = {
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "max_connections": "200",
}


def unavailable_reason() -> str | None:
    """Why a private cluster cannot be made here, or None when it can."""
    if shutil.which("pg_createcluster") is None or not Path("/usr/lib/postgresql").is_dir():
        return "Debian's postgresql (pg_createcluster) is not installed"
    if shutil.which("runuser") is None:
        return "runuser is missing"
    return None


def _run(*args: str, timeout: float = 120.0) -> str:
    done = subprocess.run(args, capture_output=True, text=True, timeout=timeout, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} exited {done.returncode}: {done.stderr.strip()}")
    return done.stdout


def newest_version() -> str:
    versions = [p.name for p in Path("/usr/lib/postgresql").iterdir() if (p / "bin").is_dir()]
    return max(versions, key=lambda v: [int(part) for part in v.split(".") if part.isdigit()])


@dataclass
class PostgresCluster:
    """One cluster managed with pg_ctlcluster; `url` reaches its `adflux` database."""

    version: str
    name: str
    port: int

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://{ROLE}:{PASSWORD}@127.0.0.1:{self.port}/{DATABASE}"

    def _ctl(self, action: str, *options: str) -> None:
        _run("pg_ctlcluster", *options, self.version, self.name, action)

    def _psql(self, sql: str, database: str = "postgres") -> str:
        return _run(
            "runuser", "-u", "postgres", "--",
            "psql", "-p", str(self.port), "-d", database, "-v", "ON_ERROR_STOP=1", "-Atqc", sql,
        )  # fmt: skip

    def answers(self) -> bool:
        try:
            return self._psql("SELECT 1").strip() == "1"
        except (RuntimeError, subprocess.TimeoutExpired):
            return False

    def start(self, timeout: float = 60.0) -> None:
        self._ctl("start")
        wait_for(self.answers, timeout, 0.2, f"PostgreSQL cluster {self.name} to answer")

    def stop(self) -> None:
        """A fast shutdown: open connections are cut, as when the server goes away."""
        self._ctl("stop", "-m", "fast")

    def drop(self) -> None:
        _run("pg_dropcluster", "--stop", self.version, self.name)


@contextmanager
def private_cluster(version: str | None = None) -> Iterator[PostgresCluster]:
    """Create and start a cluster with the `adflux` role and database; drop it afterwards,
    whatever happened meanwhile."""
    cluster = PostgresCluster(version or newest_version(), f"chaos_{uuid.uuid4().hex[:8]}", 0)
    cluster.port = free_port()
    options = [arg for key, value in SETTINGS.items() for arg in ("-o", f"{key}={value}")]
    _run(
        "pg_createcluster", "--quiet", "--start-conf=manual", *options,
        "-p", str(cluster.port), cluster.version, cluster.name,
        "--", "--auth-local=peer", "--auth-host=scram-sha-256",
    )  # fmt: skip
    try:
        cluster.start()
        cluster._psql(f"CREATE ROLE {ROLE} LOGIN SUPERUSER PASSWORD '{PASSWORD}'")
        cluster._psql(f"CREATE DATABASE {DATABASE} OWNER {ROLE}")
        yield cluster
    finally:
        cluster.drop()
