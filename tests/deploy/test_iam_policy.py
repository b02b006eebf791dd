"""deploy/iam/rotator-policy.json: exactly the rotator's operations, scoped, nothing mutating on "*"."""

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


def as_list(value: str | list[str]) -> list[str]:
    return [value] if isinstance(value, str) else list(value)


@pytest.fixture(scope="module")
def policy() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(POLICY.read_text(encoding="utf-8"))
    return data


@pytest.fixture(scope="module")
def statements(policy: dict[str, Any]) -> list[dict[str, Any]]:
    return as_list(policy["Statement"])


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


def test_actions_are_exactly_the_rotator_operations(statements: list[dict[str, Any]]) -> None:
    allowed: set[str] = set()
    for s in statements:
        for action in as_list(s["Action"]):
            assert "*" not in action and "?" not in action, f"{s['Sid']}: wildcard action {action}"
            assert action in ROTATOR_OPERATIONS | OPTIONAL_KMS_ACTIONS, f"{s['Sid']}: extra action {action}"
            allowed.add(action)
    assert allowed >= ROTATOR_OPERATIONS, f"missing: {sorted(ROTATOR_OPERATIONS - allowed)}"


def test_nothing_mutating_on_every_resource(statements: list[dict[str, Any]]) -> None:
    for s in statements:
        actions = set(as_list(s["Action"]))
        resources = as_list(s["Resource"])
        if "*" in resources:
            extra = sorted(actions - ACCOUNT_LEVEL_OPERATIONS)
            assert not extra, f"{s['Sid']}: {extra} on Resource *"
        assert not (actions & MUTATING_OPERATIONS and any(r.endswith(":*") for r in resources)), s["Sid"]


def test_resources_are_scoped(statements: list[dict[str, Any]]) -> None:
    for s in statements:
        actions = set(as_list(s["Action"]))
        resources = as_list(s["Resource"])
        if actions & USER_OPERATIONS:
            assert actions <= USER_OPERATIONS, s["Sid"]
            for r in resources:
                assert r.startswith("arn:aws:iam::") and ":user/" in r, s["Sid"]
                assert not r.endswith(":user/*"), f"{s['Sid']}: scope users to a path, not user/*"
        if actions & SECRET_OPERATIONS:
            assert actions <= SECRET_OPERATIONS, s["Sid"]
            for r in resources:
                assert r.startswith("arn:aws:secretsmanager:") and ":secret:" in r, s["Sid"]
                assert not r.endswith(":secret:*"), f"{s['Sid']}: scope secrets to a name prefix"
        if "sts:AssumeRole" in actions:
            assert actions == {"sts:AssumeRole"}, s["Sid"]
            assert all(r.startswith("arn:aws:iam::") and ":role/" in r for r in resources), s["Sid"]


def test_create_secret_requires_the_managed_tag(statements: list[dict[str, Any]]) -> None:
    creating = [s for s in statements if "secretsmanager:CreateSecret" in as_list(s["Action"])]
    assert creating
    for s in creating:
        assert s["Condition"]["StringEquals"]["aws:RequestTag/rotator:managed"] == "true", s["Sid"]


def test_kms_only_via_secrets_manager(statements: list[dict[str, Any]]) -> None:
    for s in statements:
        actions = set(as_list(s["Action"]))
        if actions & OPTIONAL_KMS_ACTIONS:
            assert actions <= OPTIONAL_KMS_ACTIONS, s["Sid"]
            assert "*" not in as_list(s["Resource"]), s["Sid"]
            via = s["Condition"]["StringLike"]["kms:ViaService"]
            assert all(v.startswith("secretsmanager.") for v in as_list(via)), s["Sid"]
