"""A process that loses a part exits non-zero for its supervisor to restart it, instead of
living on doing nothing while its health check says 200."""

from __future__ import annotations

import threading
from types import SimpleNamespace
from typing import Any

import pytest

from shared.runtime import ConsumerRuntime
from shared.service import Worker, serve, supervise
from shared.topics import TopicNames
from tests.support.memory_broker import MemoryBroker, MemoryConsumer, MemoryProducer


class Part:
    def __init__(self, dies_after: float | None) -> None:
        self.dies_after = dies_after
        self.stopped = False
        self._thread: threading.Thread | None = None

    def start(self) -> Part:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        threading.Event().wait(self.dies_after if self.dies_after is not None else 60)

    def stop(self, timeout: float = 30.0) -> None:
        self.stopped = True

    def healthy(self) -> bool:
        return self._thread is not None and self._thread.is_alive()


def test_supervise_names_the_part_that_died() -> None:
    alive, dying = Part(None).start(), Part(0.1).start()
    assert supervise([alive, dying], threading.Event()) == ["Part"]


def test_supervise_returns_nothing_when_asked_to_stop() -> None:
    stop = threading.Event()
    stop.set()
    assert supervise([Part(None).start()], stop) == []


def test_serve_exits_non_zero_and_stops_the_rest_when_a_part_dies() -> None:
    closed: list[str] = []
    kit: Any = SimpleNamespace(
        service="worker",
        settings=SimpleNamespace(bind_address="127.0.0.1"),
        producer=SimpleNamespace(close=lambda: closed.append("producer")),
        db=SimpleNamespace(dispose=lambda: closed.append("db")),
    )
    survivor, dying = Part(None), Part(0.1)
    runtime: Any = SimpleNamespace()
    with pytest.raises(SystemExit) as exited:
        serve(kit, Worker(runtime, [survivor, dying], {}), None)
    assert "stopped unexpectedly" in str(exited.value.code)
    assert survivor.stopped and closed == ["producer", "db"]


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_a_runtime_whose_loop_crashed_is_not_healthy() -> None:
    broker = MemoryBroker()
    names = TopicNames("unit.")
    broker.create(names)

    def broken_consumer(config: dict[str, Any]) -> MemoryConsumer:
        consumer = MemoryConsumer(broker, config)
        consumer.consume = lambda *a, **k: (_ for _ in ()).throw(RuntimeError("boom"))  # type: ignore[method-assign]
        return consumer

    runtime = ConsumerRuntime(
        service="unit",
        group="g",
        names=names,
        producer=MemoryProducer(broker),
        consumer_factory=broken_consumer,
        broadcast=False,
    )
    runtime.register_raw(names.topic("task.status"), lambda record: None)
    runtime.start()
    thread = runtime._thread
    assert thread is not None
    thread.join(5)
    assert not runtime.healthy()


def test_startup_objects_are_frozen_out_of_the_collectors_reach() -> None:
    import gc

    from shared.service import freeze_startup_objects

    gc.unfreeze()
    assert gc.get_freeze_count() == 0
    try:
        freeze_startup_objects()
        assert gc.get_freeze_count() > 10_000  # every module and type loaded so far
    finally:
        gc.unfreeze()
