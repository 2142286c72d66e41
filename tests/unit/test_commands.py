"""The command builder the gateway and the ticker share, and the event declarations that
topics and task routing are derived from."""

from __future__ import annotations

from decimal import Decimal

import pytest

from shared.commands import CommandInvalid, build_command, command_key
from shared.events import (
    EVENTS,
    TASK_COMMANDS,
    JobOpening,
    MetricsRefreshRequested,
    PublishRequested,
    SyncRequested,
    TaskOptions,
)
from shared.topics import TOPIC_SPECS


def test_every_declared_event_has_its_topic_as_declared() -> None:
    assert [spec.name for spec in TOPIC_SPECS.values()] == [e.type for e in EVENTS]
    revoked = TOPIC_SPECS["task.revoked"]
    assert (revoked.partitions, revoked.compacted, revoked.consumed) == (1, True, False)
    assert TOPIC_SPECS["campaign.publish_requested"].partitions == 6


def test_each_task_runs_through_the_command_event_whose_model_names_it() -> None:
    assert TASK_COMMANDS == {
        "campaign.publish": "campaign.publish_requested",
        "campaign.sync": "campaign.sync_requested",
        "metrics.refresh": "metrics.refresh_requested",
        "ml.train": "ml.training_requested",
        "ml.assign_segments": "ml.segmentation_requested",
    }


def test_a_command_is_built_from_its_task_name_kwargs_and_options() -> None:
    options = TaskOptions(max_retries=1)
    command = build_command("campaign.sync", {"platform": "meta"}, options)
    assert isinstance(command, SyncRequested)
    assert (command.platform, command.options) == ("meta", options)


def test_unknown_tasks_and_bad_kwargs_are_invalid() -> None:
    with pytest.raises(CommandInvalid, match="unknown task 'nope'"):
        build_command("nope", {}, TaskOptions())
    with pytest.raises(CommandInvalid, match=r"bad kwargs for ml\.train"):
        build_command("ml.train", {"n_clusters": 1}, TaskOptions())


def test_a_command_is_keyed_by_its_declared_field_else_its_task_name() -> None:
    publish = PublishRequested(
        campaign_id="c1",
        platform="google",
        name="n",
        daily_budget=Decimal(10),
        currency="EUR",
        job=JobOpening(title="t", company="c", url="https://example.com"),
    )
    assert command_key(publish) == "c1"
    assert command_key(SyncRequested(platform="meta")) == "meta"
    assert command_key(MetricsRefreshRequested()) == "metrics.refresh"
    assert command_key(build_command("ml.train", {}, TaskOptions())) == "ml.train"
