"""Configuration: a YAML file plus ``ROTATOR_*`` environment overrides, validated into frozen settings.

Where the file comes from: ``--config PATH``, else ``$ROTATOR_CONFIG``, else ``/etc/rotator/config.yaml``.
Only the last one may be missing (the defaults then apply), so the CLI works without any file.

Every key can be overridden from the environment as ``ROTATOR_<SECTION>__<KEY>``: a double underscore
separates levels (``ROTATOR_SELECTION__TAG__VALUE``), names are case-insensitive and map to lower-case
keys (so ``ROTATOR_SECRETS__TAGS__TEAM`` sets the secret tag ``team``), and values are read as YAML
scalars or flow collections (``true``, ``5``, ``[a, b]``). Fields that hold text take the value verbatim
(so a cron expression or an ``arn:...`` needs no quoting), and list-of-text fields also accept
``a,b,c``. An override (a name with ``__``, or a top-level key such as ``ROTATOR_ACCOUNTS``) that names no
known key is an error; any other ``ROTATOR_*`` name (``ROTATOR_HOME``) is not ours and is ignored.

Every problem becomes one :class:`~rotator.errors.ConfigError` whose single line names the key path first:
``policy.max_key_age: invalid duration 'abc' (use e.g. 45s, 15m, 12h, 90d, 2w)``.
"""

from __future__ import annotations

import enum
import ipaddress
import json
import os
import re
import string
import types
import typing
from collections.abc import Mapping, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    PlainValidator,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.fields import FieldInfo

from rotator.errors import ConfigError, UserError
from rotator.model import (
    USER_TAG_EXCLUDE,
    USER_TAG_GRACE_PERIOD,
    USER_TAG_MAX_KEY_AGE,
    USER_TAG_RETENTION,
    EffectivePolicy,
    GuardMode,
)

__all__ = [
    "CONFIG_PATH_ENV",
    "DEFAULT_CONFIG_PATH",
    "ENV_PREFIX",
    "AwsSettings",
    "CoordinationSettings",
    "Duration",
    "LoggingSettings",
    "MetricsSettings",
    "OrganizationSettings",
    "PolicySettings",
    "SafetySettings",
    "ScheduleSettings",
    "SecretsSettings",
    "SelectionSettings",
    "Settings",
    "TagSelector",
    "format_duration",
    "is_excluded_by_tag",
    "load_settings",
    "parse_duration",
    "policy_for_user",
    "render_reference_markdown",
    "resolve_config_path",
]

DEFAULT_CONFIG_PATH = "/etc/rotator/config.yaml"
CONFIG_PATH_ENV = "ROTATOR_CONFIG"
ENV_PREFIX = "ROTATOR_"
#: ``ROTATOR_*`` variables that are not configuration overrides.
NON_OVERRIDE_ENV = frozenset({CONFIG_PATH_ENV})


# --------------------------------------------------------------------------------------------- durations

_DURATION_UNITS: tuple[tuple[str, int], ...] = (
    ("w", 604_800),
    ("d", 86_400),
    ("h", 3_600),
    ("m", 60),
    ("s", 1),
)
_UNIT_SECONDS = dict(_DURATION_UNITS)
_DURATION_RE = re.compile(r"([0-9]+)([smhdw])")
_DURATION_HINT = "use e.g. 45s, 15m, 12h, 90d, 2w"
#: The longest duration anywhere (configuration, tags): far beyond any sensible policy, and small enough that
#: every due time built from a few of them stays a representable ``datetime``.
MAX_DURATION = timedelta(days=36_500)
_TOO_LARGE = "too large (at most 36500d, about 100 years)"


