"""``rotator credential-process`` against a moto server: the output SDKs accept, its errors, its start-up.

The command prints a secret's ``AWSCURRENT`` as ``credential_process`` JSON with an ``Expiration``. Proven here:
it serves the key a sweep (or a forced rotation) published, through every way of starting it; botocore takes it
from a real ``credential_process`` profile and signs with it; each error is one line and an exit code, never the
secret; and it loads none of the daemon's libraries.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.exceptions import CredentialRetrievalError
from conftest import (
    FAST_CONFIG,
    ROOT,
    AwsEnv,
    StartSignedMoto,
    assert_no_secrets,
    free_port,
    run_cli,
    user_with_policy,
    write_config,
)
from helpers import REGION

from rotator.credential_process import CHAIN_ENV

CONSOLE_SCRIPT = Path(sys.executable).parent / "rotator"
SECRET_KEY = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
DOCUMENT = {
    "Version": 1,
    "AccessKeyId": "AKIAIOSFODNN7EXAMPLE",
    "SecretAccessKey": SECRET_KEY,
    "UserName": "app",
    "CreateDate": "2024-05-01T03:00:12+00:00",
}

Run = Callable[..., subprocess.CompletedProcess[str]]


def via_cli(aws: AwsEnv, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``python -m rotator.cli credential-process ARGS`` (through the tests' call recorder)."""
    return run_cli(["credential-process", *args], aws, env=env or {}, timeout=60)


