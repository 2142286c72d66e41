"""Redaction: no secret survives in an error text or a log line, ordinary text is kept."""

from __future__ import annotations

import io
import json
import logging

import requests
from pydantic import SecretStr

from shared import redaction
from shared.logging import JsonFormatter, RedactingFilter
from shared.redaction import REDACTED, redact
from shared.retry import MAX_ERROR_MESSAGE, error_text
from shared.settings import PlatformSettings, ServiceSettings, secret_values


def test_query_string_values_are_redacted_in_urls_and_paths() -> None:
    url = "https://graph.facebook.com/v26.0/act_1/campaigns?access_token=EAAB123&limit=5"
    assert redact(url) == (
        f"https://graph.facebook.com/v26.0/act_1/campaigns?access_token={REDACTED}&limit={REDACTED}"
    )
    urllib3_text = "Max retries exceeded with url: /v26.0/x?access_token=abc&appsecret_proof=de1 ("
    out = redact(urllib3_text)
    assert "abc" not in out and "de1" not in out and "/v26.0/x?access_token=" in out


def test_authorization_bearer_and_secret_named_values_are_redacted() -> None:
    for text, secret in (
        ("Authorization: Bearer s3cr3t-t0ken-value", "s3cr3t-t0ken-value"),
        ("{'authorization': 'Basic dXNlcjpwdw=='}", "dXNlcjpwdw=="),
        ("headers={'Authorization': 'Bearer abcdefghijkl'}", "abcdefghijkl"),
        ('{"client_secret": "cs-9876", "x": 1}', "cs-9876"),
        ("refresh_token=rt-12345 expired", "rt-12345"),
        ("developer-token: dt-0000000", "dt-0000000"),
        ("password=hunter22", "hunter22"),
        ("postgresql+psycopg://adflux:pw-in-url@db:5432/adflux", "pw-in-url"),
    ):
        out = redact(text)
        assert secret not in out, (text, out)
        assert REDACTED in out


def test_ordinary_error_texts_are_kept() -> None:
    for text in (
        "(#100) Invalid parameter",
        "campaign c-1 not found",
        "deadline exceeded after 30.0s (request-id abc)",
        "a token lacks scope 'tasks:write'",
    ):
        assert redact(text) == text


def test_configured_secrets_are_redacted_anywhere_even_url_encoded() -> None:
    redaction.register_secrets(["Sentinel/Value+1=x", "short", "adflux"])
    text = "echo Sentinel/Value+1=x and Sentinel%2FValue%2B1%3Dx and Sentinel%2FValue%2B1%3Dx"
    out = redact(text)
    assert "Sentinel" not in out
    assert redact("short words stay") == "short words stay"  # too short to register
    assert redact("group adflux.publisher") == "group adflux.publisher"


def test_every_secret_setting_is_registered_when_settings_are_built() -> None:
    settings = PlatformSettings(
        meta_access_token=SecretStr("meta-sentinel-aaaa"),
        google_ads_client_secret=SecretStr("google-sentinel-bbbb"),
        database_url="postgresql+psycopg://u:db-sentinel-cccc@h/d",
    )
    values = secret_values(settings)
    assert {"meta-sentinel-aaaa", "google-sentinel-bbbb", "db-sentinel-cccc"} <= set(values)
    for value in ("meta-sentinel-aaaa", "google-sentinel-bbbb", "db-sentinel-cccc"):
        assert value not in redact(f"oops {value} leaked")
    assert ServiceSettings().bind_address == "127.0.0.1"


def test_error_text_redacts_before_truncating() -> None:
    redaction.register_secrets(["tail-secret-zzzz"])
    exc = RuntimeError("x" * (MAX_ERROR_MESSAGE - 5) + "tail-secret-zzzz")
    text = error_text(exc)
    assert "tail-" not in text and len(text) <= MAX_ERROR_MESSAGE


def test_graph_api_unreachable_error_text_has_no_token() -> None:
    session = requests.Session()
    session.params = {"access_token": "url-token-sentinel"}  # type: ignore[assignment]
    try:
        session.get("http://127.0.0.1:1/v26.0/act_1/campaigns", timeout=2)
    except requests.RequestException as exc:
        assert "url-token-sentinel" in str(exc)
        assert "url-token-sentinel" not in error_text(exc)
    else:  # pragma: no cover
        raise AssertionError("port 1 answered")


def test_log_lines_and_tracebacks_are_redacted() -> None:
    redaction.register_secrets(["log-sentinel-1234"])
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(RedactingFilter())
    handler.setFormatter(JsonFormatter("test"))
    logger = logging.getLogger("test.redaction")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.warning("calling %s", "https://x/?access_token=log-sentinel-1234")
        try:
            raise ValueError("boom with log-sentinel-1234")
        except ValueError:
            logger.exception("failed")
    finally:
        logger.removeHandler(handler)
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert len(lines) == 2
    assert "log-sentinel-1234" not in stream.getvalue()
    assert "ValueError" in lines[1]["exc"]
