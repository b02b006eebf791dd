"""Two at once (issue 3, SPEC I8): concurrent rotator processes never create two keys for one due key.

50 due users - half of them bootstrap (one key, no secret), half due for an ordinary rotation
(secret whose only key is older than ``max_key_age``) - are swept by two ``rotator sweep`` processes
started together, then staggered by 0.3 s, and by a ``rotator rotate`` of every user racing a sweep.
Across both processes' JSON logs each user gets exactly one ``rotation.key_created`` and exactly one
``rotation.published``; the losers report skips, not crashes; and after the in-flight window a
further sweep finds nothing to clean up (no orphans, I3) and changes nothing.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import (
    CRASHER,
    DUE_USERS,
    ROOT,
    AwsEnv,
    Proc,
    assert_no_secrets,
    cli_argv,
    crashing,
    policy_config,
    run_cli,
    through_proxy,
)
from helpers import MotoServer

# Seconds. Generous for the racing processes: two of them with 8 worker threads each share 2 cores,
# and a rotation that overruns it withdraws its key (a failure, not a lost race).
VALIDATION_TIMEOUT = 30
# The further sweep runs after both racers exited, so nothing can be in flight any more: it uses a
# short validation_timeout and waits out that in-flight window (2 s) instead of a minute.
FURTHER_TIMEOUT = 1
IN_FLIGHT_WINDOW = 2 * FURTHER_TIMEOUT

# Tolerated reasons for a `rotate` that lost a user to the racing sweep (exit 1, never a crash).
LOST_RACE = (
    "key limit reached: another key appeared since the re-read",
    "created secret",  # the other run's bootstrap created the secret first; this run's key was withdrawn
    "a rotation is in flight",
    "leaves only on its own schedule",
)


@pytest.fixture
def aws(moto_server: MotoServer) -> Iterator[AwsEnv]:
    """moto behind the fault proxy, which checks the signatures of the keys the racers create."""
    yield from through_proxy(moto_server)


def start(aws: AwsEnv, cfg: Path, args: list[str]) -> tuple[list[str], subprocess.Popen[str]]:
    argv = [*cli_argv(), "--config", str(cfg), *args]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=aws.env, cwd=ROOT)
    return argv, proc


def finish(started: tuple[list[str], subprocess.Popen[str]]) -> Proc:
    argv, proc = started
    stdout, stderr = proc.communicate(timeout=180)
    return Proc(argv, proc.returncode, stdout, stderr)


def assert_one_rotation_each(aws: AwsEnv, tmp_path: Path, due: dict[str, str], procs: list[Proc]) -> None:
    """I8 and I3 across the racing processes' logs and the final AWS state."""
    for proc in procs:
        assert "Traceback" not in proc.stderr, proc.describe()
        assert not proc.named("action.failed"), proc.describe()
    created = [e for proc in procs for e in proc.named("rotation.key_created")]
    published = [e for proc in procs for e in proc.named("rotation.published")]
    created_per_user = Counter(e["user"] for e in created)
    published_per_user = Counter(e["user"] for e in published)
    assert {u: n for u, n in created_per_user.items() if n != 1} == {}, "a user got two new keys (I8)"
    assert set(created_per_user) == set(DUE_USERS), f"not rotated: {set(DUE_USERS) - set(created_per_user)}"
    assert published_per_user == Counter(DUE_USERS), published_per_user
    new_key = {e["user"]: e["key_id"] for e in created}
    assert {e["user"]: e["key_id"] for e in published} == new_key

    for user in DUE_USERS:
        assert aws.keys(user) == {due[user]: "Active", new_key[user]: "Active"}, user
        document = aws.secret(user)
        assert document["AccessKeyId"] == new_key[user], user
        # I2: the stored secret is the key's own (the proxy verifies the signature; moto alone takes any secret).
        assert aws.caller_arn(new_key[user], document["SecretAccessKey"]).endswith(f":user/svc/{user}"), user
        stages = aws.stages(user)
        assert not any("AWSPENDING" in s for s in stages.values()), (user, stages)

    # After the in-flight window a further sweep has nothing to clean up and changes nothing.
    time.sleep(IN_FLIGHT_WINDOW + 0.2)
    further_config = policy_config(tmp_path, "further", max_key_age="1s", validation_timeout=FURTHER_TIMEOUT)
    further = crashing(0, ["sweep"], aws, further_config)
    assert further.returncode == 0, further.describe()
    # The only change left: the intent marks of runs that lost the race to IAM's key limit. A loser keeps its mark
    # (the key that won may be a crashed run's, never recorded: only the mark lets CloudTrail settle it, and a re-read
    # cannot tell, as ListAccessKeys may lag), and the repair removes it once the window has passed and all is settled:
    # from the user (a bootstrap's) or, emptied by TagResource, from the secret (a rotation's).
    assert set(further.operations) <= {"UntagUser", "TagResource"}, further.describe()
    repaired = further.named("state.record_repaired")
    assert len(repaired) == len(further.operations), further.describe()
    assert all(e["record"] == "stale rotation tags removed" for e in repaired), further.describe()
    assert not further.named("key.orphan_deleted")
    for user in DUE_USERS:
        assert aws.keys(user) == {due[user]: "Active", new_key[user]: "Active"}, user
    assert_no_secrets([text for proc in [*procs, further] for text in (proc.stdout, proc.stderr)], aws.created_secrets)


