"""Configuration: a YAML file plus ``ROTATOR_*`` environment overrides, validated into frozen settings.

Where the file comes from: ``--config PATH``, else ``$ROTATOR_CONFIG``, else ``/etc/rotator/config.yaml``.
Only the last one may be missing (the defaults then apply), so the CLI works without any file.

Every key can be overridden from the environment as ``ROTATOR_<SECTION>__<KEY>`` (the rules are in
:mod:`rotator.overrides`); durations are spelled as in :mod:`rotator.durations`.

Every problem becomes one :class:`~rotator.errors.ConfigError` whose single line names the key path first:
``policy.max_key_age: invalid duration 'abc' (use e.g. 45s, 15m, 12h, 90d, 2w)``.
"""

from __future__ import annotations

import ipaddress
import os
import re
import string
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

from rotator.durations import _shorten, _validate_duration, format_duration
from rotator.errors import ConfigError
from rotator.model import EffectivePolicy, GuardMode, PolicyDefaults
from rotator.overrides import _apply_env_overrides, _describe_type, _model_of, _one_line, _strip_optional, _translate
from rotator.user_policy import resolve_policy

__all__ = [
    "CONFIG_PATH_ENV",
    "DEFAULT_CONFIG_PATH",
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
    "load_settings",
    "policy_for_user",
    "resolve_config_path",
]

DEFAULT_CONFIG_PATH = "/etc/rotator/config.yaml"
CONFIG_PATH_ENV = "ROTATOR_CONFIG"
#: ``ROTATOR_*`` variables that are not configuration overrides.
NON_OVERRIDE_ENV = frozenset({CONFIG_PATH_ENV})


# --------------------------------------------------------------------------------------------- durations


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
        # Validated with the very parser the daemon schedules with; imported here, not at the top, so
        # that loading the configuration imports neither the daemon nor APScheduler unless a cron is set.
        from rotator.daemon.scheduling import validate_cron  # noqa: PLC0415

        validate_cron(value)  # ValueError: "invalid cron expression '...': why"
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

    def policy_defaults(self) -> PolicyDefaults:
        """The policy every user starts from, as the pure core's value object."""
        policy = self.policy
        return PolicyDefaults(
            max_key_age=policy.max_key_age,
            grace_period=policy.grace_period,
            retention=policy.retention,
            disable_guard=policy.disable_guard,
            quiet_period=policy.quiet_period,
            max_hold=policy.max_hold,
            validation_timeout=self.aws.validation_timeout,
        )

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
    overrides = _apply_env_overrides(data, environ, Settings, reserved=NON_OVERRIDE_ENV)
    try:
        return Settings.model_validate(data)
    except ValidationError as exc:
        raise _translate(exc, overrides) from exc


# --------------------------------------------------------------------------------------------- per user


def policy_for_user(settings: Settings, user_tags: Mapping[str, str], user: str) -> EffectivePolicy:
    """The policy for ``user`` after its tags (see :func:`rotator.user_policy.resolve_policy`)."""
    return resolve_policy(settings.policy_defaults(), user_tags, user)
