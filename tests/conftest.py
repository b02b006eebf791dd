"""Shared fixtures: a moto server subprocess over HTTP, reset between tests, and AWS helpers."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import pytest

ROOT = Path(__file__).resolve().parent.parent
REGION = "us-east-1"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class MotoServer:
    """A ``moto_server`` subprocess on 127.0.0.1; stopped by :meth:`stop`."""

    def __init__(self, extra_env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = dict(os.environ)
        env.update(extra_env or {})
        self.log = open(os.devnull, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=self.log,
            stderr=self.log,
            env=env,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"{self.url}/moto-api/data.json", timeout=1):
                    return
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError("moto_server did not start")

    def reset(self) -> None:
        request = urllib.request.Request(f"{self.url}/moto-api/reset", method="POST")
        with urllib.request.urlopen(request, timeout=10):
            pass

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


@dataclass
class AwsEnv:
    """Clients and environment pointing at one moto server, with seeding helpers."""

    url: str
    access_key: str = "testing"
    secret_key: str = "testing"
    created_secrets: list[str] = field(default_factory=list)

    @property
    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "ROTATOR_"))}
        env.update(
            {
                "AWS_ENDPOINT_URL": self.url,
                "AWS_REGION": REGION,
                "AWS_DEFAULT_REGION": REGION,
                "AWS_ACCESS_KEY_ID": self.access_key,
                "AWS_SECRET_ACCESS_KEY": self.secret_key,
                "AWS_EC2_METADATA_DISABLED": "true",
                "NO_PROXY": "127.0.0.1,localhost",
            }
        )
        return env

    def client(self, service: str) -> Any:
        return boto3.client(
            service,
            endpoint_url=self.url,
            region_name=REGION,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
        )

    @property
    def iam(self) -> Any:
        return self.client("iam")

    @property
    def sm(self) -> Any:
        return self.client("secretsmanager")

    def user(
        self, name: str, *, path: str = "/svc/", tags: dict[str, str] | None = None, keys: int = 1, managed: bool = True
    ) -> list[str]:
        """Create a user (tagged ``rotator=enabled`` when managed) with ``keys`` access keys."""
        all_tags = dict(tags or {})
        if managed:
            all_tags.setdefault("rotator", "enabled")
        self.iam.create_user(UserName=name, Path=path, Tags=[{"Key": k, "Value": v} for k, v in all_tags.items()])
        ids = []
        for _ in range(keys):
            key = self.iam.create_access_key(UserName=name)["AccessKey"]
            self.created_secrets.append(key["SecretAccessKey"])
            ids.append(key["AccessKeyId"])
        return ids

    def keys(self, user: str) -> dict[str, str]:
        """key id -> status."""
        meta = self.iam.list_access_keys(UserName=user)["AccessKeyMetadata"]
        return {k["AccessKeyId"]: k["Status"] for k in meta}

    def secret(self, user: str, stage: str = "AWSCURRENT") -> dict[str, Any]:
        value = self.sm.get_secret_value(SecretId=f"iam-keys/{user}", VersionStage=stage)
        document: dict[str, Any] = json.loads(value["SecretString"])
        self.created_secrets.append(document["SecretAccessKey"])
        return document

    def stages(self, user: str) -> dict[str, list[str]]:
        described = self.sm.describe_secret(SecretId=f"iam-keys/{user}")
        return {v: s for v, s in described.get("VersionIdsToStages", {}).items() if s}

    def snapshot(self) -> dict[str, Any]:
        """Full IAM + Secrets Manager state (for "nothing changed" assertions)."""
        iam, sm = self.iam, self.sm
        users = {}
        for user in iam.list_users()["Users"]:
            name = user["UserName"]
            users[name] = {
                "path": user["Path"],
                "tags": sorted((t["Key"], t["Value"]) for t in iam.list_user_tags(UserName=name)["Tags"]),
                "keys": sorted(
                    (k["AccessKeyId"], k["Status"]) for k in iam.list_access_keys(UserName=name)["AccessKeyMetadata"]
                ),
            }
        secrets = {}
        for secret in sm.list_secrets()["SecretList"]:
            versions = sm.list_secret_version_ids(SecretId=secret["Name"])["Versions"]
            secrets[secret["Name"]] = {
                "tags": sorted((t["Key"], t["Value"]) for t in secret.get("Tags", [])),
                "versions": sorted((v["VersionId"], tuple(sorted(v.get("VersionStages", [])))) for v in versions),
            }
        return {"users": users, "secrets": secrets}


@pytest.fixture(scope="session")
def moto_server() -> Iterator[MotoServer]:
    server = MotoServer()
    yield server
    server.stop()


@pytest.fixture
def aws(moto_server: MotoServer) -> AwsEnv:
    moto_server.reset()
    return AwsEnv(moto_server.url)


def write_config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "rotator.yaml"
    path.write_text(text)
    return path


FAST_CONFIG = """\
policy:
  max_key_age: 1h
  grace_period: 1h
  retention: 1h
  disable_guard: hold
  quiet_period: 1h
  max_hold: 1d
