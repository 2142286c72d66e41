"""Bearer-token authentication with scopes: 401 without a valid token, 403 without the scope."""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable
from typing import Annotated

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

ALL_SCOPES = frozenset(
    {
        "jobs:write",
        "campaigns:read",
        "campaigns:write",
        "tasks:read",
        "tasks:write",
        "dlq:read",
        "dlq:write",
        "schedules:read",
        "schedules:write",
        "ml:read",
        "ml:write",
    }
)

_bearer = HTTPBearer(auto_error=False)


class TokenRegistry:
    """Known tokens and their scopes: the master token has all of them."""

    def __init__(self, master: str, extra_json: str = "") -> None:
        self._tokens: dict[str, frozenset[str]] = {master: ALL_SCOPES}
        for token, scopes in (json.loads(extra_json) if extra_json else {}).items():
            unknown = set(scopes) - ALL_SCOPES
            if unknown:
                raise ValueError(f"unknown scopes {sorted(unknown)} in ADFLUX_API_TOKENS")
            self._tokens[token] = frozenset(scopes)

    def scopes_of(self, token: str | None) -> frozenset[str] | None:
        if not token:
            return None
        for known, scopes in self._tokens.items():
            if secrets.compare_digest(known.encode(), token.encode()):
                return scopes
        return None


def require(scope: str) -> Callable[..., None]:
    """A FastAPI dependency that admits requests whose token has `scope`."""

    def check(
        request: Request,
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    ) -> None:
        registry: TokenRegistry = request.app.state.tokens
        scopes = registry.scopes_of(credentials.credentials if credentials else None)
        if scopes is None:
            raise HTTPException(
                status.HTTP_401_UNAUTHORIZED,
                "missing or invalid bearer token",
                headers={"WWW-Authenticate": "Bearer"},
            )
        if scope not in scopes:
            raise HTTPException(status.HTTP_403_FORBIDDEN, f"token lacks scope {scope!r}")

    return check
