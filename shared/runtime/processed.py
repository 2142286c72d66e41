"""The processed-event store: which events this consumer group already handled and what their
handling emitted — looked up once per poll batch, written in the handler's transaction, and
purged after a retention period."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.orm import Session

from shared.db import Database
from shared.producer import OutgoingRecord
from shared.runtime.records import decode_outputs, encode_outputs


class ProcessedEventStore:
    """Tracking rows of one consumer group in a service's `processed_events` table."""

    def __init__(self, db: Database, table: sa.Table, group: str) -> None:
        self.db = db
        self.table = table
        self.group = group
        # Built once: building and cache-keying a statement per call cost more than running it.
        self._lookup = sa.select(table.c.event_id, table.c.outputs).where(
            table.c.consumer == group, table.c.event_id.in_(sa.bindparam("ids", expanding=True))
        )
        self._insert = sa.insert(table)

    def lookup(self, event_ids: Iterable[str]) -> dict[str, list[OutgoingRecord]]:
        """The stored outputs of those events that were handled before (one query)."""
        ids = list(set(event_ids))
        if not ids:
            return {}
        with self.db.engine.connect() as conn:
            rows = conn.execute(self._lookup, {"ids": ids}).all()
        return {row.event_id: decode_outputs(row.outputs) for row in rows}

    def stored(self, event_id: str) -> list[OutgoingRecord] | None:
        return self.lookup([event_id]).get(event_id)

    def add(
        self, session: Session, event_id: str, event_type: str, outputs: list[OutgoingRecord]
    ) -> None:
        """Record the event as handled inside the caller's transaction."""
        self.add_many(session, [(event_id, event_type, outputs)])

    def add_many(
        self, session: Session, handled: Sequence[tuple[str, str, list[OutgoingRecord]]]
    ) -> None:
        """Record several events (id, type, outputs) as handled in one statement (a group
        commit's tracking rows: one INSERT each would cost a round trip per event)."""
        if not handled:
            return
        now = datetime.now(UTC)
        session.execute(
            self._insert,
            [
                {
                    "consumer": self.group,
                    "event_id": event_id,
                    "event_type": event_type,
                    "outputs": encode_outputs(outputs),
                    "handled_at": now,
                }
                for event_id, event_type, outputs in handled
            ],
        )

    def purge(self, retention: timedelta) -> int:
        """Forget events handled longer ago than `retention`; returns how many."""
        t = self.table
        cutoff = datetime.now(UTC) - retention
        with self.db.engine.begin() as conn:
            result = conn.execute(
                sa.delete(t).where(t.c.consumer == self.group, t.c.handled_at < cutoff)
            )
        return int(result.rowcount or 0)
