"""Reliability under the faults AWS really produces (the reliability issue, items 1-11), through the fault proxy.

Every rotator run here talks to moto through ``tests/faultproxy.py`` (``proxied_aws`` for subprocesses, or an
in-process ``App`` whose environment points at ``fault_proxy.url``); the assertions read AWS state straight from
moto (the ``aws`` fixture bypasses the proxy) and the runs' JSON logs and exit codes. The proxy also stands in for
CloudTrail's ``LookupEvents`` (every ``CreateAccessKey`` that went through it, with its signer) and lets the
credential report be frozen.

``aws.validation_timeout`` is 2 s, so the in-flight window is 4 s. Each test's docstring names the issue item
it proves.
"""

from __future__ import annotations

import json
import os
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config
from conftest import REGION, AwsEnv, Proc, assert_no_secrets, crashing, policy_config, run_cli
from faultproxy import Call, FaultProxy

from rotator.app import App
from rotator.config import load_settings
from rotator.model import (
    TAG_CURRENT_KEY,
    TAG_PREVIOUS_KEY,
    USER_TAG_OWN_PREFIX,
    USER_TAG_ROTATION_KEYS,
    USER_TAG_ROTATION_STARTED,
    version_id_for,
)

VALIDATION_TIMEOUT = 2  # seconds
WINDOW = 2 * VALIDATION_TIMEOUT  # the in-flight window
ACCOUNT = "123456789012"  # moto's default account
ROTATOR_ARN = f"arn:aws:sts::{ACCOUNT}:user/moto"  # what moto answers GetCallerIdentity for the key "testing"
OPERATOR_ARN = f"arn:aws:iam::{ACCOUNT}:user/ops/operator"
IN_FLIGHT_TAGS = (USER_TAG_ROTATION_STARTED, USER_TAG_ROTATION_KEYS)
#: A secret access key: 40 characters of base64 that no other base64 character touches.
SECRET_LIKE = re.compile(r"(?<![A-Za-z0-9/+=])[A-Za-z0-9/+]{40}(?![A-Za-z0-9/+=])")


# -- configuration and runs --------------------------------------------------------------------------------------


def config(
    tmp_path: Path,
    name: str = "rotator",
    *,
    max_key_age: str = "1h",
    extra: str = "",
    validation_timeout: float = VALIDATION_TIMEOUT,
) -> Path:
    """Short durations: validation_timeout 2 s, no rate limit, guard off; ``extra`` YAML appended."""
    path = policy_config(tmp_path, name, max_key_age=max_key_age, validation_timeout=validation_timeout)
    if extra:
        path.write_text(path.read_text() + extra)
    return path


def cli(args: list[str], env: AwsEnv, cfg: Path, outputs: list[str] | None = None) -> Proc:
    """``rotator --config CFG ARGS`` as a subprocess; its output is added to ``outputs``."""
    done = run_cli(args, env, cfg)
    if outputs is not None:
        outputs += [done.stdout, done.stderr]
    return Proc(["python", "rotator", *args], done.returncode, done.stdout, done.stderr)


def plan_steps(env: AwsEnv, cfg: Path, outputs: list[str] | None = None) -> list[dict[str, Any]]:
    run = cli(["plan", "--json"], env, cfg, outputs)
    assert run.returncode == 0, run.describe()
    steps: list[dict[str, Any]] = json.loads(run.stdout)
    return steps


def steps_of(steps: list[dict[str, Any]], user: str) -> list[tuple[str, str | None, str]]:
    return [(s["action"], s["key_id"], s["reason"]) for s in steps if s["user"] == user]


def no_traceback(*runs: Proc) -> None:
    for run in runs:
        assert "Traceback" not in run.stderr and "Traceback" not in run.stdout, run.describe()


def sniff_secrets(proxy: FaultProxy) -> list[str]:
    """Every SecretAccessKey moto hands out through ``proxy`` (read from the full upstream answer).

    The proxy keeps no secret itself and an ``after`` hook sees only the :class:`Call`; so this wraps the step
    where the proxy reads AWS's answer - before any ``truncate_after`` cuts it - and keeps the secret here, in
    the test, to check that it shows nowhere in the rotator's output.
    """
    seen: list[str] = []
    observe = proxy._observe

    def sniff(call: Call, response: Any) -> Any:
        if call.operation in ("CreateAccessKey", "GetSecretValue") and response.status == 200:
            body = response.body.decode("utf-8", "replace")
            seen.extend(re.findall(r"<SecretAccessKey>([^<]+)</SecretAccessKey>", body))
            seen.extend(re.findall(r'\\"SecretAccessKey\\": \\"([^"\\]+)\\"', body))
        return observe(call, response)

    proxy._observe = sniff  # type: ignore[method-assign]
    return seen


def assert_no_secret_material(texts: list[str], secrets: list[str]) -> None:
    """I7: no issued secret access key, nor the start of one (a cut-off answer), nor anything shaped like one."""
    assert_no_secrets(texts, secrets)
    for secret in secrets:
        for text in texts:
            assert secret[:12] not in text, "the start of a secret access key leaked into output"
    for text in texts:
        assert not SECRET_LIKE.search(text), f"a secret-shaped string in output: {SECRET_LIKE.findall(text)[:1]}"


# -- reading AWS (moto directly) ---------------------------------------------------------------------------------


def created_at(aws: AwsEnv, user: str) -> dict[str, datetime]:
    meta = aws.iam.list_access_keys(UserName=user)["AccessKeyMetadata"]
    return {k["AccessKeyId"]: k["CreateDate"] for k in meta}


def user_tags(aws: AwsEnv, user: str) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in aws.iam.list_user_tags(UserName=user)["Tags"]}


def in_flight_tags(aws: AwsEnv, user: str) -> list[str]:
    """The rotator's in-flight records: on the user (a bootstrap's) and on the secret (a rotation's mark)."""
    on_user = [t for t in user_tags(aws, user) if t in IN_FLIGHT_TAGS or t.startswith(USER_TAG_OWN_PREFIX)]
    on_secret = (
        [f"secret:{t}" for t, v in secret_tags(aws, user).items() if t in IN_FLIGHT_TAGS and v]
        if has_secret(aws, user)
        else []
    )
    return on_user + on_secret


def secret_tags(aws: AwsEnv, user: str) -> dict[str, str]:
    described = aws.sm.describe_secret(SecretId=f"iam-keys/{user}")
    return {t["Key"]: t["Value"] for t in described.get("Tags", [])}


def has_secret(aws: AwsEnv, user: str) -> bool:
    try:
        aws.sm.describe_secret(SecretId=f"iam-keys/{user}")
    except aws.sm.exceptions.ResourceNotFoundException:
        return False
    return True


def versions(aws: AwsEnv, user: str) -> list[tuple[str, tuple[str, ...]]]:
    listed = aws.sm.list_secret_version_ids(SecretId=f"iam-keys/{user}", IncludeDeprecated=True)["Versions"]
    return sorted((v["VersionId"], tuple(sorted(v.get("VersionStages", [])))) for v in listed)


def assert_current_works(aws: AwsEnv, user: str) -> str:
    """I2: AWSCURRENT holds a key that exists, is Active, is stored under its own version id and signs requests."""
    stages = aws.stages(user)
    (current_version,) = [v for v, s in stages.items() if "AWSCURRENT" in s]
    assert not any("AWSPENDING" in s for s in stages.values()), f"{user}: rotation left pending: {stages}"
    document = aws.secret(user)
    key_id = document["AccessKeyId"]
    assert document["UserName"] == user
    assert version_id_for(key_id) == current_version, f"{user}: AWSCURRENT's version id is not uuid5({key_id})"
    keys = aws.keys(user)
    assert keys.get(key_id) == "Active", f"{user}: AWSCURRENT holds {key_id}, IAM has {keys}"
    # moto checks no signature here; the pair is at least accepted and maps to the right user
    assert aws.caller_arn(key_id, document["SecretAccessKey"]) == aws.iam.get_user(UserName=user)["User"]["Arn"]
    return str(key_id)


def wait_past_window(created: datetime, margin: float = 0.6) -> None:
    """Sleep until ``created`` + the in-flight window (+ a margin: IAM dates may be cut to the second)."""
    delay = (created + timedelta(seconds=WINDOW + margin) - datetime.now(UTC)).total_seconds()
    if delay > 0:
        time.sleep(delay)


# -- setting scenarios up ------------------------------------------------------------------------------------------


