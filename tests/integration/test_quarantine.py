"""The response to an exposed key against moto with AWS's managed policies loaded (issue 14).

moto 5 loads AWS-managed policies, ``AWSCompromisedKeyQuarantineV2`` and ``V3`` among them, when started with
``MOTO_IAM_LOAD_MANAGED_POLICIES=true``: the tests attach the real ARN, as AWS does to a user whose key it found
in public. The server sits behind the fault proxy (signatures checked, CloudTrail's CreateAccessKey events).

* the whole response: rotate now, disable the exposed key the moment its successor is published, never
  detach the policy, no further rotation while the user stays quarantined, delete after retention, forget
  the record once a person detached the policy;
* a SIGKILL after every mutating call of the response: later sweeps finish it, and then change nothing.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import AwsEnv, assert_no_secrets, crashing, record_mutating_calls, through_proxy
from helpers import MotoServer

from rotator.app import App
from rotator.config import load_settings
from rotator.events import Event, EventBus

QUARANTINE_V3 = "arn:aws:iam::aws:policy/AWSCompromisedKeyQuarantineV3"
USER = "svc-exposed"
#: The response's mutating calls, in order (a secret exists, no previous key): the record first.
RESPONSE = (
    "TagResource",  # rotator:quarantine-answered-at / -keys / -policies
    "TagResource",  # intent mark, on the secret
    "CreateAccessKey",
    "PutSecretValue",  # AWSPENDING: the new key's record
    "UpdateSecretVersionStage",  # AWSCURRENT
    "UpdateSecretVersionStage",  # AWSPENDING removed
    "TagResource",  # published-at, the mark cleared
    "UpdateAccessKey",  # the exposed key disabled, no grace
    "TagResource",  # disabled-at
)


@pytest.fixture(scope="module")
def managed_policies_moto() -> Iterator[MotoServer]:
    server = MotoServer({"MOTO_IAM_LOAD_MANAGED_POLICIES": "true"})
    yield server
    server.stop()


@pytest.fixture
def aws(managed_policies_moto: MotoServer) -> Iterator[AwsEnv]:
    yield from through_proxy(managed_policies_moto)


def config(tmp_path: Path, *, retention: str = "1h") -> Path:
    path = tmp_path / "rotator.yaml"
    path.write_text(
        "policy: {max_key_age: 1h, grace_period: 1h, retention: " + retention + ", disable_guard: hold}\n"
        "aws: {validation_timeout: 2s, max_calls_per_second: 1000}\n"
        "response: {quarantine: rotate_and_revoke}\n"
    )
    return path


class Recorder:
    """Events as data, and the mutating AWS calls of the sweeps run in this process."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.events: list[Event] = []
        self.calls = record_mutating_calls(monkeypatch)

    def sweep(self, path: Path) -> list[str]:
        self.calls.clear()
        report = App(load_settings(str(path)), bus=EventBus([self.events.append]), log=False).sweep()
        assert report.failed == 0, [o.failed for o in report.outcomes if o.failed] + report.errors
        return list(self.calls)

    def named(self, *names: str) -> list[tuple[str, dict[str, object]]]:
        return [(e.name, e.fields()) for e in self.events if e.name in names]


@pytest.fixture
def recorder(moto_environ: None, monkeypatch: pytest.MonkeyPatch) -> Recorder:
    return Recorder(monkeypatch)


def secret_tags(aws: AwsEnv) -> dict[str, str]:
    described = aws.sm.describe_secret(SecretId=f"iam-keys/{USER}")
    return {t["Key"]: t["Value"] for t in described.get("Tags", [])}


def attached(aws: AwsEnv) -> list[str]:
    return [p["PolicyArn"] for p in aws.iam.list_attached_user_policies(UserName=USER)["AttachedPolicies"]]


def bootstrapped(aws: AwsEnv, recorder: Recorder, path: Path) -> str:
    """A managed user whose secret holds its one young key; returns that key's id."""
    aws.user(USER, keys=0)
    recorder.sweep(path)
    return str(aws.secret(USER)["AccessKeyId"])


