"""``rotator credential-process`` without AWS: the document it prints, its arguments, its routing.

The command against a moto server, through real SDK profiles, is in ``tests/integration/test_credential_process.py``.
"""

from __future__ import annotations

import argparse
import io
import json
import os
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

import rotator.aws
from rotator import credential_process
from rotator.cli import build_parser
from rotator.credential_process import (
    CHAIN_ENV,
    DEFAULT_REFRESH,
    command_args,
    credential_document,
    run,
)
from rotator.errors import AccessDeniedError, RotatorError

NOW = datetime(2024, 5, 1, 3, 0, 12, 345678, tzinfo=UTC)
SECRET_KEY = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
DOCUMENT = {
    "Version": 1,
    "AccessKeyId": "AKIAIOSFODNN7EXAMPLE",
    "SecretAccessKey": SECRET_KEY,
    "UserName": "app",
    "CreateDate": "2024-05-01T03:00:12+00:00",
}


def test_the_document_is_credential_process_output_expiring_after_the_refresh() -> None:
    printed = credential_document(json.dumps(DOCUMENT), secret_id="iam-keys/app", expires=NOW + timedelta(minutes=15))
    assert printed == {
        "Version": 1,
        "AccessKeyId": "AKIAIOSFODNN7EXAMPLE",
        "SecretAccessKey": SECRET_KEY,
        "Expiration": "2024-05-01T03:15:12Z",
    }


def test_an_expiration_in_another_zone_is_written_in_utc() -> None:
    expires = datetime(2024, 5, 1, 5, 0, tzinfo=UTC).astimezone(datetime.now().astimezone().tzinfo)
    printed = credential_document(json.dumps(DOCUMENT), secret_id="s", expires=expires)
    assert printed["Expiration"] == "2024-05-01T05:00:00Z"


def test_a_document_without_version_is_read_as_version_1() -> None:
    without = {k: v for k, v in DOCUMENT.items() if k != "Version"}
    assert credential_document(json.dumps(without), secret_id="s", expires=NOW)["Version"] == 1


@pytest.mark.parametrize(
    ("secret_string", "reason"),
    [
        ("not json " + SECRET_KEY, "(not JSON)"),
        (json.dumps([DOCUMENT]), "(not a JSON object)"),
        (json.dumps({**DOCUMENT, "Version": 2}), "(Version is 2, not 1)"),
        (json.dumps({**DOCUMENT, "Version": SECRET_KEY}), "(Version is an unsupported value, not 1)"),
        (json.dumps({k: v for k, v in DOCUMENT.items() if k != "AccessKeyId"}), "(no AccessKeyId)"),
        (json.dumps({**DOCUMENT, "AccessKeyId": ""}), "(no AccessKeyId)"),
        (json.dumps({**DOCUMENT, "AccessKeyId": SECRET_KEY}), "(AccessKeyId is not an access key id)"),
        (json.dumps({k: v for k, v in DOCUMENT.items() if k != "SecretAccessKey"}), "(no SecretAccessKey)"),
        (json.dumps({**DOCUMENT, "SecretAccessKey": 7}), "(no SecretAccessKey)"),
    ],
    ids=[
        "not-json",
        "array",
        "version-2",
        "version-text",
        "no-key-id",
        "empty-key-id",
        "bad-key-id",
        "no-secret",
        "int",
    ],
)
def test_what_is_not_a_rotator_document_is_refused_without_its_content(secret_string: str, reason: str) -> None:
    with pytest.raises(RotatorError) as raised:
        credential_document(secret_string, secret_id="iam-keys/app", expires=NOW)
    assert str(raised.value) == f"iam-keys/app: AWSCURRENT is not a rotator credential document {reason}"
    assert SECRET_KEY not in str(raised.value)
    assert raised.value.__context__ is None or raised.value.__suppress_context__  # no chained JSON error


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["credential-process", "--secret-id", "s"], ["--secret-id", "s"]),
        (["--config", "x.yaml", "credential-process", "--secret-id", "s"], ["--secret-id", "s"]),
        (["--log-level=debug", "--log-format", "json", "credential-process"], []),
        (["credential-process", "--help"], ["--help"]),
        (["plan", "credential-process"], None),
        (["--help", "credential-process"], None),
        (["--conf", "x.yaml", "credential-process"], None),  # abbreviated: the full parser dispatches it
        ([], None),
    ],
)
def test_the_command_is_recognised_before_the_full_parser(argv: list[str], expected: list[str] | None) -> None:
    assert command_args(argv) == expected


def parse(*argv: str) -> argparse.Namespace:
    return credential_process.build_parser().parse_args(list(argv))


def test_defaults_and_durations() -> None:
    args = parse("--secret-id", "arn:aws:secretsmanager:eu-west-1:111111111111:secret:iam-keys/app-AbCdEf")
    assert args.refresh == DEFAULT_REFRESH == timedelta(minutes=30)
    assert (args.region, args.profile) == (None, None)
    assert parse("--secret-id", "s", "--refresh", "12h").refresh == timedelta(hours=12)
    assert parse("--secret-id", "s", "--refresh", "1m").refresh == timedelta(minutes=1)


