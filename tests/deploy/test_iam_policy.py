"""deploy/iam/rotator-policy.json (and optional/*.json): exactly the rotator's operations, scoped, nothing mutating on
"*", every per-user write conditioned on the selection tag and every secret write on the rotator's tag.

These are static checks of the documents: moto evaluates no IAM conditions, so test_iam_least_privilege.py's small
evaluator proves what the conditions allow and refuse for the calls the rotator really sends.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from iam_operations import (
    ACCOUNT_LEVEL_OPERATIONS,
    MUTATING_OPERATIONS,
    OPTIONAL_KMS_ACTIONS,
    ROTATOR_OPERATIONS,
    SECRET_OPERATIONS,
    USER_OPERATIONS,
)

POLICY = Path(__file__).resolve().parents[2] / "deploy" / "iam" / "rotator-policy.json"
OPTIONAL = POLICY.parent / "optional"
#: Opt-in statements, one file per feature (deploy/iam/README.md): file stem -> the actions it may grant.
OPTIONAL_ACTIONS: dict[str, set[str]] = {
    "assume-role": {"sts:AssumeRole"},
    "kms": set(OPTIONAL_KMS_ACTIONS),
    "dynamodb-lease": {"dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:DeleteItem"},
    "organizations": {
        "organizations:ListAccounts",
        "organizations:ListAccountsForParent",
        "organizations:ListChildren",
    },
    "secret-replicas": {"secretsmanager:ReplicateSecretToRegions"},
    "sns-notifications": {"sns:Publish"},
}
#: The user tag the default ``selection.tag`` selects by, and the tag the rotator puts on every secret it creates.
SELECTION_CONDITION = {"aws:ResourceTag/rotator": "enabled"}
ROTATOR_SECRET_TAG = "rotator:managed"


def as_list(value: str | list[str]) -> list[str]:
    return [value] if isinstance(value, str) else list(value)


@pytest.fixture(scope="module")
def policy() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(POLICY.read_text(encoding="utf-8"))
    return data


@pytest.fixture(scope="module")
def statements(policy: dict[str, Any]) -> list[dict[str, Any]]:
    return as_list(policy["Statement"])


def optional_statements(stem: str) -> list[dict[str, Any]]:
    document = json.loads((OPTIONAL / f"{stem}.json").read_text(encoding="utf-8"))
    assert document["Version"] == "2012-10-17", stem
    return as_list(document["Statement"])


@pytest.fixture(scope="module")
def every_statement(statements: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The policy and every opt-in file: the checks below hold for all of them."""
    return statements + [s for stem in OPTIONAL_ACTIONS for s in optional_statements(stem)]


def test_document_shape(policy: dict[str, Any], statements: list[dict[str, Any]]) -> None:
    assert policy["Version"] == "2012-10-17"
    sids = [s.get("Sid") for s in statements]
    assert all(sids), "every statement needs a Sid"
    assert len(sids) == len(set(sids))
    for s in statements:
        assert s["Effect"] == "Allow", s["Sid"]
        assert "Action" in s, s["Sid"]
        assert "Resource" in s, s["Sid"]
        assert not {"NotAction", "NotResource", "NotPrincipal", "Principal"} & s.keys(), s["Sid"]


def actions_of(statements: list[dict[str, Any]]) -> set[str]:
    return {action for s in statements for action in as_list(s["Action"])}


def test_actions_are_exactly_the_rotator_operations(statements: list[dict[str, Any]]) -> None:
    allowed = actions_of(statements)
    for action in allowed:
        assert "*" not in action and "?" not in action, f"wildcard action {action}"
    # KMS and AssumeRole are opt-in (optional/kms.json, optional/assume-role.json), not in the base policy.
    base = ROTATOR_OPERATIONS - {"sts:AssumeRole", "sns:Publish"}  # sns: optional/sns-notifications.json
    assert allowed == base, f"extra: {sorted(allowed - base)}, missing: {sorted(base - allowed)}"


def test_optional_files_grant_only_their_feature() -> None:
    assert {p.stem for p in OPTIONAL.glob("*.json")} == set(OPTIONAL_ACTIONS)
    for stem, expected in OPTIONAL_ACTIONS.items():
        statements = optional_statements(stem)
        test_document_shape({"Version": "2012-10-17"}, statements)
        assert actions_of(statements) == expected, stem


def test_nothing_mutating_on_every_resource(every_statement: list[dict[str, Any]]) -> None:
    for s in every_statement:
        actions = set(as_list(s["Action"]))
        resources = as_list(s["Resource"])
        if "*" in resources:
            # Organizations' listings read the organization (run in its management or delegated account).
            extra = sorted(actions - ACCOUNT_LEVEL_OPERATIONS - OPTIONAL_ACTIONS["organizations"])
            assert not extra, f"{s['Sid']}: {extra} on Resource *"
        assert not (actions & MUTATING_OPERATIONS and any(r.endswith(":*") for r in resources)), s["Sid"]


def account_of(arn: str) -> str:
    """The account field of ``arn`` (``${aws:PrincipalAccount}``, the policy variable, counts as one field)."""
    return (
        arn.replace("${aws:PrincipalAccount}", "PRINCIPAL")
        .split(":")[4]
        .replace("PRINCIPAL", "${aws:PrincipalAccount}")
    )


