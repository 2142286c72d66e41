"""The chaos test: ≥ 200 publishes across both platforms and sync runs while the sandbox fails
10 % of calls transiently, both publisher replicas, the sync worker and the gateway are
SIGKILLed and restarted, the broker is restarted once and — on PostgreSQL, on a cluster of the
test's own — the database server too. Every task must end SUCCESS and be projected as such,
with exactly one campaign tree per publish on the sandbox and nothing dead-lettered. Runs on
the embedded SQLite default and on PostgreSQL."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from confluent_kafka import Consumer, TopicPartition

from infra import kafka_broker
from infra.ports import free_port
from infra.processes import ServiceProcess
from infra.waiting import wait_for
from shared.events import TaskState
from shared.topics import TOPICS, TopicNames, parse_tiers
from tests.conftest import TEST_MAX_PARTITIONS, TEST_TIERS, Sandbox
from tests.support.campaigns import create_campaign, create_job, publish
from tests.support.postgres_cluster import PostgresCluster, private_cluster, unavailable_reason

pytestmark = [pytest.mark.e2e, pytest.mark.chaos]

PUBLISHES = int(os.environ.get("ADFLUX_CHAOS_PUBLISHES", "200"))
# Generous retries: at a 10 % fault rate a 4-call flow fails ~34 % of attempts.
RETRIES = {"max_retries": 15, "retry_delay": 0.5}
SYNC_TASKS: tuple[tuple[str, dict[str, str]], ...] = (
    ("campaign.sync", {"platform": "meta"}),
    ("campaign.sync", {"platform": "google"}),
    ("metrics.refresh", {}),
)
# What the runtime logs when a record leaves its lane for a delay tier (shared/runtime).
DEFERRED = "deferring a record of"


@dataclass
class ChaosDatabase:
    """The services' database: the embedded SQLite default (url "") or a private cluster."""

    url: str
    cluster: PostgresCluster | None = None


@pytest.fixture(params=["sqlite", "postgres"])
def chaos_database(request: pytest.FixtureRequest) -> Iterator[ChaosDatabase]:
    if request.param == "sqlite":
        yield ChaosDatabase("")
        return
    reason = unavailable_reason()
    if reason is not None:
        pytest.skip(reason)
    with private_cluster() as cluster:
        yield ChaosDatabase(cluster.url, cluster)


@pytest.fixture
def chaos_broker(tmp_path: Path) -> Iterator[kafka_broker.BrokerSpec]:
    """A broker of this test's own, so restarting it disturbs no other test."""
    spec = kafka_broker.BrokerSpec(
        port=free_port(),
        controller_port=free_port(),
        data_dir=tmp_path / "kafka",
        pid_file=tmp_path / "kafka.pid",
        log_file=tmp_path / "kafka.log",
    )
    kafka_broker.start(spec)
    yield spec
    kafka_broker.stop(spec, sig=9)


@dataclass
class Member:
    """One service process and the URL that says whether it is ready."""

    process: ServiceProcess
    readyz: str

    def ready(self) -> bool:
        if not self.process.alive():
            raise AssertionError(f"{self.process.name} exited:\n{self.process.log()[-3000:]}")
        try:
            return httpx.get(self.readyz, timeout=2).status_code == 200
        except httpx.HTTPError:
            return False


@dataclass
class Fleet:
    """Every AdFlux process of the run: the gateway, two publishers and the sync worker."""

    gateway: Member
    workers: dict[str, Member]
    log: list[str] = field(default_factory=list)

    @property
    def members(self) -> list[Member]:
        return [self.gateway, *self.workers.values()]

    def stop(self) -> None:
        for member in self.members:
            member.process.stop()

    def wait_ready(self, what: str, timeout: float = 90.0) -> None:
        wait_for(lambda: all(m.ready() for m in self.members), timeout, 0.2, what)

    def wait_unready(self, what: str, timeout: float = 60.0) -> None:
        wait_for(lambda: not any(m.ready() for m in self.members), timeout, 0.2, what)

    def crash(self, member: Member) -> None:
        """SIGKILL and start again, as a supervisor would."""
        member.process.kill()
        member.process.start()
        self.log.append(f"SIGKILL {member.process.name}")

    def deferrals(self) -> int:
        """Records the workers deferred to a delay tier after infrastructure errors."""
        return sum(m.process.log().count(DEFERRED) for m in self.workers.values())

    def dead(self) -> list[str]:
        return [m.process.name for m in self.members if not m.process.alive()]


