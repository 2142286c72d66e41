"""Alembic environment shared by every service: runs one service's migrations in its schema."""

from __future__ import annotations

from typing import Any, Literal

from alembic import context

from shared.db import UTCDateTime


def render_item(kind: str, obj: Any, autogen_context: Any) -> str | Literal[False]:
    """Render our UTC type as a plain timezone-aware DateTime in migrations."""
    if kind == "type" and isinstance(obj, UTCDateTime):
        return "sa.DateTime(timezone=True)"
    return False


config = context.config
engine = config.attributes["engine"]
schema = config.attributes.get("schema")

with engine.connect() as connection:
    context.configure(
        connection=connection,
        target_metadata=config.attributes.get("metadata"),
        version_table_schema=schema,
        render_as_batch=engine.dialect.name == "sqlite",
        render_item=render_item,
    )
    with context.begin_transaction():
        context.run_migrations()
    connection.commit()
