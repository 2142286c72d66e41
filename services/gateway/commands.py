"""Issuing commands: a task row and its command event, written in one transaction (the
outbox relay produces the event). Every way a task starts goes through `issue_task`."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import ValidationError
from sqlalchemy.orm import Session

from services.gateway.models import Campaign, Job, Task
from shared.envelope import new_event
from shared.events import (
    CONTRACTS,
    TASK_COMMANDS,
    Command,
    JobOpening,
    PublishRequested,
    TaskOptions,
    TaskState,
)
from shared.outbox import Outbox

SOURCE = "gateway"


class CommandRejected(ValueError):
    """The command cannot be issued as asked (unknown task, bad arguments, wrong state)."""


def options_from(
    *,
    countdown: float | None = None,
    eta: datetime | None = None,
    expires: datetime | float | None = None,
    priority: str | None = None,
    max_retries: int | None = None,
    retry_delay: float | None = None,
    time_limit: float | None = None,
    now: datetime | None = None,
) -> TaskOptions:
    """Celery-style options (countdown seconds, expires as seconds or a time) as TaskOptions."""
    now = now or datetime.now(UTC)
    if countdown is not None and eta is not None:
        raise CommandRejected("give countdown or eta, not both")
    if countdown is not None:
        eta = now + timedelta(seconds=countdown)
    if isinstance(expires, int | float):
        expires = now + timedelta(seconds=expires)
    fields: dict[str, Any] = {"eta": eta, "expires": expires}
    for name, value in (
        ("priority", priority),
        ("max_retries", max_retries),
        ("retry_delay", retry_delay),
        ("time_limit", time_limit),
    ):
        if value is not None:
            fields[name] = value
    try:
        return TaskOptions(**fields)
    except ValidationError as exc:
        raise CommandRejected(str(exc)) from exc


def publish_command(session: Session, campaign: Campaign, options: TaskOptions) -> PublishRequested:
    job = session.get(Job, campaign.job_id)
    if job is None:
        raise CommandRejected(f"job {campaign.job_id} of campaign {campaign.id} does not exist")
    return PublishRequested(
        campaign_id=campaign.id,
        platform=campaign.platform,  # type: ignore[arg-type]
        name=campaign.name,
        daily_budget=campaign.daily_budget,
        currency=campaign.currency,
        targeting=campaign.targeting or {},
        job=JobOpening(
            title=job.title,
            description=job.description,
            company=job.company,
            location=job.location,
            url=job.url,
        ),
        options=options,
    )


def build_command(
    session: Session, name: str, kwargs: dict[str, Any], options: TaskOptions
) -> tuple[Command, str]:
    """The command payload of task `name` and its aggregate id (the Kafka key)."""
    if name not in TASK_COMMANDS:
        raise CommandRejected(f"unknown task {name!r}; known: {', '.join(sorted(TASK_COMMANDS))}")
    if name == "campaign.publish":
        campaign_id = kwargs.get("campaign_id")
        campaign = session.get(Campaign, campaign_id) if isinstance(campaign_id, str) else None
        if campaign is None:
            raise CommandRejected(
                "campaign.publish needs kwargs.campaign_id of an existing campaign"
            )
        return publish_command(session, campaign, options), campaign.id
    model = CONTRACTS[TASK_COMMANDS[name]].model
    try:
        command = model.model_validate({**kwargs, "options": options})
    except ValidationError as exc:
        raise CommandRejected(f"bad kwargs for {name}: {exc}") from exc
    assert isinstance(command, Command)
    subject = str(kwargs.get("platform") or name)
    return command, subject


def issue_task(
    session: Session,
    outbox: Outbox,
    name: str,
    *,
    args: list[Any] | None = None,
    kwargs: dict[str, Any] | None = None,
    options: TaskOptions | None = None,
    task_id: str | None = None,
    command: Command | None = None,
    subject: str | None = None,
) -> Task:
    """Record the task (PENDING, or SCHEDULED when it has an ETA) and its command event."""
    options = options or TaskOptions()
    kwargs = dict(kwargs or {})
    if command is None:
        command, subject = build_command(session, name, kwargs, options)
    task_id = task_id or str(uuid.uuid4())
    now = datetime.now(UTC)
    state = TaskState.SCHEDULED if options.eta and options.eta > now else TaskState.PENDING
    task = Task(
        id=task_id,
        name=name,
        state=state.value,
        attempts=0,
        args=list(args or []),
        kwargs=kwargs,
        options=options.model_dump(mode="json"),
        next_attempt_at=options.eta if state is TaskState.SCHEDULED else None,
        history=[{"state": state.value, "at": now.isoformat(), "attempt": 0}],
        created_at=now,
        updated_at=now,
    )
    session.add(task)
    outbox.add(
        session,
        new_event(command, source=SOURCE, subject=subject or task_id, taskid=task_id),
    )
    return task
