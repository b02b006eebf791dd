"""Configuration and usage errors through the real command line: exit 2 and one line naming the key.

No AWS is needed: the environment points at a closed port, so a command that reached AWS before
validating its configuration would fail differently (exit 1, or a long retry).
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import FAST_CONFIG, AwsEnv, free_port, run_cli, write_config

from rotator import __version__


@pytest.fixture(scope="module")
def nowhere() -> AwsEnv:
    """AWS environment whose endpoint nobody listens on."""
    return AwsEnv(f"http://127.0.0.1:{free_port()}", secret_key="s3cr3t-not-to-be-printed")


def assert_one_line_error(result: Any, *needles: str, code: int = 2) -> str:
    assert result.returncode == code, (result.returncode, result.stdout, result.stderr)
    assert result.stdout == ""
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one line on stderr, got: {result.stderr!r}"
    [line] = lines
    assert line.startswith("rotator: error: "), line
    assert "Traceback" not in result.stderr
    for needle in needles:
        assert needle in line, f"{needle!r} not in {line!r}"
    return line


# (id, file content, extra environment, what the one line must name)
BAD_FILES: list[tuple[str, str, dict[str, str], tuple[str, ...]]] = [
    ("unknown-key", "policy:\n  max_key_agee: 1h\n", {}, ("policy.max_key_agee", "unknown key")),
    ("unknown-section", "polcy:\n  max_key_age: 1h\n", {}, ("polcy", "unknown key")),
    ("unknown-nested-key", "selection:\n  tag: {key: a, value: b, colour: red}\n", {}, ("selection.tag.colour",)),
    ("bad-duration", "policy:\n  grace_period: 7 days\n", {}, ("policy.grace_period", "invalid duration")),
    ("bad-duration-unit", "policy:\n  max_key_age: 90y\n", {}, ("policy.max_key_age", "invalid duration")),
    ("zero-duration", "aws:\n  validation_timeout: 0s\n", {}, ("aws.validation_timeout",)),
    ("bad-type-int", "aws:\n  max_attempts: many\n", {}, ("aws.max_attempts", "integer")),
    ("bad-type-bool", "safety:\n  dry_run: 'yes'\n", {}, ("safety.dry_run", "true or false")),
    ("bad-type-section", "policy: 5\n", {}, ("policy", "mapping")),
    ("bad-type-list-item", "selection:\n  exclude: [1]\n", {}, ("selection.exclude[0]", "string")),
    ("bad-choice", "policy:\n  disable_guard: maybe\n", {}, ("policy.disable_guard", "maybe")),
    ("bad-port", "metrics:\n  port: 70000\n", {}, ("metrics.port",)),
    ("interval-and-cron", "schedule:\n  interval: 1h\n  cron: '0 3 * * *'\n", {}, ("schedule", "exactly one")),
    ("bad-cron", "schedule:\n  cron: every day\n", {}, ("schedule.cron", "cron")),
    ("bad-yaml", "policy: [unclosed\n", {}, ("invalid YAML", "line 2")),
    ("bad-yaml-indent", "policy:\n  max_key_age: 1h\n retention: 1d\n", {}, ("invalid YAML", "line 3")),
    ("duplicate-key", "policy:\n  max_key_age: 1h\n  max_key_age: 2h\n", {}, ("max_key_age", "duplicate")),
    ("not-a-mapping", "- policy\n", {}, ("top level", "mapping")),
    (
        "bad-env-duration",
        "",
        {"ROTATOR_POLICY__MAX_KEY_AGE": "abc"},
        ("policy.max_key_age", "ROTATOR_POLICY__MAX_KEY_AGE", "invalid duration"),
    ),
    ("bad-env-key", "", {"ROTATOR_POLICY__NOPE": "1"}, ("ROTATOR_POLICY__NOPE", "policy.nope", "unknown key")),
    ("bad-env-section", "", {"ROTATOR_NOSUCH__KEY": "1"}, ("ROTATOR_NOSUCH__KEY", "unknown key")),
    ("bad-env-type", "", {"ROTATOR_METRICS__PORT": "http"}, ("metrics.port", "ROTATOR_METRICS__PORT")),
    ("bad-env-name", "", {"ROTATOR_POLICY___MAX_KEY_AGE": "1d"}, ("ROTATOR_POLICY___MAX_KEY_AGE",)),
    (
        "ambiguous-name-template",
        "secrets:\n  name_template: 'iam-keys/{path}-{user}'\n",
        {},
        ("secrets.name_template", "{path} shares the /-separated segment of {user}"),
    ),
    ("huge-validation-timeout", "aws:\n  validation_timeout: 9999999d\n", {}, ("aws.validation_timeout",)),
    ("long-validation-timeout", "aws:\n  validation_timeout: 2h\n", {}, ("aws.validation_timeout", "1h")),
    ("huge-interval", "schedule:\n  interval: 99999999d\n", {}, ("schedule.interval", "too large")),
    ("huge-max-hold", "policy:\n  max_hold: 1000000w\n", {}, ("policy.max_hold", "too large")),
    ("garbage-address", "metrics:\n  address: not an address!\n", {}, ("metrics.address",)),
    ("bad-ipv4-address", "metrics:\n  address: 999.1.1.1\n", {}, ("metrics.address", "999.1.1.1")),
]


@pytest.fixture(scope="module")
def bad_results(nowhere: AwsEnv, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """``check-config`` on every bad configuration, run side by side (each is one interpreter start)."""

    def run(case: tuple[str, str, dict[str, str], tuple[str, ...]]) -> Any:
        config = write_config(tmp_path_factory.mktemp(case[0]), case[1])
        return run_cli(["check-config"], nowhere, config, env=case[2], timeout=30)

    with ThreadPoolExecutor(4) as pool:
        return dict(zip([c[0] for c in BAD_FILES], pool.map(run, BAD_FILES), strict=True))


@pytest.mark.parametrize(("case", "needles"), [(c[0], c[3]) for c in BAD_FILES], ids=[c[0] for c in BAD_FILES])
def test_bad_configuration_exits_2_with_one_line_naming_the_key(
    bad_results: dict[str, Any], case: str, needles: tuple[str, ...]
) -> None:
    assert_one_line_error(bad_results[case], *needles)


def test_every_command_validates_configuration_before_touching_aws(tmp_path: Path, nowhere: AwsEnv) -> None:
    config = write_config(tmp_path, "policy:\n  max_key_age: soon\n")
    commands = [["plan", "--json"], ["inventory"], ["sweep"], ["rotate", "someone"], ["run"]]
    with ThreadPoolExecutor(len(commands)) as pool:
        results = list(pool.map(lambda c: run_cli(c, nowhere, config, timeout=30), commands))
    for result in results:
        assert_one_line_error(result, "policy.max_key_age")


def test_missing_configuration_files(tmp_path: Path, nowhere: AwsEnv) -> None:
    missing = tmp_path / "nope.yaml"
    cases = [
        (["--config", str(missing), "check-config"], {}),  # explicit --config
        (["check-config"], {"ROTATOR_CONFIG": str(missing)}),  # explicit $ROTATOR_CONFIG
        (["--config", str(tmp_path), "check-config"], {}),  # a directory
    ]
    with ThreadPoolExecutor(len(cases)) as pool:
        results = list(pool.map(lambda c: run_cli(c[0], nowhere, env=c[1], timeout=30), cases))
    assert_one_line_error(results[0], str(missing), "not found")
    assert_one_line_error(results[1], str(missing), "not found")
    assert_one_line_error(results[2], str(tmp_path), "directory")


def test_check_config_prints_the_effective_configuration(tmp_path: Path, nowhere: AwsEnv) -> None:
    config = write_config(
        tmp_path,
        "policy:\n  max_key_age: 30d\n  disable_guard: WARN\n"
        "selection:\n  path_prefix: /svc/\n  exclude: [break-glass-*]\n"
        "secrets:\n  tags: {team: platform}\n",
    )
    env = {"ROTATOR_POLICY__GRACE_PERIOD": "3d", "ROTATOR_SAFETY__DRY_RUN": "true"}
    result = run_cli(["check-config"], nowhere, config, env=env, timeout=30)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    effective = yaml.safe_load(result.stdout)
    assert set(effective) >= {
        "schedule",
        "policy",
        "selection",
        "secrets",
        "metrics",
        "logging",
        "safety",
        "aws",
        "coordination",
        "accounts",
        "organization",
    }
    assert effective["policy"] == {
        "max_key_age": "30d",  # from the file
        "grace_period": "3d",  # from the environment
        "retention": "7d",  # default
        "disable_guard": "warn",  # normalised
        "quiet_period": "4h",
        "max_hold": "2w",  # durations are printed in their shortest exact spelling
    }
    assert effective["selection"] == {
        "path_prefix": "/svc/",
        "tag": {"key": "rotator", "value": "enabled"},
        "exclude": ["break-glass-*"],
    }
    assert effective["secrets"]["tags"] == {"team": "platform"}
    assert effective["secrets"]["name_template"] == "iam-keys/{user}"
    assert effective["safety"]["dry_run"] is True
    assert effective["aws"]["max_attempts"] == 8
    assert effective["schedule"]["interval"] == "1h"
    assert nowhere.secret_key not in result.stdout  # credentials come from boto3's chain, never printed

    # The printed configuration is itself a valid configuration with the same meaning.
    again = tmp_path / "effective.yaml"
    again.write_text(result.stdout)
    second = run_cli(["check-config"], nowhere, again, timeout=30)
    assert second.returncode == 0, second.stderr
    assert yaml.safe_load(second.stdout) == effective


def test_rotator_variables_that_are_not_overrides_are_ignored(tmp_path: Path, nowhere: AwsEnv) -> None:
    config = write_config(tmp_path, "")
    env = {"ROTATOR_FOO": "1", "ROTATOR_HOME": "/opt/rotator", "ROTATOR_SAFETY__DRY_RUN": "true"}
    result = run_cli(["check-config"], nowhere, config, env=env, timeout=30)
    assert result.returncode == 0, result.stderr
    assert yaml.safe_load(result.stdout)["safety"]["dry_run"] is True  # ROTATOR_<SECTION>__<KEY> still applies


@pytest.mark.parametrize(
    "user",
    ["", "has space", "a/b", "tab\there", "caf\u00e9", "x" * 65, "semi;colon"],
    ids=["empty", "space", "slash", "tab", "non-ascii", "too-long", "semicolon"],
)
def test_rotate_refuses_a_user_name_iam_cannot_have_before_any_aws_call(nowhere: AwsEnv, user: str) -> None:
    # The endpoint is closed: an AWS call would fail with exit 1, not a usage error.
    result = run_cli(["rotate", "ok-user", user], nowhere, timeout=30)
    assert_one_line_error(result, "USER", "not an IAM user name")


def test_version_and_usage_errors(nowhere: AwsEnv, tmp_path: Path) -> None:
    broken = write_config(tmp_path, "policy: [unclosed\n")
    cases: list[tuple[list[str], dict[str, str]]] = [
        (["--version"], {"ROTATOR_CONFIG": str(broken)}),  # needs no configuration at all
        (["frobnicate"], {}),
        ([], {}),
        (["plan", "--frobnicate"], {}),
        (["--log-level", "loud", "check-config"], {}),
        (["--log-format", "xml", "check-config"], {}),
        (["rotate"], {}),  # USER... is required
    ]
    with ThreadPoolExecutor(len(cases)) as pool:
        results = list(pool.map(lambda c: run_cli(c[0], nowhere, env=c[1], timeout=30), cases))
    version = results[0]
    assert version.returncode == 0, version.stderr
    assert version.stdout.strip() == f"rotator {__version__}"
    assert_one_line_error(results[1], "frobnicate")
    assert_one_line_error(results[2], "COMMAND")
    assert_one_line_error(results[3], "--frobnicate")
    assert_one_line_error(results[4], "--log-level", "loud")
    assert_one_line_error(results[5], "--log-format", "xml")
    assert_one_line_error(results[6], "USER")


def test_an_invalid_exclude_tag_is_that_users_problem(aws: AwsEnv, tmp_path: Path) -> None:
    """``rotator:exclude=yes`` neither excludes nor rotates: the user is reported and left alone."""
    config = write_config(tmp_path, FAST_CONFIG)
    [typo_key] = aws.user("typo", keys=1, tags={"rotator:exclude": "yes"})
    aws.user("opted-out", keys=1, tags={"rotator:exclude": " True "})
    aws.user("opted-in", keys=1, tags={"rotator:exclude": "FALSE"})

    plan = run_cli(["plan", "--json"], aws, config)
    assert plan.returncode == 0, plan.stderr
    steps = {(s["user"], s["action"]): s for s in json.loads(plan.stdout)}
    assert set(steps) == {("typo", "skip"), ("opted-in", "rotate")}
    assert steps["typo", "skip"]["reason"] == "tag rotator:exclude='yes': must be true or false"

    sweep = run_cli(["sweep"], aws, config)
    assert sweep.returncode == 1, (sweep.stdout, sweep.stderr)
    assert "typo" in sweep.stderr and "rotator:exclude" in sweep.stderr
    assert aws.keys("typo") == {typo_key: "Active"}  # untouched
    assert aws.stages("opted-in")  # the other users proceed
