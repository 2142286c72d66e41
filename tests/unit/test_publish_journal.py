"""The publisher's step journal on its tables: its transactions per publish, and what a restart
sees at each point of the flow."""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa

from adplatforms.steps import run_steps
from services.publisher.journal import DbStepJournal
from services.publisher.models import metadata
from shared.db import Database
from tests.support.creators import one_at_a_time


def journal_db(tmp_path: Path) -> Database:
    db = Database("", "publisher", str(tmp_path))
    metadata.create_all(db.engine)
    return db


def test_an_id_is_durable_with_the_next_attempt_and_at_the_end(tmp_path: Path) -> None:
    db = journal_db(tmp_path)
    journal = DbStepJournal(db, "c1", "meta")
    journal.mark_attempt("campaign")
    journal.record("campaign", "111")
    after_crash = DbStepJournal(db, "c1", "meta")  # a restart before the next step's commit
    assert after_crash.was_attempted("campaign") and after_crash.created_id("campaign") is None
    journal.mark_attempt("adset")  # commits the campaign id with the adset's attempt
    restarted = DbStepJournal(db, "c1", "meta")
    assert restarted.created_id("campaign") == "111" and restarted.was_attempted("adset")
    journal.record("adset", "222")
    journal.flush()
    assert DbStepJournal(db, "c1", "meta").created() == {"campaign": "111", "adset": "222"}


def test_an_object_found_on_the_platform_without_an_attempt_is_recorded(tmp_path: Path) -> None:
    db = journal_db(tmp_path)
    journal = DbStepJournal(db, "c2", "google")
    journal.record("budget", "b-1")
    journal.flush()
    restarted = DbStepJournal(db, "c2", "google")
    assert restarted.created_id("budget") == "b-1" and restarted.was_attempted("budget")
    assert DbStepJournal(db, "other", "google").created() == {}


def test_a_planned_flow_commits_twice_and_a_restart_looks_up_every_unrecorded_step(
    tmp_path: Path,
) -> None:
    db = journal_db(tmp_path)
    commits: list[int] = []
    sa.event.listen(db.engine, "commit", lambda conn: commits.append(1))
    steps = ("campaign", "adset", "creative", "ad")
    journal = DbStepJournal(db, "c3", "meta")
    journal.begin(steps)
    assert len(commits) == 1  # every attempt is durable before the first call
    crashed = DbStepJournal(db, "c3", "meta")
    assert all(crashed.was_attempted(s) for s in steps) and crashed.created() == {}
    created: list[str] = []

    def create(step: str, ids: object) -> str:
        created.append(step)
        return f"id-{step}"

    ids = run_steps(steps, journal, lambda step, ids: None, one_at_a_time(create))
    journal.flush()
    assert len(commits) == 2 and created == list(steps)  # no per-step transaction, no lookup
    assert DbStepJournal(db, "c3", "meta").created() == ids
    # A restart after the crash above looks each planned step up before creating it again.
    looked_up: list[str] = []

    def find(step: str, ids: object) -> str | None:
        looked_up.append(step)
        return "found-campaign" if step == "campaign" else None

    crashed.begin(steps)
    resumed = run_steps(steps, crashed, find, one_at_a_time(create))
    assert looked_up == list(steps) and resumed["campaign"] == "found-campaign"
    assert created == [*steps, "adset", "creative", "ad"]


def test_the_ids_at_the_end_go_with_the_handlers_transaction(tmp_path: Path) -> None:
    db = journal_db(tmp_path)
    commits: list[int] = []
    sa.event.listen(db.engine, "commit", lambda conn: commits.append(1))
    steps = ("campaign", "adset")
    journal = DbStepJournal(db, "c4", "meta")
    journal.begin(steps)
    for step in steps:
        journal.record(step, f"{step}-1")
    with db.session() as rolled_back:
        journal.flush(rolled_back)
        rolled_back.rollback()  # the handler failed after the flow: nothing saved
    assert DbStepJournal(db, "c4", "meta").created() == {}
    again = DbStepJournal(db, "c4", "meta")
    for step in steps:
        again.record(step, f"{step}-1")
    before = len(commits)
    with db.session() as handlers:
        again.flush(handlers)
        handlers.commit()
    assert len(commits) == before + 1  # no commit of its own: the handler's carries the ids
    assert DbStepJournal(db, "c4", "meta").created() == {
        "campaign": "campaign-1",
        "adset": "adset-1",
    }
