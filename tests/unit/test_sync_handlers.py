"""The sync handlers with an in-memory ad platform and a real (SQLite) database: batching,
status-change detection, and the seed's result counts."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

import pytest
from sqlalchemy.orm import Session

from services.publisher.platforms.base import CampaignSnapshot, CampaignSpec, StepJournal
from services.sync.handlers import CampaignSync, remember_published
from services.sync.models import KnownCampaign, metadata
from shared.consumer import HandlerContext
from shared.db import Database
from shared.envelope import new_event
from shared.events import CampaignPublished, MetricsRefreshRequested, SyncRequested


class FakePlatform:
    name: Literal["meta", "google"] = "meta"
    steps: tuple[str, ...] = ("campaign",)

    def __init__(self, snapshots: dict[str, CampaignSnapshot]) -> None:
        self.snapshots = snapshots
        self.calls: list[list[str]] = []

    def create_campaign_flow(self, spec: CampaignSpec, journal: StepJournal) -> dict[str, str]:
        raise NotImplementedError

    def fetch_statuses_and_metrics(
        self, external_ids: list[str] | None = None
    ) -> list[CampaignSnapshot]:
        self.calls.append(list(external_ids or []))
        return [self.snapshots[i] for i in external_ids or [] if i in self.snapshots]

    def set_campaign_status(self, external_id: str, status: Literal["active", "paused"]) -> None:
        raise NotImplementedError


class FakeContext(HandlerContext):
    def __init__(self, session: Session) -> None:
        self.session = session
        self.progress_seen: list[int] = []

    def check_cancelled(self) -> None:
        pass

    def progress(self, percent: int, info: dict[str, Any] | None = None) -> None:
        self.progress_seen.append(percent)


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    database = Database("", "sync", str(tmp_path))
    metadata.create_all(database.engine)
    yield database
    database.dispose()


def publish(db: Database, campaign_id: str, external_id: str | None) -> None:
    event = CampaignPublished(
        campaign_id=campaign_id,
        platform="meta",
        external_ids={"campaign": external_id} if external_id else {},
        published_at=datetime.now(UTC),
    )
    with db.session() as session:
        remember_published(
            new_event(event, source="t", subject=campaign_id), event, FakeContext(session)
        )


def snapshot(external_id: str, status: str = "active", impressions: int = 10) -> CampaignSnapshot:
    return CampaignSnapshot(external_id, status, impressions, 1, Decimal("0.50"), 0.0)


def test_sync_reports_changes_in_batches_with_the_seed_counts(db: Database) -> None:
    for i in range(5):
        publish(db, f"c{i}", f"x{i}" if i != 4 else None)  # c4 never got an external id
    platform = FakePlatform({f"x{i}": snapshot(f"x{i}") for i in range(3)})  # x3 vanished
    sync = CampaignSync({"meta": lambda: platform}, batch_size=2)
    command = SyncRequested(platform="meta")
    with db.session() as session:
        ctx = FakeContext(session)
        outcome = sync.sync(new_event(command, source="t", subject="meta"), command, ctx)
    assert outcome.result is not None
    assert {k: outcome.result[k] for k in ("total", "updated", "failed", "skipped")} == {
        "total": 5,
        "updated": 3,
        "failed": 1,
        "skipped": 1,
    }
    assert platform.calls == [["x0", "x1"], ["x2", "x3"]]
    assert ctx.progress_seen == [50, 100]
    types = [e.type for e in outcome.events]
    assert (
        types.count("campaign.status_changed") == 3 and types.count("campaign.metrics_updated") == 3
    )

    platform.snapshots["x1"] = snapshot("x1", status="paused", impressions=99)
    with db.session() as session:
        again = sync.sync(
            new_event(command, source="t", subject="meta"), command, FakeContext(session)
        )
    changed = [e.payload() for e in again.events if e.type == "campaign.status_changed"]
    assert [(c.campaign_id, c.previous_status, c.status) for c in changed] == [
        ("c1", "active", "paused")
    ]  # type: ignore[attr-defined]
    with db.session() as session:
        row = session.get(KnownCampaign, "c1")
        assert row is not None and row.impressions == 99 and row.status == "paused"


def test_metrics_refresh_covers_both_platforms_without_status_events(db: Database) -> None:
    publish(db, "c1", "x1")
    meta = FakePlatform({"x1": snapshot("x1")})
    google = FakePlatform({})
    sync = CampaignSync({"meta": lambda: meta, "google": lambda: google})
    command = MetricsRefreshRequested()
    with db.session() as session:
        outcome = sync.refresh_metrics(
            new_event(command, source="t", subject="all"), command, FakeContext(session)
        )
    assert [e.type for e in outcome.events] == ["campaign.metrics_updated"]
    assert google.calls == []  # no known Google campaigns: no call
    assert (
        outcome.result is not None
        and "metrics refresh of meta, google" in outcome.result["message"]
    )
