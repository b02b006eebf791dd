"""The configuration's value checks: plain functions raising ``ValueError``. Pure: no pydantic, no YAML.

:mod:`rotator.config` calls them from its models' validators, which turn the ``ValueError`` into an error
at the key's path; each ``check_*`` returns the value it accepts, so a validator is one line.
"""

from __future__ import annotations

import contextlib
import ipaddress
import re
import string
from collections.abc import Callable, Sequence
from datetime import timedelta
from urllib.parse import urlsplit

from rotator.durations import _shorten, format_duration

__all__ = [
    "TEMPLATE_PLACEHOLDERS",
    "check_account_ids",
    "check_address",
    "check_between",
    "check_globs",
    "check_iam_path",
    "check_ous",
    "check_port",
    "check_quoted_account_ids",
    "check_regions",
    "check_role_arns",
    "check_role_name",
    "check_secret_tags",
    "check_table_name",
]


def check_between(low: timedelta, high: timedelta) -> Callable[[timedelta], timedelta]:
    """A check that a duration lies between ``low`` and ``high``, inclusive."""

    def check(value: timedelta) -> timedelta:
        if not low <= value <= high:
            span = f"{format_duration(low)} and {format_duration(high)}"
            raise ValueError(f"must be between {span}, got {format_duration(value)}")
        return value

    return check


def _lower(value: object) -> object:
    return value.strip().lower() if isinstance(value, str) else value


def _unique(values: Sequence[str], what: str) -> None:
    seen: set[str] = set()
    for value in values:
        if value in seen:
            raise ValueError(f"duplicate {what} {value!r}")
        seen.add(value)


def _reject_number_for_id(value: object, what: str) -> object:
    # YAML reads an unquoted 12-digit account id as a number (and one with a leading zero may even be
    # octal); silently re-padding could point at the wrong account, so insist on quotes instead.
    if isinstance(value, int) and not isinstance(value, bool):
        raise ValueError(f"{what} must be a quoted string (YAML reads unquoted digits as a number)")
    return value


_IAM_PATH_RE = re.compile(r"/(?:[\x21-\x7e]*/)?")
_ROLE_ARN_RE = re.compile(r"arn:aws[-a-z]*:iam::\d{12}:role/(?:[\w+=,.@-]+/)*[\w+=,.@-]{1,64}")
_ROLE_NAME_RE = re.compile(r"[\w+=,.@-]{1,64}")
_ACCOUNT_ID_RE = re.compile(r"\d{12}")
_OU_ID_RE = re.compile(r"ou-[0-9a-z]{4,32}-[0-9a-z]{8,32}|r-[0-9a-z]{4,32}")
_REGION_RE = re.compile(r"[a-z]{2}(?:-[a-z]+)+-\d+")
_DYNAMODB_TABLE_RE = re.compile(r"[A-Za-z0-9_.-]{3,255}")
_SECRET_NAME_RE = re.compile(r"[A-Za-z0-9/_+=.@-]{1,512}")
_HOST_LABEL_RE = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?")
_NAME_CHARS_HINT = "ASCII letters, digits and /_+=.@-"
TEMPLATE_PLACEHOLDERS = ("user", "account", "path")


# --------------------------------------------------------------------------------------------- per section


def check_iam_path(value: str) -> str:
    """``selection.path_prefix``."""
    if len(value) > 512 or _IAM_PATH_RE.fullmatch(value) is None:
        raise ValueError(f"must be an IAM path that starts and ends with '/', got {_shorten(value)!r}")
    return value


def check_globs(value: tuple[str, ...]) -> tuple[str, ...]:
    """``selection.exclude``."""
    if any(not glob.strip() for glob in value):
        raise ValueError("globs must not be empty")
    _unique(value, "glob")
    return value


_SECRET_TAGS_FREE = 35


