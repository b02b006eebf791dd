"""Shared fixtures: a moto server subprocess over HTTP, reset between tests, and AWS helpers.

The moto server itself is in ``helpers.py``, which does without pytest: the benchmarks start it too.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from helpers import MUTATING, REGION, MotoServer, aws_env, client, free_port  # noqa: F401 - tests import them from here
from hypothesis import settings as hypothesis_settings

from rotator.aws import Boundary

ROOT = Path(__file__).resolve().parent.parent

# CI replays the same examples every run (a red CI then means a change broke something, and it reproduces);
# a developer's run explores new ones each time.
hypothesis_settings.register_profile("ci", derandomize=True)
if os.environ.get("CI"):
    hypothesis_settings.load_profile("ci")


@dataclass
class AwsEnv:
    """Clients and environment pointing at one moto server, with seeding helpers."""

    url: str
    access_key: str = "testing"
    secret_key: str = "testing"
    created_secrets: list[str] = field(default_factory=list)

    @property
    def env(self) -> dict[str, str]:
        return aws_env(self.url, self.access_key, self.secret_key)

    def client(self, service: str) -> Any:
        return client(self.url, service, self.access_key, self.secret_key)

    def caller_arn(self, access_key: str, secret_key: str) -> str:
        """The ARN ``sts:GetCallerIdentity`` returns for a request signed with this key (moto records its last use)."""
        return str(client(self.url, "sts", access_key, secret_key).get_caller_identity()["Arn"])

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


def wait_until(deadline: float) -> None:
    """Sleep until ``deadline``, in seconds since the epoch (``time.time()``)."""
    time.sleep(max(0.0, deadline - time.time()))


@pytest.fixture
def moto_environ(aws: AwsEnv, monkeypatch: pytest.MonkeyPatch) -> None:
    """This process's AWS environment points at the moto server (for in-process App/Aws use)."""
    for name in list(os.environ):
        if name.startswith(("AWS_", "ROTATOR_")):
            monkeypatch.delenv(name)
    for name, value in aws.env.items():
        if name.startswith("AWS_"):
            monkeypatch.setenv(name, value)


# --------------------------------------------------------------------------------------------------------------
# A moto server that verifies request signatures (test_lifecycle, test_iam_least_privilege).
# With INITIAL_NO_AUTH_ACTION_COUNT moto checks every request's signature, and the caller's IAM policy actions,
# after the first few calls: the unsigned ones that set the account up.

StartSignedMoto = Callable[[int], AwsEnv]


@pytest.fixture
def signed_moto() -> Iterator[StartSignedMoto]:
    """``start(unsigned)``: a moto server checking signatures after ``unsigned`` calls; its unsigned ``AwsEnv``.

    One server per test: moto's count of unsigned calls is not reset by /moto-api/reset.
    """
    servers: list[MotoServer] = []

    def start(unsigned: int) -> AwsEnv:
        servers.append(MotoServer({"INITIAL_NO_AUTH_ACTION_COUNT": str(unsigned)}))
        return AwsEnv(servers[-1].url)

    yield start
    for server in servers:
        server.stop()


