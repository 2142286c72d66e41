"""An in-memory Kafka for the runtime's tests: topics with partitions, one consumer group per
consumer, committed offsets, pause/resume/seek with librdkafka's quirks (an application pause
survives a rebalance), and a producer whose deliveries can be made to fail."""

from __future__ import annotations

import threading
import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, KafkaException, TopicPartition

from shared.envelope import Envelope
from shared.producer import DeliveryFailed, OutgoingRecord
from shared.runtime.records import ConsumedRecord
from shared.topics import TopicNames

TP = tuple[str, int]


@dataclass(frozen=True)
class MemoryMessage:
    """Has the getters of confluent-kafka's Message."""

    _topic: str
    _partition: int
    _offset: int
    _key: bytes | None
    _value: bytes | None
    _headers: list[tuple[str, bytes]]
    _timestamp: int

    def topic(self) -> str:
        return self._topic

    def partition(self) -> int:
        return self._partition

    def offset(self) -> int:
        return self._offset

    def key(self) -> bytes | None:
        return self._key

    def value(self) -> bytes | None:
        return self._value

    def headers(self) -> list[tuple[str, bytes]]:
        return list(self._headers)

    def timestamp(self) -> tuple[int, int]:
        return (1, self._timestamp)

    def error(self) -> None:
        return None


@dataclass
class MemoryBroker:
    """Topics, their records, and each group's committed offsets."""

    partitions: dict[str, list[list[MemoryMessage]]] = field(default_factory=dict)
    committed: dict[tuple[str, str, int], int] = field(default_factory=dict)
    changed: threading.Condition = field(default_factory=threading.Condition)
    consumers: list[MemoryConsumer] = field(default_factory=list)

    def create(self, names: TopicNames) -> None:
        with self.changed:
            for name, spec in names.all_specs():
                self.partitions.setdefault(name, [[] for _ in range(spec.partitions)])

    def append(self, record: OutgoingRecord) -> MemoryMessage:
        with self.changed:
            parts = self.partitions.get(record.topic)
            if parts is None:
                raise KafkaException(f"unknown topic {record.topic}")
            index = zlib.crc32(record.key) % len(parts) if record.key is not None else 0
            message = MemoryMessage(
                record.topic,
                index,
                len(parts[index]),
                record.key,
                record.value,
                list(record.headers),
                int(time.time() * 1000),
            )
            parts[index].append(message)
            self.changed.notify_all()
            return message

    def records(self, topic: str) -> list[ConsumedRecord]:
        with self.changed:
            parts = self.partitions.get(topic, [])
            return [ConsumedRecord.of(m) for p in parts for m in p]

    def rebalance(self, group: str) -> None:
        """Every member of `group` has its partitions revoked and given back."""
        for consumer in self.consumers:
            if consumer.group == group:
                consumer.rebalance_pending = True


