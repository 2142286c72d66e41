"""The processed-event store: outputs kept compactly, found again in one query, and forgotten
after the retention period."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import sqlalchemy as sa

from shared.db import Database, tracking_tables
from shared.producer import OutgoingRecord
from shared.runtime.processed import ProcessedEventStore
from shared.runtime.records import decode_outputs, encode_outputs


def store(tmp_path: Path) -> tuple[ProcessedEventStore, sa.Table]:
    db = Database("", "tracked", str(tmp_path))
    metadata = sa.MetaData()
    processed, _ = tracking_tables(metadata)
    metadata.create_all(db.engine)
    return ProcessedEventStore(db, processed, "group"), processed


def segmented(i: int) -> OutgoingRecord:
    body = json.dumps({"candidate_id": f"c-{i}", "segment": i % 5, "model_version": "v1"})
    return OutgoingRecord(
        "candidate.segmented", f"c-{i}".encode(), body.encode(), [("ce_id", b"x")]
    )


def test_outputs_round_trip_and_a_batch_of_events_is_stored_small() -> None:
    outputs = [segmented(i) for i in range(2000)]
    stored = encode_outputs(outputs)
    assert decode_outputs(stored) == outputs
    plain = sum(len(r.value or b"") + len(r.key or b"") for r in outputs)
    assert len(json.dumps(stored)) < plain / 4


def test_rows_written_before_compaction_still_decode() -> None:
    legacy = [{"topic": "t", "key": None, "value": "e30=", "headers": [["ce_id", "MQ=="]]}]
    assert decode_outputs(legacy) == [OutgoingRecord("t", None, b"{}", [("ce_id", b"1")])]


def test_lookup_finds_handled_events_of_a_batch_in_one_call(tmp_path: Path) -> None:
    events, _ = store(tmp_path)
    with events.db.session() as session:
        events.add(session, "e1", "x", [segmented(1)])
    assert events.lookup(["e1", "e2"]) == {"e1": [segmented(1)]}


def test_purge_forgets_only_rows_past_the_retention(tmp_path: Path) -> None:
    events, table = store(tmp_path)
    with events.db.session() as session:
        events.add(session, "new", "x", [])
        events.add(session, "old", "x", [])
        session.execute(
            sa.update(table)
            .where(table.c.event_id == "old")
            .values(handled_at=datetime.now(UTC) - timedelta(days=8))
        )
    assert events.purge(timedelta(days=7)) == 1
    assert set(events.lookup(["new", "old"])) == {"new"}
