"""Provisioning returns only once the broker's metadata shows every new topic with a leader
for each partition: a consumer subscribing right after it finds all its topics (one that
found some missing would rebalance when they appear, fetching nothing meanwhile)."""

from __future__ import annotations

import uuid

import pytest
from confluent_kafka.admin import AdminClient

from shared.topics import TopicNames, delete_topics, parse_tiers, provision_topics
from tests.conftest import TEST_MAX_PARTITIONS, TEST_TIERS

pytestmark = pytest.mark.integration


def test_new_topics_have_leaders_when_provisioning_returns(kafka_bootstrap: str) -> None:
    names = TopicNames(f"prov{uuid.uuid4().hex[:8]}.", parse_tiers(TEST_TIERS), TEST_MAX_PARTITIONS)
    try:
        created = provision_topics(kafka_bootstrap, names)
        topics = AdminClient({"bootstrap.servers": kafka_bootstrap}).list_topics(timeout=5).topics
        specs = dict(names.all_specs())
        assert created and set(created) == set(specs)
        for name in created:
            assert name in topics and topics[name].error is None, name
            partitions = topics[name].partitions
            assert len(partitions) == specs[name].partitions, name
            assert all(p.leader >= 0 for p in partitions.values()), name
    finally:
        delete_topics(kafka_bootstrap, names)
