"""Bearer-token authentication with scopes: 401 without a valid token, 403 without the scope.

Tokens are looked up by their SHA-256 digest (no comparison loop that returns early on the
first differing byte), and the WebSocket takes a short-lived ticket instead of a long-lived
token in its URL (browsers cannot set its headers; URLs end up in access logs).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import json
import secrets
import threading
import time
from collections.abc import Callable, Coroutine
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from shared.redaction import register_secrets

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
# What running each task by name needs besides tasks:write: the scope of the resource it acts
# on, so that POST /tasks opens no door the resource endpoints keep shut.
TASK_SCOPES: dict[str, str] = {
    "campaign.publish": "campaigns:write",
    "campaign.sync": "campaigns:write",
    "metrics.refresh": "campaigns:write",
    "ml.train": "ml:write",
    "ml.assign_segments": "ml:write",
}

bearer = HTTPBearer(auto_error=False)


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()


class TokenRegistry:
    """Known tokens (by digest) and their scopes: the master token has all of them."""

    def __init__(self, master: str, extra_json: str = "") -> None:
        extra = json.loads(extra_json) if extra_json else {}
        if not isinstance(extra, dict):
            raise ValueError('ADFLUX_API_TOKENS must be a JSON object {"<token>": [scopes]}')
        self._scopes: dict[bytes, frozenset[str]] = {}
        for token, scopes in extra.items():
            unknown = set(scopes) - ALL_SCOPES
            if unknown:
                raise ValueError(f"unknown scopes {sorted(unknown)} in ADFLUX_API_TOKENS")
            self._scopes[_digest(token)] = frozenset(scopes)
        if not master:
            raise ValueError("ADFLUX_API_TOKEN must not be empty")
        self._scopes[_digest(master)] = ALL_SCOPES
        register_secrets([master, *extra])
        self.tickets = TicketIssuer(_digest(master))

    def scopes_of(self, token: str | None) -> frozenset[str] | None:
        if not token:
            return None
        return self._scopes.get(_digest(token))


class TicketIssuer:
    """Short-lived, single-use WebSocket tickets: `<payload>.<HMAC>` carrying the scopes of the
    token that asked for it. Stateless across replicas that share the master token; a ticket
    is redeemed once per process."""

    def __init__(self, secret: bytes) -> None:
        self._key = hmac.new(secret, b"adflux-websocket-ticket-v1", hashlib.sha256).digest()
        self._used: dict[str, float] = {}
        self._lock = threading.Lock()

    def issue(self, scopes: frozenset[str], ttl: float) -> str:
        body = json.dumps(
            {"s": sorted(scopes), "e": time.time() + ttl, "n": secrets.token_urlsafe(12)},
            separators=(",", ":"),
        ).encode()
        payload = base64.urlsafe_b64encode(body).decode().rstrip("=")
        return f"{payload}.{self._sign(payload)}"

    def redeem(self, ticket: str | None) -> frozenset[str] | None:
        """The ticket's scopes, once; None when forged, expired or already used."""
        if not ticket or ticket.count(".") != 1 or len(ticket) > 2048:
            return None
        payload, signature = ticket.split(".")
        if not hmac.compare_digest(signature, self._sign(payload)):
            return None
        try:
            body = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
            scopes, expires, nonce = frozenset(body["s"]), float(body["e"]), str(body["n"])
        except (ValueError, KeyError, TypeError):
            return None
        now = time.time()
        with self._lock:
            self._used = {n: e for n, e in self._used.items() if e > now}
            if expires <= now or nonce in self._used:
                return None
            self._used[nonce] = expires
        return scopes & ALL_SCOPES

    def _sign(self, payload: str) -> str:
        digest = hmac.new(self._key, payload.encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).decode().rstrip("=")


def is_loopback(address: str) -> bool:
    if address == "localhost":
        return True
    try:
        return ipaddress.ip_address(address.strip("[]")).is_loopback
    except ValueError:
        return False


def check_exposure(bind_address: str, api_token: str, default_token: str) -> None:
    """Refuse to serve the well-known default token anywhere but on loopback."""
    if api_token == default_token and not is_loopback(bind_address):
        raise SystemExit(
            f"refusing to start: ADFLUX_API_TOKEN is the default {default_token!r} and "
            f"ADFLUX_BIND_ADDRESS is {bind_address!r}, which is not loopback; set "
            "ADFLUX_API_TOKEN to a long random secret"
        )


def bearer_scopes(
    request: Request, credentials: HTTPAuthorizationCredentials | None
) -> frozenset[str]:
    """The scopes of the request's bearer token; 401 when it has none that is valid."""
    registry: TokenRegistry = request.app.state.tokens
    scopes = registry.scopes_of(credentials.credentials if credentials else None)
    if scopes is None:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "missing or invalid bearer token",
            headers={"WWW-Authenticate": "Bearer"},
        )
    return scopes


def require(scope: str) -> Callable[..., Coroutine[Any, Any, frozenset[str]]]:
    """A FastAPI dependency that admits requests whose token has `scope` (and returns the
    token's scopes, for checks that depend on the body). Async: a digest and a lookup need no
    worker thread, and every request saves a hop to the thread pool."""

    async def check(
        request: Request,
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
    ) -> frozenset[str]:
        scopes = bearer_scopes(request, credentials)
        if scope not in scopes:
            raise HTTPException(status.HTTP_403_FORBIDDEN, f"token lacks scope {scope!r}")
        return scopes

    return check


def require_task_scope(task_name: str, scopes: frozenset[str]) -> None:
    """403 unless the token may run `task_name` (its resource's scope)."""
    needed = TASK_SCOPES.get(task_name)
    if needed is not None and needed not in scopes:
        raise HTTPException(
            status.HTTP_403_FORBIDDEN, f"token lacks scope {needed!r} to run {task_name}"
        )
