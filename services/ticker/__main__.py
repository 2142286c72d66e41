"""`python -m services.ticker`: fires the schedules of the schedules file while it holds the
leader lease (standing by otherwise), with an outbox relay producing what it fires and a
consumer applying operators' schedule controls and following the tasks it fired."""

from __future__ import annotations

import os
import socket
import uuid

from services.ticker.handlers import ScheduleHandlers
from services.ticker.lease import open_lease
from services.ticker.models import metadata
from services.ticker.settings import TickerSettings
from services.ticker.ticker import Ticker, utc_now
from shared.events import ScheduleControlRequested, TaskStatus
from shared.schedules import load_schedules
from shared.service import build_kit, serve
from shared.settings import get_settings


def main() -> None:
    settings = get_settings(TickerSettings)
    schedules = load_schedules(settings.schedules_file)
    kit = build_kit("ticker", settings, metadata)
    owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
    lease = open_lease(kit.db, owner, settings.ticker_lease_ttl, utc_now)
    ticker = Ticker(
        kit.db,
        kit.outbox,
        schedules,
        lease,
        grace=settings.ticker_grace,
        interval=settings.ticker_interval,
    )
    handlers = ScheduleHandlers(kit.outbox, schedules)
    runtime = kit.runtime()
    runtime.register(ScheduleControlRequested, handlers.control)
    runtime.register(TaskStatus, handlers.task_status)
    worker = kit.worker(
        runtime,
        runs_commands=False,
        relay=kit.relay(),
        extra_components=[ticker],
        extra_readiness={"ticker": ticker.healthy},
    )
    serve(kit, worker, settings.metrics_port)


if __name__ == "__main__":
    main()
