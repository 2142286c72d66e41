"""An in-memory StepJournal for driving the platform adapters directly in tests."""

from __future__ import annotations

from dataclasses import dataclass, field


class SimulatedCrash(Exception):
    """Raised instead of recording a step, as if the process died right there."""


@dataclass
class MemoryJournal:
    """Steps already created (`ids`, counted as attempted too) and attempted; with
    `crash_on_record`, recording that step raises SimulatedCrash once."""

    ids: dict[str, str] = field(default_factory=dict)
    attempted: set[str] = field(default_factory=set)
    crash_on_record: str | None = None

    def __post_init__(self) -> None:
        self.attempted |= set(self.ids)

    def created_id(self, step: str) -> str | None:
        return self.ids.get(step)

    def was_attempted(self, step: str) -> bool:
        return step in self.attempted

    def mark_attempt(self, step: str) -> None:
        self.attempted.add(step)

    def created(self) -> dict[str, str]:
        return dict(self.ids)

    def record(self, step: str, external_id: str) -> None:
        if step == self.crash_on_record:
            self.crash_on_record = None
            raise SimulatedCrash(step)
        self.ids[step] = external_id
