"""The one event envelope: CloudEvents 1.0 in Kafka binary content mode (`ce_*` headers).

`Envelope` is what handlers see; `to_kafka` / `from_kafka` convert through the cloudevents
SDK; `MalformedEvent` is raised for anything that is not a valid AdFlux event, so the
consumer can dead-letter it and carry on.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from cloudevents.http import CloudEvent
from cloudevents.kafka import KafkaMessage, from_binary, to_binary
from pydantic import ValidationError

from shared.events import CONTRACT_BY_MODEL, CONTRACTS, Payload

SPEC_VERSION = "1.0"
CONTENT_TYPE = "application/json"


class MalformedEvent(Exception):
    """A record that cannot be decoded or validated; it is dead-lettered, never retried."""


@dataclass(frozen=True)
class Envelope:
    """An event and its CloudEvents attributes. `subject` is the aggregate id (Kafka key)."""

    type: str
    source: str
    subject: str
    data: dict[str, Any]
    id: str = field(default_factory=lambda: str(uuid.uuid4()))
    time: datetime = field(default_factory=lambda: datetime.now(UTC))
    taskid: str | None = None
    correlationid: str | None = None
    causationid: str | None = None
    attempt: int = 1

    @property
    def dataschema(self) -> str:
        return CONTRACTS[self.type].dataschema

    def payload(self) -> Payload:
        """The validated payload model; raises MalformedEvent on a contract violation."""
        contract = CONTRACTS.get(self.type)
        if contract is None:
            raise MalformedEvent(f"unknown event type {self.type!r}")
        try:
            return contract.model.model_validate(self.data)
        except ValidationError as exc:
            raise MalformedEvent(f"{self.type} violates its schema: {exc}") from exc


def new_event(
    payload: Payload,
    *,
    source: str,
    subject: str,
    taskid: str | None = None,
    correlationid: str | None = None,
    causationid: str | None = None,
    attempt: int = 1,
    event_id: str | None = None,
) -> Envelope:
    """Wrap a payload model in an envelope; its type comes from the model's contract."""
    contract = CONTRACT_BY_MODEL[type(payload)]
    envelope_id = event_id or str(uuid.uuid4())
    return Envelope(
        type=contract.type,
        source=source if source.startswith("adflux/") else f"adflux/{source}",
        subject=subject,
        data=payload.model_dump(mode="json"),
        id=envelope_id,
        taskid=taskid,
        correlationid=correlationid or envelope_id,
        causationid=causationid,
        attempt=attempt,
    )


def caused_by(parent: Envelope, payload: Payload, *, source: str, subject: str) -> Envelope:
    """A follow-up event that carries the parent's task and correlation ids."""
    return new_event(
        payload,
        source=source,
        subject=subject,
        taskid=parent.taskid,
        correlationid=parent.correlationid or parent.id,
        causationid=parent.id,
        attempt=parent.attempt,
    )


def to_kafka(envelope: Envelope) -> KafkaMessage:
    """Binary-mode Kafka message: key = subject, headers = ce_* attributes, value = JSON."""
    attributes: dict[str, Any] = {
        "specversion": SPEC_VERSION,
        "id": envelope.id,
        "type": envelope.type,
        "source": envelope.source,
        "subject": envelope.subject,
        "time": envelope.time.isoformat(),
        "datacontenttype": CONTENT_TYPE,
        "dataschema": envelope.dataschema,
        "attempt": str(envelope.attempt),
        "partitionkey": envelope.subject,
    }
    for name in ("taskid", "correlationid", "causationid"):
        value = getattr(envelope, name)
        if value:
            attributes[name] = value
    event = CloudEvent(attributes, envelope.data)
    message = to_binary(
        event,
        data_marshaller=lambda data: json.dumps(data, separators=(",", ":")).encode(),
        key_mapper=lambda ev: ev["partitionkey"].encode(),
    )
    return message


def from_kafka(
    key: bytes | None, value: bytes | None, headers: list[tuple[str, bytes]] | None
) -> Envelope:
    """Decode a consumed record; raises MalformedEvent for anything that is not one of ours."""
    ce_headers = {name: raw for name, raw in headers or [] if raw is not None}
    if "ce_type" not in ce_headers or "ce_id" not in ce_headers:
        raise MalformedEvent("missing CloudEvents headers (ce_id, ce_type)")
    if value is None:
        raise MalformedEvent("record has no value")

    def unmarshal(raw: bytes) -> Any:
        return json.loads(raw)

    try:
        event = from_binary(KafkaMessage(ce_headers, key, value), data_unmarshaller=unmarshal)
    except Exception as exc:  # the SDK wraps JSON and attribute errors in its own types
        raise MalformedEvent(f"undecodable record: {exc}") from exc
    data = event.get_data()
    if not isinstance(data, dict):
        raise MalformedEvent("event data is not a JSON object")
    attrs = event.get_attributes()
    try:
        attempt = int(attrs.get("attempt", "1"))
        when = datetime.fromisoformat(str(attrs["time"])) if attrs.get("time") else None
    except ValueError as exc:
        raise MalformedEvent(f"bad CloudEvents attribute: {exc}") from exc
    subject = attrs.get("subject") or (key.decode(errors="replace") if key else "")
    return Envelope(
        type=str(attrs["type"]),
        source=str(attrs["source"]),
        subject=str(subject),
        data=data,
        id=str(attrs["id"]),
        time=when or datetime.now(UTC),
        taskid=attrs.get("taskid"),
        correlationid=attrs.get("correlationid"),
        causationid=attrs.get("causationid"),
        attempt=attempt,
    )
