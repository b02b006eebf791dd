"""The simulation's model of AWS (``tests/sim/world.py``) alone: each documented behaviour, switched by its knob.

The conformance suite (``tests/integration/test_model_conformance.py``) holds the model to moto where both
implement a behaviour; these pin what moto does not model (propagation, lag, report caching, throttling,
faults, crashes) and the model's determinism.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest

from rotator.config import Settings
from rotator.errors import (
    AccessDeniedError,
    AwsError,
    ConflictError,
    LimitExceededError,
    NotFoundError,
    ThrottledError,
    UnreachableError,
)
from rotator.executor import Budget, Executor
from rotator.inventory import Inventory
from rotator.lease import Lease
from rotator.model import AWSCURRENT, AWSPENDING, AWSPREVIOUS, Action, KeyStatus, NewKey, SecretText
from rotator.records import same_principal
from tests.sim.world import OPERATOR, OPERATOR_ARN, QUARANTINE_POLICY, Killed, Knobs, World

CALM = Knobs.calm()
HOUR = 3600.0


def world(**knobs: object) -> World:
    made = World(7, knobs=dataclasses.replace(CALM, **knobs))  # type: ignore[arg-type]
    made.add_user("u")
    return made


def new_secret(w: World, name: str = "s", value: str = "v1", token: str = "t1") -> None:  # noqa: S107
    w.account("r").create_secret(
        name, SecretText(value), token, tags={}, kms_key_id=None, replica_regions=[], description=""
    )


# -- IAM ----------------------------------------------------------------------------------------


def test_a_new_key_authenticates_only_after_its_propagation_delay() -> None:
    w = world(propagation_delay=30.0)
    port = w.account("r")
    key = port.create_access_key("u")
    ready = w.truth().users["u"].keys[key.key_id].authenticates_from
    assert w.clock() < ready <= w.clock() + timedelta(seconds=30)
    with pytest.raises(AwsError) as refused:
        port.caller_arn_with(key)
    assert refused.value.code == "InvalidClientTokenId" and not refused.value.maybe_acted
    assert not w.sign(key.key_id, key.secret_access_key.reveal())
    w.clock.advance(30.0)
    assert port.caller_arn_with(key) == "arn:aws:iam::123456789012:user/u"
    assert w.sign(key.key_id, key.secret_access_key.reveal())
    assert not w.sign(key.key_id, "wrong")


def test_propagation_delays_are_drawn_per_key_and_some_are_long() -> None:
    w = World(3, knobs=dataclasses.replace(CALM, propagation_delay=60.0))
    delays = []
    for n in range(20):
        w.add_user(f"u{n}")
        key = w.account("r").create_access_key(f"u{n}")
        delays.append((w.truth().users[f"u{n}"].keys[key.key_id].authenticates_from - w.clock()).total_seconds())
    assert len(set(delays)) == 20 and max(delays) > 10


def test_an_inactive_or_deleted_key_does_not_authenticate_unlike_moto() -> None:
    w = world()
    port = w.account("r")
    key = port.create_access_key("u")
    port.set_key_status("u", key.key_id, KeyStatus.INACTIVE)
    with pytest.raises(AwsError, match="InvalidClientTokenId"):
        port.caller_arn_with(key)
    assert not w.sign(key.key_id, key.secret_access_key.reveal())
    port.set_key_status("u", key.key_id, KeyStatus.ACTIVE)
    assert w.sign(key.key_id, key.secret_access_key.reveal())
    port.delete_access_key("u", key.key_id)
    with pytest.raises(AwsError, match="InvalidClientTokenId"):
        port.caller_arn_with(key)
    assert w.truth().deleted_keys[key.key_id].creator == w.rotator_principal("r")


def test_two_keys_per_user_and_fifty_tags() -> None:
    w = world()
    port = w.account("r")
    port.create_access_key("u")
    assert w.operator_create_key("u") is not None
    with pytest.raises(LimitExceededError) as refused:
        port.create_access_key("u")
    assert refused.value.code == "LimitExceeded" and not refused.value.maybe_acted
    assert w.operator_create_key("u") is None
    port.tag_user("u", {f"k{n}": "v" for n in range(49)})  # 49 + rotator=enabled
    port.tag_user("u", {"k0": "again"})  # replacing a tag adds none
    with pytest.raises(LimitExceededError):
        port.tag_user("u", {"one-more": "v"})
    with pytest.raises(AwsError, match="InvalidInput"):
        port.tag_user("u", {"bad": "a,b"})  # IAM tag values: letters, digits, spaces and _.:/=+-@
    assert len(w.truth().users["u"].tags) == 50


def test_a_deleted_user_is_no_such_entity() -> None:
    w = world()
    port = w.account("r")
    key = port.create_access_key("u")
    w.delete_user("u")
    for call in (
        lambda: port.user("u"),
        lambda: port.access_keys("u"),
        lambda: port.create_access_key("u"),
        lambda: port.tag_user("u", {"a": "b"}),
        lambda: port.set_key_status("u", key.key_id, KeyStatus.INACTIVE),
    ):
        with pytest.raises(NotFoundError) as gone:
            call()
        assert gone.value.code == "NoSuchEntity"
    assert "u" not in {d.name for d in port.user_details()}
    assert key.key_id in w.truth().deleted_keys


def test_list_access_keys_may_briefly_miss_a_new_key() -> None:
    w = world(list_lag=10.0)
    w.clock.advance(60)  # a read of a user younger than the lag may not find the user at all
    port = w.account("r")
    key = port.create_access_key("u")
    w.clock.advance(0.5)
    seen = [any(k.key_id == key.key_id for k in port.access_keys("u")) for _ in range(50)]
    assert not all(seen)  # a read up to 10 s stale misses a key 0.5 s old
    w.clock.advance(10.0)
    assert all(any(k.key_id == key.key_id for k in port.access_keys("u")) for _ in range(20))


def test_tags_may_read_stale_briefly() -> None:
    w = world(tag_lag=5.0)
    w.clock.advance(60)
    port = w.account("r")
    port.tag_user("u", {"mark": "1"})
    w.clock.advance(1.0)
    seen = ["mark" in port.user("u").tags for _ in range(50)]
    assert not all(seen) and any(seen)
    w.clock.advance(5.0)
    assert all("mark" in d.tags for d in port.user_details())


def test_the_credential_report_is_regenerated_at_most_every_four_hours() -> None:
    w = world()
    port = w.account("r")
    first = port.credential_report()
    assert first.generated == w.clock() and first.users["u"] == []
    key = port.create_access_key("u")
    w.clock.advance(4 * HOUR)
    cached = port.credential_report()
    assert cached.generated == first.generated and cached.users["u"] == []  # still the old one: no key in it
    w.clock.advance(1.0)
    fresh = port.credential_report()
    assert fresh.generated == w.clock().replace(microsecond=0)
    assert [slot.created for slot in fresh.users["u"]] == [key.created]


def test_a_report_being_generated_is_polled_until_complete() -> None:
    w = world(report_generation_time=20.0)
    waits: list[tuple[str, float]] = []

    def sleep(actor: str, seconds: float) -> None:
        waits.append((actor, seconds))
        w.clock.advance(seconds)

    w.sleep = sleep
    start = w.clock()
    report = w.account("r").credential_report()
    assert report.generated == start  # the content as of the generation's start
    assert w.clock() - start >= timedelta(seconds=20)
    assert [seconds for _actor, seconds in waits][:4] == [0.5, 1.0, 2.0, 4.0]
    assert {actor for actor, _ in waits} == {"r"}
    assert [op for _actor, op in w.calls].count("iam:GenerateCredentialReport") == len(waits) + 1


def test_last_used_data_lags_the_use() -> None:
    w = world(last_used_lag=2 * HOUR)
    port = w.account("r")
    key = w.operator_create_key("u")
    assert key is not None
    w.clock.advance(60)
    assert w.sign(key.key_id, key.secret_access_key.reveal(), service="s3", region="eu-west-1")
    used = w.clock()
    assert port.key_last_used(key.key_id).at is None
    w.clock.advance(2 * HOUR - 1)
    assert port.key_last_used(key.key_id).at is None
    w.clock.advance(1)
    seen = port.key_last_used(key.key_id)
    assert (seen.at, seen.service, seen.region) == (used, "s3", "eu-west-1")
    assert w.truth().users["u"].keys[key.key_id].last_used == used  # the truth does not lag


def test_cloudtrail_names_the_creator_after_its_delivery_delay() -> None:
    w = world(trail_delay=300.0)
    port = w.account("r")
    own = port.create_access_key("u")
    theirs = w.operator_create_key("u")
    assert theirs is not None
    assert port.key_creation(own.key_id, own.created) is None or w.clock() >= w._trail[own.key_id][2]
    w.clock.advance(300.0)
    mine = port.key_creation(own.key_id, own.created)
    other = port.key_creation(theirs.key_id, theirs.created)
    assert mine is not None and same_principal(mine.principal_arn, port.own_principal())
    assert same_principal(mine.principal_arn, w.rotator_principal("another-replica"))
    assert other is not None and other.principal_arn == OPERATOR_ARN
    assert port.key_creation(own.key_id, own.created + timedelta(hours=2)) is None  # outside the lookup window
    w.clock.advance(91 * 24 * HOUR)
    assert port.key_creation(own.key_id, own.created) is None  # event history keeps 90 days


def test_get_user_lists_no_policies_but_authorization_details_do() -> None:
    w = world()
    assert w.attach_policy("u")
    port = w.account("r")
    assert port.user("u").attached_policies == ()
    assert port.attached_policies("u") == (QUARANTINE_POLICY,)
    assert next(d for d in port.user_details() if d.name == "u").attached_policies == (QUARANTINE_POLICY,)


# -- Secrets Manager ----------------------------------------------------------------------------


def test_a_repeated_client_request_token_is_a_no_op_not_a_label_move() -> None:
    w = world()
    new_secret(w)
    port = w.account("r")
    port.put_secret_value("s", SecretText("v2"), "t2", [AWSCURRENT])
    port.move_stage("s", AWSCURRENT, to_version="t1", from_version="t2")
    before = w.truth().secrets["s"]
    port.put_secret_value("s", SecretText("v2"), "t2", [AWSCURRENT])  # moto would move AWSCURRENT back to t2
    assert w.truth().secrets["s"].versions == before.versions
    assert before.holder(AWSCURRENT) is not None and before.holder(AWSCURRENT).version_id == "t1"  # type: ignore[union-attr]
    with pytest.raises(ConflictError) as refused:
        port.put_secret_value("s", SecretText("other"), "t2", [AWSCURRENT])
    assert refused.value.code == "ResourceExistsException"


def test_labels_first_version_current_and_previous_follows_current() -> None:
    w = world()
    new_secret(w)
    port = w.account("r")
    port.put_secret_value("s", SecretText("v2"), "t2", [AWSPENDING])
    assert port.secret_value("s").reveal() == "v1"
    assert port.secret_value("s", stage=AWSPENDING).reveal() == "v2"
    assert port.move_stage("s", AWSCURRENT, to_version="t2", from_version="t1") is True
    assert port.describe_secret("s").versions == {  # type: ignore[union-attr]
        "t1": (AWSPREVIOUS,),
        "t2": (AWSCURRENT, AWSPENDING),
    }
    assert port.move_stage("s", AWSCURRENT, to_version="t2", from_version="t1") is False  # already done
    with pytest.raises(AwsError, match="InvalidParameterException"):
        port.move_stage("s", AWSPENDING, to_version="t1")  # held by t2 and no RemoveFromVersionId
    with pytest.raises(NotFoundError):
        port.secret_value("s", stage="NOPE")


def test_create_secret_of_an_existing_name_and_the_repeated_token() -> None:
    for idempotent in (True, False):
        w = world(create_token_idempotent=idempotent)
        new_secret(w)
        port = w.account("r")
        with pytest.raises(ConflictError, match="ResourceExistsException"):
            new_secret(w, token="t9")
        with pytest.raises(ConflictError, match="ResourceExistsException"):
            new_secret(w, value="other")
        if idempotent:
            new_secret(w)  # the same request again: ignored
        else:
            with pytest.raises(ConflictError, match="ResourceExistsException"):
                new_secret(w)
        assert list(w.truth().secrets["s"].versions) == ["t1"]
        assert port.describe_secret("s") is not None


def test_a_secret_scheduled_for_deletion_refuses_reads_writes_and_its_name() -> None:
    w = world()
    new_secret(w)
    port = w.account("r")
    assert w.operator_delete_secret("s", recovery_days=7)
    summary = port.describe_secret("s")
    assert summary is not None and summary.deleted
    assert [s.name for s in port.secrets("")] == ["s"]  # IncludePlannedDeletion
    for call in (
        lambda: port.secret_value("s"),
        lambda: port.put_secret_value("s", SecretText("v2"), "t2", [AWSCURRENT]),
        lambda: port.tag_secret("s", {"a": "b"}),
        lambda: new_secret(w, token="t5"),
    ):
        with pytest.raises(AwsError) as refused:
            call()
        assert refused.value.code == "InvalidRequestException"
        assert "deletion" in str(refused.value)
    assert w.operator_restore_secret("s")
    assert port.secret_value("s").reveal() == "v1"
    assert w.operator_delete_secret("s", recovery_days=7)
    w.clock.advance(7 * 24 * HOUR)
    assert port.describe_secret("s") is None
    with pytest.raises(NotFoundError):
        port.secret_value("s")
    new_secret(w, value="again", token="t7")
    assert port.secret_value("s").reveal() == "again"


def test_a_forced_deletion_frees_the_name_after_a_short_delay() -> None:
    w = world(force_delete_delay=30.0)
    new_secret(w)
    assert w.operator_delete_secret("s", recovery_days=None)
    with pytest.raises(AwsError, match="InvalidRequestException"):
        new_secret(w)
    w.clock.advance(30.0)
    new_secret(w, value="fresh", token="t2")
    assert w.truth().secrets["s"].versions["t2"].value == "fresh"
    w2 = world()
    new_secret(w2)
    w2.operator_delete_secret("s", recovery_days=None)
    assert "s" not in w2.truth().secrets


def test_list_secrets_may_not_show_the_last_minutes() -> None:
    w = world(secrets_list_lag=300.0)
    w.clock.advance(3600)
    new_secret(w)
    port = w.account("r")
    w.clock.advance(10)
    seen = ["s" in {s.name for s in port.secrets("")} for _ in range(50)]
    assert not all(seen)
    assert port.describe_secret("s") is not None  # DescribeSecret is the consistent read
    w.clock.advance(300)
    assert all("s" in {s.name for s in port.secrets("")} for _ in range(10))


def test_kms_failures_on_read_and_write() -> None:
    w = world()
    new_secret(w)
    port = w.account("r")
    w.operator_break_kms("s")
    with pytest.raises(AccessDeniedError, match="KMS"):
        port.secret_value("s")
    with pytest.raises(AccessDeniedError):
        port.put_secret_value("s", SecretText("v2"), "t2", [AWSCURRENT])
    assert list(w.truth().secrets["s"].versions) == ["t1"]
    w.operator_break_kms("s", broken=False)
    assert port.secret_value("s").reveal() == "v1"
    flaky = world(kms_failure=1.0)
    with pytest.raises(AwsError) as failed:
        new_secret(flaky)
    assert failed.value.code in {"AccessDeniedException", "EncryptionFailure"} and not failed.value.maybe_acted
    assert "s" not in flaky.truth().secrets


# -- the lease and Organizations ------------------------------------------------------------------


def test_the_lease_is_a_conditional_write_with_strict_expiry() -> None:
    w = world()
    a, b = w.lease_store("a"), w.lease_store("b")
    a.put_lease("t", "l", "A", 100.0, 0.0)
    a.put_lease("t", "l", "A", 160.0, 50.0, last_sweep=42.0)  # renewal by the owner
    record = b.get_lease("t", "l")
    assert record is not None and (record.owner, record.expires, record.last_sweep) == ("A", 160.0, 42.0)
    with pytest.raises(ConflictError) as lost:
        b.put_lease("t", "l", "B", 300.0, 160.0)  # expires < now is false at now == expires
    assert lost.value.code == "ConditionalCheckFailedException"
    b.put_lease("t", "l", "B", 300.0, 160.001)
    with pytest.raises(ConflictError):
        a.delete_lease("t", "l", "A")
    b.delete_lease("t", "l", "B")
    assert a.get_lease("t", "l") is None
    with pytest.raises(ConflictError):
        b.delete_lease("t", "l", "B")  # a missing item fails the condition too


def test_the_lease_module_elects_one_leader_on_the_model() -> None:
    w = world()
    emitted: list[object] = []
    first = Lease(w.lease_store("a"), "t", emit=emitted.append, clock=w.clock, owner="A")
    second = Lease(w.lease_store("b"), "t", emit=emitted.append, clock=w.clock, owner="B")
    assert first.try_acquire() and not second.try_acquire()
    w.clock.advance(61)
    assert second.try_acquire() and not first.held


def test_organizations_lists_accounts_under_nested_parents() -> None:
    w = world()
    w.add_org_account("111111111111", "one", parent="ou-a")
    w.add_org_account("222222222222", "two", state="SUSPENDED")
    orgs = w.organizations("r")
    assert {a.account_id for a in orgs.org_accounts()} == {"123456789012", "111111111111", "222222222222"}
    assert {a.account_id for a in orgs.org_accounts_under(["ou-a"])} == {"111111111111"}
    assert len(orgs.org_accounts_under(["r-sim"])) == 3
    with pytest.raises(AwsError) as missing:
        orgs.org_accounts_under(["ou-missing"])
    assert missing.value.code == "ParentNotFoundException"  # not in the boundary's error map: a plain AwsError


# -- faults ---------------------------------------------------------------------------------------


def test_throttling_is_a_token_bucket_per_service_with_the_boundarys_retries() -> None:
    w = world(throttle={"iam": (1.0, 2.0)}, max_attempts=1)
    port = w.account("r")
    port.user("u")
    port.user("u")
    with pytest.raises(ThrottledError) as throttled:
        port.user("u")
    assert throttled.value.code == "Throttling" and not throttled.value.maybe_acted
    assert port.describe_secret("nothing") is None  # another service, another bucket
    w.clock.advance(1.0)
    port.user("u")
    patient = world(throttle={"iam": (1.0, 1.0)}, max_attempts=8)
    before = patient.clock()
    for _ in range(5):
        patient.account("r").user("u")  # the retries' back-off waits for tokens
    assert patient.clock() - before >= timedelta(seconds=3)
    assert patient.faults["throttled"] == 0


def test_a_failure_before_aws_acted_changes_nothing() -> None:
    w = world(fail_before=1.0)
    port = w.account("r")
    for _ in range(20):
        with pytest.raises(AwsError) as failed:
            port.create_access_key("u")
        error = failed.value
        if isinstance(error, UnreachableError):
            assert not error.maybe_acted  # never connected: the core knows AWS did not act
        else:
            assert error.code in {"InternalFailure", "ServiceUnavailable", "ServiceFailure"} and error.maybe_acted
    assert w.truth().users["u"].keys == {}
    assert w.faults["before"] == 20


def test_a_lost_answer_after_aws_acted() -> None:
    w = world(fail_after=1.0)
    port = w.account("r")
    with pytest.raises(AwsError) as lost:
        port.create_access_key("u")
    assert lost.value.maybe_acted
    (key_id,) = w.truth().users["u"].keys  # the key exists although the caller never saw it
    # A call that is not ``once`` is retried by botocore: the retry's answer is what the caller sees.
    with pytest.raises(NotFoundError):
        port.delete_access_key("u", key_id)
    assert w.truth().users["u"].keys == {}
    port.tag_user("u", {"a": "b"})  # an idempotent retry succeeds
    assert w.truth().users["u"].tags["a"] == "b"


def test_latency_advances_the_clock_per_call() -> None:
    w = world(latency=(0.5, 1.0))
    start = w.clock()
    for _ in range(10):
        w.account("r").user("u")
    assert timedelta(seconds=5) <= w.clock() - start <= timedelta(seconds=10)


# -- crashes --------------------------------------------------------------------------------------


def test_a_killed_actor_is_refused_until_revived() -> None:
    w = world()
    seen: list[tuple[str, str]] = []

    def hook(actor: str, operation: str) -> None:
        seen.append((actor, operation))
        if operation == "acted:iam:CreateAccessKey":
            raise Killed(actor)

    w.hook = hook
    port = w.account("r")
    with pytest.raises(Killed):
        port.create_access_key("u")
    assert len(w.truth().users["u"].keys) == 1  # AWS acted; the answer died with the actor
    assert w.killed("r")
    with pytest.raises(Killed):
        port.user("u")
    with pytest.raises(Killed):
        w.lease_store("r").get_lease("t", "l")
    assert w.account("other").user("u").name == "u"  # other actors go on
    w.revive("r")
    assert port.user("u").name == "u"
    assert seen[:2] == [("r", "iam:CreateAccessKey"), ("r", "acted:iam:CreateAccessKey")]
    assert ("r", "iam:GetUser") not in seen[:3]  # refused before the hook: nothing after kill -9 runs
    w.kill("other")
    with pytest.raises(Killed):
        w.account("other").user("u")
    assert not isinstance(Killed("x"), Exception)  # the core's `except Exception` cannot swallow it


def test_the_hook_sees_every_call_and_only_changes_are_acted() -> None:
    w = world()
    ops: list[str] = []
    w.hook = lambda actor, op: ops.append(op)
    port = w.account("r")
    port.user("u")
    port.create_access_key("u")
    with pytest.raises(LimitExceededError):
        for _ in range(2):
            port.create_access_key("u")
    assert ops == [
        "iam:GetUser",
        "iam:CreateAccessKey",
        "acted:iam:CreateAccessKey",
        "iam:CreateAccessKey",
        "acted:iam:CreateAccessKey",
        "iam:CreateAccessKey",  # refused: AWS did not act, no "acted:" point
    ]
    assert [a.operation for a in w.audit if a.actor == "r"] == ["iam:CreateAccessKey"] * 2
    assert next(a for a in w.audit if a.actor == OPERATOR).operation == "iam:CreateUser"


# -- determinism ----------------------------------------------------------------------------------


def script(seed: int) -> tuple[list[tuple[str, str]], list[str], str]:
    """A fixed sequence of calls on the seed's world: what it answered, as text."""
    w = World(seed)
    w.add_user("u")
    w.add_user("v")
    port = w.account("r")
    answers: list[str] = []
    key: NewKey | None = None
    for step in range(300):
        try:
            if step % 7 == 0:
                key = port.create_access_key("u" if step % 2 else "v")
                answers.append(key.key_id)
            elif step % 7 == 1 and key is not None:
                answers.append(port.caller_arn_with(key))
            elif step % 7 == 2:
                answers.append(repr(port.access_keys("u")))
            elif step % 7 == 3:
                port.put_secret_value("s", SecretText(f"v{step}"), f"t{step}", [AWSCURRENT])
            elif step % 7 == 4:
                new_secret(w, value=f"c{step}", token=f"c{step}")
            elif step % 7 == 5 and key is not None:
                port.delete_access_key("u" if step % 2 else "v", key.key_id)
            else:
                answers.append(repr(port.credential_report()))
        except AwsError as exc:
            answers.append(f"{type(exc).__name__}:{exc.code}:{exc.maybe_acted}")
        w.clock.advance(w.rng.uniform(0, 5))
    return w.calls, answers, repr(w.truth())


