"""The Google Ads adapter: `AdPlatform` over the real `google-ads` SDK, imported lazily.

The SDK (~170 MB, ~1 s to import and build the clients) is imported by the constructor, not
by this module, so processes that only talk to Meta never load it (the registry builds
adapters on first use).
"""

from __future__ import annotations

import importlib
import logging
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Literal, NamedTuple

import grpc

from adplatforms.base import (
    CampaignSnapshot,
    CampaignSpec,
    JobOpening,
    PermanentPlatformError,
    PlatformError,
    PlatformName,
    StepJournal,
    TransientPlatformError,
    in_micros,
)
from adplatforms.quota import PlatformQuota
from adplatforms.steps import run_steps
from shared import metrics
from shared.redaction import redact
from shared.settings import PlatformSettings

_TOKEN_URI = "https://oauth2.googleapis.com/token"
_STATUSES = {"ENABLED": "active", "PAUSED": "paused", "REMOVED": "removed"}
_TRANSIENT_CODES = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.INTERNAL,
    }
)
_TRANSIENT_ERROR_CATEGORIES = frozenset({"quota_error", "internal_error"})
_MAX_HEADLINE_LENGTH = 30
_MAX_DESCRIPTION_LENGTH = 90
# Each step's resource (its MutateOperation field is `<resource>_operation`, its result
# `<resource>_result`) and the segment of its resource names.
_RESOURCES = {
    "budget": "campaign_budget",
    "campaign": "campaign",
    "ad_group": "ad_group",
    "ad": "ad_group_ad",
}
_COLLECTIONS = {"budget": "campaignBudgets", "campaign": "campaigns", "ad_group": "adGroups"}
_METRICS_QUERY = (
    "SELECT campaign.id, campaign.status, metrics.impressions, metrics.clicks,"
    " metrics.cost_micros, metrics.conversions FROM campaign"
    " WHERE segments.date DURING LAST_7_DAYS"
)


