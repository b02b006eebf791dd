"""The sections of the configuration (``schedule:``, ``policy:``, ...): one pydantic model each, and :data:`Duration`.

:class:`rotator.config.Settings` is their root and :func:`rotator.config.load_settings` builds them; the checks of
single values are in :mod:`rotator.config_checks`.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    PlainValidator,
    SecretStr,
    field_validator,
    model_validator,
)

from rotator.config_checks import (
    _check_name_template,
    _lower,
    check_account_ids,
    check_address,
    check_between,
    check_globs,
    check_iam_path,
    check_ous,
    check_port,
    check_quoted_account_ids,
    check_regions,
    check_role_name,
    check_secret_tags,
    check_table_name,
    check_topic_arn,
    check_webhook_url,
)
from rotator.durations import _validate_duration, format_duration
from rotator.model import GuardMode, QuarantineMode

__all__ = [
    "AwsSettings",
    "CoordinationSettings",
    "Duration",
    "LoggingSettings",
    "MetricsSettings",
    "NotificationSettings",
    "OrganizationSettings",
    "PolicySettings",
    "ResponseSettings",
    "SafetySettings",
    "ScheduleSettings",
    "SecretsSettings",
    "SelectionSettings",
    "TagSelector",
]


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
    return AfterValidator(check_between(low, high))


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
        return check_iam_path(value)

    @field_validator("exclude")
    @classmethod
    def _valid_globs(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return check_globs(value)


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
        return check_secret_tags(value)

    @field_validator("replica_regions")
    @classmethod
    def _valid_regions(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return check_regions(value)


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
        return check_address(value)

    @field_validator("port", mode="before")
    @classmethod
    def _valid_port(cls, value: object) -> object:
        return check_port(value)


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


def _rate(default: float, what: str) -> Any:
    return Field(default=default, strict=True, gt=0, le=10_000, allow_inf_nan=False, description=what)


class AwsRates(_Section):
    """Ceilings of the adaptive rate limits, calls per second per account (docs/performance.md)."""

    iam: float = _rate(20.0, "IAM (its quota is unpublished and shared by every IAM client of the account).")
    secretsmanager: float = _rate(40.0, "Secrets Manager (AWS: 50/s for writes).")
    sts: float = _rate(50.0, "STS (role assumption, new-key validation; its own quota, apart from IAM's).")
    organizations: float = _rate(5.0, "AWS Organizations (account discovery).")
    dynamodb: float = _rate(20.0, "DynamoDB (the lease; never queued behind the other services).")
    cloudtrail: float = _rate(2.0, "CloudTrail LookupEvents (AWS: 2/s per account and region).")
    other: float = _rate(5.0, "Any other service (SNS, ...).")


class AwsSettings(_Section):
    """How the rotator talks to AWS (endpoint, region and credentials come from boto3's standard chain)."""

    max_attempts: int = Field(
        default=8,
        strict=True,
        ge=1,
        description="Attempts per AWS call, including the first, before a throttled or failed call gives up.",
    )
    rates: AwsRates = Field(
        default_factory=AwsRates,
        description="Calls per second per account, each service on its own (lowered on throttling, then raised back).",
    )
    max_calls_per_second: float | None = Field(
        default=None,
        strict=True,
        gt=0,
        allow_inf_nan=False,
        description=(
            "When set, the ceiling of every service in place of aws.rates (one figure for all); null: aws.rates."
        ),
    )
    concurrency: int = Field(
        default=64,
        strict=True,
        ge=1,
        le=256,
        description=(
            "Users acted on at once in one account (while one new key propagates, others proceed), and the "
            "secrets listed beside the inventory's other bulk reads; 1: one after the other."
        ),
    )
    parallel_accounts: int = Field(
        default=4,
        strict=True,
        ge=1,
        le=64,
        description="Accounts swept or rotated at once, each within its own rate limits.",
    )

    def ceilings(self) -> tuple[dict[str, float], float]:
        """Each service's rate ceiling (botocore service names) and the one of any other service."""
        if self.max_calls_per_second is not None:
            return {}, self.max_calls_per_second
        named = self.rates.model_dump()
        other = named.pop("other")
        return named, other

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
    lease_ttl: Annotated[Duration, _duration_between(timedelta(seconds=2), timedelta(minutes=10))] = Field(
        default=timedelta(seconds=60),
        description=(
            "How long a lease lasts without renewal (2s to 10m; renewed every third of it). A replica takes over "
            "a dead leader within about this; a leader that could not renew for 3/4 of it stops changing anything."
        ),
    )

    @field_validator("lease_table")
    @classmethod
    def _valid_table(cls, value: str | None) -> str | None:
        return check_table_name(value)


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
        return check_role_name(value)

    @field_validator("include_ous")
    @classmethod
    def _valid_ous(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return check_ous(value)

    @field_validator("exclude_accounts", mode="before")
    @classmethod
    def _quoted_accounts(cls, value: object) -> object:
        return check_quoted_account_ids(value)

    @field_validator("exclude_accounts")
    @classmethod
    def _valid_accounts(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return check_account_ids(value)


class ResponseSettings(_Section):
    """What the rotator does on its own about an exposed key (docs/operations.md, "Exposed keys")."""

    quarantine: QuarantineMode = Field(
        default=QuarantineMode.ROTATE_AND_REVOKE,
        description=(
            "A managed user with an AWSCompromisedKeyQuarantine* policy attached: rotate_and_revoke rotates it "
            "in the next sweep and disables every key it had then as soon as the new key is published (no "
            "grace period, no hold), deleting them after policy.retention; report only reports it; ignore does "
            "neither. The quarantine policy is never detached by the rotator."
        ),
    )

    @field_validator("quarantine", mode="before")
    @classmethod
    def _any_case(cls, value: object) -> object:
        return _lower(value)


class NotificationSettings(_Section):
    """Messages to key owners and the security team (docs/operations.md, "Notifications")."""

    sns_topic_arn: str | None = Field(
        default=None,
        description=(
            "SNS topic every notification is published to (message attribute owner for subscription filters); "
            "null sends none."
        ),
    )
    webhook_url: SecretStr | None = Field(
        default=None,
        description=(
            "HTTPS URL receiving a Slack-compatible JSON body per notification (never printed: it is a "
            "credential); null sends none."
        ),
    )
    owner_tag: str = Field(
        default="owner",
        min_length=1,
        max_length=128,
        description="IAM user tag naming the key's owner (an address or a channel), sent with each notification.",
    )
    warn_before: Annotated[Duration, _duration_between(timedelta(seconds=1), timedelta(days=365))] = Field(
        default=timedelta(days=3),
        description="Warn the owner this long before a previous key is disabled (once per key).",
    )
    repeat_after: Annotated[Duration, _duration_between(timedelta(seconds=1), timedelta(days=365))] = Field(
        default=timedelta(days=1),
        description=(
            "The same notification (a key still held, a rotation or sweep still failing) is sent again at most "
            "this often; warnings and foreign keys once per key."
        ),
    )
    timeout: Annotated[Duration, _duration_between(timedelta(seconds=1), timedelta(minutes=1))] = Field(
        default=timedelta(seconds=5),
        description="How long one webhook delivery may take before it counts as failed (1s to 1m).",
    )
    queue_size: int = Field(
        default=1000,
        strict=True,
        ge=1,
        le=100000,
        description="Notifications waiting for delivery at most; more are dropped (and counted), never waited for.",
    )

    @field_validator("sns_topic_arn")
    @classmethod
    def _valid_topic(cls, value: str | None) -> str | None:
        return check_topic_arn(value)

    @field_validator("webhook_url")
    @classmethod
    def _valid_webhook(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            check_webhook_url(value.get_secret_value())
        return value
