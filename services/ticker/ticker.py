"""The ticker: on every tick, while it holds the lease, fire each schedule's due slots. A
firing writes its `firings` row (unique per schedule and slot), a PENDING task status and the
command to the outbox, in one transaction: a restart or a second ticker never fires twice."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa

from services.ticker.lease import LeaseLost, TickerLease
from services.ticker.models import Firing, ScheduleState
from services.ticker.planning import firing_id, plan
from shared import metrics
from shared.db import Database
from shared.envelope import new_event
from shared.events import CONTRACTS, TASK_COMMANDS, TaskOptions, TaskState, TaskStatus
from shared.outbox import Outbox
from shared.schedules import Schedule

log = logging.getLogger(__name__)
SOURCE = "ticker"


def utc_now() -> datetime:
    return datetime.now(UTC)


class Ticker:
    def __init__(
        self,
        db: Database,
        outbox: Outbox,
        schedules: dict[str, Schedule],
        lease: TickerLease,
        *,
        grace: float = 30.0,
        interval: float = 1.0,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self.db = db
        self.outbox = outbox
        self.schedules = schedules
        self.lease = lease
        self.grace = grace
        self.interval = interval
        self.clock = clock
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def tick(self) -> list[tuple[str, datetime]]:
        """One round: returns the (schedule, slot) pairs fired."""
        if not self.lease.hold():
            return []
        fired: list[tuple[str, datetime]] = []
        try:
            for schedule in self.schedules.values():
                fired += self._run_schedule(schedule)
        except LeaseLost:
            log.warning("lease lost; standing by")
        if fired:
            self.outbox.notify()
        return fired

    def _run_schedule(self, schedule: Schedule) -> list[tuple[str, datetime]]:
        now = self.clock()
        with self.db.session() as session:
            state = session.get(ScheduleState, schedule.name)
            last = state.last_slot if state is not None else None
        decided = plan(schedule, last, now, self.grace)
        fired = []
        for slot in decided.fire:
            if self.fire(schedule, slot):
                fired.append((schedule.name, slot))
        with self.db.session() as session:
            self.lease.verify(session)
            state = session.get(ScheduleState, schedule.name, with_for_update=True)
            if state is None:
                session.add(ScheduleState(schedule=schedule.name, last_slot=decided.handled_up_to))
            elif decided.handled_up_to > state.last_slot:
                state.last_slot = decided.handled_up_to
        return fired

    def fire(self, schedule: Schedule, slot: datetime) -> bool:
        """Record and emit one firing; False when the slot was already fired."""
        task_id = firing_id(schedule.name, slot)
        expires = slot + timedelta(seconds=schedule.expires) if schedule.expires else None
        options = TaskOptions(priority=schedule.priority, expires=expires)
        command_model = CONTRACTS[TASK_COMMANDS[schedule.task]].model
        command = command_model.model_validate({**schedule.kwargs, "options": options})
        subject = str(schedule.kwargs.get("platform") or schedule.task)
        status = TaskStatus(
            task_id=task_id,
            name=schedule.task,
            state=TaskState.PENDING,
            attempt=1,
            args=list(schedule.args),
            kwargs=dict(schedule.kwargs),
            at=self.clock(),
        )
        try:
            with self.db.session() as session:
                epoch = self.lease.verify(session)
                session.add(
                    Firing(
                        schedule=schedule.name,
                        slot=slot,
                        task_id=task_id,
                        epoch=epoch,
                        fired_at=self.clock(),
                    )
                )
                session.flush()  # the unique (schedule, slot) row first: a duplicate stops here
                self.outbox.add(
                    session,
                    new_event(
                        status,
                        source=SOURCE,
                        subject=task_id,
                        taskid=task_id,
                        event_id=firing_id(schedule.name, slot, "status"),
                    ),
                )
                self.outbox.add(
                    session,
                    new_event(
                        command,
                        source=SOURCE,
                        subject=subject,
                        taskid=task_id,
                        event_id=firing_id(schedule.name, slot, "command"),
                    ),
                )
        except sa.exc.IntegrityError:
            log.info("slot %s of %s was already fired", slot.isoformat(), schedule.name)
            return False
        metrics.SCHEDULE_FIRINGS.labels(schedule.name).inc()
        log.info("fired %s for slot %s as task %s", schedule.name, slot.isoformat(), task_id)
        return True

    # --- lifecycle ------------------------------------------------------------------------------
    def run(self) -> None:
        while not self._stop.is_set():
            try:
                self.tick()
            except sa.exc.SQLAlchemyError:
                log.exception("tick failed; retrying")
            self._stop.wait(self.interval)
        self.lease.release()

    def start(self) -> Ticker:
        self._thread = threading.Thread(target=self.run, name="ticker", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def healthy(self) -> bool:
        return self._thread is not None and self._thread.is_alive()