class MemoryConsumer:
    """The subset of confluent-kafka's Consumer the runtime uses, for one-member groups."""

    def __init__(self, broker: MemoryBroker, config: dict[str, Any]) -> None:
        self.broker = broker
        self.group = str(config["group.id"])
        self.auto_commit = bool(config.get("enable.auto.commit", True))
        self.topics: list[str] = []
        self.callbacks: dict[str, Callable[[Any, list[TopicPartition]], None]] = {}
        self.assigned: list[TP] = []
        self.position: dict[TP, int] = {}
        self.paused: set[TP] = set()
        self.stored: dict[TP, int] = {}
        self.rebalance_pending = False
        self.closed = False
        broker.consumers.append(self)

    # --- group membership -------------------------------------------------------------
    def subscribe(
        self,
        topics: list[str],
        on_assign: Callable[[Any, list[TopicPartition]], None] | None = None,
        on_revoke: Callable[[Any, list[TopicPartition]], None] | None = None,
        on_lost: Callable[[Any, list[TopicPartition]], None] | None = None,
    ) -> None:
        self.topics = list(topics)
        self.callbacks = {
            k: v
            for k, v in (("assign", on_assign), ("revoke", on_revoke), ("lost", on_lost))
            if v is not None
        }
        self.rebalance_pending = True

    def _rebalance(self) -> None:
        self.rebalance_pending = False
        if self.assigned and "revoke" in self.callbacks:
            self.callbacks["revoke"](self, [TopicPartition(t, p) for t, p in self.assigned])
        self._auto_commit()
        self.assigned = []
        wanted = [
            TopicPartition(t, p)
            for t in self.topics
            for p in range(len(self.broker.partitions.get(t, [])))
        ]
        # librdkafka keeps application pauses across the rebalance (the quirk under test).
        if "assign" in self.callbacks:
            self.callbacks["assign"](self, wanted)
        else:
            self.assign(wanted)

    def assign(self, partitions: list[TopicPartition]) -> None:
        self.assigned = [(p.topic, p.partition) for p in partitions]
        for p in partitions:
            tp = (p.topic, p.partition)
            if p.offset == OFFSET_BEGINNING:
                self.position[tp] = 0
            else:
                self.position[tp] = self.broker.committed.get((self.group, *tp), 0)

    def assignment(self) -> list[TopicPartition]:
        return [TopicPartition(t, p) for t, p in self.assigned]

    # --- fetching -----------------------------------------------------------------------
    def poll(self, timeout: float = -1) -> MemoryMessage | None:
        got = self.consume(1, timeout)
        return got[0] if got else None

    def consume(self, num_messages: int = 1, timeout: float = -1) -> list[MemoryMessage]:
        if self.rebalance_pending:
            self._rebalance()
        self._auto_commit()
        deadline = time.monotonic() + max(timeout, 0)
        with self.broker.changed:
            while True:
                found = self._take(num_messages)
                left = deadline - time.monotonic()
                if found or left <= 0:
                    return found
                self.broker.changed.wait(min(left, 0.05))

    def _take(self, limit: int) -> list[MemoryMessage]:
        found: list[MemoryMessage] = []
        for tp in self.assigned:
            if tp in self.paused:
                continue
            log = self.broker.partitions[tp[0]][tp[1]]
            while self.position[tp] < len(log) and len(found) < limit:
                found.append(log[self.position[tp]])
                self.position[tp] += 1
        return found

    def pause(self, partitions: list[TopicPartition]) -> None:
        self.paused.update((p.topic, p.partition) for p in partitions)

    def resume(self, partitions: list[TopicPartition]) -> None:
        self.paused.difference_update((p.topic, p.partition) for p in partitions)

    def seek(self, partition: TopicPartition) -> None:
        self.position[(partition.topic, partition.partition)] = partition.offset

    # --- offsets ------------------------------------------------------------------------
    def store_offsets(self, *, offsets: list[TopicPartition]) -> None:
        for p in offsets:
            self.stored[(p.topic, p.partition)] = p.offset

    def _auto_commit(self) -> None:
        if self.auto_commit:
            for tp, offset in self.stored.items():
                self.broker.committed[(self.group, *tp)] = offset

    def commit(self, *, offsets: list[TopicPartition], asynchronous: bool = True) -> None:
        for p in offsets:
            self.broker.committed[(self.group, p.topic, p.partition)] = p.offset

    def get_watermark_offsets(
        self, partition: TopicPartition, timeout: float = 0
    ) -> tuple[int, int]:
        return (0, len(self.broker.partitions[partition.topic][partition.partition]))

    def list_topics(self, topic: str | None = None, timeout: float = 0) -> Any:
        chosen = [topic] if topic else list(self.broker.partitions)
        return SimpleNamespace(
            topics={
                t: SimpleNamespace(
                    partitions={i: None for i in range(len(self.broker.partitions[t]))}
                )
                for t in chosen
            }
        )

    def close(self) -> None:
        if self.assigned and "revoke" in self.callbacks:
            self.callbacks["revoke"](self, [TopicPartition(t, p) for t, p in self.assigned])
        self._auto_commit()
        self.closed = True
        self.broker.consumers.remove(self)


class MemoryProducer:
    """Appends to the broker at once; `fail_next` makes the next deliveries fail."""

    def __init__(self, broker: MemoryBroker) -> None:
        self.broker = broker
        self.failures_left = 0
        self._lock = threading.Lock()

    def fail_next(self, count: int) -> None:
        with self._lock:
            self.failures_left = count

    def send_async(
        self, records: Sequence[OutgoingRecord], on_done: Callable[[Exception | None], None]
    ) -> None:
        with self._lock:
            failing = self.failures_left > 0 and bool(records)
            if failing:
                self.failures_left -= 1
        if failing:
            on_done(DeliveryFailed("injected delivery failure"))
            return
        for record in records:
            self.broker.append(record)
        on_done(None)

    def send_nowait(self, records: list[OutgoingRecord]) -> None:
        for record in records:
            self.broker.append(record)

    def send_batch(self, records: Sequence[OutgoingRecord], timeout: float = 60.0) -> None:
        for record in records:
            self.broker.append(record)

    def send(self, topic: str, envelope: Envelope) -> None:
        self.broker.append(OutgoingRecord.of(topic, envelope))