@pytest.mark.parametrize("stagger", [0.0, 0.3], ids=["together", "staggered"])
def test_two_sweeps(stagger: float, aws: AwsEnv, tmp_path: Path, due_users: dict[str, str]) -> None:
    race = policy_config(tmp_path, "race", max_key_age="1s", validation_timeout=VALIDATION_TIMEOUT)
    first = start(aws, race, ["sweep"])
    time.sleep(stagger)
    second = start(aws, race, ["sweep"])
    procs = [finish(first), finish(second)]
    for proc in procs:
        # A loser (LimitExceeded, a rotation in flight) skips the user: not a failure, not a crash.
        assert proc.returncode == 0, proc.describe()
    assert_one_rotation_each(aws, tmp_path, due_users, procs)


def test_rotate_races_sweep(aws: AwsEnv, tmp_path: Path, due_users: dict[str, str]) -> None:
    race = policy_config(tmp_path, "race", max_key_age="1s", validation_timeout=VALIDATION_TIMEOUT)
    # The sweep works through the users in name order, `rotate` in reverse: they meet in the middle.
    rotate = start(aws, race, ["rotate", *reversed(DUE_USERS)])
    sweeping = start(aws, race, ["sweep"])
    forced, swept = finish(rotate), finish(sweeping)
    assert swept.returncode == 0, swept.describe()
    assert forced.returncode in (0, 1), forced.describe()
    # One plain "rotator: USER: ..." line a user not rotated (the JSON log lines beside them say it again).
    lost = [line for line in forced.stderr.splitlines() if line.startswith("rotator: ") and "not rotated" in line]
    rotated = [line for line in forced.stdout.splitlines() if line.endswith(": rotated")]
    lost_users = {line.split(": ")[1] for line in lost}
    rotated_users = {line.split(": ")[0] for line in rotated}
    assert len(lost_users) == len(lost) and len(rotated_users) == len(rotated), forced.describe()
    assert lost_users | rotated_users == set(DUE_USERS) and not lost_users & rotated_users, forced.describe()
    assert (forced.returncode == 1) == bool(lost)
    for line in lost:
        assert any(reason in line for reason in LOST_RACE), line
    assert_one_rotation_each(aws, tmp_path, due_users, [forced, swept])


def test_sweep_during_a_publication(aws: AwsEnv, tmp_path: Path) -> None:
    """A sweep that finds a publication half done leaves the publishing run to finish it.

    The first run is held right after it moved ``AWSCURRENT`` (``AWSPENDING`` still on the new
    version, the secret's records not yet written: exactly what a crash there looks like), and a second
    sweep runs meanwhile; it may complete the records, but the first run must still finish its
    publication: one ``rotation.published``, both exit 0, a consistent secret.
    """
    user = "rot-00"
    aws.user(user, keys=0)
    setup = run_cli(["sweep"], aws, policy_config(tmp_path, "setup", validation_timeout=VALIDATION_TIMEOUT))
    assert setup.returncode == 0, setup.stderr[-3000:]
    (old,) = aws.keys(user)
    time.sleep(1.1)
    race = policy_config(tmp_path, "race", max_key_age="1s", validation_timeout=VALIDATION_TIMEOUT)

    release = tmp_path / "release"
    argv = [sys.executable, str(CRASHER), "4", "--config", str(race), "sweep"]  # 4th: AWSCURRENT moved
    env = {**aws.env, "CRASHING_ROTATOR_HOLD": str(release)}
    slow = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT)
    assert slow.stderr is not None
    head: list[str] = []
    while not head or "crashing_rotator.paused" not in head[-1]:
        line = slow.stderr.readline()
        assert line, "".join(head)[-3000:]
        head.append(line)
    (paused,) = Proc(argv, 0, "", head[-1]).named("crashing_rotator.paused")
    assert paused["operation"] == "UpdateSecretVersionStage"
    (labels,) = [s for s in aws.stages(user).values() if "AWSCURRENT" in s]
    assert "AWSPENDING" in labels, "held right after AWSCURRENT moved onto the pending version"

    done = run_cli(["sweep"], aws, race)
    other = Proc(done.args, done.returncode, done.stdout, done.stderr)
    release.touch()
    stdout, stderr = slow.communicate(timeout=120)
    first = Proc(argv, slow.returncode, stdout, "".join(head) + stderr)

    assert other.returncode == 0, other.describe()
    assert first.returncode == 0, first.describe()
    published = [e for proc in (first, other) for e in proc.named("rotation.published")]
    (created,) = first.named("rotation.key_created")
    assert [(e["user"], e["key_id"]) for e in published] == [(user, created["key_id"])]
    new = created["key_id"]
    assert aws.keys(user) == {old: "Active", new: "Active"}
    assert aws.secret(user)["AccessKeyId"] == new
    assert aws.secret(user, "AWSPREVIOUS")["AccessKeyId"] == old
    assert sorted(map(sorted, aws.stages(user).values())) == [["AWSCURRENT"], ["AWSPREVIOUS"]]
    tags = {t["Key"]: t["Value"] for t in aws.sm.describe_secret(SecretId=f"iam-keys/{user}")["Tags"]}
    assert (tags["rotator:current-key-id"], tags["rotator:previous-key-id"]) == (new, old)
    assert_no_secrets([first.stdout, first.stderr, other.stdout, other.stderr], aws.created_secrets)
