"""What Kafka knows about the workers and queues, for the console: consumer-group members
(from the admin API) with each service's /readyz, and per command topic, its retry tiers and
its dead-letter topic, the lag of every group and partition, the records waiting and the age
of the oldest one. Each queue snapshot also sets the lag gauges Prometheus alerts on."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx
from confluent_kafka import Consumer, KafkaException, TopicPartition
from confluent_kafka import ConsumerGroupTopicPartitions as GroupPartitions
from confluent_kafka.admin import AdminClient, OffsetSpec  # type: ignore[attr-defined]

from shared import metrics
from shared.background import BackgroundLoop
from shared.topics import TOPICS, TopicNames

log = logging.getLogger(__name__)
TIMEOUT = 10.0


class ClusterUnavailable(RuntimeError):
    """The broker did not answer in time."""


@dataclass
class Member:
    service: str
    group: str
    client_id: str
    host: str
    partitions: list[str]


@dataclass
class Worker:
    service: str
    members: list[Member]
    ready: bool | None  # None: the service's /readyz is unknown or did not answer
    readiness: dict[str, Any] | None


@dataclass
class PartitionLag:
    group: str
    partition: int
    committed: int | None
    end: int
    lag: int


@dataclass
class Queue:
    topic: str  # logical command topic
    physical: str
    kind: str  # "main", "retry:<tier>", "dlq"
    partitions: int
    lags: list[PartitionLag] = field(default_factory=list)
    waiting: int = 0
    oldest_waiting_seconds: float | None = None


def _result(future: Any) -> Any:
    try:
        return future.result(timeout=TIMEOUT)
    except KafkaException as exc:
        raise ClusterUnavailable(f"kafka: {exc}") from exc
    except TimeoutError as exc:
        raise ClusterUnavailable("kafka: no answer within the timeout") from exc


class KafkaInspector:
    """Reads the broker's view of this deployment's groups and topics (its topic prefix)."""

    def __init__(
        self, bootstrap: str, names: TopicNames, health_urls: Mapping[str, str] | None = None
    ) -> None:
        self.bootstrap = bootstrap
        self.names = names
        self.health_urls = dict(health_urls or {})
        self.admin = AdminClient({"bootstrap.servers": bootstrap})

    # --- workers ------------------------------------------------------------------------------
    def _groups(self) -> list[str]:
        listed = _result(self.admin.list_consumer_groups(request_timeout=TIMEOUT))
        prefix = self.names.group("")
        return sorted(g.group_id for g in listed.valid if g.group_id.startswith(prefix))

    def members(self) -> list[Member]:
        groups = self._groups()
        if not groups:
            return []
        out = []
        described = self.admin.describe_consumer_groups(groups, request_timeout=TIMEOUT)
        for group, future in sorted(described.items()):
            for m in _result(future).members:
                client_id = str(m.client_id)
                service = client_id.removesuffix(f"-{group}") or client_id
                assigned = m.assignment.topic_partitions if m.assignment else []
                out.append(
                    Member(
                        service=service,
                        group=group.removeprefix(self.names.group("")),
                        client_id=client_id,
                        host=str(m.host).lstrip("/"),
                        partitions=sorted(
                            f"{self.names.logical(tp.topic)}{_suffix(self.names, tp.topic)}"
                            f"[{tp.partition}]"
                            for tp in assigned
                        ),
                    )
                )
        return out

    def workers(self) -> list[Worker]:
        by_service: dict[str, list[Member]] = {}
        for member in self.members():
            by_service.setdefault(member.service, []).append(member)
        for service in self.health_urls:
            by_service.setdefault(service, [])
        return [
            Worker(service, members, *self._readiness(service))
            for service, members in sorted(by_service.items())
        ]

    def _readiness(self, service: str) -> tuple[bool | None, dict[str, Any] | None]:
        url = self.health_urls.get(service)
        if url is None:
            return None, None
        try:
            response = httpx.get(url, timeout=2)
            body = response.json()
        except (httpx.HTTPError, ValueError):
            return False, {"status": "unreachable", "url": url}
        return response.status_code == 200, body if isinstance(body, dict) else None

    # --- queues -------------------------------------------------------------------------------
    def queues(self) -> list[Queue]:
        """Every consumed topic with its tiers and dead-letter topic, lag per group and
        partition, and the age of the oldest record not yet consumed."""
        queues: dict[str, Queue] = {}
        for spec in TOPICS:
            if not spec.consumed:
                continue
            kinds = [(self.names.topic(spec.name), "main")]
            kinds += [(self.names.retry(spec.name, t), f"retry:{t.name}") for t in self.names.tiers]
            kinds.append((self.names.dlq(spec.name), "dlq"))
            for physical, kind in kinds:
                queues[physical] = Queue(spec.name, physical, kind, 0)
        existing = _result_of_list_topics(self.admin)
        partitions = [
            TopicPartition(topic, p) for topic in queues for p in sorted(existing.get(topic, {}))
        ]
        for topic in queues:
            queues[topic].partitions = len(existing.get(topic, {}))
        # confluent-kafka ships OffsetSpec untyped and without re-exporting it.
        ends = self._offsets(partitions, OffsetSpec.latest())  # type: ignore[no-untyped-call]
        starts = self._offsets(partitions, OffsetSpec.earliest())  # type: ignore[no-untyped-call]
        oldest_needed: dict[tuple[str, int], int] = {}
        for group in self._groups():
            request = [GroupPartitions(group)]
            result = self.admin.list_consumer_group_offsets(request, request_timeout=TIMEOUT)
            for tp in _result(result[group]).topic_partitions:
                key = (tp.topic, tp.partition)
                if tp.topic not in queues or key not in ends:
                    continue
                committed = tp.offset if tp.offset >= 0 else None
                position = committed if committed is not None else starts.get(key, 0)
                lag = max(0, ends[key] - position)
                queues[tp.topic].lags.append(
                    PartitionLag(
                        group.removeprefix(self.names.group("")),
                        tp.partition,
                        committed,
                        ends[key],
                        lag,
                    )
                )
                if lag:
                    oldest_needed[key] = min(position, oldest_needed.get(key, position))
        ages = self._ages(oldest_needed)
        for queue in queues.values():
            waiting: dict[int, int] = {}
            for entry in queue.lags:
                waiting[entry.partition] = max(waiting.get(entry.partition, 0), entry.lag)
            queue.waiting = sum(waiting.values())
            found = [a for (t, _), a in ages.items() if t == queue.physical]
            queue.oldest_waiting_seconds = max(found) if found else None
        snapshot = sorted(queues.values(), key=lambda q: (q.topic, q.kind != "main", q.kind))
        _export(snapshot)
        return snapshot

    def _offsets(self, partitions: list[TopicPartition], spec: OffsetSpec) -> dict[Any, int]:
        if not partitions:
            return {}
        answer = self.admin.list_offsets({tp: spec for tp in partitions}, request_timeout=TIMEOUT)
        return {(tp.topic, tp.partition): _result(f).offset for tp, f in answer.items()}

    def _ages(self, positions: dict[tuple[str, int], int]) -> dict[tuple[str, int], float]:
        """Seconds since each position's record was written (what waits longest there)."""
        if not positions:
            return {}
        consumer = Consumer(
            {
                "bootstrap.servers": self.bootstrap,
                "group.id": f"adflux-console-{uuid.uuid4().hex}",
                "enable.auto.commit": False,
                "enable.partition.eof": False,
            }
        )
        ages: dict[tuple[str, int], float] = {}
        try:
            consumer.assign([TopicPartition(t, p, o) for (t, p), o in positions.items()])
            deadline = time.monotonic() + TIMEOUT
            while len(ages) < len(positions) and time.monotonic() < deadline:
                message = consumer.poll(0.5)
                if message is None or message.error():
                    continue
                key = (str(message.topic()), int(message.partition() or 0))
                _, stamp = message.timestamp()
                if key not in ages and stamp > 0:
                    ages[key] = max(0.0, time.time() - stamp / 1000)
        finally:
            consumer.close()
        return ages


