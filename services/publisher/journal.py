"""The publish step journal in the publisher's tables: `begin(steps)` commits every step of
the flow as attempted, in a transaction of its own, before the first platform call; `flush()`
saves the created ids when the flow ends, in the handler's transaction (committed with its
tracking row), or alone when the flow stops on a failed call. A step an earlier run attempted
but did not record may exist on the platform: the adapters look it up by its tag before
creating it again (adplatforms/steps.py), so a crash at any point never creates an object
twice; it only costs those lookups on the retry."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import cast

import sqlalchemy as sa
from sqlalchemy.orm import Session

from services.publisher.models import PublishStep
from shared.db import Database

STEPS = cast(sa.Table, PublishStep.__table__)
_SAVE_ID = (
    sa.update(STEPS)
    .where(
        STEPS.c.campaign_id == sa.bindparam("b_campaign_id"),
        STEPS.c.step == sa.bindparam("b_step"),
    )
    .values(external_id=sa.bindparam("b_external_id"), created_at=sa.bindparam("b_created_at"))
)


class DbStepJournal:
    """StepJournal of one campaign, backed by `publish_steps`."""

    def __init__(self, db: Database, campaign_id: str, platform: str) -> None:
        self.db = db
        self.campaign_id = campaign_id
        self.platform = platform
        self._attempted: set[str] = set()  # by an earlier run: the object may exist
        self._planned: set[str] = set()  # committed as attempted by this run's begin()
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

    def begin(self, steps: tuple[str, ...]) -> None:
        """Commit every step not attempted before as attempted, in one transaction, before
        the flow's first platform call."""
        fresh = [s for s in steps if s not in self._attempted and s not in self._ids]
        if fresh:
            now = _now()
            with self.db.engine.begin() as conn:
                conn.execute(sa.insert(STEPS), [self._row(s, attempted_at=now) for s in fresh])
        self._planned.update(fresh)

    def mark_attempt(self, step: str) -> None:
        """A step outside begin()'s plan commits its own attempt (and the ids so far)."""
        if step in self._planned:
            return
        with self.db.engine.begin() as conn:
            self._save_ids(conn)
            if step not in self._attempted:
                conn.execute(sa.insert(STEPS).values(self._row(step, attempted_at=_now())))
        self._planned.add(step)

    def record(self, step: str, external_id: str) -> None:
        self._ids[step] = external_id
        self._unsaved[step] = (external_id, _now())

    def flush(self, session: Session | None = None) -> None:
        """Save the ids recorded since the last save: in `session`'s transaction when given
        (the handler's, committed with its tracking row: one commit fewer per publish), else
        in a transaction of its own (after a failed call, when the handler's is rolled back)."""
        if not self._unsaved:
            return
        if session is not None:
            self._save_ids(session.connection())
            return
        with self.db.engine.begin() as conn:
            self._save_ids(conn)

    def created(self) -> dict[str, str]:
        return dict(self._ids)

    def _save_ids(self, conn: sa.Connection) -> None:
        """The unsaved ids in one UPDATE (executemany) for steps that have a row, one INSERT
        for those found on the platform without an attempt of ours."""
        have_row = self._attempted | self._planned
        updates = [
            {"b_step": step, "b_external_id": external_id, "b_created_at": at}
            for step, (external_id, at) in self._unsaved.items()
            if step in have_row
        ]
        inserts = [
            self._row(step, attempted_at=at, external_id=external_id, created_at=at)
            for step, (external_id, at) in self._unsaved.items()
            if step not in have_row
        ]
        if updates:
            conn.execute(_SAVE_ID, [{"b_campaign_id": self.campaign_id, **u} for u in updates])
        if inserts:
            conn.execute(sa.insert(STEPS), inserts)
        self._planned.update(self._unsaved)
        self._unsaved.clear()

    def _row(self, step: str, **values: object) -> dict[str, object]:
        return {"campaign_id": self.campaign_id, "step": step, "platform": self.platform, **values}


def _now() -> datetime:
    return datetime.now(UTC)
