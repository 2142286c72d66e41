"""Bulk seeding of the sync service's `known_campaigns`, for scale tests and benchmarks: what
`campaign.published` would have taught it about campaigns made straight on a platform (e.g.
by the sandbox's `POST /_sandbox/seed`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime

import sqlalchemy as sa

from services.sync.models import KnownCampaign
from shared.db import Database
from shared.events import Platform

INSERT_BATCH = 1000


def seeded_campaign_id(platform: Platform, external_id: str) -> str:
    """AdFlux's id for a seeded campaign: stable, so the gateway's rows can be seeded alike."""
    return f"seed-{platform}-{external_id}"


def seed_known_campaigns(
    db: Database,
    platform: Platform,
    external_ids: Sequence[str],
    statuses: Mapping[str, str] | None = None,
) -> list[str]:
    """Insert one known campaign per platform id (`statuses`: the status sync last saw, by
    platform id; none by default) in batches; their AdFlux ids, in order."""
    now = datetime.now(UTC)
    known = statuses or {}
    rows = [
        {
            "campaign_id": seeded_campaign_id(platform, external_id),
            "platform": platform,
            "external_id": external_id,
            "status": known.get(external_id),
            "published_at": now,
        }
        for external_id in external_ids
    ]
    with db.session() as session:
        for start in range(0, len(rows), INSERT_BATCH):
            session.execute(sa.insert(KnownCampaign), rows[start : start + INSERT_BATCH])
    return [str(row["campaign_id"]) for row in rows]