class GoogleAdsPlatform:
    """`AdPlatform` for one Google Ads customer account.

    A publish creates its missing steps in one atomic `GoogleAdsService.Mutate` request.
    External ids: the "campaign" step records the numeric campaign id (what sync and status
    changes take); "budget", "ad_group" and "ad" record resource names, which the next
    step needs as its parent. With a `quota`, every call first asks it whether the customer
    account may be called, and a quota error's retry delay goes to it.
    """

    name: PlatformName = "google"
    steps: tuple[str, ...] = ("budget", "campaign", "ad_group", "ad")

    def __init__(self, settings: PlatformSettings, quota: PlatformQuota | None = None) -> None:
        self._customer_id = settings.google_ads_customer_id
        self._quota = quota
        self._timeout = settings.google_ads_timeout
        # Built once: each service client owns a channel. Worker threads share them without a
        # lock, as gRPC channels and the generated clients are thread-safe and nothing here
        # changes after construction.
        self._sdk = _Sdk.connect(settings)

    def create_campaign_flow(self, spec: CampaignSpec, journal: StepJournal) -> dict[str, str]:
        if self._quota is not None:
            self._quota.check("google", self._customer_id)
        with self._platform_errors():
            return run_steps(
                self.steps,
                journal,
                find=lambda step, ids: self._find(step, spec, ids),
                create=lambda missing, ids, journal: self._create_all(spec, missing, ids, journal),
            )

    def fetch_statuses_and_metrics(
        self, external_ids: list[str] | None = None
    ) -> list[CampaignSnapshot]:
        if external_ids == []:
            return []
        query = _METRICS_QUERY
        if external_ids:
            query += f" AND campaign.id IN ({', '.join(str(int(i)) for i in external_ids)})"
        with self._platform_errors():
            stream = self._call(self._sdk.search.search_stream, query=query)
            return [_snapshot(row) for batch in stream for row in batch.results]

    def set_campaign_status(self, external_id: str, status: Literal["active", "paused"]) -> None:
        sdk = self._sdk
        operation = sdk.client.get_type("CampaignOperation")
        campaign = operation.update
        campaign.resource_name = sdk.campaigns.campaign_path(self._customer_id, external_id)
        statuses = sdk.client.enums.CampaignStatusEnum
        campaign.status = statuses.ENABLED if status == "active" else statuses.PAUSED
        sdk.client.copy_from(
            operation.update_mask, sdk.field_mask(None, type(campaign).pb(campaign))
        )
        with self._platform_errors():
            self._call(sdk.campaigns.mutate_campaigns, operations=[operation])

    # --- the steps ---------------------------------------------------------------------------

    def _create_all(
        self,
        spec: CampaignSpec,
        missing: Sequence[str],
        ids: Mapping[str, str],
        journal: StepJournal,
    ) -> None:
        """Create the missing steps in one `GoogleAdsService.Mutate` request (atomic: all or
        none). A new object gets a temporary resource name (a negative id) that the next
        step's operation refers to; an existing parent is referred to by its real name."""
        sdk, customer = self._sdk, self._customer_id
        parents = dict(ids)
        if "campaign" in parents:
            parents["campaign"] = sdk.campaigns.campaign_path(customer, parents["campaign"])
        operations = []
        for number, step in enumerate(missing, start=1):
            operation = sdk.client.get_type("MutateOperation")
            created = getattr(operation, f"{_RESOURCES[step]}_operation").create
            self._build(step, created, spec, parents)
            if step != "ad":  # nothing refers to the ad
                parents[step] = created.resource_name = (
                    f"customers/{customer}/{_COLLECTIONS[step]}/-{number}"
                )
            operations.append(operation)
        for step in missing:
            journal.mark_attempt(step)
        response = self._call(sdk.search.mutate, mutate_operations=operations)
        for step, answer in zip(missing, response.mutate_operation_responses, strict=True):
            name = str(getattr(answer, f"{_RESOURCES[step]}_result").resource_name)
            journal.record(step, _resource_id(name) if step == "campaign" else name)

    def _build(self, step: str, obj: Any, spec: CampaignSpec, parents: Mapping[str, str]) -> None:
        """Fill in the new object of `step`; `parents`: resource names, temporary or real."""
        client = self._sdk.client
        enums = client.enums
        if step == "budget":
            obj.name = _object_name(f"{spec.name} budget", spec)
            obj.amount_micros = in_micros(spec.daily_budget)
            obj.delivery_method = enums.BudgetDeliveryMethodEnum.STANDARD
            obj.explicitly_shared = False
        elif step == "campaign":
            obj.name = _object_name(spec.name, spec)
            obj.campaign_budget = parents["budget"]
            obj.advertising_channel_type = enums.AdvertisingChannelTypeEnum.SEARCH
            obj.status = enums.CampaignStatusEnum.ENABLED
            obj.maximize_conversions = client.get_type("MaximizeConversions")
            obj.contains_eu_political_advertising = (
                enums.EuPoliticalAdvertisingStatusEnum.DOES_NOT_CONTAIN_EU_POLITICAL_ADVERTISING
            )
            obj.network_settings.target_google_search = True
            obj.network_settings.target_search_network = True
        elif step == "ad_group":
            obj.name = _object_name(spec.job.title, spec)
            obj.campaign = parents["campaign"]
            obj.type_ = enums.AdGroupTypeEnum.SEARCH_STANDARD
            obj.status = enums.AdGroupStatusEnum.ENABLED
        else:
            obj.ad_group = parents["ad_group"]
            obj.status = enums.AdGroupAdStatusEnum.ENABLED
            obj.ad.final_urls.append(spec.job.url)
            text_asset = type(client.get_type("AdTextAsset"))
            rsa = obj.ad.responsive_search_ad
            rsa.headlines.extend(text_asset(text=text) for text in _headlines(spec.job))
            rsa.descriptions.extend(text_asset(text=text) for text in _descriptions(spec.job))

    def _find(self, step: str, spec: CampaignSpec, ids: Mapping[str, str]) -> str | None:
        """The object an earlier, unrecorded attempt at `step` created, if it exists."""
        parent = {"ad_group": "campaign", "ad": "ad_group"}.get(step)
        if parent is not None and parent not in ids:
            return None  # its parent is still to be created: it cannot exist
        if step == "budget":
            name = _gaql_string(_object_name(f"{spec.name} budget", spec))
            query = (
                "SELECT campaign_budget.resource_name FROM campaign_budget"
                f" WHERE campaign_budget.name = {name}"
            )
        elif step == "campaign":
            name = _gaql_string(_object_name(spec.name, spec))
            query = f"SELECT campaign.id FROM campaign WHERE campaign.name = {name}"
        elif step == "ad_group":
            name = _gaql_string(_object_name(spec.job.title, spec))
            query = (
                "SELECT ad_group.resource_name FROM ad_group"
                f" WHERE campaign.id = {int(ids['campaign'])} AND ad_group.name = {name}"
            )
        else:
            # Responsive search ads have no name; our ad group holds only our ad.
            query = (
                "SELECT ad_group_ad.resource_name FROM ad_group_ad"
                f" WHERE ad_group.resource_name = {_gaql_string(ids['ad_group'])}"
            )
        rows = list(self._call(self._sdk.search.search, query=query))
        if not rows:
            return None
        if step == "campaign":
            return str(rows[0].campaign.id)
        return str(getattr(rows[0], _RESOURCES[step]).resource_name)

    # --- SDK plumbing ------------------------------------------------------------------------

    def _call(self, method: Callable[..., Any], **fields: Any) -> Any:
        # The SDK sets neither a deadline nor a retry policy we want: retries are ours.
        if self._quota is not None:
            self._quota.admit("google", self._customer_id)
        started = time.perf_counter()
        outcome = "ok"
        try:
            return method(
                customer_id=self._customer_id, retry=None, timeout=self._timeout, **fields
            )
        except Exception:
            outcome = "error"
            raise
        finally:
            operation = getattr(method, "__name__", "call")
            metrics.PLATFORM_CALLS.labels("google", operation, outcome).observe(
                time.perf_counter() - started
            )

    @contextmanager
    def _platform_errors(self) -> Iterator[None]:
        try:
            yield
        except PlatformError:
            raise
        except Exception as error:
            translated = _platform_error(error, self._sdk)
            if translated is None:
                raise
            if self._quota is not None:
                self._quota.observe("google", self._customer_id, translated)
            raise translated from error