def bootstrapped(aws: AwsEnv, tmp_path: Path, *users: str, tags: dict[str, str] | None = None) -> dict[str, str]:
    """Key-less managed ``users``, bootstrapped by a sweep straight at moto: one key each, in AWSCURRENT."""
    for user in users:
        aws.user(user, keys=0, tags=tags)
    setup = run_cli(["sweep"], aws, policy_config(tmp_path, "setup", validation_timeout=30))
    assert setup.returncode == 0, setup.stderr[-3000:]
    return {user: assert_current_works(aws, user) for user in users}


def operator(aws: AwsEnv, proxy: FaultProxy) -> AwsEnv:
    """An unmanaged IAM user ``operator`` (path /ops/) with its own key: its calls through the proxy are signed
    by it, so the CloudTrail stand-in names ``OPERATOR_ARN`` as the creator of keys it creates."""
    aws.iam.create_user(UserName="operator", Path="/ops/")
    key = aws.iam.create_access_key(UserName="operator")["AccessKey"]
    aws.created_secrets.append(key["SecretAccessKey"])
    return AwsEnv(proxy.url, access_key=key["AccessKeyId"], secret_key=key["SecretAccessKey"])


def one_shot_iam(env: AwsEnv) -> Any:
    return boto3.client(
        "iam",
        endpoint_url=env.url,
        region_name=REGION,
        aws_access_key_id=env.access_key,
        aws_secret_access_key=env.secret_key,
        config=Config(retries={"total_max_attempts": 1}),
    )


def operator_creates_key(ops: AwsEnv, aws: AwsEnv, user: str) -> str:
    key = one_shot_iam(ops).create_access_key(UserName=user)["AccessKey"]
    aws.created_secrets.append(key["SecretAccessKey"])
    return str(key["AccessKeyId"])


@pytest.fixture
def proxy_environ(fault_proxy: FaultProxy, monkeypatch: pytest.MonkeyPatch) -> None:
    """This process's AWS environment points at the fault proxy (for an in-process ``App``)."""
    for name in list(os.environ):
        if name.startswith(("AWS_", "ROTATOR_")):
            monkeypatch.delenv(name)
    for name, value in AwsEnv(fault_proxy.url).env.items():
        if name.startswith("AWS_"):
            monkeypatch.setenv(name, value)


# =================================================================================================================
# Item 1 - ownership
# =================================================================================================================


@pytest.mark.parametrize("mark", ["cleared", "kept"])
@pytest.mark.parametrize("kind", ["bootstrap", "rotation"])
def test_operator_key_created_at_the_worst_moment_is_never_touched(
    aws: AwsEnv, proxied_aws: AwsEnv, fault_proxy: FaultProxy, tmp_path: Path, *, kind: str, mark: str
) -> None:
    """Item 1 (ownership, I9): an operator creates a key between the rotator's intent mark and its CreateAccessKey.

    The rotator's CreateAccessKey then fails LimitExceeded: handled, no crash, no key of its own. ``mark=kept``:
    the UntagUser that would clear the intent mark fails too, so the operator's key sits next to a live mark
    (an ownership candidate) and only CloudTrail - naming the operator, not the rotator - settles it as foreign.
    Either way, sweeps after the in-flight window never disable or delete it.
    """
    outputs: list[str] = []
    secrets = sniff_secrets(fault_proxy)
    cfg = config(tmp_path, max_key_age="1s")
    if kind == "bootstrap":
        (due,) = aws.user("alice", keys=1)  # one key, no secret: due at once
    else:
        due = bootstrapped(aws, tmp_path, "alice")["alice"]
        time.sleep(1.1)  # older than max_key_age
    ops = operator(aws, fault_proxy)
    foreign: list[str] = []
    fault_proxy.before(
        "CreateAccessKey",
        lambda call: foreign.append(operator_creates_key(ops, aws, "alice")),
        when=lambda call: call.signer_key_id == "testing",  # the rotator's, not the operator's own call
    )
    # A rotation marks the secret, a bootstrap the user. The loser of IAM's limit keeps its mark anyway (the seed-32
    # fix); ``kept`` also fails the bootstrap's later attempts to clear it.
    if mark == "kept" and kind == "bootstrap":
        untag = fault_proxy.fail_before("UntagUser", status=403, code="AccessDenied", times=None)

    first = cli(["sweep"], proxied_aws, cfg, outputs)
    no_traceback(first)
    assert first.returncode in (0, 1), first.describe()
    (operator_key,) = foreign
    assert not first.named("rotation.key_created"), first.describe()
    rejected = [c for c in fault_proxy.calls if c.operation == "CreateAccessKey" and c.signer_key_id == "testing"]
    assert [c.upstream_status for c in rejected] == [409], "the rotator's CreateAccessKey must hit IAM's limit"
    skipped = [e for e in first.named("action.skipped") if "key limit reached" in e.get("reason", "")]
    assert skipped, first.describe()
    assert aws.keys("alice") == {due: "Active", operator_key: "Active"}
    marked = user_tags(aws, "alice") if kind == "bootstrap" else secret_tags(aws, "alice")
    assert marked.get(USER_TAG_ROTATION_STARTED), marked  # the loser's mark
    if mark == "kept" and kind == "bootstrap":
        untag.remove()

    wait_past_window(created_at(aws, "alice")[operator_key])
    steps = plan_steps(proxied_aws, cfg, outputs)
    operator_steps = [s for s in steps_of(steps, "alice") if s[1] == operator_key]
    assert all(action == "skip" for action, _, _ in operator_steps), operator_steps
    assert not any("ownership unproven" in reason for _, _, reason in operator_steps), (
        "CloudTrail names the operator: the key is foreign, not unproven"
    )
    for _ in range(2):
        later = cli(["sweep"], proxied_aws, cfg, outputs)
        no_traceback(later)
        assert not later.named("key.orphan_deleted") and not later.named("key.deleted"), later.describe()
        assert not [e for e in later.named("key.disabled") if e["key_id"] == operator_key], later.describe()
        assert aws.keys("alice")[operator_key] == "Active"
        assert aws.keys("alice")[due] == "Active"
    if mark == "kept":
        lookups = [c for c in fault_proxy.calls if c.operation == "LookupEvents"]
        assert lookups, "the candidate next to the stale mark must be settled by CloudTrail"
        (event,) = [e for e in fault_proxy.key_creations if e.key_id == operator_key]
        assert fault_proxy.signer_arn(event.signer_key_id) == OPERATOR_ARN
    assert_no_secret_material(outputs, [*secrets, *aws.created_secrets])


@pytest.mark.parametrize("kind", ["bootstrap", "rotation"])
def test_crash_after_create_access_key_cloudtrail_proves_the_key_ours(
    aws: AwsEnv, proxied_aws: AwsEnv, fault_proxy: FaultProxy, tmp_path: Path, kind: str
) -> None:
    """Item 1 (hard case, I3): killed right after CreateAccessKey, before its ownership record.

    The rotator's own key is unrecorded (a bootstrap's record on the user, a rotation's AWSPENDING version, never
    written); after the in-flight window CloudTrail (the proxy's stand-in) names the rotator's principal, so the
    next sweep deletes it (``key.orphan_deleted``) and rotates the user. A bootstrap's intent mark is on the user,
    a rotation's on the secret.
    """
    outputs: list[str] = []
    secrets = sniff_secrets(fault_proxy)
    if kind == "bootstrap":
        cfg = config(tmp_path)
        (old,) = aws.user("alice", keys=1)
    else:
        cfg = config(tmp_path, max_key_age="1s")
        old = bootstrapped(aws, tmp_path, "alice")["alice"]
        time.sleep(1.1)  # older than max_key_age
    before = set(aws.keys("alice"))
    crash = crashing(2, ["sweep"], proxied_aws, cfg, outputs)
    assert crash.named("crashing_rotator.kill")[0]["operation"] == "CreateAccessKey", crash.describe()
    (lost,) = set(aws.keys("alice")) - before
    assert not any(t.startswith(USER_TAG_OWN_PREFIX) for t in user_tags(aws, "alice")), "no record was written"
    if kind == "rotation":
        assert not any("AWSPENDING" in stages for stages in aws.stages("alice").values()), "no version was written"
    marked = user_tags(aws, "alice") if kind == "bootstrap" else secret_tags(aws, "alice")
    assert marked.get(USER_TAG_ROTATION_STARTED), marked
    (event,) = fault_proxy.key_creations
    assert event.key_id == lost and fault_proxy.signer_arn(event.signer_key_id) == ROTATOR_ARN

    inside = steps_of(plan_steps(proxied_aws, cfg, outputs), "alice")
    assert [a for a, k, _ in inside if k == lost] == ["skip"], inside  # in flight: not yet
    assert lost in aws.keys("alice")

    wait_past_window(created_at(aws, "alice")[lost])
    recovery = cli(["sweep"], proxied_aws, cfg, outputs)
    assert recovery.returncode == 0, recovery.describe()
    assert [e["key_id"] for e in recovery.named("key.orphan_deleted")] == [lost], recovery.describe()
    assert len(recovery.named("rotation.published")) == 1, recovery.describe()
    current = assert_current_works(aws, "alice")
    assert aws.keys("alice") == {old: "Active", current: "Active"}
    assert secret_tags(aws, "alice")[TAG_PREVIOUS_KEY] == old
    assert in_flight_tags(aws, "alice") == []
    again = cli(["sweep"], proxied_aws, cfg, outputs)
    assert again.returncode == 0 and not again.named("key.orphan_deleted"), again.describe()
    assert_no_secret_material(outputs, [*secrets, *aws.created_secrets])


