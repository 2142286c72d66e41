"""Platform quotas shared by every worker, as processes on the real broker: when Meta throttles
one publisher, both publishers and the sync worker learn the block from `platform.throttled`
(each one's /metrics shows it, and so do the gateway's console and /metrics), no call reaches
the sandbox until it ends, and every task still ends SUCCESS afterwards with no dead letter."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from infra.ports import free_port
from infra.processes import ServiceProcess
from infra.waiting import wait_for
from shared.envelope import Envelope, new_event
from shared.events import (
    CampaignPublished,
    JobOpening,
    PublishRequested,
    SyncRequested,
    TaskOptions,
    TaskState,
)
from shared.producer import EventProducer
from shared.topics import TopicNames
from tests.conftest import Gateway, Sandbox
from tests.support.kafka import EventCollector, read_topic

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

BLOCK_SECONDS = 8.0
PUBLISHES = 6
ACCOUNT = "act_1000"


def publish_command(index: int) -> Envelope:
    command = PublishRequested(
        campaign_id=f"c-{uuid.uuid4().hex[:8]}-{index}",
        platform="meta",
        name=f"Nurses {index}",
        daily_budget=Decimal("25.50"),
        currency="EUR",
        job=JobOpening(title="Nurse", company="Hospital", url="https://jobs.example.org/1"),
        options=TaskOptions(retry_delay=1),
    )
    return new_event(command, source="test", subject=command.campaign_id, taskid=str(uuid.uuid4()))


def sync_command() -> Envelope:
    command = SyncRequested(platform="meta", options=TaskOptions(retry_delay=1))
    return new_event(command, source="test", subject="meta", taskid=str(uuid.uuid4()))


def throttled_until(metrics_url: str) -> float:
    """The worker's adflux_platform_throttled_until_seconds for the Meta account (0: none)."""
    families = text_string_to_metric_families(httpx.get(metrics_url, timeout=5).text)
    return next(
        (
            sample.value
            for family in families
            for sample in family.samples
            if sample.name == "adflux_platform_throttled_until_seconds"
            and sample.labels == {"platform": "meta", "account": ACCOUNT}
        ),
        0.0,
    )


@pytest.fixture
def workers(
    service_env: dict[str, str], sandbox: Sandbox, tmp_path: Path
) -> Iterator[dict[str, str]]:
    """Two publishers and a sync worker; name -> its /metrics URL."""
    started: list[ServiceProcess] = []
    urls: dict[str, str] = {}
    try:
        for name, service in (
            ("publisher-1", "publisher"),
            ("publisher-2", "publisher"),
            ("sync", "sync"),
        ):
            port = free_port()
            env = {**service_env, **sandbox.env(), "ADFLUX_METRICS_PORT": str(port)}
            started.append(ServiceProcess(service, env, tmp_path, name=name).start())
            urls[name] = f"http://127.0.0.1:{port}/metrics"
        for process, url in zip(started, urls.values(), strict=True):
            process.wait_http_ok(url.replace("/metrics", "/readyz"), timeout=90)
        yield urls
    finally:
        for process in started:
            process.stop()


def test_a_meta_block_holds_every_worker_until_it_ends_and_every_task_succeeds(
    kafka_bootstrap: str,
    names: TopicNames,
    sandbox: Sandbox,
    workers: dict[str, str],
    gateway: Gateway,
) -> None:
    collector = EventCollector(kafka_bootstrap, [names.topic("task.status")])
    producer = EventProducer(kafka_bootstrap, client_id="test-throttle")
    try:
        # The sync worker knows one Meta campaign, so a sync calls Meta.
        known = CampaignPublished(
            campaign_id="c-known",
            platform="meta",
            external_ids={"campaign": "424242"},
            published_at=datetime.now(UTC),
        )
        producer.send(
            names.topic("campaign.published"), new_event(known, source="t", subject="c-known")
        )

        # The first publish meets the block: Meta answers 80004 with the usage header.
        sandbox.fault(platform="meta", kind="throttle", block_seconds=BLOCK_SECONDS, count=1)
        first = publish_command(0)
        producer.send(names.topic("campaign.publish_requested"), first)
        collector.wait_state(str(first.taskid), TaskState.RETRY, timeout=60)
        block = httpx.get(f"{sandbox.graph_url}/_sandbox/throttles", timeout=5).json()["meta"]
        # Every worker learns it from the broadcast, not from a call of its own.
        wait_for(
            lambda: all(throttled_until(url) >= block["until"] - 0.1 for url in workers.values()),
            timeout=10,
            what="every worker to know the block",
        )
        # The console and the gateway's /metrics show it too.
        wait_for(
            lambda: throttled_until(f"{gateway.url}/metrics") >= block["until"] - 0.1,
            timeout=10,
            what="the gateway to know the block",
        )
        shown = gateway.client.get("/platforms/throttles").json()
        assert [(b["platform"], b["account"], b["blocked"]) for b in shown] == [
            ("meta", ACCOUNT, True)
        ]

        later = [publish_command(i) for i in range(1, PUBLISHES)]
        sync = sync_command()
        producer.send_envelopes(
            [(names.topic("campaign.publish_requested"), e) for e in later]
            + [(names.topic("campaign.sync_requested"), sync)]
        )
        tasks = [str(e.taskid) for e in (first, *later, sync)]
        for task_id in tasks[1:]:
            retried = collector.wait_state(task_id, TaskState.RETRY, timeout=30)
            assert retried.attempt == 1  # deferred without using an attempt
        assert time.time() < block["until"], "the block ended before the test could look"

        for task_id in tasks:
            done = collector.wait_state(task_id, TaskState.SUCCESS, timeout=BLOCK_SECONDS + 60)
            assert not any(s.state is TaskState.FAILURE for s in collector.statuses(task_id))
            if task_id != tasks[0]:
                assert done.attempt == 1
        report = httpx.get(f"{sandbox.graph_url}/_sandbox/throttles", timeout=5).json()["meta"]
        assert report["calls_during_block"] == 0
        assert report["first_call_after_block"] >= report["until"]
        assert sandbox.stats()["meta"]["campaigns"] == PUBLISHES  # one tree per publish
        for topic in ("campaign.publish_requested", "campaign.sync_requested"):
            assert read_topic(kafka_bootstrap, names.dlq(topic), expect=1, timeout=2) == []
    finally:
        producer.close()
        collector.close()
