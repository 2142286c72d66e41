"""Leadership: one ticker fires at a time, the others stand by and take over when it dies.

Every acquisition raises the `lease` row's epoch, and every firing transaction locks that row
and checks the epoch is still its own (fencing): a ticker that lost the lease without
noticing (a paused process, a dropped connection) cannot fire.

On PostgreSQL the leader holds a session-level advisory lock on a connection of its own; the
lock dies with that session (process killed, host gone, connection dropped), so a standby
takes over within a tick of the database noticing. On the embedded SQLite default the lease
row carries an expiry the leader renews on every tick; a standby takes over once it lapses.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Protocol

import sqlalchemy as sa
from sqlalchemy.engine import Connection, CursorResult
from sqlalchemy.orm import Session
from sqlalchemy.pool import NullPool

from services.ticker.models import Lease
from shared.db import Database

log = logging.getLogger(__name__)

LEASE_NAME = "ticker"


class LeaseLost(Exception):
    """The lease is no longer ours: stop firing."""


class TickerLease(Protocol):
    owner: str
    epoch: int | None  # ours while we lead, None otherwise

    def hold(self) -> bool:
        """Acquire or keep the lease; True while we lead."""

    def verify(self, session: Session) -> int:
        """Inside a firing transaction: lock the lease row and return our epoch, or raise
        LeaseLost when another ticker took over."""

    def release(self) -> None:
        """Give the lease up (clean shutdown) so a standby takes over at once."""


def open_lease(db: Database, owner: str, ttl: float, clock: Callable[[], datetime]) -> TickerLease:
    """The lease suited to the database: an advisory lock on PostgreSQL, else an expiring row."""
    if db.is_sqlite:
        return ExpiringLease(db, owner, ttl, clock)
    return AdvisoryLease(db, owner, clock)


def advisory_key(db: Database) -> int:
    """A 64-bit lock key of this service's schema: advisory locks are per database, and
    another deployment's schema in the same database must not share our lock."""
    digest = hashlib.blake2b(f"adflux:{db.schema}:ticker-lease".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


class AdvisoryLease:
    """PostgreSQL: the holder of `pg_try_advisory_lock(key)` on its own connection leads."""

    def __init__(self, db: Database, owner: str, clock: Callable[[], datetime]) -> None:
        self.db = db
        self.owner = owner
        self.clock = clock
        self.key = advisory_key(db)
        self.epoch: int | None = None
        # Unpooled, so closing the connection really ends the session and frees the lock.
        self._engine = sa.create_engine(
            db.url,
            poolclass=NullPool,
            isolation_level="AUTOCOMMIT",
            connect_args={"connect_timeout": 10},
        )
        self._conn: Connection | None = None

    def hold(self) -> bool:
        if self.epoch is not None:
            if self._alive():
                return True
            log.warning("ticker %s lost its lock connection at epoch %s", self.owner, self.epoch)
            self._drop()
        try:
            if not self._try_lock():
                return False
            self.epoch = self._next_epoch()
        except Exception:
            self._drop()  # a broken connection is replaced on the next tick
            raise
        return True

    def _try_lock(self) -> bool:
        if self._conn is None:
            self._conn = self._engine.connect()
            # The server notices a vanished leader host within ~15 s and frees its lock.
            for setting, value in (
                ("tcp_keepalives_idle", 5),
                ("tcp_keepalives_interval", 2),
                ("tcp_keepalives_count", 5),
            ):
                self._conn.execute(sa.text(f"SET {setting} = {value}"))
        got = self._conn.execute(sa.text("SELECT pg_try_advisory_lock(:key)"), {"key": self.key})
        return bool(got.scalar_one())

    def _next_epoch(self) -> int:
        with self.db.session() as session:
            lease = session.get(Lease, LEASE_NAME, with_for_update=True)
            if lease is None:
                lease = Lease(name=LEASE_NAME, owner=self.owner, epoch=0)
                session.add(lease)
            lease.owner, lease.epoch = self.owner, lease.epoch + 1
            lease.acquired_at, lease.expires_at = self.clock(), None
            return lease.epoch

    def _alive(self) -> bool:
        if self._conn is None:
            return False
        try:
            self._conn.execute(sa.text("SELECT 1"))
            return True
        except sa.exc.DBAPIError:
            return False

    def _drop(self) -> None:
        """Forget the connection (and with it any lock it held)."""
        self.epoch = None
        if self._conn is not None:
            with contextlib.suppress(sa.exc.DBAPIError):
                self._conn.invalidate()
                self._conn.close()
            self._conn = None

    def verify(self, session: Session) -> int:
        lease = session.get(Lease, LEASE_NAME, with_for_update=True, populate_existing=True)
        if self.epoch is None or lease is None or lease.epoch != self.epoch:
            raise LeaseLost(f"ticker {self.owner} no longer holds the lease at epoch {self.epoch}")
        return self.epoch

    def release(self) -> None:
        if self._conn is not None and self.epoch is not None:
            # If the session is gone, its lock went with it.
            with contextlib.suppress(sa.exc.DBAPIError):
                self._conn.execute(sa.text("SELECT pg_advisory_unlock(:key)"), {"key": self.key})
        self._drop()
        self._engine.dispose()


class ExpiringLease:
    """SQLite: the lease row is ours while its expiry, renewed on every tick, is ahead.

    Every statement that decides leadership is a conditional UPDATE, so its transaction takes
    SQLite's write lock first (and waits for it) instead of reading a snapshot that another
    process may change before the write.
    """

    def __init__(self, db: Database, owner: str, ttl: float, clock: Callable[[], datetime]) -> None:
        self.db = db
        self.owner = owner
        self.ttl = timedelta(seconds=ttl)
        self.clock = clock
        self.epoch: int | None = None

    def _ours(self) -> sa.ColumnElement[bool]:
        return sa.and_(Lease.owner == self.owner, Lease.epoch == (self.epoch or 0))

    def hold(self) -> bool:
        try:
            self.epoch = self._renew_or_take(self.clock())
        except sa.exc.IntegrityError:  # another ticker created the lease row first
            self.epoch = None
        return self.epoch is not None

    def _renew_or_take(self, now: datetime) -> int | None:
        with self.db.session() as session:
            renew_or_take = (
                sa.update(Lease)
                .where(Lease.name == LEASE_NAME, sa.or_(self._ours(), Lease.expires_at <= now))
                .values(
                    owner=self.owner,
                    epoch=sa.case((self._ours(), Lease.epoch), else_=Lease.epoch + 1),
                    acquired_at=sa.case((self._ours(), Lease.acquired_at), else_=now),
                    expires_at=now + self.ttl,
                )
                .execution_options(synchronize_session=False)
            )
            if _rowcount(session, renew_or_take) == 0:
                if session.get(Lease, LEASE_NAME) is not None:
                    return None
                session.add(
                    Lease(
                        name=LEASE_NAME,
                        owner=self.owner,
                        epoch=1,
                        acquired_at=now,
                        expires_at=now + self.ttl,
                    )
                )
                session.flush()
            epoch: int = session.execute(
                sa.select(Lease.epoch).where(Lease.name == LEASE_NAME)
            ).scalar_one()
            return epoch

    def verify(self, session: Session) -> int:
        still_ours = (
            sa.update(Lease)
            .where(Lease.name == LEASE_NAME, self._ours(), Lease.expires_at > self.clock())
            .values(epoch=Lease.epoch)
            .execution_options(synchronize_session=False)
        )
        if self.epoch is None or _rowcount(session, still_ours) != 1:
            self.epoch = None
            raise LeaseLost(f"ticker {self.owner} no longer holds the lease")
        return self.epoch

    def release(self) -> None:
        if self.epoch is not None:
            with self.db.session() as session:
                session.execute(
                    sa.update(Lease)
                    .where(Lease.name == LEASE_NAME, self._ours())
                    .values(expires_at=self.clock())
                    .execution_options(synchronize_session=False)
                )
        self.epoch = None


def _rowcount(session: Session, statement: sa.Update) -> int:
    result = session.execute(statement)
    assert isinstance(result, CursorResult)
    return result.rowcount
