"""The response to an exposed key, as the pure policy decides it (docs/operations.md, "Exposed keys").

A managed user with AWS's quarantine policy attached is rotated now whatever its key's age; every key it
had when the quarantine was seen is disabled as soon as the successor is published (no grace, no hold) and
deleted after retention; keys created after the recorded response are not exposed, so a user still
quarantined is not rotated again.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rotator.model import (
    AWSCURRENT,
    AWSPREVIOUS,
    TAG_CURRENT_KEY,
    TAG_DISABLED_AT,
    TAG_DISABLED_KEY,
    TAG_MANAGED,
    TAG_PREVIOUS_KEY,
    TAG_PUBLISHED_AT,
    TAG_QUARANTINE_AT,
    TAG_QUARANTINE_KEYS,
    TAG_QUARANTINE_POLICIES,
    TAG_USER,
    AccessKey,
    Action,
    EffectivePolicy,
    KeyStatus,
    QuarantineMode,
    SecretState,
    UserState,
    quarantine_policy_names,
    version_id_for,
)
from rotator.policy import decide

T0 = datetime(2024, 1, 1, tzinfo=UTC)
NOW = T0 + timedelta(days=10)
V2 = "arn:aws:iam::aws:policy/AWSCompromisedKeyQuarantineV2"
V3 = "arn:aws:iam::aws:policy/AWSCompromisedKeyQuarantineV3"
CUR = "AKIACURRENT000000001"
PRE = "AKIAPREVIOUS00000001"
NEW = "AKIANEW0000000000001"
FOREIGN = "AKIAFOREIGN000000001"
POLICY = EffectivePolicy(
    max_key_age=timedelta(days=90),
    grace_period=timedelta(days=7),
    retention=timedelta(days=7),
)


def key(key_id: str, age: timedelta, status: KeyStatus = KeyStatus.ACTIVE, used: timedelta | None = None) -> AccessKey:
    return AccessKey(key_id, status, NOW - age, last_used=None if used is None else NOW - used, last_used_service="s3")


def state(
    keys: list[AccessKey],
    *,
    current: str | None = CUR,
    previous: str | None = None,
    policies: tuple[str, ...] = (V2,),
    tags: dict[str, str] | None = None,
) -> UserState:
    if current is None:
        return UserState("111111111111", "alice", keys=tuple(keys), attached_policies=policies)
    versions = {version_id_for(current): (AWSCURRENT,)}
    version_keys: dict[str, str | None] = {version_id_for(current): current}
    secret_tags = {TAG_MANAGED: "true", TAG_USER: "alice", TAG_CURRENT_KEY: current, TAG_PUBLISHED_AT: T0.isoformat()}
    if previous:
        versions[version_id_for(previous)] = (AWSPREVIOUS,)
        version_keys[version_id_for(previous)] = previous
        secret_tags[TAG_PREVIOUS_KEY] = previous
    secret_tags.update(tags or {})
    secret = SecretState(
        "iam-keys/alice", exists=True, managed=True, versions=versions, version_keys=version_keys, tags=secret_tags
    )
    return UserState("111111111111", "alice", keys=tuple(keys), secret=secret, attached_policies=policies)


def actions(plan_steps: tuple[object, ...]) -> list[tuple[str, str | None]]:
    return [(s.action.value, s.key_id) for s in plan_steps]  # type: ignore[attr-defined]


def test_only_aws_managed_quarantine_policies_count() -> None:
    arns = [
        V3,
        "arn:aws:iam::aws:policy/ReadOnlyAccess",
        "arn:aws:iam::123456789012:policy/AWSCompromisedKeyQuarantineV2",
    ]
    assert quarantine_policy_names(arns) == ("AWSCompromisedKeyQuarantineV3",)
    assert quarantine_policy_names(["arn:aws-cn:iam::aws:policy/AWSCompromisedKeyQuarantine"]) == (
        "AWSCompromisedKeyQuarantine",
    )


def test_a_young_key_of_a_quarantined_user_is_rotated_now_and_the_record_is_due() -> None:
    plan = decide(state([key(CUR, timedelta(days=1))]), POLICY, NOW)
    assert actions(plan.steps) == [("rotate", CUR)]
    assert plan.steps[0].cause == "quarantine"
    assert plan.steps[0].due_at == NOW
    assert plan.quarantine is not None
    assert plan.quarantine.record_needed
    assert plan.quarantine.exposed == (CUR,)
    assert plan.quarantine.record.tags() == {
        TAG_QUARANTINE_AT: NOW.isoformat(),
        TAG_QUARANTINE_KEYS: CUR,
        TAG_QUARANTINE_POLICIES: "AWSCompromisedKeyQuarantineV2",
    }


def test_without_the_policy_nothing_happens_early() -> None:
    plan = decide(state([key(CUR, timedelta(days=1))], policies=()), POLICY, NOW)
    assert plan.steps == ()
    assert plan.quarantine is None


def test_a_previous_key_is_exposed_too_and_leaves_at_once_to_free_the_slot() -> None:
    keys = [key(CUR, timedelta(days=2)), key(PRE, timedelta(days=30))]
    plan = decide(state(keys, previous=PRE), POLICY, NOW)
    assert actions(plan.steps) == [("delete", PRE), ("rotate", CUR)]
    assert all(s.cause == "quarantine" for s in plan.steps)
    assert plan.quarantine is not None
    assert set(plan.quarantine.exposed) == {CUR, PRE}


def test_after_publication_the_exposed_key_is_disabled_without_grace_even_in_use() -> None:
    """A crash between publication and the disable: the next plan disables it at once; the guard only reports."""
    record = {
        TAG_QUARANTINE_AT: NOW.isoformat(),
        TAG_QUARANTINE_KEYS: CUR,
        TAG_QUARANTINE_POLICIES: "AWSCompromisedKeyQuarantineV2",
    }
    keys = [key(NEW, timedelta(0)), key(CUR, timedelta(days=1), used=timedelta(minutes=5))]
    after = NOW + timedelta(minutes=1)
    plan = decide(state(keys, current=NEW, previous=CUR, tags=record), POLICY, after)
    assert actions(plan.steps) == [("disable", CUR)]
    step = plan.steps[0]
    assert step.cause == "quarantine"
    assert step.loud
    assert "last used" in step.reason  # reported, not held
    assert plan.quarantine is not None
    assert not plan.quarantine.record_needed


def test_an_exposed_key_once_disabled_waits_for_retention_before_deletion() -> None:
    record = {
        TAG_QUARANTINE_AT: NOW.isoformat(),
        TAG_QUARANTINE_KEYS: CUR,
        TAG_QUARANTINE_POLICIES: "AWSCompromisedKeyQuarantineV2",
    }
    disabled = {TAG_DISABLED_KEY: CUR, TAG_DISABLED_AT: NOW.isoformat()}
    keys = [key(NEW, timedelta(0)), key(CUR, timedelta(days=1), KeyStatus.INACTIVE)]
    tags = record | disabled
    early = decide(state(keys, current=NEW, previous=CUR, tags=tags), POLICY, NOW + timedelta(days=6))
    assert actions(early.steps) == []
    late = decide(state(keys, current=NEW, previous=CUR, tags=tags), POLICY, NOW + timedelta(days=7))
    assert actions(late.steps) == [("delete", CUR)]


def test_a_still_quarantined_user_whose_keys_are_newer_than_the_response_is_not_rotated_again() -> None:
    record = {
        TAG_QUARANTINE_AT: NOW.isoformat(),
        TAG_QUARANTINE_KEYS: CUR,
        TAG_QUARANTINE_POLICIES: "AWSCompromisedKeyQuarantineV2",
    }
    plan = decide(state([key(NEW, timedelta(0))], current=NEW, tags=record), POLICY, NOW + timedelta(days=8))
    assert plan.steps == ()
    assert plan.quarantine is not None
    assert plan.quarantine.exposed == ()
    assert not plan.repairs.quarantine_record_done  # the policy is still attached: the record stays


def test_a_new_quarantine_policy_is_a_new_exposure() -> None:
    record = {
        TAG_QUARANTINE_AT: NOW.isoformat(),
        TAG_QUARANTINE_KEYS: CUR,
        TAG_QUARANTINE_POLICIES: "AWSCompromisedKeyQuarantineV2",
    }
    plan = decide(state([key(NEW, timedelta(0))], current=NEW, tags=record, policies=(V2, V3)), POLICY, NOW)
    assert actions(plan.steps) == [("rotate", NEW)]
    assert plan.quarantine is not None
    assert plan.quarantine.record_needed


def test_a_finished_response_is_forgotten_once_the_policy_is_detached() -> None:
    record = {
        TAG_QUARANTINE_AT: NOW.isoformat(),
        TAG_QUARANTINE_KEYS: CUR,
        TAG_QUARANTINE_POLICIES: "AWSCompromisedKeyQuarantineV2",
    }
    done = decide(state([key(NEW, timedelta(0))], current=NEW, tags=record, policies=()), POLICY, NOW)
    assert done.repairs.quarantine_record_done
    assert done.wants_executor
    waiting = decide(
        state(
            [key(NEW, timedelta(0)), key(CUR, timedelta(1), KeyStatus.INACTIVE)],
            current=NEW,
            previous=CUR,
            tags=record,
            policies=(),
        ),
        POLICY,
        NOW,
    )
    assert not waiting.repairs.quarantine_record_done  # an exposed key still exists


def test_bootstrap_of_a_quarantined_user_rotates_the_exposed_key() -> None:
    plan = decide(state([key(CUR, timedelta(days=1))], current=None), POLICY, NOW)
    assert actions(plan.steps) == [("rotate", CUR)]
    assert plan.steps[0].cause == "quarantine"


def test_an_exposed_foreign_key_is_a_problem_reported_and_never_touched() -> None:
    keys = [key(CUR, timedelta(days=1)), key(FOREIGN, timedelta(days=1))]
    plan = decide(state(keys), POLICY, NOW)
    foreign = [s for s in plan.steps if s.key_id == FOREIGN]
    assert [(s.action, s.problem) for s in foreign] == [(Action.SKIP, True)]
    assert not any(s.mutating and s.key_id == FOREIGN for s in plan.steps)


@pytest.mark.parametrize(
    ("mode", "expected"),
    [(QuarantineMode.REPORT, [("skip", None)]), (QuarantineMode.IGNORE, [])],
)
def test_report_and_ignore_change_nothing(mode: QuarantineMode, expected: list[tuple[str, None]]) -> None:
    policy = EffectivePolicy(POLICY.max_key_age, POLICY.grace_period, POLICY.retention, quarantine=mode)
    plan = decide(state([key(CUR, timedelta(days=1))]), policy, NOW)
    assert actions(plan.steps) == expected
    assert not plan.mutating_steps


@settings(max_examples=300, deadline=None)
@given(
    previous=st.sampled_from([None, KeyStatus.ACTIVE, KeyStatus.INACTIVE]),
    foreign=st.booleans(),
    recorded=st.sampled_from(["none", "current", "previous", "both", "neither"]),
    current_age=st.integers(min_value=0, max_value=200),
    later=st.integers(min_value=0, max_value=30),
)
def test_the_response_never_touches_the_current_key_or_a_foreign_one(
    previous: KeyStatus | None, foreign: bool, recorded: str, current_age: int, later: int
) -> None:
    """I4 and I9 hold for quarantined users too; a recorded response is never repeated for newer keys."""
    keys = [key(CUR, timedelta(days=current_age))]
    if previous is not None:
        keys.append(key(PRE, timedelta(days=current_age + 30), previous))
    if foreign and len(keys) < 2:
        keys.append(key(FOREIGN, timedelta(days=1)))
    names = {"current": CUR, "previous": PRE, "both": f"{CUR} {PRE}", "neither": "AKIAGONE000000000001"}
    tags = {}
    if recorded != "none":
        tags = {
            TAG_QUARANTINE_AT: NOW.isoformat(),
            TAG_QUARANTINE_KEYS: names[recorded],
            TAG_QUARANTINE_POLICIES: "AWSCompromisedKeyQuarantineV2",
        }
    plan = decide(state(keys, previous=PRE if previous else None, tags=tags), POLICY, NOW + timedelta(days=later))
    for step in plan.steps:
        if step.action in (Action.DISABLE, Action.DELETE, Action.CLEANUP):
            assert step.key_id != CUR, step  # I4
        if step.mutating:
            assert step.key_id != FOREIGN, step  # I9
    rotations = [s for s in plan.steps if s.action is Action.ROTATE]
    assert len(rotations) <= 1
    exposed_current = recorded in ("none", "current", "both")
    if rotations and not exposed_current:
        assert rotations[0].cause is None  # an ordinary rotation (age), not the response again
    if exposed_current and not (foreign and previous is None):
        assert [s.key_id for s in rotations] == [CUR]  # answered now, whatever the age
