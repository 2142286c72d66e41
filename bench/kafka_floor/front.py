"""The floor's HTTP front (`uvicorn bench.kafka_floor.front:app`): POST produces the command
straight to Kafka (no database, no outbox, no envelope) and GET answers from a dict that a
consumer of the status topic fills. Nothing here survives a crash: it only measures how fast
a task can cross the broker twice on this machine, through the same HTTP client."""

from __future__ import annotations

import threading
import uuid
from typing import Any

from confluent_kafka import Consumer, Producer
from fastapi import FastAPI
from pydantic import BaseModel, Field

from bench.kafka_floor.config import COMMANDS, PRODUCER, STATUSES, consumer_config


class TaskIn(BaseModel):
    name: str
    kwargs: dict[str, Any] = Field(default_factory=dict)


app = FastAPI(title="Kafka floor")
states: dict[str, str] = {}
producer = Producer(PRODUCER)


def _deliveries() -> None:
    while True:
        producer.poll(0.1)


def _statuses() -> None:
    consumer = Consumer(consumer_config("front"))
    consumer.subscribe([STATUSES])
    while True:
        message = consumer.poll(0.5)
        key = message.key() if message is not None and message.error() is None else None
        if message is not None and key:
            states[key.decode()] = (message.value() or b"").decode()


threading.Thread(target=_deliveries, daemon=True).start()
threading.Thread(target=_statuses, daemon=True).start()


@app.post("/tasks", status_code=202)
async def run_task(body: TaskIn) -> dict[str, str]:
    task_id = str(uuid.uuid4())
    states[task_id] = "PENDING"
    producer.produce(COMMANDS, key=task_id.encode(), value=body.model_dump_json().encode())
    return {"task_id": task_id}


@app.get("/tasks/{task_id}")
async def task_state(task_id: str) -> dict[str, str]:
    return {"task_id": task_id, "state": states.get(task_id, "PENDING")}
