"""The sync handlers with an in-memory ad platform and a real (SQLite, migrated) database:
one platform read per platform (by id or the whole account), batched writes, status-change
detection, the seed's result counts, and error propagation."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session

from adplatforms.base import (
    AdPlatform,
    CampaignSnapshot,
    CampaignSpec,
    StepJournal,
    TransientPlatformError,
)
from services.sync.handlers import CampaignSync, remember_published
from services.sync.models import KnownCampaign
from shared.db import Database
from shared.envelope import Envelope, new_event
from shared.events import (
    CampaignMetricsUpdated,
    CampaignPublished,
    CampaignStatusChanged,
    MetricsRefreshRequested,
    SyncRequested,
)
from shared.retry import PermanentError
from shared.runtime import HandlerContext, HandlerOutcome


class FakePlatform:
    """An in-memory AdPlatform: answers from `snapshots`, records every fetch call (None:
    the whole account was asked for)."""

    steps: tuple[str, ...] = ("campaign",)

    def __init__(
        self,
        snapshots: dict[str, CampaignSnapshot] | None = None,
        name: Literal["meta", "google"] = "meta",
    ) -> None:
        self.name = name
        self.snapshots = dict(snapshots or {})
        self.calls: list[list[str] | None] = []
        self.fail_on_call: int | None = None  # which call (1-based) raises `error`
        self.error: Exception = TransientPlatformError("rate limited", http_status=429)

    def create_campaign_flow(self, spec: CampaignSpec, journal: StepJournal) -> dict[str, str]:
        raise NotImplementedError

    def fetch_statuses_and_metrics(
        self, external_ids: list[str] | None = None
    ) -> list[CampaignSnapshot]:
        self.calls.append(None if external_ids is None else list(external_ids))
        if self.fail_on_call == len(self.calls):
            raise self.error
        if external_ids is None:
            return list(self.snapshots.values())
        return [self.snapshots[i] for i in external_ids if i in self.snapshots]

    def set_campaign_status(self, external_id: str, status: Literal["active", "paused"]) -> None:
        raise NotImplementedError


class FakeContext(HandlerContext):
    def __init__(self, session: Session) -> None:
        self.session = session
        self.progress_seen: list[tuple[int, dict[str, Any] | None]] = []

    def check_cancelled(self) -> None:
        pass

    def progress(self, percent: int, info: dict[str, Any] | None = None) -> None:
        self.progress_seen.append((percent, info))


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    database = Database("", "sync", str(tmp_path))
    database.migrate()
    yield database
    database.dispose()


def factory(platform: FakePlatform, built: list[str] | None = None) -> Callable[[], AdPlatform]:
    def build() -> AdPlatform:
        if built is not None:
            built.append(platform.name)
        return platform

    return build


def publish(
    db: Database,
    campaign_id: str,
    external_id: str | None,
    platform: Literal["meta", "google"] = "meta",
    published_at: datetime | None = None,
) -> None:
    event = CampaignPublished(
        campaign_id=campaign_id,
        platform=platform,
        external_ids={"campaign": external_id} if external_id else {},
        published_at=published_at or datetime.now(UTC),
    )
    with db.session() as session:
        remember_published(
            new_event(event, source="t", subject=campaign_id), event, FakeContext(session)
        )


def snapshot(external_id: str, status: str = "active", impressions: int = 10) -> CampaignSnapshot:
    return CampaignSnapshot(external_id, status, impressions, 1, Decimal("0.50"), 0.0)


def run_sync(
    db: Database, sync: CampaignSync, platform: Literal["meta", "google"] = "meta"
) -> tuple[HandlerOutcome, FakeContext]:
    command = SyncRequested(platform=platform)
    envelope = new_event(command, source="t", subject=platform, taskid="task-1")
    with db.session() as session:
        ctx = FakeContext(session)
        return sync.sync(envelope, command, ctx), ctx


def of_type(events: list[Envelope], event_type: str) -> list[Any]:
    return [e.payload() for e in events if e.type == event_type]


def test_sync_reports_changes_with_the_seed_counts(db: Database) -> None:
    for i in range(5):
        publish(db, f"c{i}", f"x{i}" if i != 4 else None)  # c4 never got an external id
    platform = FakePlatform({f"x{i}": snapshot(f"x{i}") for i in range(3)})  # x3 vanished
    platform.snapshots["other"] = snapshot("other")  # on the account, unknown to AdFlux
    sync = CampaignSync({"meta": factory(platform)}, id_filter_max=2)

    outcome, ctx = run_sync(db, sync)

    assert outcome.result == {
        "total": 5,
        "updated": 3,
        "failed": 1,
        "skipped": 1,
        "message": "sync of meta done: 3 updated, 1 failed, 1 skipped",
    }
    assert platform.calls == [None]  # 4 ids > 2: the whole account, in one read
    assert [percent for percent, _ in ctx.progress_seen] == [100]
    assert ctx.progress_seen[-1][1] == {"platform": "meta", "done": 4, "of": 4}
    changed: list[CampaignStatusChanged] = of_type(outcome.events, "campaign.status_changed")
    assert [(c.campaign_id, c.previous_status, c.status) for c in changed] == [
        ("c0", None, "active"),
        ("c1", None, "active"),
        ("c2", None, "active"),
    ]
    assert len(of_type(outcome.events, "campaign.metrics_updated")) == 3


def test_only_a_changed_normalised_status_is_reported_with_its_previous_status(
    db: Database,
) -> None:
    publish(db, "c1", "x1")
    publish(db, "c2", "x2")
    platform = FakePlatform({"x1": snapshot("x1"), "x2": snapshot("x2")})
    sync = CampaignSync({"meta": factory(platform)})
    run_sync(db, sync)

    platform.snapshots["x1"] = snapshot("x1", status="paused", impressions=99)
    again, _ = run_sync(db, sync)

    changed: list[CampaignStatusChanged] = of_type(again.events, "campaign.status_changed")
    assert [(c.campaign_id, c.external_id, c.previous_status, c.status) for c in changed] == [
        ("c1", "x1", "active", "paused")
    ]
    metrics: list[CampaignMetricsUpdated] = of_type(again.events, "campaign.metrics_updated")
    assert {m.campaign_id: m.impressions for m in metrics} == {"c1": 99, "c2": 10}
    with db.session() as session:
        row = session.get(KnownCampaign, "c1")
        assert row is not None and (row.status, row.impressions) == ("paused", 99)
        assert row.spend == Decimal("0.50") and row.synced_at is not None


def test_beyond_the_id_filter_one_account_read_and_batched_writes_serve_every_campaign(
    db: Database,
) -> None:
    for i in range(2500):
        publish(db, f"c{i:04}", f"x{i:04}")
    platform = FakePlatform({f"x{i:04}": snapshot(f"x{i:04}") for i in range(2500)})
    sync = CampaignSync({"meta": factory(platform)})
    statements: list[tuple[str, int]] = []

    def seen(conn: Any, cursor: Any, sql: str, params: Any, context: Any, many: bool) -> None:
        if sql.lstrip().upper().startswith("UPDATE"):
            statements.append((sql, len(params) if many else 1))

    sa.event.listen(db.engine, "before_cursor_execute", seen)
    try:
        outcome, ctx = run_sync(db, sync)
    finally:
        sa.event.remove(db.engine, "before_cursor_execute", seen)

    assert platform.calls == [None]
    assert outcome.result is not None and outcome.result["updated"] == 2500
    # 2,500 rows in three executemany batches of at most 1,000, never one statement per row.
    assert [count for _, count in statements] == [1000, 1000, 500]
    assert all("known_campaigns" in sql for sql, _ in statements)
    assert [percent for percent, _ in ctx.progress_seen] == [100]
    with db.session() as session:
        synced = session.scalar(
            sa.select(sa.func.count()).where(KnownCampaign.synced_at.is_not(None))
        )
        assert synced == 2500


def test_one_call_serves_every_campaign_of_a_platform(db: Database) -> None:
    for i in range(100):
        publish(db, f"c{i:03}", f"x{i:03}")
    platform = FakePlatform({f"x{i:03}": snapshot(f"x{i:03}") for i in range(100)})

    run_sync(db, CampaignSync({"meta": factory(platform)}))

    [call] = platform.calls
    assert call is not None and len(call) == 100  # within the id filter's 100: asked by id


def test_events_are_keyed_by_campaign_and_carry_the_task(db: Database) -> None:
    publish(db, "c1", "x1")
    platform = FakePlatform({"x1": snapshot("x1")})

    outcome, _ = run_sync(db, CampaignSync({"meta": factory(platform)}))

    assert {(e.type, e.subject, e.taskid, e.source) for e in outcome.events} == {
        ("campaign.status_changed", "c1", "task-1", "adflux/sync"),
        ("campaign.metrics_updated", "c1", "task-1", "adflux/sync"),
    }


def test_a_platform_error_propagates_and_leaves_the_table_unchanged(db: Database) -> None:
    for i in range(3):
        publish(db, f"c{i}", f"x{i}")
    platform = FakePlatform({f"x{i}": snapshot(f"x{i}") for i in range(3)})
    platform.fail_on_call = 1
    sync = CampaignSync({"meta": factory(platform)})

    with pytest.raises(TransientPlatformError):
        run_sync(db, sync)

    with db.session() as session:
        row = session.get(KnownCampaign, "c0")
        assert row is not None and row.status is None and row.synced_at is None


def test_no_known_campaigns_answers_like_the_seed_without_building_the_adapter(
    db: Database,
) -> None:
    built: list[str] = []
    sync = CampaignSync({"meta": factory(FakePlatform(), built)})

    outcome, ctx = run_sync(db, sync)

    assert outcome.result == {
        "total": 0,
        "updated": 0,
        "failed": 0,
        "skipped": 0,
        "message": "no meta campaigns to sync",
    }
    assert outcome.events == [] and ctx.progress_seen == [] and built == []


def test_campaigns_without_external_id_are_skipped_without_a_platform_call(
    db: Database,
) -> None:
    publish(db, "c1", None)
    platform = FakePlatform()

    outcome, _ = run_sync(db, CampaignSync({"meta": factory(platform)}))

    assert outcome.result is not None and outcome.result["skipped"] == 1
    assert platform.calls == []


def test_an_unconfigured_platform_is_a_permanent_error(db: Database) -> None:
    with pytest.raises(PermanentError):
        run_sync(db, CampaignSync({"meta": factory(FakePlatform())}), "google")


def test_sync_of_one_platform_never_touches_the_other(db: Database) -> None:
    publish(db, "m1", "x1", "meta")
    publish(db, "g1", "123", "google")
    meta, google = FakePlatform({"x1": snapshot("x1")}), FakePlatform(name="google")
    built: list[str] = []

    outcome, _ = run_sync(
        db, CampaignSync({"meta": factory(meta), "google": factory(google, built)})
    )

    assert outcome.result is not None and outcome.result["total"] == 1
    assert google.calls == [] and built == []


def test_metrics_refresh_covers_both_platforms_without_status_events(db: Database) -> None:
    publish(db, "m1", "x1", "meta")
    publish(db, "g1", "123", "google")
    meta = FakePlatform({"x1": snapshot("x1", impressions=7)})
    google = FakePlatform({"123": snapshot("123", impressions=8)}, name="google")
    sync = CampaignSync({"meta": factory(meta), "google": factory(google)})
    command = MetricsRefreshRequested()
    with db.session() as session:
        ctx = FakeContext(session)
        outcome = sync.refresh_metrics(new_event(command, source="t", subject="all"), command, ctx)

    assert [e.type for e in outcome.events] == ["campaign.metrics_updated"] * 2
    metrics: list[CampaignMetricsUpdated] = of_type(outcome.events, "campaign.metrics_updated")
    assert {(m.platform, m.campaign_id, m.impressions) for m in metrics} == {
        ("meta", "m1", 7),
        ("google", "g1", 8),
    }
    assert meta.calls == [["x1"]] and google.calls == [["123"]]
    assert [percent for percent, _ in ctx.progress_seen] == [50, 100]  # across both platforms
    assert outcome.result is not None
    assert outcome.result["message"] == (
        "metrics refresh of meta and google done: 2 updated, 0 failed, 0 skipped"
    )
    with db.session() as session:
        row = session.get(KnownCampaign, "m1")
        assert row is not None and row.status is None  # a refresh leaves statuses to sync


def test_metrics_refresh_of_one_platform(db: Database) -> None:
    publish(db, "m1", "x1", "meta")
    publish(db, "g1", "123", "google")
    meta, google = FakePlatform({"x1": snapshot("x1")}), FakePlatform(name="google")
    sync = CampaignSync({"meta": factory(meta), "google": factory(google)})
    command = MetricsRefreshRequested(platform="google")
    with db.session() as session:
        outcome = sync.refresh_metrics(
            new_event(command, source="t", subject="google"), command, FakeContext(session)
        )
    assert meta.calls == [] and google.calls == [["123"]]
    assert outcome.result is not None and (outcome.result["total"], outcome.result["failed"]) == (
        1,
        1,
    )


def test_a_late_older_published_fact_does_not_undo_a_newer_one(db: Database) -> None:
    now = datetime.now(UTC)
    publish(db, "c1", "x-new", published_at=now)
    publish(db, "c1", "x-old", published_at=now - timedelta(minutes=5))
    publish(db, "c1", None, published_at=now + timedelta(minutes=1))  # no campaign id: keep it
    with db.session() as session:
        row = session.get(KnownCampaign, "c1")
        assert row is not None and row.external_id == "x-new"
