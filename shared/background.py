"""The lifecycle every long-running component shares: `run()` loops in a daemon thread
until `stop()`, and `healthy()` tells whether that thread is still alive."""

from __future__ import annotations

import threading
from typing import Self


class BackgroundLoop:
    """Subclasses implement `run()`, looping until `self._stop` is set."""

    thread_name = "background"

    def __init__(self) -> None:
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def run(self) -> None:
        raise NotImplementedError

    def _wake(self) -> None:
        """Interrupt whatever `run()` waits on besides `self._stop` (override if any)."""

    def start(self) -> Self:
        self._thread = threading.Thread(target=self.run, name=self.thread_name, daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 30.0) -> None:
        self._stop.set()
        self._wake()
        if self._thread is not None:
            self._thread.join(timeout)

    def healthy(self) -> bool:
        return self._thread is not None and self._thread.is_alive()
