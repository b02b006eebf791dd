"""Crash at every step (issue 3): kill -9 right after each mutating AWS call, then sweeps converge.

For each scenario - a normal rotation, a bootstrap rotation, the disable path and the delete path - the
rotator runs through ``tests/crashing_rotator.py K sweep``, which SIGKILLs itself right after its K-th
mutating AWS call returned. After the in-flight window (``2 x aws.validation_timeout`` = 2 s here)
ordinary sweeps must converge to a state satisfying SPEC's I1-I7, and a further sweep must change
nothing. ``test_mutating_calls`` counts each scenario's mutating calls on an uninterrupted run: that
fixes the range of K the crash tests cover (update ``OPERATIONS`` when the executor's call order
changes).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from conftest import AwsEnv, Proc, assert_no_secrets, crashing, policy_config, record_mutating_calls, through_proxy
from helpers import MotoServer

from rotator.app import App
from rotator.config import load_settings
from rotator.model import PUBLISHED_AT_CREATION, Action

USER = "svc-crash"
VALIDATION_TIMEOUT = 1.0  # seconds; the in-flight window is twice that
IN_FLIGHT_WINDOW = 2 * VALIDATION_TIMEOUT
# Setting a scenario up crashes nothing, so it may take its time on a loaded machine (a rotation
# that overruns validation_timeout withdraws its key).
SETUP_TIMEOUT = 30
DOCUMENT_FIELDS = {"Version", "AccessKeyId", "SecretAccessKey", "UserName", "CreateDate"}

ROTATION = (
    "TagResource",  # intent mark on the secret (rotation-started, rotation-keys)
    "CreateAccessKey",
    "PutSecretValue",  # AWSPENDING: the new key's record
    "UpdateSecretVersionStage",  # AWSCURRENT onto the new version
    "UpdateSecretVersionStage",  # AWSPENDING removed
    "TagResource",  # current/previous ids, published-at; the mark cleared
)
BOOTSTRAP = ("TagUser", "CreateAccessKey", "TagUser", "CreateSecret", "UntagUser")  # CreateSecret records published-at
DISABLE = ("UpdateAccessKey", "TagResource")
DELETE = ("DeleteAccessKey", "TagResource")  # the deletion record keeps a stale report honest
OPERATIONS: dict[str, tuple[str, ...]] = {
    "rotation": ROTATION,
    "bootstrap": BOOTSTRAP,
    "disable": DISABLE,
    "delete": DELETE,
}


# -- running the rotator -------------------------------------------------------------------------


@pytest.fixture
def aws(moto_server: MotoServer) -> Iterator[AwsEnv]:
    """Through the fault proxy, for its CloudTrail stand-in (a crash right after CreateAccessKey)."""
    yield from through_proxy(moto_server)


def sweep(aws: AwsEnv, config: Path, outputs: list[str]) -> Proc:
    run = crashing(0, ["sweep"], aws, config, outputs)
    assert run.returncode == 0, run.describe()
    return run


InProcess = Callable[[Path], list[str]]


@pytest.fixture
def in_process(moto_environ: None, monkeypatch: pytest.MonkeyPatch) -> InProcess:
    """A sweep inside the test process (no interpreter start-up): returns its mutating AWS calls.

    Used to set scenarios up and for the final "a further sweep changes nothing" check; the runs
    under test (the crashing one and the first recovery) are real ``rotator`` processes.
    """
    calls = record_mutating_calls(monkeypatch)

    def run(config: Path) -> list[str]:
        calls.clear()
        report = App(load_settings(str(config)), log=False).sweep()
        assert report.failed == 0, [o.failed for o in report.outcomes if o.failed] + report.errors
        return list(calls)

    return run


# -- reading AWS -------------------------------------------------------------------------------------


def key_dates(aws: AwsEnv, user: str) -> dict[str, datetime]:
    meta = aws.iam.list_access_keys(UserName=user)["AccessKeyMetadata"]
    return {k["AccessKeyId"]: k["CreateDate"] for k in meta}


def secret_tags(aws: AwsEnv, user: str) -> dict[str, str]:
    described = aws.sm.describe_secret(SecretId=f"iam-keys/{user}")
    return {t["Key"]: t["Value"] for t in described.get("Tags", [])}


def published_at(aws: AwsEnv, user: str, *, as_counted: bool = True) -> datetime:
    """When the current key was published: ``published-at``, or for a bootstrap's key (``secret-created``) the
    secret's CreatedDate, the publication itself; ``as_counted`` adds the second the rotator adds before its grace
    period starts (``SecretState.published_at``: CreatedDate may be cut to the second), to wait for it."""
    described = aws.sm.describe_secret(SecretId=f"iam-keys/{user}")
    recorded = {t["Key"]: t["Value"] for t in described.get("Tags", [])}["rotator:published-at"]
    if recorded == PUBLISHED_AT_CREATION:
        created: datetime = described["CreatedDate"]
        return created.astimezone(UTC) + timedelta(seconds=1 if as_counted else 0)
    return datetime.fromisoformat(recorded)


def secret_exists(aws: AwsEnv, user: str) -> bool:
    try:
        aws.sm.describe_secret(SecretId=f"iam-keys/{user}")
    except aws.sm.exceptions.ResourceNotFoundException:
        return False
    return True


def sleep_until(moment: datetime) -> None:
    delay = (moment - datetime.now(UTC)).total_seconds()
    if delay > 0:
        time.sleep(delay)


def assert_current_works(aws: AwsEnv, user: str) -> dict[str, Any]:
    """I2/I4: AWSCURRENT holds SPEC's document for a key that exists, is Active and signs requests."""
    document = aws.secret(user)
    assert set(document) == DOCUMENT_FIELDS, document.keys()
    assert document["Version"] == 1
    assert document["UserName"] == user
    key_id = document["AccessKeyId"]
    keys = aws.keys(user)
    assert keys.get(key_id) == "Active", f"AWSCURRENT holds {key_id}, IAM has {keys}"
    created = datetime.fromisoformat(document["CreateDate"])
    assert created.utcoffset() == timedelta(0), "CreateDate must be UTC"
    assert abs(created - key_dates(aws, user)[key_id]) < timedelta(seconds=1)
    # The fault proxy in front of moto checks the SigV4 signature of keys created through it (moto alone takes any
    # secret): this proves the stored SecretAccessKey is the key's own.
    arn = aws.caller_arn(key_id, document["SecretAccessKey"])
    assert arn == aws.iam.get_user(UserName=user)["User"]["Arn"]
    return document


