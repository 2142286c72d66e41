"""A fixed set of worker lanes: records with the same key run in one lane, in order; records
with different keys run concurrently. The poll loop hands work over and never waits on it."""

from __future__ import annotations

import logging
import queue
import threading
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field

from shared.producer import OutgoingRecord

log = logging.getLogger(__name__)


@dataclass(eq=False)
class Job:
    """One unit of lane work. `deadline` (monotonic) bounds it: past it `cancelled` is set
    (cooperative), and past it plus a grace the lane is given a fresh thread and the job is
    `abandoned` (whatever it still does can no longer commit)."""

    run: Callable[[], None]
    deadline: float | None = None
    cancelled: threading.Event = field(default_factory=threading.Event)
    abandoned: bool = False
    # What to send instead of the abandoned job's outputs (its time-limit failure).
    on_abandon: Callable[[], None] | None = None
    # A task's STARTED, held back so that a short job sends it in one batch with its outcome;
    # whoever takes it first sends it: the job's outputs, its first progress report, or the
    # poll loop once `announce_at` (monotonic) has passed.
    announcement: OutgoingRecord | None = None
    announce_at: float = 0.0
    _taking: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def hold_announcement(self, record: OutgoingRecord, at: float) -> None:
        with self._taking:
            self.announcement, self.announce_at = record, at

    def take_announcement(self) -> list[OutgoingRecord]:
        """The held announcement, to the first caller only ([] for the others), who sends it
        before anything else of the job."""
        if self.announcement is None:
            return []
        with self._taking:
            record, self.announcement = self.announcement, None
        return [record] if record is not None else []

    def send_announcement(self, send: Callable[[list[OutgoingRecord]], None]) -> None:
        """Send the held announcement now unless it was taken: under the lock, so the job's
        own take waits until it is produced and what the job sends next comes after it."""
        with self._taking:
            if self.announcement is not None:
                send([self.announcement])
                self.announcement = None


class Lane:
    """One queue and the thread that drains it."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.queue: queue.SimpleQueue[Job | None] = queue.SimpleQueue()
        self.current: Job | None = None
        self.generation = 0
        self._threads: list[threading.Thread] = []
        self._spawn()

    def _spawn(self) -> None:
        thread = threading.Thread(
            target=self._drain, args=(self.generation,), name=self.name, daemon=True
        )
        self._threads = [t for t in self._threads if t.is_alive()] + [thread]
        thread.start()

    def _drain(self, generation: int) -> None:
        while generation == self.generation:
            job = self.queue.get()
            if job is None:
                return
            self.current = job
            try:
                job.run()
            except BaseException:  # a job reports its own failures; this is a last resort
                log.exception("lane %s: job crashed", self.name)
            finally:
                if generation == self.generation:
                    self.current = None

    def replace_thread(self) -> None:
        """Abandon the thread stuck in the current job; a new one drains the queue."""
        self.generation += 1
        self.current = None
        self._spawn()

    def alive(self) -> bool:
        return any(t.is_alive() for t in self._threads)

    def join(self, deadline: float) -> None:
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))


class KeyedLanes:
    """`count` lanes; a key always maps to the same lane."""

    def __init__(self, count: int, name: str) -> None:
        if count < 1:
            raise ValueError("lanes must be at least 1")
        self.lanes = [Lane(f"{name}-lane-{i}") for i in range(count)]

    def index_of(self, key: bytes) -> int:
        return zlib.crc32(key) % len(self.lanes)

    def submit(self, key: bytes, job: Job) -> None:
        self.lanes[self.index_of(key)].queue.put(job)

    def overdue(self, now: float, grace: float) -> list[Job]:
        """Cancel running jobs past their deadline; return (and abandon) those past the grace."""
        abandoned = []
        for lane in self.lanes:
            job = lane.current
            if job is None or job.deadline is None or now < job.deadline:
                continue
            job.cancelled.set()
            if now >= job.deadline + grace:
                job.abandoned = True
                lane.replace_thread()
                abandoned.append(job)
        return abandoned

    def announce_due(self, now: float, send: Callable[[list[OutgoingRecord]], None]) -> None:
        """Send the announcements of running jobs that are due by `now`."""
        for lane in self.lanes:
            job = lane.current
            if job is not None and job.announcement is not None and job.announce_at <= now:
                job.send_announcement(send)

    def busy(self) -> int:
        return sum(1 for lane in self.lanes if lane.current is not None)

    def stop(self, timeout: float) -> None:
        for lane in self.lanes:
            lane.queue.put(None)
        deadline = time.monotonic() + timeout
        for lane in self.lanes:
            lane.join(deadline)
