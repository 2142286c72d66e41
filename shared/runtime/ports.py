"""The Kafka clients the runtime is given (injected, so its tests run against an in-memory
broker fake and against the real broker through the same door)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol

from confluent_kafka import Consumer, TopicPartition

from shared.producer import OutgoingRecord
from shared.runtime.records import KafkaMessage

RebalanceCallback = Callable[[Any, list[TopicPartition]], None]


class RecordProducer(Protocol):
    """What the runtime needs of `shared.producer.EventProducer`."""

    def send_async(
        self, records: Sequence[OutgoingRecord], on_done: Callable[[Exception | None], None]
    ) -> None: ...

    def send_nowait(self, records: list[OutgoingRecord]) -> None: ...


class RecordConsumer(Protocol):
    """The subset of confluent-kafka's `Consumer` the runtime calls."""

    def subscribe(
        self,
        topics: list[str],
        on_assign: RebalanceCallback = ...,
        on_revoke: RebalanceCallback = ...,
        on_lost: RebalanceCallback = ...,
    ) -> None: ...

    def assign(self, partitions: list[TopicPartition]) -> None: ...

    def assignment(self) -> list[TopicPartition]: ...

    def consume(self, num_messages: int = ..., timeout: float = ...) -> Sequence[KafkaMessage]: ...

    def poll(self, timeout: float = ...) -> KafkaMessage | None: ...

    def pause(self, partitions: list[TopicPartition]) -> None: ...

    def resume(self, partitions: list[TopicPartition]) -> None: ...

    def seek(self, partition: TopicPartition) -> None: ...

    def store_offsets(self, *, offsets: list[TopicPartition]) -> None: ...

    def commit(self, *, offsets: list[TopicPartition], asynchronous: bool = ...) -> Any: ...

    def get_watermark_offsets(
        self, partition: TopicPartition, timeout: float = ...
    ) -> tuple[int, int]: ...

    def list_topics(self, topic: str | None = ..., timeout: float = ...) -> Any: ...

    def close(self) -> None: ...


ConsumerFactory = Callable[[dict[str, Any]], RecordConsumer]


def kafka_consumer(config: dict[str, Any]) -> RecordConsumer:
    """The real client."""
    consumer: RecordConsumer = Consumer(config)  # type: ignore[assignment]
    return consumer
