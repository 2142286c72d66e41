"""The ticker loop: on every tick, while it holds the lease, fire each schedule's due slots
and the slots still owed to its backfills — unless it is paused or, under the `skip` overlap
policy, its previous firing is still running.

A firing writes, in one transaction that first re-checks the lease epoch, its `firings` row
(unique per schedule and slot), a PENDING task status and the command to the outbox, the
schedule's newest slot and its `schedule.state`: neither a restart, a second, stale ticker
nor a second backfill fires a slot twice.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import sqlalchemy as sa
from prometheus_client import Gauge
from sqlalchemy.orm import Session

from services.ticker.firing import backfill_owed, firing_events, held_back, plan
from services.ticker.lease import LeaseLost, TickerLease
from services.ticker.models import Backfill, Firing, ScheduleState
from services.ticker.state import announce, read_view
from shared import metrics
from shared.background import BackgroundLoop
from shared.db import Database
from shared.logging import bind_event
from shared.outbox import Outbox
from shared.schedules import Schedule

log = logging.getLogger(__name__)

LEADER = Gauge("adflux_ticker_leader", "1 while this ticker holds the lease and fires.")
LEASE_EPOCH = Gauge("adflux_ticker_lease_epoch", "The lease epoch this ticker fires under.")


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class Fired:
    schedule: str
    slot: datetime
    task_id: str


class Ticker(BackgroundLoop):
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
        super().__init__()
        self.thread_name = "ticker"
        self.db = db
        self.outbox = outbox
        self.schedules = schedules
        self.lease = lease
        self.grace = grace
        self.interval = interval
        self.clock = clock
        self.leading = False
        self._announced = False
        now = self.now()
        for schedule in schedules.values():  # a schedule whose kwargs its task rejects: fail now
            try:
                firing_events(schedule, now, now)
            except ValueError as exc:
                raise ValueError(f"schedule {schedule.name!r}: {exc}") from exc

    def now(self) -> datetime:
        return self.clock().astimezone(UTC)

    def tick(self) -> list[Fired]:
        """One round: take or keep the lease, then fire what is due; returns what was fired."""
        try:
            self._set_leading(self.lease.hold())
        except Exception:
            self._set_leading(False)
            raise
        if not self.leading:
            return []
        fired: list[Fired] = []
        try:
            for schedule in self.schedules.values():
                fired += self._run_schedule(schedule)
        except LeaseLost as exc:
            log.warning("%s; standing by", exc)
            self._set_leading(False)
        finally:
            if fired:
                self.outbox.notify()
        return fired

    def _set_leading(self, leading: bool) -> None:
        if leading != self.leading or not self._announced:
            self._announced = True
            if leading:
                log.info("ticker %s leads at epoch %s", self.lease.owner, self.lease.epoch)
            else:
                log.info("ticker %s stands by", self.lease.owner)
        self.leading = leading
        LEADER.set(1 if leading else 0)
        LEASE_EPOCH.set(self.lease.epoch or 0)

    def _run_schedule(self, schedule: Schedule) -> list[Fired]:
        now = self.now()
        with self.db.session() as session:
            state = session.get(ScheduleState, schedule.name)
            last = state.last_slot.astimezone(UTC) if state is not None else None
            view = read_view(session, schedule.name)
        decided = plan(schedule, last, now, self.grace)
        fired: list[Fired] = []
        previous = view.previous_state
        for slot in decided.fire:  # a slot held back is passed over, not owed later
            if reason := held_back(schedule, view.paused, previous):
                log.info("slot %s of %s not fired: %s", slot.isoformat(), schedule.name, reason)
                continue
            if (f := self.fire(schedule, slot)) is not None:
                fired.append(f)
                previous = "PENDING"
        if last is None or decided.handled_up_to > last:
            with self.db.session() as session:  # slots passed over by the misfire policy
                self.lease.verify(session)
                _advance(session, schedule.name, decided.handled_up_to)
        return fired + self._backfill(schedule, view.paused, previous)

    def _backfill(self, schedule: Schedule, paused: bool, previous: str | None) -> list[Fired]:
        """Fire the slots owed to the schedule's open backfills, oldest request first; a slot
        held back waits for a later tick, and a backfill with nothing owed is done."""
        with self.db.session() as session:
            open_ = session.scalars(
                sa.select(Backfill)
                .where(Backfill.schedule == schedule.name, Backfill.done_at.is_(None))
                .order_by(Backfill.requested_at)
            ).all()
            requests = [(b.id, b.start.astimezone(UTC), b.end.astimezone(UTC)) for b in open_]
        fired: list[Fired] = []
        for backfill_id, start, end in requests:
            with self.db.session() as session:
                done = session.scalars(
                    sa.select(Firing.slot).where(
                        Firing.schedule == schedule.name, Firing.slot.between(start, end)
                    )
                )
                owed = backfill_owed(schedule, start, end, {s.astimezone(UTC) for s in done})
            for slot in owed:
                if reason := held_back(schedule, paused, previous):
                    log.info("backfill of %s waits: %s", schedule.name, reason)
                    return fired
                if (f := self.fire(schedule, slot)) is not None:
                    fired.append(f)
                    previous = "PENDING"
            with self.db.session() as session:
                self.lease.verify(session)
                backfill = session.get(Backfill, backfill_id, with_for_update=True)
                if backfill is not None:
                    backfill.done_at = self.now()
            log.info("backfill of %s from %s to %s done", schedule.name, start, end)
        return fired

    def fire(self, schedule: Schedule, slot: datetime) -> Fired | None:
        """Record and emit one firing; None when the slot was already fired. Raises LeaseLost
        when this ticker no longer leads."""
        slot = slot.astimezone(UTC)
        events = firing_events(schedule, slot, self.now())
        try:
            with self.db.session() as session:
                epoch = self.lease.verify(session)
                session.add(
                    Firing(
                        schedule=schedule.name,
                        slot=slot,
                        task_id=events.task_id,
                        epoch=epoch,
                        fired_at=self.now(),
                        state="PENDING",
                    )
                )
                session.flush()  # the unique (schedule, slot) row first: a duplicate stops here
                # PENDING first, so the task is listed before any worker reports on it.
                self.outbox.add(session, events.status)
                self.outbox.add(session, events.command)
                _advance(session, schedule.name, slot, fired=True)
                session.flush()
                self.outbox.add(session, announce(session, schedule.name, self.now()))
        except sa.exc.IntegrityError:
            log.info("slot %s of %s was already fired", slot.isoformat(), schedule.name)
            return None
        metrics.SCHEDULE_FIRINGS.labels(schedule.name).inc()
        with bind_event(events.command):
            log.info(
                "fired %s (%s) for slot %s at epoch %s",
                schedule.name,
                schedule.task,
                slot.isoformat(),
                epoch,
            )
        return Fired(schedule.name, slot, events.task_id)

    # --- lifecycle ------------------------------------------------------------------------------
    def run(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                self.tick()
            except sa.exc.SQLAlchemyError as exc:
                log.warning("tick failed (%s); retrying", exc)
            except Exception:
                log.exception("tick failed; retrying")
            self._stop.wait(max(0.0, self.interval - (time.monotonic() - started)))
        try:
            self.lease.release()
        except sa.exc.SQLAlchemyError as exc:
            log.warning("could not release the lease (%s); it lapses on its own", exc)
        self._set_leading(False)


def _advance(session: Session, schedule: str, slot: datetime, *, fired: bool = False) -> None:
    """Move the schedule's newest handled (and, if `fired`, fired) slot forward, never back."""
    state = session.get(ScheduleState, schedule, with_for_update=True)
    if state is None:
        state = ScheduleState(schedule=schedule, last_slot=slot)
        session.add(state)
    elif slot > state.last_slot:
        state.last_slot = slot
    if fired and (state.last_fired_slot is None or slot > state.last_fired_slot):
        state.last_fired_slot = slot
