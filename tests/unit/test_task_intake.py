"""The task intake: `POST /tasks` requests that wait together are recorded in one transaction,
and a rejected one sends the group through one at a time, so it fails alone."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from services.gateway.commands import CommandRejected
from services.gateway.intake import IntakeStopped, TaskIntake
from services.gateway.models import Campaign, Task
from shared.events import TaskOptions
from tests.support.gateway import InProcessGateway, RecordingHub, in_process_gateway


@pytest.fixture
def gw(tmp_path: Path) -> Iterator[InProcessGateway]:
    yield from in_process_gateway(tmp_path)


def _issue_queued(intake: TaskIntake, requests: list[tuple[str, dict[str, Any]]]) -> list[Any]:
    """Queue every request before the intake's thread starts, so they form one group."""

    async def main() -> list[Any]:
        waiting = [
            asyncio.ensure_future(intake.issue(name, kwargs=kwargs, options=TaskOptions()))
            for name, kwargs in requests
        ]
        await asyncio.sleep(0.05)
        intake.start()
        return await asyncio.gather(*waiting, return_exceptions=True)

    try:
        return asyncio.run(main())
    finally:
        intake.stop()


def _commits(gw: InProcessGateway) -> list[int]:
    commits = [0]

    def count(_connection: Any) -> None:
        commits[0] += 1

    sa.event.listen(gw.db.engine, "commit", count)
    return commits


def test_waiting_requests_are_recorded_in_one_transaction(gw: InProcessGateway) -> None:
    hub = RecordingHub()
    intake = TaskIntake(gw.db, gw.outbox, hub)
    commits = _commits(gw)
    inserts: list[str] = []

    def record(conn: Any, cursor: Any, statement: str, *_: Any) -> None:
        if statement.lstrip().upper().startswith("INSERT"):
            inserts.append(statement.split()[2].strip('"'))

    sa.event.listen(gw.db.engine, "before_cursor_execute", record)
    results = _issue_queued(intake, [("ml.train", {})] * 5)
    sa.event.remove(gw.db.engine, "before_cursor_execute", record)
    assert commits[0] == 1
    # The five rows of `tasks` in one statement. The outbox's take one each on SQLite: their
    # ids must come back in order, which SQLite's RETURNING does not promise for many rows.
    assert inserts.count("tasks") == 1 and inserts.count("outbox") == 5
    assert all(isinstance(r, Task) for r in results)
    ids = {r.id for r in results}
    with gw.db.session() as session:
        stored = set(session.scalars(sa.select(Task.id)))
        unsent = session.scalar(sa.select(sa.func.count()).select_from(gw.outbox.table))
    assert stored == ids and len(ids) == 5 and unsent == 5  # a task and a command each
    assert [u["task_id"] for u in hub.updates] == [r.id for r in results]


def test_a_rejected_request_fails_alone_and_the_rest_of_its_group_is_recorded(
    gw: InProcessGateway,
) -> None:
    intake = TaskIntake(gw.db, gw.outbox, RecordingHub())
    commits = _commits(gw)
    results = _issue_queued(
        intake,
        [("ml.train", {}), ("campaign.publish", {"campaign_id": "nope"}), ("ml.train", {})],
    )
    assert isinstance(results[1], CommandRejected) and "campaign_id" in str(results[1])
    assert isinstance(results[0], Task) and isinstance(results[2], Task)
    assert commits[0] == 2  # the group rolled back; each valid request then commits alone
    with gw.db.session() as session:
        stored = set(session.scalars(sa.select(Task.id)))
        commands = session.scalar(sa.select(sa.func.count()).select_from(gw.outbox.table))
    assert stored == {results[0].id, results[2].id} and commands == 2


def test_a_group_with_a_publish_is_recorded_together_through_the_orm(
    gw: InProcessGateway,
) -> None:
    """A `campaign.publish` locks its campaign through the ORM: its group takes a session on
    the intake's connection and still commits once, the campaign `publishing` with it."""
    campaign_id = gw.campaign()
    intake = TaskIntake(gw.db, gw.outbox, RecordingHub())
    commits = _commits(gw)
    results = _issue_queued(
        intake, [("ml.train", {}), ("campaign.publish", {"campaign_id": campaign_id})]
    )
    assert all(isinstance(r, Task) for r in results), results
    assert commits[0] == 1
    with gw.db.session() as session:
        campaign = session.get(Campaign, campaign_id)
        stored = set(session.scalars(sa.select(Task.id)))
        commands = session.scalar(sa.select(sa.func.count()).select_from(gw.outbox.table))
    assert campaign is not None and campaign.status == "publishing"
    assert campaign.task_id == results[1].id
    assert stored == {r.id for r in results} and commands == 2


def test_a_stopped_intake_refuses_requests(gw: InProcessGateway) -> None:
    intake = TaskIntake(gw.db, gw.outbox, RecordingHub()).start()
    intake.stop()
    with pytest.raises(IntakeStopped):
        asyncio.run(intake.issue("ml.train", options=TaskOptions()))


def test_a_database_error_is_rolled_back_and_the_next_request_is_recorded(
    gw: InProcessGateway,
) -> None:
    """The intake keeps its SQLite connection between requests: a statement that fails
    must not leave it inside a transaction holding the writer lock, nor lose later work."""
    intake = TaskIntake(gw.db, gw.outbox, RecordingHub()).start()
    failures = [1]

    def fail_once(conn: Any, cursor: Any, statement: str, *_: Any) -> None:
        if failures and statement.lstrip().upper().startswith("INSERT INTO TASKS"):
            failures.pop()
            raise sa.exc.OperationalError(statement, None, RuntimeError("disk I/O error"))

    sa.event.listen(gw.db.engine, "before_cursor_execute", fail_once)
    try:

        async def two() -> list[Any]:
            first = await asyncio.gather(
                intake.issue("ml.train", options=TaskOptions()), return_exceptions=True
            )
            second = await intake.issue("ml.train", options=TaskOptions())
            return [*first, second]

        failed, recorded = asyncio.run(two())
    finally:
        sa.event.remove(gw.db.engine, "before_cursor_execute", fail_once)
        intake.stop()
    assert isinstance(failed, sa.exc.OperationalError) and isinstance(recorded, Task)
    with gw.db.session() as session:  # another connection writes: the lock was given back
        session.execute(sa.delete(gw.outbox.table).where(sa.false()))
        session.commit()
        stored = list(session.scalars(sa.select(Task.id)))
        commands = session.scalar(sa.select(sa.func.count()).select_from(gw.outbox.table))
    assert stored == [recorded.id] and commands == 1  # the failed one left no command behind
