"""GAQL search over the Google sandbox's objects: `GoogleAdsService.Search` (paged) and
`SearchStream` (batched) responses, rows carrying the selected fields of an object, its
ancestors and its metrics."""

from __future__ import annotations

from types import ModuleType
from typing import Any

from google.protobuf.descriptor import Descriptor
from google.protobuf.message import Message

from services.sandbox.google_errors import invalid
from services.sandbox.google_gaql import Query
from services.sandbox.google_resources import PARENTS, RESOURCES, copy_field, field, objects
from services.sandbox.state import SandboxState

_MAX_PAGE_SIZE = 10_000


class SearchEngine:
    """Answers GAQL queries of one API version (`search_types`: its google_ads_service types)."""

    def __init__(self, state: SandboxState, search_types: ModuleType) -> None:
        self._state = state
        self._types = search_types
        self._row_descriptor: Descriptor = search_types.GoogleAdsRow.pb().DESCRIPTOR

    def search(self, request: Any) -> Any:
        rows = self._rows(request.customer_id, Query.parse(request.query))
        page_size = request.page_size or _MAX_PAGE_SIZE
        token = request.page_token
        if token and not (token.isdigit() and int(token) <= len(rows)):
            raise invalid("request_error.INVALID_PAGE_TOKEN", f"Bad page token {token!r}.")
        start = int(token or 0)
        end = start + page_size
        response = self._types.SearchGoogleAdsResponse(results=rows[start:end])
        if end < len(rows):
            response.next_page_token = str(end)
        return response

    def search_stream(self, request: Any) -> list[Any]:
        rows = self._rows(request.customer_id, Query.parse(request.query))
        response_type = self._types.SearchGoogleAdsStreamResponse
        batches = [
            rows[start : start + _MAX_PAGE_SIZE] for start in range(0, len(rows), _MAX_PAGE_SIZE)
        ]
        return [response_type(results=batch) for batch in batches or [[]]]

    def _rows(self, customer: str, query: Query) -> list[Any]:
        if query.resource not in RESOURCES:
            raise invalid(
                "query_error.BAD_RESOURCE_TYPE_IN_FROM_CLAUSE",
                f"Cannot select from {query.resource}.",
            )
        visible = {"metrics", "segments", query.resource}
        resource = query.resource
        while resource in PARENTS:
            resource = PARENTS[resource][0]
            visible.add(resource)
        for path in (*query.fields, *(condition.field for condition in query.conditions)):
            if field(self._row_descriptor, path) is None:
                raise invalid("query_error.UNRECOGNIZED_FIELD", f"Unrecognized field {path!r}.")
            if path.split(".")[0] not in visible:
                raise invalid(
                    "query_error.PROHIBITED_RESOURCE_TYPE_IN_SELECT_CLAUSE",
                    f"{path!r} cannot be selected from {query.resource}.",
                )
        row_type = self._types.GoogleAdsRow
        rows = []
        with self._state.lock:
            for name, obj in objects(self._state, query.resource).items():
                if not name.startswith(f"customers/{customer}/"):
                    continue
                full = self._full_row(query.resource, obj)
                if all(condition.matches(full) for condition in query.conditions):
                    row = row_type.pb()()
                    for path in query.fields:
                        copy_field(full, row, path)
                    rows.append(row_type.wrap(row))
        return rows[: query.limit]

    def _full_row(self, resource: str, obj: Any) -> Message:
        """A row with every field of the object, its ancestors and its metrics."""
        row = self._types.GoogleAdsRow()
        name = obj.resource_name
        row.metrics = self._metrics(name)
        current: Any = obj
        while current is not None:
            setattr(row, resource, current)
            if resource not in PARENTS:
                break
            resource, link = PARENTS[resource]
            current = objects(self._state, resource).get(getattr(current, link))
        return self._types.GoogleAdsRow.pb(row)

    def _metrics(self, resource_name: str) -> dict[str, Any]:
        metrics = self._state.metrics_for(resource_name, self._state.age_of(resource_name))
        return {
            "impressions": metrics.impressions,
            "clicks": metrics.clicks,
            "cost_micros": metrics.cost_micros,
            "conversions": metrics.conversions,
        }
