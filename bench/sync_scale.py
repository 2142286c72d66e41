"""Sync at 10,000 campaigns per platform (issue #11): the sandbox, sync and gateway as
processes, each platform seeded with 10,000 campaigns (the sandbox, the sync service's
`known_campaigns`, the gateway's `campaigns`); one `campaign.sync` per platform, timed until
the gateway has projected every campaign's metrics. Platform calls per platform come from the
sandbox's own request counts."""

from __future__ import annotations

import math
import time
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import httpx
import sqlalchemy as sa
from confluent_kafka import Consumer, TopicPartition

from bench import adflux_stack
from bench.report import Figure, Section
from bench.status_watch import StatusWatch
from services.gateway.models import Campaign, Job
from services.sync.seeding import seed_known_campaigns, seeded_campaign_id
from shared.db import Database
from shared.envelope import new_event
from shared.events import Platform, SyncRequested
from shared.producer import EventProducer
from shared.settings import PlatformSettings

CAMPAIGNS = 10_000  # per platform
PAUSED_EVERY = 50  # one seeded campaign in 50 is paused on the platform: 200 status changes
TIMEOUT = 300.0
PLATFORMS: tuple[Platform, ...] = ("meta", "google")
SEED_JOB = "seed-job"


def seed_platform(
    sandbox_url: str, platform: Platform, count: int, paused_every: int = PAUSED_EVERY
) -> list[str]:
    """`count` campaigns on the sandbox's account (Meta) or customer (Google) that AdFlux's
    default settings use; their platform ids."""
    defaults = PlatformSettings()
    owner = defaults.meta_ad_account_id if platform == "meta" else defaults.google_ads_customer_id
    answer = httpx.post(
        f"{sandbox_url}/_sandbox/seed",
        json={"platform": platform, "owner": owner, "count": count, "paused_every": paused_every},
        timeout=120,
    )
    answer.raise_for_status()
    return list(answer.json()["external_ids"])


def seed_gateway_campaigns(db: Database, platform: Platform, external_ids: Sequence[str]) -> None:
    """The gateway's `campaigns` rows of seeded campaigns (active, with their platform id), as
    a publish would have left them, inserted in batches."""
    now = datetime.now(UTC)
    with db.session() as session:
        if session.get(Job, SEED_JOB) is None:
            session.add(Job(id=SEED_JOB, title="Seeded", company="AdFlux", url="https://x.test"))
            session.flush()
        rows = [
            {
                "id": seeded_campaign_id(platform, external_id),
                "name": f"Seeded {platform} {external_id}",
                "platform": platform,
                "job_id": SEED_JOB,
                "daily_budget": Decimal("10.00"),
                "currency": "EUR",
                "targeting": {},
                "status": "active",
                "external_ids": {"campaign": external_id},
                "created_at": now,
                "updated_at": now,
            }
            for external_id in external_ids
        ]
        for start in range(0, len(rows), 1000):
            session.execute(sa.insert(Campaign), rows[start : start + 1000])


