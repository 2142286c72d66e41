"""The publish step journal in the publisher's tables. An attempt is committed before its
platform call; a created id is committed together with the next attempt (or by `flush()`
when the flow ends), so each step costs one transaction. A crash between a create and that
commit leaves the step only "attempted", which the adapters resolve by finding the object by
its tag on the platform — never by creating it again."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import cast

import sqlalchemy as sa

from services.publisher.models import PublishStep
from shared.db import Database

STEPS = cast(sa.Table, PublishStep.__table__)


class DbStepJournal:
    """StepJournal of one campaign, backed by `publish_steps`."""

    def __init__(self, db: Database, campaign_id: str, platform: str) -> None:
        self.db = db
        self.campaign_id = campaign_id
        self.platform = platform
        self._attempted: set[str] = set()
        self._ids: dict[str, str] = {}
        self._unsaved: dict[str, tuple[str, datetime]] = {}
        with db.engine.connect() as conn:
            for row in conn.execute(
                sa.select(STEPS.c.step, STEPS.c.external_id).where(
                    STEPS.c.campaign_id == campaign_id
                )
            ):
                self._attempted.add(row.step)
                if row.external_id:
                    self._ids[row.step] = row.external_id

    def created_id(self, step: str) -> str | None:
        return self._ids.get(step)

    def was_attempted(self, step: str) -> bool:
        return step in self._attempted

    def mark_attempt(self, step: str) -> None:
        """Commit the attempt, and every id recorded since the last commit, before the call."""
        with self.db.engine.begin() as conn:
            self._save_ids(conn)
            if step not in self._attempted:
                conn.execute(sa.insert(STEPS).values(self._row(step, attempted_at=_now())))
        self._attempted.add(step)

    def record(self, step: str, external_id: str) -> None:
        self._ids[step] = external_id
        self._unsaved[step] = (external_id, _now())

    def flush(self) -> None:
        """Commit the ids recorded since the last attempt (the end of a flow)."""
        if self._unsaved:
            with self.db.engine.begin() as conn:
                self._save_ids(conn)

    def created(self) -> dict[str, str]:
        return dict(self._ids)

    def _save_ids(self, conn: sa.Connection) -> None:
        for step, (external_id, at) in self._unsaved.items():
            updated = conn.execute(
                sa.update(STEPS)
                .where(STEPS.c.campaign_id == self.campaign_id, STEPS.c.step == step)
                .values(external_id=external_id, created_at=at)
            )
            if not updated.rowcount:  # found on the platform without an attempt of ours
                conn.execute(
                    sa.insert(STEPS).values(
                        self._row(step, attempted_at=at, external_id=external_id, created_at=at)
                    )
                )
            self._attempted.add(step)
        self._unsaved.clear()

    def _row(self, step: str, **values: object) -> dict[str, object]:
        return {"campaign_id": self.campaign_id, "step": step, "platform": self.platform, **values}


def _now() -> datetime:
    return datetime.now(UTC)
