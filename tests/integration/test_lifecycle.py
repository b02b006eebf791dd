"""The whole lifecycle against a moto server that verifies request signatures.

With ``INITIAL_NO_AUTH_ACTION_COUNT`` moto checks every request's signature (and the caller's IAM
policy actions) after the first few calls, so a published secret whose key signs
``sts:GetCallerIdentity`` is proven to hold the secret access key IAM issued (I2).
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import AwsEnv, StartSignedMoto, assert_no_secrets, run_cli, user_with_policy, wait_until, write_config

# Calls made without signatures: create the admin user, its policy, attach it, create its key.
SETUP_CALLS = 4

CONFIG = """\
policy:
  max_key_age: 45s
  grace_period: 6s
  retention: 6s
  disable_guard: hold
  quiet_period: 1s
  max_hold: 1h
aws:
  validation_timeout: 10s
  max_calls_per_second: 1000
"""

ADMIN_POLICY = json.dumps({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]})


@pytest.fixture
def signed_aws(signed_moto: StartSignedMoto) -> AwsEnv:
    """An account whose rotator credentials are a real (moto) IAM admin key."""
    env, _ = user_with_policy(signed_moto(SETUP_CALLS), "rotator-admin", ADMIN_POLICY)
    return env


def signs_as(aws: AwsEnv, document: dict[str, Any]) -> str:
    """The ARN ``sts:GetCallerIdentity`` returns when signed with the secret's key."""
    return aws.caller_arn(document["AccessKeyId"], document["SecretAccessKey"])


def plan(aws: AwsEnv, config: Path) -> set[tuple[str, str, str | None]]:
    result = run_cli(["plan", "--json"], aws, config)
    assert result.returncode == 0, result.stderr
    return {(s["user"], s["action"], s["key_id"]) for s in json.loads(result.stdout)}


def sweep(aws: AwsEnv, config: Path, outputs: list[str]) -> None:
    result = run_cli(["sweep"], aws, config)
    outputs += [result.stdout, result.stderr]
    assert result.returncode == 0, result.stderr


def test_bootstrap_grace_disable_retention_delete_then_age_rotation(signed_aws: AwsEnv, tmp_path: Path) -> None:
    aws = signed_aws
    config = write_config(tmp_path, CONFIG)
    outputs: list[str] = []
    (k0,) = aws.user("app")
    assert plan(aws, config) == {("app", "rotate", k0)}

    # Bootstrap: a new key, validated, stored as the secret's first (AWSCURRENT) version.
    sweep(aws, config, outputs)
    t_published = time.time()
    keys = aws.keys("app")
    (k1,) = set(keys) - {k0}
    assert keys == {k0: "Active", k1: "Active"}
    document = aws.secret("app")
    assert set(document) == {"Version", "AccessKeyId", "SecretAccessKey", "UserName", "CreateDate"}
    assert document["Version"] == 1 and document["AccessKeyId"] == k1 and document["UserName"] == "app"
    assert document["CreateDate"].endswith("+00:00")
    assert signs_as(aws, document).endswith(":user/svc/app")
    assert [stages for stages in aws.stages("app").values()] == [["AWSCURRENT"]]
    assert plan(aws, config) == set()  # grace period running

    # Grace over: the previous (pre-existing) key is disabled, the current one untouched (I4).
    wait_until(t_published + 6.5)
    assert plan(aws, config) == {("app", "disable", k0)}
    sweep(aws, config, outputs)
    t_disabled = time.time()
    assert aws.keys("app") == {k0: "Inactive", k1: "Active"}
    assert plan(aws, config) == set()  # retention running

    # Retention over: deleted.
    wait_until(t_disabled + 6.5)
    assert plan(aws, config) == {("app", "delete", k0)}
    sweep(aws, config, outputs)
    assert aws.keys("app") == {k1: "Active"}

    # The current key ages past max_key_age: a rotation by the protocol (AWSPENDING -> AWSCURRENT).
    created = aws.iam.list_access_keys(UserName="app")["AccessKeyMetadata"][0]["CreateDate"].timestamp()
    wait_until(created + 45.5)
    assert plan(aws, config) == {("app", "rotate", k1)}
    sweep(aws, config, outputs)
    t_published = time.time()
    keys = aws.keys("app")
    (k2,) = set(keys) - {k1}
    assert keys == {k1: "Active", k2: "Active"}
    current, previous = aws.secret("app"), aws.secret("app", "AWSPREVIOUS")
    assert current["AccessKeyId"] == k2 and previous["AccessKeyId"] == k1
    assert sorted(sorted(s) for s in aws.stages("app").values()) == [["AWSCURRENT"], ["AWSPREVIOUS"]]
    assert signs_as(aws, current).endswith(":user/svc/app")

    wait_until(t_published + 6.5)
    sweep(aws, config, outputs)
    assert aws.keys("app") == {k1: "Inactive", k2: "Active"}
    wait_until(time.time() + 6.5)
    sweep(aws, config, outputs)
    assert aws.keys("app") == {k2: "Active"}
    assert aws.secret("app")["AccessKeyId"] == k2

    assert_no_secrets(outputs, aws.created_secrets)


def test_guard_holds_a_previous_key_still_in_use(signed_aws: AwsEnv, tmp_path: Path) -> None:
    aws = signed_aws
    config = write_config(tmp_path, CONFIG.replace("quiet_period: 1s", "quiet_period: 30s"))
    (k0,) = aws.user("busy")
    old_secret = aws.created_secrets[-1]
    outputs: list[str] = []
    sweep(aws, config, outputs)
    # A consumer still signs with the old key.
    aws.caller_arn(k0, old_secret)
    time.sleep(6.5)
    assert plan(aws, config) == {("busy", "hold", k0)}
    result = run_cli(["sweep"], aws, config)
    assert result.returncode == 0, result.stderr
    events = [json.loads(line) for line in result.stderr.splitlines() if line.startswith("{")]
    held = [e for e in events if e["event"] == "key.held"]
    assert held and held[0]["user"] == "busy" and held[0]["key_id"] == k0
    # Who still uses it: IAM's GetAccessKeyLastUsed names the service and region of the consumer's call.
    assert (held[0]["last_used_service"], held[0]["last_used_region"]) == ("sts", "us-east-1")
    assert re.fullmatch(
        r"last used \d+s ago by sts in us-east-1; disabled once unused for 30s, or regardless from .*Z",
        held[0]["summary"],
    )
    assert aws.keys("busy")[k0] == "Active"
    assert_no_secrets([*outputs, result.stdout, result.stderr], aws.created_secrets)