def check_secret_tags(value: dict[str, str]) -> dict[str, str]:
    """``secrets.tags``."""
    # Secrets Manager allows 50 tags a secret; the rotator's own records and intent mark take up to 15.
    if len(value) > _SECRET_TAGS_FREE:
        raise ValueError(
            f"at most {_SECRET_TAGS_FREE} tags ({len(value)} given): Secrets Manager allows 50 a secret "
            "and the rotator's records take 15"
        )
    for key, tag_value in value.items():
        # rotator:* tags carry the rotation state; letting configuration set them would corrupt it.
        if key.lower().startswith(("rotator:", "aws:")):
            raise ValueError(f"tag key {key!r} uses a reserved prefix (rotator: and aws: are not allowed)")
        if not 1 <= len(key) <= 128:
            raise ValueError(f"tag key {_shorten(key)!r} must be 1 to 128 characters")
        if len(tag_value) > 256:
            raise ValueError(f"tag {key!r} value must be at most 256 characters")
    return value


def check_regions(value: tuple[str, ...]) -> tuple[str, ...]:
    """``secrets.replica_regions``."""
    for region in value:
        if _REGION_RE.fullmatch(region) is None:
            raise ValueError(f"{_shorten(region)!r} is not an AWS region name (e.g. eu-west-1)")
    _unique(value, "region")
    return value


def check_address(value: str) -> str:
    """``metrics.address``."""
    if not _is_ip_address(value) and not _is_host_name(value):
        raise ValueError(f"{_shorten(value)!r} is not an IP address or a host name (e.g. 127.0.0.1, ::, localhost)")
    return value


def check_port(value: object) -> object:
    """``metrics.port``, before any conversion (``true`` or ``"80"`` is no port)."""
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
        raise ValueError(f"must be an integer between 1 and 65535, got {_shorten(repr(value))}")
    return value


def check_table_name(value: str | None) -> str | None:
    """``coordination.lease_table``."""
    if value is not None and _DYNAMODB_TABLE_RE.fullmatch(value) is None:
        raise ValueError(f"{_shorten(value)!r} is not a DynamoDB table name (3 to 255 of A-Z a-z 0-9 _ . -)")
    return value


_TOPIC_ARN_RE = re.compile(r"arn:aws[a-z-]*:sns:[a-z0-9-]+:\d{12}:[A-Za-z0-9_-]{1,256}(\.fifo)?")


def check_topic_arn(value: str | None) -> str | None:
    """``notifications.sns_topic_arn``."""
    if value is not None and _TOPIC_ARN_RE.fullmatch(value) is None:
        raise ValueError(f"{_shorten(value)!r} is not an SNS topic ARN (arn:aws:sns:REGION:ACCOUNT:NAME)")
    return value


def check_webhook_url(value: str) -> str:
    """``notifications.webhook_url``: https, or http to a loopback address (a local relay, tests).

    The URL itself is never repeated in the message: webhook URLs carry their credential (Slack's do).
    """
    try:
        parts = urlsplit(value)
        host = parts.hostname or ""
    except ValueError:
        raise ValueError("is not a URL") from None
    if not host:
        raise ValueError("is not a URL with a host")
    loopback = host == "localhost"
    with contextlib.suppress(ValueError):  # a host name, not an address
        loopback = loopback or ipaddress.ip_address(host).is_loopback
    if parts.scheme != "https" and not (parts.scheme == "http" and loopback):
        raise ValueError("must be an https URL (http only to a loopback address)")
    return value


def check_role_name(value: str) -> str:
    """``organization.role_name``."""
    if _ROLE_NAME_RE.fullmatch(value) is None:
        raise ValueError(f"{_shorten(value)!r} is not an IAM role name")
    return value


def check_ous(value: tuple[str, ...]) -> tuple[str, ...]:
    """``organization.include_ous``."""
    for ou in value:
        if _OU_ID_RE.fullmatch(ou) is None:
            raise ValueError(f"{_shorten(ou)!r} is not an organizational unit or root id (ou-... or r-...)")
    _unique(value, "organizational unit")
    return value


def check_quoted_account_ids(value: object) -> object:
    """``organization.exclude_accounts``, before any conversion: no account id written as a number."""
    if isinstance(value, Sequence) and not isinstance(value, str):
        for item in value:
            _reject_number_for_id(item, "an account id")
    return value