def test_crash_after_create_access_key_without_cloudtrail_is_left_alone_and_reported(
    aws: AwsEnv, proxied_aws: AwsEnv, fault_proxy: FaultProxy, tmp_path: Path, proxy_environ: None
) -> None:
    """Item 1 (hard case, I9/I10): without CloudTrail (``LookupEvents`` denied) the unrecorded key is unproven.

    Past the in-flight window it is left alone and reported every sweep: ``plan`` shows a ``skip`` "ownership
    unproven", each sweep emits ``key.ownership_unproven`` and exits 1, ``rotator_unproven_keys`` is 1; the key
    still exists.
    """
    outputs: list[str] = []
    cfg = config(tmp_path)
    fault_proxy.cloudtrail_enabled = False
    (old,) = aws.user("alice", keys=1)
    crash = crashing(2, ["sweep"], proxied_aws, cfg, outputs)
    assert crash.named("crashing_rotator.kill"), crash.describe()
    (lost,) = set(aws.keys("alice")) - {old}

    wait_past_window(created_at(aws, "alice")[lost])
    steps = steps_of(plan_steps(proxied_aws, cfg, outputs), "alice")
    unproven = [(a, r) for a, k, r in steps if k == lost]
    assert len(unproven) == 1 and unproven[0][0] == "skip" and "ownership unproven" in unproven[0][1], steps
    for _ in range(2):
        run = cli(["sweep"], proxied_aws, cfg, outputs)
        no_traceback(run)
        assert run.returncode == 1, run.describe()
        assert [e["key_id"] for e in run.named("key.ownership_unproven")] == [lost], run.describe()
        assert not run.named("key.orphan_deleted") and not run.named("rotation.key_created"), run.describe()
        assert aws.keys("alice") == {old: "Active", lost: "Active"}
    assert any(c.operation == "LookupEvents" and c.status == 400 for c in fault_proxy.calls)

    app = App(load_settings(str(cfg)), log=False)
    report = app.sweep()
    assert report.failed >= 1
    unproven_gauge = app.registry.get_sample_value("rotator_unproven_keys", {"account": ACCOUNT})
    assert unproven_gauge == 1, unproven_gauge
    assert aws.keys("alice") == {old: "Active", lost: "Active"}
    assert_no_secrets(outputs, aws.created_secrets)


def test_operator_key_created_inside_the_window_after_a_crash_is_never_deleted(
    aws: AwsEnv, proxied_aws: AwsEnv, fault_proxy: FaultProxy, tmp_path: Path
) -> None:
    """Item 1 (hard case, I9): after a crash right after CreateAccessKey, an operator creates a key in the window.

    A key-less user (the only way a third party still has a free slot): the rotator's unrecorded key N and the
    operator's key O both lie next to the intent mark. CloudTrail names the rotator for N (deleted after the
    window) and the operator for O: O is never deleted nor disabled. With no secret, O then is the user's one
    pre-existing key and the bootstrap makes it the previous key (SPEC), which only leaves after grace (1 h).
    """
    outputs: list[str] = []
    secrets = sniff_secrets(fault_proxy)
    cfg = config(tmp_path)
    aws.user("alice", keys=0)
    ops = operator(aws, fault_proxy)
    crash = crashing(2, ["sweep"], proxied_aws, cfg, outputs)
    assert crash.named("crashing_rotator.kill"), crash.describe()
    (lost,) = aws.keys("alice")
    operator_key = operator_creates_key(ops, aws, "alice")  # inside the window, next to the mark
    created = created_at(aws, "alice")
    assert created[operator_key] - created[lost] < timedelta(seconds=VALIDATION_TIMEOUT)

    inside = cli(["sweep"], proxied_aws, cfg, outputs)
    no_traceback(inside)
    assert not inside.named("key.orphan_deleted") and not inside.named("rotation.key_created"), inside.describe()
    assert set(aws.keys("alice")) == {lost, operator_key}

    wait_past_window(max(created.values()))
    for _ in range(2):
        run = cli(["sweep"], proxied_aws, cfg, outputs)
        no_traceback(run)
        assert run.returncode == 0, run.describe()
        assert operator_key not in [e["key_id"] for e in run.named("key.orphan_deleted")], run.describe()
        assert operator_key not in [e["key_id"] for e in run.named("key.disabled")], run.describe()
        assert aws.keys("alice").get(operator_key) == "Active"
    assert lost not in aws.keys("alice"), "the rotator's own key, proven by CloudTrail, is cleaned"
    current = assert_current_works(aws, "alice")
    assert aws.keys("alice") == {operator_key: "Active", current: "Active"}
    assert secret_tags(aws, "alice")[TAG_PREVIOUS_KEY] == operator_key
    assert_no_secret_material(outputs, [*secrets, *aws.created_secrets])


def test_a_user_blocked_by_a_foreign_key_fails_every_sweep(
    aws: AwsEnv, proxied_aws: AwsEnv, fault_proxy: FaultProxy, tmp_path: Path
) -> None:
    """Item 1 / I10: a due user whose free slot an operator's key holds cannot progress: every sweep says so.

    SPEC I10 names "no free slot" among the things reported every sweep with the sweep's exit code; the
    operator's key itself is never touched.
    """
    outputs: list[str] = []
    current = bootstrapped(aws, tmp_path, "alice")["alice"]
    time.sleep(1.1)  # the current key is due (max_key_age 1 s)
    # A process start-up under coverage on a loaded machine can take seconds: a window of 8 s (not 4) for
    # the first sweep to see the operator's key young.
    window = 8.0
    cfg = config(tmp_path, max_key_age="1s", validation_timeout=window / 2)
    operator_key = operator_creates_key(operator(aws, fault_proxy), aws, "alice")
    # Within the in-flight window the young key may be another run's rotation (reads are not atomic):
    # reported, not yet a problem.
    young = cli(["sweep"], proxied_aws, cfg, outputs)
    assert young.returncode == 0, young.describe()
    assert any("may be another run's rotation in flight" in e["reason"] for e in young.named("action.skipped"))
    time.sleep(window)
    steps = steps_of(plan_steps(proxied_aws, cfg, outputs), "alice")
    assert any(a == "skip" and "no free key slot" in r for a, _, r in steps), steps
    for _ in range(2):
        run = cli(["sweep"], proxied_aws, cfg, outputs)
        no_traceback(run)
        assert aws.keys("alice") == {current: "Active", operator_key: "Active"}
        assert run.returncode == 1, f"a user that cannot progress must fail the sweep (I10)\n{run.describe()}"
    assert_no_secrets(outputs, aws.created_secrets)


# =================================================================================================================
# Item 2 - lock-step bootstrap of a key-less user
# =================================================================================================================


def assert_one_bootstrap(aws: AwsEnv, runs: list[Proc]) -> str:
    """Two processes created a key each; one secret version published, the loser's key withdrawn at once."""
    created = [e["key_id"] for run in runs for e in run.named("rotation.key_created")]
    published = [e["key_id"] for run in runs for e in run.named("rotation.published")]
    withdrawn = [e["key_id"] for run in runs for e in run.named("rotation.key_withdrawn")]
    described = "\n".join(r.describe() for r in runs)
    assert len(created) == 2 and len(published) == 1, described
    assert withdrawn == [k for k in created if k not in published], described
    assert len(versions(aws, "alice")) == 1
    current = assert_current_works(aws, "alice")
    assert current == published[0]
    assert aws.keys("alice") == {current: "Active"}, "the loser's key must be withdrawn at once"
    assert in_flight_tags(aws, "alice") == []
    return current


