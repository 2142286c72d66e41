"""The resumable-steps helper both adapters use: pure logic, no platform."""

from __future__ import annotations

from collections.abc import Mapping

import pytest

from adplatforms.steps import run_steps
from tests.support.creators import one_at_a_time
from tests.support.journal import MemoryJournal

STEPS = ("budget", "campaign", "ad_group", "ad")


class Cancelled(Exception):
    pass


class CancellingJournal(MemoryJournal):
    """Raises on `mark_attempt`, as the publisher's journal does past the time limit."""

    def mark_attempt(self, step: str) -> None:
        raise Cancelled(step)


class FakePlatform:
    def __init__(self, existing: dict[str, str] | None = None) -> None:
        self.existing = existing or {}
        self.created: list[str] = []
        self.looked_up: list[str] = []

    def find(self, step: str, ids: Mapping[str, str]) -> str | None:
        self.looked_up.append(step)
        return self.existing.get(step)

    def create(self, step: str, ids: Mapping[str, str]) -> str:
        assert all(s in ids for s in STEPS[: STEPS.index(step)]), "parents first"
        self.created.append(step)
        return f"{step}-new"


def test_a_fresh_flow_marks_and_creates_every_step_in_order() -> None:
    journal, platform = MemoryJournal(), FakePlatform()
    ids = run_steps(STEPS, journal, platform.find, one_at_a_time(platform.create))
    assert ids == {step: f"{step}-new" for step in STEPS}
    assert platform.created == list(STEPS)
    assert platform.looked_up == []
    assert journal.attempted == set(STEPS)


def test_recorded_steps_are_skipped_and_their_ids_returned() -> None:
    journal = MemoryJournal(ids={"budget": "b-1", "campaign": "c-1"})
    platform = FakePlatform()
    ids = run_steps(STEPS, journal, platform.find, one_at_a_time(platform.create))
    assert ids["budget"] == "b-1" and ids["campaign"] == "c-1"
    assert platform.created == ["ad_group", "ad"]


def test_an_attempted_step_found_on_the_platform_is_reused_not_created() -> None:
    journal = MemoryJournal(ids={"budget": "b-1"}, attempted={"campaign"})
    platform = FakePlatform(existing={"campaign": "c-found"})
    ids = run_steps(STEPS, journal, platform.find, one_at_a_time(platform.create))
    assert ids["campaign"] == "c-found" and journal.ids["campaign"] == "c-found"
    assert platform.looked_up == ["campaign"]
    assert "campaign" not in platform.created


def test_an_attempted_step_not_found_marks_a_new_attempt_before_creating() -> None:
    journal = CancellingJournal(ids={"budget": "b-1"}, attempted={"campaign"})
    platform = FakePlatform()
    with pytest.raises(Cancelled, match="campaign"):
        run_steps(STEPS, journal, platform.find, one_at_a_time(platform.create))
    assert platform.looked_up == ["campaign"]
    assert platform.created == []  # the cancellation check ran before the platform call