def assert_converged(aws: AwsEnv, user: str, before: set[str]) -> tuple[str, str | None]:
    """I1-I4 after recovery; returns the (current, previous) key ids."""
    keys = aws.keys(user)
    assert len(keys) <= 2, keys  # I1
    stages = aws.stages(user)
    assert sum("AWSCURRENT" in s for s in stages.values()) == 1, stages
    assert not any("AWSPENDING" in s for s in stages.values()), f"rotation left pending: {stages}"
    current = assert_current_works(aws, user)["AccessKeyId"]
    previous = None
    if any("AWSPREVIOUS" in s for s in stages.values()):
        previous = aws.secret(user, "AWSPREVIOUS")["AccessKeyId"]
    previous = previous or secret_tags(aws, user).get("rotator:previous-key-id")
    # I3: every key the rotator created is held by the secret; anything else existed before.
    unreferenced = set(keys) - {current, previous} - before
    assert not unreferenced, f"orphaned keys survived recovery: {unreferenced} (keys {keys}, stages {stages})"
    # What later steps and the inventory's credential-report fast path rely on is recorded in AWS,
    # consistently with IAM, even when a crash interrupted the publication that writes it.
    tags, dates = secret_tags(aws, user), key_dates(aws, user)
    assert tags.get("rotator:current-key-id") == current, tags
    assert "rotator:published-at" in tags, tags
    recorded = datetime.fromisoformat(tags["rotator:current-key-created"])
    assert abs(recorded - dates[current]) < timedelta(seconds=1), (tags, dates)
    if previous in dates:
        assert tags.get("rotator:previous-key-id") == previous, tags
        recorded = datetime.fromisoformat(tags["rotator:previous-key-created"])
        assert abs(recorded - dates[previous]) < timedelta(seconds=1), (tags, dates)
    return current, previous


# -- scenarios -------------------------------------------------------------------------------------


@dataclass
class Setup:
    """What a scenario's state was right before the crashing sweep."""

    config: Path  # for the crashing sweep and the recovery sweeps
    before: set[str] = field(default_factory=set)  # key ids existing before the crashing sweep
    current: str | None = None  # AWSCURRENT's key before the crashing sweep
    previous: str | None = None  # the previous key before the crashing sweep


