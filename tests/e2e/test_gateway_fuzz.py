"""Schemathesis against the running gateway's own OpenAPI schema, with a real token: every
operation, a bounded number of generated requests each, and for every response no 5xx, a
documented status code and content type, and a body that conforms to the schema."""

from __future__ import annotations

import os
from typing import Any, cast

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from tests.conftest import Gateway

pytestmark = pytest.mark.e2e

# Requests per operation: bounded so the suite stays fast; raise it for a deeper run.
EXAMPLES = int(os.environ.get("ADFLUX_FUZZ_EXAMPLES", "25"))
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


def fuzz(operation: Any, mode: GenerationMode, headers: dict[str, str], statuses: set[int]) -> None:
    """Run one operation's generated requests and check every response."""

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        derandomize=True,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    def call(case: Any) -> None:
        response = case.call(headers=headers, timeout=30)
        statuses.add(response.status_code)
        case.validate_response(response, checks=CHECKS)

    call()


def test_every_operation_answers_generated_requests_without_5xx_and_as_documented(
    gateway: Gateway,
) -> None:
    schema = schemathesis.openapi.from_url(f"{gateway.url}/openapi.json")
    headers = {"Authorization": f"Bearer {gateway.token}"}
    operations = [cast(Any, result).ok() for result in schema.get_all_operations()]
    assert len(operations) >= 15, [op.label for op in operations]
    exercised: dict[str, set[int]] = {}

    for operation in operations:
        statuses = exercised.setdefault(operation.label, set())
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            fuzz(operation, mode, headers, statuses)
    assert all(exercised.values()), exercised
    # The fuzzing left the gateway healthy.
    assert gateway.client.get("/tasks", params={"limit": 1}).status_code == 200