@dataclass(frozen=True)
class _Sdk:
    """What one adapter builds once: the SDK client and the service clients it calls."""

    client: Any
    campaigns: Any
    search: Any  # GoogleAdsService: Mutate, Search, SearchStream
    field_mask: Callable[[Any, Any], Any]
    # To decode a GoogleAdsFailure from trailing metadata where the SDK leaves it there.
    failure_type: Any
    failure_key: str

    @classmethod
    def connect(cls, settings: PlatformSettings) -> _Sdk:
        from google.ads.googleads.client import GoogleAdsClient
        from google.api_core.protobuf_helpers import field_mask

        version = settings.google_ads_api_version
        # The library's logging interceptor renders every request and its metadata as JSON
        # whenever its logger is enabled for WARNING (even if it then logs nothing): a fifth
        # of a publish's CPU. Failures reach us as exceptions and are logged by the runtime.
        logging.getLogger("google.ads.googleads.client").setLevel(logging.ERROR)
        client = GoogleAdsClient(
            credentials=_credentials(settings),
            developer_token=settings.google_ads_developer_token.get_secret_value(),
            endpoint=settings.google_ads_endpoint,
            login_customer_id=settings.google_ads_login_customer_id,
            use_proto_plus=True,
            version=version,
        )
        service: Callable[[str], Any] = client.get_service
        if settings.google_ads_insecure:
            channel = _sandbox_channel(client, settings)
            service = lambda name: _service_on(channel, name, version)  # noqa: E731
        errors = importlib.import_module(f"google.ads.googleads.{version}.errors.types.errors")
        return cls(
            client=client,
            campaigns=service("CampaignService"),
            search=service("GoogleAdsService"),
            field_mask=field_mask,
            failure_type=errors.GoogleAdsFailure,
            failure_key=f"google.ads.googleads.{version}.errors.googleadsfailure-bin",
        )


