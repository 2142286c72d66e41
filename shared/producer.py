"""The one Kafka producer: idempotent, `acks=all`, asynchronous with every delivery report
checked."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Message, Producer

from shared.envelope import Envelope, to_kafka

log = logging.getLogger(__name__)

Headers = list[tuple[str, bytes]]


class DeliveryFailed(ConnectionError):
    """The broker did not acknowledge a record in time; the caller must not commit.

    A ConnectionError, so a handler that fails on it is retried, never dead-lettered."""


class RecordRefused(ValueError):
    """librdkafka refused a record outright (too large, unknown topic): retrying cannot help."""


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


class DeliveryTracker:
    """Counts one batch's acknowledgements and calls `on_done` once: with None when every
    record was acknowledged, or with the first failure."""

    def __init__(self, count: int, on_done: Callable[[Exception | None], None]) -> None:
        self._left = count
        self._failed: Exception | None = None
        self._on_done = on_done
        self._lock = threading.Lock()
        if count == 0:
            on_done(None)

    def acknowledged(self, err: KafkaError | None, msg: Message) -> None:
        self._settle(1, DeliveryFailed(f"{msg.topic()}: {err}") if err is not None else None)

    def refused(self, count: int, error: Exception) -> None:
        """`count` records were never handed to librdkafka (it refused the first of them)."""
        self._settle(count, error)

    def _settle(self, count: int, error: Exception | None) -> None:
        with self._lock:
            if error is not None and self._failed is None:
                self._failed = error
            self._left -= count
            finished = self._left == 0
        if finished:
            self._on_done(self._failed)


class EventProducer:
    """Produces records asynchronously; a background thread serves delivery callbacks
    (librdkafka's advice: poll in a loop, `flush()` only at shutdown)."""

    def __init__(self, bootstrap: str, client_id: str, extra_config: dict[str, Any] | None = None):
        config: dict[str, Any] = {
            "bootstrap.servers": bootstrap,
            "client.id": client_id,
            "enable.idempotence": True,
            "acks": "all",
            # Latency first: send at once (records still batch while a request is in flight).
            "linger.ms": 0,
            "socket.nagle.disable": True,
            "compression.type": "lz4",
            "delivery.timeout.ms": 60000,
            "message.timeout.ms": 60000,
        }
        config.update(extra_config or {})
        self._producer = Producer(config)
        self._closed = threading.Event()
        self._poller = threading.Thread(
            target=self._serve_callbacks, name=f"producer-{client_id}", daemon=True
        )
        self._poller.start()

    def _serve_callbacks(self) -> None:
        while not self._closed.is_set():
            self._producer.poll(0.05)

    def send_async(
        self, records: Sequence[OutgoingRecord], on_done: Callable[[Exception | None], None]
    ) -> None:
        """Produce `records`; `on_done` is called once, from the callback thread, when all
        are acknowledged (None) or one failed (DeliveryFailed)."""
        tracker = DeliveryTracker(len(records), on_done)
        for index, record in enumerate(records):
            try:
                self._produce(record, tracker.acknowledged)
            except KafkaException as exc:  # refused outright, e.g. larger than the broker takes
                tracker.refused(len(records) - index, RecordRefused(f"{record.topic}: {exc}"))
                return

    def backlog(self) -> int:
        """Records handed to librdkafka and not yet acknowledged (or failed)."""
        return len(self._producer)

    def send_batch(self, records: Iterable[OutgoingRecord], timeout: float = 60.0) -> None:
        """Produce every record and wait until all are acknowledged, or raise DeliveryFailed."""
        done = threading.Event()
        outcome: list[Exception | None] = []

        def finished(error: Exception | None) -> None:
            outcome.append(error)
            done.set()

        self.send_async(list(records), finished)
        if not done.wait(timeout):
            raise DeliveryFailed(f"records not acknowledged in {timeout}s")
        if outcome[0] is not None:
            raise outcome[0]

    def send_nowait(self, records: Iterable[OutgoingRecord]) -> None:
        """Queue informational records (task progress) without waiting: per-key order with
        later sends still holds (idempotent producer); a failure is logged."""

        def logged(error: Exception | None) -> None:
            if error is not None:
                log.warning("informational record not delivered: %s", error)

        self.send_async(list(records), logged)

    def _produce(
        self, record: OutgoingRecord, on_delivery: Callable[[KafkaError | None, Message], None]
    ) -> None:
        """Hand one record to librdkafka, waiting while its local queue is full."""
        while True:
            try:
                self._producer.produce(
                    record.topic,
                    key=record.key,
                    value=record.value,
                    headers=list[tuple[str, str | bytes | None]](record.headers),
                    on_delivery=on_delivery,
                )
                return
            except BufferError:
                self._producer.poll(0.05)  # local queue full: let acknowledgements drain it

    def send(self, topic: str, envelope: Envelope, extra_headers: Headers | None = None) -> None:
        self.send_batch([OutgoingRecord.of(topic, envelope, extra_headers)])

    def send_envelopes(self, items: Sequence[tuple[str, Envelope]]) -> None:
        self.send_batch(OutgoingRecord.of(topic, env) for topic, env in items)

    def close(self, timeout: float = 10.0) -> None:
        self._producer.flush(timeout)
        self._closed.set()
        self._poller.join(1.0)