def test_the_same_seed_gives_the_same_calls_and_answers() -> None:
    assert script(11) == script(11)
    assert script(12) == script(12)
    assert script(11)[1] != script(12)[1]


def test_knobs_come_from_the_seed_and_each_behaviour_is_switched() -> None:
    assert Knobs.from_seed(5) == Knobs.from_seed(5)
    drawn = [Knobs.from_seed(seed) for seed in range(200)]
    for name in ("propagation_delay", "list_lag", "tag_lag", "last_used_lag", "trail_delay", "fail_after"):
        values = [getattr(k, name) for k in drawn]
        assert any(values) and not all(values), name  # on in some runs, off in others
    assert any(k.throttle for k in drawn) and not all(k.throttle for k in drawn)
    assert {k.create_token_idempotent for k in drawn} == {True, False}
    assert Knobs.calm().describe() == "calm"
    assert "propagation_delay" in Knobs(propagation_delay=3.0).describe()


# -- the core on the model --------------------------------------------------------------------------


def test_the_core_bootstraps_and_rotates_on_the_model_waiting_for_propagation() -> None:
    w = World(21, knobs=dataclasses.replace(CALM, propagation_delay=20.0, list_lag=5.0, latency=(0.01, 0.2)))
    w.add_user("app")
    w.clock.advance(3600)  # the user is older than every lag
    settings = Settings()
    port = w.account("replica-1")
    events: list[object] = []

    def sweep() -> list[Action]:
        inventory = Inventory(port, settings, "123456789012")
        executor = Executor(port, inventory, settings, events.append, w.clock, sleep=w.clock.sleep, sweep_id="sim")
        return [step.action for step in executor.run_user("app", Budget(None)).done]

    assert sweep() == [Action.ROTATE]
    truth = w.truth()
    current = truth.secrets["iam-keys/app"].holder(AWSCURRENT)
    assert current is not None
    document = json.loads(current.value)
    key = truth.users["app"].keys[document["AccessKeyId"]]
    assert key.creator == w.rotator_principal("replica-1") and key.creator_actor == "replica-1"
    assert w.clock() >= key.authenticates_from  # it published only once the key worked
    assert w.sign(key.key_id, document["SecretAccessKey"])
    w.clock.advance(settings.policy.max_key_age.total_seconds() + 86400)
    assert sweep() == [Action.ROTATE]
    after = w.truth()
    newer = after.secrets["iam-keys/app"].holder(AWSCURRENT)
    assert newer is not None and json.loads(newer.value)["AccessKeyId"] != key.key_id
    assert [a.operation for a in w.audit if a.actor == "replica-1"].count("iam:CreateAccessKey") == 2


