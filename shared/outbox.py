"""The transactional outbox: events are written with the state change that causes them, in
the same transaction, and an `OutboxRelay` produces them afterwards and marks them sent.

A crash between commit and produce loses nothing (the row stays unsent); a crash between
produce and marking re-sends the row, which consumers skip by event id.

The command path does not wait for the relay's next pass: `Outbox.commit` claims the rows its
transaction added, commits, and hands them straight to the relay, which produces them at once
and marks them sent in its next pass; its passes skip claimed rows, and a row whose delivery
fails is released to them (and then, like any row, retried or set aside).

No record can stop the relay: a row larger than a record may be is refused when it is added
(`RecordTooLarge`), and a row the broker refuses for good anyway is set aside with its reason
(`refused_at`, `refused_reason`; counted in `adflux_outbox_refused_total`) while later rows
keep flowing.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from confluent_kafka import KafkaException
from sqlalchemy.orm import Session

from shared import metrics
from shared.background import BackgroundLoop
from shared.db import Database
from shared.envelope import Envelope
from shared.producer import DeliveryFailed, EventProducer, OutgoingRecord
from shared.redaction import redact
from shared.retry import truncate
from shared.topics import TopicNames

log = logging.getLogger(__name__)

# librdkafka refuses a record over message.max.bytes (1,000,000 by default) counting key,
# value and headers; below it with room to spare.
MAX_RECORD_BYTES = 900_000
# Unacknowledged records above which committed rows are left to the relay's passes instead
# of being produced from the committing thread (the broker is away or slow: a full local
# queue would make produce() wait, and the request with it).
EXPRESS_BACKLOG_LIMIT = 10_000
# Seconds between counts of the unsent rows while the relay drains a backlog.
BACKLOG_EXPORT_INTERVAL = 1.0
# Delivery errors after which no retry of the same record can succeed.
REFUSAL_CODES = frozenset(
    {
        "MSG_SIZE_TOO_LARGE",
        "RECORD_LIST_TOO_LARGE",
        "INVALID_RECORD",
        "INVALID_MSG",
        "CORRUPT_MESSAGE",
        "INVALID_MSG_SIZE",
        "TOPIC_AUTHORIZATION_FAILED",
        "TOPIC_EXCEPTION",
        "POLICY_VIOLATION",
        "_INVALID_ARG",
        "_MSG_SIZE_TOO_LARGE",
    }
)
_CODE = re.compile(r"code=(\w+)")
# Session.info key: the rows this transaction added, for `Outbox.commit`.
_ADDED = "adflux_outbox_added"
# An inserted outbox row: its id and its record.
AddedRow = tuple[int, OutgoingRecord]


@sa.event.listens_for(Session, "after_soft_rollback")
def _forget_rolled_back(session: Session, _previous: Any) -> None:
    """Rows of a rolled-back transaction never existed: nothing may send them."""
    session.info.pop(_ADDED, None)


@sa.event.listens_for(Session, "after_commit")
def _forget_committed(session: Session) -> None:
    """Rows committed other than by `Outbox.commit` are the relay's passes' to send."""
    session.info.pop(_ADDED, None)


class RecordTooLarge(ValueError):
    """A record larger than the broker takes: refused before it enters the outbox."""

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(f"record of {size} bytes is over the {limit}-byte limit")
        self.size = size
        self.limit = limit


def record_size(record: OutgoingRecord) -> int:
    """Bytes librdkafka counts against message.max.bytes (key, value and headers)."""
    return (
        len(record.key or b"")
        + len(record.value or b"")
        + sum(len(k) + len(v or b"") for k, v in record.headers)
    )


def refusal_reason(exc: BaseException) -> str | None:
    """Why the broker (or librdkafka) refused a record for good; None when retrying later may
    succeed (broker unreachable, timeouts, leader changes)."""
    if isinstance(exc, KafkaException):  # refused by produce() itself
        error = exc.args[0] if exc.args else None
        retriable = getattr(error, "retriable", None)
        if callable(retriable) and retriable():
            return None
        return str(exc)
    if isinstance(exc, ValueError | TypeError):  # a record produce() cannot take
        return f"{type(exc).__name__}: {exc}"
    if isinstance(exc, DeliveryFailed):
        codes = set(_CODE.findall(str(exc)))
        if codes and codes <= REFUSAL_CODES:
            return str(exc)
    return None


@dataclass(frozen=True)
class RefusedRow:
    """An outbox row set aside: what it was and why the broker refused it."""

    id: int
    topic: str
    key: bytes | None
    size: int
    headers: dict[str, str]
    reason: str
    created_at: datetime | None = None
    refused_at: datetime | None = None

    @property
    def event_type(self) -> str | None:
        return self.headers.get("ce_type")

    @property
    def task_id(self) -> str | None:
        return self.headers.get("ce_taskid")


RefusalHook = Callable[[Session, Sequence[RefusedRow]], None]


class Outbox:
    """Adds events to a service's `outbox` table inside the caller's transaction."""

    def __init__(
        self, table: sa.Table, names: TopicNames, max_record_bytes: int = MAX_RECORD_BYTES
    ) -> None:
        self.table = table
        self.names = names
        self.max_record_bytes = max_record_bytes
        self._wake = threading.Event()
        # Built once (the hot path's); ids come back in the order of the rows given.
        self._insert = sa.insert(table).returning(table.c.id, sort_by_parameter_order=True)
        self.relay: OutboxRelay | None = None  # set by the relay that drains this outbox

    def add(self, session: Session, envelope: Envelope) -> None:
        self.add_records(session, self.encode([envelope]))

    def encode(self, envelopes: Sequence[Envelope]) -> list[OutgoingRecord]:
        """The records of events, each for its type's topic."""
        return [OutgoingRecord.of(self.names.topic(e.type), e) for e in envelopes]

    def add_many(self, session: Session, envelopes: Sequence[Envelope]) -> None:
        """Add many events with one executemany (bulk intake); RecordTooLarge, and nothing
        added, when any of them is over the limit."""
        records = self.encode(envelopes)
        self._check_sizes(records)
        if records:
            session.execute(sa.insert(self.table), _rows(records))

    def add_records(self, session: Session, records: Sequence[OutgoingRecord]) -> None:
        """Add already-encoded records (a dead letter being replayed) that `commit` hands to
        the relay, in one statement; RecordTooLarge, and nothing added, when any of them is
        over what the broker takes."""
        self.track(session, self.insert(session, records))

    def track(self, session: Session, added: Sequence[AddedRow]) -> None:
        """Note rows inserted in the session's transaction, for `commit` to hand over."""
        session.info.setdefault(_ADDED, []).extend(added)

    def insert(
        self, executor: sa.Connection | Session, records: Sequence[OutgoingRecord]
    ) -> list[AddedRow]:
        """Insert records in the caller's transaction on a session or a bare connection, in
        one statement, and return the rows for `hand_over`; RecordTooLarge, and nothing
        inserted, when any of them is over what the broker takes."""
        self._check_sizes(records)
        if not records:
            return []
        ids: Iterable[int] = executor.execute(self._insert, _rows(records)).scalars()
        return list(zip(ids, records, strict=True))

    def _check_sizes(self, records: Sequence[OutgoingRecord]) -> None:
        for record in records:
            if (size := record_size(record)) > self.max_record_bytes:
                raise RecordTooLarge(size, self.max_record_bytes)

    def commit(self, session: Session) -> None:
        """Commit the caller's transaction and hand the rows it added straight to the relay
        (claimed before the commit, so no pass of the relay sends them too)."""
        self.hand_over(session.commit, session.info.pop(_ADDED, []))

    def hand_over(self, commit: Callable[[], None], added: Sequence[AddedRow]) -> None:
        """Run `commit`, the transaction that inserted `added`, and hand those rows straight
        to the relay (claimed before the commit, so no pass of the relay sends them too)."""
        relay = self.relay
        if relay is None or not added:
            commit()
            self.notify()
            return
        ids = [row_id for row_id, _ in added]
        relay.claim(ids)
        try:
            commit()
        except BaseException:
            relay.release(ids)
            raise
        relay.send_claimed(added)

    def refused(self, session: Session, limit: int = 100) -> list[RefusedRow]:
        """The rows set aside, newest first."""
        table = self.table
        rows = session.execute(
            sa.select(table)
            .where(table.c.refused_at.is_not(None))
            .order_by(table.c.refused_at.desc(), table.c.id.desc())
            .limit(limit)
        ).all()
        return [_refused_row(row, row.refused_reason or "") for row in rows]

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
        on_refused: RefusalHook | None = None,
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
        # Called in the transaction that sets rows aside (the gateway fails their tasks).
        self.on_refused = on_refused
        self._topics = {name for name, _ in outbox.names.all_specs()}
        self._last_purge = datetime.now(UTC)
        self._last_export = 0.0
        self._last_exported: int | None = None  # the backlog last exported (None: never)
        self._lock = threading.Lock()
        self._claimed: set[int] = set()  # handed over by Outbox.commit, delivery unknown
        self._delivered: list[int] = []  # claimed rows acknowledged, to be marked sent
        outbox.relay = self

    def claim(self, ids: Sequence[int]) -> None:
        """Keep the relay's passes off these rows: their transaction hands them over."""
        with self._lock:
            self._claimed.update(ids)

    def release(self, ids: Sequence[int]) -> None:
        """Give rows back to the relay's passes."""
        with self._lock:
            self._claimed.difference_update(ids)
        self.outbox.notify()

    def send_claimed(self, rows: Sequence[AddedRow]) -> None:
        """Produce committed, claimed rows now; acknowledged ones are marked sent by the next
        pass, the others released to it (at once when the producer's backlog shows the
        broker away: the committing thread never waits for the broker)."""
        ids = [row_id for row_id, _ in rows]
        if self.producer.backlog() > EXPRESS_BACKLOG_LIMIT:
            self.release(ids)
            return

        def delivered(error: Exception | None) -> None:
            if error is not None:
                log.warning("outbox rows of %s not delivered at once: %s", self.service, error)
                self.release(ids)
                return
            with self._lock:
                self._delivered.extend(ids)
                self._claimed.difference_update(ids)

        self.producer.send_async([record for _, record in rows], delivered)

    def _mark_delivered(self) -> None:
        with self._lock:
            ids, self._delivered = self._delivered, []
        if not ids:
            return
        table = self.outbox.table
        now = datetime.now(UTC)
        try:
            with self.db.session() as session:
                for start in range(0, len(ids), self.batch_size):  # bound the bind parameters
                    chunk = ids[start : start + self.batch_size]
                    session.execute(
                        sa.update(table).where(table.c.id.in_(chunk)).values(sent_at=now)
                    )
        except BaseException:
            with self._lock:
                self._delivered.extend(ids)
            raise
        metrics.OUTBOX_SENT.labels(self.service).inc(len(ids))

    def relay_once(self) -> int:
        """Send one batch; returns how many rows it settled (sent or set aside). The backlog
        gauge then holds the unsent count, read at most every BACKLOG_EXPORT_INTERVAL seconds
        (the count reads every unsent row: after a bulk intake, hundreds of thousands; and on
        the command path it would cost each POST a query), and at once when a pass finds the
        outbox empty while the gauge still shows rows."""
        settled: int | None = None
        try:
            self._mark_delivered()
            settled = self._relay_batch()
            return settled
        finally:
            due = time.monotonic() - self._last_export >= BACKLOG_EXPORT_INTERVAL
            if due or (settled == 0 and self._last_exported != 0):
                self._export_backlog()

    def _export_backlog(self) -> None:
        table = self.outbox.table
        try:
            with self.db.session() as session:
                unsent = session.scalar(
                    sa.select(sa.func.count())
                    .select_from(table)
                    .where(table.c.sent_at.is_(None), table.c.refused_at.is_(None))
                )
        except sa.exc.SQLAlchemyError as exc:
            log.warning("counting the outbox backlog of %s failed: %s", self.service, exc)
            return
        metrics.OUTBOX_PENDING.labels(self.service).set(unsent or 0)
        self._last_export = time.monotonic()
        self._last_exported = unsent or 0

    def _relay_batch(self) -> int:
        table = self.outbox.table
        with self.db.session() as session:
            query = (
                sa.select(table.c.id, table.c.topic, table.c.key, table.c.value, table.c.headers)
                .where(table.c.sent_at.is_(None), table.c.refused_at.is_(None))
                .order_by(table.c.id)
                .limit(self.batch_size)
            )
            if not self.db.is_sqlite:
                query = query.with_for_update(skip_locked=True)
            rows = session.execute(query).all()
            with self._lock:
                rows = [row for row in rows if row.id not in self._claimed]  # on their way
            if not rows:
                return 0
            sent, refused, failure = self._produce(rows)
            now = datetime.now(UTC)
            if sent:
                session.execute(sa.update(table).where(table.c.id.in_(sent)).values(sent_at=now))
            for row in refused:
                session.execute(
                    sa.update(table)
                    .where(table.c.id == row.id)
                    .values(refused_at=now, refused_reason=row.reason)
                )
                log.error(
                    "outbox row %s (%s, %s bytes) set aside: the broker refused it: %s",
                    row.id,
                    row.topic,
                    row.size,
                    row.reason,
                )
            if refused and self.on_refused is not None:
                self.on_refused(session, refused)
        metrics.OUTBOX_SENT.labels(self.service).inc(len(sent))
        metrics.OUTBOX_REFUSED.labels(self.service).inc(len(refused))
        if failure is not None:
            raise failure  # what was settled is committed; the rest waits for the broker
        return len(sent) + len(refused)

    def _produce(self, rows: Sequence[Any]) -> tuple[list[int], list[RefusedRow], Exception | None]:
        """Produce the rows: (ids sent, rows refused for good, the error that stopped the rest).

        The batch goes at once; only when the broker refuses something in it are its rows
        produced one by one, to set aside exactly the refused ones."""
        limit = self.outbox.max_record_bytes
        refused = []
        for row in rows:
            if (size := record_size(_record(row))) > limit:
                refused.append(
                    _refused_row(row, f"record of {size} bytes is over the {limit}-byte limit")
                )
            elif row.topic not in self._topics:
                # librdkafka would wait for it to appear, holding up every row after it.
                refused.append(_refused_row(row, f"topic {row.topic!r} is not declared"))
        skipped = {r.id for r in refused}
        sendable = [row for row in rows if row.id not in skipped]
        try:
            self.producer.send_batch([_record(row) for row in sendable])
            return [row.id for row in sendable], refused, None
        except Exception as exc:
            if refusal_reason(exc) is None:
                return [], refused, exc
        sent: list[int] = []
        for row in sendable:
            try:
                self.producer.send_batch([_record(row)])
            except Exception as exc:
                reason = refusal_reason(exc)
                if reason is None:
                    return sent, refused, exc
                refused.append(_refused_row(row, reason))
            else:
                sent.append(row.id)
        return sent, refused, None

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
            except Exception:  # the relay thread must outlive any record and any bug
                log.exception("outbox relay of %s failed; will retry", self.service)
                self._stop.wait(1.0)
            self.outbox.wait(self.poll_interval)

    def _wake(self) -> None:
        self.outbox.notify()


def _rows(records: Sequence[OutgoingRecord]) -> list[dict[str, Any]]:
    """The outbox rows of records added now."""
    now = datetime.now(UTC)
    return [
        {
            "topic": record.topic,
            "key": record.key,
            "value": record.value,
            "headers": [[k, v.decode("latin-1")] for k, v in record.headers],
            "created_at": now,
        }
        for record in records
    ]


def _record(row: Any) -> OutgoingRecord:
    return OutgoingRecord(
        row.topic, row.key, row.value, [(k, v.encode("latin-1")) for k, v in row.headers]
    )


def _refused_row(row: Any, reason: str) -> RefusedRow:
    mapping = row._mapping
    return RefusedRow(
        id=row.id,
        topic=row.topic,
        key=row.key,
        size=record_size(_record(row)),
        headers={k: v for k, v in row.headers if k.startswith("ce_")},
        reason=truncate(redact(reason)),
        created_at=mapping.get("created_at"),
        refused_at=mapping.get("refused_at"),
    )
