"""Building commands: the command payload of a task, from its name, kwargs and options, and
the key its record goes under. The gateway and the ticker both build commands here, so a
task started by either is the same event with the same key (docs/contracts.md)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

from shared.events import CONTRACT_BY_MODEL, CONTRACTS, TASK_COMMANDS, Command, TaskOptions


class CommandInvalid(ValueError):
    """The task is unknown, or its kwargs do not make its command."""


def build_command(task: str, kwargs: Mapping[str, Any], options: TaskOptions) -> Command:
    """The command event payload that runs `task` with `kwargs` and `options`."""
    if task not in TASK_COMMANDS:
        raise CommandInvalid(f"unknown task {task!r}; known: {', '.join(sorted(TASK_COMMANDS))}")
    model = CONTRACTS[TASK_COMMANDS[task]].model
    try:
        command = model.model_validate({**kwargs, "options": options})
    except ValidationError as exc:
        raise CommandInvalid(f"bad kwargs for {task}: {exc}") from exc
    if not isinstance(command, Command):
        raise TypeError(f"{model.__name__} of task {task} is not a command")
    return command


def command_key(command: Command) -> str:
    """The Kafka key (and CloudEvents subject) of `command`: its declared key field's value,
    else its task name."""
    field = CONTRACT_BY_MODEL[type(command)].key
    value = getattr(command, field) if field else None
    return str(value or command.task_name)
