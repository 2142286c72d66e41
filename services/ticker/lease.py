"""Leadership: one ticker fires at a time. The leader holds a lease row it renews on every
tick; a standby takes over once the lease expires, with a higher epoch. Every firing checks,
in its own transaction, that the lease is still ours at our epoch (fencing), so a ticker
that lost the lease while paused cannot fire."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta

from sqlalchemy.orm import Session

from services.ticker.models import Lease
from shared.db import Database

LEASE_NAME = "ticker"


class LeaseLost(Exception):
    """The lease is no longer ours: stop firing."""


class TickerLease:
    def __init__(self, db: Database, owner: str, ttl: float, clock: Callable[[], datetime]) -> None:
        self.db = db
        self.owner = owner
        self.ttl = timedelta(seconds=ttl)
        self.clock = clock
        self.epoch: int | None = None

    def hold(self) -> bool:
        """Acquire or renew; True while we are the leader."""
        now = self.clock()
        with self.db.session() as session:
            lease = session.get(Lease, LEASE_NAME, with_for_update=True)
            if lease is None:
                lease = Lease(name=LEASE_NAME, owner=self.owner, epoch=1, expires_at=now + self.ttl)
                session.add(lease)
            elif lease.owner == self.owner and lease.epoch == self.epoch:
                lease.expires_at = now + self.ttl
            elif lease.expires_at <= now:
                lease.owner, lease.epoch, lease.expires_at = (
                    self.owner,
                    lease.epoch + 1,
                    now + self.ttl,
                )
            else:
                self.epoch = None
                return False
            self.epoch = lease.epoch
        return True

    def verify(self, session: Session) -> int:
        """Inside a firing transaction: lock the lease row and check it is still ours."""
        lease = session.get(Lease, LEASE_NAME, with_for_update=True)
        if (
            lease is None
            or lease.owner != self.owner
            or lease.epoch != self.epoch
            or lease.expires_at <= self.clock()
        ):
            self.epoch = None
            raise LeaseLost(f"ticker {self.owner} no longer holds the lease")
        return lease.epoch

    def release(self) -> None:
        """Let a standby take over at once (clean shutdown)."""
        with self.db.session() as session:
            lease = session.get(Lease, LEASE_NAME, with_for_update=True)
            if lease is not None and lease.owner == self.owner and lease.epoch == self.epoch:
                lease.expires_at = self.clock()
        self.epoch = None
