"""Issuing commands: a task row and its command event, written in one transaction (the
outbox relay produces the event). Every way a task starts goes through `issue_task`, and
every way a campaign is published through `start_publish` (the same precondition whichever
endpoint asks)."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import sqlalchemy as sa
from pydantic import ValidationError
from sqlalchemy.orm import Session

from services.gateway.live import task_update
from services.gateway.models import Campaign, Job, Task
from shared.commands import CommandInvalid, build_command, command_key
from shared.envelope import Envelope, new_event
from shared.events import (
    Command,
    JobOpening,
    PublishRequested,
    TaskOptions,
    TaskRevoked,
    TaskState,
)
from shared.outbox import AddedRow, Outbox, RecordTooLarge, RefusedRow

SOURCE = "gateway"


class CommandRejected(ValueError):
    """The command cannot be issued as asked (unknown task, bad arguments)."""


class CommandConflict(CommandRejected):
    """The command conflicts with its resource's state (publishing a campaign that is not a
    draft)."""


class CommandTooLarge(CommandRejected):
    """The command's record would be larger than the broker takes."""


def options_from(
    *,
    countdown: float | None = None,
    eta: datetime | None = None,
    expires: datetime | float | None = None,
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


def start_publish(
    session: Session, outbox: Outbox, campaign: Campaign, options: TaskOptions
) -> Task:
    """Publish a draft campaign: its task and command, and the campaign `publishing`.
    The caller holds the campaign's row lock."""
    if campaign.status != "draft":
        raise CommandConflict(f"campaign is {campaign.status!r}; only a draft can be published")
    command = publish_command(session, campaign, options)
    task = issue_task(
        session,
        outbox,
        "campaign.publish",
        kwargs={"campaign_id": campaign.id},
        options=options,
        command=command,
    )
    campaign.status = "publishing"
    campaign.task_id = task.id
    campaign.updated_at = datetime.now(UTC)
    return task


_INSERT_TASK = sa.insert(cast(sa.Table, Task.__table__))


@dataclass(frozen=True)
class TaskRequest:
    """A task asked for by name (`POST /tasks`, a schedule)."""

    name: str
    args: list[Any] | None = None
    kwargs: dict[str, Any] | None = None
    options: TaskOptions = field(default_factory=TaskOptions)


@dataclass(frozen=True)
class PreparedTask:
    """A task's `tasks` row and its command envelope, not written yet."""

    row: dict[str, Any]
    envelope: Envelope


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
) -> Task:
    """Record the task (PENDING, or SCHEDULED when it has an ETA) and its command event."""
    options = options or TaskOptions()
    if command is None and name == "campaign.publish":
        return _publish_by_name(session, outbox, dict(kwargs or {}), options)
    prepared = prepare_task(name, args, kwargs, options, task_id=task_id, command=command)
    return record_tasks(session, outbox, [prepared])[0]


def issue_tasks(
    connection: sa.Connection, outbox: Outbox, requests: Sequence[TaskRequest]
) -> list[Task]:
    """Record many tasks in one transaction on `connection`, in order, commit it and hand
    their commands to the relay. Without a `campaign.publish` (which locks its campaign
    through the ORM), the rows and the commands go in one statement each on the bare
    connection: the path of every `POST /tasks`, with no ORM session to build."""
    if any(request.name == "campaign.publish" for request in requests):
        with Session(bind=connection, expire_on_commit=False) as session:
            tasks = _issue_in_session(session, outbox, requests)
            outbox.commit(session)
        return tasks
    prepared = [prepare_task(r.name, r.args, r.kwargs, r.options) for r in requests]
    outbox.hand_over(connection.commit, insert_tasks(connection, outbox, prepared))
    return [Task(**p.row) for p in prepared]


def _issue_in_session(
    session: Session, outbox: Outbox, requests: Sequence[TaskRequest]
) -> list[Task]:
    tasks: list[Task | None] = [None] * len(requests)
    prepared: list[tuple[int, PreparedTask]] = []
    for index, request in enumerate(requests):
        if request.name == "campaign.publish":
            tasks[index] = issue_task(
                session, outbox, request.name, kwargs=request.kwargs, options=request.options
            )
        else:
            prepared.append(
                (index, prepare_task(request.name, request.args, request.kwargs, request.options))
            )
    recorded = record_tasks(session, outbox, [p for _, p in prepared])
    for (index, _), task in zip(prepared, recorded, strict=True):
        tasks[index] = task
    return [task for task in tasks if task is not None]


def prepare_task(
    name: str,
    args: list[Any] | None,
    kwargs: dict[str, Any] | None,
    options: TaskOptions,
    *,
    task_id: str | None = None,
    command: Command | None = None,
) -> PreparedTask:
    """The row and command of a task by name (CommandRejected when its input is not valid)."""
    kwargs = dict(kwargs or {})
    if command is None:
        try:
            command = build_command(name, kwargs, options)
        except CommandInvalid as exc:
            raise CommandRejected(str(exc)) from exc
    task_id = task_id or str(uuid.uuid4())
    now = datetime.now(UTC)
    state = TaskState.SCHEDULED if options.eta and options.eta > now else TaskState.PENDING
    envelope = new_event(command, source=SOURCE, subject=command_key(command), taskid=task_id)
    campaign_id = kwargs.get("campaign_id")
    row: dict[str, Any] = {
        "id": task_id,
        "name": name,
        "state": state.value,
        "attempts": 0,
        "progress": None,
        "result": None,
        "error": None,
        "args": list(args or []),
        "kwargs": kwargs,
        "options": options.model_dump(mode="json"),
        "next_attempt_at": options.eta if state is TaskState.SCHEDULED else None,
        "history": [{"state": state.value, "at": now.isoformat(), "attempt": 0}],
        "campaign_id": campaign_id if isinstance(campaign_id, str) else None,
        "correlation_id": envelope.correlationid,
        "created_at": now,
        "updated_at": now,
    }
    return PreparedTask(row, envelope)


