"""How a sandboxed Google Ads call fails: the problems it reports and the error that ends it
(the servicer turns them into a `GoogleAdsFailure`, in services/sandbox/google.py)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import timedelta

import grpc

# Where in a request an error is: (field name, index) pairs, e.g. operations[0].create.name.
Location = tuple[tuple[str, int | None], ...]


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


def invalid(code: str, message: str, location: Location = ()) -> ApiError:
    """The error of a request with one invalid argument (at `location` in its operation)."""
    return ApiError(grpc.StatusCode.INVALID_ARGUMENT, [Problem(code, message, location)])
