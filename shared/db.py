"""Database access for every service: one engine per service, its own schema or SQLite file,
Alembic migrations from `services/<name>/migrations`, and the tables every service shares
(`processed_events`, the handled-event tracking rows; `outbox`, events waiting for the relay).
"""

from __future__ import annotations

import fcntl
import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parent.parent
ALEMBIC_DIR = ROOT / "shared" / "alembic"

_migrate_lock = threading.Lock()
# SQLite connections kept per engine: a worker's lanes (16 by default) and other threads.
POOL_SIZE = 24
# Seconds between the background checkpoints of a SQLite WAL (WalCheckpointer).
WAL_CHECKPOINT_INTERVAL = 1.0


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(sa.types.TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite drops the zone)."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("naive datetime")
        return value.astimezone(UTC) if value is not None else None

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value


def tracking_tables(metadata: sa.MetaData) -> tuple[sa.Table, sa.Table]:
    """Add `processed_events` and `outbox` to a service's metadata and return them."""
    processed = sa.Table(
        "processed_events",
        metadata,
        sa.Column("consumer", sa.String(200), primary_key=True),
        sa.Column("event_id", sa.String(64), primary_key=True),
        sa.Column("event_type", sa.String(100), nullable=False),
        # What handling the event emitted, re-sent if the event is delivered again.
        sa.Column("outputs", sa.JSON, nullable=False),
        sa.Column("handled_at", UTCDateTime, nullable=False, default=utcnow),
    )
    outbox = sa.Table(
        "outbox",
        metadata,
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer, "sqlite"),
            primary_key=True,
            autoincrement=True,
        ),
        sa.Column("topic", sa.String(250), nullable=False),
        sa.Column("key", sa.LargeBinary, nullable=True),
        sa.Column("value", sa.LargeBinary, nullable=True),
        sa.Column("headers", sa.JSON, nullable=False),
        sa.Column("created_at", UTCDateTime, nullable=False, default=utcnow),
        sa.Column("sent_at", UTCDateTime, nullable=True, index=True),
        # Set aside: the broker refused the row for good (tracking_v2).
        sa.Column("refused_at", UTCDateTime, nullable=True),
        sa.Column("refused_reason", sa.Text, nullable=True),
    )
    return processed, outbox


class Database:
    """A service's engine and sessions, pointed at its own schema (Postgres) or file (SQLite)."""

    def __init__(self, url: str, service: str, data_dir: str = ".run/data") -> None:
        self.service = service
        self.schema = service if url else None
        if not url:
            path = Path(data_dir) / f"{service}.db"
            path.parent.mkdir(parents=True, exist_ok=True)
            url = f"sqlite+pysqlite:///{path}"
        self.url = make_url(url)
        self.is_sqlite = self.url.get_backend_name() == "sqlite"
        if self.is_sqlite:
            self.schema = None
            # Enough pooled connections for every lane and request thread: an overflow
            # connection is opened and closed per use, and each opening sets the pragmas again.
            self.engine = sa.create_engine(
                self.url,
                connect_args={"check_same_thread": False, "timeout": 30},
                pool_size=POOL_SIZE,
                max_overflow=POOL_SIZE,
            )
            event.listen(self.engine, "connect", _sqlite_pragmas)
            SqliteWriterLock(self.engine)
            self._checkpointer: WalCheckpointer | None = WalCheckpointer(self.engine)
        else:
            self._checkpointer = None
            self.engine = sa.create_engine(
                self.url,
                pool_pre_ping=True,
                # Lanes beyond this wait for a connection: a server's connections are shared
                # by every process (PostgreSQL allows 100 by default).
                pool_size=10,
                max_overflow=10,
                connect_args={"options": f"-csearch_path={self.schema}"},
            )
        self.sessions = sessionmaker(self.engine, expire_on_commit=False)

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A session committed on success and rolled back on error."""
        session = self.sessions()
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise
        finally:
            session.close()

    def _alembic_config(self) -> Config:
        config = Config()
        config.set_main_option("script_location", str(ALEMBIC_DIR))
        config.set_main_option("path_separator", "os")
        config.set_main_option(
            "version_locations", str(ROOT / "services" / self.service / "migrations")
        )
        config.attributes["engine"] = self.engine
        config.attributes["schema"] = self.schema
        return config

    def migrate(self) -> None:
        """Bring this service's schema to the newest Alembic revision."""
        with _migrate_lock:
            if self.is_sqlite:
                with _file_lock(self.url.database):
                    command.upgrade(self._alembic_config(), "head")
                return
            # Replicas of a service start together: one migrates, the others wait for it
            # (a session lock on a connection of its own, held across schema and upgrade).
            with self.engine.connect() as guard:
                key = f"adflux.migrate.{self.schema}"
                guard.execute(sa.text("SELECT pg_advisory_lock(hashtext(:k))"), {"k": key})
                guard.commit()
                try:
                    with self.engine.begin() as conn:
                        conn.execute(sa.text(f'CREATE SCHEMA IF NOT EXISTS "{self.schema}"'))
                    command.upgrade(self._alembic_config(), "head")
                finally:
                    guard.execute(sa.text("SELECT pg_advisory_unlock(hashtext(:k))"), {"k": key})
                    guard.commit()

    def autogenerate(self, metadata: sa.MetaData, message: str) -> None:
        """Write a new migration for the difference between `metadata` and the database."""
        self.migrate()
        config = self._alembic_config()
        config.attributes["metadata"] = metadata
        command.revision(config, message=message, autogenerate=True)

    def ready(self) -> bool:
        try:
            with self.engine.connect() as conn:
                conn.execute(sa.text("SELECT 1"))
            return True
        except sa.exc.SQLAlchemyError:
            return False

    def dispose(self) -> None:
        if self._checkpointer is not None:
            self._checkpointer.stop()
        self.engine.dispose()


