"""The Google sandbox's mutate engine: create, update and remove operations on the campaign
tree, from one resource's `Mutate<Resource>s` request or from a `GoogleAdsService.Mutate`
request that mixes resources.

Both kinds of request take one path: the operations are applied in order to a `Staging`
(the stored objects with what the request's earlier operations staged over them), each is
validated against that view — so a parent created earlier in the same request exists — and
the request is committed all or none (the API's default, non-partial-failure mode). A create
may name its object with a temporary resource name (a negative id, e.g.
`customers/1/campaigns/-2`); later operations refer to the object by it and get the real
name in its place. An error is located in the request, e.g.
`mutate_operations[2].ad_group_operation.create.campaign`."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, replace
from typing import Any

import grpc

from services.sandbox.google_errors import ApiError, Location, Problem, invalid
from services.sandbox.google_resources import (
    PARENTS,
    RESOURCES,
    camel,
    copy_field,
    field,
    objects,
    resource_id,
)
from services.sandbox.google_validation import CHECKS
from services.sandbox.state import SandboxState

# customers/<id>/<collection>/-<n>: a name a create gives the object it makes in a request.
_TEMPORARY_NAME = re.compile(r"customers/(?P<customer>[^/]+)/(?P<collection>[^/]+)/-[1-9]\d*")


def collection(resource: str) -> str:
    """The resource's segment of its resource names: campaign_budget -> campaignBudgets."""
    name = camel(resource)
    return name[0].lower() + name[1:] + "s"


def resource_of(mutate_operation: Any) -> str | None:
    """The resource of one `MutateOperation` (campaign_budget_operation -> campaign_budget);
    None when it is empty."""
    kind = type(mutate_operation).pb(mutate_operation).WhichOneof("operation")
    return kind.removesuffix("_operation") if kind else None


class Siblings:
    """A new object's live siblings (the same resource and customer, not removed, this
    request's staged objects included), looked up by the value of one field."""

    def __init__(
        self, state: SandboxState, resource: str, customer: str, staged: dict[str, Any]
    ) -> None:
        self._state = state
        self._resource = resource
        self._prefix = f"customers/{customer}/"
        self._staged = staged

    def having(self, field: str, value: Any) -> list[Any]:
        """The siblings whose `field` equals `value` (one of GOOGLE_INDEXED_FIELDS)."""
        found = {
            obj.resource_name: obj
            for obj in self._state.google_having(f"{self._resource}s", field, value)
            if obj.resource_name not in self._staged  # a staged update or remove replaces it
        }
        for name, obj in self._staged.items():
            if getattr(obj, field) == value and obj.status.name != "REMOVED":
                found[name] = obj
        return [obj for name, obj in found.items() if name.startswith(self._prefix)]


class Staging:
    """One request's view of the campaign tree: the stored objects of every resource with
    the creates, updates and removes of its operations so far over them, and its temporary
    resource names with the real names they stand for."""

    def __init__(self, state: SandboxState, customer: str) -> None:
        self.state = state
        self.customer = customer
        self.staged: dict[str, dict[str, Any]] = {resource: {} for resource in RESOURCES}
        self._temporary: dict[str, str] = {}

    def get(self, resource: str, name: str) -> Any | None:
        """The object named `name` as the request sees it (staged or stored), or None."""
        staged = self.staged[resource]
        return staged[name] if name in staged else objects(self.state, resource).get(name)

    def siblings(self, resource: str) -> Siblings:
        return Siblings(self.state, resource, self.customer, self.staged[resource])

    def resolve(self, name: str, path: str) -> str:
        """`name`, or the real name of the object an earlier create of this request named so
        temporarily; `path` locates the reference in its operation."""
        if _TEMPORARY_NAME.fullmatch(name) is None:
            return name
        real = self._temporary.get(name)
        if real is None:
            raise invalid(
                "mutate_error.RESOURCE_NOT_FOUND",
                f"{name!r} is not the temporary name of an earlier create in this request.",
                _location(path),
            )
        return real

    def check_temporary(self, resource: str, temporary: str) -> None:
        """Refuse a create's temporary name unless it is well formed and new in the request
        (`bind` ties it to the created object's real name)."""
        match = _TEMPORARY_NAME.fullmatch(temporary)
        if match is None or match["customer"] != self.customer:
            message = f"{temporary!r} is not customers/{self.customer}/<collection>/-<n>."
            raise invalid(
                "request_error.RESOURCE_NAME_MALFORMED", message, _location("resource_name")
            )
        if match["collection"] != collection(resource):
            message = f"{temporary!r} does not name a {resource}."
            raise invalid(
                "request_error.RESOURCE_NAME_MALFORMED", message, _location("resource_name")
            )
        if temporary in self._temporary:
            message = f"{temporary!r} names two creates of this request."
            raise invalid(
                "mutate_error.ID_EXISTS_IN_MULTIPLE_MUTATES", message, _location("resource_name")
            )

    def bind(self, temporary: str, name: str) -> None:
        self._temporary[temporary] = name

    def commit(self) -> None:
        """Store every staged object (parents' resources first); call under `state.lock`."""
        now = time.monotonic()
        for resource, staged in self.staged.items():
            for name, obj in staged.items():
                self.state.created_at.setdefault(name, now)
                self.state.google_put(f"{resource}s", name, obj)


@dataclass(frozen=True)
class _Operation:
    """One `<Resource>Operation` of a request and where it is in the request."""

    resource: str
    operation: Any
    at: Location


