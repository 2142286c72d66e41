"""The console's workers, queues and graphs routes in-process, the Kafka inspector replaced
by a dependency override: their shapes in the OpenAPI schema, 503 when the broker does not
answer, and per-minute counts and publish latency from the read model."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from services.gateway.cluster import (
    ClusterUnavailable,
    Member,
    PartitionLag,
    Queue,
    Worker,
)
from services.gateway.console import inspector_of
from services.gateway.models import Task
from tests.support.gateway import READER, InProcessGateway, in_process_gateway


@pytest.fixture
def gw(tmp_path: Path) -> Iterator[InProcessGateway]:
    yield from in_process_gateway(tmp_path)


class FakeInspector:
    def __init__(self, down: bool = False) -> None:
        self.down = down

    def workers(self) -> list[Worker]:
        if self.down:
            raise ClusterUnavailable("kafka: no answer within the timeout")
        member = Member("publisher", "publisher", "publisher-x", "10.0.0.5", ["p[0]", "p[1]"])
        return [Worker("publisher", [member], True, {"status": "ready", "in_flight": {"g": 3}})]

    def queues(self) -> list[Queue]:
        if self.down:
            raise ClusterUnavailable("kafka: no answer within the timeout")
        lag = PartitionLag("publisher", 0, 5, 9, 4)
        return [
            Queue(
                "campaign.publish_requested",
                "campaign.publish_requested",
                "main",
                1,
                [lag],
                4,
                12.5,
            )
        ]


def test_workers_and_queues_answer_from_the_inspector_or_503(gw: InProcessGateway) -> None:
    gw.app.dependency_overrides[inspector_of] = FakeInspector
    [worker] = gw.client.get("/api/v1/workers", headers=gw.as_(READER)).json()
    assert worker["ready"] is True and worker["readiness"]["in_flight"] == {"g": 3}
    assert worker["members"][0]["partitions"] == ["p[0]", "p[1]"]
    [queue] = gw.client.get("/api/v1/queues").json()
    assert (queue["waiting"], queue["oldest_waiting_seconds"]) == (4, 12.5)
    assert queue["lags"] == [
        {"group": "publisher", "partition": 0, "committed": 5, "end": 9, "lag": 4}
    ]
    gw.app.dependency_overrides[inspector_of] = lambda: FakeInspector(down=True)
    for path in ("/api/v1/workers", "/api/v1/queues"):
        down = gw.client.get(path)
        assert down.status_code == 503 and "kafka" in down.json()["detail"]
    assert gw.client.get("/api/v1/workers", headers=gw.as_(None)).status_code == 401
    paths = gw.client.get("/openapi.json").json()["paths"]
    assert {"/api/v1/workers", "/api/v1/queues", "/api/v1/stats/tasks"} <= set(paths)


def test_graphs_count_outcomes_per_minute_and_publish_latency(gw: InProcessGateway) -> None:
    campaign_id = gw.campaign()
    task_id = gw.client.post(f"/api/v1/campaigns/{campaign_id}/publish").json()["task_id"]
    retried = gw.client.post("/api/v1/tasks", json={"name": "ml.train"}).json()["task_id"]
    now = datetime.now(UTC)
    with gw.db.session() as session, session.begin():
        publish = session.get(Task, task_id)
        train = session.get(Task, retried)
        assert publish is not None and train is not None
        # Took 3 s and ended now (not in the future: the last minute must hold it).
        publish.created_at = now - timedelta(seconds=3)
        publish.history = [*publish.history, {"state": "SUCCESS", "at": now.isoformat()}]
        train.history = [
            *train.history,
            {"state": "RETRY", "at": now.isoformat()},
            {"state": "FAILURE", "at": now.isoformat()},
        ]
    minutes = gw.client.get("/api/v1/stats/tasks", params={"minutes": 5}).json()
    assert len(minutes) == 5
    totals = {k: sum(m[k] for m in minutes) for k in ("succeeded", "failed", "retried")}
    assert totals == {"succeeded": 1, "failed": 1, "retried": 1}
    [latency] = [m["publish_latency_p50"] for m in minutes if m["publish_latency_p50"]]
    assert latency == pytest.approx(3.0)
    refused = gw.client.get("/api/v1/stats/tasks", params={"minutes": 0})
    assert refused.status_code == 422 and "minutes" in refused.text