def _credentials(settings: PlatformSettings) -> Any:
    from google.oauth2.credentials import Credentials

    if settings.google_ads_refresh_token is None:
        return Credentials(  # type: ignore[no-untyped-call]  # google-auth ships no annotations here
            token=settings.google_ads_oauth_token.get_secret_value()
        )
    secret = settings.google_ads_client_secret
    return Credentials(  # type: ignore[no-untyped-call]
        token=None,
        refresh_token=settings.google_ads_refresh_token.get_secret_value(),
        client_id=settings.google_ads_client_id,
        client_secret=secret.get_secret_value() if secret else None,
        token_uri=_TOKEN_URI,
    )


def _sandbox_channel(client: Any, settings: PlatformSettings) -> grpc.Channel:
    """A plaintext channel to the sandbox, intercepted as `get_service()` does.

    `GoogleAdsClient` always opens TLS, and a plaintext channel carries no call credentials
    (local channel credentials would, but refuse any non-loopback host such as compose's
    `sandbox:8011`), so an interceptor adds the bearer token to each call's metadata.
    """
    from google.ads.googleads.client import _GRPC_CHANNEL_OPTIONS
    from google.ads.googleads.interceptors import (
        ExceptionInterceptor,
        LoggingInterceptor,
        MetadataInterceptor,
    )

    version = settings.google_ads_api_version
    channel = grpc.insecure_channel(settings.google_ads_endpoint, options=_GRPC_CHANNEL_OPTIONS)
    return grpc.intercept_channel(
        channel,
        _BearerToken(settings.google_ads_oauth_token.get_secret_value()),
        MetadataInterceptor(
            client.developer_token, client.login_customer_id, client.linked_customer_id
        ),
        LoggingInterceptor(
            logging.getLogger("google.ads.googleads.client"), version, settings.google_ads_endpoint
        ),
        ExceptionInterceptor(version, use_proto_plus=True),
    )


class _CallDetails(NamedTuple):
    """`grpc.ClientCallDetails` with more metadata (gRPC reads these attributes only)."""

    method: str
    timeout: float | None
    metadata: Sequence[tuple[str, str | bytes]] | None
    credentials: grpc.CallCredentials | None
    wait_for_ready: bool | None
    compression: grpc.Compression | None


class _BearerToken(grpc.UnaryUnaryClientInterceptor, grpc.UnaryStreamClientInterceptor):  # type: ignore[misc]
    """Sends `authorization: Bearer <token>` with every call on a plaintext channel."""

    def __init__(self, token: str) -> None:
        self._header = ("authorization", f"Bearer {token}")

    def _details(self, details: grpc.ClientCallDetails) -> _CallDetails:
        return _CallDetails(
            details.method,
            details.timeout,
            [*(details.metadata or ()), self._header],
            details.credentials,
            getattr(details, "wait_for_ready", None),
            getattr(details, "compression", None),
        )

    def intercept_unary_unary(
        self, continuation: Callable[..., Any], details: grpc.ClientCallDetails, request: Any
    ) -> Any:
        return continuation(self._details(details), request)

    def intercept_unary_stream(
        self, continuation: Callable[..., Any], details: grpc.ClientCallDetails, request: Any
    ) -> Any:
        return continuation(self._details(details), request)