class MutateEngine:
    """Applies `Mutate<Resource>s` and `GoogleAdsService.Mutate` requests to the shared
    `SandboxState`."""

    def __init__(self, state: SandboxState) -> None:
        self._state = state

    def mutate(self, resource: str, request: Any) -> list[str]:
        """A `Mutate<Resource>s` request: the resource names of its operations' objects."""
        operations = [
            _Operation(resource, operation, (("operations", index),))
            for index, operation in enumerate(request.operations)
        ]
        return self._apply(request.customer_id, operations, request.validate_only)

    def mutate_google_ads(self, request: Any) -> list[tuple[str, str]]:
        """A `GoogleAdsService.Mutate` request: (resource, resource name) of its operations'
        objects, in order."""
        operations = []
        for index, mutate_operation in enumerate(request.mutate_operations):
            resource = resource_of(mutate_operation)
            at: Location = (("mutate_operations", index),)
            if resource is None:
                problem = Problem("request_error.OPERATION_REQUIRED", "Empty operation.", at)
                raise ApiError(grpc.StatusCode.INVALID_ARGUMENT, [problem])
            if resource not in RESOURCES:
                message = f"The sandbox does not mutate {resource}."
                problem = Problem("mutate_error.MUTATE_NOT_ALLOWED", message, at)
                raise ApiError(grpc.StatusCode.INVALID_ARGUMENT, [problem])
            kind = f"{resource}_operation"
            at += ((kind, None),)
            operations.append(_Operation(resource, getattr(mutate_operation, kind), at))
        names = self._apply(request.customer_id, operations, request.validate_only)
        return [
            (operation.resource, name) for operation, name in zip(operations, names, strict=True)
        ]

    def _apply(self, customer: str, operations: list[_Operation], validate_only: bool) -> list[str]:
        """Apply every operation or none; the resource names of their objects, in order."""
        if not operations:
            raise invalid("request_error.OPERATION_REQUIRED", "At least one operation needed.")
        # Validated against the stored objects and committed as one step.
        with self._state.lock:
            staging = Staging(self._state, customer)
            problems: list[Problem] = []
            names = []
            for item in operations:
                operation = item.operation
                kind = type(operation).pb(operation).WhichOneof("operation")
                at = (*item.at, (kind or "operation", None))
                try:
                    if kind == "create":
                        names.append(self._create(staging, item.resource, operation.create))
                    elif kind == "update":
                        names.append(self._update(staging, item.resource, operation))
                    elif kind == "remove":
                        names.append(self._remove(staging, item.resource, operation.remove))
                    else:
                        raise invalid("request_error.OPERATION_REQUIRED", "Empty operation.")
                except ApiError as error:
                    problems += [replace(p, location=at + p.location) for p in error.problems]
            if problems:
                raise ApiError(grpc.StatusCode.INVALID_ARGUMENT, problems)
            if not validate_only:
                staging.commit()
            return names

    def _create(self, staging: Staging, resource: str, obj: Any) -> str:
        temporary = obj.resource_name
        if temporary:
            staging.check_temporary(resource, temporary)
        _resolve_parent(staging, resource, obj)
        customer = staging.customer
        problems = [
            Problem(code, message, _location(path))
            for code, message, path in CHECKS[resource](
                staging, customer, obj, staging.siblings(resource)
            )
        ]
        if problems:
            raise ApiError(grpc.StatusCode.INVALID_ARGUMENT, problems)
        new_id = int(self._state.next_id())
        if resource == "ad_group_ad":
            obj.ad.id = new_id
            obj.ad.resource_name = f"customers/{customer}/ads/{new_id}"
            name = f"customers/{customer}/adGroupAds/{resource_id(obj.ad_group)}~{new_id}"
        else:
            obj.id = new_id
            name = f"customers/{customer}/{collection(resource)}/{new_id}"
        obj.resource_name = name
        if not obj.status:
            obj.status = "ENABLED"
        staging.staged[resource][name] = obj
        if temporary:
            staging.bind(temporary, name)
        return name

    def _existing(self, staging: Staging, resource: str, name: str) -> Any:
        current = staging.get(resource, name)
        if current is None or not name.startswith(f"customers/{staging.customer}/"):
            raise invalid("mutate_error.RESOURCE_NOT_FOUND", f"{name!r} does not exist.")
        return current

    def _update(self, staging: Staging, resource: str, operation: Any) -> str:
        update = operation.update
        name = staging.resolve(update.resource_name, "resource_name")
        current = self._existing(staging, resource, name)
        # The SDK's field_mask() helper lists resource_name too; it identifies, never changes.
        paths = [path for path in operation.update_mask.paths if path != "resource_name"]
        if not paths:
            raise invalid("field_mask_error.FIELD_MASK_MISSING", "The update mask is empty.")
        message_type = type(current)
        source, target = message_type.pb(update), message_type.pb(message_type(current))
        for path in paths:
            if field(source.DESCRIPTOR, path) is None:
                raise invalid("field_mask_error.FIELD_NOT_FOUND", f"No field {path!r}.")
            copy_field(source, target, path)
        updated = message_type.wrap(target)
        _resolve_parent(staging, resource, updated)
        staging.staged[resource][name] = updated
        return name

    def _remove(self, staging: Staging, resource: str, name: str) -> str:
        name = staging.resolve(name, "")
        removed = type(current := self._existing(staging, resource, name))(current)
        removed.status = "REMOVED"
        staging.staged[resource][name] = removed
        return name


def _resolve_parent(staging: Staging, resource: str, obj: Any) -> None:
    """Replace a temporary name in the object's link to its parent by the real name."""
    if resource in PARENTS:
        link = PARENTS[resource][1]
        if parent := getattr(obj, link):
            setattr(obj, link, staging.resolve(parent, link))


def _location(path: str) -> Location:
    """The location of a dotted field path inside an operation's object."""
    return tuple((part, None) for part in path.split(".") if part)
