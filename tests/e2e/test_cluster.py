"""Past one broker: on a local three-node KRaft cluster (the same jars, `make kafka BROKERS=3`),
topics get three replicas and `min.insync.replicas=2` from settings, and SIGKILLing one
broker in the middle of 200 publishes loses nothing: every task SUCCESS, one campaign tree
per publish on the sandbox, no dead letters."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from confluent_kafka.admin import AdminClient, ConfigResource

from infra import kafka_broker
from infra.ports import free_port
from infra.processes import ServiceProcess
from infra.waiting import wait_for
from shared.topics import TopicNames, delete_topics, parse_tiers, provision_topics
from tests.conftest import TEST_MAX_PARTITIONS, TEST_TIERS, Sandbox
from tests.support.campaigns import create_campaign, create_job, publish

pytestmark = [pytest.mark.e2e, pytest.mark.chaos, pytest.mark.timeout(900)]

PUBLISHES = 200
KILLED_AT = PUBLISHES // 2


def free_port_run(count: int) -> int:
    """A first port of `count` consecutive free loopback ports (a node takes two)."""
    for _ in range(50):
        first = free_port()
        sockets = [socket.socket() for _ in range(count)]
        try:
            for offset, sock in enumerate(sockets):
                sock.bind(("127.0.0.1", first + offset))
            return first
        except OSError:
            continue
        finally:
            for sock in sockets:
                sock.close()
    raise AssertionError(f"no {count} consecutive free ports")


@pytest.fixture
def brokers(tmp_path: Path) -> Iterator[list[kafka_broker.BrokerSpec]]:
    """Three brokers of this test's own (never 9092/9093), stopped whatever happens. Ports are
    free when chosen but may be taken before the brokers bind them: then another run of ports."""
    for attempt in range(3):
        specs = kafka_broker.cluster(free_port_run(6), 3, tmp_path / f"kafka-{attempt}")
        try:
            kafka_broker.start_cluster(specs, timeout=120)
        except RuntimeError:
            for spec in specs:
                kafka_broker.stop(spec, sig=9)
            taken = any(
                "Address already in use" in spec.log_file.read_text(errors="replace")
                for spec in specs
                if spec.log_file.exists()
            )
            if not taken or attempt == 2:
                raise
            continue
        try:
            yield specs
        finally:
            for spec in specs:
                kafka_broker.stop(spec, sig=9)
        return


@pytest.fixture
def kafka_bootstrap(brokers: list[kafka_broker.BrokerSpec]) -> str:
    return ",".join(spec.bootstrap for spec in brokers)


@pytest.fixture
def names(topic_prefix: str, kafka_bootstrap: str) -> Iterator[TopicNames]:
    """This test's topics on the cluster, replicated as the services' settings say (3/2)."""
    topic_names = TopicNames(topic_prefix, parse_tiers(TEST_TIERS), TEST_MAX_PARTITIONS)
    provision_topics(kafka_bootstrap, topic_names, replication_factor=3, min_insync_replicas=2)
    yield topic_names
    delete_topics(kafka_bootstrap, topic_names)


def test_a_broker_killed_during_200_publishes_loses_nothing(
    brokers: list[kafka_broker.BrokerSpec],
    kafka_bootstrap: str,
    names: TopicNames,
    sandbox: Sandbox,
    service_env: dict[str, str],
    tmp_path: Path,
) -> None:
    command_topic = names.topic("campaign.publish_requested")
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    partitions = admin.list_topics(command_topic, timeout=10).topics[command_topic].partitions
    assert partitions and all(len(p.replicas) == 3 for p in partitions.values())
    resource = ConfigResource(ConfigResource.Type.TOPIC, command_topic)
    configs = admin.describe_configs([resource])[resource].result(10)
    assert configs["min.insync.replicas"].value == "2"

    env = {
        **service_env,
        **sandbox.env(),
        "ADFLUX_TOPIC_REPLICATION_FACTOR": "3",
        "ADFLUX_TOPIC_MIN_INSYNC_REPLICAS": "2",
    }
    port = free_port()
    gateway = ServiceProcess("gateway", {**env, "ADFLUX_HTTP_PORT": str(port)}, tmp_path).start()
    publishers = [
        ServiceProcess("publisher", env, tmp_path, name=f"publisher-{i}").start() for i in range(2)
    ]
    api = httpx.Client(
        base_url=f"http://127.0.0.1:{port}/api/v1",
        headers={"Authorization": "Bearer test-token"},
        timeout=30,
    )
    try:
        gateway.wait_http_ok(f"http://127.0.0.1:{port}/readyz")
        started = time.monotonic()
        job_id = create_job(api)
        for i in range(PUBLISHES):
            platform = "meta" if i % 2 == 0 else "google"
            campaign_id = create_campaign(
                api, platform, name=f"Cluster {i}", job_id=job_id, daily_budget="10.00"
            )
            publish(api, campaign_id, max_retries=15, retry_delay=0.5)
            if i == KILLED_AT:
                kafka_broker.stop(brokers[0], sig=9)  # the first node: a voter and a leader

        def all_succeeded() -> bool:
            done = api.get(
                "/tasks", params={"state": "SUCCESS", "name": "campaign.publish", "limit": 1000}
            )
            return done.status_code == 200 and len(done.json()) == PUBLISHES

        wait_for(all_succeeded, 300, 1.0, f"{PUBLISHES} publishes to succeed on two brokers")
        elapsed = time.monotonic() - started
        assert api.get("/tasks", params={"state": "FAILURE"}).json() == []
        sandbox.assert_one_tree_per_publish(PUBLISHES)
        assert api.get("/dead-letters", params={"include_replayed": True}).json() == []
        print(f"cluster: {PUBLISHES} publishes, one of three brokers killed, {elapsed:.1f}s")
    finally:
        api.close()
        for process in (*publishers, gateway):
            process.stop()