def assert_later_sweeps_clean(aws: AwsEnv, proxied_aws: AwsEnv, cfg: Path, current: str, outputs: list[str]) -> None:
    for _ in range(2):
        later = cli(["sweep"], proxied_aws, cfg, outputs)
        assert later.returncode == 0, later.describe()
        assert not later.named("action.failed") and not later.named("rotation.key_created"), later.describe()
        assert not [e for e in later.named("action.skipped") if "slot" in e.get("reason", "")], later.describe()
    assert aws.keys("alice") == {current: "Active"}


def test_two_sweeps_in_lockstep_bootstrap_a_keyless_user_once(
    aws: AwsEnv, proxied_aws: AwsEnv, fault_proxy: FaultProxy, tmp_path: Path
) -> None:
    """Item 2 (I8, I3): two sweeps bootstrap a key-less user, their CreateAccessKey calls held together.

    Both create a key (a key-less user has two free slots); exactly one secret version is published, the loser
    withdraws its key at once (``rotation.key_withdrawn``): the user ends with exactly one key, the one in
    AWSCURRENT, and no ownership record or intent mark. Both exit 0 (losing a race is no failure); later sweeps
    are clean.
    """
    outputs: list[str] = []
    secrets = sniff_secrets(fault_proxy)
    cfg = config(tmp_path)
    aws.user("alice", keys=0)
    held = fault_proxy.lockstep("CreateAccessKey", parties=2)
    with ThreadPoolExecutor(2) as pool:
        runs = list(pool.map(lambda _: cli(["sweep"], proxied_aws, cfg, outputs), range(2)))
    assert held.fired == 2, "both processes must reach CreateAccessKey"
    no_traceback(*runs)
    for run in runs:
        assert run.returncode == 0, run.describe()
        assert not run.named("action.failed"), run.describe()
    current = assert_one_bootstrap(aws, runs)
    assert_later_sweeps_clean(aws, proxied_aws, cfg, current, outputs)
    assert_no_secret_material(outputs, [*secrets, *aws.created_secrets])


def test_rotate_and_sweep_meeting_at_create_secret_bootstrap_a_keyless_user_once(
    aws: AwsEnv, proxied_aws: AwsEnv, fault_proxy: FaultProxy, tmp_path: Path
) -> None:
    """Item 2 (I8, I3): ``rotate alice`` and a sweep bootstrap key-less alice, held together on CreateAccessKey
    (else the later one's re-read sees the first one's recorded key in flight and rightly stays away) and again on
    CreateSecret, where the sweep goes first: the rotate loses, withdraws its key at once, and says why (exit 1).

    ``rotate`` runs signed by another key (an unmanaged user ``admin``) so that the proxy can tell the two apart.
    """
    outputs: list[str] = []
    secrets = sniff_secrets(fault_proxy)
    cfg = config(tmp_path)
    aws.user("alice", keys=0)
    aws.iam.create_user(UserName="admin", Path="/ops/")
    admin_key = aws.iam.create_access_key(UserName="admin")["AccessKey"]
    aws.created_secrets.append(admin_key["SecretAccessKey"])
    admin = AwsEnv(fault_proxy.url, access_key=admin_key["AccessKeyId"], secret_key=admin_key["SecretAccessKey"])
    held = [fault_proxy.lockstep(operation, parties=2) for operation in ("CreateAccessKey", "CreateSecret")]
    sweep_stored = threading.Event()
    fault_proxy.after("CreateSecret", lambda call: sweep_stored.set(), when=lambda c: c.signer_key_id == "testing")
    fault_proxy.before(
        "CreateSecret",
        lambda call: sweep_stored.wait(20),
        when=lambda c: c.signer_key_id == admin.access_key,
    )
    with ThreadPoolExecutor(2) as pool:
        forced_future = pool.submit(cli, ["rotate", "alice"], admin, cfg, outputs)
        swept = cli(["sweep"], proxied_aws, cfg, outputs)
        forced = forced_future.result()
    assert [rule.fired for rule in held] == [2, 2], "both processes must reach CreateAccessKey and CreateSecret"
    no_traceback(forced, swept)
    assert swept.returncode == 0 and not swept.named("action.failed"), swept.describe()
    assert len(swept.named("rotation.published")) == 1, swept.describe()
    current = assert_one_bootstrap(aws, [forced, swept])
    assert_later_sweeps_clean(aws, proxied_aws, cfg, current, outputs)
    assert_no_secret_material(outputs, [*secrets, *aws.created_secrets])
    assert forced.returncode == 1, forced.describe()
    (line,) = [line for line in forced.stderr.splitlines() if line.startswith("rotator: alice")]
    assert "not rotated" in line, line
    assert "another run created" in line or "created secret" in line, (
        f"the refusal must say why (another run created the secret first), not only that it was forced: {line!r}"
    )


# =================================================================================================================
# Item 3 - staleness
# =================================================================================================================


def test_rotate_whose_put_secret_value_fails_withdraws_the_new_key(
    aws: AwsEnv, proxied_aws: AwsEnv, fault_proxy: FaultProxy, tmp_path: Path
) -> None:
    """Item 3a: ``rotate USER`` where PutSecretValue fails: the new key is withdrawn at once, the failure names it."""
    outputs: list[str] = []
    cfg = config(tmp_path)
    current = bootstrapped(aws, tmp_path, "alice")["alice"]
    before = versions(aws, "alice")
    fault_proxy.fail_before("PutSecretValue")
    run = cli(["rotate", "alice"], proxied_aws, cfg, outputs)
    no_traceback(run)
    assert run.returncode == 1, run.describe()
    (new_key,) = [e["key_id"] for e in run.named("rotation.key_created")]
    assert [e["key_id"] for e in run.named("rotation.key_withdrawn")] == [new_key], run.describe()
    failed = run.named("action.failed")
    assert [e["key_id"] for e in failed] == [new_key], run.describe()
    assert aws.keys("alice") == {current: "Active"}, "the new key must be withdrawn at once"
    assert versions(aws, "alice") == before
    assert assert_current_works(aws, "alice") == current
    assert "not rotated" in run.stderr
    assert_no_secrets(outputs, aws.created_secrets)


def test_a_withdrawn_key_leaves_no_intent_mark_behind(
    aws: AwsEnv, proxied_aws: AwsEnv, fault_proxy: FaultProxy, tmp_path: Path
) -> None:
    """Item 3a / I9 / I10: once its new key is withdrawn (known id, deleted), a failed rotation leaves no intent
    mark: a stale mark would make a key an operator creates right after the failure (the natural reaction) an
    ownership candidate - without CloudTrail "ownership unproven", failing every sweep - instead of foreign.

    (The mark is removed only while it is still the attempt's own: a concurrent attempt may have written its own
    over it, simulation seed 80576. The path where CreateAccessKey itself is refused does the same.)
    """
    outputs: list[str] = []
    cfg = config(tmp_path)
    current = bootstrapped(aws, tmp_path, "alice")["alice"]
    fault_proxy.fail_before("PutSecretValue")
    fault_proxy.cloudtrail_enabled = False
    ops = operator(aws, fault_proxy)
    made: list[str] = []
    # the operator creates a key the moment the rotator's is withdrawn (well within validation_timeout of the mark)
    fault_proxy.after("DeleteAccessKey", lambda call: made.append(operator_creates_key(ops, aws, "alice")))
    run = cli(["rotate", "alice"], proxied_aws, cfg, outputs)
    assert run.returncode == 1 and run.named("rotation.key_withdrawn"), run.describe()
    (operator_key,) = made
    assert aws.keys("alice") == {current: "Active", operator_key: "Active"}

    wait_past_window(created_at(aws, "alice")[operator_key])
    planned = [r for _, k, r in steps_of(plan_steps(proxied_aws, cfg, outputs), "alice") if k == operator_key]
    sweep = cli(["sweep"], proxied_aws, cfg, outputs)
    assert aws.keys("alice") == {current: "Active", operator_key: "Active"}
    assert planned and "foreign" in planned[0], f"the operator's key is not foreign: {planned}"
    assert sweep.returncode == 0, sweep.describe()
    assert in_flight_tags(aws, "alice") == [], "the withdrawn rotation's intent mark outlived it"
    assert_no_secrets(outputs, aws.created_secrets)


