"""A job's held STARTED: sent once, by whoever takes it first, and never after what the job
itself sends next (the poll loop may announce it while the handler finishes)."""

from __future__ import annotations

import threading
import time

from shared.producer import OutgoingRecord
from shared.runtime.lanes import Job

STARTED = OutgoingRecord("p.task.status", b"t1", b'{"state": "STARTED"}', [])


def test_the_job_takes_its_own_announcement_once() -> None:
    job = Job(run=lambda: None)
    job.hold_announcement(STARTED, time.monotonic() + 60)
    sent: list[list[OutgoingRecord]] = []
    assert job.take_announcement() == [STARTED]
    assert job.take_announcement() == []
    job.send_announcement(sent.append)
    assert sent == []


def test_a_take_during_the_loops_send_waits_until_the_announcement_is_produced() -> None:
    job = Job(run=lambda: None)
    job.hold_announcement(STARTED, time.monotonic())
    produced: list[str] = []
    sending = threading.Event()

    def slow_send(records: list[OutgoingRecord]) -> None:
        sending.set()
        time.sleep(0.2)
        produced.append("STARTED")

    loop = threading.Thread(target=job.send_announcement, args=(slow_send,))
    loop.start()
    assert sending.wait(5)
    taken = job.take_announcement()  # the handler finished meanwhile
    produced.append("SUCCESS")
    loop.join(5)
    assert taken == []
    assert produced == ["STARTED", "SUCCESS"]