def _service_on(channel: grpc.Channel, name: str, version: str) -> Any:
    from google.ads.googleads import util
    from google.ads.googleads.client import _CLIENT_INFO

    module = importlib.import_module(
        f"google.ads.googleads.{version}.services.services."
        f"{util.convert_upper_case_to_snake_case(name)}"
    )
    client_class = getattr(module, f"{name}Client")
    transport_class = client_class.get_transport_class("grpc")
    return client_class(transport=transport_class(channel=channel, client_info=_CLIENT_INFO))


# --- translation ------------------------------------------------------------------------------


def _platform_error(error: Exception, sdk: _Sdk) -> PlatformError | None:
    """The `PlatformError` for an SDK or gRPC error; None for anything else."""
    from google.ads.googleads.errors import GoogleAdsException
    from google.api_core.exceptions import GoogleAPICallError

    if isinstance(error, GoogleAdsException):
        call, status, message = error.call, error.call.code(), error.call.details()
    elif isinstance(error, GoogleAPICallError):
        call, status, message = error.response, error.grpc_status_code, error.message
    elif isinstance(error, grpc.RpcError) and isinstance(error, grpc.Call):
        call, status, message = error, error.code(), error.details()
    else:
        return None
    metadata = dict(call.trailing_metadata() or ()) if isinstance(call, grpc.Call) else {}
    raw_failure = metadata.get(sdk.failure_key)
    failure = sdk.failure_type.deserialize(raw_failure) if raw_failure else None
    errors = list(failure.errors) if failure else []
    categories = [type(e.error_code).pb(e.error_code).WhichOneof("error_code") for e in errors]
    if errors:
        message = "; ".join(e.message for e in errors)
    if request_id := metadata.get("request-id"):
        message = f"{message} (request-id {request_id})"
    if categories:
        code, subcode = categories[0], getattr(errors[0].error_code, categories[0]).name
    else:
        code, subcode = (status.name if status else None), None
    delays = [
        e.details.quota_error_details.retry_delay.total_seconds()
        for e in errors
        if "quota_error_details" in e.details
    ]
    transient = status in _TRANSIENT_CODES or bool(_TRANSIENT_ERROR_CATEGORIES & set(categories))
    error_class = TransientPlatformError if transient else PermanentPlatformError
    return error_class(
        redact(message),
        code=code,
        subcode=subcode,
        retry_after=next((d for d in delays if d), None),
    )


# --- names and texts --------------------------------------------------------------------------


def _object_name(label: str, spec: CampaignSpec) -> str:
    """A name that finds the object again after a crash: it carries AdFlux's campaign id."""
    return f"{label} (adflux:{spec.campaign_id})"


def _gaql_string(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _resource_id(resource_name: str) -> str:
    return resource_name.rsplit("/", 1)[-1]


def _snapshot(row: Any) -> CampaignSnapshot:
    return CampaignSnapshot(
        external_id=str(row.campaign.id),
        status=_STATUSES.get(row.campaign.status.name, "unknown"),
        impressions=row.metrics.impressions,
        clicks=row.metrics.clicks,
        spend=Decimal(row.metrics.cost_micros) / 1_000_000,
        conversions=row.metrics.conversions,
    )


def _distinct_clipped(texts: Iterable[str], limit: int) -> list[str]:
    clipped = (text.strip()[:limit].rstrip() for text in texts)
    return list(dict.fromkeys(text for text in clipped if text))


def _headlines(job: JobOpening) -> list[str]:
    """At least three distinct headlines of at most 30 characters (the API's limits)."""
    candidates = (job.title, job.company, f"Jobs in {job.location}", f"Join {job.company}")
    return _distinct_clipped((*candidates, "Apply today"), _MAX_HEADLINE_LENGTH)[:15]


def _descriptions(job: JobOpening) -> list[str]:
    """At least two distinct descriptions of at most 90 characters."""
    candidates = (
        job.description,
        f"{job.company} is hiring: {job.title} in {job.location}.",
        "See the full job description and apply online in minutes.",
    )
    return _distinct_clipped(candidates, _MAX_DESCRIPTION_LENGTH)[:4]
