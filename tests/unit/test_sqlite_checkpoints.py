"""SQLite's WAL checkpoints run in a background thread, not in the commit that crosses the
WAL's size limit (a few milliseconds of fsync on some unlucky request)."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa

import shared.db
from infra.waiting import wait_for
from shared.db import Database

PAGE = 4096


def _wal_frames(db: Database) -> tuple[int, int]:
    """(frames in the WAL, frames checkpointed), as a no-op checkpoint reports them."""
    with db.engine.connect() as conn:
        row = conn.exec_driver_sql("PRAGMA wal_checkpoint(PASSIVE)").one()
    return int(row[1]), int(row[2])


def _write_pages(db: Database, table: sa.Table, pages: int) -> None:
    for _ in range(pages // 4):  # small commits, as requests and handlers make them
        with db.session() as session:
            session.execute(sa.insert(table), [{"v": "x" * PAGE} for _ in range(4)])


def _table(db: Database) -> sa.Table:
    metadata = sa.MetaData()
    table = sa.Table(
        "blobs", metadata, sa.Column("id", sa.Integer, primary_key=True), sa.Column("v", sa.Text)
    )
    metadata.create_all(db.engine)
    return table


def test_commits_never_checkpoint_the_wal_themselves(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(shared.db, "WAL_CHECKPOINT_INTERVAL", 3600.0)  # no background pass
    db = Database("", "walled", str(tmp_path))
    try:
        table = _table(db)
        _write_pages(db, table, 1600)  # SQLite's own limit is 1,000 pages
        log, _done = _wal_frames(db)
        assert log > 1600  # every commit appended; none checkpointed and restarted the WAL
    finally:
        db.dispose()


def test_the_background_thread_checkpoints_the_wal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(shared.db, "WAL_CHECKPOINT_INTERVAL", 0.2)
    db = Database("", "walled", str(tmp_path))
    try:
        table = _table(db)
        _write_pages(db, table, 400)
        wal = tmp_path / "walled.db-wal"
        wait_for(
            lambda: (tmp_path / "walled.db").stat().st_size > 400 * PAGE,
            10,
            0.1,
            "the WAL's pages to reach the database file",
        )
        assert wal.exists()
    finally:
        db.dispose()
