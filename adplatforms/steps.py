"""Resumable publishing: the one way every adapter walks its steps through a `StepJournal`
(docs/platforms.md) — skip a step with an id, look up an attempted one by its tag, and mark
an attempt (durable, with the cancellation check) before the call that creates it. The steps
left to create go to the adapter's creator at once, so that a platform that can create
several objects in one call (Meta's batch requests, Google's `GoogleAdsService.Mutate`)
does."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from adplatforms.base import StepJournal

# (step, ids of the steps before it that exist: recorded or found) -> the object's id
FindStep = Callable[[str, Mapping[str, str]], str | None]
# (steps to create, in order; ids of the others, journal) -> None. A creator marks each
# step's attempt in the journal before the call that creates it and records every id it gets
# back, those before a failure included, then raises the failure.
CreateSteps = Callable[[Sequence[str], Mapping[str, str], StepJournal], None]


def run_steps(
    steps: tuple[str, ...], journal: StepJournal, find: FindStep, create: CreateSteps
) -> dict[str, str]:
    """Create (or finish creating) every step; returns step -> external id.

    A step attempted earlier but without a recorded id may exist on the platform (a crash or
    a timeout after the call): `find` looks for it first. Only the steps not found go to
    `create`."""
    ids: dict[str, str] = {}
    missing: list[str] = []
    for step in steps:
        known = journal.created_id(step)
        if known is None and journal.was_attempted(step):
            known = find(step, ids)
            if known is not None:
                journal.record(step, known)
        if known is None:
            missing.append(step)
        else:
            ids[step] = known
    if missing:
        create(missing, ids, journal)
    for step in missing:
        created = journal.created_id(step)
        if created is None:
            raise RuntimeError(f"the creator returned without an id for step {step!r}")
        ids[step] = created
    return {step: ids[step] for step in steps}
