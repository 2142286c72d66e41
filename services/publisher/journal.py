"""The publish step journal in the publisher's tables: every mark and record is its own
committed transaction, so a crash between two platform calls loses no created id."""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa

from services.publisher.models import PublishStep
from shared.db import Database


class DbStepJournal:
    """StepJournal of one campaign, backed by `publish_steps`."""

    def __init__(self, db: Database, campaign_id: str, platform: str) -> None:
        self.db = db
        self.campaign_id = campaign_id
        self.platform = platform
        self._steps = self._load()

    def _load(self) -> dict[str, PublishStep]:
        with self.db.session() as session:
            rows = session.scalars(
                sa.select(PublishStep).where(PublishStep.campaign_id == self.campaign_id)
            ).all()
        return {row.step: row for row in rows}

    def created_id(self, step: str) -> str | None:
        row = self._steps.get(step)
        return row.external_id if row is not None else None

    def was_attempted(self, step: str) -> bool:
        return step in self._steps

    def mark_attempt(self, step: str) -> None:
        with self.db.session() as session:
            row = session.get(PublishStep, (self.campaign_id, step))
            if row is None:
                row = PublishStep(
                    campaign_id=self.campaign_id,
                    step=step,
                    platform=self.platform,
                    attempted_at=datetime.now(UTC),
                )
                session.add(row)
        self._steps[step] = row

    def record(self, step: str, external_id: str) -> None:
        with self.db.session() as session:
            row = session.get(PublishStep, (self.campaign_id, step))
            if row is None:
                row = PublishStep(campaign_id=self.campaign_id, step=step, platform=self.platform)
                session.add(row)
            row.external_id = external_id
            row.created_at = datetime.now(UTC)
        self._steps[step] = row

    def created(self) -> dict[str, str]:
        return {step: row.external_id for step, row in self._steps.items() if row.external_id}
