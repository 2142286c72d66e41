"""What the sync service does on each event: remember published campaigns, and sync their
status and metrics from the platforms (seed: sync_meta_campaigns, sync_google_campaigns,
update_all_campaign_metrics), emitting a change event for each difference."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from adplatforms.base import CampaignSnapshot
from adplatforms.registry import PlatformFactory
from services.sync.models import KnownCampaign
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
from shared.runtime import HandlerContext, HandlerOutcome

SOURCE = "sync"
PLATFORMS: tuple[Platform, ...] = ("meta", "google")

# Built once (every sync and refresh runs it): a platform's known campaigns.
_KNOWN_OF_PLATFORM = (
    sa.select(KnownCampaign.campaign_id, KnownCampaign.external_id, KnownCampaign.status)
    .where(KnownCampaign.platform == sa.bindparam("platform"))
    .order_by(KnownCampaign.campaign_id)
)


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
    elif row.published_at > event.published_at:
        return  # an older fact arriving late (a replayed record) must not undo a newer one
    row.platform = event.platform
    row.external_id = event.external_ids.get("campaign") or row.external_id
    row.published_at = event.published_at


@dataclass
class _Tally:
    total: int = 0
    updated: int = 0
    failed: int = 0
    skipped: int = 0

    def result(self, message: str) -> dict[str, Any]:
        return {
            "total": self.total,
            "updated": self.updated,
            "failed": self.failed,
            "skipped": self.skipped,
            "message": message,
        }


class CampaignSync:
    """Fetches the status and metrics of every known campaign of a platform in one read —
    the account's whole campaign list (one `SearchStream` on Google, pages of
    `SYNC_PAGE_LIMIT` on Meta) or, for up to `id_filter_max` campaigns, just those ids — and
    reports what changed, writing the sync table in batches of `WRITE_BATCH` rows."""

    WRITE_BATCH = 1000

    def __init__(self, platforms: Mapping[str, PlatformFactory], id_filter_max: int = 100) -> None:
        if id_filter_max < 0:
            raise ValueError("id_filter_max must be 0 or more")
        self.platforms = platforms
        self.id_filter_max = id_filter_max

    def sync(
        self, envelope: Envelope, command: SyncRequested, ctx: HandlerContext
    ) -> HandlerOutcome:
        """`campaign.sync`: status and metrics of one platform's campaigns."""
        return self._run(envelope, [command.platform], ctx, statuses=True)

    def refresh_metrics(
        self, envelope: Envelope, command: MetricsRefreshRequested, ctx: HandlerContext
    ) -> HandlerOutcome:
        """`metrics.refresh`: metrics of one platform's campaigns, or of both."""
        platforms = [command.platform] if command.platform else list(PLATFORMS)
        return self._run(envelope, platforms, ctx, statuses=False)

    def _run(
        self,
        envelope: Envelope,
        platforms: Sequence[Platform],
        ctx: HandlerContext,
        *,
        statuses: bool,
    ) -> HandlerOutcome:
        session = _session(ctx)
        for platform in platforms:
            if platform not in self.platforms:
                raise PermanentError(f"platform {platform!r} is not configured")
        tally = _Tally()
        work: list[tuple[Platform, list[_Known]]] = []
        for platform in platforms:
            rows = [
                _Known(*row) for row in session.execute(_KNOWN_OF_PLATFORM, {"platform": platform})
            ]
            syncable = [r for r in rows if r.external_id]
            tally.total += len(rows)
            tally.skipped += len(rows) - len(syncable)
            work.append((platform, syncable))

        to_fetch = sum(len(rows) for _, rows in work)
        fetched = 0
        events: list[Envelope] = []
        for platform, rows in work:
            if not rows:
                continue  # the adapter is not even built: a Meta-only install never loads Google
            ctx.check_cancelled()
            adapter = self.platforms[platform]()
            ids = [r.external_id or "" for r in rows]
            wanted = ids if len(ids) <= self.id_filter_max else None  # None: the whole account
            found = {s.external_id: s for s in adapter.fetch_statuses_and_metrics(wanted)}
            now = datetime.now(UTC)
            changes: list[dict[str, Any]] = []
            for row in rows:
                snapshot = found.get(row.external_id or "")
                if snapshot is None:
                    tally.failed += 1  # deleted on the platform, or not visible to us
                    continue
                events += _report(envelope, platform, row, snapshot, now, statuses=statuses)
                changes.append(_change(row, snapshot, now, statuses=statuses))
                tally.updated += 1
            for start in range(0, len(changes), self.WRITE_BATCH):
                ctx.check_cancelled()
                # ORM bulk UPDATE by primary key: one executemany per batch, no row objects.
                session.execute(sa.update(KnownCampaign), changes[start : start + self.WRITE_BATCH])
            fetched += len(rows)
            ctx.progress(
                100 * fetched // to_fetch,
                {"platform": platform, "done": fetched, "of": to_fetch},
            )
        return HandlerOutcome(
            result=tally.result(_message(platforms, tally, statuses)), events=events
        )


@dataclass(frozen=True)
class _Known:
    campaign_id: str
    external_id: str | None
    status: str | None


def _message(platforms: Sequence[Platform], tally: _Tally, statuses: bool) -> str:
    which = " and ".join(platforms)
    if tally.total == 0:
        return f"no {which} campaigns to sync"
    what = "sync" if statuses else "metrics refresh"
    return (
        f"{what} of {which} done: {tally.updated} updated, "
        f"{tally.failed} failed, {tally.skipped} skipped"
    )


def _report(
    envelope: Envelope,
    platform: Platform,
    row: _Known,
    snapshot: CampaignSnapshot,
    now: datetime,
    *,
    statuses: bool,
) -> list[Envelope]:
    """The events that report the platform's snapshot: a status change only if there is one,
    the metrics always."""
    events: list[Envelope] = []
    if statuses and snapshot.status != row.status:
        changed = CampaignStatusChanged(
            campaign_id=row.campaign_id,
            platform=platform,
            external_id=snapshot.external_id,
            status=snapshot.status,
            previous_status=row.status,
        )
        events.append(caused_by(envelope, changed, source=SOURCE, subject=row.campaign_id))
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
    return events


def _change(
    row: _Known, snapshot: CampaignSnapshot, now: datetime, *, statuses: bool
) -> dict[str, Any]:
    """The `known_campaigns` row's new values (a bulk UPDATE parameter set)."""
    change: dict[str, Any] = {
        "campaign_id": row.campaign_id,
        "impressions": snapshot.impressions,
        "clicks": snapshot.clicks,
        "spend": snapshot.spend,
        "conversions": snapshot.conversions,
        "synced_at": now,
    }
    if statuses:
        change["status"] = snapshot.status
    return change
