"""The Google sandbox's mutate engine: create, update and remove operations on the campaign
tree, validated against the stored objects and committed all or none."""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any

import grpc

from services.sandbox.google_errors import ApiError, Location, Problem, invalid
from services.sandbox.google_resources import camel, copy_field, field, objects, resource_id
from services.sandbox.google_validation import CHECKS
from services.sandbox.state import SandboxState


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


class MutateEngine:
    """Applies `Mutate<Resource>s` requests to the shared `SandboxState`."""

    def __init__(self, state: SandboxState) -> None:
        self._state = state

    def mutate(self, resource: str, request: Any) -> list[str]:
        """Apply every operation or none (the API's default, non-partial-failure mode);
        the resource names of the operations' objects, in order."""
        if not request.operations:
            raise invalid("request_error.OPERATION_REQUIRED", "At least one operation needed.")
        customer = request.customer_id
        # Validated against the stored objects and committed as one step.
        with self._state.lock:
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
                        raise invalid("request_error.OPERATION_REQUIRED", "Empty operation.")
                except ApiError as error:
                    problems += [replace(p, location=at + p.location) for p in error.problems]
            if problems:
                raise ApiError(grpc.StatusCode.INVALID_ARGUMENT, problems)
            if not request.validate_only:
                now = time.monotonic()
                for name, obj in staged.items():
                    self._state.created_at.setdefault(name, now)
                    self._state.google_put(f"{resource}s", name, obj)
            return names

    def _create(self, resource: str, customer: str, obj: Any, staged: dict[str, Any]) -> str:
        siblings = Siblings(self._state, resource, customer, staged)
        problems = [
            Problem(code, message, tuple((part, None) for part in path.split(".") if part))
            for code, message, path in CHECKS[resource](self._state, customer, obj, siblings)
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
            collection = camel(resource)[0].lower() + camel(resource)[1:] + "s"
            name = f"customers/{customer}/{collection}/{new_id}"
        obj.resource_name = name
        if not obj.status:
            obj.status = "ENABLED"
        staged[name] = obj
        return name

    def _existing(self, resource: str, customer: str, name: str, staged: dict[str, Any]) -> Any:
        current = staged.get(name, objects(self._state, resource).get(name))
        if current is None or not name.startswith(f"customers/{customer}/"):
            raise invalid("mutate_error.RESOURCE_NOT_FOUND", f"{name!r} does not exist.")
        return current

    def _update(self, resource: str, customer: str, operation: Any, staged: dict[str, Any]) -> str:
        update = operation.update
        current = self._existing(resource, customer, update.resource_name, staged)
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
        staged[update.resource_name] = message_type.wrap(target)
        return str(update.resource_name)

    def _remove(self, resource: str, customer: str, name: str, staged: dict[str, Any]) -> str:
        removed = type(current := self._existing(resource, customer, name, staged))(current)
        removed.status = "REMOVED"
        staged[name] = removed
        return name
