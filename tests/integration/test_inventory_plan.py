"""Inventory and plan against a real ``moto_server`` over HTTP (the read-only half of the rotator).

The CLI runs as a subprocess (``run_cli``) for everything an operator sees: selection, ``plan --json``,
``inventory --json`` and exit codes. Finer checks (which AWS calls a plan makes, injected throttling)
run :class:`rotator.app.App` in-process with a fresh Prometheus registry; the AWS endpoint then comes
from the environment, exactly as in production.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from botocore.awsrequest import AWSResponse
from conftest import FAST_CONFIG, AwsEnv, MotoServer, free_port, run_cli, write_config
from faultproxy import FaultProxy
from prometheus_client import CollectorRegistry

from rotator.app import App
from rotator.aws import Aws
from rotator.config import load_settings
from rotator.errors import AccessDeniedError, AwsError, ThrottledError
from rotator.model import Action as RotateAction
from rotator.model import KeyStatus

CONFIG = (
    FAST_CONFIG + 'selection: {path_prefix: /svc/, tag: {key: rotator, value: enabled}, exclude: ["break-glass-*"]}\n'
)

Action = tuple[str, str, str | None]


# -- helpers -----------------------------------------------------------------------------------------


def plan_json(aws: AwsEnv, config: Path, **kwargs: Any) -> list[dict[str, Any]]:
    result = run_cli(["plan", "--json"], aws, config, **kwargs)
    assert result.returncode == 0, result.stderr
    steps: list[dict[str, Any]] = json.loads(result.stdout)
    for step in steps:
        assert {"user", "action", "key_id", "reason", "due_at"} <= step.keys(), step
        assert step["reason"], step
    return steps


def concurrently(*calls: Callable[[], Any]) -> list[Any]:
    """Run independent (read-only) CLI calls side by side: each is mostly interpreter start-up."""
    with ThreadPoolExecutor(len(calls)) as pool:
        futures = [pool.submit(call) for call in calls]
        return [future.result() for future in futures]


def actions_of(steps: list[dict[str, Any]]) -> set[Action]:
    actions = [(s["user"], s["action"], s["key_id"]) for s in steps]
    assert len(actions) == len(set(actions)), f"duplicate steps: {actions}"
    return set(actions)


def inventory_json(aws: AwsEnv, config: Path, **kwargs: Any) -> dict[str, dict[str, Any]]:
    result = run_cli(["inventory", "--json"], aws, config, **kwargs)
    assert result.returncode == 0, result.stderr
    records = json.loads(result.stdout)
    by_user = {record["user"]: record for record in records}
    assert len(by_user) == len(records), "a user is listed twice"
    return by_user


def read_only(
    aws: AwsEnv, config: Path, *, inventory: bool = True
) -> tuple[list[dict[str, Any]], dict[str, dict[str, Any]]]:
    """``plan --json`` (and ``inventory --json``), asserting that they changed nothing in AWS."""
    before = aws.snapshot()
    if inventory:
        steps, records = concurrently(lambda: plan_json(aws, config), lambda: inventory_json(aws, config))
    else:
        steps, records = plan_json(aws, config), {}
    assert aws.snapshot() == before, "plan/inventory changed AWS state"
    if inventory:
        # inventory's per-user "now" is the very same plan.
        now = [s for record in records.values() for s in record["now"]]
        assert _without_due(now) == _without_due(steps)
    return steps, records


def _without_due(steps: list[dict[str, Any]]) -> list[tuple[str, str, str, str]]:
    """Steps minus ``due_at`` (a bootstrap is due "now", which differs between two runs)."""
    return sorted((s["user"], s["action"], s["key_id"] or "", s["reason"]) for s in steps)


def new_key(aws: AwsEnv, user: str) -> dict[str, str]:
    key: dict[str, str] = aws.iam.create_access_key(UserName=user)["AccessKey"]
    aws.created_secrets.append(key["SecretAccessKey"])
    return key


def use_key(aws: AwsEnv, key: dict[str, str]) -> None:
    """Sign one request with ``key``: moto records it as the key's last use."""
    aws.caller_arn(key["AccessKeyId"], key["SecretAccessKey"])


