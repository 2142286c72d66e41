"""The `campaign.publish` command the benchmarks produce straight to its topic: a campaign of
its own (so its own key) for one job opening."""

from __future__ import annotations

import uuid
from decimal import Decimal
from typing import Literal

from shared.envelope import Envelope, new_event
from shared.events import JobOpening, PublishRequested, TaskOptions

JOB = JobOpening(
    title="Nurse",
    company="Hospital Central",
    location="Madrid",
    url="https://jobs.example.org/1",
    description="ICU",
)


def publish_command(
    platform: Literal["meta", "google"],
    name: str,
    options: TaskOptions | None = None,
    task_id: str | None = None,
) -> Envelope:
    """A publish of a new campaign, keyed by its campaign id; the task id is random unless
    given."""
    campaign_id = str(uuid.uuid4())
    command = PublishRequested(
        campaign_id=campaign_id,
        platform=platform,
        name=name,
        daily_budget=Decimal("10.00"),
        currency="EUR",
        job=JOB,
        options=options or TaskOptions(),
    )
    return new_event(
        command, source="bench", subject=campaign_id, taskid=task_id or str(uuid.uuid4())
    )