def test_a_seed_replays_the_same_in_another_process_whatever_the_hash_seed() -> None:
    """A failing seed's replay command runs in a new process: set iteration order must not leak in."""
    code = (
        "import hashlib, sys; sys.path.insert(0, 'tests');"
        "from tests.unit.test_sim_world import script;"
        "calls, answers, _ = script(11);"
        "print(hashlib.sha256(repr((calls, answers)).encode()).hexdigest())"
    )
    root = Path(__file__).resolve().parent.parent.parent
    digests = {
        subprocess.run(
            [sys.executable, "-c", code],
            cwd=root,
            env={**os.environ, "PYTHONHASHSEED": str(hash_seed)},
            capture_output=True,
            text=True,
            check=True,
            timeout=120,
        ).stdout.strip()
        for hash_seed in (1, 2)
    }
    calls, answers, _ = script(11)
    assert digests == {hashlib.sha256(repr((calls, answers)).encode()).hexdigest()}


def test_no_secret_in_the_worlds_errors_or_audit() -> None:
    """What the world says about a call (errors, audit) never holds a secret key or a secret value."""
    w = World(5, knobs=dataclasses.replace(Knobs.from_seed(5), fail_before=0.2, fail_after=0.2, kms_failure=0.2))
    w.add_user("u")
    w.clock.advance(3600)
    port = w.account("r")
    texts: list[str] = []
    for step in range(300):
        for key_id in list(w.truth().users["u"].keys):  # the operator keeps a slot free
            w.operator_delete_key("u", key_id)
        try:
            if step % 3 == 0:
                key = port.create_access_key("u")
                port.delete_access_key("u", key.key_id)
            elif step % 3 == 1:
                port.put_secret_value("s", SecretText(f"secret-value-{step}"), f"t{step}", [AWSCURRENT])
            else:
                new_secret(w, value=f"secret-value-{step}", token=f"c{step}")
        except AwsError as exc:
            texts.append(str(exc))
        w.clock.advance(10)
    texts += [repr(entry) for entry in w.audit]
    truth = w.truth()
    secrets = [key.secret for key in truth.deleted_keys.values()]
    secrets += [v.value for secret in truth.secrets.values() for v in secret.versions.values()]
    assert len(texts) > 100 and len(set(secrets)) > 100
    assert not [text for text in texts for secret in secrets if secret in text]
