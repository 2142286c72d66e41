"""The Google Ads half of the sandbox: a plaintext gRPC server the real `google-ads` SDK calls.

It serves the mutate services of a Search campaign tree and the GAQL subset AdFlux reads,
validates like the real API and fails like it (a serialized `GoogleAdsFailure` in the trailing
metadata, so the SDK raises `GoogleAdsException`), and injects the faults set on the
`FaultInjector`. The package has no servicers, so each service is a generic handler built
from the proto-plus request and response types of `api_version`.
"""

from __future__ import annotations

import importlib
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from concurrent import futures
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import Any

import grpc
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

from services.sandbox.faults import FaultInjector
from services.sandbox.state import SandboxState

# The mutable resources, parents first; each is stored under its plural
# (`state.google_objects("campaigns")`) and served by `<Camel>Service.Mutate<Camel>s`.
_RESOURCES = ("campaign_budget", "campaign", "ad_group", "ad_group_ad")
# A resource's parent and the field that links to it; GAQL can select and filter on the
# parent's fields too (`SELECT campaign.id FROM ad_group`).
_PARENTS = {
    "campaign": ("campaign_budget", "campaign_budget"),
    "ad_group": ("campaign", "campaign"),
    "ad_group_ad": ("ad_group", "ad_group"),
}
_MAX_PAGE_SIZE = 10_000
_RATE_LIMIT_RETRY_DELAY = timedelta(seconds=1)
_MAX_HEADLINE_LENGTH = 30
_MAX_DESCRIPTION_LENGTH = 90


def start_google_server(
    state: SandboxState, faults: FaultInjector, host: str, port: int, api_version: str
) -> grpc.Server:
    """Start the sandbox's Google Ads API on `host:port` (plaintext) and return the server."""
    sandbox = GoogleAdsSandbox(state, faults, api_version)
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=16, thread_name_prefix="gads"))
    server.add_generic_rpc_handlers(sandbox.handlers())
    server.add_insecure_port(f"{host}:{port}")
    server.start()
    return server


# Where in a request an error is: (field name, index) pairs, e.g. operations[0].create.name.
Location = tuple[tuple[str, int | None], ...]
# A validation finding: (error code, message, dotted field path inside the checked object).
Check = tuple[str, str, str]


@dataclass(frozen=True)
class Problem:
    """One error of a failed call, before it becomes a versioned `GoogleAdsError`.

    `code` is `<ErrorCode field>.<enum value>`, e.g. `campaign_error.DUPLICATE_CAMPAIGN_NAME`;
    `location` is the field path, e.g. `(("operations", 0), ("create", None), ("name", None))`.
    """

    code: str
    message: str
    location: Location = ()
    retry_delay: timedelta | None = None


class ApiError(Exception):
    """Ends a call with a gRPC status and, when `problems` is not empty, a `GoogleAdsFailure`."""

    def __init__(
        self,
        status: grpc.StatusCode,
        problems: Iterable[Problem] = (),
        details: str = "Request contains an invalid argument.",
    ) -> None:
        super().__init__(details)
        self.status = status
        self.problems = list(problems)
        self.details = details


def _invalid(code: str, message: str) -> ApiError:
    return ApiError(grpc.StatusCode.INVALID_ARGUMENT, [Problem(code, message)])


def _camel(resource: str) -> str:
    return "".join(part.title() for part in resource.split("_"))


def _resource_id(resource_name: str) -> str:
    return resource_name.rsplit("/", 1)[-1]


def _field(descriptor: Descriptor, path: str) -> FieldDescriptor | None:
    """The field at a dotted `path` of a message type, or None if there is none."""
    found: FieldDescriptor | None = None
    for part in path.split("."):
        if descriptor is None or part not in descriptor.fields_by_name:
            return None
        found = descriptor.fields_by_name[part]
        descriptor = found.message_type
    return found


