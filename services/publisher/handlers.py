"""What the publisher does on each event: run a campaign's publish flow on its platform and
say how it went (`campaign.published`, or `campaign.publish_failed` once retries are over)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import UTC, datetime

from adplatforms.base import CampaignSpec, JobOpening
from adplatforms.registry import PlatformFactory
from services.publisher.journal import DbStepJournal
from shared.db import Database
from shared.envelope import Envelope, caused_by
from shared.events import (
    CampaignPublished,
    CampaignPublishFailed,
    ErrorInfo,
    PublishRequested,
)
from shared.retry import PermanentError
from shared.runtime import HandlerContext, HandlerOutcome

SOURCE = "publisher"
log = logging.getLogger(__name__)


class ProgressJournal:
    """A StepJournal that reports PROGRESS for the objects created since its last report, once
    per platform call rather than once per object (a batch creates several at once), and
    checks the time limit before every platform call."""

    def __init__(self, inner: DbStepJournal, steps: tuple[str, ...], ctx: HandlerContext) -> None:
        self.inner = inner
        self.steps = steps
        self.ctx = ctx
        self._unreported: list[str] = []

    def created_id(self, step: str) -> str | None:
        return self.inner.created_id(step)

    def was_attempted(self, step: str) -> bool:
        return self.inner.was_attempted(step)

    def mark_attempt(self, step: str) -> None:
        self.report()
        self.ctx.check_cancelled()
        self.inner.mark_attempt(step)

    def record(self, step: str, external_id: str) -> None:
        self.inner.record(step, external_id)
        self._unreported.append(step)

    def report(self) -> None:
        """One PROGRESS for the objects created since the last one (none: nothing sent)."""
        if self._unreported:
            done = len(self.inner.created())
            steps, self._unreported = self._unreported, []
            self.ctx.progress(
                int(100 * done / len(self.steps)), {"step": steps[-1], "steps": steps}
            )


def _keep_ids(journal: DbStepJournal) -> None:
    try:
        journal.flush()
    except Exception:  # the retry then finds the created objects by their tags
        log.warning("could not save the ids created before a failed call", exc_info=True)


def spec_of(command: PublishRequested) -> CampaignSpec:
    job = command.job
    return CampaignSpec(
        campaign_id=command.campaign_id,
        name=command.name,
        daily_budget=command.daily_budget,
        currency=command.currency,
        targeting=dict(command.targeting),
        job=JobOpening(job.title, job.description, job.company, job.location, job.url),
    )


class PublishCampaign:
    """Handles `campaign.publish_requested`: resumable creation of the campaign tree."""

    def __init__(self, db: Database, platforms: Mapping[str, PlatformFactory]) -> None:
        self.db = db
        self.platforms = platforms

    def __call__(
        self, envelope: Envelope, command: PublishRequested, ctx: HandlerContext
    ) -> HandlerOutcome:
        factory = self.platforms.get(command.platform)
        if factory is None:
            raise PermanentError(f"platform {command.platform!r} is not configured")
        platform = factory()
        stored = DbStepJournal(self.db, command.campaign_id, command.platform)
        journal = ProgressJournal(stored, platform.steps, ctx)
        stored.begin(platform.steps)
        try:
            external_ids = platform.create_campaign_flow(spec_of(command), journal)
        except Exception:
            _keep_ids(stored)  # a retry skips what was created
            raise
        stored.flush(ctx.session)
        journal.report()
        published = CampaignPublished(
            campaign_id=command.campaign_id,
            platform=command.platform,
            external_ids=external_ids,
            published_at=datetime.now(UTC),
        )
        return HandlerOutcome(
            result={
                "campaign_id": command.campaign_id,
                "platform": command.platform,
                "external_ids": external_ids,
            },
            events=[caused_by(envelope, published, source=SOURCE, subject=command.campaign_id)],
        )

    @staticmethod
    def on_failure(
        envelope: Envelope, command: PublishRequested, error: ErrorInfo
    ) -> list[Envelope]:
        failed = CampaignPublishFailed(
            campaign_id=command.campaign_id, platform=command.platform, error=error
        )
        return [caused_by(envelope, failed, source=SOURCE, subject=command.campaign_id)]
