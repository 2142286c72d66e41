"""Redaction of secrets from any text that may leave the process: error messages, Kafka
headers, task errors and log lines all pass through `redact()`.

It removes four kinds of secret: values of URL query strings (an SDK that puts
`access_token` in every request URL), `Authorization` / bearer values, values of parameters
whose name says they are secret (`token`, `secret`, `password`, `api_key`, ...), passwords in
connection URLs, and any text equal to a configured secret (every `SecretStr` setting registers
its value when the settings are built).
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterable
from urllib.parse import quote, quote_plus

REDACTED = "[REDACTED]"
# Shorter registered values would redact ordinary words everywhere (the dev database password
# "adflux" is also every topic prefix and group name); such a secret is no secret anyway, and
# the URL, query-string and bearer patterns still hide it where it is used.
MIN_SECRET_LENGTH = 8

_SECRET_NAME = (
    r"[\w-]*(?:token|secret|passw(?:or)?d|pwd|api[_-]?key|apikey|credential|"
    r"appsecret_proof|signature|session[_-]?id)[\w-]*"
)
_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    # Authorization: Bearer xyz / "authorization": "Basic xyz" / authorization=xyz
    (
        re.compile(
            r"(?i)(\bauthorization[\"']?\s*[:=]\s*[\"']?)"
            r"(?:(?:bearer|basic|token|oauth|digest)\s+)?[^\s\"',;}&]+"
        ),
        r"\1" + REDACTED,
    ),
    (re.compile(r"(?i)\b(bearer\s+)[A-Za-z0-9\-._~+/]{8,}=*"), r"\1" + REDACTED),
    # scheme://user:password@host
    (re.compile(r"(?i)\b([a-z][a-z0-9+.\-]*://[^/\s:@]*:)[^@\s/]+@"), r"\1" + REDACTED + "@"),
    # ?name=value&name=value in URLs and in paths ("with url: /v1/x?access_token=...")
    (re.compile(r"([?&][^=&\s#?\"'<>]+=)[^&\s#\"'<>)]*"), r"\1" + REDACTED),
    # name=value, name: value, "name": "value" where the name says it is secret
    (
        re.compile(
            r"(?i)(\b" + _SECRET_NAME + r"[\"']?\s*[:=]\s*[\"']?)(?!\[REDACTED\])[^\s\"',;}&)]+"
        ),
        r"\1" + REDACTED,
    ),
)

_lock = threading.Lock()
_secrets: frozenset[str] = frozenset()
_secret_pattern: re.Pattern[str] | None = None


def register_secrets(values: Iterable[str | None]) -> None:
    """Redact these exact values (and their URL-encoded forms) from now on."""
    global _secrets, _secret_pattern
    variants = set()
    for value in values:
        if not value or len(value) < MIN_SECRET_LENGTH:
            continue
        variants |= {value, quote(value, safe=""), quote_plus(value)}
    with _lock:
        if variants <= _secrets:
            return
        _secrets = _secrets | variants
        # Longest first, so a secret that contains another is removed whole.
        ordered = sorted(_secrets, key=len, reverse=True)
        _secret_pattern = re.compile("|".join(re.escape(v) for v in ordered))


def redact(text: str) -> str:
    """`text` without any secret it carried."""
    if not text:
        return text
    pattern = _secret_pattern
    if pattern is not None:
        text = pattern.sub(REDACTED, text)
    for regex, replacement in _PATTERNS:
        text = regex.sub(replacement, text)
    return text