def calls(registry: CollectorRegistry, operation: str, outcome: str = "ok") -> float:
    total = 0.0
    for metric in registry.collect():
        if metric.name != "rotator_aws_api_calls":
            continue
        for sample in metric.samples:
            if (
                sample.name == "rotator_aws_api_calls_total"
                and sample.labels["operation"] == operation
                and sample.labels["outcome"] == outcome
            ):
                total += sample.value
    return total


def all_calls(registry: CollectorRegistry) -> dict[str, float]:
    out: dict[str, float] = {}
    for metric in registry.collect():
        if metric.name != "rotator_aws_api_calls":
            continue
        for sample in metric.samples:
            if sample.name == "rotator_aws_api_calls_total" and sample.value:
                key = f"{sample.labels['operation']}/{sample.labels['outcome']}"
                out[key] = out.get(key, 0.0) + sample.value
    return out


@pytest.fixture
def make_app(aws: AwsEnv, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., App]]:
    """In-process ``App`` factory; the AWS endpoint comes from the environment (``aws.env``)."""
    for name in list(os.environ):
        if name.startswith(("AWS_", "ROTATOR_")):
            monkeypatch.delenv(name)
    for name, value in aws.env.items():
        monkeypatch.setenv(name, value)

    def make(config: str = CONFIG, **kwargs: Any) -> App:
        path = tmp_path / f"inproc-{time.monotonic_ns()}.yaml"
        path.write_text(config)
        return App(load_settings(str(path)), registry=CollectorRegistry(), log=False, **kwargs)

    yield make


# -- selection ---------------------------------------------------------------------------------------


def test_selection_by_path_tag_globs_and_exclude_tag(aws: AwsEnv, tmp_path: Path) -> None:
    config = write_config(tmp_path, CONFIG)
    aws.user("app", keys=0)
    aws.user("team-app", path="/svc/team/", keys=0)  # below the prefix: managed
    aws.user("keeps-opt-in", tags={"rotator:exclude": "false"}, keys=0)
    aws.user("root-path", path="/", keys=0)  # outside the prefix
    aws.user("svcx-path", path="/svcx/", keys=0)  # shares the prefix's letters, not its path
    aws.user("untagged", managed=False, keys=0)
    aws.user("wrong-value", managed=False, tags={"rotator": "disabled"}, keys=0)
    aws.user("break-glass-admin", keys=0)  # exclude glob
    aws.user("opted-out", tags={"rotator:exclude": "true"}, keys=0)
    aws.user("opted-out-caps", tags={"rotator:exclude": "TRUE"}, keys=0)
    managed = {"app", "team-app", "keeps-opt-in"}

    before = aws.snapshot()
    inventory, result, overridden = concurrently(
        lambda: inventory_json(aws, config),
        lambda: run_cli(["plan"], aws, config),
        # Overrides from the environment: tag null manages every user under the prefix; the exclude
        # tag still applies whatever the selection says.
        lambda: inventory_json(aws, config, env={"ROTATOR_SELECTION__TAG": "null", "ROTATOR_SELECTION__EXCLUDE": "[]"}),
    )
    assert aws.snapshot() == before
    assert set(inventory) == managed
    assert set(overridden) == managed | {"untagged", "wrong-value", "break-glass-admin"}
    # Human plan output (stdout is not a terminal): a header line, then one tab-separated row per step.
    assert result.returncode == 0, result.stderr
    header, *rows = [line.split("\t") for line in result.stdout.splitlines()]
    assert header == ["user", "action", "key_id", "due_at", "reason"]
    assert all(len(row) == 5 for row in rows), rows
    assert {(row[0], row[1], row[2]) for row in rows} == {(user, "rotate", "-") for user in managed}


