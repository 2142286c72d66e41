"""The two buses the runtime suite runs on: the in-memory broker fake and the real Kafka
broker, behind one small interface (send, read a topic, committed offsets, rebalance)."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from shared.envelope import Envelope, MalformedEvent, from_kafka
from shared.events import TaskStatus
from shared.producer import EventProducer, OutgoingRecord
from shared.runtime.ports import ConsumerFactory, kafka_consumer
from shared.runtime.records import ConsumedRecord
from shared.topics import TopicNames
from tests.support.memory_broker import MemoryBroker, MemoryConsumer, MemoryProducer


@dataclass
class Bus:
    """What a runtime test needs of a broker."""

    kind: str
    names: TopicNames
    producer: EventProducer | MemoryProducer
    consumer_factory: ConsumerFactory
    bootstrap: str = ""
    broker: MemoryBroker | None = None
    _readers: dict[str, tuple[Consumer, list[ConsumedRecord]]] = field(default_factory=dict)

    def send(self, envelope: Envelope) -> None:
        self.producer.send_batch([OutgoingRecord.of(self.names.topic(envelope.type), envelope)])

    def send_records(self, records: list[OutgoingRecord]) -> None:
        self.producer.send_batch(records)

    def records(self, topic: str) -> list[ConsumedRecord]:
        """Everything on `topic` so far (the Kafka reader keeps its place between calls)."""
        if self.broker is not None:
            return self.broker.records(topic)
        if topic not in self._readers:
            consumer = Consumer(
                {
                    "bootstrap.servers": self.bootstrap,
                    "group.id": f"reader-{uuid.uuid4()}",
                    "enable.auto.commit": False,
                }
            )
            meta = consumer.list_topics(topic, timeout=30).topics[topic]
            consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in meta.partitions])
            self._readers[topic] = (consumer, [])
        consumer, seen = self._readers[topic]
        while True:
            msg = consumer.poll(0.2)
            if msg is None:
                return list(seen)
            if msg.error() is None:
                seen.append(ConsumedRecord.of(msg))

    def events(
        self, event_type: str, where: Callable[[Envelope], bool] = lambda e: True
    ) -> list[Envelope]:
        found = []
        for r in self.records(self.names.topic(event_type)):
            try:
                envelope = from_kafka(r.key, r.value, r.headers)
            except MalformedEvent:
                continue
            if where(envelope):
                found.append(envelope)
        return found

    def statuses(self, task_id: str) -> list[TaskStatus]:
        return [e.payload() for e in self.events("task.status", lambda e: e.subject == task_id)]  # type: ignore[misc]

    def committed(self, group: str, topic: str, partition: int) -> int | None:
        if self.broker is not None:
            return self.broker.committed.get((group, topic, partition))
        consumer = Consumer({"bootstrap.servers": self.bootstrap, "group.id": group})
        try:
            [tp] = consumer.committed([TopicPartition(topic, partition)], timeout=10)
            return tp.offset if tp.offset >= 0 else None
        finally:
            consumer.close()

    def rebalance(self, group: str, topics: list[str]) -> None:
        """Make the group rebalance and give the partitions back to the same member."""
        if self.broker is not None:
            self.broker.rebalance(group)
            return
        guest = Consumer(
            {"bootstrap.servers": self.bootstrap, "group.id": group, "session.timeout.ms": 6000}
        )
        guest.subscribe(topics)
        assigned: list[Any] = []
        for _ in range(150):  # join (the member rebalances) and hold partitions for a moment
            guest.poll(0.1)
            assigned = guest.assignment()
            if assigned:
                break
        guest.close()  # leaves: the member gets everything back

    def close(self) -> None:
        for consumer, _seen in self._readers.values():
            consumer.close()
        if isinstance(self.producer, EventProducer):
            self.producer.close()


def memory_bus(names: TopicNames) -> Bus:
    broker = MemoryBroker()
    broker.create(names)
    return Bus(
        "memory",
        names,
        MemoryProducer(broker),
        lambda config: MemoryConsumer(broker, config),
        broker=broker,
    )


def kafka_bus(names: TopicNames, bootstrap: str) -> Bus:
    return Bus("kafka", names, EventProducer(bootstrap, "test"), kafka_consumer, bootstrap)
