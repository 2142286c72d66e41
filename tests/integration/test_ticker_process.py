"""Two `python -m services.ticker` processes on one database (PostgreSQL, or the embedded SQLite
default): one leads and fires, the other stands by; when the leader is killed the standby
takes over at a higher epoch, and every fired slot is on Kafka exactly once with its
deterministic task id."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa

from infra.ports import free_port
from infra.processes import ServiceProcess
from infra.waiting import wait_for
from services.ticker.firing import task_id_for
from services.ticker.models import Firing, Lease
from shared.db import Database
from shared.events import TaskState, TaskStatus
from shared.topics import TopicNames
from tests.support.kafka import read_events

pytestmark = pytest.mark.integration

SCHEDULES = """
schedules:
  sync-meta:
    task: campaign.sync
    kwargs: {platform: meta}
    cron: "* * * * *"
"""


@dataclass
class Backend:
    env: dict[str, str]
    db: Database


class TickerProcess:
    def __init__(self, name: str, env: dict[str, str], log_dir: Path) -> None:
        self.port = free_port()
        self.process = ServiceProcess(
            "ticker", {**env, "ADFLUX_METRICS_PORT": str(self.port)}, log_dir, name
        )

    def start(self) -> TickerProcess:
        self.process.start()
        self.process.wait_http_ok(f"http://127.0.0.1:{self.port}/readyz")
        return self

    def metric(self, line_start: str) -> float | None:
        text = httpx.get(f"http://127.0.0.1:{self.port}/metrics", timeout=5).text
        match = re.search(rf"^{re.escape(line_start)} (\S+)$", text, re.MULTILINE)
        return float(match.group(1)) if match else None

    @property
    def pid(self) -> int:
        assert self.process.proc is not None
        return self.process.proc.pid


@pytest.fixture(params=["postgres", "sqlite"])
def backend(request: pytest.FixtureRequest, service_env: dict[str, str]) -> Iterator[Backend]:
    """The tickers' database as they see it (env) and as the test reads it (db)."""
    if request.param == "postgres":
        yield Backend({}, Database(service_env["ADFLUX_DATABASE_URL"], "ticker"))
    else:
        # The embedded default: an SQLite file, a lease that lapses 2 s after the last renewal.
        env = {"ADFLUX_DATABASE_URL": "", "ADFLUX_TICKER_LEASE_TTL": "2"}
        yield Backend(env, Database("", "ticker", service_env["ADFLUX_DATA_DIR"]))


def lease(db: Database) -> tuple[str, int] | None:
    try:
        with db.session() as session:
            row = session.get(Lease, "ticker")
            return (row.owner, row.epoch) if row is not None else None
    except (sa.exc.ProgrammingError, sa.exc.OperationalError):  # not migrated yet
        return None


def fired(db: Database) -> list[tuple[str, datetime, str]]:
    with db.session() as session:
        rows = session.execute(sa.select(Firing).order_by(Firing.slot)).scalars()
        return [(f.schedule, f.slot.astimezone(UTC), f.task_id) for f in rows]


def test_the_standby_process_takes_over_when_the_leader_is_killed_and_no_slot_fires_twice(
    service_env: dict[str, str],
    names: TopicNames,
    kafka_bootstrap: str,
    backend: Backend,
    tmp_path: Path,
) -> None:
    ticker_db = backend.db
    schedules = tmp_path / "schedules.yaml"
    schedules.write_text(SCHEDULES)
    env = {
        **service_env,
        **backend.env,
        "ADFLUX_SCHEDULES_FILE": str(schedules),
        "ADFLUX_TICKER_INTERVAL": "0.2",
        # The slot of the minute just begun is on time at any second: the first start fires
        # it at once, so the test need not wait for a minute to turn.
        "ADFLUX_TICKER_GRACE": "60",
    }
    leader = TickerProcess("ticker-a", env, tmp_path).start()
    standby: TickerProcess | None = None
    try:
        wait_for(lambda: fired(ticker_db), 20, 0.1, "the first firing")
        owner, epoch = lease(ticker_db) or ("", 0)
        assert f":{leader.pid}:" in owner and epoch == 1
        assert leader.metric('adflux_schedule_firings_total{schedule="sync-meta"}') == len(
            fired(ticker_db)
        )
        assert leader.metric("adflux_ticker_leader") == 1.0

        standby = TickerProcess("ticker-b", env, tmp_path).start()
        assert standby.metric("adflux_ticker_leader") == 0.0

        leader.process.kill()
        wait_for(lambda: (lease(ticker_db) or ("", 0))[1] == 2, 20, 0.1, "the standby's takeover")
        owner, _ = lease(ticker_db) or ("", 0)
        assert f":{standby.pid}:" in owner
        new_leader = standby
        wait_for(lambda: new_leader.metric("adflux_ticker_leader") == 1.0, 10, 0.1, "leader")

        # A minute may turn while we read: the leader keeps firing. So Kafka must hold every
        # slot fired before the read, nothing not fired by after it, and no slot twice.
        before = fired(ticker_db)
        for schedule, slot, task_id in before:
            assert task_id == task_id_for(schedule, slot)
        commands = read_events(
            kafka_bootstrap, names.topic("campaign.sync_requested"), len(before) + 1, 3
        )
        statuses = [
            s.payload()
            for s in read_events(kafka_bootstrap, names.topic("task.status"), len(before) + 1, 3)
        ]
        after = {f[2] for f in fired(ticker_db)}
        command_ids = [c.taskid or "" for c in commands]
        status_ids = [s.task_id for s in statuses if isinstance(s, TaskStatus)]
        for ids in (command_ids, status_ids):
            assert len(ids) == len(set(ids)), "a slot fired twice"
            assert {f[2] for f in before} <= set(ids) <= after
        assert {s.state for s in statuses if isinstance(s, TaskStatus)} == {TaskState.PENDING}

        standby.process.stop()
        assert standby.process.proc is not None and standby.process.proc.returncode == 0
    finally:
        leader.process.kill()
        if standby is not None:
            standby.process.kill()
        ticker_db.dispose()
