"""The live-worker count that divides a calls-per-second limit: the members of the publisher
and sync consumer groups on the real broker, as they join and leave."""

from __future__ import annotations

import uuid

import pytest
from confluent_kafka import Consumer

from adplatforms.quota_broadcast import PLATFORM_GROUPS, LiveWorkers
from infra.waiting import wait_for
from shared.topics import TopicNames

pytestmark = pytest.mark.integration


def member(bootstrap: str, group: str, topic: str) -> Consumer:
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": group, "client.id": uuid.uuid4().hex}
    )
    consumer.subscribe([topic])
    wait_for(lambda: consumer.poll(0.2) is not None or consumer.assignment(), timeout=30)
    return consumer


def test_live_workers_are_the_members_of_the_publisher_and_sync_groups(
    kafka_bootstrap: str, names: TopicNames
) -> None:
    groups = [names.group(g) for g in PLATFORM_GROUPS]
    live = LiveWorkers(kafka_bootstrap, groups, interval=0.2)
    assert live.refresh() == 1  # nobody yet: a worker counts itself at least
    topic = names.topic("campaign.sync_requested")
    publisher = member(kafka_bootstrap, groups[0], names.topic("campaign.publish_requested"))
    sync = member(kafka_bootstrap, groups[1], topic)
    try:
        wait_for(lambda: live.refresh() == 2, timeout=30, what="two members")
    finally:
        sync.close()
    wait_for(lambda: live.refresh() == 1, timeout=30, what="one member left")
    publisher.close()
