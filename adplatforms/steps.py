"""Resumable publishing: the one way every adapter walks its steps through a `StepJournal`
(docs/platforms.md) — skip a step with an id, look up an attempted one by its tag, and mark
an attempt (durable, with the cancellation check) before creating anything."""

from __future__ import annotations

from collections.abc import Callable, Mapping

from adplatforms.base import StepJournal

# (step, ids created so far) -> the object's id
FindStep = Callable[[str, Mapping[str, str]], str | None]
CreateStep = Callable[[str, Mapping[str, str]], str]


def run_steps(
    steps: tuple[str, ...], journal: StepJournal, find: FindStep, create: CreateStep
) -> dict[str, str]:
    """Create (or finish creating) every step in order; returns step -> external id.

    A step attempted earlier but without a recorded id may exist on the platform (a crash or
    a timeout after the call): `find` looks for it first. Only when it is not found is a new
    attempt marked, and then created."""
    ids: dict[str, str] = {}
    for step in steps:
        known = journal.created_id(step)
        if known is None:
            known = find(step, ids) if journal.was_attempted(step) else None
            if known is None:
                journal.mark_attempt(step)
                known = create(step, ids)
            journal.record(step, known)
        ids[step] = known
    return ids
