"""The Google Ads half of the sandbox: a plaintext gRPC server the real `google-ads` SDK calls.

This module wires the servicers: each call is counted, its credentials checked, the faults
set on the `FaultInjector` injected, and a failure sent as the real API sends it (a serialized
`GoogleAdsFailure` in the trailing metadata, so the SDK raises `GoogleAdsException`). The
package has no servicers, so each service is a generic handler built from the proto-plus
request and response types of `api_version`: `<Resource>Service.Mutate<Resource>s` per
resource and `GoogleAdsService` (`Mutate` across resources, `Search`, `SearchStream`). The
work is done by the mutate engine (google_mutate.py, validation in google_validation.py) and
GAQL search (google_search.py, the parser in google_gaql.py).

Faults are drawn per call by operation name: `mutate_<resource>s` (e.g. `mutate_ad_groups`),
`mutate` (GoogleAdsService.Mutate), `search`, `search_stream`. A `GoogleAdsService.Mutate`
request also answers to the names of the resources it mutates: a `mutate_ad_groups` rule
fails a request with an ad group operation — the whole request, as it is atomic.
"""

from __future__ import annotations

import importlib
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from concurrent import futures
from datetime import timedelta
from typing import Any

import grpc

from services.sandbox.faults import FaultInjector
from services.sandbox.google_errors import ApiError, Problem, invalid
from services.sandbox.google_mutate import MutateEngine, resource_of
from services.sandbox.google_resources import RESOURCES, camel
from services.sandbox.google_search import SearchEngine
from services.sandbox.state import SandboxState

_RATE_LIMIT_RETRY_DELAY = timedelta(seconds=1)


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


class GoogleAdsSandbox:
    """The RPC handlers of one API version over the shared `SandboxState`."""

    def __init__(self, state: SandboxState, faults: FaultInjector, api_version: str) -> None:
        self._state = state
        self._faults = faults
        self._version = api_version
        package = f"google.ads.googleads.{api_version}"
        self._errors = importlib.import_module(f"{package}.errors.types.errors")
        self._search_types = importlib.import_module(f"{package}.services.types.google_ads_service")
        self._failure_key = f"{package}.errors.googleadsfailure-bin"
        self._mutates = MutateEngine(state)
        self._searches = SearchEngine(state, self._search_types)

    def handlers(self) -> list[grpc.GenericRpcHandler]:
        prefix = f"google.ads.googleads.{self._version}.services."
        handlers = [self._mutate_handler(prefix, resource) for resource in RESOURCES]
        types = self._search_types
        search = grpc.unary_unary_rpc_method_handler(
            self._unary("search", self._searches.search),
            request_deserializer=types.SearchGoogleAdsRequest.deserialize,
            response_serializer=types.SearchGoogleAdsResponse.serialize,
        )
        search_stream = grpc.unary_stream_rpc_method_handler(
            self._streaming("search_stream", self._searches.search_stream),
            request_deserializer=types.SearchGoogleAdsStreamRequest.deserialize,
            response_serializer=types.SearchGoogleAdsStreamResponse.serialize,
        )
        mutate = grpc.unary_unary_rpc_method_handler(
            self._unary("mutate", self._mutate_google_ads, _resource_operations),
            request_deserializer=types.MutateGoogleAdsRequest.deserialize,
            response_serializer=types.MutateGoogleAdsResponse.serialize,
        )
        handlers.append(
            grpc.method_handlers_generic_handler(
                prefix + "GoogleAdsService",
                {"Mutate": mutate, "Search": search, "SearchStream": search_stream},
            )
        )
        return handlers

    def _mutate_google_ads(self, request: Any) -> Any:
        types = self._search_types
        return types.MutateGoogleAdsResponse(
            mutate_operation_responses=[
                types.MutateOperationResponse(**{f"{resource}_result": {"resource_name": name}})
                for resource, name in self._mutates.mutate_google_ads(request)
            ]
        )

    def _mutate_handler(self, prefix: str, resource: str) -> grpc.GenericRpcHandler:
        singular = camel(resource)
        method = f"Mutate{singular}s"
        types = importlib.import_module(
            f"google.ads.googleads.{self._version}.services.types.{resource}_service"
        )
        response_type = getattr(types, f"{method}Response")
        result_type = getattr(types, f"Mutate{singular}Result")

        def mutate(request: Any) -> Any:
            names = self._mutates.mutate(resource, request)
            return response_type(results=[result_type(resource_name=name) for name in names])

        handler = grpc.unary_unary_rpc_method_handler(
            self._unary(f"mutate_{resource}s", mutate),
            request_deserializer=getattr(types, f"{method}Request").deserialize,
            response_serializer=response_type.serialize,
        )
        return grpc.method_handlers_generic_handler(f"{prefix}{singular}Service", {method: handler})

    # --- calls, faults and errors ------------------------------------------------------------

    def _unary(
        self,
        operation: str,
        call: Callable[[Any], Any],
        inner: Callable[[Any], Iterable[str]] = lambda request: (),
    ) -> Callable[[Any, grpc.ServicerContext], Any]:
        """A unary handler; `inner` names the operations inside a request (faults for them
        fire too)."""

        def handle(request: Any, context: grpc.ServicerContext) -> Any:
            request_id = uuid.uuid4().hex
            try:
                self._admit(context, operation, *inner(request))
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
                self._admit(context, operation)
                responses = call(request)
            except ApiError as error:
                self._abort(context, error, request_id)
            context.set_trailing_metadata((("request-id", request_id),))
            for response in responses:
                response.request_id = request_id
                yield response

        return handle

    def _admit(self, context: grpc.ServicerContext, *operations: str) -> None:
        """Count the call, check its credentials headers, then apply any injected fault (one
        draw per call, whatever the number of `operations` it is)."""
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
        rule = self._faults.draw("google", *operations)
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
        elif rule.kind == "throttle":
            delay = timedelta(seconds=rule.block_seconds)
            quota = Problem(
                "quota_error.RESOURCE_EXHAUSTED",
                f"Too many requests. Retry in {rule.block_seconds:.1f} seconds.",
                retry_delay=delay,
            )
            raise ApiError(grpc.StatusCode.RESOURCE_EXHAUSTED, [quota], "Resource exhausted.")
        else:
            raise invalid("field_error.INVALID_VALUE", "The field's value is invalid (injected).")

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


def _resource_operations(request: Any) -> Iterable[str]:
    """The fault names of the resources a `GoogleAdsService.Mutate` request mutates."""
    resources = (resource_of(operation) for operation in request.mutate_operations)
    return dict.fromkeys(f"mutate_{resource}s" for resource in resources if resource)