@pytest.mark.parametrize("change", ["disable", "delete"])
def test_out_of_band_change_under_a_frozen_credential_report(
    aws: AwsEnv, proxied_aws: AwsEnv, fault_proxy: FaultProxy, tmp_path: Path, change: str
) -> None:
    """Item 3b (staleness bound): an operator disables/deletes the current key while IAM serves a cached report.

    The bound, documented: nothing the rotator reads in bulk contradicts the cached report (no in-flight tags, the
    secret unchanged since), so while the report is frozen ``plan`` and ``sweep`` do not see the change - the
    rotator never acts on the key on that stale word either. Once IAM regenerates the report (thaw: at most 4 h
    later in AWS), the next sweep sees it and rotates: a new AWSCURRENT that works.
    """
    outputs: list[str] = []
    cfg = config(tmp_path)
    current = bootstrapped(aws, tmp_path, "alice")["alice"]
    time.sleep(1.1)  # the report is generated strictly after the secret's last change
    fault_proxy.freeze_credential_report()
    if change == "disable":
        aws.iam.update_access_key(UserName="alice", AccessKeyId=current, Status="Inactive")
    else:
        aws.iam.delete_access_key(UserName="alice", AccessKeyId=current)

    stale_plan = steps_of(plan_steps(proxied_aws, cfg, outputs), "alice")
    assert stale_plan == [], f"documented bound: a frozen report hides the change from plan ({stale_plan})"
    stale = cli(["sweep"], proxied_aws, cfg, outputs)
    assert stale.returncode == 0 and not stale.named("rotation.key_created"), stale.describe()

    fault_proxy.thaw_credential_report()
    fresh_plan = steps_of(plan_steps(proxied_aws, cfg, outputs), "alice")
    assert [a for a, _, _ in fresh_plan] == ["rotate"], fresh_plan
    fresh = cli(["sweep"], proxied_aws, cfg, outputs)
    assert fresh.returncode == 0, fresh.describe()
    assert len(fresh.named("rotation.published")) == 1, fresh.describe()
    new_current = assert_current_works(aws, "alice")
    assert new_current != current
    assert_no_secrets(outputs, aws.created_secrets)


def test_a_secret_changed_after_the_report_is_reread_and_planned_right(
    aws: AwsEnv, proxied_aws: AwsEnv, fault_proxy: FaultProxy, tmp_path: Path
) -> None:
    """Item 3 (staleness): a user whose secret changed after the report's GeneratedTime is re-read with
    ListAccessKeys, the others are not; the plan and inventory are right (the new key current, the old one
    previous, nothing to do yet)."""
    outputs: list[str] = []
    cfg = config(tmp_path)
    first = bootstrapped(aws, tmp_path, "alice", "bob")
    time.sleep(1.1)
    fault_proxy.freeze_credential_report()
    rotated = cli(["rotate", "alice"], proxied_aws, cfg, outputs)
    assert rotated.returncode == 0, rotated.describe()
    (new_key,) = [e["key_id"] for e in rotated.named("rotation.published")]

    fault_proxy.clear_calls()
    steps = plan_steps(proxied_aws, cfg, outputs)
    listed = [c.params.get("UserName") for c in fault_proxy.calls if c.operation == "ListAccessKeys"]
    assert "alice" in listed, listed
    assert "bob" not in listed, f"bob's report row is trusted: nothing newer contradicts it ({listed})"
    assert [a for a, _, _ in steps_of(steps, "alice")] == [], steps
    assert steps_of(steps, "bob") == []

    inventory = cli(["inventory", "--json"], proxied_aws, cfg, outputs)
    assert inventory.returncode == 0, inventory.describe()
    (alice,) = [r for r in json.loads(inventory.stdout) if r["user"] == "alice"]
    roles = {k["key_id"]: (k["role"], k["status"]) for k in alice["keys"]}
    assert roles == {new_key: ("current", "Active"), first["alice"]: ("previous", "Active")}, roles
    assert_no_secrets(outputs, aws.created_secrets)


def test_plan_and_inventory_show_the_credential_report_age(
    aws: AwsEnv, proxied_aws: AwsEnv, fault_proxy: FaultProxy, tmp_path: Path
) -> None:
    """Item 3 (staleness): ``plan`` and ``inventory`` say how old the credential report they read is."""
    cfg = config(tmp_path)
    bootstrapped(aws, tmp_path, "alice")
    generated = datetime.now(UTC) - timedelta(hours=3)
    fault_proxy.freeze_credential_report(generated_at=generated)
    stamp = generated.strftime("%Y-%m-%d %H:%M")
    age = re.compile(r"\b(3h0?\dm|2h5\dm|3 ?h(ours?)?)\b")
    for args in (["plan"], ["inventory"], ["plan", "--json"], ["inventory", "--json"]):
        run = cli(args, proxied_aws, cfg)
        assert run.returncode == 0, run.describe()
        said = run.stdout + run.stderr
        assert re.search(r"credential.report", said, re.IGNORECASE), f"{args}: no word of the report's age\n{said}"
        assert age.search(said) or stamp in said or stamp.replace(" ", "T") in said, (
            f"{args}: the report's age (3 h) or generation time is not shown\n{said}"
        )


# =================================================================================================================
# Item 4 - secrets
# =================================================================================================================


@pytest.mark.parametrize("log_format", ["json", "console"])
@pytest.mark.parametrize("command", ["rotate", "sweep"])
def test_truncated_create_access_key_answer_leaks_nothing_and_is_settled_by_cloudtrail(
    aws: AwsEnv, proxied_aws: AwsEnv, fault_proxy: FaultProxy, tmp_path: Path, *, command: str, log_format: str
) -> None:
    """Item 4 (I7, I3): CreateAccessKey's answer is cut off in the middle of the new secret access key.

    botocore's parser error quotes the body it got; none of it reaches the output: exit 1, one clean line on
    stderr, no traceback, no secret (nor its start, nor anything secret-shaped) - in JSON and console logs. The
    key AWS did create is unrecorded; after the in-flight window CloudTrail proves it the rotator's and a sweep
    deletes it.
    """
    outputs: list[str] = []
    secrets = sniff_secrets(fault_proxy)
    cfg = config(tmp_path)
    if command == "rotate":
        (old,) = bootstrapped(aws, tmp_path, "alice").values()
        args = ["--log-format", log_format, "rotate", "alice"]
        summary = re.compile(r"^rotator: alice: ")
    else:
        (old,) = aws.user("alice", keys=1)
        args = ["--log-format", log_format, "sweep"]
        summary = re.compile(r"^FAILED alice ")
    rule = fault_proxy.truncate_after("CreateAccessKey", at="</SecretAccessKey>")
    run = cli(args, proxied_aws, cfg, outputs)
    assert rule.fired == 1
    assert len(secrets) == 1, "the sniffer saw the one secret AWS issued"
    no_traceback(run)
    assert run.returncode == 1, run.describe()
    lines = [line for line in run.stderr.splitlines() if summary.match(line)]
    assert len(lines) == 1, run.describe()
    assert "CreateAccessKey" in lines[0], lines
    (lost,) = set(aws.keys("alice")) - {old}
    assert not run.named("rotation.key_created")
    assert_no_secret_material(outputs, [*secrets, *aws.created_secrets])

    wait_past_window(created_at(aws, "alice")[lost])
    recovery = cli(["sweep"], proxied_aws, cfg, outputs)
    assert recovery.returncode == 0, recovery.describe()
    assert [e["key_id"] for e in recovery.named("key.orphan_deleted")] == [lost], recovery.describe()
    assert lost not in aws.keys("alice")
    current = assert_current_works(aws, "alice")
    assert set(aws.keys("alice")) == {old, current}
    # The cleanup removes the key (and a bootstrap's record of it); the intent mark is the repair's to remove, once
    # nothing is in flight: the sweep after the cleanup (docs/design.md, "Ownership").
    settled = cli(["sweep"], proxied_aws, cfg, outputs)
    assert settled.returncode == 0, settled.describe()
    assert in_flight_tags(aws, "alice") == []
    assert_no_secret_material(outputs, [*secrets, *aws.created_secrets])


