"""Where the floor's processes meet: the broker and their topics' prefix (from the run)."""

from __future__ import annotations

import os
from typing import Any

BOOTSTRAP = os.environ.get("BENCH_FLOOR_BOOTSTRAP", "127.0.0.1:9092")
PREFIX = os.environ.get("BENCH_FLOOR_PREFIX", "floor.")
COMMANDS, STATUSES = f"{PREFIX}cmd", f"{PREFIX}status"
CLIENT: dict[str, Any] = {"bootstrap.servers": BOOTSTRAP, "socket.nagle.disable": True}
PRODUCER: dict[str, Any] = {**CLIENT, "linger.ms": 0, "acks": "all", "enable.idempotence": True}


def consumer_config(group: str) -> dict[str, Any]:
    return {
        **CLIENT,
        "group.id": f"{PREFIX}{group}",
        "auto.offset.reset": "earliest",
        "fetch.wait.max.ms": 100,
    }