# -- the whole story: before the first sweep, after it, after a second one ----------------------------


def test_plan_lists_exactly_the_expected_actions(aws: AwsEnv, tmp_path: Path, make_app: Callable[..., App]) -> None:
    config = write_config(tmp_path, CONFIG)
    aws.user("zero", keys=0)
    [one_key] = aws.user("one", keys=1, tags={"rotator:grace-period": "1s", "rotator:retention": "1s"})
    [default_key] = aws.user("one-default", keys=1)
    aws.user("held", keys=0, tags={"rotator:grace-period": "1s"})
    held_key = new_key(aws, "held")  # with its secret: a consumer will use it
    two_keys = aws.user("two", keys=2)
    stray_kept, stray_gone = aws.user("one-inactive", keys=2)
    aws.iam.update_access_key(UserName="one-inactive", AccessKeyId=stray_gone, Status="Inactive")
    aws.user("fk", keys=0)
    aws.user("foreign-secret", keys=1)
    aws.sm.create_secret(Name="iam-keys/foreign-secret", SecretString='{"hand": "written"}')
    [unmanaged_key] = aws.user("unmanaged", keys=1, managed=False)
    # Malformed per-user overrides: a skip for that user only, never a crash of the plan.
    [bad_key] = aws.user("bad-age", keys=1, tags={"rotator:max-key-age": "ninety days"})
    aws.user("bad-unit", keys=0, tags={"rotator:max-key-age": "30"})
    aws.user("bad-grace", keys=0, tags={"rotator:grace-period": "-1d"})
    aws.user("bad-retention", keys=0, tags={"rotator:retention": "0s"})
    # ("two", two active keys and no secret, becomes a problem too once its keys are older than the in-flight
    # window: until then one of them may be another run's rotation in flight.)
    problems = {"foreign-secret", "bad-age", "bad-unit", "bad-grace", "bad-retention"}
    always = {
        ("two", "skip", None),
        ("foreign-secret", "skip", None),
        ("bad-age", "skip", None),
        ("bad-unit", "skip", None),
        ("bad-grace", "skip", None),
        ("bad-retention", "skip", None),
    }

    # -- before any sweep: nothing has a secret -----------------------------------------------------
    steps, inventory = read_only(aws, config)
    assert actions_of(steps) == always | {
        ("zero", "rotate", None),
        ("one", "rotate", one_key),
        ("one-default", "rotate", default_key),
        ("held", "rotate", held_key["AccessKeyId"]),
        ("one-inactive", "delete", stray_gone),
        ("one-inactive", "rotate", stray_kept),
        ("fk", "rotate", None),
    }
    reasons = {(s["user"], s["action"]): s["reason"] for s in steps}
    assert "two active keys" in reasons["two", "skip"]
    assert "rotator:max-key-age" in reasons["bad-age", "skip"]
    assert "rotator:max-key-age" in reasons["bad-unit", "skip"]
    assert "rotator:grace-period" in reasons["bad-grace", "skip"]
    assert "rotator:retention" in reasons["bad-retention", "skip"]
    assert "not written by the rotator" in reasons["foreign-secret", "skip"]
    assert all(s["due_at"] for s in steps if s["action"] != "skip")

    # inventory --json: the documented fields, before any secret exists.
    assert "unmanaged" not in inventory
    zero, one, two = inventory["zero"], inventory["one"], inventory["two"]
    assert zero["keys"] == []
    assert zero["next_action"] is None
    assert zero["secret"] == {
        "name": "iam-keys/zero",
        "exists": False,
        "managed": False,
        "versions": {},
        "version_keys": {},
        "error": None,
    }
    [key] = one["keys"]
    assert key["key_id"] == one_key
    assert key["status"] == "Active"
    assert key["role"] == "other"
    assert key["last_used"] is None
    assert 0 <= key["age_seconds"] < 600
    assert datetime.fromisoformat(key["created"]).tzinfo is not None
    assert one["path"] == "/svc/"
    assert one["account"] == "123456789012"
    assert {k["key_id"] for k in two["keys"]} == set(two_keys)
    assert {k["key_id"]: k["status"] for k in inventory["one-inactive"]["keys"]} == {
        stray_kept: "Active",
        stray_gone: "Inactive",
    }
    assert [k["key_id"] for k in inventory["bad-age"]["keys"]] == [bad_key]

    # -- first sweep: bootstraps every user it can ---------------------------------------------------
    report = make_app().sweep()
    assert not report.errors
    assert {o.user for o in report.outcomes if o.failed} == problems  # per-user problems fail the sweep
    zero_current = aws.secret("zero")["AccessKeyId"]
    one_current = aws.secret("one")["AccessKeyId"]
    held_current = aws.secret("held")["AccessKeyId"]
    fk_current = aws.secret("fk")["AccessKeyId"]
    assert set(aws.keys("one-inactive")) == {stray_kept, aws.secret("one-inactive")["AccessKeyId"]}
    assert set(aws.keys("two")) == set(two_keys)
    assert aws.keys("unmanaged") == {unmanaged_key: "Active"}
    hand_written = aws.sm.get_secret_value(SecretId="iam-keys/foreign-secret")["SecretString"]
    assert hand_written == '{"hand": "written"}'

    # Per-user overrides set after the sweep; someone adds a key by hand; a consumer uses held's old key.
    aws.iam.tag_user(UserName="zero", Tags=[{"Key": "rotator:max-key-age", "Value": "1s"}])
    foreign = new_key(aws, "fk")["AccessKeyId"]
    use_key(aws, held_key)
    time.sleep(1.1)  # past the 1s overrides

    steps, inventory = read_only(aws, config)
    assert actions_of(steps) == always | {
        ("zero", "rotate", zero_current),  # rotator:max-key-age=1s
        ("one", "disable", one_key),  # rotator:grace-period=1s, never used
        ("held", "hold", held_key["AccessKeyId"]),  # grace over, but used within quiet_period
        ("fk", "skip", foreign),  # foreign active key: reported, never touched
    }
    one = inventory["one"]
    assert {k["key_id"]: k["role"] for k in one["keys"]} == {one_current: "current", one_key: "previous"}
    assert one["secret"]["exists"] is True
    assert one["secret"]["managed"] is True
    assert one["secret"]["name"] == "iam-keys/one"
    [(version, stages)] = one["secret"]["versions"].items()
    assert stages == ["AWSCURRENT"]
    assert one["secret"]["version_keys"] == {version: one_current}
    assert [s["action"] for s in one["now"]] == ["disable"]
    default = inventory["one-default"]
    assert default["now"] == []
    assert default["next_action"]["action"] in ("rotate", "disable")  # both fall due in about 1h
    due = datetime.fromisoformat(default["next_action"]["due_at"])
    assert timedelta(minutes=50) < due - datetime.now(UTC) <= timedelta(hours=1)
    held = {k["key_id"]: k for k in inventory["held"]["keys"]}
    assert held[held_key["AccessKeyId"]]["last_used"] is not None
    # moto's credential report has no service/region of a key's last use ("not_supported"); AWS's has them.
    assert {"last_used_service", "last_used_region"} <= held[held_key["AccessKeyId"]].keys()
    assert held[held_key["AccessKeyId"]]["role"] == "previous"
    assert held[held_current]["role"] == "current"
    assert held[held_current]["last_used"] is not None  # the rotator validated it by signing with it
    assert {k["key_id"]: k["role"] for k in inventory["fk"]["keys"]} == {
        fk_current: "current",
        foreign: "other",
    }

    # -- second sweep: acts on that plan; the next plan shows the consequences ------------------------
    report = make_app().sweep()
    assert not report.errors
    assert {o.user for o in report.outcomes if o.failed} == problems  # per-user problems fail the sweep
    zero_new = aws.secret("zero")["AccessKeyId"]
    assert zero_new != zero_current
    assert aws.keys("one")[one_key] == "Inactive"
    assert aws.keys("held")[held_key["AccessKeyId"]] == "Active"
    assert aws.keys("fk")[foreign] == "Active"
    time.sleep(1.1)  # past one's rotator:retention=1s

    steps, _ = read_only(aws, config, inventory=False)
    assert actions_of(steps) == always | {
        ("zero", "skip", zero_new),  # due again, but its previous key still exists (I5)
        ("one", "delete", one_key),  # rotator:retention=1s
        ("held", "hold", held_key["AccessKeyId"]),
        ("fk", "skip", foreign),
    }