aws:
  validation_timeout: 10s
  max_calls_per_second: 1000
"""


def run_cli(
    args: list[str], aws: AwsEnv, config: Path | None = None, timeout: float = 120, **kwargs: Any
) -> subprocess.CompletedProcess[str]:
    """Run ``rotator`` as a subprocess against the moto server."""
    argv = cli_argv()  # `python -m rotator.cli`, through the call recorder (see the end of this file)
    if config is not None:
        argv += ["--config", str(config)]
    env = aws.env
    env.update(kwargs.pop("env", {}))
    return subprocess.run(argv + args, capture_output=True, text=True, env=env, timeout=timeout, cwd=ROOT, check=False)


def assert_no_secrets(texts: list[str], secrets: list[str]) -> None:
    """I7: no secret access key appears in any captured text."""
    for secret in secrets:
        for text in texts:
            assert secret not in text, "a secret access key leaked into output"


# --------------------------------------------------------------------------------------------------------------
# Recording the AWS operations the rotator sends (deploy/iam least privilege; tests/record_calls.py).
# run_cli starts the CLI through tests/record_calls.py, which behaves like `python -m rotator.cli` and, with
# $RECORD_AWS_CALLS_FILE set, appends every AWS call the process sends to that file. The whole session records
# into one file; at the end its operations are listed, and one that the IAM policy does not allow and its README
# does not name as an addition for an optional feature fails the run.
# tests/deploy/test_iam_least_privilege.py makes its own recordings, independent of which tests ran.

RECORD_CALLS = ROOT / "tests" / "record_calls.py"
IAM_POLICY = ROOT / "deploy" / "iam" / "rotator-policy.json"
IAM_README = ROOT / "deploy" / "iam" / "README.md"
_SESSION_CALLS = pytest.StashKey[tuple[set[str], set[str], set[str]]]()
_OWN_RECORD_DIR: list[Path] = []  # the session's temporary directory, removed at the end


def cli_argv() -> list[str]:
    """argv prefix that runs the rotator CLI like ``python -m rotator.cli``, recording its AWS calls."""
    return [sys.executable, str(RECORD_CALLS)]


def pytest_configure(config: pytest.Config) -> None:
    # xdist workers inherit the controller's variable, so every process appends to the same file.
    from record_calls import RECORD_ENV  # noqa: PLC0415 - tests/ is on sys.path once this conftest loads

    if not os.environ.get(RECORD_ENV):  # set by hand, the file is kept
        _OWN_RECORD_DIR.append(Path(tempfile.mkdtemp(prefix="rotator-calls-")))
        os.environ[RECORD_ENV] = str(_OWN_RECORD_DIR[0] / "calls.jsonl")


def pytest_sessionfinish(session: pytest.Session) -> None:
    from record_calls import RECORD_ENV, documented_actions, operations, policy_actions, read_calls  # noqa: PLC0415

    if hasattr(session.config, "workerinput"):
        return  # the controller reports for all workers
    seen = operations(read_calls(os.environ.get(RECORD_ENV, "")))
    outside = seen - policy_actions(json.loads(IAM_POLICY.read_text(encoding="utf-8")))
    undocumented = outside - documented_actions(IAM_README.read_text(encoding="utf-8"))
    session.config.stash[_SESSION_CALLS] = (seen, outside - undocumented, undocumented)
    for directory in _OWN_RECORD_DIR:
        shutil.rmtree(directory, ignore_errors=True)
    if undocumented:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    seen, optional, undocumented = config.stash.get(_SESSION_CALLS, (set(), set(), set()))
    if seen:
        terminalreporter.write_sep("-", f"AWS operations the rotator sent ({len(seen)})")
        terminalreporter.write_line(" ".join(sorted(seen)))
    if optional:
        terminalreporter.write_line(
            f"not in the policy, optional per {IAM_README.relative_to(ROOT)}: {' '.join(sorted(optional))}"
        )
    if undocumented:
        terminalreporter.write_line(
            f"NOT allowed by {IAM_POLICY.relative_to(ROOT)} nor named in {IAM_README.relative_to(ROOT)}: "
            + " ".join(sorted(undocumented)),
            red=True,
        )