def check_account_ids(value: tuple[str, ...]) -> tuple[str, ...]:
    """``organization.exclude_accounts``."""
    for account in value:
        if _ACCOUNT_ID_RE.fullmatch(account) is None:
            raise ValueError(f"{_shorten(account)!r} is not a 12-digit account id")
    _unique(value, "account id")
    return value


def check_role_arns(value: tuple[str, ...]) -> tuple[str, ...]:
    """``accounts``."""
    for arn in value:
        if _ROLE_ARN_RE.fullmatch(arn) is None:
            raise ValueError(f"{_shorten(arn)!r} is not an IAM role ARN (arn:aws:iam::123456789012:role/NAME)")
    _unique(value, "role ARN")
    return value


# --------------------------------------------------------------------------------------------- addresses


def _is_ip_address(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _is_host_name(text: str) -> bool:
    """RFC 1123 syntax (checked, not resolved: the name may resolve only where the daemon runs).

    A last label of digits only is refused, so a mistyped address such as ``999.1.1.1`` is no host name.
    """
    labels = text.removesuffix(".").split(".")
    return len(text) <= 253 and all(_HOST_LABEL_RE.fullmatch(label) for label in labels) and not labels[-1].isdigit()


# --------------------------------------------------------------------------------------------- secret names


def _check_name_template(template: str) -> None:
    try:
        parts = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise ValueError(f"invalid template {template!r}: {exc}") from None
    placeholders: set[str] = set()
    allowed = ", ".join("{" + name + "}" for name in TEMPLATE_PLACEHOLDERS)
    for literal, field_name, format_spec, conversion in parts:
        if literal and _SECRET_NAME_RE.fullmatch(literal) is None:
            raise ValueError(f"literal text {literal!r} is not allowed in a secret name (use {_NAME_CHARS_HINT})")
        if field_name is None:
            continue
        if field_name not in TEMPLATE_PLACEHOLDERS:
            raise ValueError(f"unknown placeholder {{{field_name}}} (allowed: {allowed})")
        if format_spec or conversion:
            raise ValueError(f"placeholder {{{field_name}}} takes no conversion or format spec")
        placeholders.add(field_name)
    if "user" not in placeholders:
        raise ValueError("must contain {user} (one secret per user)")
    _check_names_are_distinct(parts)


def _check_names_are_distinct(parts: Sequence[tuple[str, str | None, str | None, str | None]]) -> None:
    """Refuse a template under which two users of one account could share a secret name.

    Why the rule suffices: user names never contain ``/`` and ``{account}`` is one fixed value per
    account (each account holds its own users' secrets), so only ``{path}`` varies in the number of
    ``/`` it adds. With ``{user}`` once, in a ``/``-separated segment of its own (literal text and
    ``{account}`` may share it), and ``{path}`` on one side of it at most, the other side is fixed
    text: counted from that end, the user's segment is always the same one, and its fixed
    surroundings strip off to give the user name back. Collapsing ``//`` (``secret_name``) cannot
    move it, as that segment is never empty. ``iam-keys/{path}-{user}`` breaks it: user ``c`` at
    ``/a-b/`` and user ``b-c`` at ``/a/`` both get ``iam-keys/a-b-c``.
    """
    tokens: list[tuple[str, str]] = []  # ("text", literal) or ("field", placeholder name)
    for literal, field_name, _, _ in parts:
        if literal:
            tokens.append(("text", literal))
        if field_name is not None:
            tokens.append(("field", field_name))
    users = [index for index, token in enumerate(tokens) if token == ("field", "user")]
    if len(users) > 1:
        raise ValueError("must contain {user} only once")
    [user] = users
    for side in (reversed(tokens[:user]), tokens[user + 1 :]):
        for kind, value in side:
            if kind == "text" and "/" in value:
                break  # the end of the user's segment
            if value == "path":
                raise ValueError(
                    "{path} shares the /-separated segment of {user}, so two users could get the same "
                    "secret name (put a / between them, e.g. iam-keys/{path}/{user})"
                )
    before = any(token == ("field", "path") for token in tokens[:user])
    after = any(token == ("field", "path") for token in tokens[user + 1 :])
    if before and after:
        raise ValueError("{path} on both sides of {user}: use it on one side only, so each name tells its user")