def record_tasks(session: Session, outbox: Outbox, prepared: Sequence[PreparedTask]) -> list[Task]:
    """Write prepared tasks and their commands in the session's transaction (its
    `Outbox.commit` hands the commands to the relay); the caller gets the rows as detached
    Tasks."""
    outbox.track(session, insert_tasks(session, outbox, prepared))
    return [Task(**p.row) for p in prepared]


def insert_tasks(
    executor: sa.Connection | Session, outbox: Outbox, prepared: Sequence[PreparedTask]
) -> list[AddedRow]:
    """Insert prepared tasks and their commands: one INSERT of all rows and one of all
    commands (Core, not the ORM's unit of work); the outbox rows, for `Outbox.hand_over`."""
    if not prepared:
        return []
    try:
        added = outbox.insert(executor, outbox.encode([p.envelope for p in prepared]))
    except RecordTooLarge as exc:
        names = " / ".join(sorted({p.row["name"] for p in prepared}))
        raise CommandTooLarge(f"the {names} command is too large: {exc}") from exc
    executor.execute(_INSERT_TASK, [p.row for p in prepared])
    return added


def _publish_by_name(
    session: Session, outbox: Outbox, kwargs: dict[str, Any], options: TaskOptions
) -> Task:
    """`campaign.publish` run by name (POST /tasks, a schedule): the campaign's own door."""
    campaign_id = kwargs.get("campaign_id")
    campaign = (
        session.get(Campaign, campaign_id, with_for_update=True)
        if isinstance(campaign_id, str) and set(kwargs) == {"campaign_id"}
        else None
    )
    if campaign is None:
        raise CommandRejected(
            "campaign.publish takes exactly kwargs.campaign_id, of an existing campaign"
        )
    return start_publish(session, outbox, campaign, options)


def fail_refused_commands(
    session: Session, rows: Sequence[RefusedRow], notify: Callable[[dict[str, Any]], None]
) -> None:
    """The outbox relay's hook: a command the broker refused will never run, so its task
    ends FAILURE with the reason (and a campaign being published, `failed`)."""
    now = datetime.now(UTC)
    for row in rows:
        task = session.get(Task, row.task_id, with_for_update=True) if row.task_id else None
        if task is None or TaskState(task.state).is_final:
            continue
        error = {
            "error_class": "RecordRefused",
            "message": f"the broker refused the command: {row.reason}",
            "transient": False,
        }
        task.state = TaskState.FAILURE.value
        task.error = error
        task.next_attempt_at = None
        task.updated_at = now
        task.history = [
            *(task.history or []),
            {"state": "FAILURE", "at": now.isoformat(), "error": error["message"]},
        ]
        if task.name == "campaign.publish":
            campaign = session.get(Campaign, (task.kwargs or {}).get("campaign_id"))
            if campaign is not None and campaign.status == "publishing":
                campaign.status = "failed"
                campaign.last_error = error
                campaign.updated_at = now
        notify(task_update(task, now))


def revoke(session: Session, outbox: Outbox, task: Task) -> bool:
    """Revoke a task not yet final: every worker learns it (`task.revoked`); one that has not
    started is REVOKED here and now (True), one running ends as its worker reports."""
    now = datetime.now(UTC)
    outbox.add(
        session,
        new_event(
            TaskRevoked(task_id=task.id, revoked_at=now),
            source=SOURCE,
            subject=task.id,
            taskid=task.id,
        ),
    )
    if task.state not in (TaskState.PENDING, TaskState.SCHEDULED, TaskState.RETRY):
        return False
    task.history = [
        *(task.history or []),
        {"state": "REVOKED", "at": now.isoformat(), "attempt": task.attempts},
    ]
    task.state = TaskState.REVOKED.value
    task.updated_at = now
    release_campaign(session, task, now)
    return True


def release_campaign(session: Session, task: Task, at: datetime) -> None:
    """A publish revoked or expired before it ran created nothing: its campaign goes back to
    `draft` (publishable again) with the reason in `last_error`, instead of `publishing` for
    good. Only the campaign's current publish task releases it."""
    campaign_id = (task.kwargs or {}).get("campaign_id")
    if task.name != "campaign.publish" or not isinstance(campaign_id, str):
        return
    campaign = session.get(Campaign, campaign_id, with_for_update=True)
    if campaign is None or campaign.status != "publishing" or campaign.task_id != task.id:
        return
    campaign.status = "draft"
    campaign.last_error = {
        "error_class": f"Task{task.state.capitalize()}",
        "message": f"publish task {task.id} was {task.state.lower()} before it ran",
        "transient": False,
    }
    campaign.updated_at = at
