"""The live task view: transitions consumed from `task.status` are visible to
`GET /tasks/{id}` and the WebSocket before the read model commits them, by the projection's
own rules (stale, redelivered and post-revocation transitions never show)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest
import sqlalchemy as sa

from services.gateway.live import LiveTasks, overlaid
from services.gateway.models import Task
from services.gateway.projections import project_task_status
from shared.envelope import Envelope, new_event
from shared.events import TaskState, TaskStatus
from shared.runtime import HandlerContext
from tests.support.gateway import InProcessGateway, RecordingHub, in_process_gateway

NO_CONTEXT = cast(HandlerContext, SimpleNamespace(session=None))


@pytest.fixture
def gw(tmp_path: Path) -> Iterator[InProcessGateway]:
    yield from in_process_gateway(tmp_path)


def _status(
    task_id: str, state: TaskState, at: datetime, attempt: int = 1, **fields: Any
) -> tuple[Envelope, TaskStatus]:
    status = TaskStatus(
        task_id=task_id, name="ml.train", state=state, attempt=attempt, at=at, **fields
    )
    return new_event(status, source="ml", subject=task_id, taskid=task_id), status


def _feed(live: LiveTasks, *statuses: tuple[Envelope, TaskStatus]) -> None:
    for envelope, status in statuses:
        live.observe(envelope, status, NO_CONTEXT)


def test_stale_and_redelivered_transitions_are_neither_kept_nor_broadcast() -> None:
    hub = RecordingHub()
    live = LiveTasks(hub)
    t0 = datetime.now(UTC)
    started = _status("t1", TaskState.STARTED, t0)
    success = _status("t1", TaskState.SUCCESS, t0 + timedelta(milliseconds=5), result={"n": 1})
    late_progress = _status("t1", TaskState.PROGRESS, t0 + timedelta(milliseconds=9), progress=50)
    _feed(live, started, success, success, late_progress)
    assert [t.state for t in live.transitions("t1")] == [TaskState.STARTED, TaskState.SUCCESS]
    assert [(u["state"], u["attempt"]) for u in hub.updates] == [("STARTED", 1), ("SUCCESS", 1)]
    # Nothing moves a succeeded task: a later STARTED, even of a newer attempt, is a
    # duplicate copy of its command that started before it found its tracking row.
    _feed(live, _status("t1", TaskState.STARTED, t0 + timedelta(seconds=1), attempt=2))
    assert hub.updates[-1]["state"] == "SUCCESS"
    assert [t.state for t in live.transitions("t1")] == [TaskState.STARTED, TaskState.SUCCESS]
    # A newer attempt does move a failed task again (a retry after a replay).
    failure = _status("t2", TaskState.FAILURE, t0, error={"error_class": "X", "message": "m"})
    _feed(live, failure, _status("t2", TaskState.STARTED, t0 + timedelta(seconds=1), attempt=2))
    assert hub.updates[-1]["state"] == "STARTED" and hub.updates[-1]["attempt"] == 2


def test_the_view_forgets_the_least_recently_changed_tasks_beyond_its_capacity() -> None:
    live = LiveTasks(RecordingHub(), capacity=2)
    now = datetime.now(UTC)
    _feed(live, *(_status(f"t{i}", TaskState.STARTED, now) for i in range(3)))
    assert live.transitions("t0") == [] and len(live.transitions("t2")) == 1


def test_get_shows_consumed_transitions_before_the_read_model_commits_them(
    gw: InProcessGateway,
) -> None:
    task_id = gw.client.post("/api/v1/tasks", json={"name": "ml.train"}).json()["task_id"]
    live: LiveTasks = gw.app.state.live
    t0 = datetime.now(UTC) + timedelta(milliseconds=1)
    statuses = [
        _status(task_id, TaskState.STARTED, t0),
        _status(task_id, TaskState.PROGRESS, t0 + timedelta(milliseconds=1), progress=40),
        _status(
            task_id,
            TaskState.SUCCESS,
            t0 + timedelta(milliseconds=2),
            progress=100,
            result={"k": 3},
        ),
    ]
    _feed(live, *statuses)
    ahead = gw.client.get(f"/api/v1/tasks/{task_id}").json()
    with gw.db.session() as session:
        stored = session.get(Task, task_id)
        assert stored is not None and stored.state == "PENDING"  # nothing committed yet
    assert ahead["state"] == "SUCCESS" and ahead["result"] == {"k": 3}
    assert ahead["progress"] == 100 and ahead["attempts"] == 1
    assert [h["state"] for h in ahead["history"]] == ["PENDING", "STARTED", "PROGRESS", "SUCCESS"]
    # Once the read model has them, the answer is the same and nothing is laid twice; the
    # projection keeps no tracking row, so a redelivered status must change nothing either.
    for envelope, status in [*statuses, *statuses]:
        with gw.db.session() as session, session.begin():
            project_task_status(
                envelope, status, cast(HandlerContext, SimpleNamespace(session=session))
            )
    after = gw.client.get(f"/api/v1/tasks/{task_id}").json()
    assert {k: after[k] for k in ("state", "result", "progress", "attempts")} == {
        k: ahead[k] for k in ("state", "result", "progress", "attempts")
    }
    assert [h["state"] for h in after["history"]] == [h["state"] for h in ahead["history"]]


def test_a_revoked_task_is_not_shown_running_by_a_late_worker_transition(
    gw: InProcessGateway,
) -> None:
    task_id = gw.client.post("/api/v1/tasks", json={"name": "ml.train", "countdown": 600}).json()[
        "task_id"
    ]
    assert gw.client.post(f"/api/v1/tasks/{task_id}/revoke").status_code == 202
    _feed(gw.app.state.live, _status(task_id, TaskState.STARTED, datetime.now(UTC)))
    assert gw.client.get(f"/api/v1/tasks/{task_id}").json()["state"] == "REVOKED"


def test_an_older_transition_than_the_read_model_has_is_not_laid_over_it() -> None:
    from services.gateway.schemas import TaskOut

    now = datetime.now(UTC)
    out = TaskOut(
        task_id="t",
        name="ml.train",
        state="SUCCESS",
        attempts=1,
        progress=None,
        result={"done": True},
        error=None,
        next_attempt_at=None,
        created_at=now - timedelta(seconds=2),
        updated_at=now,
        history=[{"state": "SUCCESS", "at": now.isoformat(), "attempt": 1}],
    )
    envelope, status = _status("t", TaskState.STARTED, now - timedelta(seconds=1))
    live = LiveTasks(RecordingHub())
    live.observe(envelope, status, NO_CONTEXT)
    assert overlaid(out.model_dump(), live.transitions("t")) == out.model_dump()


def test_a_duplicate_run_after_success_leaves_the_task_succeeded(gw: InProcessGateway) -> None:
    """The chaos test's sequence: the redelivered original succeeds, then its copy from a
    delay tier starts (attempt 2) before finding the tracking row and re-sends the stored
    SUCCESS."""
    task_id = gw.client.post("/api/v1/tasks", json={"name": "ml.train"}).json()["task_id"]
    t0 = datetime.now(UTC)
    success = _status(task_id, TaskState.SUCCESS, t0 + timedelta(milliseconds=5), result={"k": 1})
    statuses = [
        _status(task_id, TaskState.STARTED, t0),
        success,
        _status(task_id, TaskState.STARTED, t0 + timedelta(seconds=3), attempt=2),
        success,
    ]
    for envelope, status in statuses:
        with gw.db.session() as session, session.begin():
            project_task_status(
                envelope, status, cast(HandlerContext, SimpleNamespace(session=session))
            )
    shown = gw.client.get(f"/api/v1/tasks/{task_id}").json()
    assert shown["state"] == "SUCCESS" and shown["result"] == {"k": 1}
    assert [h["state"] for h in shown["history"]] == ["PENDING", "STARTED", "SUCCESS"]


def _project(session: Any, *statuses: tuple[Envelope, TaskStatus]) -> None:
    for envelope, status in statuses:
        project_task_status(
            envelope, status, cast(HandlerContext, SimpleNamespace(session=session))
        )


def _statements_on_tasks(gw: InProcessGateway, work: Any) -> list[str]:
    seen: list[str] = []

    def record(conn: Any, cursor: Any, statement: str, *_: Any) -> None:
        if " tasks" in statement:
            seen.append(statement.split()[0].upper())

    sa.event.listen(gw.db.engine, "before_cursor_execute", record)
    try:
        work()
    finally:
        sa.event.remove(gw.db.engine, "before_cursor_execute", record)
    return seen


def test_a_tasks_statuses_in_one_transaction_read_and_write_its_row_once(
    gw: InProcessGateway,
) -> None:
    """A short task's STARTED and SUCCESS arrive in one batch: the read model reads the row
    once and writes it once, with both transitions."""
    task_id = gw.client.post("/api/v1/tasks", json={"name": "ml.train", "countdown": 600}).json()[
        "task_id"
    ]
    t0 = datetime.now(UTC)
    started = _status(task_id, TaskState.STARTED, t0)
    success = _status(task_id, TaskState.SUCCESS, t0 + timedelta(milliseconds=3), result={"k": 2})

    def project_both() -> None:
        with gw.db.session() as session, session.begin():
            _project(session, started, success)

    assert _statements_on_tasks(gw, project_both) == ["SELECT", "UPDATE"]
    shown = gw.client.get(f"/api/v1/tasks/{task_id}").json()
    assert shown["state"] == "SUCCESS" and shown["result"] == {"k": 2}
    assert [h["state"] for h in shown["history"]] == ["SCHEDULED", "STARTED", "SUCCESS"]


def test_a_task_first_seen_on_its_statuses_is_inserted_once_with_all_of_them(
    gw: InProcessGateway,
) -> None:
    t0 = datetime.now(UTC)
    statuses = [
        _status("from-ticker", TaskState.STARTED, t0),
        _status("from-ticker", TaskState.SUCCESS, t0 + timedelta(milliseconds=3)),
    ]

    def project_both() -> None:
        with gw.db.session() as session, session.begin():
            _project(session, *statuses)

    assert _statements_on_tasks(gw, project_both) == ["SELECT", "INSERT"]
    with gw.db.session() as session:
        stored = session.get(Task, "from-ticker")
        assert stored is not None and stored.state == "SUCCESS"
        assert [h["state"] for h in stored.history] == ["STARTED", "SUCCESS"]


def test_statuses_of_a_rolled_back_transaction_are_not_written_by_the_next(
    gw: InProcessGateway,
) -> None:
    task_id = gw.client.post("/api/v1/tasks", json={"name": "ml.train", "countdown": 600}).json()[
        "task_id"
    ]
    t0 = datetime.now(UTC)
    session = gw.db.sessions()
    try:
        _project(session, _status(task_id, TaskState.STARTED, t0))
        session.rollback()
        _project(session, _status(task_id, TaskState.FAILURE, t0 + timedelta(seconds=1)))
        session.commit()
    finally:
        session.close()
    shown = gw.client.get(f"/api/v1/tasks/{task_id}").json()
    assert shown["state"] == "FAILURE"
    assert [h["state"] for h in shown["history"]] == ["SCHEDULED", "FAILURE"]