# =================================================================================================================
# Item 5 - several accounts
# =================================================================================================================

ACCOUNT_A, ACCOUNT_B = "111111111111", "222222222222"
ROLE = "RotatorRole"


def member(aws: AwsEnv, account_id: str) -> boto3.session.Session:
    creds = aws.client("sts").assume_role(
        RoleArn=f"arn:aws:iam::{account_id}:role/{ROLE}", RoleSessionName="test-seed"
    )["Credentials"]
    return boto3.session.Session(
        aws_access_key_id=creds["AccessKeyId"],
        aws_secret_access_key=creds["SecretAccessKey"],
        aws_session_token=creds["SessionToken"],
        region_name=REGION,
    )


def member_keys(aws: AwsEnv, session: boto3.session.Session, user: str) -> dict[str, str]:
    meta = session.client("iam", endpoint_url=aws.url).list_access_keys(UserName=user)["AccessKeyMetadata"]
    return {k["AccessKeyId"]: k["Status"] for k in meta}


def test_rotate_a_user_managed_in_two_accounts_reports_each_outcome(
    aws: AwsEnv, proxied_aws: AwsEnv, fault_proxy: FaultProxy, tmp_path: Path
) -> None:
    """Item 5: ``rotate USER`` where USER is managed in two accounts: refused in one (its previous key still
    exists), rotated in the other; both outcomes printed, exit 1. ``--account ID`` narrows to one account."""
    outputs: list[str] = []
    a, b = member(aws, ACCOUNT_A), member(aws, ACCOUNT_B)
    for session, keys in ((a, 1), (b, 0)):
        iam = session.client("iam", endpoint_url=aws.url)
        iam.create_user(UserName="app", Path="/svc/", Tags=[{"Key": "rotator", "Value": "enabled"}])
        for _ in range(keys):
            aws.created_secrets.append(iam.create_access_key(UserName="app")["AccessKey"]["SecretAccessKey"])
    roles = "".join(f"  - arn:aws:iam::{account}:role/{ROLE}\n" for account in (ACCOUNT_A, ACCOUNT_B))
    cfg = config(tmp_path, extra="accounts:\n" + roles)
    setup = cli(["sweep"], proxied_aws, cfg, outputs)  # A: bootstrap, its old key becomes previous; B: first key
    assert setup.returncode == 0, setup.describe()
    assert len(member_keys(aws, a, "app")) == 2 and len(member_keys(aws, b, "app")) == 1
    keys_a = member_keys(aws, a, "app")

    both = cli(["rotate", "app"], proxied_aws, cfg, outputs)
    no_traceback(both)
    assert both.returncode == 1, both.describe()
    assert f"app (account {ACCOUNT_B}): rotated" in both.stdout.splitlines(), both.describe()
    refused = [line for line in both.stderr.splitlines() if line.startswith(f"rotator: app (account {ACCOUNT_A}):")]
    assert len(refused) == 1 and "not rotated" in refused[0] and "previous key" in refused[0], both.describe()
    assert member_keys(aws, a, "app") == keys_a, "refused: nothing created in A"
    assert len(member_keys(aws, b, "app")) == 2
    created = {(e["account"], e["user"]) for e in both.named("rotation.key_created")}
    assert created == {(ACCOUNT_B, "app")}, both.describe()

    keys_b = member_keys(aws, b, "app")
    narrowed = cli(["rotate", "app", "--account", ACCOUNT_A], proxied_aws, cfg, outputs)
    assert narrowed.returncode == 1, narrowed.describe()
    assert narrowed.stdout.strip() == ""
    lines = [line for line in narrowed.stderr.splitlines() if line.startswith("rotator: app")]
    assert len(lines) == 1 and "previous key" in lines[0], narrowed.describe()
    assert ACCOUNT_B not in narrowed.stdout + "\n".join(lines)
    assert member_keys(aws, b, "app") == keys_b and member_keys(aws, a, "app") == keys_a
    nowhere = cli(["rotate", "app", "--account", "333333333333"], proxied_aws, cfg, outputs)
    assert nowhere.returncode == 1 and "not a managed user" in nowhere.stderr, nowhere.describe()
    assert_no_secrets(outputs, aws.created_secrets)


# =================================================================================================================
# Item 6 - a secret that holds another user's keys
# =================================================================================================================


def test_a_secret_holding_another_users_keys_is_never_written(
    aws: AwsEnv, proxied_aws: AwsEnv, fault_proxy: FaultProxy, tmp_path: Path
) -> None:
    """Item 6: a managed secret whose AWSCURRENT names user bob (by tag ``rotator:user=bob``, or only by its
    document) is never written for alice/carol: plan shows a problem skip "holds the keys of user bob", the sweep
    exits 1, the secret's versions are unchanged and no key is created."""
    outputs: list[str] = []
    cfg = config(tmp_path, max_key_age="1s")
    (bob_key,) = aws.user("bob", keys=1, managed=False)
    document = json.dumps(
        {
            "Version": 1,
            "AccessKeyId": bob_key,
            "SecretAccessKey": aws.created_secrets[-1],
            "UserName": "bob",
            "CreateDate": "2024-01-01T00:00:00+00:00",
        }
    )
    old = {}
    for user, tags in (("alice", {"rotator:user": "bob"}), ("carol", {})):
        (old[user],) = aws.user(user, keys=1)
        aws.sm.create_secret(
            Name=f"iam-keys/{user}",
            SecretString=document,
            Tags=[{"Key": k, "Value": v} for k, v in {"rotator:managed": "true", **tags}.items()],
        )
    time.sleep(1.1)
    before = {user: (versions(aws, user), secret_tags(aws, user)) for user in ("alice", "carol")}

    steps = plan_steps(proxied_aws, cfg, outputs)
    sweep = cli(["sweep"], proxied_aws, cfg, outputs)
    rotate = cli(["rotate", "alice"], proxied_aws, cfg, outputs)
    no_traceback(sweep, rotate)
    assert sweep.returncode == 1 and rotate.returncode == 1, sweep.describe() + rotate.describe()
    for user in ("alice", "carol"):
        planned = steps_of(steps, user)
        assert [a for a, _, _ in planned] == ["skip"], planned
        assert "holds the keys of user bob" in planned[0][2], planned
        failed = [e for e in sweep.named("action.failed") if e["user"] == user]
        assert failed and "holds the keys of user bob" in failed[0]["error"], sweep.describe()
        assert (versions(aws, user), secret_tags(aws, user)) == before[user], f"{user}'s secret was written"
        assert aws.keys(user) == {old[user]: "Active"}
    assert "holds the keys of user bob" in rotate.stderr
    assert not any(c.operation in ("CreateAccessKey", "PutSecretValue", "TagResource") for c in fault_proxy.calls)
    assert aws.keys("bob") == {bob_key: "Active"}
    assert_no_secrets(outputs, aws.created_secrets)


# =================================================================================================================
# Item 7 - no room for the rotator's tags
# =================================================================================================================


def tagged_user(aws: AwsEnv, name: str, count: int) -> str:
    """A managed user with ``count`` tags in all (``rotator=enabled`` among them) and one key."""
    tags = {f"team-{n:02d}": "x" for n in range(count - 1)}
    (key,) = aws.user(name, keys=1, tags=tags)
    assert len(user_tags(aws, name)) == count
    return key


def test_a_user_with_no_room_for_the_rotation_tags_is_refused_clearly(
    aws: AwsEnv, proxied_aws: AwsEnv, fault_proxy: FaultProxy, tmp_path: Path
) -> None:
    """Item 7 (I10): a user with 48-50 tags has no room for the intent mark and ownership record (3 tags):
    the rotation is refused with a per-user problem that says so (not "a concurrent rotation won"), no key is
    created, exit 1. A user with 47 tags still rotates (the limit is IAM's 50)."""
    outputs: list[str] = []
    cfg = config(tmp_path)
    keys = {name: tagged_user(aws, name, count) for name, count in (("t47", 47), ("t48", 48), ("t49", 49), ("t50", 50))}
    run = cli(["sweep"], proxied_aws, cfg, outputs)
    no_traceback(run)
    assert run.returncode == 1, run.describe()
    created = {e["user"] for e in run.named("rotation.key_created")}
    assert created == {"t47"}, run.describe()
    assert_current_works(aws, "t47")
    for name in ("t48", "t49", "t50"):
        failed = [e for e in run.named("action.failed") if e["user"] == name]
        assert len(failed) == 1, run.describe()
        assert "tags" in failed[0]["error"] and "concurrent" not in failed[0]["error"], failed
        assert aws.keys(name) == {keys[name]: "Active"}
        assert not has_secret(aws, name)
        assert in_flight_tags(aws, name) == []
    assert not [e for e in run.named("action.skipped") if e["user"] != "t47"], run.describe()
    forced = cli(["rotate", "t49"], proxied_aws, cfg, outputs)
    no_traceback(forced)
    assert forced.returncode == 1, forced.describe()
    (line,) = [line for line in forced.stderr.splitlines() if line.startswith("rotator: t49")]
    assert "tags" in line and "concurrent" not in line, line
    assert aws.keys("t49") == {keys["t49"]: "Active"}
    assert_no_secrets(outputs, aws.created_secrets)


