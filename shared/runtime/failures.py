"""The failure router: what a failed, deferred or malformed record turns into — a retry in a
delay tier (due at failure + wanted delay), or a dead letter with its cause — and the task
transitions that go with it."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from shared import metrics
from shared import retry as rules
from shared.envelope import Envelope
from shared.events import Command, ErrorInfo, Payload, TaskState
from shared.producer import OutgoingRecord
from shared.runtime.records import ConsumedRecord
from shared.tasks import TaskStatusReporter
from shared.topics import TopicNames

log = logging.getLogger(__name__)

FailureHook = Callable[[Envelope, Any, ErrorInfo], list[Envelope]]


class FailureRouter:
    """Builds the records a failure produces; it sends nothing itself."""

    def __init__(
        self,
        service: str,
        group: str,
        names: TopicNames,
        reporter: TaskStatusReporter,
        default_max_retries: int,
        default_retry_delay: float,
    ) -> None:
        self.service = service
        self.group = group
        self.names = names
        self.reporter = reporter
        self.default_max_retries = default_max_retries
        self.default_retry_delay = default_retry_delay

    def failed(
        self,
        msg: ConsumedRecord,
        envelope: Envelope,
        payload: Payload,
        task: Command | None,
        exc: BaseException,
        on_failure: FailureHook | None,
    ) -> list[OutgoingRecord]:
        """A handler failed: retry in a tier while attempts remain, else dead-letter."""
        max_retries = task.options.max_retries if task else self.default_max_retries
        retry_delay = task.options.retry_delay if task else self.default_retry_delay
        decision = rules.decide(
            exc,
            attempt=envelope.attempt,
            max_retries=max_retries,
            retry_delay=retry_delay,
            tiers=self.names.tiers,
        )
        error = ErrorInfo(
            error_class=type(exc).__name__,
            message=rules.error_text(exc),
            code=_str_or_none(getattr(exc, "code", None)),
            subcode=_str_or_none(getattr(exc, "subcode", None)),
            transient=decision.transient,
        )
        records: list[OutgoingRecord] = []
        if decision.disposition is rules.Disposition.RETRY:
            assert decision.tier is not None
            attempt = envelope.attempt + (1 if decision.uses_attempt else 0)
            records.append(self.delayed(msg, decision.delay, exc, attempt))
            if task is not None and envelope.taskid:
                records.append(
                    self.reporter.record(
                        envelope.taskid,
                        task.task_name,
                        TaskState.RETRY,
                        attempt=envelope.attempt,
                        cause=envelope,
                        error=error,
                        next_attempt_at=datetime.now(UTC) + timedelta(seconds=decision.delay),
                    )
                )
                metrics.TASKS.labels(self.service, task.task_name, TaskState.RETRY.value).inc()
            metrics.RETRIES.labels(self.service, envelope.type, decision.tier.name).inc()
            metrics.EVENTS_HANDLED.labels(self.service, envelope.type, "retry").inc()
            log.info("retrying %s in %.1fs: %s", envelope.type, decision.delay, error.message)
            return records
        reason = "exhausted" if decision.transient else "permanent"
        records.append(self.dead(msg, exc, reason))
        if on_failure is not None:
            records.extend(
                OutgoingRecord.of(self.names.topic(e.type), e)
                for e in on_failure(envelope, payload, error)
            )
        if task is not None and envelope.taskid:
            records.append(
                self.reporter.record(
                    envelope.taskid,
                    task.task_name,
                    TaskState.FAILURE,
                    attempt=envelope.attempt,
                    cause=envelope,
                    error=error,
                )
            )
            metrics.TASKS.labels(self.service, task.task_name, TaskState.FAILURE.value).inc()
        metrics.EVENTS_HANDLED.labels(self.service, envelope.type, "dead").inc()
        log.warning("dead-lettering %s (%s): %s", envelope.type, reason, error.message)
        return records

    def delayed(
        self, msg: ConsumedRecord, delay: float, exc: BaseException | None, attempt: int
    ) -> OutgoingRecord:
        """The record again, due `delay` seconds from now, in the tier that fits the delay."""
        tier = rules.choose_tier(self.names.tiers, delay)
        headers = self._forward_headers(msg, exc, attempt)
        headers.append((rules.H_DUE_AT, str(rules.now_ms() + int(delay * 1000)).encode()))
        topic = self.names.retry(self.names.logical(msg.topic), tier)
        return OutgoingRecord(topic, msg.key, msg.value, headers)

    def moved(self, msg: ConsumedRecord, due_ms: int) -> OutgoingRecord:
        """A tier record again, unchanged (its due time too), for the tail of the tier that
        fits what is left of its wait."""
        left = max(0.0, (due_ms - rules.now_ms()) / 1000)
        tier = rules.choose_tier(self.names.tiers, left)
        topic = self.names.retry(self.names.logical(msg.topic), tier)
        return OutgoingRecord(topic, msg.key, msg.value, list(msg.headers))

    def dead(self, msg: ConsumedRecord, exc: BaseException, reason: str) -> OutgoingRecord:
        raw_attempt = msg.header_map().get(rules.H_ATTEMPT, b"1")
        attempt = int(raw_attempt) if raw_attempt.isdigit() else 1
        headers = self._forward_headers(msg, exc, attempt)
        headers.append((rules.H_REASON, reason.encode()))
        logical = self.names.logical(msg.topic)
        metrics.DEAD_LETTERS.labels(self.service, logical, reason).inc()
        return OutgoingRecord(self.names.dlq(logical), msg.key, msg.value, headers)

    def _forward_headers(
        self, msg: ConsumedRecord, exc: BaseException | None, attempt: int
    ) -> list[tuple[str, bytes]]:
        headers = msg.header_map()
        kept = [(k, v) for k, v in headers.items() if k not in rules.HOP_HEADERS]
        if rules.H_ORIGINAL_TOPIC not in headers:
            kept += [
                (rules.H_ORIGINAL_TOPIC, msg.topic.encode()),
                (rules.H_ORIGINAL_PARTITION, str(msg.partition).encode()),
                (rules.H_ORIGINAL_OFFSET, str(msg.offset).encode()),
                (rules.H_ORIGINAL_TIMESTAMP, str(msg.timestamp_ms).encode()),
            ]
        if exc is not None and rules.H_FIRST_FAILURE_AT not in headers:
            kept.append((rules.H_FIRST_FAILURE_AT, str(rules.now_ms()).encode()))
        kept += [
            (rules.H_CONSUMER_GROUP, self.group.encode()),
            (rules.H_ATTEMPT, str(attempt).encode()),
        ]
        if exc is not None:
            kept += [
                (rules.H_ERROR_CLASS, type(exc).__name__.encode()),
                (rules.H_ERROR_MESSAGE, rules.error_text(exc).encode()),
            ]
        return kept


def _str_or_none(value: object) -> str | None:
    return None if value is None else str(value)