def until(condition: Callable[[], bool], timeout: float, interval: float = 0.5) -> bool:
    """Whether `condition` came true within `timeout` seconds (for waits that may end
    either way)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)
    return True


def start_fleet(env: dict[str, str], log_dir: Path) -> Fleet:
    http_port = free_port()
    gateway = ServiceProcess("gateway", {**env, "ADFLUX_HTTP_PORT": str(http_port)}, log_dir)
    workers = {}
    for service, name in (
        ("publisher", "publisher-0"),
        ("publisher", "publisher-1"),
        ("sync",) * 2,
    ):
        port = free_port()
        process = ServiceProcess(service, {**env, "ADFLUX_METRICS_PORT": str(port)}, log_dir, name)
        workers[name] = Member(process, f"http://127.0.0.1:{port}/readyz")
    fleet = Fleet(Member(gateway, f"http://127.0.0.1:{http_port}/readyz"), workers)
    for member in fleet.members:  # together, as replicas start: migrations take turns
        member.process.start()
    wait_for(lambda: all(m.ready() for m in fleet.members), 90, 0.2, "every member ready")
    return fleet


def dead_letters_on_broker(bootstrap: str, names: TopicNames) -> dict[str, int]:
    """Records in every dead-letter topic, read from the broker itself (not the read model)."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"chaos-{uuid.uuid4()}"})
    try:
        counts: dict[str, int] = {}
        for spec in TOPICS:
            if not spec.consumed:
                continue
            topic = names.dlq(spec.name)
            metadata = consumer.list_topics(topic, timeout=10).topics[topic]
            counts[topic] = 0
            for partition in metadata.partitions:
                low, high = consumer.get_watermark_offsets(
                    TopicPartition(topic, partition), timeout=10
                )
                counts[topic] += high - low
        return counts
    finally:
        consumer.close()


