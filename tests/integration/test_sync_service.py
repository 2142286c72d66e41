"""The sync service, wired as `python -m services.sync` wires it, against the real broker and
PostgreSQL: it learns campaigns from `campaign.published`, and `campaign.sync` /
`metrics.refresh` tasks emit change events and report their result on `task.status`.
The ad platforms are an in-memory fake here, and the sandbox in the last tests."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Literal

import pytest
import sqlalchemy as sa

from adplatforms.base import (
    AdPlatform,
    CampaignSpec,
    JobOpening,
    PermanentPlatformError,
)
from adplatforms.google import GoogleAdsPlatform
from adplatforms.meta import MetaAdsPlatform
from infra.waiting import wait_for
from services.sync.__main__ import compose
from services.sync.models import KnownCampaign, metadata
from services.sync.settings import SyncSettings
from shared.envelope import new_event
from shared.events import (
    CampaignMetricsUpdated,
    CampaignPublished,
    CampaignStatusChanged,
    Command,
    MetricsRefreshRequested,
    SyncRequested,
    TaskOptions,
    TaskState,
    TaskStatus,
)
from shared.service import ServiceKit, Worker, build_kit
from tests.conftest import Sandbox
from tests.support.journal import MemoryJournal
from tests.support.kafka import EventCollector, read_events
from tests.unit.test_sync_handlers import FakePlatform, snapshot

pytestmark = pytest.mark.integration

PlatformName = Literal["meta", "google"]


@pytest.fixture
def settings(
    service_settings: dict[str, Any],
) -> SyncSettings:
    return SyncSettings(**service_settings)


@pytest.fixture
def kit(settings: SyncSettings) -> Iterator[ServiceKit]:
    """The service's clients on this test's topics (created and deleted by `names`)."""
    service_kit = build_kit("sync", settings, metadata)
    yield service_kit
    service_kit.producer.close()
    service_kit.db.dispose()


@pytest.fixture
def fakes() -> dict[str, FakePlatform]:
    return {"meta": FakePlatform(), "google": FakePlatform(name="google")}


def start(service: Worker) -> Worker:
    for component in service.components:
        component.start()
    assert service.runtime.assigned.wait(30)
    return service


def stop(service: Worker) -> None:
    for component in reversed(service.components):
        component.stop()


@pytest.fixture
def sync(
    kit: ServiceKit, settings: SyncSettings, fakes: dict[str, FakePlatform]
) -> Iterator[Worker]:
    def factory(platform: FakePlatform) -> Callable[[], AdPlatform]:
        return lambda: platform

    service = start(compose(kit, settings, {name: factory(p) for name, p in fakes.items()}))
    yield service
    stop(service)


def published(
    kit: ServiceKit, campaign_id: str, external_id: str | None, platform: PlatformName = "meta"
) -> None:
    payload = CampaignPublished(
        campaign_id=campaign_id,
        platform=platform,
        external_ids={"campaign": external_id} if external_id else {},
        published_at=datetime.now(UTC),
    )
    envelope = new_event(payload, source="publisher", subject=campaign_id)
    kit.producer.send(kit.names.topic("campaign.published"), envelope)


def wait_known(kit: ServiceKit, count: int) -> None:
    """`campaign.published` and the sync command travel on different topics: wait until the
    service has learned the campaigns before asking it to sync them."""

    def known() -> bool:
        with kit.db.session() as session:
            return session.scalar(sa.select(sa.func.count()).select_from(KnownCampaign)) == count

    wait_for(known, 30, 0.05, f"{count} known campaigns")


def request(kit: ServiceKit, command: Command, subject: str) -> str:
    task_id = str(uuid.uuid4())
    envelope = new_event(command, source="test", subject=subject, taskid=task_id)
    kit.producer.send(kit.names.topic(envelope.type), envelope)
    return task_id


def test_sync_emits_status_and_metrics_events_and_reports_the_seed_result(
    kit: ServiceKit,
    sync: Worker,
    fakes: dict[str, FakePlatform],
    sync_events: EventCollector,
    kafka_bootstrap: str,
) -> None:
    fakes["meta"].snapshots = {"x1": snapshot("x1", impressions=42)}
    published(kit, "c1", "x1")
    published(kit, "c2", "x2")  # deleted on the platform since: failed
    published(kit, "c3", None)  # never got a campaign id: skipped
    wait_known(kit, 3)

    task_id = request(kit, SyncRequested(platform="meta"), "meta")

    done = sync_events.wait_state(task_id, TaskState.SUCCESS)
    assert done.name == "campaign.sync" and done.result == {
        "total": 3,
        "updated": 1,
        "failed": 1,
        "skipped": 1,
        "message": "sync of meta done: 1 updated, 1 failed, 1 skipped",
    }
    assert fakes["meta"].calls == [["x1", "x2"]]
    changed = read_events(kafka_bootstrap, kit.names.topic("campaign.status_changed"))
    metrics = read_events(kafka_bootstrap, kit.names.topic("campaign.metrics_updated"))
    assert [(e.subject, e.taskid) for e in changed + metrics] == [("c1", task_id)] * 2
    status = changed[0].payload()
    assert isinstance(status, CampaignStatusChanged)
    assert (status.external_id, status.previous_status, status.status) == ("x1", None, "active")
    first = metrics[0].payload()
    assert isinstance(first, CampaignMetricsUpdated) and first.impressions == 42
    states = [s.state for s in sync_events.statuses(task_id)]
    assert states[0] is TaskState.STARTED and TaskState.PROGRESS in states

    # Paused on the platform: the next sync reports the change with the previous status.
    fakes["meta"].snapshots["x1"] = snapshot("x1", status="paused", impressions=50)
    again = request(kit, SyncRequested(platform="meta"), "meta")
    sync_events.wait_state(again, TaskState.SUCCESS)
    assert [
        (c.campaign_id, c.previous_status, c.status)
        for c in sync_events.of_task("campaign.status_changed", again, 1)
    ] == [("c1", "active", "paused")]
    assert [m.impressions for m in sync_events.of_task("campaign.metrics_updated", again, 1)] == [
        50
    ]
    with kit.db.session() as session:
        row = session.get(KnownCampaign, "c1")
        assert row is not None and (row.status, row.impressions) == ("paused", 50)


def test_metrics_refresh_covers_both_platforms(
    kit: ServiceKit, sync: Worker, fakes: dict[str, FakePlatform], sync_events: EventCollector
) -> None:
    fakes["meta"].snapshots = {"x1": snapshot("x1", impressions=5)}
    fakes["google"].snapshots = {"901": snapshot("901", impressions=6)}
    published(kit, "m1", "x1", "meta")
    published(kit, "g1", "901", "google")
    wait_known(kit, 2)

    task_id = request(kit, MetricsRefreshRequested(), "all")

    done = sync_events.wait_state(task_id, TaskState.SUCCESS)
    assert done.name == "metrics.refresh" and done.result is not None
    assert (done.result["total"], done.result["updated"]) == (2, 2)
    metrics = sync_events.of_task("campaign.metrics_updated", task_id, 2)
    assert {(m.platform, m.campaign_id, m.impressions) for m in metrics} == {
        ("meta", "m1", 5),
        ("google", "g1", 6),
    }
    assert sync_events.of_task("campaign.status_changed", task_id) == []


def test_a_transient_platform_error_retries_the_sync_through_a_tier(
    kit: ServiceKit, sync: Worker, fakes: dict[str, FakePlatform], sync_events: EventCollector
) -> None:
    fakes["meta"].snapshots = {"x1": snapshot("x1")}
    fakes["meta"].fail_on_call = 1
    published(kit, "c1", "x1")
    wait_known(kit, 1)

    quick = TaskOptions(retry_delay=1)  # the 1 s test tier
    task_id = request(kit, SyncRequested(platform="meta", options=quick), "meta")

    retry = sync_events.wait_state(task_id, TaskState.RETRY)
    assert retry.next_attempt_at is not None
    done = sync_events.wait_state(task_id, TaskState.SUCCESS)
    assert done.attempt == 2 and done.result is not None and done.result["updated"] == 1
    assert len(fakes["meta"].calls) == 2
    # The failed attempt emitted nothing: one metrics event, from the successful one.
    assert len(sync_events.of_task("campaign.metrics_updated", task_id, 1)) == 1


def test_a_permanent_platform_error_fails_the_sync_and_dead_letters_it(
    kit: ServiceKit,
    sync: Worker,
    fakes: dict[str, FakePlatform],
    sync_events: EventCollector,
    kafka_bootstrap: str,
) -> None:
    fakes["meta"].fail_on_call = 1
    fakes["meta"].error = PermanentPlatformError("token expired", code=190)
    published(kit, "c1", "x1")
    wait_known(kit, 1)

    task_id = request(kit, SyncRequested(platform="meta"), "meta")

    failed = sync_events.wait_state(task_id, TaskState.FAILURE)
    assert failed.error is not None and "token expired" in failed.error.message
    dead = read_events(kafka_bootstrap, kit.names.dlq("campaign.sync_requested"))
    assert [e.taskid for e in dead] == [task_id]
    with kit.db.session() as session:
        row = session.get(KnownCampaign, "c1")
        assert row is not None and row.status is None and row.synced_at is None


# --- against the ad-platform sandbox -------------------------------------------------------


def spec(campaign_id: str) -> CampaignSpec:
    job = JobOpening(
        "Night Nurse", "Night shifts", "Hospital Central", "Madrid", "https://jobs.example.org/1"
    )
    return CampaignSpec(
        campaign_id, "Nurses Madrid", Decimal("25.50"), "EUR", job, {"countries": ["ES"]}
    )


@pytest.fixture
def sandbox_sync(
    kit: ServiceKit, settings: SyncSettings, sandbox: Sandbox
) -> Iterator[tuple[Worker, SyncSettings]]:
    """The service with its real adapters (`platform_factories`) pointed at the sandbox."""
    pointed = settings.model_copy(
        update={"meta_graph_url": sandbox.graph_url, "google_ads_endpoint": sandbox.google_endpoint}
    )
    service = start(compose(kit, pointed))
    yield service, pointed
    stop(service)


def test_sync_against_the_sandbox_sees_the_metrics_grow(
    kit: ServiceKit,
    sandbox_sync: tuple[Worker, SyncSettings],
    sandbox: Sandbox,
    sync_events: EventCollector,
) -> None:
    _, settings = sandbox_sync
    ids = MetaAdsPlatform(settings).create_campaign_flow(spec("c-meta"), MemoryJournal())
    published(kit, "c-meta", ids["campaign"])
    wait_known(kit, 1)

    def sync_once() -> tuple[TaskStatus, CampaignMetricsUpdated]:
        task_id = request(kit, SyncRequested(platform="meta"), "meta")
        done = sync_events.wait_state(task_id, TaskState.SUCCESS)
        [metrics] = sync_events.of_task("campaign.metrics_updated", task_id, 1)
        return done, metrics

    done, first = sync_once()
    assert done.result is not None and (done.result["updated"], done.result["failed"]) == (1, 0)
    [changed] = sync_events.of_task("campaign.status_changed", done.task_id, 1)
    assert (changed.campaign_id, changed.external_id, changed.status) == (
        "c-meta",
        ids["campaign"],
        "active",
    )

    def grown_metrics() -> CampaignMetricsUpdated | None:
        metrics = sync_once()[1]
        return metrics if metrics.impressions > first.impressions else None

    grown = wait_for(
        grown_metrics,
        30,
        0.5,
        "impressions to grow between syncs",
    )
    assert grown.clicks >= first.clicks and grown.spend >= first.spend
    assert len(sync_events.of("campaign.status_changed")) == 1  # still active: no new change


def test_metrics_refresh_against_the_sandbox_reads_both_platforms(
    kit: ServiceKit,
    sandbox_sync: tuple[Worker, SyncSettings],
    sandbox: Sandbox,
    sync_events: EventCollector,
) -> None:
    _, settings = sandbox_sync
    meta_ids = MetaAdsPlatform(settings).create_campaign_flow(spec("c-meta"), MemoryJournal())
    google_ids = GoogleAdsPlatform(settings).create_campaign_flow(spec("c-google"), MemoryJournal())
    published(kit, "c-meta", meta_ids["campaign"], "meta")
    published(kit, "c-google", google_ids["campaign"], "google")
    published(kit, "c-gone", "999999999", "google")  # not on the platform
    wait_known(kit, 3)

    task_id = request(kit, MetricsRefreshRequested(), "all")

    done = sync_events.wait_state(task_id, TaskState.SUCCESS)
    assert done.result is not None
    assert {k: done.result[k] for k in ("total", "updated", "failed", "skipped")} == {
        "total": 3,
        "updated": 2,
        "failed": 1,
        "skipped": 0,
    }
    metrics = sync_events.of_task("campaign.metrics_updated", task_id, 2)
    assert {(m.platform, m.campaign_id, m.external_id) for m in metrics} == {
        ("meta", "c-meta", meta_ids["campaign"]),
        ("google", "c-google", google_ids["campaign"]),
    }
