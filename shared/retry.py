"""The one retry mechanism's rules: error classification, backoff, delay-tier choice and the
headers carried by retried and dead-lettered records (docs/guarantees.md).

The consumer runtime applies these rules; this module holds no Kafka client, so it is
tested as pure logic.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from enum import StrEnum

from shared.redaction import redact
from shared.topics import DelayTier

# Header names (one vocabulary for tiers, the DLQ and replays).
H_ORIGINAL_TOPIC = "adflux-original-topic"
H_ORIGINAL_PARTITION = "adflux-original-partition"
H_ORIGINAL_OFFSET = "adflux-original-offset"
H_ORIGINAL_TIMESTAMP = "adflux-original-timestamp"
H_CONSUMER_GROUP = "adflux-consumer-group"
H_DUE_AT = "adflux-due-at"
H_FIRST_FAILURE_AT = "adflux-first-failure-at"
H_ERROR_CLASS = "adflux-error-class"
H_ERROR_MESSAGE = "adflux-error-message"
H_REASON = "adflux-reason"
H_ATTEMPT = "ce_attempt"
# Headers that describe the first delivery: set once, kept on every later hop.
ORIGIN_HEADERS = (
    H_ORIGINAL_TOPIC,
    H_ORIGINAL_PARTITION,
    H_ORIGINAL_OFFSET,
    H_ORIGINAL_TIMESTAMP,
    H_FIRST_FAILURE_AT,
)
HOP_HEADERS = (H_CONSUMER_GROUP, H_DUE_AT, H_ERROR_CLASS, H_ERROR_MESSAGE, H_REASON, H_ATTEMPT)
MAX_ERROR_MESSAGE = 1000


class RetryableError(Exception):
    """Raised by a handler when a later attempt may succeed."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class PermanentError(Exception):
    """Raised by a handler when no attempt can succeed: the record is dead-lettered."""


class TimeLimitExceeded(RetryableError):
    """The handler ran past the task's time limit and was cancelled."""


class Cancelled(Exception):
    """Raised inside a handler that was cancelled (time limit or shutdown)."""


class Deferred(Exception):
    """Raised by a handler that did not do its work for a reason outside it (a platform
    account under a quota block): the record is due again after `delay` seconds without
    using an attempt, however many retries are left."""

    def __init__(self, message: str, delay: float = 0.0) -> None:
        super().__init__(message)
        self.delay = delay


class Disposition(StrEnum):
    RETRY = "retry"
    DEAD = "dead"


@dataclass(frozen=True)
class Decision:
    """What to do with a failed record."""

    disposition: Disposition
    tier: DelayTier | None = None
    delay: float = 0.0  # seconds from the failure to the retry's due time
    transient: bool = False
    uses_attempt: bool = True  # False for a deferral: the retry keeps the same attempt


def is_transient(exc: BaseException) -> bool:
    """Whether retrying can help: handler's own verdict first, then infrastructure errors."""
    if isinstance(exc, RetryableError):
        return True
    if isinstance(exc, PermanentError):
        return False
    transient = getattr(exc, "transient", None)  # platform errors carry their own verdict
    if isinstance(transient, bool):
        return transient
    # Imported here: the classifier must not make shared.retry depend on SQLAlchemy at import.
    from sqlalchemy.exc import DBAPIError, OperationalError

    if isinstance(exc, OperationalError):
        return True
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return True
    return isinstance(exc, ConnectionError | TimeoutError)


def retry_after_of(exc: BaseException) -> float | None:
    value = getattr(exc, "retry_after", None)
    return float(value) if isinstance(value, int | float) and value > 0 else None


def backoff_delay(
    attempt: int, base: float, *, jitter: float = 0.25, rng: random.Random | None = None
) -> float:
    """Backoff after `attempt` (1-based): base * 2**(attempt-1), ± `jitter` of it."""
    rng = rng or random.Random()
    delay: float = base * 2.0 ** max(attempt - 1, 0)
    return max(0.0, delay * (1 + rng.uniform(-jitter, jitter)))


def choose_tier(tiers: tuple[DelayTier, ...], wanted: float) -> DelayTier:
    """The largest tier whose delay is <= `wanted` (the smallest when none is): every record
    of a tier is due within `hold_window` of the others, so none waits behind another."""
    chosen = tiers[0]
    for tier in tiers:
        if tier.delay <= wanted:
            chosen = tier
    return chosen


def shortest_wait(tiers: tuple[DelayTier, ...], tier: DelayTier) -> float:
    """The shortest delay a record of `tier` can have: its own delay, but 0 for the first tier,
    which takes every delay shorter than itself (a jittered 1 s backoff, a countdown of 0.3 s)."""
    return 0.0 if tier == tiers[0] else tier.delay


def hold_window(tiers: tuple[DelayTier, ...], tier: DelayTier) -> float:
    """How far ahead of its due time a tier consumer may hold a record in memory: the spread of
    the delays that `choose_tier` puts in this tier (from `shortest_wait` up to the next tier),
    so reading a tier partition again at `due - window` never finds a later record already
    overdue. The last tier takes every longer delay: `resume_at` bounds its waits instead."""
    later = [t.delay for t in tiers if t.delay > tier.delay]
    if later:
        return min(later) - shortest_wait(tiers, tier)
    return max(tier.delay, 1.0)


def resume_at(tiers: tuple[DelayTier, ...], tier: DelayTier, due_ms: int, written_ms: int) -> int:
    """When a tier partition paused at a record due at `due_ms`, written to the tier at
    `written_ms`, must be read again (epoch ms): once the record is within the hold window, but
    no later than the moment a record written after it may be due. A moment already past means
    the record must not hold its partition back at all (a far ETA in the last tier): it moves
    to the tier's tail instead."""
    at = due_ms - int(hold_window(tiers, tier) * 1000)
    if written_ms > 0:  # 0 or -1: the broker gave no timestamp
        at = min(at, written_ms + int(shortest_wait(tiers, tier) * 1000))
    return at


def decide(
    exc: BaseException,
    *,
    attempt: int,
    max_retries: int,
    retry_delay: float,
    tiers: tuple[DelayTier, ...],
    rng: random.Random | None = None,
) -> Decision:
    """Retry in a tier while attempts remain and the error is transient; else dead-letter.
    A deferral is always retried, after its own delay and with the same attempt."""
    if isinstance(exc, Deferred) and tiers:
        delay = max(float(exc.delay), 0.0)
        return Decision(
            Disposition.RETRY,
            tier=choose_tier(tiers, delay),
            delay=delay,
            transient=True,
            uses_attempt=False,
        )
    transient = is_transient(exc)
    if not transient or attempt > max_retries or not tiers:
        return Decision(Disposition.DEAD, transient=transient)
    wanted = backoff_delay(attempt, retry_delay, rng=rng)
    platform_wait = retry_after_of(exc)
    if platform_wait is not None:
        wanted = max(wanted, platform_wait)
    return Decision(
        Disposition.RETRY, tier=choose_tier(tiers, wanted), delay=wanted, transient=True
    )


def now_ms() -> int:
    return int(time.time() * 1000)


def error_text(exc: BaseException) -> str:
    """The one text of an error that may leave the process (status, headers, read model):
    secrets redacted (before truncating, so that no secret is cut in half and kept)."""
    return truncate(redact(str(exc) or type(exc).__name__))


def truncate(message: str, limit: int = MAX_ERROR_MESSAGE) -> str:
    return message if len(message) <= limit else message[: limit - 1] + "…"
