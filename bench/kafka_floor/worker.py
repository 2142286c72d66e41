"""The floor's worker (`python -m bench.kafka_floor.worker`): for every command, STARTED and
SUCCESS on the status topic at once (no handler, no database, no dedupe)."""

from __future__ import annotations

from confluent_kafka import Consumer, Producer

from bench.kafka_floor.config import COMMANDS, PRODUCER, STATUSES, consumer_config


def main() -> None:
    producer = Producer(PRODUCER)
    consumer = Consumer(consumer_config("worker"))
    consumer.subscribe([COMMANDS])
    while True:
        message = consumer.poll(0.5)
        if message is not None and message.error() is None:
            producer.produce(STATUSES, key=message.key(), value=b"STARTED")
            producer.produce(STATUSES, key=message.key(), value=b"SUCCESS")
        producer.poll(0)


if __name__ == "__main__":
    main()
