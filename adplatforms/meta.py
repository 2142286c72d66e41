"""Meta Ads through the real `facebook-business` SDK: the publish flow (campaign → ad set →
creative → ad), status and insights for sync, and error classification.

The SDK is synchronous and its api object is not thread-safe, so every call of one adapter
is serialised by a lock; the base URL is set on the session instance (docs/platforms.md), and
`FacebookAdsApi.init()` is never called (it installs a crash reporter that posts upstream).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, Literal, TypeVar

import requests
from facebook_business.adobjects.adaccount import AdAccount
from facebook_business.adobjects.campaign import Campaign
from facebook_business.api import FacebookAdsApi, FacebookResponse
from facebook_business.exceptions import FacebookRequestError
from facebook_business.session import FacebookSession

from adplatforms.base import (
    CampaignSnapshot,
    CampaignSpec,
    PermanentPlatformError,
    PlatformError,
    PlatformName,
    StepJournal,
    TransientPlatformError,
    in_minor_units,
)
from adplatforms.quota import PlatformQuota, meta_wait
from adplatforms.steps import run_steps
from shared import metrics
from shared.redaction import redact
from shared.settings import PlatformSettings

T = TypeVar("T")

# Throttling and temporary errors (Meta's error reference): retrying later can succeed.
TRANSIENT_CODES = {1, 2, 4, 17, 32, 341, 613, *range(80000, 80015)}
STATUS = {
    "ACTIVE": "active",
    "PAUSED": "paused",
    "IN_PROCESS": "pending",
    "DELETED": "removed",
    "ARCHIVED": "removed",
}
# Currencies Meta counts in whole units although ISO 4217 gives them cents (Meta's currency
# table, "offset 1"); every other budget is sent in the currency's ISO minor units.
WHOLE_UNIT_CURRENCIES = frozenset(
    {"CLP", "COP", "CRC", "HUF", "IDR", "ISK", "JPY", "KRW", "PYG", "TWD", "VND"}
)
# The aggregate of every lead action; other action types (clicks, engagement) are not conversions.
LEAD_ACTION = "lead"
# Rows per page of the account-level campaign listing and insights that sync reads, so
# 10,000 campaigns take two pages of each. Meta publishes no per-edge maximum; the cursor is
# followed to the end, so a lower cap on Meta's side costs calls, never campaigns
# (docs/platforms.md, "Page sizes and sync at scale").
SYNC_PAGE_LIMIT = 5000


def classify(exc: Exception) -> PlatformError:
    """Translate an SDK or transport error into our transient/permanent errors."""
    if isinstance(exc, FacebookRequestError):
        code = exc.api_error_code()
        status = exc.http_status()
        message = redact(exc.api_error_message() or str(exc))
        transient = (
            bool(exc.api_transient_error()) or (status or 0) >= 500 or code in TRANSIENT_CODES
        )
        kind = TransientPlatformError if transient else PermanentPlatformError
        return kind(
            message,
            code=code,
            subcode=exc.api_error_subcode(),
            http_status=status,
            retry_after=meta_wait(exc.http_headers() or {}) if transient else None,
        )
    if isinstance(exc, requests.RequestException):
        # The session puts access_token (and appsecret_proof) in every request URL, and
        # requests quotes that URL in its messages: never pass it on unredacted.
        return TransientPlatformError(f"Graph API unreachable: {redact(str(exc))}")
    raise exc


# The account edge each publishing step creates its object on.
_EDGES = {"campaign": "campaigns", "adset": "adsets", "creative": "adcreatives", "ad": "ads"}


def _item_error(answer: FacebookResponse) -> FacebookRequestError:
    """A failed request of a batch as the SDK's error. A batch answer carries its headers as
    a list of name/value pairs; the error gets them as a mapping (Retry-After, usage)."""
    raw = answer.headers() or []
    pairs = (
        raw.items() if isinstance(raw, Mapping) else ((h.get("name"), h.get("value")) for h in raw)
    )
    headers = {str(k): str(v) for k, v in pairs if k is not None and v is not None}
    return FacebookRequestError(
        "Call was not successful", {}, answer.status(), headers, answer.body()
    )


def _environment_once(http: requests.Session, url: str) -> None:
    """Read the proxy and CA-bundle variables once, when the session is made: requests
    otherwise reads them (and looks for a netrc file) on every call, a tenth of a call's CPU."""
    http.proxies.update(requests.utils.get_environ_proxies(url))
    bundle = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
    if bundle:
        http.verify = bundle
    http.trust_env = False


