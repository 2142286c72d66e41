"""Event contracts: checked-in schemas are current, and model changes stay compatible."""

from __future__ import annotations

from shared import contracts
from shared.events import CONTRACTS
from shared.topics import TOPIC_SPECS, TopicNames, parse_tiers


def test_checked_in_schemas_and_asyncapi_are_current() -> None:
    assert contracts.stale() == [], "run `make schemas`"


def test_models_do_not_break_published_schema_versions() -> None:
    assert contracts.incompatible() == []


def test_breaking_changes_are_detected() -> None:
    old = {"properties": {"a": {"type": "string"}, "b": {"type": "integer"}}, "required": ["a"]}
    new = {
        "properties": {"a": {"type": "integer"}, "c": {"type": "string"}},
        "required": ["a", "c"],
    }
    problems = contracts.breaking_changes(old, new)
    assert "field 'a' changed type" in problems
    assert "field 'b' removed" in problems
    assert "field 'c' became required" in problems
    assert contracts.breaking_changes(old, old) == []


def test_every_event_type_has_a_declared_topic() -> None:
    assert set(CONTRACTS) <= set(TOPIC_SPECS)


def test_consumed_topics_get_retry_tiers_and_a_dead_letter_topic() -> None:
    names = TopicNames("p.", parse_tiers("1s:1,3s:3"))
    physical = {name for name, _ in names.all_specs()}
    assert {
        "p.campaign.publish_requested.retry.1s",
        "p.campaign.publish_requested.retry.3s",
        "p.campaign.publish_requested.dlq",
    } <= physical
    assert "p.task.revoked.dlq" not in physical
    assert names.logical("p.campaign.publish_requested.retry.3s") == "campaign.publish_requested"
    assert names.logical("p.campaign.publish_requested.dlq") == "campaign.publish_requested"
    tier = names.tier_of("p.task.status.retry.3s")
    assert tier is not None and tier.delay == 3


def test_holding_topics_get_few_partitions_and_never_more_than_their_source() -> None:
    names = TopicNames("p.", parse_tiers("1s:1,3s:3"), holding_partitions=2)
    partitions = {name: spec.partitions for name, spec in names.all_specs()}
    assert partitions["p.campaign.publish_requested"] == 6
    assert partitions["p.campaign.publish_requested.retry.1s"] == 2
    assert partitions["p.campaign.publish_requested.dlq"] == 2
    assert partitions["p.ml.training_requested.retry.3s"] == 1  # its source has one
    assert TopicNames("p.").holding_partitions == 1  # the default
