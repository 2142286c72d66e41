"""The gateway's campaign projection on a real (SQLite, migrated) database: status changes and
metrics buffered per transaction and written in bulk at commit, with the same rules as row by
row — drafts and publishes left alone, the last event of a campaign wins, nothing written on
rollback, and a publish in the same transaction applied in order."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session

from services.gateway.models import Campaign, Job
from services.gateway.projections import CampaignProjection
from shared.db import Database
from shared.envelope import new_event
from shared.events import (
    CampaignMetricsUpdated,
    CampaignPublished,
    CampaignStatusChanged,
    Payload,
)
from shared.runtime import HandlerContext


class SessionOnly(HandlerContext):
    def __init__(self, session: Session) -> None:
        self.session = session


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    database = Database("", "gateway", str(tmp_path))
    database.migrate()
    with database.session() as session:
        session.add(Job(id="j", title="Nurse", company="H", url="https://jobs.example.org/1"))
        session.flush()
        for campaign_id, status in [("a", "active"), ("b", "active"), ("d", "draft")]:
            session.add(
                Campaign(
                    id=campaign_id,
                    name=campaign_id,
                    platform="meta",
                    job_id="j",
                    daily_budget=Decimal("10"),
                    currency="EUR",
                    status=status,
                    external_ids={"campaign": f"x-{campaign_id}"},
                )
            )
    yield database
    database.dispose()


def metrics(campaign_id: str | None, impressions: int, external_id: str = "") -> Any:
    return CampaignMetricsUpdated(
        campaign_id=campaign_id,
        platform="meta",
        external_id=external_id or f"x-{campaign_id}",
        impressions=impressions,
        clicks=1,
        spend=Decimal("0.5"),
        conversions=0.0,
        as_of=datetime.now(UTC),
    )


def status(campaign_id: str, new: str, previous: str = "active") -> CampaignStatusChanged:
    return CampaignStatusChanged(
        campaign_id=campaign_id,
        platform="meta",
        external_id=f"x-{campaign_id}",
        status=new,
        previous_status=previous,
    )


def project(session: Session, *events: Payload) -> None:
    projection = CampaignProjection()
    handlers: dict[type, Any] = {
        CampaignMetricsUpdated: projection.metrics_updated,
        CampaignStatusChanged: projection.status_changed,
        CampaignPublished: projection.published,
    }
    for event in events:
        handlers[type(event)](
            new_event(event, source="t", subject="s"), event, SessionOnly(session)
        )


def rows(db: Database) -> dict[str, tuple[str, int | None]]:
    with db.session() as session:
        return {
            c.id: (c.status, (c.metrics or {}).get("impressions"))
            for c in session.scalars(sa.select(Campaign))
        }


def test_a_transaction_writes_its_metrics_and_statuses_in_two_bulk_statements(
    db: Database,
) -> None:
    updates: list[tuple[str, int]] = []

    def seen(conn: Any, cursor: Any, sql: str, params: Any, context: Any, many: bool) -> None:
        if sql.lstrip().upper().startswith("UPDATE"):
            updates.append((sql.split()[1], len(params) if many else 1))

    sa.event.listen(db.engine, "before_cursor_execute", seen)
    with db.session() as session:
        project(
            session,
            metrics("a", 1),
            metrics("b", 2),
            status("b", "paused"),
            metrics("a", 3),  # the last of a campaign wins
            metrics("gone", 9),  # no such campaign: nothing to update, no error
            status("d", "paused", previous="draft"),  # a draft is left alone
        )
        assert updates == []  # nothing written before the commit
    sa.event.remove(db.engine, "before_cursor_execute", seen)

    assert updates == [("campaigns", 2), ("campaigns", 3)]
    assert rows(db) == {"a": ("active", 3), "b": ("paused", 2), "d": ("draft", None)}


def test_an_event_without_campaign_id_is_found_by_its_platform_id(db: Database) -> None:
    with db.session() as session:
        project(session, metrics(None, 7, external_id="x-b"))
    assert rows(db)["b"] == ("active", 7)


def test_a_rolled_back_transaction_writes_nothing_and_leaves_nothing_pending(
    db: Database,
) -> None:
    with pytest.raises(RuntimeError), db.session() as session:
        project(session, metrics("a", 5), status("a", "paused"))
        raise RuntimeError("the handler after them failed")
    session = db.sessions()
    try:
        session.commit()  # the same kind of session, committed with nothing of its own
    finally:
        session.close()
    assert rows(db)["a"] == ("active", None)


def test_a_publish_in_the_same_transaction_keeps_the_events_order(db: Database) -> None:
    with db.session() as session:
        session.get_one(Campaign, "d").status = "publishing"
    with db.session() as session:
        # Paused while still publishing (left alone), then published: active.
        project(session, status("d", "paused"), published("d"))
    assert rows(db)["d"] == ("active", None)
    with db.session() as session:
        # Published again, then paused on the platform: paused.
        project(session, published("d"), status("d", "paused"))
    assert rows(db)["d"] == ("paused", None)


def published(campaign_id: str) -> CampaignPublished:
    return CampaignPublished(
        campaign_id=campaign_id,
        platform="meta",
        external_ids={"campaign": f"x-{campaign_id}"},
        published_at=datetime.now(UTC),
    )
