"""The one Kafka producer: idempotent, `acks=all`, every delivery report checked."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from confluent_kafka import KafkaError, Message, Producer

from shared.envelope import Envelope, to_kafka

log = logging.getLogger(__name__)

Headers = list[tuple[str, bytes]]


class DeliveryFailed(ConnectionError):
    """The broker did not acknowledge a record in time; the caller must not commit.

    A ConnectionError, so a handler that fails on it is retried, never dead-lettered."""


@dataclass(frozen=True)
class OutgoingRecord:
    """A record to produce: an envelope, or raw bytes (forwarding to a tier or the DLQ)."""

    topic: str
    key: bytes | None
    value: bytes | None
    headers: Headers

    @classmethod
    def of(
        cls, topic: str, envelope: Envelope, extra_headers: Headers | None = None
    ) -> OutgoingRecord:
        message = to_kafka(envelope)
        headers = list(message.headers.items()) + list(extra_headers or [])
        key = message.key.encode() if isinstance(message.key, str) else message.key
        value = message.value.encode() if isinstance(message.value, str) else message.value
        return cls(topic, key, value, headers)


class EventProducer:
    """Produces records and waits for the broker's acknowledgement of each batch."""

    def __init__(self, bootstrap: str, client_id: str, extra_config: dict[str, Any] | None = None):
        config: dict[str, Any] = {
            "bootstrap.servers": bootstrap,
            "client.id": client_id,
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 2,
            "compression.type": "lz4",
            "delivery.timeout.ms": 60000,
            "message.timeout.ms": 60000,
        }
        config.update(extra_config or {})
        self._producer = Producer(config)
        self._lock = threading.Lock()

    def send_batch(self, records: Iterable[OutgoingRecord], timeout: float = 60.0) -> None:
        """Produce every record and wait until all are acknowledged, or raise DeliveryFailed."""
        errors: list[str] = []
        pending = 0

        def on_delivery(err: KafkaError | None, msg: Message) -> None:
            nonlocal pending
            pending -= 1
            if err is not None:
                errors.append(f"{msg.topic()}: {err}")

        with self._lock:
            for record in records:
                while not self._produce(record, on_delivery):
                    self._producer.poll(0.1)  # local queue full: serve callbacks, try again
                pending += 1
            remaining = self._producer.flush(timeout)
        if remaining or pending:
            raise DeliveryFailed(
                f"{max(remaining, pending)} record(s) not acknowledged in {timeout}s"
            )
        if errors:
            raise DeliveryFailed("; ".join(errors[:5]))

    def send_nowait(self, records: Iterable[OutgoingRecord]) -> None:
        """Queue records without waiting for the broker: for informational events (task
        progress). Per-key order with later sends still holds (idempotent producer); a
        record that fails is logged, and the next `send_batch` flushes it."""

        def on_delivery(err: KafkaError | None, msg: Message) -> None:
            if err is not None:
                log.warning("informational record to %s not delivered: %s", msg.topic(), err)

        with self._lock:
            for record in records:
                if not self._produce(record, on_delivery):
                    log.warning(
                        "producer queue full: dropped informational record to %s", record.topic
                    )
            self._producer.poll(0)

    def _produce(
        self, record: OutgoingRecord, on_delivery: Callable[[KafkaError | None, Message], None]
    ) -> bool:
        """Hand one record to librdkafka; False when its local queue is full."""
        try:
            self._producer.produce(
                record.topic,
                key=record.key,
                value=record.value,
                headers=list[tuple[str, str | bytes | None]](record.headers),
                on_delivery=on_delivery,
            )
        except BufferError:
            return False
        return True

    def send(self, topic: str, envelope: Envelope, extra_headers: Headers | None = None) -> None:
        self.send_batch([OutgoingRecord.of(topic, envelope, extra_headers)])

    def send_envelopes(self, items: Sequence[tuple[str, Envelope]]) -> None:
        self.send_batch(OutgoingRecord.of(topic, env) for topic, env in items)

    def close(self, timeout: float = 10.0) -> None:
        with self._lock:
            self._producer.flush(timeout)
