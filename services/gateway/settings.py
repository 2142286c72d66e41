"""The gateway's settings: HTTP address, API tokens and where the schedules file is."""

from __future__ import annotations

from pydantic import SecretStr

from shared.settings import ServiceSettings


class GatewaySettings(ServiceSettings):
    # Bearer token with every scope.
    api_token: SecretStr = SecretStr("dev-token")
    # Extra tokens with limited scopes, as JSON: {"<token>": ["tasks:read", ...]}.
    api_tokens: str = ""
    http_host: str = "127.0.0.1"
    http_port: int = 8000