def test_plan_reports_a_user_with_no_room_for_the_rotation_tags(
    aws: AwsEnv, proxied_aws: AwsEnv, fault_proxy: FaultProxy, tmp_path: Path
) -> None:
    """Item 7 / I10: "a mark it cannot write" is reported in ``plan`` too, not only when a sweep tries."""
    cfg = config(tmp_path)
    tagged_user(aws, "t48", 48)
    steps = steps_of(plan_steps(proxied_aws, cfg), "t48")
    assert steps and all(a == "skip" for a, _, _ in steps), f"plan promises a rotation the sweep refuses: {steps}"
    assert any("tags" in r for _, _, r in steps), steps


# =================================================================================================================
# Item 8 - a pending key disabled by an operator
# =================================================================================================================


def test_a_pending_key_disabled_by_an_operator_is_abandoned_then_rotated_again(
    aws: AwsEnv, proxied_aws: AwsEnv, fault_proxy: FaultProxy, tmp_path: Path
) -> None:
    """Item 8: killed after PutSecretValue (the 3rd mutating call: mark, create, put: the record), the new key pending;
    an operator disables it. After the window a sweep abandons it (``key.orphan_deleted``, AWSPENDING removed) and,
    the slot free again, rotates anew in the same sweep."""
    outputs: list[str] = []
    cfg = config(tmp_path, max_key_age="1s")
    current = bootstrapped(aws, tmp_path, "alice")["alice"]
    time.sleep(1.1)
    crash = crashing(3, ["sweep"], proxied_aws, cfg, outputs)
    assert crash.named("crashing_rotator.kill")[0]["operation"] == "PutSecretValue", crash.describe()
    (pending,) = set(aws.keys("alice")) - {current}
    assert any("AWSPENDING" in s for s in aws.stages("alice").values())
    aws.iam.update_access_key(UserName="alice", AccessKeyId=pending, Status="Inactive")

    wait_past_window(created_at(aws, "alice")[pending])
    # One sweep abandons the pending key and, the slot free again, rotates the overdue key at once (I2).
    sweep = cli(["sweep"], proxied_aws, cfg, outputs)
    no_traceback(sweep)
    assert sweep.returncode == 0, sweep.describe()
    assert [e["key_id"] for e in sweep.named("key.orphan_deleted")] == [pending], sweep.describe()
    (published,) = [e["key_id"] for e in sweep.named("rotation.published")]
    assert published != pending
    assert not any("AWSPENDING" in s for s in aws.stages("alice").values()), aws.stages("alice")
    assert assert_current_works(aws, "alice") == published
    assert aws.keys("alice") == {current: "Active", published: "Active"}
    assert secret_tags(aws, "alice")[TAG_PREVIOUS_KEY] == current
    assert in_flight_tags(aws, "alice") == []

    again = cli(["sweep"], proxied_aws, cfg, outputs)
    assert again.returncode == 0, again.describe()
    assert not again.named("rotation.key_created") and not again.named("key.orphan_deleted"), again.describe()
    assert_no_secrets(outputs, aws.created_secrets)


# =================================================================================================================
# Item 9 - a secret scheduled for deletion
# =================================================================================================================


def test_plan_and_sweep_agree_on_a_secret_scheduled_for_deletion(
    aws: AwsEnv, proxied_aws: AwsEnv, fault_proxy: FaultProxy, tmp_path: Path
) -> None:
    """Item 9: a due user whose secret is scheduled for deletion: ``plan`` and ``sweep`` both report a problem skip
    for that user, and nothing is created."""
    outputs: list[str] = []
    cfg = config(tmp_path, max_key_age="1s")
    current = bootstrapped(aws, tmp_path, "alice")["alice"]
    aws.sm.delete_secret(SecretId="iam-keys/alice", RecoveryWindowInDays=7)
    time.sleep(1.1)
    fault_proxy.clear_calls()

    planned = steps_of(plan_steps(proxied_aws, cfg, outputs), "alice")
    assert [a for a, _, _ in planned] == ["skip"], planned
    assert "scheduled for deletion" in planned[0][2], planned
    sweep = cli(["sweep"], proxied_aws, cfg, outputs)
    no_traceback(sweep)
    assert sweep.returncode == 1, sweep.describe()
    failed = [e for e in sweep.named("action.failed") if e["user"] == "alice"]
    assert len(failed) == 1 and "scheduled for deletion" in failed[0]["error"], sweep.describe()
    assert not [e for e in sweep.named("action.skipped") if e["user"] == "alice"], "a problem, not a plain skip"
    mutating = {"CreateAccessKey", "CreateSecret", "PutSecretValue", "TagUser", "TagResource", "RestoreSecret"}
    assert not [c.operation for c in fault_proxy.calls if c.operation in mutating]
    assert aws.keys("alice") == {current: "Active"}
    assert_no_secrets(outputs, aws.created_secrets)


# =================================================================================================================
# Item 10 - rotate --revoke output
# =================================================================================================================


def test_rotate_revoke_of_a_keyless_user_claims_no_disable(
    aws: AwsEnv, proxied_aws: AwsEnv, fault_proxy: FaultProxy, tmp_path: Path
) -> None:
    """Item 10: ``rotate --revoke`` with no previous key (bootstrap of a key-less user) prints "rotated" and
    claims no disable; exit 0."""
    outputs: list[str] = []
    aws.user("alice", keys=0)
    run = cli(["rotate", "--revoke", "alice"], proxied_aws, config(tmp_path), outputs)
    no_traceback(run)
    assert run.returncode == 0, run.describe()
    assert run.stdout.strip() == "alice: rotated", run.describe()
    assert "disabl" not in run.stdout and not run.named("key.disabled")
    current = assert_current_works(aws, "alice")
    assert aws.keys("alice") == {current: "Active"}
    assert_no_secrets(outputs, aws.created_secrets)


def test_rotate_revoke_whose_disable_fails_says_so(
    aws: AwsEnv, proxied_aws: AwsEnv, fault_proxy: FaultProxy, tmp_path: Path
) -> None:
    """Item 10: ``rotate --revoke`` where the disable fails after publication says "rotated, but disabling ...
    failed", exit 1; the new key is published and the old one still Active (it was not disabled)."""
    outputs: list[str] = []
    old = bootstrapped(aws, tmp_path, "alice")["alice"]
    fault_proxy.fail_before("UpdateAccessKey", status=403, code="AccessDenied", times=None)
    run = cli(["rotate", "--revoke", "alice"], proxied_aws, config(tmp_path), outputs)
    no_traceback(run)
    assert run.returncode == 1, run.describe()
    (published,) = [e["key_id"] for e in run.named("rotation.published")]
    lines = [line for line in run.stderr.splitlines() if line.startswith("rotator: alice")]
    assert len(lines) == 1, run.describe()
    assert "rotated" in lines[0] and "not rotated" not in lines[0], lines
    assert f"disabling previous key {old} failed" in lines[0], lines
    assert run.stdout.strip() == "", "no success line for a half-done revoke"
    assert assert_current_works(aws, "alice") == published
    assert aws.keys("alice") == {old: "Active", published: "Active"}
    assert_no_secrets(outputs, aws.created_secrets)