def setup_rotation(aws: AwsEnv, tmp_path: Path, in_process: InProcess) -> Setup:
    """A user whose secret's only key K1 is older than max_key_age (1 s) and has no previous key."""
    aws.user(USER, keys=0)
    in_process(policy_config(tmp_path, "setup", validation_timeout=SETUP_TIMEOUT))  # bootstrap: the first key K1
    (k1, created), *_ = key_dates(aws, USER).items()
    crash = policy_config(tmp_path, "crash", max_key_age="1s", validation_timeout=VALIDATION_TIMEOUT)
    sleep_until(created + timedelta(seconds=1.05))
    return Setup(crash, {k1}, current=k1)


def setup_bootstrap(aws: AwsEnv, tmp_path: Path, in_process: InProcess) -> Setup:
    """A user with one key K0 (created just now, as an operator would) and no secret."""
    (k0,) = aws.user(USER, keys=1)
    return Setup(policy_config(tmp_path, "crash", validation_timeout=VALIDATION_TIMEOUT), {k0})


def setup_disable(aws: AwsEnv, tmp_path: Path, in_process: InProcess) -> Setup:
    """K1 current, bootstrap's K0 previous and past its grace period (1 s)."""
    (k0,) = aws.user(USER, keys=1)
    in_process(policy_config(tmp_path, "setup", validation_timeout=SETUP_TIMEOUT))
    tags = secret_tags(aws, USER)
    k1 = tags["rotator:current-key-id"]
    crash = policy_config(tmp_path, "crash", grace_period="1s", validation_timeout=VALIDATION_TIMEOUT)
    sleep_until(published_at(aws, USER) + timedelta(seconds=1.05))
    return Setup(crash, {k0, k1}, k1, k0)


def setup_delete(aws: AwsEnv, tmp_path: Path, in_process: InProcess) -> Setup:
    """K1 current, K0 previous, disabled and past its retention (1 s)."""
    (k0,) = aws.user(USER, keys=1)
    setup = policy_config(tmp_path, "setup", grace_period="1s", validation_timeout=SETUP_TIMEOUT)
    in_process(setup)  # bootstrap
    tags = secret_tags(aws, USER)
    k1 = tags["rotator:current-key-id"]
    sleep_until(published_at(aws, USER) + timedelta(seconds=1.05))
    in_process(setup)  # disables K0
    assert aws.keys(USER) == {k0: "Inactive", k1: "Active"}
    disabled_at = datetime.fromisoformat(secret_tags(aws, USER)["rotator:disabled-at"])
    crash = policy_config(tmp_path, "crash", retention="1s", validation_timeout=VALIDATION_TIMEOUT)
    sleep_until(disabled_at + timedelta(seconds=1.05))
    return Setup(crash, {k0, k1}, k1, k0)


SETUPS: dict[str, Callable[[AwsEnv, Path, InProcess], Setup]] = {
    "rotation": setup_rotation,
    "bootstrap": setup_bootstrap,
    "disable": setup_disable,
    "delete": setup_delete,
}


def assert_scenario_outcome(scenario: str, aws: AwsEnv, setup: Setup, current: str, previous: str | None) -> None:
    """Where each scenario must end (the durations of its crash config keep that state stable)."""
    keys = aws.keys(USER)
    if scenario in ("rotation", "bootstrap"):
        (old,) = setup.before
        assert current != old
        assert previous == old, "the replaced key must be tracked as the previous key"
        # I5 (grace 1 h): the replaced key stays Active; I3: exactly one new key.
        assert keys == {old: "Active", current: "Active"}
    elif scenario == "disable":
        assert (current, previous) == (setup.current, setup.previous)
        assert keys == {setup.current: "Active", setup.previous: "Inactive"}  # I5: retention 1 h
        tags = secret_tags(aws, USER)
        assert tags["rotator:disabled-key-id"] == setup.previous
        published = published_at(aws, USER, as_counted=False)  # I5 against the publication AWS recorded
        disabled = datetime.fromisoformat(tags["rotator:disabled-at"])
        assert disabled >= published + timedelta(seconds=1), "I5: disabled before its grace period"
    elif scenario == "delete":
        assert current == setup.current
        assert keys == {setup.current: "Active"}
    else:  # pragma: no cover
        raise AssertionError(scenario)


def assert_no_secret_leaks(aws: AwsEnv, outputs: list[str]) -> None:
    """I7 over every secret access key this test could learn (IAM-issued keys in any version)."""
    secrets = list(aws.created_secrets)
    if secret_exists(aws, USER):
        versions = aws.sm.list_secret_version_ids(SecretId=f"iam-keys/{USER}", IncludeDeprecated=True)
        for version in versions["Versions"]:
            value = aws.sm.get_secret_value(SecretId=f"iam-keys/{USER}", VersionId=version["VersionId"])
            secrets.append(json.loads(value["SecretString"])["SecretAccessKey"])
    assert secrets
    assert_no_secrets(outputs, secrets)