@pytest.mark.parametrize(
    ("argv", "named"),
    [
        ([], "the following arguments are required: --secret-id"),
        (["--secret-id", "iam keys/app"], "argument --secret-id: 'iam keys/app' is not a secret name or ARN"),
        (["--secret-id", ""], "argument --secret-id: '' is not a secret name or ARN"),
        (["--secret-id", "s", "--refresh", "15"], "argument --refresh: invalid duration '15'"),
        (["--secret-id", "s", "--refresh", "0m"], "must be positive"),
        (["--secret-id", "s", "--refresh", "30s"], "argument --refresh: '30s' is out of range (1m to 12h)"),
        (["--secret-id", "s", "--refresh", "13h"], "argument --refresh: '13h' is out of range (1m to 12h)"),
        (["--secret-id", "s", "--region", "Europe"], "argument --region: 'Europe' is not an AWS region"),
        (["--secret-id", "s", "--profile", ""], "argument --profile: '' is not a profile name"),
        (["--secret-id", "s", "--verbose"], "unrecognized arguments: --verbose"),
    ],
)
def test_usage_errors_are_one_line_and_exit_2(argv: list[str], named: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        credential_process.main(argv)
    assert exited.value.code == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.count("\n") == 1 and err.startswith("rotator: error: ") and named in err, err


def test_the_full_parser_has_the_same_options() -> None:
    args = build_parser().parse_args(
        ["credential-process", "--secret-id", "s", "--refresh", "2h", "--region", "eu-west-1"]
    )
    assert (args.command, args.secret_id, args.refresh, args.region) == (
        "credential-process",
        "s",
        timedelta(hours=2),
        "eu-west-1",
    )


class FakeReader:
    """A secret store of one secret; records each read."""

    def __init__(self, value: str | Exception) -> None:
        self.value = value
        self.reads: list[dict[str, Any]] = []

    def __call__(self, secret_id: str, *, region: str | None = None, profile: str | None = None) -> str:
        self.reads.append({"secret_id": secret_id, "region": region, "profile": profile})
        if isinstance(self.value, Exception):
            raise self.value
        return self.value


@pytest.fixture(autouse=True)
def no_chain(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(CHAIN_ENV, raising=False)


def run_with(reader: FakeReader, *argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = run(parse(*argv), clock=lambda: NOW, read=reader, out=out, err=err)
    return code, out.getvalue(), err.getvalue()


def test_run_prints_one_line_of_json() -> None:
    reader = FakeReader(json.dumps(DOCUMENT))
    code, out, err = run_with(reader, "--secret-id", "iam-keys/app", "--refresh", "1h", "--profile", "reader")
    assert (code, err) == (0, "")
    assert out.count("\n") == 1
    assert json.loads(out)["Expiration"] == "2024-05-01T04:00:12Z"
    assert reader.reads == [{"secret_id": "iam-keys/app", "region": None, "profile": "reader"}]


def test_an_arn_names_the_region_unless_given() -> None:
    arn = "arn:aws:secretsmanager:eu-west-1:111111111111:secret:iam-keys/app-AbCdEf"
    reader = FakeReader(json.dumps(DOCUMENT))
    run_with(reader, "--secret-id", arn)
    run_with(reader, "--secret-id", arn, "--region", "eu-central-1")
    assert [read["region"] for read in reader.reads] == ["eu-west-1", "eu-central-1"]


@pytest.mark.parametrize(
    ("error", "code", "line"),
    [
        (AccessDeniedError("secretsmanager:GetSecretValue s: AccessDeniedException"), 1, "rotator: AWS error: "),
        (RotatorError("s: AWSCURRENT holds a binary value"), 1, "rotator: error: "),
        (ValueError(SECRET_KEY), 1, "rotator: error: credential-process failed unexpectedly (ValueError)"),
    ],
)
def test_errors_are_one_line_without_the_secret(error: Exception, code: int, line: str) -> None:
    assert run_with(FakeReader(error), "--secret-id", "s")[:2] == (code, "")
    _, _, err = run_with(FakeReader(error), "--secret-id", "s")
    assert err.startswith(line) and err.count("\n") == 1 and SECRET_KEY not in err


def test_a_call_to_itself_for_the_same_secret_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(CHAIN_ENV, "iam-keys/reader iam-keys/app")
    reader = FakeReader(json.dumps(DOCUMENT))
    code, out, err = run_with(reader, "--secret-id", "iam-keys/app")
    assert (code, out, reader.reads) == (2, "", [])
    assert "credential-process for iam-keys/app called itself" in err and "--profile" in err


def test_a_read_marks_the_chain_for_the_processes_below(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[str] = []

    def reader(secret_id: str, *, region: str | None = None, profile: str | None = None) -> str:
        seen.append(os.environ[CHAIN_ENV])  # what a credential_process that botocore starts here inherits
        return json.dumps(DOCUMENT)

    monkeypatch.setenv(CHAIN_ENV, "iam-keys/reader")
    run(parse("--secret-id", "iam-keys/app"), clock=lambda: NOW, read=reader, out=io.StringIO(), err=io.StringIO())
    assert seen == ["iam-keys/reader iam-keys/app"]
    assert os.environ[CHAIN_ENV] == "iam-keys/reader"  # and this process's environment is as it was


def test_every_name_rotator_aws_exports_loads_on_first_use() -> None:
    # rotator.aws imports its modules lazily, so that credential-process loads only current_secret.
    for name in rotator.aws.__all__:
        assert getattr(rotator.aws, name) is not None, name
    assert set(rotator.aws.__all__) == set(rotator.aws._EXPORTS)
    with pytest.raises(AttributeError):
        _ = rotator.aws.NoSuchThing  # type: ignore[attr-defined]
