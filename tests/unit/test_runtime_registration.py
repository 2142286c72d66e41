"""Handlers register by payload type, and a handler whose payload annotation does not match
the registered model is refused at start-up, not at the first record."""

from __future__ import annotations

from typing import Any

import pytest

from shared.envelope import Envelope
from shared.events import Command, Payload, PublishRequested, TaskStatus
from shared.runtime import ConsumerRuntime, HandlerContext
from shared.topics import TopicNames
from tests.support.memory_broker import MemoryBroker, MemoryProducer


def runtime() -> ConsumerRuntime:
    return ConsumerRuntime(
        service="unit",
        group="g",
        names=TopicNames("unit."),
        producer=MemoryProducer(MemoryBroker()),
    )


def publish(envelope: Envelope, command: PublishRequested, ctx: HandlerContext) -> None: ...


def any_command(envelope: Envelope, command: Command, ctx: HandlerContext) -> None: ...


def status(envelope: Envelope, status: TaskStatus, ctx: HandlerContext) -> None: ...


def untyped(envelope: Envelope, payload, ctx: HandlerContext) -> None: ...  # type: ignore[no-untyped-def]


class Projection:
    def __call__(self, envelope: Envelope, status: TaskStatus, ctx: HandlerContext) -> None: ...


def test_a_handler_registers_by_its_payload_type_and_its_topic_follows() -> None:
    rt = runtime()
    rt.register(PublishRequested, publish)
    rt.register(PublishRequested, any_command)  # a base class of the model is accepted
    rt.register(TaskStatus, Projection())
    assert "unit.campaign.publish_requested" in rt.topics()
    assert "unit.task.status" in rt.topics()


@pytest.mark.parametrize("handler", [status, untyped, Projection()])
def test_a_handler_annotated_for_another_payload_is_refused(handler: Any) -> None:
    with pytest.raises(TypeError, match="PublishRequested"):
        runtime().register(PublishRequested, handler)


def test_a_model_that_is_no_declared_event_is_refused() -> None:
    class Undeclared(Payload):
        pass

    with pytest.raises(TypeError, match="not a declared event"):
        runtime().register(Undeclared, lambda e, p, c: None)