# -- the tests ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("scenario", list(OPERATIONS))
def test_mutating_calls(scenario: str, aws: AwsEnv, tmp_path: Path, in_process: InProcess) -> None:
    """An uninterrupted run makes exactly OPERATIONS[scenario]: the K the crash tests step through."""
    outputs: list[str] = []
    setup = SETUPS[scenario](aws, tmp_path, in_process)
    run = sweep(aws, setup.config, outputs)
    assert run.operations == list(OPERATIONS[scenario])
    current, previous = assert_converged(aws, USER, setup.before)
    assert_scenario_outcome(scenario, aws, setup, current, previous)
    assert_no_secret_leaks(aws, outputs)


CRASH_POINTS = [
    pytest.param(scenario, k, id=f"{scenario}-{k}-after-{operation}")
    for scenario, operations in OPERATIONS.items()
    for k, operation in enumerate(operations, start=1)
]


@pytest.mark.parametrize(("scenario", "k"), CRASH_POINTS)
def test_crash_then_sweep_converges(scenario: str, k: int, aws: AwsEnv, tmp_path: Path, in_process: InProcess) -> None:
    outputs: list[str] = []
    setup = SETUPS[scenario](aws, tmp_path, in_process)

    crashed = crashing(k, ["sweep"], aws, setup.config, outputs)
    assert crashed.returncode == -9, f"expected a SIGKILL after mutating call {k}: {crashed.describe()}"
    (kill,) = crashed.named("crashing_rotator.kill")
    assert (kill["after"], kill["operation"]) == (k, OPERATIONS[scenario][k - 1])
    crashed_at = datetime.now(UTC)

    # Right after the crash, before any recovery: the secret still works (I2, I4) and IAM's limit holds.
    assert len(aws.keys(USER)) <= 2
    if secret_exists(aws, USER):
        assert_current_works(aws, USER)
    if setup.current is not None:
        assert aws.keys(USER).get(setup.current) == "Active", "I4: the current key was disabled or deleted"

    sleep_until(crashed_at + timedelta(seconds=IN_FLIGHT_WINDOW + 0.2))
    recovery = sweep(aws, setup.config, outputs)
    current, previous = assert_converged(aws, USER, setup.before)
    assert_scenario_outcome(scenario, aws, setup, current, previous)
    assert not recovery.named("action.failed"), recovery.describe()

    # Converged: a further sweep changes nothing (in particular cleans up no orphan: I3).
    assert in_process(setup.config) == []
    assert assert_converged(aws, USER, setup.before) == (current, previous)
    assert_no_secret_leaks(aws, outputs)


@pytest.mark.parametrize("k", [1, 2], ids=["after-TagUser", "after-CreateAccessKey"])
def test_preexisting_key_is_never_taken_for_an_orphan(
    k: int, aws: AwsEnv, tmp_path: Path, in_process: InProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    """I3's cleanup deletes only keys the rotator created - never the key a consumer already uses.

    An operator creates a user with its key and the first rotation (bootstrap) starts moments later,
    well within the default ``validation_timeout`` (120 s), then dies. The key that existed before the
    rotation started must not count as the rotator's orphan (which cleanup would delete once the
    in-flight window passed): it is the user's working key, the one the bootstrap replaces.
    """
    (k0,) = aws.user(USER, keys=1)
    config = tmp_path / "default-timeout.yaml"  # production's validation_timeout (120 s)
    config.write_text("policy:\n  max_key_age: 1h\naws:\n  max_calls_per_second: 1000\n")
    crashed = crashing(k, ["sweep"], aws, config, [])
    assert crashed.returncode == -9, crashed.describe()
    new = set(aws.keys(USER)) - {k0}
    assert len(new) == k - 1

    ((_, plan),) = [(v, p) for v in App(load_settings(str(config)), log=False).plan() for p in v.plans]
    for step in plan.steps:
        if step.key_id == k0:
            assert step.action is not Action.CLEANUP and "in flight" not in step.reason, step
        else:  # the crashed run's own key is the orphan: in flight now, cleaned up later
            assert step.key_id in new and "in flight" in step.reason, step
    for upcoming in plan.upcoming:
        assert upcoming.key_id != k0, f"{k0} scheduled for {upcoming.action} as an orphan"
    if k == 1:  # nothing in flight: the bootstrap simply runs again, replacing K0
        assert [(s.action, s.key_id) for s in plan.steps] == [(Action.ROTATE, k0)]
