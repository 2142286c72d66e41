"""What the sync service does on each event: remember published campaigns, and sync their
status and metrics from the platforms (seed: sync_meta_campaigns, sync_google_campaigns,
update_all_campaign_metrics), emitting a change event for each difference."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime

import sqlalchemy as sa
from sqlalchemy.orm import Session

from services.publisher.platforms.base import CampaignSnapshot
from services.publisher.platforms.registry import PlatformFactory
from services.sync.models import KnownCampaign
from shared.consumer import HandlerContext, HandlerOutcome
from shared.envelope import Envelope, caused_by
from shared.events import (
    CampaignMetricsUpdated,
    CampaignPublished,
    CampaignStatusChanged,
    MetricsRefreshRequested,
    Platform,
    SyncRequested,
)
from shared.retry import PermanentError

SOURCE = "sync"


def _session(ctx: HandlerContext) -> Session:
    assert ctx.session is not None, "sync handlers run with a database session"
    return ctx.session


def remember_published(envelope: Envelope, event: CampaignPublished, ctx: HandlerContext) -> None:
    """Event-carried state: the campaign ids sync needs, from the publisher's fact."""
    session = _session(ctx)
    row = session.get(KnownCampaign, event.campaign_id)
    if row is None:
        row = KnownCampaign(campaign_id=event.campaign_id, platform=event.platform)
        session.add(row)
    row.external_id = event.external_ids.get("campaign")
    row.published_at = event.published_at


class CampaignSync:
    """Fetches every known campaign of a platform in batches and reports what changed."""

    def __init__(self, platforms: Mapping[str, PlatformFactory], batch_size: int = 100) -> None:
        self.platforms = platforms
        self.batch_size = batch_size

    def sync(
        self, envelope: Envelope, command: SyncRequested, ctx: HandlerContext
    ) -> HandlerOutcome:
        """`campaign.sync`: status and metrics of one platform's campaigns."""
        return self._run(envelope, [command.platform], ctx, statuses=True)

    def refresh_metrics(
        self, envelope: Envelope, command: MetricsRefreshRequested, ctx: HandlerContext
    ) -> HandlerOutcome:
        """`metrics.refresh`: metrics of one platform's campaigns, or of both."""
        platforms: list[Platform] = [command.platform] if command.platform else ["meta", "google"]
        return self._run(envelope, platforms, ctx, statuses=False)

    def _run(
        self, envelope: Envelope, platforms: list[Platform], ctx: HandlerContext, *, statuses: bool
    ) -> HandlerOutcome:
        session = _session(ctx)
        totals = {"total": 0, "updated": 0, "failed": 0, "skipped": 0}
        events: list[Envelope] = []
        for platform in platforms:
            factory = self.platforms.get(platform)
            if factory is None:
                raise PermanentError(f"platform {platform!r} is not configured")
            rows = session.scalars(
                sa.select(KnownCampaign)
                .where(KnownCampaign.platform == platform)
                .order_by(KnownCampaign.campaign_id)
            ).all()
            totals["total"] += len(rows)
            syncable = [r for r in rows if r.external_id]
            totals["skipped"] += len(rows) - len(syncable)
            if not syncable:
                continue
            adapter = factory()
            for start in range(0, len(syncable), self.batch_size):
                ctx.check_cancelled()
                batch = syncable[start : start + self.batch_size]
                found = {
                    s.external_id: s
                    for s in adapter.fetch_statuses_and_metrics(
                        [r.external_id or "" for r in batch]
                    )
                }
                for row in batch:
                    snapshot = found.get(row.external_id or "")
                    if snapshot is None:
                        totals["failed"] += 1
                        continue
                    events += self._apply(envelope, row, snapshot, statuses=statuses)
                    totals["updated"] += 1
                ctx.progress(int(100 * min(start + self.batch_size, len(syncable)) / len(syncable)))
        what = "sync" if statuses else "metrics refresh"
        message = (
            f"{what} of {', '.join(platforms)} done: {totals['updated']} updated, "
            f"{totals['failed']} failed, {totals['skipped']} skipped"
        )
        return HandlerOutcome(result={**totals, "message": message}, events=events)

    @staticmethod
    def _apply(
        envelope: Envelope, row: KnownCampaign, snapshot: CampaignSnapshot, *, statuses: bool
    ) -> list[Envelope]:
        events: list[Envelope] = []
        platform: Platform = "meta" if row.platform == "meta" else "google"
        if statuses and snapshot.status != row.status:
            changed = CampaignStatusChanged(
                campaign_id=row.campaign_id,
                platform=platform,
                external_id=snapshot.external_id,
                status=snapshot.status,
                previous_status=row.status,
            )
            events.append(caused_by(envelope, changed, source=SOURCE, subject=row.campaign_id))
            row.status = snapshot.status
        now = datetime.now(UTC)
        metrics = CampaignMetricsUpdated(
            campaign_id=row.campaign_id,
            platform=platform,
            external_id=snapshot.external_id,
            impressions=snapshot.impressions,
            clicks=snapshot.clicks,
            spend=snapshot.spend,
            conversions=snapshot.conversions,
            as_of=now,
        )
        events.append(caused_by(envelope, metrics, source=SOURCE, subject=row.campaign_id))
        row.impressions, row.clicks = snapshot.impressions, snapshot.clicks
        row.spend, row.conversions = snapshot.spend, snapshot.conversions
        row.synced_at = now
        return events