def records_on(bootstrap: str, topic: str) -> int:
    """Records on a fresh topic: the sum of its partitions' high watermarks."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"bench-{uuid.uuid4().hex}"})
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        return sum(
            consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
            for p in partitions
        )
    finally:
        consumer.close()


def projected(db: Database, since: datetime) -> int:
    """Gateway campaigns whose metrics were projected after `since`."""
    with db.session() as session:
        return int(
            session.scalar(
                sa.select(sa.func.count())
                .select_from(Campaign)
                .where(Campaign.metrics.is_not(None), Campaign.updated_at >= since)
            )
            or 0
        )


def run(bootstrap: str, database_url: str) -> Section:
    with adflux_stack.running(("sandbox", "sync", "gateway"), bootstrap, database_url) as stack:
        url, data_dir = stack.env["ADFLUX_DATABASE_URL"], stack.env["ADFLUX_DATA_DIR"]
        sync_db, gateway_db = Database(url, "sync", data_dir), Database(url, "gateway", data_dir)
        producer = EventProducer(bootstrap, "bench")
        watch = StatusWatch(bootstrap, f"{stack.prefix}task.status")
        try:
            for platform in PLATFORMS:
                ids = seed_platform(stack.sandbox, platform, CAMPAIGNS)
                seed_known_campaigns(sync_db, platform, ids, dict.fromkeys(ids, "active"))
                seed_gateway_campaigns(gateway_db, platform, ids)
            before = _calls(stack.sandbox)
            since = datetime.now(UTC)
            started = time.perf_counter()
            commands = {
                platform: new_event(
                    SyncRequested(platform=platform),
                    source="bench",
                    subject=platform,
                    taskid=str(uuid.uuid4()),
                )
                for platform in PLATFORMS
            }
            producer.send_envelopes(
                [(f"{stack.prefix}campaign.sync_requested", e) for e in commands.values()]
            )
            task_ids = [str(e.taskid) for e in commands.values()]
            if watch.wait(task_ids, lambda t: watch.first(t, "SUCCESS") is not None, TIMEOUT):
                failed = [t for t in task_ids if watch.first(t, "FAILURE")]
                raise TimeoutError(f"sync tasks not SUCCESS in {TIMEOUT} s (failed: {failed})")
            synced = max(seen[0] for t in task_ids if (seen := watch.first(t, "SUCCESS")))
            deadline = time.monotonic() + TIMEOUT
            while (count := projected(gateway_db, since)) < CAMPAIGNS * len(PLATFORMS):
                if time.monotonic() > deadline:
                    raise TimeoutError(f"the gateway projected {count} campaigns' metrics")
                time.sleep(0.2)  # a count of 20,000 rows: not so often that it slows the writer
            finished = time.perf_counter()
            calls = {p: n - before[p] for p, n in _calls(stack.sandbox).items()}
            results = {p: _result(watch, str(e.taskid)) for p, e in commands.items()}
            changes = records_on(bootstrap, f"{stack.prefix}campaign.status_changed")
            metric_events = records_on(bootstrap, f"{stack.prefix}campaign.metrics_updated")
        finally:
            watch.close()
            producer.close()
            sync_db.dispose()
            gateway_db.dispose()
    per_call = math.ceil(CAMPAIGNS / 500)
    return Section(
        f"sync of {CAMPAIGNS:,} campaigns per platform, sandbox at zero latency",
        figures=[
            Figure("Meta calls", calls["meta"], "calls", at_most=per_call),
            Figure("Google calls", calls["google"], "calls", at_most=per_call),
            Figure("wall time, both platforms, projected", finished - started, "s", at_most=30),
            Figure("of which until both syncs SUCCESS", synced - started, "s"),
            Figure("campaign.metrics_updated emitted", metric_events, "events"),
            Figure("campaign.status_changed emitted", changes, "events"),
        ],
        notes=[
            f"sandbox, sync and gateway as processes; {CAMPAIGNS:,} campaigns per platform "
            f"seeded in the sandbox (1 in {PAUSED_EVERY} paused), in sync's known_campaigns "
            "(all last seen active) and in the gateway's campaigns",
            "one campaign.sync per platform, produced together; wall time until the gateway "
            "has projected every campaign's metrics",
            "sync results: "
            + "; ".join(f"{p} {results[p]}" for p in PLATFORMS)
            + f"; expected status changes: {2 * (CAMPAIGNS // PAUSED_EVERY)}",
            "database: " + ("PostgreSQL" if database_url else "SQLite (embedded default)"),
        ],
    )


def _calls(sandbox_url: str) -> dict[str, int]:
    stats = httpx.get(f"{sandbox_url}/_sandbox/stats", timeout=10).json()
    return {p: int(stats["requests_by_platform"].get(p, 0)) for p in PLATFORMS}


def _result(watch: StatusWatch, task_id: str) -> dict[str, Any]:
    seen = watch.first(task_id, "SUCCESS")
    result = seen[1].get("result") if seen else None
    if not isinstance(result, dict):
        return {}
    return {k: result[k] for k in ("updated", "failed", "skipped") if k in result}
