"""Alembic migrations: each service's tables are created in its own PostgreSQL schema and
match its models, and the embedded SQLite default migrates too."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest
import sqlalchemy as sa

from shared.db import Database

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
SERVICES = sorted(
    p.parent.name for p in (ROOT / "services").glob("*/migrations") if any(p.glob("*.py"))
)


def test_every_service_with_tables_has_migrations() -> None:
    with_models = sorted(p.parent.name for p in (ROOT / "services").glob("*/models.py"))
    assert with_models == SERVICES
    assert {"gateway", "publisher"} <= set(SERVICES)


@pytest.mark.parametrize("service", SERVICES)
def test_migrations_create_the_models_tables_in_the_service_schema(
    service: str, database_url: str
) -> None:
    metadata: sa.MetaData = importlib.import_module(f"services.{service}.models").metadata
    db = Database(database_url, service)
    db.migrate()
    db.migrate()  # idempotent
    inspector = sa.inspect(db.engine)
    tables = set(inspector.get_table_names(schema=service))
    assert set(metadata.tables) <= tables
    assert "alembic_version" in tables
    assert set(metadata.tables).isdisjoint(inspector.get_table_names(schema="public"))
    for name, table in metadata.tables.items():
        columns = {c["name"] for c in inspector.get_columns(name, schema=service)}
        assert {c.name for c in table.columns} == columns, name
    db.dispose()


@pytest.mark.parametrize("service", SERVICES)
def test_migrations_downgrade_to_nothing_and_back(service: str, database_url: str) -> None:
    from alembic import command

    metadata: sa.MetaData = importlib.import_module(f"services.{service}.models").metadata
    db = Database(database_url, service)
    db.migrate()
    command.downgrade(db._alembic_config(), "base")
    assert set(metadata.tables).isdisjoint(sa.inspect(db.engine).get_table_names(schema=service))
    db.migrate()
    assert set(metadata.tables) <= set(sa.inspect(db.engine).get_table_names(schema=service))
    db.dispose()


@pytest.mark.parametrize("service", SERVICES)
def test_embedded_sqlite_default_migrates(service: str, tmp_path: Path) -> None:
    metadata: sa.MetaData = importlib.import_module(f"services.{service}.models").metadata
    db = Database("", service, str(tmp_path))
    db.migrate()
    assert set(metadata.tables) <= set(sa.inspect(db.engine).get_table_names())
    assert (tmp_path / f"{service}.db").exists()
    db.dispose()