def _copy_field(source: Message, target: Message, path: str) -> None:
    *parents, leaf = path.split(".")
    for part in parents:
        source, target = getattr(source, part), getattr(target, part)
    target.ClearField(leaf)
    descriptor = source.DESCRIPTOR.fields_by_name[leaf]
    if descriptor.is_repeated:
        getattr(target, leaf).extend(getattr(source, leaf))
    elif descriptor.message_type is not None:
        getattr(target, leaf).CopyFrom(getattr(source, leaf))
    else:
        setattr(target, leaf, getattr(source, leaf))


def _field_text(message: Message, path: str) -> str:
    """A scalar field as GAQL compares it: enums by name, everything else as text."""
    *parents, leaf = path.split(".")
    for part in parents:
        message = getattr(message, part)
    value = getattr(message, leaf)
    enum_type = message.DESCRIPTOR.fields_by_name[leaf].enum_type
    return enum_type.values_by_number[value].name if enum_type is not None else str(value)


# --- GAQL -----------------------------------------------------------------------------------

_QUERY = re.compile(
    r"\s*SELECT\s+(?P<select>.+?)\s+FROM\s+(?P<resource>\w+)"
    r"(?:\s+WHERE\s+(?P<where>.+?))?(?:\s+LIMIT\s+(?P<limit>\d+))?\s*",
    re.IGNORECASE | re.DOTALL,
)
_LITERAL = r"'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\"|[\w.:+-]+"
_CONDITION = re.compile(
    r"\s*(?P<field>[\w.]+)\s*(?P<operator>!=|=|NOT\s+LIKE|LIKE|NOT\s+IN|IN|DURING|BETWEEN)\s*",
    re.IGNORECASE,
)
_LIST_OPERAND = re.compile(rf"\(\s*(?:{_LITERAL})(?:\s*,\s*(?:{_LITERAL}))*\s*\)")
_RANGE_OPERAND = re.compile(rf"(?P<low>{_LITERAL})\s+AND\s+(?P<high>{_LITERAL})", re.IGNORECASE)
_SINGLE_OPERAND = re.compile(_LITERAL)
_NEXT_CONDITION = re.compile(r"\s+AND\s+|\s*$", re.IGNORECASE)


@dataclass(frozen=True)
class Condition:
    """One `field OPERATOR operand` of a WHERE clause; `values` are unquoted literals."""

    field: str
    operator: str  # upper case, single-spaced: "=", "!=", "IN", "NOT LIKE", "DURING", ...
    values: tuple[str, ...]

    def matches(self, row: Message) -> bool:
        if self.field.startswith("segments."):
            # Date ranges select no rows here: every metric covers the object's lifetime.
            return True
        actual = _field_text(row, self.field)
        if self.operator in ("=", "!="):
            return (actual == self.values[0]) == (self.operator == "=")
        if self.operator in ("IN", "NOT IN"):
            return (actual in self.values) == (self.operator == "IN")
        if self.operator in ("LIKE", "NOT LIKE"):
            return bool(_like(self.values[0]).fullmatch(actual)) == (self.operator == "LIKE")
        raise _invalid(
            "query_error.PROHIBITED_FIELD_IN_WHERE_CLAUSE",
            f"{self.operator} applies to segments.date only, not to {self.field}.",
        )


@dataclass(frozen=True)
class Query:
    """The parsed subset of GAQL: SELECT fields FROM resource [WHERE a AND b ...] [LIMIT n]."""

    fields: tuple[str, ...]
    resource: str
    conditions: tuple[Condition, ...] = ()
    limit: int | None = None

    @classmethod
    def parse(cls, text: str) -> Query:
        match = _QUERY.fullmatch(text)
        if match is None:
            raise _invalid("query_error.UNEXPECTED_INPUT", f"Error in query: {text!r}.")
        return cls(
            fields=tuple(name.strip() for name in match["select"].split(",")),
            resource=match["resource"],
            conditions=_parse_where(match["where"] or ""),
            limit=int(match["limit"]) if match["limit"] else None,
        )


