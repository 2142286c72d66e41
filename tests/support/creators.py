"""A step creator for driving `run_steps` in tests with one create call per step, in order
(the adapters create their missing steps in one platform request each)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from adplatforms.base import StepJournal
from adplatforms.steps import CreateSteps

# (step, ids known so far) -> the object's id
CreateStep = Callable[[str, Mapping[str, str]], str]


def one_at_a_time(create: CreateStep) -> CreateSteps:
    """Mark, create and record each missing step in turn."""

    def create_in_turn(
        missing: Sequence[str], ids: Mapping[str, str], journal: StepJournal
    ) -> None:
        known = dict(ids)
        for step in missing:
            journal.mark_attempt(step)
            known[step] = create(step, known)
            journal.record(step, known[step])

    return create_in_turn