# -- how many calls a plan makes -----------------------------------------------------------------------


def test_steady_state_plan_reads_the_credential_report_not_each_user(
    aws: AwsEnv, make_app: Callable[..., App], fault_proxy: FaultProxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Through the proxy, which gives moto's live report its real GeneratedTime (moto says 2015, and a
    # report older than every change is - rightly - not trusted for any user).
    monkeypatch.setenv("AWS_ENDPOINT_URL", fault_proxy.url)
    for n in range(4):
        aws.user(f"empty-{n}", keys=0)
    for n in range(3):
        aws.user(f"old-{n}", keys=1)
    aws.user("outsider", managed=False, keys=2)
    time.sleep(1.05)  # the new keys' CreateDate lands in another second than the old ones'
    report = make_app().sweep()
    assert report.failed == 0, report.errors
    assert report.count(RotateAction.ROTATE) == 7
    # GeneratedTime has whole seconds: a change in the report's own second may postdate it, so such a
    # user is (rightly) read from IAM. One second later the report is newer than every change.
    time.sleep(1.1)

    app = make_app()
    [view] = app.plan()
    assert len(view.states) == 7
    assert all(not plan.steps for plan in view.plans), [p.steps for p in view.plans]
    registry = app.registry
    for operation in ("ListAccessKeys", "GetAccessKeyLastUsed", "GetSecretValue", "ListUserTags", "GetUser"):
        assert calls(registry, operation) == 0, (operation, all_calls(registry))
    assert sum(all_calls(registry).values()) <= 6, all_calls(registry)
    assert calls(registry, "GetCredentialReport") == 1
    state = {s.user: s for s in view.states}
    assert all(len(state[f"old-{n}"].keys) == 2 for n in range(3))
    assert all(len(state[f"empty-{n}"].keys) == 1 for n in range(4))
    assert all(k.last_used is not None for k in state["empty-0"].keys)  # validation used the new key

    # The report has no key ids: a key the secret's tags do not know makes that one user fall back.
    foreign = new_key(aws, "empty-1")["AccessKeyId"]
    app = make_app()
    [view] = app.plan()
    assert calls(app.registry, "ListAccessKeys") == 1
    state = {s.user: s for s in view.states}
    assert foreign in {k.key_id for k in state["empty-1"].keys}
    [plan] = [p for p in view.plans if p.user == "empty-1"]
    assert [(s.action.value, s.key_id) for s in plan.steps] == [("skip", foreign)]


def test_a_stale_credential_report_does_not_undo_the_rotators_own_disable(
    aws: AwsEnv, make_app: Callable[..., App], monkeypatch: pytest.MonkeyPatch
) -> None:
    """IAM serves a cached credential report up to 4h old; moto's is live, so an older one is replayed."""
    [old] = aws.user("app", keys=1, tags={"rotator:grace-period": "1s"})
    time.sleep(1.05)  # the new key's CreateDate lands in another second than the old one's
    assert not make_app().sweep().failed  # bootstrap: old becomes the previous key
    # Past the 1 s grace period, which counts from the secret's CreatedDate + 1 s (moto's has whole seconds).
    created = aws.sm.describe_secret(SecretId="iam-keys/app")["CreatedDate"]
    time.sleep(max(0.0, created.timestamp() + 2.1 - time.time()))
    app = make_app()
    stale = app.base_aws().credential_report()  # still shows the old key Active
    assert not app.sweep().failed  # disables it
    assert aws.keys("app")[old] == "Inactive"

    monkeypatch.setattr(Aws, "credential_report", lambda _self: stale)
    app = make_app()
    [view] = app.plan()
    [state] = view.states
    previous = state.key(old)
    assert previous is not None
    assert previous.status is KeyStatus.INACTIVE
    assert [step for plan in view.plans for step in plan.steps] == []  # not "disable" again
    assert calls(app.registry, "ListAccessKeys") == 1  # that user was read from IAM instead


def test_users_without_a_secret_are_listed_per_user(aws: AwsEnv, make_app: Callable[..., App]) -> None:
    aws.user("a", keys=1)
    aws.user("b", keys=2)
    aws.user("c", keys=0)
    app = make_app()
    [view] = app.plan()
    assert {s.user: len(s.keys) for s in view.states} == {"a": 1, "b": 2, "c": 0}
    # One ListAccessKeys per user that has no secret yet; no per-user tag or last-use reads.
    assert calls(app.registry, "ListAccessKeys") == 3
    assert calls(app.registry, "ListUserTags") == 0
    assert calls(app.registry, "GetAccessKeyLastUsed") == 0


# -- a failed listing is an error, never "no keys" (I6) ------------------------------------------------


class _Body:
    def __init__(self, body: bytes) -> None:
        self.body = body

    def stream(self, **_: Any) -> Iterator[bytes]:
        yield self.body


def _error_response(service: str, code: str, status: int) -> Callable[..., AWSResponse]:
    if service == "iam":
        body = (
            f"<ErrorResponse><Error><Type>Sender</Type><Code>{code}</Code>"
            f"<Message>injected {code}</Message></Error><RequestId>r</RequestId></ErrorResponse>"
        ).encode()
        headers = {"Content-Type": "text/xml"}
    else:
        body = json.dumps({"__type": code, "message": f"injected {code}"}).encode()
        headers = {"Content-Type": "application/x-amz-json-1.1"}

    def respond(request: Any, **_: Any) -> AWSResponse:
        return AWSResponse(request.url, status, headers, _Body(body))

    return respond


@pytest.mark.parametrize(
    ("service", "operation", "code", "status", "error"),
    [
        ("iam", "ListAccessKeys", "Throttling", 400, ThrottledError),
        ("iam", "GetAccountAuthorizationDetails", "Throttling", 400, ThrottledError),
        ("iam", "GetCredentialReport", "AccessDenied", 403, AccessDeniedError),
        ("secretsmanager", "ListSecrets", "ThrottlingException", 400, ThrottledError),
        ("secretsmanager", "ListSecrets", "InternalServiceError", 500, AwsError),
    ],
)
def test_failed_listing_is_an_error_not_an_empty_result(
    aws: AwsEnv,
    make_app: Callable[..., App],
    *,
    service: str,
    operation: str,
    code: str,
    status: int,
    error: type[AwsError],
) -> None:
    aws.user("one", keys=1)
    attempts = 2 if error is ThrottledError else 1
    config = CONFIG.replace("aws:\n", f"aws:\n  max_attempts: {attempts}\n")
    app = make_app(config, sleep=lambda _s: None)
    client = app.base_aws().boundary.client(service)
    client.meta.events.register(f"before-send.{service}.{operation}", _error_response(service, code, status))
    before = aws.snapshot()

    with pytest.raises(error):
        app.plan()
    assert calls(app.registry, operation, "error") == 1
    if error is ThrottledError:
        assert calls(app.registry, operation, "throttled") == attempts  # each attempt of the budget

    # A sweep on the same failure acts on nobody (no bootstrap from an empty listing) and fails.
    report = app.sweep()
    assert report.failed >= 1
    assert report.errors and operation in report.errors[0].message
    assert aws.snapshot() == before


def test_unreachable_endpoint_exits_1_with_one_error_line(aws: AwsEnv, tmp_path: Path) -> None:
    config = write_config(tmp_path, CONFIG)
    closed = AwsEnv(f"http://127.0.0.1:{free_port()}")  # nothing listens there
    commands = (["plan", "--json"], ["sweep"])
    env = {"ROTATOR_AWS__MAX_ATTEMPTS": "1"}
    results = concurrently(*(lambda c=c: run_cli(c, closed, config, env=env) for c in commands))
    for command, result in zip(commands, results, strict=True):
        assert result.returncode == 1, (command, result.stdout, result.stderr)
        if command != ["sweep"]:
            assert result.stdout == "", "a failed plan/inventory must not print an (empty) result"
        errors = [line for line in result.stderr.splitlines() if line.startswith("rotator: AWS error:")]
        assert len(errors) == 1, result.stderr
        assert "unreachable" in errors[0]


@pytest.fixture(scope="module")
def auth_server() -> Iterator[tuple[MotoServer, AwsEnv]]:
    """A moto server that enforces IAM policies after the first three (admin-creating) calls."""
    server = MotoServer(extra_env={"INITIAL_NO_AUTH_ACTION_COUNT": "3"})
    try:
        bootstrap = AwsEnv(server.url)
        bootstrap.iam.create_user(UserName="admin", Path="/ops/")
        bootstrap.iam.put_user_policy(
            UserName="admin",
            PolicyName="all",
            PolicyDocument=json.dumps(
                {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}
            ),
        )
        key = bootstrap.iam.create_access_key(UserName="admin")["AccessKey"]
        yield server, AwsEnv(server.url, access_key=key["AccessKeyId"], secret_key=key["SecretAccessKey"])
    finally:
        server.stop()


@pytest.mark.parametrize("denied", ["secretsmanager:ListSecrets", "iam:ListAccessKeys"])
def test_denied_listing_exits_1_and_plans_nothing(
    auth_server: tuple[MotoServer, AwsEnv], tmp_path: Path, denied: str
) -> None:
    """A real AccessDenied from the emulator's policy engine: never read as "no secrets"/"no keys"."""
    _, admin = auth_server
    reader = f"reader-{denied.replace(':', '-')}"
    admin.iam.create_user(UserName=reader, Path="/ops/")
    admin.iam.put_user_policy(
        UserName=reader,
        PolicyName="read",
        PolicyDocument=json.dumps(
            {
                "Version": "2012-10-17",
                "Statement": [
                    {"Effect": "Allow", "Action": ["iam:*", "secretsmanager:*", "sts:*"], "Resource": "*"},
                    {"Effect": "Deny", "Action": denied, "Resource": "*"},
                ],
            }
        ),
    )
    key = admin.iam.create_access_key(UserName=reader)["AccessKey"]
    if "svc-denied" not in {u["UserName"] for u in admin.iam.list_users()["Users"]}:
        admin.user("svc-denied", keys=1)
    as_reader = AwsEnv(admin.url, access_key=key["AccessKeyId"], secret_key=key["SecretAccessKey"])
    config = write_config(tmp_path, CONFIG)
    results = concurrently(
        lambda: run_cli(["plan", "--json"], as_reader, config),
        lambda: run_cli(["inventory", "--json"], as_reader, config),
    )
    for result in results:
        assert result.returncode == 1, (result.stdout, result.stderr)
        assert result.stdout == ""
        errors = [line for line in result.stderr.splitlines() if line.startswith("rotator: AWS error:")]
        assert len(errors) == 1, result.stderr
        assert denied.split(":")[1] in errors[0]
        assert errors[0].count("\n") == 0
    assert admin.keys("svc-denied") and len(admin.keys("svc-denied")) == 1