def _suffix(names: TopicNames, physical: str) -> str:
    if physical.endswith(".dlq"):
        return ".dlq"
    tier = names.tier_of(physical)
    return f".retry.{tier.name}" if tier else ""


def _result_of_list_topics(admin: AdminClient) -> dict[str, dict[int, Any]]:
    try:
        listed = admin.list_topics(timeout=TIMEOUT)
    except KafkaException as exc:
        raise ClusterUnavailable(f"kafka: {exc}") from exc
    return {name: dict(t.partitions) for name, t in listed.topics.items()}


def _export(queues: list[Queue]) -> None:
    """The snapshot as gauges: lag per group, topic and partition; oldest waiting age."""
    for queue in queues:
        for lag in queue.lags:
            metrics.CONSUMER_LAG.labels(lag.group, queue.physical, str(lag.partition)).set(lag.lag)
        metrics.OLDEST_WAITING.labels(queue.physical).set(queue.oldest_waiting_seconds or 0.0)


class QueueWatch(BackgroundLoop):
    """Takes a queue snapshot every `interval` seconds, so the lag gauges stay current for
    Prometheus whether or not anyone opens the console."""

    thread_name = "queue-watch"

    def __init__(self, inspector: KafkaInspector, interval: float) -> None:
        super().__init__()
        self.inspector = inspector
        self.interval = interval

    def run(self) -> None:
        while not self._stop.is_set():
            try:
                self.inspector.queues()
            except ClusterUnavailable as exc:
                log.warning("queue snapshot failed: %s", exc)
            except Exception:  # a bug here must not stop the gateway: the next pass retries
                log.exception("queue snapshot failed")
            self._stop.wait(self.interval)
