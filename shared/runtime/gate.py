"""The task gate: whether a command may run now — revoked or expired tasks end without
running, a task whose ETA is ahead waits in a delay tier. Pure decisions, no clients."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from shared.events import Command, TaskState
from shared.tasks import RevocationRegistry


@dataclass(frozen=True)
class GateVerdict:
    """`final` ends the task without running it; `wait` (seconds) defers it; neither: run."""

    final: TaskState | None = None
    wait: float = 0.0

    @property
    def runs(self) -> bool:
        return self.final is None and self.wait <= 0


RUN = GateVerdict()


def admit(
    task_id: str, task: Command, now: datetime, revocations: RevocationRegistry | None
) -> GateVerdict:
    """Revocation first, then expiry, then the ETA."""
    if revocations is not None and revocations.is_revoked(task_id):
        return GateVerdict(final=TaskState.REVOKED)
    options = task.options
    if options.expires is not None and options.expires <= now:
        return GateVerdict(final=TaskState.EXPIRED)
    if options.eta is not None and options.eta > now:
        return GateVerdict(wait=(options.eta - now).total_seconds())
    return RUN