def via_module(aws: AwsEnv, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``python -m rotator credential-process ARGS``: what the console script runs."""
    argv = [sys.executable, "-m", "rotator", "credential-process", *args]
    return subprocess.run(argv, capture_output=True, text=True, env={**aws.env, **(env or {})}, timeout=60, check=False)


def via_console_script(aws: AwsEnv, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """The installed ``rotator`` console script."""
    if not CONSOLE_SCRIPT.exists():
        pytest.skip(f"no console script at {CONSOLE_SCRIPT} (package not installed into this interpreter)")
    argv = [str(CONSOLE_SCRIPT), "credential-process", *args]
    return subprocess.run(argv, capture_output=True, text=True, env={**aws.env, **(env or {})}, timeout=60, check=False)


def expiration(printed: dict[str, Any]) -> datetime:
    text = printed["Expiration"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", text), text
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)


def printed_document(result: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert result.stdout.count("\n") == 1 and result.stdout.endswith("\n")
    document: dict[str, Any] = json.loads(result.stdout)
    return document


def seed(aws: AwsEnv, name: str = "iam-keys/app", value: str | None = None) -> None:
    aws.sm.create_secret(Name=name, SecretString=json.dumps(DOCUMENT) if value is None else value)
    aws.created_secrets.append(SECRET_KEY)


# -- the key it serves ---------------------------------------------------------------------------------


@pytest.mark.parametrize("run", [via_cli, via_module, via_console_script], ids=["cli", "module", "console-script"])
def test_prints_the_key_a_rotation_published(aws: AwsEnv, tmp_path: Path, run: Run) -> None:
    aws.user("app")
    config = write_config(tmp_path, FAST_CONFIG)
    outputs: list[str] = []
    for step in (["sweep"], ["rotate", "app", "--revoke"]):  # bootstrap, then a second rotation
        done = run_cli(step, aws, config)
        outputs += [done.stdout, done.stderr]
        assert done.returncode == 0, done.stderr
    current, previous = aws.secret("app"), aws.secret("app", "AWSPREVIOUS")
    assert current["AccessKeyId"] != previous["AccessKeyId"]

    before = datetime.now(UTC).replace(microsecond=0)
    result = run(aws, "--secret-id", "iam-keys/app")
    after = datetime.now(UTC)
    printed = printed_document(result)
    assert list(printed) == ["Version", "AccessKeyId", "SecretAccessKey", "Expiration"]
    assert printed["Version"] == 1
    assert (printed["AccessKeyId"], printed["SecretAccessKey"]) == (current["AccessKeyId"], current["SecretAccessKey"])
    assert before + timedelta(minutes=30) <= expiration(printed) <= after + timedelta(minutes=30)  # the default
    assert aws.caller_arn(printed["AccessKeyId"], printed["SecretAccessKey"]).endswith(":user/svc/app")
    assert_no_secrets([*outputs, result.stderr], aws.created_secrets)


def test_refresh_sets_the_expiration(aws: AwsEnv) -> None:
    seed(aws)
    before = datetime.now(UTC).replace(microsecond=0)
    printed = printed_document(via_module(aws, "--secret-id", "iam-keys/app", "--refresh", "2h"))
    assert before + timedelta(hours=2) <= expiration(printed) <= datetime.now(UTC) + timedelta(hours=2)


def test_only_awscurrent_is_served(aws: AwsEnv) -> None:
    """A newer version that is still AWSPENDING (a rotation in flight) is not the key to use yet."""
    seed(aws)
    pending = {**DOCUMENT, "AccessKeyId": "AKIAPENDINGEXAMPLE00", "SecretAccessKey": "pending-" + SECRET_KEY}
    aws.sm.put_secret_value(SecretId="iam-keys/app", SecretString=json.dumps(pending), VersionStages=["AWSPENDING"])
    printed = printed_document(via_module(aws, "--secret-id", "iam-keys/app"))
    assert printed["AccessKeyId"] == DOCUMENT["AccessKeyId"]


def test_the_arn_works_as_secret_id_and_names_the_region(aws: AwsEnv) -> None:
    seed(aws)
    arn = aws.sm.describe_secret(SecretId="iam-keys/app")["ARN"]
    env = {"AWS_REGION": "", "AWS_DEFAULT_REGION": ""}  # nothing but the ARN says us-east-1
    printed = printed_document(via_module(aws, "--secret-id", arn, env=env))
    assert printed["AccessKeyId"] == DOCUMENT["AccessKeyId"]


def test_no_configuration_is_read(aws: AwsEnv, tmp_path: Path) -> None:
    """Neither --config nor a broken ROTATOR_* environment matters: the command reads no configuration."""
    seed(aws)
    broken = write_config(tmp_path, "policy: [unclosed\n")
    result = run_cli(
        ["credential-process", "--secret-id", "iam-keys/app"],
        aws,
        broken,
        env={"ROTATOR_POLICY__MAX_KEY_AGE": "abc", "ROTATOR_CONFIG": "/nonexistent.yaml"},
    )
    assert printed_document(result)["AccessKeyId"] == DOCUMENT["AccessKeyId"]
    abbreviated = run_cli(["--conf", str(broken), "credential-process", "--secret-id", "iam-keys/app"], aws)
    assert printed_document(abbreviated)["AccessKeyId"] == DOCUMENT["AccessKeyId"]  # the full parser's dispatch


# -- SDKs take it ----------------------------------------------------------------------------------------


def sdk_environment(monkeypatch: pytest.MonkeyPatch, aws: AwsEnv, tmp_path: Path, config: str) -> None:
    """This process's environment, which an SDK hands on to its credential process: moto, and ``config``."""
    for name in list(os.environ):
        if name.startswith(("AWS_", "ROTATOR_")) or name == CHAIN_ENV:
            monkeypatch.delenv(name)
    path = tmp_path / "aws-config"
    path.write_text(config)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(path))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials-file"))
    monkeypatch.setenv("AWS_ENDPOINT_URL", aws.url)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


def reader_profile() -> str:
    return f"[profile reader]\naws_access_key_id = testing\naws_secret_access_key = testing\nregion = {REGION}\n"


def app_profile(command: str) -> str:
    return f"[profile app]\ncredential_process = {command}\nregion = {REGION}\n"


