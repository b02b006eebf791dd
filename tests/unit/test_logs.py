"""Logs never carry secret material (I7), in either format, even in tracebacks."""

from __future__ import annotations

import io
import json
import logging

import pytest
import structlog

from rotator.aws import SecretText
from rotator.logs import configure

SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"  # AWS's documentation example, 40 characters


def fail_with_secret_in_a_local() -> None:
    secret_access_key = SECRET  # what a frame inside the executor can hold
    raise RuntimeError(f"validation failed for {len(secret_access_key)}-character key")


@pytest.mark.parametrize("fmt", ["json", "console"])
def test_a_traceback_shows_no_local_variables(fmt: str) -> None:
    out = io.StringIO()
    configure(fmt, "info", out)
    try:
        fail_with_secret_in_a_local()
    except RuntimeError:
        structlog.get_logger("test").exception("executor.unexpected_error")
        logging.getLogger("botocore.test").error("library error", exc_info=True)
    text = out.getvalue()
    assert "validation failed" in text  # the traceback was rendered
    assert SECRET not in text


def test_secret_looking_values_and_fields_are_redacted() -> None:
    out = io.StringIO()
    configure("json", "info", out)
    structlog.get_logger("test").info(
        "event.x", note=f"oops {SECRET}", secret_access_key="abc", masked=SecretText(SECRET)
    )
    line = json.loads(out.getvalue().splitlines()[-1])
    assert SECRET not in out.getvalue()
    assert line["secret_access_key"] == "[REDACTED]"
    assert line["event"] == "event.x"
