"""What the runtime reads and stores: a consumed record with its fields resolved, and the
compact encoding of a handling's outputs kept in its tracking row (re-sent on redelivery)."""

from __future__ import annotations

import base64
import json
import zlib
from dataclasses import dataclass
from typing import Any, Protocol

from shared.producer import OutgoingRecord


class KafkaMessage(Protocol):
    """The getters of a confluent-kafka `Message` the runtime uses (the fake has them too)."""

    def topic(self) -> str | None: ...
    def partition(self) -> int | None: ...
    def offset(self) -> int | None: ...
    def key(self) -> str | bytes | None: ...
    def value(self) -> str | bytes | None: ...
    def headers(self) -> Any: ...
    def timestamp(self) -> tuple[int, int]: ...
    def error(self) -> Any: ...


TopicPartitionKey = tuple[str, int]


@dataclass(frozen=True)
class ConsumedRecord:
    """A polled Kafka record with its fields resolved (confluent's Message has getters)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]]
    timestamp_ms: int

    @classmethod
    def of(cls, msg: KafkaMessage) -> ConsumedRecord:
        raw_headers = msg.headers() or []
        pairs = raw_headers.items() if isinstance(raw_headers, dict) else raw_headers
        headers = [(k, v.encode() if isinstance(v, str) else v) for k, v in pairs if v is not None]
        key, value = msg.key(), msg.value()
        return cls(
            topic=msg.topic() or "",
            partition=msg.partition() or 0,
            offset=msg.offset() or 0,
            key=key.encode() if isinstance(key, str) else key,
            value=value.encode() if isinstance(value, str) else value,
            headers=headers,
            timestamp_ms=msg.timestamp()[1],
        )

    @property
    def tp(self) -> TopicPartitionKey:
        return (self.topic, self.partition)

    def header_map(self) -> dict[str, bytes]:
        return dict(self.headers)


def _b64(raw: bytes | None) -> str | None:
    return base64.b64encode(raw).decode() if raw is not None else None


def _unb64(raw: str | None) -> bytes | None:
    return base64.b64decode(raw) if raw is not None else None


def encode_outputs(records: list[OutgoingRecord]) -> dict[str, Any]:
    """Outputs as one compressed blob: a batch segmentation's thousands of events stay small."""
    plain = [
        [r.topic, _b64(r.key), _b64(r.value), [[k, _b64(v)] for k, v in r.headers]] for r in records
    ]
    packed = zlib.compress(json.dumps(plain, separators=(",", ":")).encode(), 6)
    return {"z": base64.b64encode(packed).decode()}


def decode_outputs(stored: Any) -> list[OutgoingRecord]:
    """The records `encode_outputs` stored (and the uncompressed list rows written before it)."""
    if isinstance(stored, dict) and "z" in stored:
        plain = json.loads(zlib.decompress(base64.b64decode(stored["z"])))
        return [
            OutgoingRecord(
                topic, _unb64(key), _unb64(value), [(k, _unb64(v) or b"") for k, v in hs]
            )
            for topic, key, value, hs in plain
        ]
    return [
        OutgoingRecord(
            i["topic"],
            _unb64(i["key"]),
            _unb64(i["value"]),
            [(k, _unb64(v) or b"") for k, v in i["headers"]],
        )
        for i in stored
    ]
