"""Configuration: defaults, durations, validation messages, environment overrides, per-user tags."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable, Mapping
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from rotator.config import Settings, load_settings, resolve_config_path
from rotator.durations import format_duration, parse_duration
from rotator.errors import ConfigError, UserError
from rotator.inventory import secret_name
from rotator.model import EffectivePolicy, GuardMode
from rotator.user_policy import is_excluded_by_tag, resolve_policy

# scripts/ is not a package: its modules import by name once it is on the path, as in scripts/update-readme.
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
from config_reference import render_reference_markdown

#: The policy every user starts from under the default settings.
DEFAULTS = Settings().policy_defaults()
EXAMPLE_CONFIG = Path(__file__).resolve().parents[2] / "config" / "rotator.yaml"
DURATION_HINT = "(use e.g. 45s, 15m, 12h, 90d, 2w)"
ROLE_A = "arn:aws:iam::123456789012:role/rotator"
ROLE_B = "arn:aws-us-gov:iam::210987654321:role/ops/rotator"
ACCOUNT = "123456789012"


@pytest.fixture
def load(tmp_path: Path) -> Callable[..., Settings]:
    """Load ``text`` as the config file, with only the given environment (never the real one)."""

    def _load(text: str = "", env: Mapping[str, str] | None = None) -> Settings:
        path = tmp_path / "config.yaml"
        path.write_text(text, encoding="utf-8")
        return load_settings(str(path), env=dict(env or {}), default_path=str(tmp_path / "absent.yaml"))

    return _load


def config_error(load: Callable[..., Settings], text: str = "", env: Mapping[str, str] | None = None) -> str:
    with pytest.raises(ConfigError) as caught:
        load(text, env)
    message = str(caught.value)
    assert "\n" not in message, message
    return message


def leaf_paths(data: Any, prefix: str = "") -> set[str]:
    if isinstance(data, dict) and data:
        return {path for key, value in data.items() for path in leaf_paths(value, f"{prefix}{key}.")}
    return {prefix.rstrip(".")}


# ------------------------------------------------------------------------------------------------ defaults


@pytest.mark.parametrize(
    ("read", "expected"),
    [
        (lambda s: s.schedule.interval, timedelta(hours=1)),
        (lambda s: s.schedule.cron, None),
        (lambda s: s.policy.max_key_age, timedelta(days=90)),
        (lambda s: s.policy.grace_period, timedelta(days=7)),
        (lambda s: s.policy.retention, timedelta(days=7)),
        (lambda s: s.policy.disable_guard, GuardMode.HOLD),
        (lambda s: s.policy.quiet_period, timedelta(hours=4)),
        (lambda s: s.policy.max_hold, timedelta(days=14)),
        (lambda s: s.selection.path_prefix, "/"),
        (lambda s: (s.selection.tag.key, s.selection.tag.value), ("rotator", "enabled")),
        (lambda s: s.selection.exclude, ()),
        (lambda s: s.secrets.name_template, "iam-keys/{user}"),
        (lambda s: s.secrets.kms_key_id, None),
        (lambda s: s.secrets.tags, {}),
        (lambda s: s.secrets.replica_regions, ()),
        (lambda s: (s.metrics.address, s.metrics.port), ("127.0.0.1", 9464)),
        (lambda s: (s.logging.format, s.logging.level), ("json", "info")),
        (lambda s: (s.safety.dry_run, s.safety.max_actions_per_sweep), (False, 100)),
        (lambda s: (s.aws.max_attempts, s.aws.max_calls_per_second), (8, None)),
        (lambda s: (s.aws.rates.iam, s.aws.rates.secretsmanager, s.aws.rates.dynamodb), (20, 40, 20)),
        (lambda s: (s.aws.concurrency, s.aws.parallel_accounts), (64, 4)),
        (lambda s: s.aws.validation_timeout, timedelta(seconds=120)),
        (lambda s: (s.aws.connect_timeout, s.aws.read_timeout), (timedelta(seconds=5), timedelta(seconds=15))),
        (lambda s: s.coordination.lease_table, None),
        (lambda s: s.accounts, ()),
        (lambda s: s.organization, None),
    ],
)
def test_defaults_are_the_documented_ones(read: Callable[[Settings], object], expected: object) -> None:
    assert read(Settings()) == expected


@pytest.mark.parametrize("text", ["", "# only a comment\n", "policy:\n", "{}"])
def test_empty_file_or_empty_section_means_defaults(load: Callable[..., Settings], text: str) -> None:
    assert load(text) == Settings()


def test_example_file_loads_and_equals_the_defaults() -> None:
    assert load_settings(str(EXAMPLE_CONFIG), env={}) == Settings()


def test_example_file_spells_out_every_key() -> None:
    written = yaml.safe_load(EXAMPLE_CONFIG.read_text(encoding="utf-8"))
    assert leaf_paths(written) == leaf_paths(Settings().effective())


def test_settings_are_frozen() -> None:
    settings = Settings()
    with pytest.raises(ValidationError):
        settings.policy.max_key_age = timedelta(days=1)


# ------------------------------------------------------------------------------------------------ durations


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("45s", timedelta(seconds=45)),
        ("15m", timedelta(minutes=15)),
        ("12h", timedelta(hours=12)),
        ("90d", timedelta(days=90)),
        ("2w", timedelta(weeks=2)),
        ("1s", timedelta(seconds=1)),
        (" 7d ", timedelta(days=7)),
        ("007s", timedelta(seconds=7)),
        ("3600s", timedelta(hours=1)),
    ],
)
def test_parse_duration_accepts_every_unit(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "abc",
        "",
        "0s",
        "0w",
        "-5m",
        "5",
        "5x",
        "5M",
        "1H",
        "1.5h",
        "5 s",
        "s",
        "1h30m",
        "P1D",
        "99999999999999999w",
    ],
)
def test_parse_duration_rejects_garbage_zero_and_negative(text: str) -> None:
    with pytest.raises(ValueError, match=r"^invalid duration '") as caught:
        parse_duration(text)
    assert "\n" not in str(caught.value)


def test_parse_duration_message_shows_examples() -> None:
    with pytest.raises(ValueError) as caught:
        parse_duration("abc")
    assert str(caught.value) == f"invalid duration 'abc' {DURATION_HINT}"


@pytest.mark.parametrize(
    ("duration", "text"),
    [
        (timedelta(days=7), "7d"),  # a tie with 1w: the smaller unit, as the docs write it
        (timedelta(weeks=2), "2w"),
        (timedelta(seconds=90), "90s"),
        (timedelta(seconds=120), "2m"),
        (timedelta(hours=4), "4h"),
        (timedelta(days=90), "90d"),
        (timedelta(hours=24), "1d"),
        (timedelta(0), "0s"),
        (timedelta(seconds=0.5), "0.5s"),
    ],
)
def test_format_duration_is_compact_and_exact(duration: timedelta, text: str) -> None:
    assert format_duration(duration) == text


@given(st.integers(min_value=1, max_value=36_500 * 86_400))  # up to the 100-year maximum
def test_format_then_parse_round_trips(seconds: int) -> None:
    duration = timedelta(seconds=seconds)
    assert parse_duration(format_duration(duration)) == duration


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("30d", timedelta(days=30)),
        ("45", None),  # quoted digits: a unit is required
        (45, timedelta(seconds=45)),  # a bare YAML integer counts seconds
        ("2w", timedelta(weeks=2)),
    ],
)
def test_duration_in_yaml(load: Callable[..., Settings], value: object, expected: timedelta | None) -> None:
    text = yaml.safe_dump({"policy": {"max_key_age": value}})
    if expected is None:
        assert config_error(load, text).startswith("policy.max_key_age: invalid duration '45'")
    else:
        assert load(text).policy.max_key_age == expected


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("policy.max_key_age", "abc", f"invalid duration 'abc' {DURATION_HINT}"),
        ("policy.grace_period", "0s", "invalid duration '0s': must be positive"),
        ("policy.retention", 0, "invalid duration 0: must be positive"),
        ("policy.quiet_period", -5, "invalid duration -5: must be positive"),
        ("policy.max_hold", 1.5, "must be a duration, got 1.5"),
        ("aws.validation_timeout", True, "must be a duration, got True"),
        ("schedule.interval", [1], "must be a duration, got [1]"),
        ("policy.max_key_age", "10 days", "invalid duration '10 days'"),
    ],
)
def test_bad_durations_name_the_key(load: Callable[..., Settings], key: str, value: object, message: str) -> None:
    section, name = key.split(".")
    text = yaml.safe_dump({section: {name: value}})
    assert config_error(load, text).startswith(f"{key}: {message}")


DURATION_KEYS = [
    "policy.max_key_age",
    "policy.grace_period",
    "policy.retention",
    "policy.quiet_period",
    "policy.max_hold",
    "schedule.interval",
]


@pytest.mark.parametrize("key", DURATION_KEYS)
@pytest.mark.parametrize("value", ["36501d", "5215w", "9999999d", "999999999d", 36_501 * 86_400, 10**15])
def test_durations_are_at_most_100_years(load: Callable[..., Settings], key: str, value: object) -> None:
    # Anything longer is surely a typo, and far longer ones no longer fit a datetime once added to now.
    section, name = key.split(".")
    error = config_error(load, yaml.safe_dump({section: {name: value}}))
    assert error.startswith(f"{key}: invalid duration {value!r}: too large (at most 36500d, about 100 years)")


@pytest.mark.parametrize("key", DURATION_KEYS)
def test_a_100_year_duration_is_accepted(load: Callable[..., Settings], key: str) -> None:
    section, name = key.split(".")
    settings = load(yaml.safe_dump({section: {name: "36500d"}}))
    assert getattr(getattr(settings, section), name) == timedelta(days=36_500)


@pytest.mark.parametrize("text", ["36501d", "9999999d", "10000000000000d", "99999999999999999w"])
def test_parse_duration_caps_at_100_years(text: str) -> None:
    with pytest.raises(ValueError, match=r": too large \(at most 36500d, about 100 years\)$"):
        parse_duration(text)


@pytest.mark.parametrize("module", ["rotator.durations", "rotator.policy"])
def test_the_pure_core_imports_without_pydantic_or_yaml(module: str) -> None:
    # A fresh interpreter: in this one the tests have long imported both.
    check = f"import sys, {module}; print(sorted({{'pydantic', 'yaml'}} & set(sys.modules)))"
    result = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]", f"importing {module} loads {result.stdout.strip()}"


def test_a_huge_user_tag_is_that_users_problem() -> None:
    with pytest.raises(UserError, match=r"^alice: tag rotator:max-key-age='9999999d': invalid duration .*too large"):
        resolve_policy(DEFAULTS, {"rotator:max-key-age": "9999999d"}, "alice")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("1s", timedelta(seconds=1)),
        (1, timedelta(seconds=1)),
        ("1h", timedelta(hours=1)),
        ("60m", timedelta(hours=1)),
        (3600, timedelta(hours=1)),
    ],
)
def test_validation_timeout_bounds_are_inclusive(
    load: Callable[..., Settings], value: object, expected: timedelta
) -> None:
    assert load(yaml.safe_dump({"aws": {"validation_timeout": value}})).aws.validation_timeout == expected


@pytest.mark.parametrize(
    ("value", "got"),
    [("9999999d", None), ("3601s", "3601s"), ("61m", "61m"), ("2h", "2h"), ("1d", "1d"), (3601, "3601s")],
)
def test_validation_timeout_is_at_most_one_hour(load: Callable[..., Settings], value: object, got: str | None) -> None:
    error = config_error(load, yaml.safe_dump({"aws": {"validation_timeout": value}}))
    assert error.startswith("aws.validation_timeout: ")
    if got is not None:
        assert error == f"aws.validation_timeout: must be between 1s and 1h, got {got}"


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("connect_timeout", "1s", timedelta(seconds=1)),
        ("connect_timeout", "1m", timedelta(minutes=1)),
        ("connect_timeout", 10, timedelta(seconds=10)),
        ("read_timeout", "1s", timedelta(seconds=1)),
        ("read_timeout", "2m", timedelta(minutes=2)),
        ("read_timeout", "45s", timedelta(seconds=45)),
    ],
)
def test_aws_timeouts_bounds_are_inclusive(
    load: Callable[..., Settings], key: str, value: object, expected: timedelta
) -> None:
    assert getattr(load(yaml.safe_dump({"aws": {key: value}})).aws, key) == expected


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("connect_timeout", "61s", "must be between 1s and 1m, got 61s"),
        ("connect_timeout", "1h", "must be between 1s and 1m, got 1h"),
        ("connect_timeout", "0s", "invalid duration '0s': must be positive"),
        ("read_timeout", "121s", "must be between 1s and 2m, got 121s"),
        ("read_timeout", "1d", "must be between 1s and 2m, got 1d"),
        ("read_timeout", "soon", "invalid duration 'soon'"),
        ("read_timeout", True, "must be a duration, got True"),
    ],
)
def test_aws_timeouts_out_of_bounds_name_the_key(
    load: Callable[..., Settings], key: str, value: object, message: str
) -> None:
    assert config_error(load, yaml.safe_dump({"aws": {key: value}})).startswith(f"aws.{key}: {message}")


def test_aws_timeouts_from_the_environment(load: Callable[..., Settings]) -> None:
    settings = load("", {"ROTATOR_AWS__CONNECT_TIMEOUT": "2s", "ROTATOR_AWS__READ_TIMEOUT": "30s"})
    assert (settings.aws.connect_timeout, settings.aws.read_timeout) == (timedelta(seconds=2), timedelta(seconds=30))


# ------------------------------------------------------------------------------------------------ validation


@pytest.mark.parametrize(
    ("text", "message"),
    [
        # unknown keys, at every level
        ("polcy: {}", "polcy: unknown key"),
        ("policy: {max_keyage: 30d}", "policy.max_keyage: unknown key"),
        ("selection: {tag: {key: a, value: b, colour: red}}", "selection.tag.colour: unknown key"),
        ("organization: {role_name: r, include_ou: []}", "organization.include_ou: unknown key"),
        # types
        ("policy: 5", "policy: must be a mapping"),
        ("metrics: {port: 0}", "metrics.port: must be an integer between 1 and 65535"),
        ("metrics: {port: 65536}", "metrics.port: must be an integer between 1 and 65535"),
        ("metrics: {port: http}", "metrics.port: must be an integer between 1 and 65535"),
        ("metrics: {port: true}", "metrics.port: must be an integer between 1 and 65535"),
        ("metrics: {address: ''}", "metrics.address: must be at least 1 character"),
        ("safety: {dry_run: maybe}", "safety.dry_run: must be true or false, got 'maybe'"),
        ("safety: {max_actions_per_sweep: -1}", "safety.max_actions_per_sweep: must be at least 0"),
        ("safety: {max_actions_per_sweep: lots}", "safety.max_actions_per_sweep: must be an integer"),
        ("aws: {max_attempts: 0}", "aws.max_attempts: must be at least 1"),
        ("aws: {max_calls_per_second: 0}", "aws.max_calls_per_second: must be greater than 0"),
        ("aws: {max_calls_per_second: .inf}", "aws.max_calls_per_second: must be a finite number"),
        ("logging: {format: xml}", "logging.format: must be one of 'json' or 'console'"),
        ("logging: {level: verbose}", "logging.level: must be one of 'debug', 'info', 'warning' or 'error'"),
        ("policy: {disable_guard: never}", "policy.disable_guard: must be one of 'hold', 'warn' or 'ignore'"),
        ("secrets: {tags: {team: 5}}", "secrets.tags.team: must be a string, got 5"),
        ("secrets: {tags: {1: a}}", "secrets.tags: key 1 must be a string"),
        (
            "secrets: {tags: {'rotator:managed': 'false'}}",
            "secrets.tags: tag key 'rotator:managed' uses a reserved",
        ),
        (
            "secrets: {tags: {" + ", ".join(f"t{i}: v" for i in range(36)) + "}}",
            "secrets.tags: at most 35 tags (36 given): Secrets Manager allows 50",
        ),
        ("secrets: {replica_regions: [mars]}", "secrets.replica_regions: 'mars' is not an AWS region name"),
        ("secrets: {kms_key_id: ''}", "secrets.kms_key_id: must be at least 1 character"),
        (
            "selection: {path_prefix: /team}",
            "selection.path_prefix: must be an IAM path that starts and ends",
        ),
        (
            "selection: {path_prefix: team/}",
            "selection.path_prefix: must be an IAM path that starts and ends",
        ),
        ("selection: {tag: {key: team}}", "selection.tag.value: required key is missing"),
        ("selection: {exclude: ci-*}", "selection.exclude: must be a list, got 'ci-*'"),
        ("selection: {exclude: ['']}", "selection.exclude: globs must not be empty"),
        ("coordination: {lease_table: x}", "coordination.lease_table: 'x' is not a DynamoDB table name"),
        ("accounts: [not-an-arn]", "accounts: 'not-an-arn' is not an IAM role ARN"),
        (
            "accounts: ['arn:aws:iam::12345:role/x']",
            "accounts: 'arn:aws:iam::12345:role/x' is not an IAM role",
        ),
        (
            "accounts: ['arn:aws:iam::123456789012:user/x']",
            "accounts: 'arn:aws:iam::123456789012:user/x' is not",
        ),
        (f"accounts: ['{ROLE_A}', '{ROLE_A}']", f"accounts: duplicate role ARN '{ROLE_A}'"),
        (f"accounts: {ROLE_A}", "accounts: must be a list"),
        ("organization: {include_ous: []}", "organization.role_name: required key is missing"),
        ("organization: {role_name: r, include_ous: [sales]}", "organization.include_ous: 'sales' is not an"),
        (
            "organization: {role_name: r, exclude_accounts: [123456789012]}",
            "organization.exclude_accounts: an ",
        ),
        (
            "organization: {role_name: r, exclude_accounts: ['1234']}",
            "organization.exclude_accounts: '1234' is",
        ),
        ("1: x", "config: key 1 must be a string"),
    ],
)
def test_invalid_values_are_one_line_errors_naming_the_key(
    load: Callable[..., Settings], text: str, message: str
) -> None:
    assert config_error(load, text).startswith(message)


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "0.0.0.0",  # noqa: S104 - a value the validator must accept, not a socket being bound
        "10.1.2.3",
        "::",
        "::1",
        "fe80::1",
        "2001:db8::7",
        "localhost",
        "metrics.internal",
        "rotator-1.example.com",
        "host1",
        "xn--bcher-kva.example",
    ],
)
def test_metrics_address_is_an_ip_literal_or_a_host_name(load: Callable[..., Settings], address: str) -> None:
    assert load(yaml.safe_dump({"metrics": {"address": address}})).metrics.address == address


@pytest.mark.parametrize(
    "address",
    [
        "not an address!",
        "999.1.1.1",
        "1.2.3",
        "256.0.0.1",
        "1.2.3.4.5",
        "[::1]",
        "127.0.0.1:9464",
        "::1::2",
        "-host",
        "host-",
        "a..b",
        ".",
        "host_name",
        "http://localhost",
        "a" * 64,
        ".".join(["a" * 60] * 5),
    ],
)
def test_metrics_address_rejects_garbage(load: Callable[..., Settings], address: str) -> None:
    error = config_error(load, yaml.safe_dump({"metrics": {"address": address}}))
    assert error.startswith("metrics.address: "), error
    assert "is not an IP address or a host name" in error


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("logging: {level: DEBUG, format: Console}", ("debug", "console")),
        ("logging: {level: Warning}", ("warning", "json")),
    ],
)
def test_choices_are_case_insensitive(load: Callable[..., Settings], text: str, expected: tuple[str, str]) -> None:
    settings = load(text)
    assert (settings.logging.level, settings.logging.format) == expected


def test_guard_mode_is_case_insensitive(load: Callable[..., Settings]) -> None:
    assert load("policy: {disable_guard: WARN}").policy.disable_guard is GuardMode.WARN


def test_a_full_non_default_config_loads(load: Callable[..., Settings]) -> None:
    settings = load(
        f"""