def test_a_botocore_credential_process_profile_signs_with_the_current_key(
    aws: AwsEnv, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    aws.user("app")
    done = run_cli(["sweep"], aws, write_config(tmp_path, FAST_CONFIG))
    assert done.returncode == 0, done.stderr
    current = aws.secret("app")
    command = f"{sys.executable} -m rotator credential-process --secret-id iam-keys/app --profile reader"
    sdk_environment(monkeypatch, aws, tmp_path, app_profile(command) + reader_profile())

    session = boto3.Session(profile_name="app")
    identity = session.client("sts").get_caller_identity()
    assert identity["Arn"].endswith(":user/svc/app")
    credentials = session.get_credentials()
    assert credentials is not None and credentials.method == "custom-process"
    assert credentials.get_frozen_credentials().access_key == current["AccessKeyId"]


def counting_profile(tmp_path: Path, refresh: str) -> tuple[str, Path]:
    """A profile whose credential process counts its runs in a file, then is ``rotator credential-process``."""
    count = tmp_path / f"runs-{refresh}"
    wrapper = tmp_path / f"counting-{refresh}.py"
    wrapper.write_text(
        "import os, sys\n"
        f"with open({str(count)!r}, 'a') as runs:\n"
        "    runs.write('run\\n')\n"
        "os.execv(sys.executable, [sys.executable, '-m', 'rotator', 'credential-process', *sys.argv[1:]])\n"
    )
    command = f"{sys.executable} {wrapper} --secret-id iam-keys/app --profile reader --refresh {refresh}"
    return app_profile(command) + reader_profile(), count


@pytest.mark.parametrize(("refresh", "runs"), [("30m", 1), ("15m", 4)], ids=["default", "within-botocore-window"])
def test_botocore_reruns_the_process_from_15_minutes_before_expiration(
    aws: AwsEnv, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, refresh: str, runs: int
) -> None:
    """Why the default refresh is 30m: with 15m or less botocore would run the command for every call."""
    seed(aws)
    config, count = counting_profile(tmp_path, refresh)
    sdk_environment(monkeypatch, aws, tmp_path, config)
    sts = boto3.Session(profile_name="app").client("sts")
    for _ in range(3):
        sts.get_caller_identity()
    assert len(count.read_text().splitlines()) == runs


def test_a_profile_that_reads_with_itself_fails_at_once_instead_of_forking_forever(
    aws: AwsEnv, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """AWS_PROFILE=app is inherited by the credential process: without --profile it would call itself."""
    seed(aws)
    command = f"{sys.executable} -m rotator credential-process --secret-id iam-keys/app"
    sdk_environment(monkeypatch, aws, tmp_path, app_profile(command) + reader_profile())
    monkeypatch.setenv("AWS_PROFILE", "app")
    started = time.monotonic()
    with pytest.raises(CredentialRetrievalError) as raised:
        boto3.Session().client("sts").get_caller_identity()
    assert time.monotonic() - started < 30
    assert "credential-process for iam-keys/app called itself" in str(raised.value)
    assert "--profile" in str(raised.value)

    # The fix the message names: the reader's own profile.
    monkeypatch.setenv("AWS_CONFIG_FILE", os.environ["AWS_CONFIG_FILE"] + ".fixed")
    Path(os.environ["AWS_CONFIG_FILE"]).write_text(app_profile(command + " --profile reader") + reader_profile())
    assert boto3.Session().client("sts").get_caller_identity()["Arn"]


# -- errors -------------------------------------------------------------------------------------------------


def assert_one_error_line(result: subprocess.CompletedProcess[str], code: int, *needles: str) -> str:
    assert result.returncode == code, (result.returncode, result.stdout, result.stderr)
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert lines[0].startswith(("rotator: error: ", "rotator: AWS error: ")), lines[0]
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


def without(field: str) -> str:
    return json.dumps({k: v for k, v in DOCUMENT.items() if k != field})


# (id, the secret iam-keys/app as SecretString, or None for none at all / "no-current"; what the line names)
SECRET_PROBLEMS: list[tuple[str, str | None, tuple[str, ...]]] = [
    ("missing-secret", None, ("rotator: AWS error: ", "ResourceNotFoundException", "iam-keys/app in us-east-1")),
    ("no-awscurrent", "no-current", ("ResourceNotFoundException", "no AWSCURRENT version")),
    ("no-access-key-id", without("AccessKeyId"), ("rotator: error: ", "(no AccessKeyId)")),
    ("no-secret-access-key", without("SecretAccessKey"), ("(no SecretAccessKey)",)),
    ("not-json", "AccessKeyId=AKIA " + SECRET_KEY, ("(not JSON)",)),
    ("other-version", json.dumps({**DOCUMENT, "Version": 2}), ("(Version is 2, not 1)",)),
]


@pytest.mark.parametrize(("secret", "needles"), [p[1:] for p in SECRET_PROBLEMS], ids=[p[0] for p in SECRET_PROBLEMS])
def test_secret_problems_exit_1_with_one_line(aws: AwsEnv, secret: str | None, needles: tuple[str, ...]) -> None:
    if secret == "no-current":
        seed(aws)
        versions = aws.sm.describe_secret(SecretId="iam-keys/app")["VersionIdsToStages"]
        current = next(v for v, stages in versions.items() if "AWSCURRENT" in stages)
        aws.sm.update_secret_version_stage(
            SecretId="iam-keys/app", VersionStage="AWSCURRENT", RemoveFromVersionId=current
        )
    elif secret is not None:
        seed(aws, value=secret)
    result = via_cli(aws, "--secret-id", "iam-keys/app")
    assert_one_error_line(result, 1, *needles)
    assert_no_secrets([result.stdout, result.stderr], [SECRET_KEY])


def test_a_binary_secret_exits_1(aws: AwsEnv) -> None:
    aws.sm.create_secret(Name="iam-keys/app", SecretBinary=b"\x00" + SECRET_KEY.encode())
    assert_one_error_line(via_module(aws, "--secret-id", "iam-keys/app"), 1, "holds a binary value")


def test_an_unreachable_endpoint_exits_1_within_seconds(aws: AwsEnv) -> None:
    nowhere = AwsEnv(f"http://127.0.0.1:{free_port()}")
    started = time.monotonic()
    result = via_module(nowhere, "--secret-id", "iam-keys/app")
    assert_one_error_line(result, 1, "rotator: AWS error: ", "endpoint unreachable")
    assert time.monotonic() - started < 20


# (id, arguments, extra environment, what the line names)
USAGE_PROBLEMS: list[tuple[str, list[str], dict[str, str], tuple[str, ...]]] = [
    ("no-secret-id", [], {}, ("--secret-id",)),
    ("bad-secret-id", ["--secret-id", "iam-keys/app; rm -rf /"], {}, ("is not a secret name or ARN",)),
    ("bad-refresh", ["--secret-id", "s", "--refresh", "soon"], {}, ("--refresh", "invalid duration")),
    ("refresh-too-long", ["--secret-id", "s", "--refresh", "1d"], {}, ("--refresh", "out of range (1m to 12h)")),
    ("refresh-too-short", ["--secret-id", "s", "--refresh", "10s"], {}, ("out of range",)),
    ("bad-region", ["--secret-id", "s", "--region", "mars"], {}, ("--region", "not an AWS region")),
    ("unknown-option", ["--secret-id", "s", "--json"], {}, ("unrecognized arguments: --json",)),
    ("no-region", ["--secret-id", "s"], {"AWS_REGION": "", "AWS_DEFAULT_REGION": ""}, ("no AWS region",)),
    ("unknown-profile", ["--secret-id", "s", "--profile", "nosuch"], {}, ("nosuch", "could not be found")),
]


@pytest.mark.parametrize(
    ("args", "env", "needles"), [p[1:] for p in USAGE_PROBLEMS], ids=[p[0] for p in USAGE_PROBLEMS]
)
def test_usage_problems_exit_2_with_one_line(
    aws: AwsEnv, args: list[str], env: dict[str, str], needles: tuple[str, ...]
) -> None:
    for run in (via_cli, via_module):
        assert_one_error_line(run(aws, *args, env={"AWS_CONFIG_FILE": "/nonexistent", **env}), 2, *needles)


def test_access_denied_exits_1_and_the_consumer_policy_is_enough(signed_moto: StartSignedMoto) -> None:
    """The consumer policy of docs/consumers.md reads the secret; an identity without it is refused."""
    setup = signed_moto(9)  # 1 secret + 4 per user, unsigned
    seed(setup)
    policy = consumer_policy()
    for statement in policy["Statement"]:
        statement["Resource"] = "*"  # moto authorizes Secrets Manager against "*" only (see test_iam_least_privilege)
    reader, _ = user_with_policy(setup, "app-reader", json.dumps(policy))
    other = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "sts:*", "Resource": "*"}]}
    stranger, _ = user_with_policy(setup, "stranger", json.dumps(other))

    printed = printed_document(via_module(reader, "--secret-id", "iam-keys/app"))
    assert printed["AccessKeyId"] == DOCUMENT["AccessKeyId"]
    result = via_module(stranger, "--secret-id", "iam-keys/app")
    assert_one_error_line(result, 1, "rotator: AWS error: ", "AccessDenied")
    assert_no_secrets([result.stdout, result.stderr], [SECRET_KEY, *reader.created_secrets, *stranger.created_secrets])


