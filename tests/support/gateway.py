"""The gateway's FastAPI app in-process for unit tests: its real routes on an SQLite file of
its own tables, with no broker (the relay and read model are not started, the outbox is read
back from the table)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import sqlalchemy as sa
from fastapi import FastAPI
from fastapi.testclient import TestClient

from services.gateway.app import create_app
from services.gateway.live import LiveTasks, TaskUpdateHub
from services.gateway.models import metadata
from services.gateway.settings import GatewaySettings
from shared.db import Database
from shared.outbox import Outbox
from shared.producer import EventProducer
from shared.service import ServiceKit
from shared.topics import TopicNames, parse_tiers

TOKEN = "unit-test-master-token"
READER = "unit-test-reader-token"
TASK_WRITER = "unit-test-task-writer"
JOB = {
    "title": "Registered nurse",
    "description": "Night shifts in the ICU",
    "company": "Hospital Central",
    "location": "Madrid",
    "url": "https://jobs.example.org/nurse-1",
}


class NoProducer:
    """The gateway produces only through its relay, which unit tests do not start."""

    def close(self, timeout: float = 0) -> None:
        pass


class RecordingHub(TaskUpdateHub):
    """A hub that keeps every update it is given instead of fanning it out."""

    def __init__(self) -> None:
        super().__init__()
        self.updates: list[dict[str, Any]] = []

    def publish(self, update: dict[str, Any]) -> None:
        self.updates.append(update)


@dataclass
class InProcessGateway:
    app: FastAPI
    client: TestClient
    db: Database
    outbox: Outbox

    def as_(self, token: str | None) -> dict[str, str]:
        return {"Authorization": f"Bearer {token}" if token else ""}

    def outbox_rows(self) -> list[Any]:
        with self.db.session() as session:
            return list(session.execute(sa.select(self.outbox.table)).all())

    def campaign(self, **overrides: Any) -> str:
        job = self.client.post("/api/v1/jobs", json=JOB)
        assert job.status_code == 201, job.text
        body = {
            "name": "Nurses Madrid",
            "platform": "meta",
            "job_id": job.json()["id"],
            "daily_budget": "25.50",
            "currency": "EUR",
            **overrides,
        }
        created = self.client.post("/api/v1/campaigns", json=body)
        assert created.status_code == 201, created.text
        return str(created.json()["id"])


def in_process_gateway(tmp_path: Path, **settings: Any) -> Iterator[InProcessGateway]:
    names = TopicNames("unit.", parse_tiers("1s:1"))
    gateway_settings = GatewaySettings(
        api_token=TOKEN,  # type: ignore[arg-type]
        api_tokens=json.dumps(  # type: ignore[arg-type]
            {READER: ["tasks:read", "campaigns:read"], TASK_WRITER: ["tasks:write", "tasks:read"]}
        ),
        data_dir=str(tmp_path),
        database_url="",
        **settings,
    )
    db = Database("", "gateway", str(tmp_path))
    db.migrate()
    outbox = Outbox(metadata.tables["outbox"], names)
    kit = ServiceKit(
        "gateway",
        gateway_settings,
        names,
        cast(EventProducer, NoProducer()),
        db,
        metadata.tables["processed_events"],
        outbox,
    )
    app = create_app(gateway_settings, kit, LiveTasks(TaskUpdateHub()), [], {"database": db.ready})
    with TestClient(app, headers={"Authorization": f"Bearer {TOKEN}"}) as client:
        yield InProcessGateway(app, client, db, outbox)
    db.dispose()
