"""`rotator sweep` and `rotator rotate` against a moto server: the cases of issue 3."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from conftest import AwsEnv, assert_no_secrets, run_cli, write_config

DUE = """\
policy:
  max_key_age: 1h
  grace_period: 1h
  retention: 1h
aws:
  validation_timeout: 10s
  max_calls_per_second: 1000
"""


def events(stderr: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]


def test_bootstrap_with_an_inactive_spare_key_deletes_the_spare_first(aws: AwsEnv, tmp_path: Path) -> None:
    active, spare = aws.user("spare", keys=2)
    aws.iam.update_access_key(UserName="spare", AccessKeyId=spare, Status="Inactive")
    config = write_config(tmp_path, DUE)
    result = run_cli(["sweep"], aws, config)
    assert result.returncode == 0, result.stderr
    keys = aws.keys("spare")
    assert spare not in keys and keys[active] == "Active" and len(keys) == 2
    assert aws.secret("spare")["AccessKeyId"] in set(keys) - {active}
    assert_no_secrets([result.stdout, result.stderr], aws.created_secrets)


def test_a_second_active_foreign_key_is_left_alone_and_reported(aws: AwsEnv, tmp_path: Path) -> None:
    # validation_timeout 1s: past its 2 s in-flight window a blocking key cannot be a rotation in flight.
    config = write_config(
        tmp_path,
        DUE.replace("max_key_age: 1h", "max_key_age: 1s").replace("validation_timeout: 10s", "validation_timeout: 1s"),
    )
    aws.user("shared", keys=1)
    assert run_cli(["sweep"], aws, config).returncode == 0  # bootstrap: a secret now
    previous = aws.secret("shared")["AccessKeyId"]
    # Someone creates a key by hand after the old key was deleted: it is foreign.
    old = next(k for k in aws.keys("shared") if k != previous)
    aws.iam.update_access_key(UserName="shared", AccessKeyId=old, Status="Inactive")
    aws.iam.delete_access_key(UserName="shared", AccessKeyId=old)
    time.sleep(1.5)
    foreign = aws.iam.create_access_key(UserName="shared")["AccessKey"]
    aws.created_secrets.append(foreign["SecretAccessKey"])
    time.sleep(2.1)  # past the in-flight window
    plan = json.loads(run_cli(["plan", "--json"], aws, config).stdout)
    actions = {(s["action"], s["key_id"]) for s in plan if s["user"] == "shared"}
    assert ("skip", foreign["AccessKeyId"]) in actions
    assert not any(a in ("disable", "delete", "cleanup") and k == foreign["AccessKeyId"] for a, k in actions)
    result = run_cli(["sweep"], aws, config)
    # I10: a user that cannot progress (no free slot) fails the sweep, and says why.
    assert result.returncode == 1, result.stderr
    assert f"no free key slot (held by {foreign['AccessKeyId']})" in result.stderr
    assert aws.keys("shared")[foreign["AccessKeyId"]] == "Active"
    assert aws.secret("shared")["AccessKeyId"] == previous  # no free slot: rotation waits, reported
    assert_no_secrets([result.stdout, result.stderr], aws.created_secrets)


def test_forced_rotation_refuses_while_a_previous_key_exists_and_revoke_overrides(aws: AwsEnv, tmp_path: Path) -> None:
    config = write_config(tmp_path, DUE)
    (k0,) = aws.user("leaky")
    first = run_cli(["rotate", "leaky"], aws, config)
    assert first.returncode == 0, first.stderr
    k1 = aws.secret("leaky")["AccessKeyId"]
    refused = run_cli(["rotate", "leaky"], aws, config)
    assert refused.returncode == 1
    assert "--revoke" in refused.stderr and k0 in refused.stderr
    revoked = run_cli(["rotate", "leaky", "--revoke"], aws, config)
    assert revoked.returncode == 0, revoked.stderr
    keys = aws.keys("leaky")
    k2 = aws.secret("leaky")["AccessKeyId"]
    assert k0 not in keys  # the older replaced key was deleted first
    assert keys == {k1: "Inactive", k2: "Active"}  # the leaked key is disabled at once
    assert_no_secrets([first.stderr, refused.stderr, revoked.stderr, revoked.stdout], aws.created_secrets)


def test_rotate_refuses_unmanaged_users(aws: AwsEnv, tmp_path: Path) -> None:
    aws.user("human", path="/", managed=False)
    result = run_cli(["rotate", "human"], aws, write_config(tmp_path, DUE))
    assert result.returncode == 1
    assert "not a managed user" in result.stderr
    assert len(aws.keys("human")) == 1


def test_dry_run_changes_nothing(aws: AwsEnv, tmp_path: Path) -> None:
    for name in ("a", "b"):
        aws.user(name)
    before = aws.snapshot()
    result = run_cli(["sweep", "--dry-run"], aws, write_config(tmp_path, DUE))
    assert result.returncode == 0, result.stderr
    assert "rotate" in result.stdout
    assert aws.snapshot() == before


def test_max_actions_per_sweep_defers_the_rest(aws: AwsEnv, tmp_path: Path) -> None:
    for index in range(5):
        aws.user(f"u{index}")
    config = write_config(tmp_path, DUE + "safety:\n  max_actions_per_sweep: 2\n")
    result = run_cli(["sweep"], aws, config)
    assert result.returncode == 0, result.stderr
    rotated = [e for e in events(result.stderr) if e["event"] == "rotation.published"]
    assert len(rotated) == 2
    plan = json.loads(run_cli(["plan", "--json"], aws, config).stdout)
    assert sorted(s["user"] for s in plan if s["action"] == "rotate") == sorted(
        f"u{i}" for i in range(5) if f"u{i}" not in {e["user"] for e in rotated}
    )


def test_per_user_failures_do_not_stop_other_users(aws: AwsEnv, tmp_path: Path) -> None:
    aws.user("good")
    aws.user("foreign-secret")
    aws.sm.create_secret(Name="iam-keys/foreign-secret", SecretString="not ours")
    aws.user("bad,name")  # a comma cannot appear in a secret name
    result = run_cli(["sweep"], aws, write_config(tmp_path, DUE))
    assert result.returncode == 1  # per-user problems are failures, after the others went ahead
    assert aws.secret("good")["UserName"] == "good"
    # The foreign secret is never overwritten.
    value = aws.sm.get_secret_value(SecretId="iam-keys/foreign-secret", VersionStage="AWSCURRENT")["SecretString"]
    assert value == "not ours"
    failed = {e["user"]: e["error"] for e in events(result.stderr) if e["event"] == "action.failed"}
    assert "not written by the rotator" in str(failed["foreign-secret"])
    assert "secret name" in str(failed["bad,name"])
    assert "FAILED foreign-secret" in result.stderr
    assert len(aws.keys("foreign-secret")) == 1 and len(aws.keys("bad,name")) == 1


def test_a_user_deleted_mid_sweep_is_skipped_and_others_proceed(aws: AwsEnv, tmp_path: Path) -> None:
    aws.user("good")
    aws.user("gone")
    config = write_config(tmp_path, DUE)
    # The user disappears between the inventory and the action: refresh sees it gone.
    script = (
        "import boto3, sys, rotator.inventory as inv\n"
        "orig = inv.Inventory.refresh\n"
        "def refresh(self, user):\n"
        "    if user == 'gone':\n"
        "        iam = self.aws.boundary.client('iam')\n"
        "        for k in iam.list_access_keys(UserName=user)['AccessKeyMetadata']:\n"
        "            iam.delete_access_key(UserName=user, AccessKeyId=k['AccessKeyId'])\n"
        "        iam.delete_user(UserName=user)\n"
        "    return orig(self, user)\n"
        "inv.Inventory.refresh = refresh\n"
        "from rotator.cli import main\n"
        "sys.exit(main(sys.argv[1:]))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script, "--config", str(config), "sweep"],
        capture_output=True,
        text=True,
        env=aws.env,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert aws.secret("good")["UserName"] == "good"
    skipped = [e for e in events(result.stderr) if e["event"] == "action.skipped" and e["user"] == "gone"]
    assert skipped and "no longer exists" in str(skipped[0]["reason"])