def consumer_policy() -> dict[str, Any]:
    """The consumer's least-privilege policy, as docs/consumers.md gives it."""
    text = (ROOT / "docs" / "consumers.md").read_text()
    for block in re.findall(r"```json\n(.*?)```", text, re.S):
        document = json.loads(block)
        if not isinstance(document, dict) or "Statement" not in document:
            continue
        actions = set()
        for statement in document["Statement"]:
            action = statement["Action"]
            actions.update([action] if isinstance(action, str) else action)
        if "secretsmanager:GetSecretValue" in actions:
            assert actions == {"secretsmanager:GetSecretValue", "kms:Decrypt"}, actions
            return dict(document)
    raise AssertionError("docs/consumers.md has no consumer policy")


# -- start-up ---------------------------------------------------------------------------------------------

HEAVY = ("pydantic", "structlog", "prometheus_client", "apscheduler", "yaml", "boto3", "s3transfer", "rotator.cli")


def test_the_module_imports_none_of_the_daemons_libraries() -> None:
    check = f"import rotator.credential_process, sys; print(sorted(set({HEAVY!r}) & set(sys.modules)))"
    imported = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, check=True, cwd=ROOT)
    assert imported.stdout.strip() == "[]"


def test_a_whole_run_loads_only_botocore_and_the_reader(aws: AwsEnv) -> None:
    seed(aws)
    check = (
        "import contextlib, io, json, sys, rotator.__main__ as entry\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        "    code = entry.main(['credential-process', '--secret-id', 'iam-keys/app'])\n"
        "print(json.dumps({'code': code, 'modules': sorted(sys.modules)}))\n"
    )
    done = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, env=aws.env, check=True)
    report = json.loads(done.stdout)
    assert report["code"] == 0, done.stderr
    modules = set(report["modules"])
    assert modules & set(HEAVY) == set()
    assert {m for m in modules if m.startswith("rotator.")} == {
        "rotator.__main__",
        "rotator.credential_process",
        "rotator.durations",
        "rotator.errors",
        "rotator.aws",
        "rotator.aws.current_secret",
        "rotator.aws.errors",  # the one error map, shared with the transport (botocore only)
    }


def test_the_command_is_listed_in_the_help(aws: AwsEnv) -> None:
    listed = run_cli(["--help"], aws)
    assert listed.returncode == 0 and "credential-process" in listed.stdout
    own = via_module(aws, "--help")
    assert own.returncode == 0 and "--secret-id" in own.stdout and "--refresh" in own.stdout