def test_the_response_rotates_now_revokes_at_once_and_is_not_repeated(
    aws: AwsEnv, recorder: Recorder, tmp_path: Path
) -> None:
    path = config(tmp_path, retention="3s")
    exposed = bootstrapped(aws, recorder, path)
    assert recorder.sweep(path) == []  # young key, no quarantine: nothing to do
    aws.iam.attach_user_policy(UserName=USER, PolicyArn=QUARANTINE_V3)
    recorder.events.clear()

    assert tuple(recorder.sweep(path)) == RESPONSE
    new = aws.secret(USER)["AccessKeyId"]
    assert new != exposed
    assert aws.keys(USER) == {exposed: "Inactive", new: "Active"}
    assert attached(aws) == [QUARANTINE_V3]  # never detached by the rotator: a person reviews first
    tags = secret_tags(aws)
    assert tags["rotator:quarantine-keys"] == exposed
    assert tags["rotator:quarantine-policies"] == "AWSCompromisedKeyQuarantineV3"
    sequence = recorder.named("key.quarantine_response", "rotation.key_created", "rotation.published", "key.disabled")
    assert [name for name, _ in sequence] == [
        "key.quarantine_response",
        "rotation.key_created",
        "rotation.published",
        "key.disabled",
        "key.quarantine_response",
    ]
    assert sequence[0][1]["phase"] == "started"
    assert sequence[0][1]["exposed_key_ids"] == (exposed,)
    assert sequence[3][1]["key_id"] == exposed
    assert sequence[3][1]["cause"] == "quarantine"
    assert sequence[4][1] == {
        "account": sequence[4][1]["account"],
        "user": USER,
        "key_id": exposed,
        "sweep_id": sequence[4][1]["sweep_id"],
        "phase": "revoked",
        "policies": ("AWSCompromisedKeyQuarantineV3",),
        "exposed_key_ids": (exposed,),
        "new_key_id": new,
        "reason": "",
    }

    # Still quarantined, but every key is newer than the response: nothing more to do.
    assert recorder.sweep(path) == []
    time.sleep(4.5)  # retention, by AWS's clock (the Date header's whole seconds)
    assert recorder.sweep(path) == ["DeleteAccessKey", "TagResource"]
    assert aws.keys(USER) == {new: "Active"}
    assert recorder.sweep(path) == []
    assert attached(aws) == [QUARANTINE_V3]

    # A person reviewed and detached the policy: the record is forgotten (a later quarantine is a new one).
    aws.iam.detach_user_policy(UserName=USER, PolicyArn=QUARANTINE_V3)
    assert recorder.sweep(path) == ["TagResource"]
    assert secret_tags(aws)["rotator:quarantine-answered-at"] == ""
    assert recorder.sweep(path) == []
    aws.iam.attach_user_policy(UserName=USER, PolicyArn=QUARANTINE_V3)
    assert tuple(recorder.sweep(path)) == RESPONSE
    assert_no_secrets([repr(recorder.events)], aws.created_secrets)


def test_report_mode_changes_nothing_and_says_so(aws: AwsEnv, recorder: Recorder, tmp_path: Path) -> None:
    path = config(tmp_path)
    bootstrapped(aws, recorder, path)
    aws.iam.attach_user_policy(UserName=USER, PolicyArn=QUARANTINE_V3)
    report = tmp_path / "report.yaml"
    report.write_text(path.read_text().replace("rotate_and_revoke", "report"))
    recorder.events.clear()
    assert recorder.sweep(report) == []
    [(_, fields)] = recorder.named("key.quarantine_response")
    assert fields["phase"] == "reported"
    assert "--revoke" in str(fields["reason"])


@pytest.mark.parametrize("k", range(1, len(RESPONSE) + 1))
def test_a_crash_anywhere_in_the_response_is_finished_by_later_sweeps(
    aws: AwsEnv, recorder: Recorder, tmp_path: Path, k: int
) -> None:
    path = config(tmp_path)
    exposed = bootstrapped(aws, recorder, path)
    aws.iam.attach_user_policy(UserName=USER, PolicyArn=QUARANTINE_V3)
    outputs: list[str] = []
    run = crashing(k, ["sweep"], aws, path, outputs)
    assert run.returncode != 0, run.describe()
    assert run.named("crashing_rotator.kill")[0]["operation"] == RESPONSE[k - 1]
    time.sleep(4.2)  # the in-flight window (2 x validation_timeout) for an orphan to be cleaned up

    recovery = crashing(0, ["sweep"], aws, path, outputs)
    assert recovery.returncode == 0, recovery.describe()
    keys = aws.keys(USER)
    current = aws.secret(USER)["AccessKeyId"]
    assert current != exposed
    assert keys[current] == "Active"
    assert keys[exposed] == "Inactive", keys  # disabled, not yet deleted (retention 1h)
    assert len(keys) == 2, keys  # I1, and no orphan left
    tags = secret_tags(aws)
    assert tags["rotator:quarantine-keys"] == exposed
    assert tags["rotator:disabled-key-id"] == exposed
    assert attached(aws) == [QUARANTINE_V3]
    # The response is over: still quarantined, nothing more happens.
    assert recorder.sweep(path) == []
    assert_no_secrets(outputs, aws.created_secrets)
