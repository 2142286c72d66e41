"""Replicas of a service that start together on a fresh database (PostgreSQL, or one SQLite
file) migrate it once,
and none of them dies on the race (processes, as replicas are)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.conftest import ROOT

pytestmark = pytest.mark.integration

MIGRATE = "import sys; from shared.db import Database; Database(sys.argv[1], 'publisher').migrate()"


@pytest.mark.parametrize("backend", ["postgres", "sqlite"])
def test_replicas_migrating_a_fresh_schema_together_all_succeed(
    backend: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    database_url = (
        request.getfixturevalue("database_url")
        if backend == "postgres"
        else f"sqlite+pysqlite:///{tmp_path / 'publisher.db'}"
    )
    replicas = [
        subprocess.Popen(
            [sys.executable, "-c", MIGRATE, database_url],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for _ in range(4)
    ]
    outputs = [replica.communicate(timeout=120)[0] for replica in replicas]
    assert [r.returncode for r in replicas] == [0] * 4, "\n".join(outputs)
    engine = sa.create_engine(database_url)
    table = "publisher.alembic_version" if backend == "postgres" else "alembic_version"
    with engine.connect() as conn:
        versions = conn.execute(sa.text(f"SELECT count(*) FROM {table}")).scalar()
    engine.dispose()
    assert versions == 1
