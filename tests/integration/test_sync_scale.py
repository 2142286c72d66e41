"""Sync at moderate scale (1,200 campaigns per platform) against the sandbox process, the real
broker and PostgreSQL: the platform calls the sandbox counted, the sync's batched writes,
status events only for changes, and the gateway's read model projecting every campaign's
metrics in bulk. `python -m bench --only sync_scale` runs the same at 10,000."""

from __future__ import annotations

import math
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from bench.sync_scale import seed_gateway_campaigns, seed_platform
from infra.waiting import wait_for
from services.gateway.models import Campaign
from services.gateway.models import metadata as gateway_metadata
from services.gateway.projections import CampaignProjection
from services.gateway.settings import GatewaySettings
from services.sync.__main__ import compose
from services.sync.models import metadata as sync_metadata
from services.sync.seeding import seed_known_campaigns
from services.sync.settings import SyncSettings
from shared.db import Database
from shared.envelope import new_event
from shared.events import (
    CampaignMetricsUpdated,
    CampaignStatusChanged,
    Platform,
    SyncRequested,
    TaskState,
)
from shared.runtime import ConsumerRuntime
from shared.service import ServiceKit, Worker, build_kit
from tests.conftest import Sandbox
from tests.support.kafka import EventCollector

pytestmark = pytest.mark.integration

CAMPAIGNS = 1200
PAUSED_EVERY = 10
PLATFORMS: tuple[Platform, ...] = ("meta", "google")


class Statements:
    """UPDATE statements sent on an engine, as (table, rows) — one entry per executemany."""

    def __init__(self, db: Database) -> None:
        self.seen: list[tuple[str, int]] = []
        self._engine = db.engine
        sa.event.listen(self._engine, "before_cursor_execute", self._record)

    def _record(
        self, conn: Any, cursor: Any, sql: str, params: Any, context: Any, many: bool
    ) -> None:
        words = sql.split()
        if words and words[0].upper() == "UPDATE":
            self.seen.append((words[1].split(".")[-1].strip('"'), len(params) if many else 1))

    def of(self, table: str) -> list[int]:
        return [rows for name, rows in self.seen if name == table]

    def close(self) -> None:
        sa.event.remove(self._engine, "before_cursor_execute", self._record)


@pytest.fixture
def sync_kit(service_settings: dict[str, Any], sandbox: Sandbox) -> Iterator[ServiceKit]:
    settings = SyncSettings(
        **service_settings,
        meta_graph_url=sandbox.graph_url,
        google_ads_endpoint=sandbox.google_endpoint,
    )
    kit = build_kit("sync", settings, sync_metadata)
    worker = compose(kit, settings)  # the real adapters, pointed at the sandbox
    for component in worker.components:
        component.start()
    assert worker.runtime.assigned.wait(30)
    yield kit
    _stop(worker)
    kit.producer.close()
    kit.db.dispose()


@pytest.fixture
def read_model(service_settings: dict[str, Any]) -> Iterator[ServiceKit]:
    """The gateway's read-model consumer with its campaign projections, registered as
    `services.gateway` registers them (group commit, its lanes and in-flight window)."""
    settings = GatewaySettings(**service_settings)
    kit = build_kit("gateway", settings, gateway_metadata)
    runtime: ConsumerRuntime = kit.runtime(
        "gateway.read-model",
        group_commit=True,
        lanes=settings.read_model_lanes,
        max_in_flight=settings.read_model_max_in_flight,
    )
    campaigns = CampaignProjection()
    runtime.register(CampaignStatusChanged, campaigns.status_changed)
    runtime.register(CampaignMetricsUpdated, campaigns.metrics_updated)
    runtime.start()
    assert runtime.assigned.wait(30)
    yield kit
    runtime.stop()
    kit.producer.close()
    kit.db.dispose()


def _stop(worker: Worker) -> None:
    for component in reversed(worker.components):
        component.stop()


def _calls(sandbox: Sandbox) -> dict[str, int]:
    counts = httpx.get(f"{sandbox.graph_url}/_sandbox/stats", timeout=10).json()
    return {p: int(counts["requests_by_platform"][p]) for p in PLATFORMS}