def _shorten(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def parse_duration(text: str) -> timedelta:
    """``45s``, ``15m``, ``12h``, ``90d`` or ``2w`` as a :class:`~datetime.timedelta`.

    The unit is required (a bare ``30`` in a tag would be ambiguous) and lower-case (``m`` is minutes); at
    most :data:`MAX_DURATION` (100 years), so that adding it to a timestamp cannot overflow.
    Raises :class:`ValueError` with an operator-readable, single-line message.
    """
    match = _DURATION_RE.fullmatch(text.strip())
    if match is None:
        raise ValueError(f"invalid duration {_shorten(text)!r} ({_DURATION_HINT})")
    amount, unit = int(match.group(1)), match.group(2)
    if amount == 0:
        raise ValueError(f"invalid duration {_shorten(text)!r}: must be positive ({_DURATION_HINT})")
    if amount * _UNIT_SECONDS[unit] > MAX_DURATION.total_seconds():
        raise ValueError(f"invalid duration {_shorten(text)!r}: {_TOO_LARGE}")
    return timedelta(seconds=amount * _UNIT_SECONDS[unit])


def format_duration(duration: timedelta) -> str:
    """The most compact exact spelling of ``duration`` (``2w``, ``7d``, ``90s``): parse_duration's inverse.

    The shortest exact spelling wins, the smaller unit on a tie (``7d``, ``2w``, ``90s``, ``2m``). Sub-second
    durations (never produced by parse_duration) are spelled as decimal seconds, ``0.5s``.
    """
    if duration < timedelta(0):
        return "-" + format_duration(-duration)
    if duration.microseconds:
        return f"{duration.total_seconds()}s"
    seconds = duration // timedelta(seconds=1)
    if seconds == 0:
        return "0s"
    # Shortest spelling; on a tie the smaller unit, so 7 days reads "7d" as in the docs, not "1w".
    spellings = [f"{seconds // size}{unit}" for unit, size in _DURATION_UNITS if seconds % size == 0]
    return min(reversed(spellings), key=len)


def _validate_duration(value: object) -> timedelta:
    # bool is an int subclass: ``true`` is not one second.
    if isinstance(value, bool):
        raise ValueError(f"must be a duration, got {value!r} ({_DURATION_HINT})")
    if isinstance(value, timedelta):
        if value <= timedelta(0):
            raise ValueError(f"invalid duration {format_duration(value)!r}: must be positive")
        if value > MAX_DURATION:
            raise ValueError(f"invalid duration {format_duration(value)!r}: {_TOO_LARGE}")
        return value
    if isinstance(value, int):
        # A bare YAML integer counts seconds; tests use this.
        if value <= 0:
            raise ValueError(f"invalid duration {value!r}: must be positive ({_DURATION_HINT})")
        if value > MAX_DURATION.total_seconds():
            raise ValueError(f"invalid duration {value!r}: {_TOO_LARGE}")
        return timedelta(seconds=value)
    if isinstance(value, str):
        return parse_duration(value)
    raise ValueError(f"must be a duration, got {_shorten(repr(value))} ({_DURATION_HINT})")


#: A positive duration up to :data:`MAX_DURATION`: ``45s``/``15m``/``12h``/``90d``/``2w`` or whole seconds;
#: rendered back compactly.
Duration = Annotated[
    timedelta,
    PlainValidator(_validate_duration),
    PlainSerializer(format_duration, return_type=str),
]


def _duration_between(low: timedelta, high: timedelta) -> AfterValidator:
    """Bounds of a :data:`Duration` field, inclusive: ``Annotated[Duration, _duration_between(low, high)]``."""

    def check(value: timedelta) -> timedelta:
        if not low <= value <= high:
            span = f"{format_duration(low)} and {format_duration(high)}"
            raise ValueError(f"must be between {span}, got {format_duration(value)}")
        return value

    return AfterValidator(check)


# --------------------------------------------------------------------------------------------- validators


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


# --------------------------------------------------------------------------------------------- models


class _Section(BaseModel):
    """Base of every settings model: unknown keys are errors, and settings never change once loaded."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class ScheduleSettings(_Section):
    """When sweeps run: a fixed interval or a cron expression (exactly one)."""

    interval: Duration | None = Field(
        default=None,
        description="Time between the starts of two sweeps (default 1h when cron is not set).",
    )
    cron: str | None = Field(
        default=None,
        description='Five-field crontab expression, in UTC, at which sweeps start (e.g. "0 3 * * *").',
    )

    @model_validator(mode="before")
    @classmethod
    def _default_interval(cls, data: Any) -> Any:
        if isinstance(data, Mapping) and "interval" not in data and "cron" not in data:
            return {**data, "interval": DEFAULT_INTERVAL}
        return data

    @field_validator("cron")
    @classmethod
    def _valid_cron(cls, value: str | None) -> str | None:
        if value is None:
            return None
        # Validated with the very parser the daemon schedules with (imported here only, lazily).
        from apscheduler.triggers.cron import CronTrigger  # noqa: PLC0415

        try:
            CronTrigger.from_crontab(value, timezone="UTC")
        except ValueError as exc:
            raise ValueError(f"invalid cron expression {_shorten(value)!r}: {exc}") from None
        return value

    @model_validator(mode="after")
    def _exactly_one(self) -> ScheduleSettings:
        if (self.interval is None) == (self.cron is None):
            raise ValueError("set exactly one of interval or cron")
        return self


DEFAULT_INTERVAL = timedelta(hours=1)


class PolicySettings(_Section):
    """How old keys may get and how the previous key is retired."""

    max_key_age: Duration = Field(
        default=timedelta(days=90),
        description="A key older than this (from its IAM CreateDate) is rotated.",
    )
    grace_period: Duration = Field(
        default=timedelta(days=7),
        description="How long the previous key stays Active after its replacement was published.",
    )
    retention: Duration = Field(
        default=timedelta(days=7),
        description="How long the previous key stays Inactive before it is deleted.",
    )
    disable_guard: GuardMode = Field(
        default=GuardMode.HOLD,
        description=(
            "What to do when a key due for disabling was used within quiet_period: "
            "hold keeps it Active, warn disables it and says so, ignore does not look."
        ),
    )
    quiet_period: Duration = Field(
        default=timedelta(hours=4),
        description="A previous key used this recently counts as in use (AWS reports last use hours late).",
    )
    max_hold: Duration = Field(
        default=timedelta(days=14),
        description="After being held this long past its due time a key is disabled anyway, loudly.",
    )

    @field_validator("disable_guard", mode="before")
    @classmethod
    def _any_case(cls, value: object) -> object:
        return _lower(value)


class TagSelector(_Section):
    """An IAM user tag that marks a user as managed."""

    key: str = Field(min_length=1, max_length=128, description="Tag key a user must carry to be managed.")
    value: str = Field(max_length=256, description="Value that tag must have.")


class SelectionSettings(_Section):
    """Which IAM users are managed."""

    path_prefix: str = Field(
        default="/",
        description="Only users whose IAM path starts with this prefix are managed; starts and ends with /.",
    )
    tag: TagSelector | None = Field(
        default_factory=lambda: TagSelector(key="rotator", value="enabled"),
        description="Only users carrying this tag are managed; null manages every user under path_prefix.",
    )
    exclude: tuple[str, ...] = Field(
        default=(),
        description="User-name globs (fnmatch, e.g. break-glass-*) that are never managed.",
    )

    @field_validator("path_prefix")
    @classmethod
    def _valid_path(cls, value: str) -> str:
        if len(value) > 512 or _IAM_PATH_RE.fullmatch(value) is None:
            raise ValueError(f"must be an IAM path that starts and ends with '/', got {_shorten(value)!r}")
        return value

    @field_validator("exclude")
    @classmethod
    def _valid_globs(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if any(not glob.strip() for glob in value):
            raise ValueError("globs must not be empty")
        _unique(value, "glob")
        return value


class SecretsSettings(_Section):
    """Where and how each user's key is published in Secrets Manager."""

    name_template: str = Field(
        default="iam-keys/{user}",
        description=(
            "Secret name for a user; placeholders {user} (required, once), {account} and {path}. So that two "
            "users never share a secret, {path} (which may hold /) must not be in the /-separated segment of "
            "{user} and may stand on one side of it only: iam-keys/{path}/{user} is fine, iam-keys/{path}-{user} "
            "is refused."
        ),
    )
    kms_key_id: str | None = Field(
        default=None,
        min_length=1,
        description="KMS key (id, ARN or alias) that encrypts the secrets; null uses the AWS managed key.",
    )
    tags: dict[str, str] = Field(
        default_factory=dict,
        description="Extra tags put on every secret (rotator:managed=true is always added).",
    )
    replica_regions: tuple[str, ...] = Field(
        default=(),
        description="Regions to which every secret is replicated.",
    )

    @field_validator("name_template")
    @classmethod
    def _valid_template(cls, value: str) -> str:
        _check_name_template(value)
        return value

    @field_validator("tags")
    @classmethod
    def _valid_tags(cls, value: dict[str, str]) -> dict[str, str]:
        for key, tag_value in value.items():
            # rotator:* tags carry the rotation state; letting configuration set them would corrupt it.
            if key.lower().startswith(("rotator:", "aws:")):
                raise ValueError(f"tag key {key!r} uses a reserved prefix (rotator: and aws: are not allowed)")
            if not 1 <= len(key) <= 128:
                raise ValueError(f"tag key {_shorten(key)!r} must be 1 to 128 characters")
            if len(tag_value) > 256:
                raise ValueError(f"tag {key!r} value must be at most 256 characters")
        return value

    @field_validator("replica_regions")
    @classmethod
    def _valid_regions(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for region in value:
            if _REGION_RE.fullmatch(region) is None:
                raise ValueError(f"{_shorten(region)!r} is not an AWS region name (e.g. eu-west-1)")
        _unique(value, "region")
        return value


class MetricsSettings(_Section):
    """The Prometheus endpoint (/metrics, /healthz, /readyz)."""

    address: str = Field(
        default="127.0.0.1",
        min_length=1,
        description=(
            "Address the HTTP server listens on: an IPv4 or IPv6 address (0.0.0.0 or :: for every interface) "
            "or a host name such as localhost."
        ),
    )
    port: int = Field(default=9464, description="TCP port of the HTTP server.")

    @field_validator("address")
    @classmethod
    def _valid_address(cls, value: str) -> str:
        if not _is_ip_address(value) and not _is_host_name(value):
            raise ValueError(f"{_shorten(value)!r} is not an IP address or a host name (e.g. 127.0.0.1, ::, localhost)")
        return value

    @field_validator("port", mode="before")
    @classmethod
    def _valid_port(cls, value: object) -> object:
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
            raise ValueError(f"must be an integer between 1 and 65535, got {_shorten(repr(value))}")
        return value


LogFormat = Literal["json", "console"]
LogLevel = Literal["debug", "info", "warning", "error"]


class LoggingSettings(_Section):
    """Structured logs on stderr."""

    format: LogFormat = Field(
        default="json", description="json (one object a line, for machines) or console (for people)."
    )
    level: LogLevel = Field(
        default="info", description="Lowest level logged: debug, info, warning or error (any case)."
    )

    @field_validator("format", "level", mode="before")
    @classmethod
    def _any_case(cls, value: object) -> object:
        return _lower(value)


class SafetySettings(_Section):
    """Brakes against doing too much, or anything."""

    dry_run: bool = Field(
        default=False,
        strict=True,
        description="Plan and report every sweep but change nothing in AWS.",
    )
    max_actions_per_sweep: int = Field(
        default=100,
        strict=True,
        ge=0,
        description="Most mutating actions (rotate, disable, delete, cleanup) in one sweep; 0 allows none.",
    )
    cloudtrail_lookup: bool = Field(
        default=True,
        strict=True,
        description=(
            "Ask CloudTrail's event history (cloudtrail:LookupEvents) who created a key that an interrupted "
            "rotation may have left unrecorded; only the rotator's own are then deleted. Off: such keys are "
            "left alone and reported until deleted by hand."
        ),
    )


class AwsSettings(_Section):
    """How the rotator talks to AWS (endpoint, region and credentials come from boto3's standard chain)."""

    max_attempts: int = Field(
        default=8,
        strict=True,
        ge=1,
        description="Attempts per AWS call, including the first, before a throttled or failed call gives up.",
    )
    max_calls_per_second: float = Field(
        default=10.0,
        strict=True,
        gt=0,
        allow_inf_nan=False,
        description="Client-side rate limit on AWS API calls, to stay clear of IAM's throttling.",
    )
    # A new key authenticates within seconds to a few minutes: an hour is generous, and twice this is how long
    # other runs leave a new key alone as "in flight".
    validation_timeout: Annotated[Duration, _duration_between(timedelta(seconds=1), timedelta(hours=1))] = Field(
        default=timedelta(seconds=120),
        description="How long a new key may take to authenticate before its rotation is abandoned (1s to 1h).",
    )
    connect_timeout: Annotated[Duration, _duration_between(timedelta(seconds=1), timedelta(minutes=1))] = Field(
        default=timedelta(seconds=5),
        description="How long one attempt of an AWS call may wait to connect to the endpoint (1s to 1m).",
    )
    read_timeout: Annotated[Duration, _duration_between(timedelta(seconds=1), timedelta(minutes=2))] = Field(
        default=timedelta(seconds=15),
        description=(
            "How long one attempt of an AWS call may wait for the answer (1s to 2m). A call that gets no answer "
            "is tried twice at most, whatever max_attempts, so it fails within about twice this."
        ),
    )


class CoordinationSettings(_Section):
    """Leader election between replicas."""

    lease_table: str | None = Field(
        default=None,
        description="DynamoDB table holding the leader lease between replicas; null runs without one.",
    )

    @field_validator("lease_table")
    @classmethod
    def _valid_table(cls, value: str | None) -> str | None:
        if value is not None and _DYNAMODB_TABLE_RE.fullmatch(value) is None:
            raise ValueError(f"{_shorten(value)!r} is not a DynamoDB table name (3 to 255 of A-Z a-z 0-9 _ . -)")
        return value


class OrganizationSettings(_Section):
    """Discovery of member accounts through AWS Organizations."""

    role_name: str = Field(description="Role assumed in each discovered account.")
    include_ous: tuple[str, ...] = Field(
        default=(),
        description="Organizational units (ou-... or r-...) whose accounts are managed; empty = all.",
    )
    exclude_accounts: tuple[str, ...] = Field(
        default=(),
        description="12-digit account ids never managed, even if discovered.",
    )

    @field_validator("role_name")
    @classmethod
    def _valid_role_name(cls, value: str) -> str:
        if _ROLE_NAME_RE.fullmatch(value) is None:
            raise ValueError(f"{_shorten(value)!r} is not an IAM role name")
        return value

    @field_validator("include_ous")
    @classmethod
    def _valid_ous(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for ou in value:
            if _OU_ID_RE.fullmatch(ou) is None:
                raise ValueError(f"{_shorten(ou)!r} is not an organizational unit or root id (ou-... or r-...)")
        _unique(value, "organizational unit")
        return value

    @field_validator("exclude_accounts", mode="before")
    @classmethod
    def _quoted_accounts(cls, value: object) -> object:
        if isinstance(value, Sequence) and not isinstance(value, str):
            for item in value:
                _reject_number_for_id(item, "an account id")
        return value

    @field_validator("exclude_accounts")
    @classmethod
    def _valid_accounts(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for account in value:
            if _ACCOUNT_ID_RE.fullmatch(account) is None:
                raise ValueError(f"{_shorten(account)!r} is not a 12-digit account id")
        _unique(value, "account id")
        return value


class Settings(_Section):
    """The whole configuration. Build it with :func:`load_settings`; ``Settings()`` is the defaults."""

    schedule: ScheduleSettings = Field(default_factory=ScheduleSettings, description="When sweeps run.")
    policy: PolicySettings = Field(default_factory=PolicySettings, description="Key lifetimes and the guard.")
    selection: SelectionSettings = Field(default_factory=SelectionSettings, description="Which IAM users are managed.")
    secrets: SecretsSettings = Field(
        default_factory=SecretsSettings, description="Where keys are published in Secrets Manager."
    )
    metrics: MetricsSettings = Field(default_factory=MetricsSettings, description="The metrics endpoint.")
    logging: LoggingSettings = Field(default_factory=LoggingSettings, description="Structured logging.")
    safety: SafetySettings = Field(default_factory=SafetySettings, description="Brakes on changes.")
    aws: AwsSettings = Field(default_factory=AwsSettings, description="AWS call behaviour.")
    coordination: CoordinationSettings = Field(
        default_factory=CoordinationSettings, description="Leader election between replicas."
    )
    accounts: tuple[str, ...] = Field(
        default=(),
        description="IAM role ARNs to assume, one per account; empty manages the caller's own account.",
    )
    organization: OrganizationSettings | None = Field(
        default=None,
        description="Discover member accounts through AWS Organizations; null disables discovery.",
    )

    @model_validator(mode="before")
    @classmethod
    def _empty_sections(cls, data: Any) -> Any:
        # ``policy:`` with every child commented out is an empty section, not a type error.
        if isinstance(data, Mapping):
            return {key: value for key, value in data.items() if not (value is None and key in _SECTION_NAMES)}
        return data

    @field_validator("accounts")
    @classmethod
    def _valid_accounts(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for arn in value:
            if _ROLE_ARN_RE.fullmatch(arn) is None:
                raise ValueError(f"{_shorten(arn)!r} is not an IAM role ARN (arn:aws:iam::123456789012:role/NAME)")
        _unique(value, "role ARN")
        return value

    def effective(self) -> dict[str, Any]:
        """The configuration as plain JSON/YAML data, durations spelled like ``90d`` (no secrets in it)."""
        return self.model_dump(mode="json")

    def warnings(self) -> list[str]:
        """Valid but self-defeating settings: said by ``check-config`` and logged when the daemon starts.

        A previous key leaves only on its own schedule (I5), so a new key that falls due before its
        predecessor is deleted waits: rotations then run late every time, never unsafely.
        """
        policy = self.policy
        out: list[str] = []
        if policy.grace_period + policy.retention >= policy.max_key_age:
            out.append(
                f"policy.grace_period + policy.retention ({format_duration(policy.grace_period + policy.retention)}) "
                f">= policy.max_key_age ({format_duration(policy.max_key_age)}): a key falls due before the key it "
                "replaced is gone, so every rotation waits for that deletion and runs late"
            )
        return out


# --------------------------------------------------------------------------------------------- model walking


def _strip_optional(annotation: Any) -> tuple[Any, bool]:
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        members = [arg for arg in typing.get_args(annotation) if arg is not type(None)]
        if len(members) == 1:
            return members[0], True
    return annotation, False


def _model_of(annotation: Any) -> type[BaseModel] | None:
    inner, _ = _strip_optional(annotation)
    if isinstance(inner, type) and issubclass(inner, BaseModel):
        return inner
    return None


_SECTION_NAMES = frozenset(
    name
    for name, info in Settings.model_fields.items()
    if _model_of(info.annotation) is not None and not _strip_optional(info.annotation)[1]
)


# --------------------------------------------------------------------------------------------- loading


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys: in a security config, last-one-wins is a trap."""


def _construct_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    seen: set[object] = set()
    for key_node, _ in node.value:
        if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == "tag:yaml.org,2002:merge":
            continue
        key = loader.construct_scalar(key_node)
        if key in seen:
            raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
        seen.add(key)
    return loader.construct_mapping(node)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _describe_type(value: object) -> str:
    if isinstance(value, list):
        return "a list"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    return type(value).__name__


def resolve_config_path(
    path: str | None = None,
    env: Mapping[str, str] | None = None,
    *,
    default_path: str = DEFAULT_CONFIG_PATH,
) -> tuple[Path, bool]:
    """Which file to read, and whether it was named explicitly (``--config`` or ``$ROTATOR_CONFIG``)."""
    environ = os.environ if env is None else env
    if path is not None:
        return Path(path), True
    from_env = environ.get(CONFIG_PATH_ENV, "")
    if from_env:
        return Path(from_env), True
    return Path(default_path), False


def _read_config_file(path: Path, *, explicit: bool) -> dict[str, Any]:
    where = f"config file {path}"
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        if not explicit:
            return {}
        raise ConfigError(f"{where}: not found") from None
    except IsADirectoryError:
        raise ConfigError(f"{where}: is a directory") from None
    except PermissionError:
        raise ConfigError(f"{where}: permission denied") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{where}: not UTF-8 text") from None
    except OSError as exc:
        raise ConfigError(f"{where}: cannot read ({exc.strerror or exc})") from None
    try:
        # The loader class is ours: a SafeLoader with one extra check.
        data = yaml.load(text, Loader=_StrictLoader)  # noqa: S506
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        position = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = exc.problem or exc.context or "syntax error"
        raise ConfigError(_one_line(f"{where}: invalid YAML{position}: {problem}")) from None
    except yaml.YAMLError as exc:
        raise ConfigError(_one_line(f"{where}: invalid YAML: {exc}")) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: the top level must be a mapping of sections, not {_describe_type(data)}")
    return data


class _Target(enum.Enum):
    SECTION = "section"  # a mapping (or null for optional ones): YAML
    TEXT = "text"  # verbatim
    OPTIONAL_TEXT = "optional text"  # verbatim; empty/null/~ = null
    TEXT_LIST = "text list"  # YAML flow list, or comma-separated
    VALUE = "value"  # YAML scalar


_NULL_WORDS = frozenset({"", "~", "null", "none"})


def _seed(info: FieldInfo) -> dict[str, Any]:
    """Starting value for a section an override reaches into when the file does not set it."""
    default = info.get_default(call_default_factory=True)
    # A non-null default *model* of an optional section (selection.tag) is kept, so that overriding one of
    # its keys changes only that key. Required sections start empty and get their defaults from the model.
    if isinstance(default, BaseModel) and _strip_optional(info.annotation)[1]:
        seeded: dict[str, Any] = default.model_dump()
        return seeded
    return {}


def _resolve_override(parts: list[str], variable: str) -> tuple[_Target, list[dict[str, Any]]]:
    """What kind of value ``parts`` names in the model, and the seeds for each intermediate level."""
    dotted = ".".join(parts)
    unknown = ConfigError(f"{variable}: unknown key {dotted}")
    model: type[BaseModel] | None = Settings
    in_mapping = False
    seeds: list[dict[str, Any]] = []
    for index, part in enumerate(parts):
        last = index == len(parts) - 1
        if in_mapping:
            if not last:
                raise unknown
            return _Target.TEXT, seeds
        assert model is not None
        info = model.model_fields.get(part)
        if info is None:
            raise unknown
        inner, optional = _strip_optional(info.annotation)
        submodel = _model_of(info.annotation)
        if submodel is not None or typing.get_origin(inner) is dict:
            if last:
                return _Target.SECTION, seeds
            seeds.append(_seed(info))
            model, in_mapping = submodel, submodel is None
            continue
        if not last:
            raise unknown
        if inner is str:
            return (_Target.OPTIONAL_TEXT if optional else _Target.TEXT), seeds
        if typing.get_origin(inner) is tuple and typing.get_args(inner)[0] is str:
            return _Target.TEXT_LIST, seeds
        return _Target.VALUE, seeds
    raise unknown


def _parse_yaml_value(raw: str, variable: str) -> Any:
    try:
        return yaml.safe_load(raw)
    except yaml.YAMLError as exc:
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(_one_line(f"{variable}: invalid value {_shorten(raw)!r}: {problem}")) from None


def _override_value(target: _Target, raw: str, variable: str) -> Any:
    if target is _Target.TEXT:
        return raw
    if target is _Target.OPTIONAL_TEXT:
        return None if raw.strip().lower() in _NULL_WORDS else raw
    if target is _Target.TEXT_LIST:
        if raw.strip().startswith("["):
            return _parse_yaml_value(raw, variable)
        return [item.strip() for item in raw.split(",") if item.strip()]
    return _parse_yaml_value(raw, variable)


def _apply_env_overrides(data: dict[str, Any], env: Mapping[str, str]) -> dict[tuple[str, ...], str]:
    """Write every ``ROTATOR_*`` override into ``data``; returns key path -> variable name."""
    overrides: dict[tuple[str, ...], str] = {}
    for variable in sorted(env):
        # Names are case-insensitive, prefix included: a lower-case override must not be silently ignored.
        if not variable.upper().startswith(ENV_PREFIX) or variable.upper() in NON_OVERRIDE_ENV:
            continue
        parts = variable[len(ENV_PREFIX) :].lower().split("__")
        if len(parts) == 1 and parts[0] not in Settings.model_fields:
            # Not ROTATOR_<SECTION>__<KEY> nor a top-level key (ROTATOR_ACCOUNTS): some wrapper's own
            # variable (ROTATOR_HOME, ROTATOR_VERSION), which must not make every command fail.
            continue
        if any(not part for part in parts):
            raise ConfigError(f"{variable}: malformed override name (use ROTATOR_<SECTION>__<KEY>)")
        path = tuple(parts)
        for other_path, other in overrides.items():
            shorter = min(len(path), len(other_path))
            if path[:shorter] == other_path[:shorter]:
                raise ConfigError(f"{variable}: conflicts with {other} (both set {'.'.join(path[:shorter])})")
        overrides[path] = variable

    for path, variable in overrides.items():
        target, seeds = _resolve_override(list(path), variable)
        node = data
        for depth, (part, seed) in enumerate(zip(path[:-1], seeds, strict=True)):
            child = node.get(part)
            if child is None:
                child = node[part] = seed
            elif not isinstance(child, dict):
                where = ".".join(path[: depth + 1])
                raise ConfigError(f"{variable}: cannot override inside {where}: the file sets it to a non-mapping")
            node = child
        node[path[-1]] = _override_value(target, env[variable], variable)
    return overrides


def _format_loc(loc: Sequence[int | str]) -> str:
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else part
    return text or "config"


#: One-line problems for pydantic error types; ``{got}`` is the offending value, the rest come from its ctx.
_PROBLEMS: Mapping[str, str] = {
    "extra_forbidden": "unknown key",
    "missing": "required key is missing",
    "model_type": "must be a mapping",
    "model_attributes_type": "must be a mapping",
    "dict_type": "must be a mapping",
    "string_type": "must be a string{got}",
    "int_type": "must be an integer{got}",
    "int_parsing": "must be an integer{got}",
    "int_from_float": "must be an integer{got}",
    "float_type": "must be a number{got}",
    "float_parsing": "must be a number{got}",
    "finite_number": "must be a finite number{got}",
    "bool_type": "must be true or false{got}",
    "bool_parsing": "must be true or false{got}",
    "list_type": "must be a list{got}",
    "tuple_type": "must be a list{got}",
    "literal_error": "must be one of {expected}{got}",
    "enum": "must be one of {expected}{got}",
    "greater_than": "must be greater than {gt}{got}",
    "greater_than_equal": "must be at least {ge}{got}",
    "less_than": "must be less than {lt}{got}",
    "less_than_equal": "must be at most {le}{got}",
    "string_too_short": "must be at least {min_length} character(s) long{got}",
    "string_too_long": "must be at most {max_length} characters long",
}


def _describe_error(error: Mapping[str, Any]) -> tuple[tuple[int | str, ...], str]:
    """Key path and a one-line problem for one pydantic error."""
    loc: tuple[int | str, ...] = tuple(error.get("loc", ()))
    kind = str(error.get("type", ""))
    ctx: dict[str, Any] = dict(error.get("ctx") or {})
    if loc and loc[-1] == "[key]":
        # A mapping key of the wrong type: pydantic reports it as (..., key, "[key]").
        return loc[:-2], f"key {_shorten(repr(loc[-2]))} must be a string"
    if kind == "value_error" and "error" in ctx:
        return loc, str(ctx["error"])
    if kind == "invalid_key" and loc:
        return loc[:-1], f"key {_shorten(repr(loc[-1]))} must be a string"
    # Bounds of float fields arrive as 0.0; operators wrote 0.
    ctx = {key: int(bound) if isinstance(bound, float) and bound.is_integer() else bound for key, bound in ctx.items()}
    value = error.get("input")
    scalar = value is None or isinstance(value, str | int | float | bool)
    ctx["got"] = f", got {_shorten(repr(value))}" if scalar else f", got {_describe_type(value)}"
    template = _PROBLEMS.get(kind)
    if template is None:
        return loc, str(error.get("msg", "invalid value"))
    try:
        return loc, template.format_map(ctx)
    except (KeyError, ValueError):
        return loc, str(error.get("msg", "invalid value"))


def _translate(exc: ValidationError, overrides: Mapping[tuple[str, ...], str]) -> ConfigError:
    loc, problem = _describe_error(exc.errors(include_url=False)[0])
    names = tuple(str(part) for part in loc)
    # Name the variable when the offending value came from (or was reached by) an override.
    sources = [
        variable
        for path, variable in sorted(overrides.items())
        if names[: len(path)] == path or path[: len(names)] == names
    ]
    suffix = f" (from {sources[0]})" if sources else ""
    return ConfigError(_one_line(f"{_format_loc(loc)}: {problem}{suffix}"))


def load_settings(
    path: str | None = None,
    env: Mapping[str, str] | None = None,
    *,
    default_path: str = DEFAULT_CONFIG_PATH,
) -> Settings:
    """Read, override and validate the configuration; :class:`ConfigError` (one line) on any problem.

    ``path`` is ``--config``; ``env`` defaults to ``os.environ``; ``default_path`` exists for tests.
    """
    environ = os.environ if env is None else env
    config_path, explicit = resolve_config_path(path, environ, default_path=default_path)
    data = _read_config_file(config_path, explicit=explicit)
    overrides = _apply_env_overrides(data, environ)
    try:
        return Settings.model_validate(data)
    except ValidationError as exc:
        raise _translate(exc, overrides) from exc


# --------------------------------------------------------------------------------------------- per user


def _tag_lookup(tags: Mapping[str, str]) -> dict[str, str]:
    # IAM tag keys are case-insensitive for uniqueness, so match them that way.
    return {key.lower(): value for key, value in tags.items()}


def policy_for_user(settings: Settings, user_tags: Mapping[str, str], user: str) -> EffectivePolicy:
    """The policy for ``user`` after its ``rotator:max-key-age``/``grace-period``/``retention`` tags.

    A malformed tag value raises :class:`~rotator.errors.UserError`, which stops that user only. That
    includes a ``rotator:exclude`` that is neither true nor false: such a user stays managed (so it is
    seen and reported) but is not touched.
    """
    tags = _tag_lookup(user_tags)
    exclude = tags.get(USER_TAG_EXCLUDE)
    if exclude is not None and _exclude_value(exclude) is None:
        raise UserError(user, f"tag {USER_TAG_EXCLUDE}={_shorten(exclude)!r}: must be true or false")
    policy = settings.policy
    durations = {
        "max_key_age": policy.max_key_age,
        "grace_period": policy.grace_period,
        "retention": policy.retention,
    }
    for tag, field in (
        (USER_TAG_MAX_KEY_AGE, "max_key_age"),
        (USER_TAG_GRACE_PERIOD, "grace_period"),
        (USER_TAG_RETENTION, "retention"),
    ):
        raw = tags.get(tag)
        if raw is None:
            continue
        try:
            durations[field] = parse_duration(raw)
        except ValueError as exc:
            raise UserError(user, f"tag {tag}={_shorten(raw)!r}: {exc}") from exc
    return EffectivePolicy(
        max_key_age=durations["max_key_age"],
        grace_period=durations["grace_period"],
        retention=durations["retention"],
        disable_guard=policy.disable_guard,
        quiet_period=policy.quiet_period,
        max_hold=policy.max_hold,
        validation_timeout=settings.aws.validation_timeout,
    )


def _exclude_value(raw: str) -> bool | None:
    """``rotator:exclude`` as a boolean: ``true``/``false`` in any case; None for any other value."""
    return {"true": True, "false": False}.get(raw.strip().lower())


def is_excluded_by_tag(tags: Mapping[str, str]) -> bool:
    """``rotator:exclude=true`` (any case) opts a user out of management.

    Any value but true or false keeps the user managed: :func:`policy_for_user` then reports it as that
    user's problem, so a typo such as ``yes`` neither rotates the user nor hides it.
    """
    return _exclude_value(_tag_lookup(tags).get(USER_TAG_EXCLUDE, "")) is True


# --------------------------------------------------------------------------------------------- reference


def _render_value(value: Any) -> str:
    """A default as it would be written in the YAML file (flow style)."""
    if isinstance(value, timedelta):
        value = format_duration(value)
    elif isinstance(value, BaseModel):
        value = value.model_dump(mode="json")
    elif isinstance(value, enum.Enum):
        value = value.value
    if isinstance(value, Mapping):
        text = "{" + ", ".join(f"{key}: {_render_value(item)}" for key, item in value.items()) + "}"
    elif isinstance(value, list | tuple):
        text = "[" + ", ".join(_render_value(item) for item in value) + "]"
    elif isinstance(value, str):
        text = value or '""'
    elif isinstance(value, float) and value.is_integer():
        text = str(int(value))
    else:
        text = json.dumps(value)  # null, true/false, numbers
    return text


def _reference_rows(model: type[BaseModel], prefix: str, defaults: Any) -> list[tuple[str, str, str]]:
    rows: list[tuple[str, str, str]] = []
    for name, info in model.model_fields.items():
        key = f"{prefix}{name}"
        if isinstance(defaults, Mapping) and name in defaults:
            default = _render_value(defaults[name])
            child_defaults = defaults[name]
        elif info.is_required():
            default, child_defaults = "(required)", None
        else:
            default_value = info.get_default(call_default_factory=True)
            default, child_defaults = _render_value(default_value), None
        submodel = _model_of(info.annotation)
        optional = _strip_optional(info.annotation)[1]
        if submodel is None or optional:
            rows.append((key, default, info.description or ""))
        if submodel is not None:
            rows.extend(_reference_rows(submodel, f"{key}.", child_defaults))
    return rows


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def render_reference_markdown() -> str:
    """The configuration reference as a Markdown table (key path, default, description); deterministic."""
    lines = ["| Key | Default | Description |", "|---|---|---|"]
    for key, default, description in _reference_rows(Settings, "", Settings().effective()):
        lines.append(f"| `{key}` | `{_cell(default)}` | {_cell(description)} |")
    return "\n".join(lines) + "\n"