def _parse_where(text: str) -> tuple[Condition, ...]:
    conditions = []
    text = text.strip()
    position = 0
    while position < len(text):
        head = _CONDITION.match(text, position)
        if head is None:
            raise _invalid(
                "query_error.UNEXPECTED_INPUT", f"Error in query near {text[position:]!r}."
            )
        operator = " ".join(head["operator"].upper().split())
        if operator == "BETWEEN":
            operand = _RANGE_OPERAND.match(text, head.end())
            values = [operand["low"], operand["high"]] if operand else []
        else:
            operand_pattern = _LIST_OPERAND if operator.endswith("IN") else _SINGLE_OPERAND
            operand = operand_pattern.match(text, head.end())
            values = re.findall(_LITERAL, operand[0]) if operand else []
        if operand is None:
            raise _invalid("query_error.EXPECTED_SINGLE_VALUE", f"No operand after {head[0]!r}.")
        conditions.append(Condition(head["field"], operator, tuple(map(_unquote, values))))
        separator = _NEXT_CONDITION.match(text, operand.end())
        if separator is None:
            raise _invalid("query_error.EXPECTED_AND", f"Expected AND after {operand[0]!r}.")
        position = separator.end()
    return tuple(conditions)


def _unquote(literal: str) -> str:
    if literal[:1] in ("'", '"'):
        return re.sub(r"\\(.)", r"\1", literal[1:-1])
    return literal


def _like(pattern: str) -> re.Pattern[str]:
    """GAQL LIKE: `%` any run, `_` any one character, `[x]` a literal x."""
    regex = ""
    for escaped, wildcard, text in re.findall(r"\[(.)\]|([%_])|(.)", pattern, re.DOTALL):
        if wildcard:
            regex += ".*" if wildcard == "%" else "."
        else:
            regex += re.escape(escaped or text)
    return re.compile(regex, re.DOTALL)


# --- The service ----------------------------------------------------------------------------


