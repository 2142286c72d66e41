"""The transactional outbox: events are written with the state change that causes them, in
the same transaction, and an `OutboxRelay` produces them afterwards and marks them sent.

A crash between commit and produce loses nothing (the row stays unsent); a crash between
produce and marking re-sends the row, which consumers skip by event id.
"""

from __future__ import annotations

import logging
import threading
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.orm import Session

from shared import metrics
from shared.background import BackgroundLoop
from shared.db import Database
from shared.envelope import Envelope
from shared.producer import DeliveryFailed, EventProducer, OutgoingRecord
from shared.topics import TopicNames

log = logging.getLogger(__name__)


class Outbox:
    """Adds events to a service's `outbox` table inside the caller's transaction."""

    def __init__(self, table: sa.Table, names: TopicNames) -> None:
        self.table = table
        self.names = names
        self._wake = threading.Event()

    def add(self, session: Session, envelope: Envelope) -> None:
        self.add_record(session, OutgoingRecord.of(self.names.topic(envelope.type), envelope))

    def add_record(self, session: Session, record: OutgoingRecord) -> None:
        """Add an already-encoded record (a dead letter being replayed)."""
        session.execute(
            sa.insert(self.table).values(
                topic=record.topic,
                key=record.key,
                value=record.value,
                headers=[[k, v.decode("latin-1")] for k, v in record.headers],
                created_at=datetime.now(UTC),
            )
        )

    def notify(self) -> None:
        """Tell the relay that rows were committed (it also polls on its own)."""
        self._wake.set()

    def wait(self, timeout: float) -> None:
        self._wake.wait(timeout)
        self._wake.clear()


class OutboxRelay(BackgroundLoop):
    """Produces unsent outbox rows in id order and marks them sent."""

    def __init__(
        self,
        db: Database,
        outbox: Outbox,
        producer: EventProducer,
        service: str,
        poll_interval: float = 0.25,
        batch_size: int = 500,
        keep_sent: timedelta = timedelta(hours=24),
    ) -> None:
        super().__init__()
        self.thread_name = f"outbox-{service}"
        self.db = db
        self.outbox = outbox
        self.producer = producer
        self.service = service
        self.poll_interval = poll_interval
        self.batch_size = batch_size
        self.keep_sent = keep_sent
        self._last_purge = datetime.now(UTC)

    def relay_once(self) -> int:
        """Send one batch; returns how many rows were sent."""
        table = self.outbox.table
        with self.db.session() as session:
            query = (
                sa.select(table.c.id, table.c.topic, table.c.key, table.c.value, table.c.headers)
                .where(table.c.sent_at.is_(None))
                .order_by(table.c.id)
                .limit(self.batch_size)
            )
            if not self.db.is_sqlite:
                query = query.with_for_update(skip_locked=True)
            rows = session.execute(query).all()
            if not rows:
                metrics.OUTBOX_PENDING.labels(self.service).set(0)
                return 0
            self.producer.send_batch(
                OutgoingRecord(
                    row.topic,
                    row.key,
                    row.value,
                    [(k, v.encode("latin-1")) for k, v in row.headers],
                )
                for row in rows
            )
            session.execute(
                sa.update(table)
                .where(table.c.id.in_([row.id for row in rows]))
                .values(sent_at=datetime.now(UTC))
            )
        metrics.OUTBOX_SENT.labels(self.service).inc(len(rows))
        return len(rows)

    def purge_sent(self) -> None:
        cutoff = datetime.now(UTC) - self.keep_sent
        table = self.outbox.table
        with self.db.session() as session:
            session.execute(sa.delete(table).where(table.c.sent_at < cutoff))

    def run(self) -> None:
        while not self._stop.is_set():
            try:
                while self.relay_once() == self.batch_size:
                    pass
                if datetime.now(UTC) - self._last_purge > timedelta(minutes=10):
                    self.purge_sent()
                    self._last_purge = datetime.now(UTC)
            except (DeliveryFailed, sa.exc.SQLAlchemyError) as exc:
                log.warning("outbox relay of %s: %s; will retry", self.service, exc)
                self._stop.wait(1.0)
            self.outbox.wait(self.poll_interval)

    def _wake(self) -> None:
        self.outbox.notify()