schedule: {{cron: "0 3 * * 1-5"}}
policy: {{max_key_age: 30d, grace_period: 1d, retention: 2d, disable_guard: ignore, quiet_period: 5s,
          max_hold: 1h}}
selection: {{path_prefix: /apps/, tag: null, exclude: [break-glass-*, legacy]}}
secrets: {{name_template: "keys/{{account}}{{path}}/{{user}}", kms_key_id: alias/keys, tags: {{team: sec}},
          replica_regions: [eu-west-1, us-gov-west-1]}}
metrics: {{address: "::", port: 8080}}
logging: {{format: console, level: debug}}
safety: {{dry_run: true, max_actions_per_sweep: 0}}
aws: {{max_attempts: 1, max_calls_per_second: 0.5, validation_timeout: 30}}
coordination: {{lease_table: rotator-leases}}
accounts: ["{ROLE_A}", "{ROLE_B}"]
organization: {{role_name: rotator, include_ous: [ou-ab12-cd34ef56, r-ab12],
                exclude_accounts: ["012345678901"]}}
"""
    )
    assert settings.schedule.cron == "0 3 * * 1-5"
    assert settings.schedule.interval is None
    assert settings.selection.tag is None
    assert settings.aws.validation_timeout == timedelta(seconds=30)
    assert settings.accounts == (ROLE_A, ROLE_B)
    assert settings.organization is not None
    assert settings.organization.exclude_accounts == ("012345678901",)


# ------------------------------------------------------------------------------------------------ schedule


@pytest.mark.parametrize(
    ("text", "interval", "cron"),
    [
        ("", timedelta(hours=1), None),
        ("schedule: {}", timedelta(hours=1), None),
        ("schedule: {interval: 15m}", timedelta(minutes=15), None),
        ("schedule: {interval: 5}", timedelta(seconds=5), None),
        ('schedule: {cron: "0 3 * * *"}', None, "0 3 * * *"),
        ('schedule: {cron: "*/5 * * * *"}', None, "*/5 * * * *"),
    ],
)
def test_schedule_is_an_interval_or_a_cron(
    load: Callable[..., Settings], text: str, interval: timedelta | None, cron: str | None
) -> None:
    schedule = load(text).schedule
    assert (schedule.interval, schedule.cron) == (interval, cron)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('schedule: {interval: 1h, cron: "0 3 * * *"}', "schedule: set exactly one of interval or cron"),
        ("schedule: {interval: null}", "schedule: set exactly one of interval or cron"),
        ("schedule: {interval: null, cron: null}", "schedule: set exactly one of interval or cron"),
        (
            'schedule: {cron: "0 3 * *"}',
            "schedule.cron: invalid cron expression '0 3 * *': Wrong number of fields",
        ),
        ('schedule: {cron: "99 3 * * *"}', "schedule.cron: invalid cron expression '99 3 * * *'"),
        ('schedule: {cron: "@daily"}', "schedule.cron: invalid cron expression '@daily'"),
    ],
)
def test_schedule_errors(load: Callable[..., Settings], text: str, message: str) -> None:
    assert config_error(load, text).startswith(message)


# ------------------------------------------------------------------------------------------- secret names


#: Templates in which a secret name always tells its user apart: {user} once, in a /-separated segment
#: without {path}, and {path} (the only value that can hold a "/") on one side of it at most.
INJECTIVE_TEMPLATES = [
    "iam-keys/{user}",
    "{user}",
    "keys/{account}/{user}",
    "a_b+c=d.e@f-{user}",
    "{account}/{path}/{user}",
    "iam-keys/{path}/{user}",
    "keys/{user}/{path}",
    "keys/{path}/{account}/{user}",
    "keys/{account}-{user}",
    "{path}/x-{user}-{account}",
    "{user}-keys",
    "keys{path}/{user}",
]

#: Templates that could map two distinct users of one account to one secret name: the reason given, and two
#: (user, path) members that do share a name (None where the template is refused without a collision).
AMBIGUOUS_TEMPLATES: list[tuple[str, str, tuple[tuple[str, str], tuple[str, str]] | None]] = [
    # The reviewer's example: user c at /a-b/ and user b-c at /a/ both get iam-keys/a-b-c.
    ("iam-keys/{path}-{user}", "{path} shares the /-separated segment of {user}", (("c", "/a-b/"), ("b-c", "/a/"))),
    ("keys{path}{user}", "{path} shares the /-separated segment of {user}", (("ab", "/"), ("b", "/a/"))),
    ("keys/{account}{path}{user}", "{path} shares the /-separated segment of {user}", (("ab", "/"), ("b", "/a/"))),
    ("{path}{user}", "{path} shares the /-separated segment of {user}", (("ab", "/"), ("b", "/a/"))),
    ("keys/{user}{path}", "{path} shares the /-separated segment of {user}", (("a", "/b/"), ("ab", "/"))),
    ("keys/{user}-{path}/x", "{path} shares the /-separated segment of {user}", (("a", "/b-c/"), ("a-b", "/c/"))),
    # Not ambiguous in fact ({path} has one value on both sides), but not distinct by the simple rule: refused.
    ("{path}/{user}/{path}", "{path} on both sides of {user}", None),
    ("{user}/{user}", "must contain {user} only once", None),
]


@pytest.mark.parametrize("template", INJECTIVE_TEMPLATES)
def test_valid_name_templates(load: Callable[..., Settings], template: str) -> None:
    assert load(yaml.safe_dump({"secrets": {"name_template": template}})).secrets.name_template == template


@pytest.mark.parametrize(("template", "message"), [(t, m) for t, m, _ in AMBIGUOUS_TEMPLATES])
def test_name_templates_that_could_give_two_users_one_secret_are_rejected(
    load: Callable[..., Settings], template: str, message: str
) -> None:
    error = config_error(load, yaml.safe_dump({"secrets": {"name_template": template}}))
    assert error.startswith("secrets.name_template: ")
    assert message in error


@pytest.mark.parametrize(
    ("template", "message"),
    [
        ("iam-keys/static", "must contain {user}"),
        ("keys/{account}", "must contain {user}"),
        ("keys/{username}", "unknown placeholder {username} (allowed: {user}, {account}, {path})"),
        ("keys/{user}/{region}", "unknown placeholder {region}"),
        ("keys/{}", "unknown placeholder {}"),
        ("keys/{user.name}", "unknown placeholder {user.name}"),
        ("keys/{user!r}", "placeholder {user} takes no conversion or format spec"),
        ("keys/{user:>10}", "placeholder {user} takes no conversion or format spec"),
        ("keys/{user", "invalid template"),
        ("my keys/{user}", "literal text 'my keys/' is not allowed in a secret name"),
        ("keys/{{user}}", "is not allowed in a secret name"),
    ],
)
def test_invalid_name_templates(load: Callable[..., Settings], template: str, message: str) -> None:
    error = config_error(load, yaml.safe_dump({"secrets": {"name_template": template}}))
    assert error.startswith("secrets.name_template: ")
    assert message in error


def _name(template: str, member: tuple[str, str]) -> str:
    user, path = member
    return secret_name(template, user, ACCOUNT, path)[0]


@pytest.mark.parametrize(("template", "witness"), [(t, w) for t, _, w in AMBIGUOUS_TEMPLATES if w is not None])
def test_rejected_templates_do_give_two_users_one_secret(
    template: str, witness: tuple[tuple[str, str], tuple[str, str]]
) -> None:
    first, second = witness
    assert first[0].lower() != second[0].lower()
    assert _name(template, first) == _name(template, second)


# A tiny alphabet makes equal names likely: a template that could collide would be caught.
_NAME_PARTS = st.text("aA-", min_size=1, max_size=3)
_MEMBERS = st.tuples(
    _NAME_PARTS,  # user names cannot contain "/"
    st.lists(_NAME_PARTS, max_size=3).map(lambda segments: "/" + "".join(f"{s}/" for s in segments)),
)


@pytest.mark.parametrize("template", INJECTIVE_TEMPLATES)
@given(first=_MEMBERS, second=_MEMBERS)
def test_accepted_templates_never_give_two_users_one_secret(
    template: str, first: tuple[str, str], second: tuple[str, str]
) -> None:
    # IAM user names are unique per account case-insensitively; each account holds its own users' secrets.
    if first[0].lower() != second[0].lower():
        assert _name(template, first) != _name(template, second)


# ------------------------------------------------------------------------------------------------ environment


@pytest.mark.parametrize(
    ("env", "read", "expected"),
    [
        ({"ROTATOR_POLICY__MAX_KEY_AGE": "30d"}, lambda s: s.policy.max_key_age, timedelta(days=30)),
        ({"ROTATOR_POLICY__MAX_KEY_AGE": "45"}, lambda s: s.policy.max_key_age, timedelta(seconds=45)),
        ({"ROTATOR_SAFETY__DRY_RUN": "true"}, lambda s: s.safety.dry_run, True),
        ({"ROTATOR_METRICS__PORT": "9100"}, lambda s: s.metrics.port, 9100),
        ({"ROTATOR_AWS__MAX_CALLS_PER_SECOND": "2.5"}, lambda s: s.aws.max_calls_per_second, 2.5),
        ({"ROTATOR_LOGGING__LEVEL": "DEBUG"}, lambda s: s.logging.level, "debug"),
        # nested keys; the other key of the default tag is kept
        ({"ROTATOR_SELECTION__TAG__VALUE": "yes"}, lambda s: s.selection.tag, ("rotator", "yes")),
        ({"ROTATOR_SELECTION__TAG__KEY": "team"}, lambda s: s.selection.tag, ("team", "enabled")),
        ({"ROTATOR_SELECTION__TAG": "null"}, lambda s: s.selection.tag, None),
        ({"ROTATOR_SELECTION__TAG": "{key: a, value: b}"}, lambda s: s.selection.tag, ("a", "b")),
        # text is taken verbatim: no YAML surprises for cron, numbers-as-names, true-as-value
        ({"ROTATOR_SCHEDULE__CRON": "* * * * *"}, lambda s: s.schedule.cron, "* * * * *"),
        ({"ROTATOR_SELECTION__TAG__VALUE": "true"}, lambda s: s.selection.tag, ("rotator", "true")),
        ({"ROTATOR_SECRETS__KMS_KEY_ID": "1234"}, lambda s: s.secrets.kms_key_id, "1234"),
        ({"ROTATOR_COORDINATION__LEASE_TABLE": "null"}, lambda s: s.coordination.lease_table, None),
        ({"ROTATOR_COORDINATION__LEASE_TABLE": "leases"}, lambda s: s.coordination.lease_table, "leases"),
        # mappings and lists, including top-level lists
        ({"ROTATOR_SECRETS__TAGS__TEAM": "5"}, lambda s: s.secrets.tags, {"team": "5"}),
        (
            {"ROTATOR_SECRETS__TAGS": "{team: sec, env: prod}"},
            lambda s: s.secrets.tags,
            {"team": "sec", "env": "prod"},
        ),
        ({"ROTATOR_ACCOUNTS": f"[{ROLE_A}, {ROLE_B}]"}, lambda s: s.accounts, (ROLE_A, ROLE_B)),
        ({"ROTATOR_ACCOUNTS": f"{ROLE_A},{ROLE_B}"}, lambda s: s.accounts, (ROLE_A, ROLE_B)),
        ({"ROTATOR_ACCOUNTS": ""}, lambda s: s.accounts, ()),
        ({"ROTATOR_SELECTION__EXCLUDE": "[a*, b]"}, lambda s: s.selection.exclude, ("a*", "b")),
        ({"ROTATOR_ORGANIZATION__ROLE_NAME": "rotator"}, lambda s: s.organization.role_name, "rotator"),
        # names are case-insensitive
        ({"rotator_policy__retention": "1d"}, lambda s: s.policy.retention, timedelta(days=1)),
        ({"ROTATOR_Policy__Grace_Period": "2d"}, lambda s: s.policy.grace_period, timedelta(days=2)),
        # ROTATOR_CONFIG names the file; it is not an override
        ({"ROTATOR_CONFIG": "/ignored/because/--config/wins.yaml"}, lambda s: s, Settings()),
    ],
)
def test_environment_overrides(
    load: Callable[..., Settings], env: dict[str, str], read: Callable[[Settings], Any], expected: object
) -> None:
    value = read(load("", env))
    if value is not None and hasattr(value, "key"):
        value = (value.key, value.value)
    assert value == expected


@pytest.mark.parametrize(
    "env",
    [
        {"ROTATOR_FOO": "1"},
        {"ROTATOR_VERSION": "1.2.3"},
        {"ROTATOR_HOME": "/opt/rotator", "rotator_pid": "42"},
        {"ROTATOR_POLICY_MAX_KEY_AGE": "abc"},  # a single underscore: not ours either
        {"ROTATOR_": "x"},
    ],
)
def test_other_rotator_variables_are_ignored(load: Callable[..., Settings], env: dict[str, str]) -> None:
    # SPEC: only ROTATOR_CONFIG and ROTATOR_<SECTION>__<KEY> are read; a wrapper's ROTATOR_FOO must not
    # make every command fail. A name without "__" that is a top-level key (ROTATOR_ACCOUNTS) still is one.
    assert load("", env) == Settings()


def test_environment_overrides_win_over_the_file(load: Callable[..., Settings]) -> None:
    settings = load(
        "policy: {max_key_age: 30d, grace_period: 2d}\nsecrets: {tags: {a: b}}",
        {"ROTATOR_POLICY__MAX_KEY_AGE": "10d", "ROTATOR_SECRETS__TAGS__C": "d"},
    )
    assert settings.policy.max_key_age == timedelta(days=10)
    assert settings.policy.grace_period == timedelta(days=2)
    assert settings.secrets.tags == {"a": "b", "c": "d"}


def test_cron_override_replaces_the_default_interval(load: Callable[..., Settings]) -> None:
    assert load("", {"ROTATOR_SCHEDULE__CRON": "0 3 * * *"}).schedule.interval is None


@pytest.mark.parametrize(
    ("text", "env", "message"),
    [
        (
            "",
            {"ROTATOR_POLICY__MAX_KEYAGE": "30d"},
            "ROTATOR_POLICY__MAX_KEYAGE: unknown key policy.max_keyage",
        ),
        (
            "",
            {"ROTATOR_POLCY__MAX_KEY_AGE": "30d"},
            "ROTATOR_POLCY__MAX_KEY_AGE: unknown key polcy.max_key_age",
        ),
        (
            "",
            {"ROTATOR_SELECTION__TAG__COLOUR": "x"},
            "ROTATOR_SELECTION__TAG__COLOUR: unknown key selection.tag",
        ),
        (
            "",
            {"ROTATOR_POLICY__MAX_KEY_AGE__X": "1"},
            "ROTATOR_POLICY__MAX_KEY_AGE__X: unknown key policy.max_",
        ),
        (
            "",
            {"ROTATOR_SECRETS__TAGS__A__B": "1"},
            "ROTATOR_SECRETS__TAGS__A__B: unknown key secrets.tags.a.b",
        ),
        ("", {"ROTATOR_POLICY__": "1"}, "ROTATOR_POLICY__: malformed override name"),
        ("", {"ROTATOR_POLICY": "{max_key_age: 1d"}, "ROTATOR_POLICY: invalid value '{max_key_age: 1d'"),
        (
            "",
            {"ROTATOR_SELECTION__TAG": "null", "ROTATOR_SELECTION__TAG__KEY": "x"},
            "ROTATOR_SELECTION__TAG__KEY: conflicts with ROTATOR_SELECTION__TAG",
        ),
        (
            "policy: 5",
            {"ROTATOR_POLICY__MAX_KEY_AGE": "1d"},
            "ROTATOR_POLICY__MAX_KEY_AGE: cannot override inside",
        ),
        # a bad value names the key, and the variable it came from
        (
            "",
            {"ROTATOR_POLICY__MAX_KEY_AGE": "abc"},
            f"policy.max_key_age: invalid duration 'abc' {DURATION_HINT} (from ROTATOR_POLICY__MAX_KEY_AGE)",
        ),
        (
            "",
            {"ROTATOR_METRICS__PORT": "99999"},
            "metrics.port: must be an integer between 1 and 65535, got 99999 (from ROTATOR_METRICS__PORT)",
        ),
        (  # both by environment: nothing says which one wins (one alone replaces the file's other, issue 15)
            "schedule: {interval: 1h}",
            {"ROTATOR_SCHEDULE__CRON": "0 3 * * *", "ROTATOR_SCHEDULE__INTERVAL": "2h"},
            "schedule: set exactly one of interval or cron (from ROTATOR_SCHEDULE__CRON)",
        ),
        ("", {"ROTATOR_ACCOUNTS": "[123]"}, "accounts[0]: must be a string, got 123 (from ROTATOR_ACCOUNTS)"),
    ],
)
def test_environment_errors_name_the_variable(
    load: Callable[..., Settings], text: str, env: dict[str, str], message: str
) -> None:
    assert config_error(load, text, env).startswith(message)


# ------------------------------------------------------------------------------------------------ file


def test_config_path_resolution_order(tmp_path: Path) -> None:
    assert resolve_config_path("/a.yaml", {"ROTATOR_CONFIG": "/b.yaml"}) == (Path("/a.yaml"), True)
    assert resolve_config_path(None, {"ROTATOR_CONFIG": "/b.yaml"}) == (Path("/b.yaml"), True)
    assert resolve_config_path(None, {"ROTATOR_CONFIG": ""}, default_path="/c.yaml") == (
        Path("/c.yaml"),
        False,
    )
    assert resolve_config_path(None, {}) == (Path("/etc/rotator/config.yaml"), False)


@pytest.mark.parametrize(
    ("explicit", "from_env", "default", "expected_age"),
    [
        ("explicit", "env", "default", timedelta(days=1)),  # --config wins
        (None, "env", "default", timedelta(days=2)),  # then $ROTATOR_CONFIG
        (None, None, "default", timedelta(days=3)),  # then the default file
        (None, None, None, timedelta(days=90)),  # which may be absent: defaults
    ],
)
def test_which_file_is_read(
    tmp_path: Path, explicit: str | None, from_env: str | None, default: str | None, expected_age: timedelta
) -> None:
    for name, days in (("explicit", 1), ("env", 2), ("default", 3)):
        (tmp_path / f"{name}.yaml").write_text(f"policy: {{max_key_age: {days}d}}\n", encoding="utf-8")
    env = {"ROTATOR_CONFIG": str(tmp_path / f"{from_env}.yaml")} if from_env else {}
    settings = load_settings(
        str(tmp_path / f"{explicit}.yaml") if explicit else None,
        env=env,
        default_path=str(tmp_path / ("default.yaml" if default else "absent.yaml")),
    )
    assert settings.policy.max_key_age == expected_age


@pytest.mark.parametrize("how", ["argument", "environment"])
def test_a_named_file_that_is_missing_is_an_error(tmp_path: Path, how: str) -> None:
    missing = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError) as caught:
        if how == "argument":
            load_settings(str(missing), env={}, default_path=str(tmp_path / "absent.yaml"))
        else:
            load_settings(env={"ROTATOR_CONFIG": str(missing)}, default_path=str(tmp_path / "absent.yaml"))
    assert str(caught.value) == f"config file {missing}: not found"


def test_a_directory_is_not_a_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r": is a directory$"):
        load_settings(str(tmp_path), env={})


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("policy: [\n", "invalid YAML at line 2, column 1"),
        ("policy:\n  max_key_age: 1d\n    grace_period: 2d\n", "invalid YAML at line 3"),
        (
            "policy:\n  max_key_age: 1d\n  max_key_age: 2d\n",
            "invalid YAML at line 3, column 3: duplicate key",
        ),
        ("- policy\n", "the top level must be a mapping of sections, not a list"),
        ("just text\n", "the top level must be a mapping of sections, not a string"),
    ],
)
def test_malformed_files(load: Callable[..., Settings], tmp_path: Path, text: str, message: str) -> None:
    error = config_error(load, text)
    assert error.startswith(f"config file {tmp_path / 'config.yaml'}: ")
    assert message in error


def test_yaml_merge_keys_are_not_mistaken_for_duplicates(load: Callable[..., Settings]) -> None:
    settings = load("policy:\n  <<: {max_key_age: 1d, grace_period: 2d}\n  max_key_age: 3d\n")
    assert (settings.policy.max_key_age, settings.policy.grace_period) == (
        timedelta(days=3),
        timedelta(days=2),
    )


# ------------------------------------------------------------------------------------------------ effective


def test_effective_configuration_is_plain_data_with_readable_durations() -> None:
    effective = Settings().effective()
    json.dumps(effective)  # JSON-friendly
    assert effective["policy"]["max_key_age"] == "90d"
    assert effective["policy"]["grace_period"] == "7d"
    assert effective["aws"]["validation_timeout"] == "2m"
    assert effective["policy"]["disable_guard"] == "hold"
    assert effective["accounts"] == []


def test_effective_configuration_loads_back_to_the_same_settings(load: Callable[..., Settings]) -> None:
    original = load(
        f'schedule: {{cron: "0 3 * * *"}}\npolicy: {{max_key_age: 36h}}\naccounts: ["{ROLE_A}"]\n'
        "organization: {role_name: r}\n"
    )
    assert load(yaml.safe_dump(original.effective())) == original


def test_reference_table_is_deterministic_and_lists_every_key() -> None:
    table = render_reference_markdown()
    assert table == render_reference_markdown()
    assert table.startswith("| Key | Default | Description |\n|---|---|---|\n")
    keys = {line.split("`")[1] for line in table.splitlines()[2:]}
    assert leaf_paths(Settings().effective()) <= keys
    assert "| `policy.max_key_age` | `90d` |" in table
    assert "| `organization.role_name` | `(required)` |" in table
    for line in table.splitlines()[2:]:
        assert line.count(" | ") == 2, line  # descriptions are present and pipes are escaped


# ------------------------------------------------------------------------------------------------ per user


@pytest.mark.parametrize(
    ("tags", "expected"),
    [
        ({}, (timedelta(days=90), timedelta(days=7), timedelta(days=7))),
        ({"rotator:max-key-age": "30d"}, (timedelta(days=30), timedelta(days=7), timedelta(days=7))),
        ({"rotator:grace-period": "1h"}, (timedelta(days=90), timedelta(hours=1), timedelta(days=7))),
        ({"rotator:retention": "2w"}, (timedelta(days=90), timedelta(days=7), timedelta(weeks=2))),
        ({"Rotator:Max-Key-Age": " 10s "}, (timedelta(seconds=10), timedelta(days=7), timedelta(days=7))),
        (
            {"team": "sec", "rotator:exclude": "true"},
            (timedelta(days=90), timedelta(days=7), timedelta(days=7)),
        ),
    ],
)
def test_user_tags_override_the_policy(tags: dict[str, str], expected: tuple[timedelta, ...]) -> None:
    policy = resolve_policy(DEFAULTS, tags, "alice")
    assert (policy.max_key_age, policy.grace_period, policy.retention) == expected


def test_effective_policy_carries_the_rest_of_the_configuration(load: Callable[..., Settings]) -> None:
    settings = load("policy: {disable_guard: warn, quiet_period: 5s, max_hold: 1m}\naws: {validation_timeout: 7s}\n")
    assert resolve_policy(settings.policy_defaults(), {}, "alice") == EffectivePolicy(
        max_key_age=timedelta(days=90),
        grace_period=timedelta(days=7),
        retention=timedelta(days=7),
        disable_guard=GuardMode.WARN,
        quiet_period=timedelta(seconds=5),
        max_hold=timedelta(minutes=1),
        validation_timeout=timedelta(seconds=7),
    )


@pytest.mark.parametrize(
    ("tag", "value"),
    [
        ("rotator:max-key-age", "abc"),
        ("rotator:grace-period", "0s"),
        ("rotator:retention", "30"),
        ("rotator:max-key-age", ""),
    ],
)
def test_malformed_user_tag_is_a_user_error(tag: str, value: str) -> None:
    with pytest.raises(UserError) as caught:
        resolve_policy(DEFAULTS, {tag: value}, "alice")
    assert caught.value.user == "alice"
    message = str(caught.value)
    assert message.startswith(f"alice: tag {tag}={value!r}: invalid duration {value!r}")
    assert "\n" not in message


def test_malformed_user_tag_message_matches_the_contract() -> None:
    with pytest.raises(UserError) as caught:
        resolve_policy(DEFAULTS, {"rotator:max-key-age": "abc"}, "bob")
    assert str(caught.value) == f"bob: tag rotator:max-key-age='abc': invalid duration 'abc' {DURATION_HINT}"


@pytest.mark.parametrize(
    ("tags", "excluded"),
    [
        ({}, False),
        ({"rotator:exclude": "true"}, True),
        ({"rotator:exclude": "TRUE"}, True),
        ({"Rotator:Exclude": "True"}, True),
        ({"rotator:exclude": " true "}, True),
        ({"rotator:exclude": "false"}, False),
        ({"rotator:exclude": "FALSE"}, False),
        # Invalid values keep the user managed (so it is visible): resolve_policy reports it, below.
        ({"rotator:exclude": "yes"}, False),
        ({"rotator:exclude": ""}, False),
        ({"exclude": "true"}, False),
    ],
)
def test_exclude_tag(tags: dict[str, str], excluded: bool) -> None:
    assert is_excluded_by_tag(tags) is excluded


@pytest.mark.parametrize("value", ["false", "False", " FALSE ", "true", "TRUE"])
def test_a_valid_exclude_tag_is_no_problem(value: str) -> None:
    assert resolve_policy(DEFAULTS, {"rotator:exclude": value}, "alice").max_key_age == timedelta(days=90)


@pytest.mark.parametrize("value", ["yes", "no", "1", "0", "", "enabled", "truee", "t"])
def test_an_invalid_exclude_tag_is_that_users_problem(value: str) -> None:
    with pytest.raises(UserError) as caught:
        resolve_policy(DEFAULTS, {"Rotator:Exclude": value}, "alice")
    assert caught.value.user == "alice"
    assert str(caught.value) == f"alice: tag rotator:exclude={value!r}: must be true or false"


def test_the_exclude_tag_message_matches_the_contract() -> None:
    with pytest.raises(UserError, match=r"^bob: tag rotator:exclude='yes': must be true or false$"):
        resolve_policy(DEFAULTS, {"rotator:exclude": "yes"}, "bob")


@pytest.mark.parametrize(
    ("policy", "warned"),
    [
        ({"max_key_age": "90d", "grace_period": "7d", "retention": "7d"}, False),
        ({"max_key_age": "14d", "grace_period": "7d", "retention": "7d"}, True),  # equal: late by design
        ({"max_key_age": "1h", "grace_period": "2h", "retention": "1s"}, True),
    ],
)
def test_check_config_warns_when_keys_fall_due_before_their_predecessor_is_gone(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    policy: dict[str, str],
    warned: bool,
) -> None:
    """A grace period (plus retention) as long as max_key_age makes every rotation wait: check-config says so."""
    from rotator import cli  # noqa: PLC0415 - the CLI entry point, as an operator runs it

    monkeypatch.delenv("ROTATOR_CONFIG", raising=False)
    # Logging is configured by the CLI onto this test's captured stderr, which closes with the test.
    monkeypatch.setattr(cli, "configure_logs", lambda *_args, **_kwargs: None)
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"policy": policy}))

    assert cli.main(["--config", str(path), "check-config"]) == 0
    err = capsys.readouterr().err
    assert ("policy.grace_period + policy.retention" in err) is warned, err
    if warned:
        assert "policy.max_key_age" in err and err.count("\n") == 1
