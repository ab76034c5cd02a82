"""Secret redaction: registered values, DSN passwords, log processors."""

from __future__ import annotations

import json
import logging
import sys
import uuid

import structlog

from datadog_platform.core.redaction import (
    MASK,
    RedactingFilter,
    redact,
    redact_value,
    register_secret,
    secret_scope,
    structlog_processor,
)


def _secret() -> str:
    """A unique secret, so tests never depend on each other's registrations."""
    return f"s3cr3t-{uuid.uuid4().hex[:12]}"


def test_registered_secret_is_masked_everywhere_in_a_text() -> None:
    secret = _secret()
    assert secret in redact(f"password {secret} failed")  # not registered yet
    register_secret(secret)
    assert redact(f"password {secret} failed, again {secret}") == (
        f"password {MASK} failed, again {MASK}"
    )


def test_url_encoded_forms_of_a_secret_are_masked() -> None:
    secret = f"p@ss/w:rd {uuid.uuid4().hex[:6]}"
    register_secret(secret)
    assert MASK in redact("p%40ss%2Fw%3Ard%20" + secret.split(" ")[1])
    assert secret not in redact(f"x{secret}x")


def test_longest_secret_wins_when_one_contains_another() -> None:
    short = _secret()
    long = short + "-extended"
    register_secret(short)
    register_secret(long)
    assert redact(f"[{long}]") == f"[{MASK}]"


def test_short_and_non_string_secrets_are_not_registered() -> None:
    register_secret("abc")
    register_secret(123456)  # type: ignore[arg-type]
    assert redact("abc 123456") == "abc 123456"


def test_dsn_passwords_are_masked_without_registration() -> None:
    text = "could not connect to postgresql://alice:Tr0ub4dor@db.internal:5432/prod"
    assert redact(text) == "could not connect to postgresql://alice:***@db.internal:5432/prod"
    assert redact("mysql://:pw1234@host/db") == "mysql://:***@host/db"
    assert redact("host=db user=bob password=hunter22 dbname=x") == (
        "host=db user=bob password=*** dbname=x"
    )
    assert redact("PASSWORD='it s' next") == "PASSWORD=*** next"
    # No password: untouched.
    assert redact("postgresql://alice@db:5432/prod") == "postgresql://alice@db:5432/prod"
    assert redact("http://example.com:8080/a@b") == "http://example.com:8080/a@b"


def test_secret_scope_masks_only_inside_the_block() -> None:
    secret = _secret()
    with secret_scope([secret, "ab"]):
        assert redact(secret) == MASK
        with secret_scope([secret]):
            assert redact(secret) == MASK
        assert redact(secret) == MASK  # still held by the outer scope
    assert redact(secret) == secret


def test_redact_value_recurses() -> None:
    secret = _secret()
    register_secret(secret)
    value = {"a": [secret, 1, (f"x{secret}",)], "b": {"c": secret}, "d": None}
    assert redact_value(value) == {"a": [MASK, 1, (f"x{MASK}",)], "b": {"c": MASK}, "d": None}
    assert redact_value(ValueError(f"bad {secret}")) == f"bad {MASK}"


def test_structlog_processor_masks_event_fields_and_exceptions() -> None:
    secret = _secret()
    register_secret(secret)
    try:
        raise RuntimeError(f"driver said: password {secret} rejected")
    except RuntimeError as exc:
        error = exc
    processors = [
        structlog.processors.format_exc_info,
        structlog_processor,
        structlog.processors.JSONRenderer(),
    ]

    class Settings:
        def __repr__(self) -> str:
            return f"Settings(password={secret!r})"

    event: object = {
        "event": f"login {secret}",
        "dsn": f"pg://u:{secret}@h/db",
        "settings": Settings(),
        "exc_info": error,
    }
    for processor in processors:
        event = processor(None, "error", event)  # type: ignore[arg-type]
    assert isinstance(event, str)
    assert secret not in event
    rendered = json.loads(event)
    assert "RuntimeError" in rendered["exception"]
    assert rendered["settings"] == f"Settings(password={MASK})"


def test_stdlib_filter_masks_messages_args_and_tracebacks() -> None:
    secret = _secret()
    register_secret(secret)
    try:
        raise ValueError(f"token {secret}")
    except ValueError:
        record = logging.getLogger("driver").makeRecord(
            "driver", logging.ERROR, __file__, 1, "auth with %s", (secret,), None
        )
        record.exc_info = sys.exc_info()
    assert RedactingFilter().filter(record)
    text = logging.Formatter("%(message)s").format(record)
    assert secret not in text
    assert f"auth with {MASK}" in text
    assert "ValueError" in text
