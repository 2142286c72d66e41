"""The AdPlatform protocol and the value types and errors every platform adapter shares.

Handlers depend on this module only; the Meta and Google adapters implement it with the
real SDKs, so no handler ever imports an SDK.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal
from typing import Any, Literal, Protocol

from shared.currencies import MINOR_UNITS
from shared.retry import Deferred

PlatformName = Literal["meta", "google"]


@dataclass(frozen=True)
class JobOpening:
    """The job opening a campaign advertises (carried in the publish event)."""

    title: str
    description: str
    company: str
    location: str
    url: str


@dataclass(frozen=True)
class CampaignSpec:
    """Everything a platform needs to create one campaign tree.

    `campaign_id` is AdFlux's own id; adapters put it in every object's name
    (`adflux:<campaign_id>`) so an interrupted step can find what it already created.
    `daily_budget` is in major units of `currency` (e.g. 25.50 EUR).
    """

    campaign_id: str
    name: str
    daily_budget: Decimal
    currency: str
    job: JobOpening
    targeting: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class CampaignSnapshot:
    """A campaign's status and metrics as the platform reports them."""

    external_id: str
    status: str  # normalised: "active" | "paused" | "removed" | "pending" | "unknown"
    impressions: int = 0
    clicks: int = 0
    spend: Decimal = Decimal(0)  # major units of the account currency
    conversions: float = 0.0


def in_minor_units(amount: Decimal, currency: str, *, whole_units: frozenset[str]) -> int:
    """`amount` (major units of `currency`) as an integer count of its minor units: 25.50 EUR
    is 2550, 2500 JPY is 2500 (the yen has none). `whole_units` are currencies a platform
    counts in major units whatever ISO 4217 says."""
    if currency not in MINOR_UNITS:
        raise PermanentPlatformError(f"{currency!r} is not an ISO 4217 currency code")
    units = 0 if currency in whole_units else MINOR_UNITS[currency]
    return int((amount * 10**units).to_integral_value(ROUND_HALF_UP))


def in_micros(amount: Decimal) -> int:
    """`amount` in millionths of its currency's major unit (Google Ads' `amount_micros`)."""
    return int((amount * 1_000_000).to_integral_value(ROUND_HALF_UP))


class PlatformError(Exception):
    """A platform call failed. Subclasses say whether a retry can help."""

    transient: bool = False

    def __init__(
        self,
        message: str,
        *,
        code: str | int | None = None,
        subcode: str | int | None = None,
        http_status: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.subcode = subcode
        self.http_status = http_status
        self.retry_after = retry_after  # seconds the platform asked us to wait, if any


class TransientPlatformError(PlatformError):
    """Timeouts, 5xx, rate limits, `is_transient`, gRPC UNAVAILABLE/RESOURCE_EXHAUSTED."""

    transient = True


class PermanentPlatformError(PlatformError):
    """Invalid parameters, expired tokens, policy rejections: retrying cannot help."""

    transient = False


class PlatformBlocked(TransientPlatformError, Deferred):
    """A call not made: its platform account is under a quota block (adplatforms/quota.py)
    for `delay` more seconds. The runtime defers the record that long without using an
    attempt."""

    def __init__(self, message: str, *, delay: float) -> None:
        super().__init__(message, retry_after=delay)
        self.delay = delay


class StepJournal(Protocol):
    """Durable record of a publish flow's progress, kept by the publisher's own tables.

    An adapter calls `mark_attempt` before it asks the platform to create an object (durable
    before the call, together with the ids recorded so far) and `record` as soon as it has
    the id, so that a retry or a restart after a crash resumes at the first missing object
    and never creates a second one: a step attempted but without an id is looked up on the
    platform by its tag first.
    """

    def created_id(self, step: str) -> str | None: ...

    def was_attempted(self, step: str) -> bool: ...

    def mark_attempt(self, step: str) -> None: ...

    def record(self, step: str, external_id: str) -> None: ...


class AdPlatform(Protocol):
    """What the publisher and sync handlers need from an ad platform (blocking calls)."""

    name: PlatformName
    steps: tuple[str, ...]  # e.g. ("campaign", "adset", "creative", "ad")

    def create_campaign_flow(self, spec: CampaignSpec, journal: StepJournal) -> dict[str, str]:
        """Create (or finish creating) the campaign tree; returns step -> external id."""
        ...

    def fetch_statuses_and_metrics(
        self, external_ids: list[str] | None = None
    ) -> list[CampaignSnapshot]:
        """Status and last-7-days metrics of the given campaigns (all when None)."""
        ...

    def set_campaign_status(
        self, external_id: str, status: Literal["active", "paused"]
    ) -> None: ...