def test_a_lost_answer_to_the_awscurrent_move_is_still_our_publication(
    aws: AwsEnv, proxied_aws: AwsEnv, fault_proxy: FaultProxy, tmp_path: Path
) -> None:
    """Item 11 (found by the random faults): the answer to the rotator's own ``AWSCURRENT`` move is lost (the
    connection resets after Secrets Manager moved the label); botocore repeats the call, which now finds the label
    already moved. That is this run's publication, not "a concurrent run published it": ``rotate`` reports it
    rotated (exit 0), ``rotation.published`` is emitted, the publication is recorded and the user's intent mark
    and ownership record are cleared."""
    outputs: list[str] = []
    old = bootstrapped(aws, tmp_path, "alice")["alice"]
    lost = fault_proxy.reset_after("UpdateSecretVersionStage", when=lambda c: bool(c.params.get("MoveToVersionId")))
    run = cli(["rotate", "alice"], proxied_aws, config(tmp_path), outputs)
    no_traceback(run)
    assert lost.fired == 1
    (created,) = [e["key_id"] for e in run.named("rotation.key_created")]
    assert aws.secret("alice")["AccessKeyId"] == created  # AWSCURRENT moved: the new key is published
    assert aws.keys("alice") == {old: "Active", created: "Active"}
    assert [e["key_id"] for e in run.named("rotation.published")] == [created], run.describe()
    assert assert_current_works(aws, "alice") == created  # and AWSPENDING is gone
    tags = secret_tags(aws, "alice")
    assert tags.get(TAG_CURRENT_KEY) == created and "rotator:published-at" in tags, tags
    assert in_flight_tags(aws, "alice") == [], in_flight_tags(aws, "alice")
    assert run.returncode == 0 and run.stdout.strip() == "alice: rotated", run.describe()
    assert_no_secrets(outputs, aws.created_secrets)


def test_a_repaired_publication_leaves_no_ownership_record_that_could_condemn_the_key(
    aws: AwsEnv, proxied_aws: AwsEnv, fault_proxy: FaultProxy, tmp_path: Path
) -> None:
    """Item 11 (found by the random faults, made deterministic): a bootstrap publishes its key (CreateSecret),
    then its ``UntagUser`` fails, so the user keeps its intent mark and the ownership record ``rotator:own:<key>``.
    The first sweep past the in-flight window must clear those (as it repairs the publication's records).

    Left behind, the record is a standing "proof" that the *published, in-use* key is an orphan of the rotator's:
    should the secret ever vanish (an operator purges it), the next sweep deletes the key at once
    (``key.orphan_deleted``) instead of treating it as the user's pre-existing key (bootstrap: it becomes the
    previous key, with a grace period).
    """
    outputs: list[str] = []
    cfg = config(tmp_path)
    aws.user("alice", keys=0)
    fault_proxy.fail_before("UntagUser", status=400, code="AccessDenied")
    first = cli(["sweep"], proxied_aws, cfg, outputs)
    assert first.returncode == 0 and first.named("rotation.published"), first.describe()  # removing them: best effort
    published = assert_current_works(aws, "alice")
    assert in_flight_tags(aws, "alice"), "the premise: the failed UntagUser left the mark and the record"
    # Within the window the mark stays (another bootstrap may be between its own mark and CreateAccessKey).
    wait_past_window(created_at(aws, "alice")[published])
    later = cli(["sweep"], proxied_aws, cfg, outputs)  # repairs what needs repairing (here: nothing, no previous key)
    assert later.returncode == 0, later.describe()
    leftover = in_flight_tags(aws, "alice")

    aws.sm.delete_secret(SecretId="iam-keys/alice", ForceDeleteWithoutRecovery=True)  # an operator purges it
    wait_past_window(created_at(aws, "alice")[published])
    after = cli(["sweep"], proxied_aws, cfg, outputs)
    no_traceback(after)
    assert published not in [e["key_id"] for e in after.named("key.orphan_deleted")], (
        f"a published key was deleted as an orphan on a stale ownership record {leftover}\n{after.describe()}"
    )
    assert aws.keys("alice").get(published) == "Active"
    assert secret_tags(aws, "alice").get(TAG_PREVIOUS_KEY) == published
    assert leftover == [], f"the repaired publication left its in-flight user tags: {leftover}"
    assert_no_secrets(outputs, aws.created_secrets)


# =================================================================================================================
# Item 11 - random faults converge
# =================================================================================================================

BOOT = [f"boot-{n:02d}" for n in range(15)]
ROT = [f"rot-{n:02d}" for n in range(15)]
HELD = [f"held-{n}" for n in range(3)]  # managed users whose second slot an operator's key holds


def sweep_summary(run: Proc) -> dict[str, Any]:
    finished = run.named("sweep.finished")
    return finished[-1] if finished else {}


@pytest.mark.parametrize("seed", [11, 2024])
def test_random_faults_converge(
    aws: AwsEnv, proxied_aws: AwsEnv, fault_proxy: FaultProxy, tmp_path: Path, seed: int
) -> None:
    """Item 11: 20 % random faults (half before, half after AWS acted) over 30 due users, repeated sweeps, then a
    few sweeps without faults after the in-flight window: every managed AWSCURRENT holds a key that exists, is
    Active and is stored under its own version id; no orphan (every key is AWSCURRENT's or the tracked previous
    key); the operators' foreign keys survive; no secret in any output."""
    why = f"seed={seed}"
    outputs: list[str] = []
    secrets = sniff_secrets(fault_proxy)
    initial = bootstrapped(aws, tmp_path, *ROT, *HELD)
    foreign = {user: aws.iam.create_access_key(UserName=user)["AccessKey"] for user in HELD}
    aws.created_secrets += [k["SecretAccessKey"] for k in foreign.values()]
    for user in BOOT:
        (initial[user],) = aws.user(user, keys=1)
    time.sleep(1.1)
    cfg = config(tmp_path, max_key_age="1s")

    rule = fault_proxy.random_faults(rate=0.2, seed=seed)
    faulty = [cli(["sweep"], proxied_aws, cfg, outputs) for _ in range(3)]
    rule.remove()
    no_traceback(*faulty)
    assert rule.fired > 0, why
    assert {c.fault for c in fault_proxy.faults} >= {"fail_before", "fail_after"}, why
    last_created = max(max(created_at(aws, user).values()) for user in BOOT + ROT)
    wait_past_window(last_created)

    clean: list[Proc] = []
    for _ in range(5):
        run = cli(["sweep"], proxied_aws, cfg, outputs)
        no_traceback(run)
        clean.append(run)
        counts = sweep_summary(run)
        if not any(counts.get(n) for n in ("rotated", "disabled", "deleted", "cleaned")):
            break
    final = clean[-1]
    stuck = {e["user"]: e["error"] for e in final.named("action.failed") if e["user"] not in HELD}
    assert stuck == {}, f"{why}: users that do not converge: {stuck}"
    assert not final.named("key.ownership_unproven"), f"{why}: {final.describe()}"

    leftovers: dict[str, dict[str, str]] = {}
    for user in BOOT + ROT:
        current = assert_current_works(aws, user)
        assert current != initial[user], f"{why}: {user} was never rotated"
        tags = secret_tags(aws, user)
        assert tags.get(TAG_CURRENT_KEY) == current, f"{why}: {user}: {tags}"
        keys = aws.keys(user)
        tracked = {current, tags.get(TAG_PREVIOUS_KEY)}
        assert set(keys) <= tracked, f"{why}: {user} has an orphan: {keys}, tracked {tracked}"
        marks = {t: v for t, v in user_tags(aws, user).items() if t in in_flight_tags(aws, user)}
        if marks:
            role = {current: "current", tags.get(TAG_PREVIOUS_KEY): "previous"}
            leftovers[user] = {
                **marks,
                **{t: role.get(t.removeprefix(USER_TAG_OWN_PREFIX), "gone") for t in marks if "own:" in t},
            }
    for user in HELD:
        assert assert_current_works(aws, user) == initial[user], f"{why}: {user}"
        key_id = foreign[user]["AccessKeyId"]
        assert aws.keys(user) == {initial[user]: "Active", key_id: "Active"}, f"{why}: foreign key of {user} touched"
    assert_no_secret_material(outputs, [*secrets, *aws.created_secrets])
    # Converged means settled: no intent mark or ownership record outlives its rotation once sweeps are clean
    # (a stale mark turns a key an operator creates near it into an ownership candidate, and keeps the
    # credential report distrusted for the user).
    history = {
        user: [
            (e["event"], e.get("error") or e.get("record") or e.get("reason"))
            for run in faulty + clean
            for e in run.events
            if e.get("user") == user
        ]
        for user in leftovers
    }
    assert leftovers == {}, f"{why}: in-flight user tags left after convergence: {leftovers}\n{history}"
