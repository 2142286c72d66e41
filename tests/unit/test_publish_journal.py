"""The publisher's step journal on its tables: one transaction per step, and what a restart
sees at each point of the flow."""

from __future__ import annotations

from pathlib import Path

from services.publisher.journal import DbStepJournal
from services.publisher.models import metadata
from shared.db import Database


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
