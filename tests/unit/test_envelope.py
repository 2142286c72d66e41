"""The CloudEvents envelope: binary-mode round trip and rejection of malformed records."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from shared.envelope import MalformedEvent, caused_by, from_kafka, new_event, to_kafka
from shared.events import TaskState, TaskStatus, TrainingRequested
from shared.producer import OutgoingRecord


def status(task_id: str = "t-1") -> TaskStatus:
    return TaskStatus(
        task_id=task_id, name="ml.train", state=TaskState.STARTED, at=datetime.now(UTC)
    )


def test_binary_mode_round_trip_keeps_every_attribute() -> None:
    envelope = new_event(status(), source="ml", subject="t-1", taskid="t-1", attempt=3)
    message = to_kafka(envelope)
    assert message.key == b"t-1"
    assert message.headers["ce_type"] == b"task.status"
    assert message.headers["ce_source"] == b"adflux/ml"
    assert message.headers["ce_dataschema"] == b"schemas/task.status/v1.json"
    assert message.headers["ce_attempt"] == b"3"
    assert json.loads(message.value)["state"] == "STARTED"  # body is the bare JSON payload
    record = OutgoingRecord.of("topic", envelope)
    decoded = from_kafka(record.key, record.value, record.headers)
    assert decoded == envelope
    assert decoded.payload() == status().model_copy(update={"at": decoded.payload().at})  # type: ignore[attr-defined]


def test_follow_up_event_carries_task_and_correlation_ids() -> None:
    parent = new_event(TrainingRequested(), source="ticker", subject="ml.train", taskid="task-9")
    child = caused_by(parent, status("task-9"), source="ml", subject="task-9")
    assert child.taskid == "task-9"
    assert child.correlationid == parent.correlationid == parent.id
    assert child.causationid == parent.id


@pytest.mark.parametrize(
    ("headers", "value", "reason"),
    [
        ([], b"{}", "missing CloudEvents headers"),
        (
            [
                ("ce_id", b"1"),
                ("ce_type", b"task.status"),
                ("ce_source", b"x"),
                ("ce_specversion", b"1.0"),
            ],
            b"{not json",
            "undecodable",
        ),
        (
            [
                ("ce_id", b"1"),
                ("ce_type", b"task.status"),
                ("ce_source", b"x"),
                ("ce_specversion", b"1.0"),
            ],
            b"[1, 2]",
            "not a JSON object",
        ),
    ],
)
def test_malformed_records_are_rejected_with_a_reason(
    headers: list[tuple[str, bytes]], value: bytes, reason: str
) -> None:
    with pytest.raises(MalformedEvent, match=reason):
        from_kafka(b"k", value, headers)


def test_schema_violation_and_unknown_type_are_malformed() -> None:
    envelope = new_event(status(), source="ml", subject="t-1")
    bad = OutgoingRecord.of("topic", envelope)
    broken = json.loads(bad.value or b"")
    broken["state"] = "DANCING"
    decoded = from_kafka(bad.key, json.dumps(broken).encode(), bad.headers)
    with pytest.raises(MalformedEvent, match="violates its schema"):
        decoded.payload()
    headers = dict(bad.headers) | {"ce_type": b"no.such.event"}
    with pytest.raises(MalformedEvent, match="unknown event type"):
        from_kafka(bad.key, bad.value, list(headers.items())).payload()