class GoogleAdsSandbox:
    """The RPC implementations of one API version over the shared `SandboxState`."""

    def __init__(self, state: SandboxState, faults: FaultInjector, api_version: str) -> None:
        self._state = state
        self._faults = faults
        self._version = api_version
        package = f"google.ads.googleads.{api_version}"
        self._errors = importlib.import_module(f"{package}.errors.types.errors")
        self._search_types = importlib.import_module(f"{package}.services.types.google_ads_service")
        self._failure_key = f"{package}.errors.googleadsfailure-bin"
        self._row_descriptor: Descriptor = self._search_types.GoogleAdsRow.pb().DESCRIPTOR
        # A mutate validates against the stored objects and commits as one step.
        self._lock = threading.Lock()
        self._created_at: dict[str, float] = {}
        self._checks: dict[str, Callable[[str, Any, list[Any]], Iterator[Check]]] = {
            "campaign_budget": self._check_budget,
            "campaign": self._check_campaign,
            "ad_group": self._check_ad_group,
            "ad_group_ad": self._check_ad_group_ad,
        }

    def handlers(self) -> list[grpc.GenericRpcHandler]:
        prefix = f"google.ads.googleads.{self._version}.services."
        handlers = [self._mutate_handler(prefix, resource) for resource in _RESOURCES]
        types = self._search_types
        search = grpc.unary_unary_rpc_method_handler(
            self._unary("search", self._search),
            request_deserializer=types.SearchGoogleAdsRequest.deserialize,
            response_serializer=types.SearchGoogleAdsResponse.serialize,
        )
        search_stream = grpc.unary_stream_rpc_method_handler(
            self._streaming("search_stream", self._search_stream),
            request_deserializer=types.SearchGoogleAdsStreamRequest.deserialize,
            response_serializer=types.SearchGoogleAdsStreamResponse.serialize,
        )
        handlers.append(
            grpc.method_handlers_generic_handler(
                prefix + "GoogleAdsService", {"Search": search, "SearchStream": search_stream}
            )
        )
        return handlers

    # --- calls, faults and errors ------------------------------------------------------------

    def _unary(
        self, operation: str, call: Callable[[Any], Any]
    ) -> Callable[[Any, grpc.ServicerContext], Any]:
        def handle(request: Any, context: grpc.ServicerContext) -> Any:
            request_id = uuid.uuid4().hex
            try:
                self._admit(operation, context)
                response = call(request)
            except ApiError as error:
                self._abort(context, error, request_id)
            context.set_trailing_metadata((("request-id", request_id),))
            return response

        return handle

    def _streaming(
        self, operation: str, call: Callable[[Any], list[Any]]
    ) -> Callable[[Any, grpc.ServicerContext], Iterator[Any]]:
        def handle(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
            request_id = uuid.uuid4().hex
            try:
                self._admit(operation, context)
                responses = call(request)
            except ApiError as error:
                self._abort(context, error, request_id)
            context.set_trailing_metadata((("request-id", request_id),))
            for response in responses:
                response.request_id = request_id
                yield response

        return handle

    def _admit(self, operation: str, context: grpc.ServicerContext) -> None:
        """Count the call, check its credentials headers, then apply any injected fault."""
        self._state.count_request("google")
        metadata = dict(context.invocation_metadata())
        if not str(metadata.get("authorization", "")).startswith("Bearer "):
            raise ApiError(
                grpc.StatusCode.UNAUTHENTICATED,
                [Problem("authentication_error.OAUTH_TOKEN_HEADER_INVALID", "No OAuth token.")],
                "Request is missing required authentication credential.",
            )
        if not metadata.get("developer-token"):
            raise ApiError(
                grpc.StatusCode.UNAUTHENTICATED,
                [Problem("authentication_error.DEVELOPER_TOKEN_INVALID", "No developer token.")],
                "Request is missing the developer token.",
            )
        rule = self._faults.draw("google", operation)
        if rule is None:
            return
        if rule.kind == "latency":
            time.sleep(rule.latency_ms / 1000)
        elif rule.kind == "transient":
            raise ApiError(grpc.StatusCode.UNAVAILABLE, details="The service is unavailable.")
        elif rule.kind == "rate_limit":
            seconds = _RATE_LIMIT_RETRY_DELAY.total_seconds()
            quota = Problem(
                "quota_error.RESOURCE_EXHAUSTED",
                f"Too many requests. Retry in {seconds:g} seconds.",
                retry_delay=_RATE_LIMIT_RETRY_DELAY,
            )
            raise ApiError(grpc.StatusCode.RESOURCE_EXHAUSTED, [quota], "Resource exhausted.")
        else:
            raise _invalid("field_error.INVALID_VALUE", "The field's value is invalid (injected).")

    def _abort(self, context: grpc.ServicerContext, error: ApiError, request_id: str) -> None:
        metadata: list[tuple[str, str | bytes]] = [("request-id", request_id)]
        if error.problems:
            failure = self._errors.GoogleAdsFailure(
                errors=[self._google_ads_error(problem) for problem in error.problems],
                request_id=request_id,
            )
            metadata.append((self._failure_key, self._errors.GoogleAdsFailure.serialize(failure)))
        context.set_trailing_metadata(metadata)
        context.abort(error.status, error.details)

    def _google_ads_error(self, problem: Problem) -> Any:
        category, _, value = problem.code.partition(".")
        error = self._errors.GoogleAdsError(
            error_code=self._errors.ErrorCode(**{category: value}), message=problem.message
        )
        error.location.field_path_elements = [
            {"field_name": name, "index": index} for name, index in problem.location
        ]
        if problem.retry_delay is not None:
            error.details.quota_error_details = {
                "rate_scope": "DEVELOPER",
                "rate_name": "Requests per developer per minute",
                "retry_delay": problem.retry_delay,
            }
        return error

    # --- mutates -----------------------------------------------------------------------------

    def _mutate_handler(self, prefix: str, resource: str) -> grpc.GenericRpcHandler:
        camel = _camel(resource)
        method = f"Mutate{camel}s"
        types = importlib.import_module(
            f"google.ads.googleads.{self._version}.services.types.{resource}_service"
        )
        response_type = getattr(types, f"{method}Response")
        result_type = getattr(types, f"Mutate{camel}Result")

        def mutate(request: Any) -> Any:
            names = self._mutate(resource, request)
            return response_type(results=[result_type(resource_name=name) for name in names])

        handler = grpc.unary_unary_rpc_method_handler(
            self._unary(f"mutate_{resource}s", mutate),
            request_deserializer=getattr(types, f"{method}Request").deserialize,
            response_serializer=response_type.serialize,
        )
        return grpc.method_handlers_generic_handler(f"{prefix}{camel}Service", {method: handler})

    def _objects(self, resource: str) -> dict[str, Any]:
        return self._state.google_objects(f"{resource}s")

    def _mutate(self, resource: str, request: Any) -> list[str]:
        """Apply every operation or none (the API's default, non-partial-failure mode)."""
        if not request.operations:
            raise _invalid("request_error.OPERATION_REQUIRED", "At least one operation needed.")
        customer = request.customer_id
        with self._lock:
            staged: dict[str, Any] = {}
            problems: list[Problem] = []
            names = []
            for index, operation in enumerate(request.operations):
                kind = type(operation).pb(operation).WhichOneof("operation")
                at: Location = (("operations", index), (kind or "operation", None))
                try:
                    if kind == "create":
                        names.append(self._create(resource, customer, operation.create, staged))
                    elif kind == "update":
                        names.append(self._update(resource, customer, operation, staged))
                    elif kind == "remove":
                        names.append(self._remove(resource, customer, operation.remove, staged))
                    else:
                        raise _invalid("request_error.OPERATION_REQUIRED", "Empty operation.")
                except ApiError as error:
                    problems += [replace(p, location=at + p.location) for p in error.problems]
            if problems:
                raise ApiError(grpc.StatusCode.INVALID_ARGUMENT, problems)
            if not request.validate_only:
                now = time.monotonic()
                for name, obj in staged.items():
                    self._created_at.setdefault(name, now)
                    self._objects(resource)[name] = obj
            return names

    def _current(self, resource: str, customer: str, staged: dict[str, Any]) -> list[Any]:
        """The customer's objects of one resource that are not removed, this request's included."""
        objects = {**self._objects(resource), **staged}
        return [
            obj
            for name, obj in objects.items()
            if name.startswith(f"customers/{customer}/") and obj.status.name != "REMOVED"
        ]

    def _create(self, resource: str, customer: str, obj: Any, staged: dict[str, Any]) -> str:
        siblings = self._current(resource, customer, staged)
        problems = [
            Problem(code, message, tuple((part, None) for part in path.split(".") if part))
            for code, message, path in self._checks[resource](customer, obj, siblings)
        ]
        if problems:
            raise ApiError(grpc.StatusCode.INVALID_ARGUMENT, problems)
        new_id = int(self._state.next_id())
        if resource == "ad_group_ad":
            obj.ad.id = new_id
            obj.ad.resource_name = f"customers/{customer}/ads/{new_id}"
            name = f"customers/{customer}/adGroupAds/{_resource_id(obj.ad_group)}~{new_id}"
        else:
            obj.id = new_id
            collection = _camel(resource)[0].lower() + _camel(resource)[1:] + "s"
            name = f"customers/{customer}/{collection}/{new_id}"
        obj.resource_name = name
        if not obj.status:
            obj.status = "ENABLED"
        staged[name] = obj
        return name

    def _existing(self, resource: str, customer: str, name: str, staged: dict[str, Any]) -> Any:
        current = staged.get(name, self._objects(resource).get(name))
        if current is None or not name.startswith(f"customers/{customer}/"):
            raise _invalid("mutate_error.RESOURCE_NOT_FOUND", f"{name!r} does not exist.")
        return current

    def _update(self, resource: str, customer: str, operation: Any, staged: dict[str, Any]) -> str:
        update = operation.update
        current = self._existing(resource, customer, update.resource_name, staged)
        # The SDK's field_mask() helper lists resource_name too; it identifies, never changes.
        paths = [path for path in operation.update_mask.paths if path != "resource_name"]
        if not paths:
            raise _invalid("field_mask_error.FIELD_MASK_MISSING", "The update mask is empty.")
        message_type = type(current)
        source, target = message_type.pb(update), message_type.pb(message_type(current))
        for path in paths:
            if _field(source.DESCRIPTOR, path) is None:
                raise _invalid("field_mask_error.FIELD_NOT_FOUND", f"No field {path!r}.")
            _copy_field(source, target, path)
        staged[update.resource_name] = message_type.wrap(target)
        return str(update.resource_name)

    def _remove(self, resource: str, customer: str, name: str, staged: dict[str, Any]) -> str:
        removed = type(current := self._existing(resource, customer, name, staged))(current)
        removed.status = "REMOVED"
        staged[name] = removed
        return name

    # --- validation: each check yields (error code, message, field path in the object) -------

    def _check_parent(self, resource: str, customer: str, obj: Any) -> Iterator[Check]:
        parent, link = _PARENTS[resource]
        name = getattr(obj, link)
        if not name:
            yield "field_error.REQUIRED", f"The {link} is required.", link
        elif name not in self._objects(parent) or not name.startswith(f"customers/{customer}/"):
            yield "mutate_error.RESOURCE_NOT_FOUND", f"{name!r} does not exist.", link

    def _check_budget(self, customer: str, budget: Any, siblings: list[Any]) -> Iterator[Check]:
        if not budget.name:
            yield "field_error.REQUIRED", "A budget needs a name.", "name"
        elif any(other.name == budget.name for other in siblings):
            yield "campaign_budget_error.DUPLICATE_NAME", "The budget name is taken.", "name"
        if budget.amount_micros <= 0:
            yield "field_error.REQUIRED", "A budget needs a positive amount.", "amount_micros"

    def _check_campaign(self, customer: str, campaign: Any, siblings: list[Any]) -> Iterator[Check]:
        if not campaign.name:
            yield "field_error.REQUIRED", "A campaign needs a name.", "name"
        elif any(other.name == campaign.name for other in siblings):
            yield "campaign_error.DUPLICATE_CAMPAIGN_NAME", "The campaign name is taken.", "name"
        if not campaign.advertising_channel_type:
            yield (
                "field_error.REQUIRED",
                "Set advertising_channel_type.",
                "advertising_channel_type",
            )
        if not campaign.contains_eu_political_advertising:
            yield (
                "mutate_error.EU_POLITICAL_ADVERTISING_DECLARATION_REQUIRED",
                "Declare whether the campaign contains EU political advertising.",
                "contains_eu_political_advertising",
            )
        if type(campaign).pb(campaign).WhichOneof("campaign_bidding_strategy") is None:
            yield "field_error.REQUIRED", "A campaign needs a bidding strategy.", ""
        yield from self._check_parent("campaign", customer, campaign)
        budget = self._objects("campaign_budget").get(campaign.campaign_budget)
        if (
            budget is not None
            and not budget.explicitly_shared
            and any(other.campaign_budget == budget.resource_name for other in siblings)
        ):
            yield (
                "campaign_budget_error.CANNOT_USE_IMPLICITLY_SHARED_CAMPAIGN_BUDGET_WITH_MULTIPLE_CAMPAIGNS",
                "The budget is not shared and already has a campaign.",
                "campaign_budget",
            )

    def _check_ad_group(self, customer: str, ad_group: Any, siblings: list[Any]) -> Iterator[Check]:
        if not ad_group.name:
            yield "field_error.REQUIRED", "An ad group needs a name.", "name"
        elif any(
            other.name == ad_group.name and other.campaign == ad_group.campaign
            for other in siblings
        ):
            yield "ad_group_error.DUPLICATE_ADGROUP_NAME", "The ad group name is taken.", "name"
        yield from self._check_parent("ad_group", customer, ad_group)

    def _check_ad_group_ad(self, customer: str, ad: Any, siblings: list[Any]) -> Iterator[Check]:
        yield from self._check_parent("ad_group_ad", customer, ad)
        rsa = ad.ad.responsive_search_ad
        path = "ad.responsive_search_ad"
        for kind, texts, minimum, maximum, max_length in (
            ("headlines", rsa.headlines, 3, 15, _MAX_HEADLINE_LENGTH),
            ("descriptions", rsa.descriptions, 2, 4, _MAX_DESCRIPTION_LENGTH),
        ):
            if len(texts) < minimum:
                yield (
                    "collection_size_error.TOO_FEW",
                    f"At least {minimum} {kind}.",
                    f"{path}.{kind}",
                )
            if len(texts) > maximum:
                yield (
                    "collection_size_error.TOO_MANY",
                    f"At most {maximum} {kind}.",
                    f"{path}.{kind}",
                )
            for asset in texts:
                if not asset.text:
                    yield "string_length_error.EMPTY", f"Empty text in {kind}.", f"{path}.{kind}"
                elif len(asset.text) > max_length:
                    yield (
                        "string_length_error.TOO_LONG",
                        f"{asset.text!r} is longer than {max_length} characters.",
                        f"{path}.{kind}",
                    )
        if not ad.ad.final_urls:
            yield "field_error.REQUIRED", "An ad needs a final URL.", "ad.final_urls"

    # --- GAQL search -------------------------------------------------------------------------

    def _search(self, request: Any) -> Any:
        rows = self._rows(request.customer_id, Query.parse(request.query))
        page_size = request.page_size or _MAX_PAGE_SIZE
        token = request.page_token
        if token and not (token.isdigit() and int(token) <= len(rows)):
            raise _invalid("request_error.INVALID_PAGE_TOKEN", f"Bad page token {token!r}.")
        start = int(token or 0)
        end = start + page_size
        response = self._search_types.SearchGoogleAdsResponse(results=rows[start:end])
        if end < len(rows):
            response.next_page_token = str(end)
        return response

    def _search_stream(self, request: Any) -> list[Any]:
        rows = self._rows(request.customer_id, Query.parse(request.query))
        response_type = self._search_types.SearchGoogleAdsStreamResponse
        batches = [
            rows[start : start + _MAX_PAGE_SIZE] for start in range(0, len(rows), _MAX_PAGE_SIZE)
        ]
        return [response_type(results=batch) for batch in batches or [[]]]

    def _rows(self, customer: str, query: Query) -> list[Any]:
        if query.resource not in _RESOURCES:
            raise _invalid(
                "query_error.BAD_RESOURCE_TYPE_IN_FROM_CLAUSE",
                f"Cannot select from {query.resource}.",
            )
        visible = {"metrics", "segments", query.resource}
        resource = query.resource
        while resource in _PARENTS:
            resource = _PARENTS[resource][0]
            visible.add(resource)
        for path in (*query.fields, *(condition.field for condition in query.conditions)):
            if _field(self._row_descriptor, path) is None:
                raise _invalid("query_error.UNRECOGNIZED_FIELD", f"Unrecognized field {path!r}.")
            if path.split(".")[0] not in visible:
                raise _invalid(
                    "query_error.PROHIBITED_RESOURCE_TYPE_IN_SELECT_CLAUSE",
                    f"{path!r} cannot be selected from {query.resource}.",
                )
        row_type = self._search_types.GoogleAdsRow
        rows = []
        with self._lock:
            for name, obj in self._objects(query.resource).items():
                if not name.startswith(f"customers/{customer}/"):
                    continue
                full = self._full_row(query.resource, obj)
                if all(condition.matches(full) for condition in query.conditions):
                    row = row_type.pb()()
                    for path in query.fields:
                        _copy_field(full, row, path)
                    rows.append(row_type.wrap(row))
        return rows[: query.limit]

    def _full_row(self, resource: str, obj: Any) -> Message:
        """A row with every field of the object, its ancestors and its metrics."""
        row = self._search_types.GoogleAdsRow()
        name = obj.resource_name
        row.metrics = self._metrics(name)
        current: Any = obj
        while current is not None:
            setattr(row, resource, current)
            if resource not in _PARENTS:
                break
            resource, link = _PARENTS[resource]
            current = self._objects(resource).get(getattr(current, link))
        return self._search_types.GoogleAdsRow.pb(row)

    def _metrics(self, resource_name: str) -> dict[str, Any]:
        age = time.monotonic() - self._created_at.get(resource_name, time.monotonic())
        metrics = self._state.metrics_for(resource_name, age)
        return {
            "impressions": metrics.impressions,
            "clicks": metrics.clicks,
            "cost_micros": metrics.cost_micros,
            "conversions": metrics.conversions,
        }