def _sync(kit: ServiceKit, platform: Platform) -> str:
    task_id = str(uuid.uuid4())
    envelope = new_event(
        SyncRequested(platform=platform), source="t", subject=platform, taskid=task_id
    )
    kit.producer.send(kit.names.topic("campaign.sync_requested"), envelope)
    return task_id


def test_sync_at_scale_calls_little_writes_in_batches_and_the_gateway_projects_everything(
    sandbox: Sandbox,
    sync_kit: ServiceKit,
    read_model: ServiceKit,
    sync_events: EventCollector,
) -> None:
    paused: dict[Platform, set[str]] = {}
    for platform in PLATFORMS:
        ids = seed_platform(sandbox.graph_url, platform, CAMPAIGNS, PAUSED_EVERY)
        paused[platform] = set(ids[PAUSED_EVERY - 1 :: PAUSED_EVERY])
        seed_known_campaigns(sync_kit.db, platform, ids, dict.fromkeys(ids, "active"))
        seed_gateway_campaigns(read_model.db, platform, ids)
    sync_writes, gateway_writes = Statements(sync_kit.db), Statements(read_model.db)
    before = _calls(sandbox)

    tasks = {platform: _sync(sync_kit, platform) for platform in PLATFORMS}

    for platform, task_id in tasks.items():
        done = sync_events.wait_state(task_id, TaskState.SUCCESS, timeout=120)
        assert done.result is not None
        assert (done.result["updated"], done.result["failed"]) == (CAMPAIGNS, 0)
        changed = sync_events.of_task("campaign.status_changed", task_id, CAMPAIGNS // PAUSED_EVERY)
        assert {c.external_id for c in changed} == paused[platform]  # only what changed
        assert {(c.previous_status, c.status) for c in changed} == {("active", "paused")}
        metrics = sync_events.of_task("campaign.metrics_updated", task_id, CAMPAIGNS)
        assert len({m.campaign_id for m in metrics}) == CAMPAIGNS  # every campaign, once
    calls = {p: n - before[p] for p, n in _calls(sandbox).items()}
    # Meta: one listing and one insights page (up to 5,000 rows each); Google: one stream.
    assert calls == {"meta": 2, "google": 1}
    assert calls["meta"] <= math.ceil(CAMPAIGNS / 500)
    # 1,200 known campaigns per platform: two executemany batches (1,000 + 200) each.
    assert sorted(sync_writes.of("known_campaigns")) == [200, 200, 1000, 1000]

    def projected() -> tuple[int, int] | None:
        with read_model.db.session() as session:
            with_metrics = session.scalar(
                sa.select(sa.func.count()).where(Campaign.metrics.is_not(None))
            )
            paused_rows = session.scalar(
                sa.select(sa.func.count()).where(Campaign.status == "paused")
            )
        counts = (int(with_metrics or 0), int(paused_rows or 0))
        return counts if counts == (2 * CAMPAIGNS, 2 * CAMPAIGNS // PAUSED_EVERY) else None

    wait_for(projected, 60, 0.2, "the gateway to project every campaign's metrics and status")
    rows = gateway_writes.of("campaigns")
    # 2,640 row changes (2,400 metrics, 240 statuses) in few bulk statements, not one each.
    assert sum(rows) == 2 * CAMPAIGNS + 2 * CAMPAIGNS // PAUSED_EVERY
    assert len(rows) * 10 <= sum(rows), rows
    with read_model.db.session() as session:
        campaign = session.get(Campaign, f"seed-meta-{sorted(paused['meta'])[0]}")
        assert campaign is not None and campaign.metrics is not None
        assert campaign.status == "paused" and campaign.metrics["impressions"] > 0

    # Nothing changed on the platforms since: metrics for every campaign, no status event.
    again = _sync(sync_kit, "meta")
    sync_events.wait_state(again, TaskState.SUCCESS, timeout=120)
    assert len(sync_events.of_task("campaign.metrics_updated", again, CAMPAIGNS)) == CAMPAIGNS
    assert sync_events.of_task("campaign.status_changed", again) == []
    sync_writes.close()
    gateway_writes.close()
