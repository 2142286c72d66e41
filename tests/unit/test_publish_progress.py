"""PROGRESS of a publish: one report per platform call (a batch that creates four objects
reports once), sent before the next call and at the end of the flow, never per object."""

from __future__ import annotations

from typing import Any, cast

from services.publisher.handlers import ProgressJournal
from services.publisher.journal import DbStepJournal
from shared.runtime.context import HandlerContext
from tests.support.journal import MemoryJournal

STEPS = ("campaign", "adset", "creative", "ad")


class RecordingContext:
    def __init__(self) -> None:
        self.reports: list[tuple[int, dict[str, Any] | None]] = []
        self.checks = 0

    def progress(self, percent: int, info: dict[str, Any] | None = None) -> None:
        self.reports.append((percent, info))

    def check_cancelled(self) -> None:
        self.checks += 1


def journal_with(ctx: RecordingContext) -> ProgressJournal:
    inner = cast(DbStepJournal, MemoryJournal())
    return ProgressJournal(inner, STEPS, cast(HandlerContext, ctx))


def test_a_batch_of_four_objects_reports_once_at_the_end() -> None:
    ctx = RecordingContext()
    journal = journal_with(ctx)
    for step in STEPS:
        journal.mark_attempt(step)
    for step in STEPS:
        journal.record(step, f"{step}-1")
    assert ctx.reports == []
    journal.report()
    journal.report()  # nothing new: nothing sent
    assert ctx.reports == [(100, {"step": "ad", "steps": list(STEPS)})]
    assert ctx.checks == 4


def test_one_call_per_object_reports_before_each_next_call() -> None:
    ctx = RecordingContext()
    journal = journal_with(ctx)
    for step in STEPS:
        journal.mark_attempt(step)
        journal.record(step, f"{step}-1")
    journal.report()
    assert [percent for percent, _ in ctx.reports] == [25, 50, 75, 100]