def record_mutating_calls(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The mutating AWS operations this process sends from now on, in order (a list the caller may clear)."""
    calls: list[str] = []
    original = Boundary.call

    def call(self: Boundary, service: str, operation: str, client: Any = None, **params: Any) -> Any:
        result = original(self, service, operation, client, **params)
        if operation in MUTATING:
            calls.append(operation)
        return result

    monkeypatch.setattr(Boundary, "call", call)
    return calls


def user_with_policy(setup: AwsEnv, name: str, document: str) -> tuple[AwsEnv, str]:
    """An IAM user ``name`` under /ops/ holding nothing but the managed policy ``document`` (4 calls).

    Returns the environment signing with the user's new access key, and the policy's ARN.
    """
    iam = setup.iam
    iam.create_user(UserName=name, Path="/ops/")
    arn = str(iam.create_policy(PolicyName=name, PolicyDocument=document)["Policy"]["Arn"])
    iam.attach_user_policy(UserName=name, PolicyArn=arn)
    key = iam.create_access_key(UserName=name)["AccessKey"]
    env = AwsEnv(setup.url, access_key=key["AccessKeyId"], secret_key=key["SecretAccessKey"])
    env.created_secrets.append(key["SecretAccessKey"])
    return env, arn


# --------------------------------------------------------------------------------------------------------------
# Rotator processes and their JSON logs (test_crash, test_concurrency, test_random_kill).

CRASHER = ROOT / "tests" / "crashing_rotator.py"


def parse_events(text: str) -> list[dict[str, Any]]:
    """The JSON objects among the lines of ``text`` (a rotator's stderr)."""
    events = []
    for line in text.splitlines():
        try:
            value = json.loads(line)
        except ValueError:
            continue
        if isinstance(value, dict):
            events.append(value)
    return events


@dataclass
class Proc:
    """A finished rotator process: its argv, exit code and output (the JSON log is on stderr)."""

    argv: list[str]
    returncode: int
    stdout: str
    stderr: str

    @property
    def events(self) -> list[dict[str, Any]]:
        return parse_events(self.stderr)

    def named(self, name: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e.get("event") == name]

    @property
    def operations(self) -> list[str]:
        """The mutating AWS calls of a ``K = 0`` crashing rotator run (it writes them at exit)."""
        found = self.named("crashing_rotator.mutating_calls")
        assert found, f"no call trace in the output of {self.argv}:\n{self.stderr[-3000:]}"
        return list(found[-1]["operations"])

    def describe(self) -> str:
        return f"{self.argv[2:]} -> {self.returncode}\nstdout:\n{self.stdout[-2000:]}\nstderr:\n{self.stderr[-4000:]}"


def crashing(k: int, args: list[str], aws: AwsEnv, config: Path, outputs: list[str] | None = None) -> Proc:
    """``tests/crashing_rotator.py K --config CONFIG ARGS``; K = 0 never crashes. Output is added to ``outputs``."""
    argv = [sys.executable, str(CRASHER), str(k), "--config", str(config), *args]
    done = subprocess.run(argv, capture_output=True, text=True, env=aws.env, timeout=180, cwd=ROOT, check=False)
    if outputs is not None:
        outputs += [done.stdout, done.stderr]
    return Proc(argv, done.returncode, done.stdout, done.stderr)


def policy_config(
    tmp_path: Path,
    name: str,
    *,
    max_key_age: str = "1h",
    grace_period: str = "1h",
    retention: str = "1h",
    validation_timeout: float,
) -> Path:
    """``NAME.yaml``: the given policy without the last-use guard (``disable_guard: ignore``), no rate limit."""
    path = tmp_path / f"{name}.yaml"
    path.write_text(
        "policy:\n"
        f"  max_key_age: {max_key_age}\n"
        f"  grace_period: {grace_period}\n"
        f"  retention: {retention}\n"
        "  disable_guard: ignore\n"
        "aws:\n"
        f"  validation_timeout: {int(validation_timeout)}s\n"
        "  max_calls_per_second: 1000\n"
        # moto's server drops connections when too many CreateSecret calls arrive at once (32, the default,
        # from each of two processes): the 50-user races keep 8 users in flight per process.
        "  concurrency: 8\n"
    )
    return path


# 50 users due at once (test_concurrency, test_random_kill): half bootstrap, half an ordinary rotation.
BOOTSTRAP_USERS = [f"boot-{n:02d}" for n in range(25)]
ROTATION_USERS = [f"rot-{n:02d}" for n in range(25)]
DUE_USERS = BOOTSTRAP_USERS + ROTATION_USERS


@pytest.fixture
def due_users(aws: AwsEnv, tmp_path: Path) -> dict[str, str]:
    """DUE_USERS, due for rotation under ``max_key_age: 1s``; returns user -> the key that is due.

    A bootstrap user has one key and no secret; a rotation user a secret whose only key is older than 1 s.
    """
    for user in ROTATION_USERS:
        aws.user(user, keys=0)
    setup = run_cli(["sweep"], aws, policy_config(tmp_path, "setup", validation_timeout=30))  # first key and secret
    assert setup.returncode == 0, setup.stderr[-3000:]
    due = {user: next(iter(aws.keys(user))) for user in ROTATION_USERS}
    for user in BOOTSTRAP_USERS:
        (due[user],) = aws.user(user, keys=1)
    time.sleep(1.1)  # every key is now older than max_key_age (1 s)
    return due


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


# --------------------------------------------------------------------------------------------------------------
# A fault-injecting HTTP proxy in front of the moto server (tests/faultproxy.py).

from faultproxy import FaultProxy  # noqa: E402 - appended section; tests import it from here or from faultproxy


@pytest.fixture
def fault_proxy(aws: AwsEnv) -> Iterator[FaultProxy]:
    """A :class:`faultproxy.FaultProxy` in front of the test's moto server; the test fails if the proxy erred."""
    proxy = FaultProxy(aws.url).start()
    yield proxy
    proxy.stop()
    if proxy.errors:
        pytest.fail(f"the fault proxy had errors: {proxy.errors!r}")


@pytest.fixture
def proxied_aws(fault_proxy: FaultProxy) -> AwsEnv:
    """An ``AwsEnv`` whose clients and environment (``AWS_ENDPOINT_URL``) go through ``fault_proxy``."""
    return AwsEnv(fault_proxy.url)


def through_proxy(moto_server: MotoServer) -> Iterator[AwsEnv]:
    """Body of a module's own ``aws`` fixture: the reset moto server, reached only through a fault proxy.

    For tests whose processes may crash between CreateAccessKey and its ownership record: only CloudTrail's
    ``CreateAccessKey`` event (which moto lacks; the proxy serves it) proves such a key the rotator's own.
    The proxy also checks the SigV4 signature of every request signed by a key created through it, so
    "AWSCURRENT signs" proves the stored secret is the key's own (moto alone takes any secret).
    """
    moto_server.reset()
    proxy = FaultProxy(moto_server.url, verify_signatures=True).start()
    yield AwsEnv(proxy.url)
    proxy.stop()
    assert not proxy.errors, proxy.errors