class MetaAdsPlatform:
    """AdPlatform for Meta Ads. With a `quota`, every call first asks it whether the ad
    account may be called, and every answer's usage header and throttling error go to it."""

    name: PlatformName = "meta"
    steps: tuple[str, ...] = ("campaign", "adset", "creative", "ad")

    def __init__(self, settings: PlatformSettings, quota: PlatformQuota | None = None) -> None:
        self._settings = settings
        self._quota = quota
        account_id = settings.meta_ad_account_id
        self._account_id = account_id if account_id.startswith("act_") else f"act_{account_id}"
        self._page_id = settings.meta_page_id
        # One SDK session per lane thread: the SDK's session is not made for concurrent calls,
        # and one shared behind a lock would make every lane wait for every other's call.
        self._local = threading.local()

    def _client(self) -> tuple[FacebookAdsApi, AdAccount]:
        client: tuple[FacebookAdsApi, AdAccount] | None = getattr(self._local, "client", None)
        if client is None:
            settings = self._settings
            session = FacebookSession(
                access_token=settings.meta_access_token.get_secret_value(),
                app_secret=settings.meta_app_secret.get_secret_value()
                if settings.meta_app_secret
                else None,
                timeout=settings.meta_timeout,
            )
            session.GRAPH = settings.meta_graph_url.rstrip("/")  # read from the instance by call()
            _environment_once(session.requests, session.GRAPH)
            if self._quota is not None:
                # Meta reports usage on successful answers too: the only place to read it.
                session.requests.hooks["response"].append(self._observe_usage)
            api = FacebookAdsApi(session, api_version=settings.meta_api_version)
            client = (api, AdAccount(self._account_id, api=api))
            self._local.client = client
        return client

    @property
    def _api(self) -> FacebookAdsApi:
        return self._client()[0]

    @property
    def _account(self) -> AdAccount:
        return self._client()[1]

    def _observe_usage(self, response: requests.Response, *_: Any, **__: Any) -> None:
        if self._quota is not None and response.status_code < 400:
            self._quota.observe_meta_headers(self._account_id, response.headers)

    def _call(self, operation: str, fn: Callable[[], T], calls: int = 1) -> T:
        """One HTTP request that Meta counts as `calls` calls (a batch: one per request)."""
        if self._quota is not None:
            for _ in range(calls):
                self._quota.admit("meta", self._account_id)
        started = time.perf_counter()
        outcome = "ok"
        try:
            return fn()
        except (FacebookRequestError, requests.RequestException) as exc:
            outcome = "error"
            raise self._failed(exc) from exc
        finally:
            metrics.PLATFORM_CALLS.labels("meta", operation, outcome).observe(
                time.perf_counter() - started
            )

    def _failed(self, exc: Exception) -> PlatformError:
        error = classify(exc)
        if self._quota is not None:
            self._quota.observe("meta", self._account_id, error)
        return error

    # --- publishing ----------------------------------------------------------------------------
    def create_campaign_flow(self, spec: CampaignSpec, journal: StepJournal) -> dict[str, str]:
        # Bracketed, so that searching for campaign c-1's objects cannot match c-10's.
        tag = f"[adflux:{spec.campaign_id}]"
        if self._quota is not None:
            self._quota.check("meta", self._account_id)
        return run_steps(
            self.steps,
            journal,
            find=lambda step, _ids: self._find_existing(step, tag),
            create=lambda missing, ids, steps_journal: self._create_in_one_batch(
                missing, ids, steps_journal, spec, tag
            ),
        )

    def _create_in_one_batch(
        self,
        missing: Sequence[str],
        ids: Mapping[str, str],
        journal: StepJournal,
        spec: CampaignSpec,
        tag: str,
    ) -> None:
        """Create the missing steps with one batch request: each is a named request, and a
        step refers to a parent made in the same batch by `{result=<step>:$.id}` (the Graph
        API runs them in order and resolves the reference). The ids that came back are
        recorded before the first failure, if any, is raised."""
        for step in missing:
            journal.mark_attempt(step)
        refs = {**ids, **{step: f"{{result={step}:$.id}}" for step in missing}}
        batch = self._api.new_batch()
        created: dict[str, str] = {}
        failed: dict[str, FacebookRequestError] = {}
        for step in missing:
            call = batch.add(
                "POST",
                (self._account_id, _EDGES[step]),
                params=self._params(step, spec, tag, refs),
                success=lambda answer, step=step: created.__setitem__(
                    step, str(answer.json()["id"])
                ),
                failure=lambda answer, step=step: failed.__setitem__(step, _item_error(answer)),
            )
            call["name"] = step
            call["omit_response_on_success"] = False  # named requests answer null otherwise
        self._call("create_batch", batch.execute, calls=len(missing))
        for step in missing:
            if step in created:
                journal.record(step, created[step])
        for step in missing:
            if step in failed:
                raise self._failed(failed[step])
            if step not in created:
                raise TransientPlatformError(f"the batch request did not answer step {step!r}")

    def _params(
        self, step: str, spec: CampaignSpec, tag: str, ids: Mapping[str, str]
    ) -> dict[str, Any]:
        job = spec.job
        if step == "campaign":
            return {
                "name": f"{spec.name} {tag}",
                "objective": "OUTCOME_LEADS",
                "special_ad_categories": ["EMPLOYMENT"],
                "special_ad_category_country": spec.targeting.get("countries", ["ES"]),
                "status": "ACTIVE",
            }
        if step == "adset":
            return {
                "name": f"{spec.name} ad set {tag}",
                "campaign_id": ids["campaign"],
                "daily_budget": in_minor_units(
                    spec.daily_budget, spec.currency, whole_units=WHOLE_UNIT_CURRENCIES
                ),
                "billing_event": "IMPRESSIONS",
                "optimization_goal": "LEAD_GENERATION",
                "bid_strategy": "LOWEST_COST_WITHOUT_CAP",
                "targeting": self._targeting(spec),
                "status": "ACTIVE",
            }
        if step == "creative":
            return {
                "name": f"{job.title} creative {tag}",
                "object_story_spec": {
                    "page_id": self._page_id,
                    "link_data": {
                        "link": job.url,
                        "name": f"{job.title} — {job.company}",
                        "message": (job.description or job.title)[:500],
                        "description": job.location,
                        "call_to_action": {"type": "APPLY_NOW", "value": {"link": job.url}},
                    },
                },
            }
        return {
            "name": f"{spec.name} ad {tag}",
            "adset_id": ids["adset"],
            "creative": {"creative_id": ids["creative"]},
            "status": "ACTIVE",
        }

    @staticmethod
    def _targeting(spec: CampaignSpec) -> dict[str, Any]:
        targeting = {k: v for k, v in spec.targeting.items() if k != "countries"}
        geo: dict[str, Any] = {"countries": spec.targeting.get("countries", ["ES"])}
        if spec.job.location:
            geo["location_types"] = ["home", "recent"]
        targeting.setdefault("geo_locations", geo)
        targeting.pop("age_max", None)  # employment ads may not restrict the maximum age
        return targeting

    def _find_existing(self, step: str, tag: str) -> str | None:
        """An object a crashed attempt created before its id was stored, found by its tag."""
        edges: dict[str, Callable[..., Any]] = {
            "campaign": self._account.get_campaigns,
            "adset": self._account.get_ad_sets,
            "creative": self._account.get_ad_creatives,
            "ad": self._account.get_ads,
        }
        params = {
            "filtering": [{"field": "name", "operator": "CONTAIN", "value": tag}],
            "limit": 50,
        }

        def search() -> list[str]:
            return [str(obj["id"]) for obj in edges[step](fields=["id", "name"], params=params)]

        found = self._call("list", search)
        return found[0] if found else None

    # --- sync ------------------------------------------------------------------------------------
    def fetch_statuses_and_metrics(
        self, external_ids: list[str] | None = None
    ) -> list[CampaignSnapshot]:
        filtering = (
            [{"field": "id", "operator": "IN", "value": external_ids}] if external_ids else []
        )
        until = datetime.now(UTC).date()
        since = until - timedelta(days=7)

        def statuses() -> dict[str, str]:
            params = {"filtering": filtering, "limit": SYNC_PAGE_LIMIT}
            return {
                str(c["id"]): str(c.get("effective_status") or c.get("status"))
                for c in self._account.get_campaigns(
                    fields=["id", "status", "effective_status"], params=params
                )
            }

        def insights() -> dict[str, dict[str, Any]]:
            params = {
                "level": "campaign",
                "time_range": {"since": since.isoformat(), "until": until.isoformat()},
                "filtering": [{"field": "campaign.id", "operator": "IN", "value": external_ids}]
                if external_ids
                else [],
                "limit": SYNC_PAGE_LIMIT,
            }
            fields = ["campaign_id", "impressions", "clicks", "spend", "actions"]
            return {
                str(row["campaign_id"]): dict(row)
                for row in self._account.get_insights(fields=fields, params=params)
            }

        by_id = self._call("list", statuses)
        rows = self._call("insights", insights)
        snapshots = []
        for campaign_id, status in by_id.items():
            row = rows.get(campaign_id, {})
            conversions = sum(
                float(action.get("value", 0))
                for action in row.get("actions") or []
                if action.get("action_type") == LEAD_ACTION
            )
            snapshots.append(
                CampaignSnapshot(
                    external_id=campaign_id,
                    status=STATUS.get(status, "unknown"),
                    impressions=int(row.get("impressions", 0)),
                    clicks=int(row.get("clicks", 0)),
                    spend=Decimal(str(row.get("spend", "0"))),
                    conversions=conversions,
                )
            )
        return snapshots

    def set_campaign_status(self, external_id: str, status: Literal["active", "paused"]) -> None:
        campaign = Campaign(external_id, api=self._api)
        self._call("update", lambda: campaign.api_update(params={"status": status.upper()}))