def test_resources_are_scoped(every_statement: list[dict[str, Any]]) -> None:
    for s in every_statement:
        actions = set(as_list(s["Action"]))
        resources = as_list(s["Resource"])
        if actions & USER_OPERATIONS:
            assert actions <= USER_OPERATIONS, s["Sid"]
            for r in resources:
                assert r.startswith("arn:aws:iam::") and ":user/" in r, s["Sid"]
                # The role's own account, whatever account it is deployed in (a policy variable AWS resolves).
                assert account_of(r) == "${aws:PrincipalAccount}", s["Sid"]
        if actions & (SECRET_OPERATIONS | {"secretsmanager:ReplicateSecretToRegions"}):
            assert actions <= SECRET_OPERATIONS | {"secretsmanager:ReplicateSecretToRegions"}, s["Sid"]
            for r in resources:
                assert r.startswith("arn:aws:secretsmanager:") and ":secret:" in r, s["Sid"]
                assert not r.endswith(":secret:*"), f"{s['Sid']}: scope secrets to a name prefix"
                assert account_of(r) == "${aws:PrincipalAccount}", s["Sid"]
        if "sts:AssumeRole" in actions:
            assert actions == {"sts:AssumeRole"}, s["Sid"]
            assert all(r.startswith("arn:aws:iam::") and ":role/" in r for r in resources), s["Sid"]


def test_create_secret_requires_the_managed_tag(statements: list[dict[str, Any]]) -> None:
    creating = [s for s in statements if "secretsmanager:CreateSecret" in as_list(s["Action"])]
    assert creating
    for s in creating:
        assert s["Condition"]["StringEquals"]["aws:RequestTag/rotator:managed"] == "true", s["Sid"]


def test_per_user_writes_need_the_selection_tag(every_statement: list[dict[str, Any]]) -> None:
    """Issue 15: with the users' path at ``/`` (the config's default) no write reaches a user without the tag."""
    user_writes = USER_OPERATIONS & MUTATING_OPERATIONS
    granting = [s for s in every_statement if set(as_list(s["Action"])) & user_writes]
    assert {a for s in granting for a in as_list(s["Action"])} >= user_writes
    for s in granting:
        assert s["Condition"]["StringEquals"] == SELECTION_CONDITION, s["Sid"]


def test_secret_writes_need_the_rotators_tag(every_statement: list[dict[str, Any]]) -> None:
    """Every secret write: on a secret tagged by the rotator, or (creating one) with that tag in the request."""
    secret_writes = (SECRET_OPERATIONS & MUTATING_OPERATIONS) | {"secretsmanager:ReplicateSecretToRegions"}
    for s in every_statement:
        if not set(as_list(s["Action"])) & secret_writes:
            continue
        equals = s["Condition"]["StringEquals"]
        assert equals in (
            {f"aws:ResourceTag/{ROTATOR_SECRET_TAG}": "true"},
            {f"aws:RequestTag/{ROTATOR_SECRET_TAG}": "true"},
        ), s["Sid"]
        if f"aws:ResourceTag/{ROTATOR_SECRET_TAG}" in equals:
            assert "secretsmanager:CreateSecret" not in as_list(s["Action"]), s["Sid"]


def test_the_lease_statement_is_the_lease_table_and_item(every_statement: list[dict[str, Any]]) -> None:
    (lease,) = [s for s in every_statement if s["Sid"] == "LeaderLease"]
    assert as_list(lease["Resource"]) == ["arn:aws:dynamodb:*:${aws:PrincipalAccount}:table/iam-key-rotator-lease"]
    assert lease["Condition"] == {"ForAllValues:StringEquals": {"dynamodb:LeadingKeys": "iam-key-rotator"}}


def test_kms_only_via_secrets_manager(every_statement: list[dict[str, Any]]) -> None:
    for s in every_statement:
        actions = set(as_list(s["Action"]))
        if actions & OPTIONAL_KMS_ACTIONS:
            assert actions <= OPTIONAL_KMS_ACTIONS, s["Sid"]
            assert "*" not in as_list(s["Resource"]), s["Sid"]
            via = s["Condition"]["StringLike"]["kms:ViaService"]
            assert all(v.startswith("secretsmanager.") for v in as_list(via)), s["Sid"]


def test_notifications_publish_to_one_topic_only(every_statement: list[dict[str, Any]]) -> None:
    """Issue 14: ``sns:Publish`` only to the notification topic of the role's own account, never to ``*``."""
    publishing = [s for s in every_statement if "sns:Publish" in as_list(s["Action"])]
    assert [s["Sid"] for s in publishing] == ["PublishNotifications"]
    (statement,) = publishing
    assert as_list(statement["Action"]) == ["sns:Publish"]
    (topic,) = as_list(statement["Resource"])
    assert topic.startswith("arn:aws:sns:")
    assert account_of(topic) == "${aws:PrincipalAccount}"
    assert "*" not in topic.rsplit(":", 1)[1], "scope to the topic's name"