@pytest.mark.timeout(480)
def test_chaos_every_task_succeeds_exactly_once(
    chaos_database: ChaosDatabase,
    chaos_broker: kafka_broker.BrokerSpec,
    sandbox: Sandbox,
    tmp_path: Path,
) -> None:
    names = TopicNames(
        f"chaos{uuid.uuid4().hex[:8]}.", parse_tiers(TEST_TIERS), TEST_MAX_PARTITIONS
    )
    env = {
        **sandbox.env(),
        "ADFLUX_KAFKA_BOOTSTRAP": chaos_broker.bootstrap,
        "ADFLUX_TOPIC_PREFIX": names.prefix,
        "ADFLUX_TOPIC_MAX_PARTITIONS": str(TEST_MAX_PARTITIONS),
        "ADFLUX_DATABASE_URL": chaos_database.url,
        "ADFLUX_RETRY_TIERS": TEST_TIERS,
        "ADFLUX_DEFAULT_RETRY_DELAY": "1",
        "ADFLUX_METRICS_PORT": "0",
        "ADFLUX_DATA_DIR": str(tmp_path / "data"),
        "ADFLUX_API_TOKEN": "test-token",
        "ADFLUX_LOG_JSON": "true",
    }
    fleet = start_fleet(env, tmp_path)
    api = httpx.Client(
        base_url=fleet.gateway.readyz.removesuffix("/readyz") + "/api/v1",
        headers={"Authorization": "Bearer test-token"},
        timeout=30,
    )
    try:
        fleet.wait_ready("every service to be ready")
        for platform in ("meta", "google"):
            sandbox.fault(platform=platform, operation="*", kind="transient", rate=0.1)

        def restart_broker() -> None:
            kafka_broker.stop(chaos_broker, sig=15)
            kafka_broker.start(chaos_broker)
            fleet.log.append("broker restart")

        def restart_database() -> None:
            cluster = chaos_database.cluster
            assert cluster is not None
            # Every process past its start-up (a process starting without its database exits).
            fleet.wait_ready("every service to be ready before the database goes away")
            deferred_before = fleet.deferrals()
            cluster.stop()
            fleet.wait_unready("every service to see the database gone")
            # Down long enough for a record to outlast its tries in place and be deferred to a
            # delay tier, when one is in flight (bounded: there may be none).
            deferred = until(lambda: fleet.deferrals() > deferred_before, 15.0)
            cluster.start()
            fleet.wait_ready("every service to be ready once the database is back")
            fleet.log.append(f"database restart ({'with' if deferred else 'no'} deferrals)")

        def crash_gateway() -> None:
            fleet.crash(fleet.gateway)
            fleet.gateway.process.wait_http_ok(fleet.gateway.readyz.replace("readyz", "healthz"))

        chaos: dict[int, Callable[[], None]] = {
            int(PUBLISHES * 0.15): lambda: fleet.crash(fleet.workers["publisher-0"]),
            int(PUBLISHES * 0.25): lambda: fleet.crash(fleet.workers["sync"]),
            int(PUBLISHES * 0.35): crash_gateway,
            int(PUBLISHES * 0.45): lambda: fleet.crash(fleet.workers["publisher-1"]),
            int(PUBLISHES * 0.55): restart_broker,
            int(PUBLISHES * 0.80): lambda: fleet.crash(fleet.workers["publisher-0"]),
        }
        if chaos_database.cluster is not None:
            chaos[int(PUBLISHES * 0.68)] = restart_database

        started = time.monotonic()
        job_id = create_job(api)
        publishes: list[str] = []
        syncs: list[str] = []
        for i in range(PUBLISHES):
            platform = "meta" if i % 2 == 0 else "google"
            campaign_id = create_campaign(
                api, platform, name=f"Chaos {i}", job_id=job_id, daily_budget="10.00"
            )
            publishes.append(publish(api, campaign_id, **RETRIES))
            if i % 20 == 10:
                name, kwargs = SYNC_TASKS[len(syncs) % len(SYNC_TASKS)]
                response = api.post("/tasks", json={"name": name, "kwargs": kwargs, **RETRIES})
                assert response.status_code == 202, response.text
                syncs.append(response.json()["task_id"])
            if i in chaos:
                chaos[i]()
        tasks = publishes + syncs

        unfinished: list[str] = []

        def all_final() -> bool:
            listed = api.get("/tasks", params={"limit": 1000})
            assert listed.status_code == 200, listed.text
            final = {t["task_id"] for t in listed.json() if TaskState(t["state"]).is_final}
            unfinished[:] = [t for t in tasks if t not in final]
            return not unfinished

        try:
            wait_for(all_final, 240, 1.0, f"{len(tasks)} tasks to finish")
        except AssertionError as exc:
            sample = {t: api.get(f"/tasks/{t}").json()["state"] for t in unfinished[:5]}
            raise AssertionError(
                f"{len(unfinished)} of {len(tasks)} tasks unfinished (e.g. {sample}); "
                f"chaos done: {fleet.log}; died: {fleet.dead()}; logs in {tmp_path}"
            ) from exc
        elapsed = time.monotonic() - started
        # Every process is up and ready (a gateway whose outbox relay died is not).
        fleet.wait_ready("every service to be ready at the end")

        # Every task's SUCCESS is projected in the gateway's read model.
        states = {t: api.get(f"/tasks/{t}").json() for t in tasks}
        failed = {t: s for t, s in states.items() if s["state"] != "SUCCESS"}
        assert failed == {}

        # Exactly one campaign tree per publish on the platforms.
        sandbox.assert_one_tree_per_publish(PUBLISHES)
        active = api.get("/campaigns", params={"status": "active", "limit": 1000}).json()
        assert len(active) == PUBLISHES
        assert len({c["external_ids"]["campaign"] for c in active}) == PUBLISHES

        # Nothing dead-lettered, on the broker nor in the gateway's record of it.
        assert set(dead_letters_on_broker(chaos_broker.bootstrap, names).values()) == {0}
        assert api.get("/dead-letters", params={"include_replayed": True}).json() == []
        assert api.get("/outbox/refused").json() == []

        # The sync worker, killed once, still knows every published campaign.
        sandbox.clear_faults()

        def refreshed_all() -> dict[str, Any] | None:
            response = api.post("/tasks", json={"name": "metrics.refresh", **RETRIES})
            assert response.status_code == 202, response.text
            task_id = response.json()["task_id"]
            task = wait_for(
                lambda: (t := api.get(f"/tasks/{task_id}").json())["state"] == "SUCCESS" and t,
                60,
                0.2,
                "a metrics refresh",
            )
            return task if task["result"]["updated"] == PUBLISHES else None

        wait_for(refreshed_all, 60, 0.5, f"a metrics refresh that updates {PUBLISHES} campaigns")
        retried = sum(1 for s in states.values() if s["attempts"] > 1)
        print(
            f"chaos ({'postgresql' if chaos_database.cluster else 'sqlite'}): "
            f"{PUBLISHES} publishes and {len(syncs)} syncs in {elapsed:.1f}s, {retried} retried, "
            f"{sandbox.stats()['requests']} platform requests; {', '.join(fleet.log)}"
        )
    finally:
        api.close()
        fleet.stop()
