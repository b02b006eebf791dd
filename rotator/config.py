"""Configuration: a YAML file plus ``ROTATOR_*`` environment overrides, validated into frozen settings.

Where the file comes from: ``--config PATH``, else ``$ROTATOR_CONFIG``, else ``/etc/rotator/config.yaml``
(:mod:`rotator.config_file`). Only the last one may be missing (the defaults then apply), so the CLI works
without any file.

Every key can be overridden from the environment as ``ROTATOR_<SECTION>__<KEY>`` (the rules are in
:mod:`rotator.overrides`); durations are spelled as in :mod:`rotator.durations`; the checks of single values
are in :mod:`rotator.config_checks`, the sections' models in :mod:`rotator.config_sections`.

Every problem becomes one :class:`~rotator.errors.ConfigError` whose single line names the key path first:
``policy.max_key_age: invalid duration 'abc' (use e.g. 45s, 15m, 12h, 90d, 2w)``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from pydantic import Field, ValidationError, field_validator, model_validator

from rotator.config_checks import TEMPLATE_PLACEHOLDERS, check_role_arns
from rotator.config_file import (
    CONFIG_PATH_ENV,
    DEFAULT_CONFIG_PATH,
    NON_OVERRIDE_ENV,
    _read_config_file,
    resolve_config_path,
)
from rotator.config_sections import (
    AwsSettings,
    CoordinationSettings,
    Duration,
    LoggingSettings,
    MetricsSettings,
    NotificationSettings,
    OrganizationSettings,
    PolicySettings,
    ResponseSettings,
    SafetySettings,
    ScheduleSettings,
    SecretsSettings,
    SelectionSettings,
    TagSelector,
    _Section,
)
from rotator.durations import format_duration
from rotator.model import PolicyDefaults
from rotator.overrides import _apply_env_overrides, _model_of, _strip_optional, _translate

__all__ = [
    "CONFIG_PATH_ENV",
    "DEFAULT_CONFIG_PATH",
    "NON_OVERRIDE_ENV",
    "TEMPLATE_PLACEHOLDERS",
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
    "Settings",
    "TagSelector",
    "load_settings",
    "resolve_config_path",
]


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
    response: ResponseSettings = Field(
        default_factory=ResponseSettings, description="The response to an exposed key (AWS's quarantine policy)."
    )
    notifications: NotificationSettings = Field(
        default_factory=NotificationSettings, description="Messages to key owners and the security team."
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
        return check_role_arns(value)

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
            quarantine=self.response.quarantine,
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