class WalCheckpointer:
    """Moves SQLite's WAL checkpoints off the commit path. By default a commit that finds the
    WAL over 1,000 pages checkpoints it itself, fsync included: a few milliseconds on whichever
    request or handler crosses the line. Connections turn that off (`wal_autocheckpoint=0`)
    and this thread checkpoints every `interval` seconds instead (PASSIVE: it never blocks a
    reader or a writer)."""

    def __init__(self, engine: sa.Engine, interval: float | None = None) -> None:
        self.engine = engine
        self.interval = WAL_CHECKPOINT_INTERVAL if interval is None else interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sqlite-checkpoint", daemon=True)
        self._thread.start()

    def checkpoint(self) -> None:
        with self.engine.connect() as conn:
            conn.exec_driver_sql("PRAGMA wal_checkpoint(PASSIVE)")

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.checkpoint()
            except Exception as exc:  # the thread outlives a locked or vanished file
                log.warning("checkpointing the SQLite WAL failed: %s", exc)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(self.interval + 5)


class SqliteWriterLock:
    """One write transaction at a time per SQLite file in this process. Without it, threads
    that write together (HTTP requests, lanes, the relay) meet SQLite's busy handler, which
    sleeps in growing steps and turns a burst into a queue of naps. A connection takes the
    lock at its first write statement and gives it back when it commits or rolls back."""

    WRITES = ("INSERT", "UPDATE", "DELETE", "REPLACE", "CREATE", "DROP", "ALTER")
    TIMEOUT = 30.0  # as SQLite's own busy timeout: never worse than without the lock

    def __init__(self, engine: sa.Engine) -> None:
        # Not an RLock: a request's session may commit on another thread than it wrote on.
        self._lock = threading.Lock()
        self._holders: set[int] = set()
        event.listen(engine, "before_cursor_execute", self._before_execute)
        dialect = engine.dialect
        commit, rollback = dialect.do_commit, dialect.do_rollback

        def do_commit(dbapi_connection: Any) -> None:
            try:
                commit(dbapi_connection)
            finally:
                self._release(dbapi_connection)

        def do_rollback(dbapi_connection: Any) -> None:
            try:
                rollback(dbapi_connection)
            finally:
                self._release(dbapi_connection)

        dialect.do_commit = do_commit  # type: ignore[method-assign]
        dialect.do_rollback = do_rollback  # type: ignore[method-assign]

    def _before_execute(self, conn: sa.Connection, _cursor: Any, statement: str, *_: Any) -> None:
        if not statement.lstrip()[:7].upper().startswith(self.WRITES):
            return
        key = id(conn.connection.dbapi_connection)
        if key not in self._holders:
            if not self._lock.acquire(timeout=self.TIMEOUT):
                raise sa.exc.OperationalError(statement, None, TimeoutError("database is locked"))
            self._holders.add(key)

    def _release(self, connection: Any) -> None:
        # The dialect is handed the pool's proxy; the cursor event saw the DBAPI connection.
        key = id(getattr(connection, "dbapi_connection", connection))
        if key in self._holders:
            self._holders.discard(key)
            self._lock.release()


@contextmanager
def _file_lock(database: str | None) -> Iterator[None]:
    """Processes sharing one SQLite file (replicas in tests) migrate it one at a time."""
    if not database or database == ":memory:":
        yield
        return
    with open(f"{database}.migrate-lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA wal_autocheckpoint=0")  # WalCheckpointer does it off the commit path
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()
