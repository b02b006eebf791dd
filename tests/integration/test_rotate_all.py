"""``rotator rotate --all``: incident response over every managed key (moto in server mode).

On a terminal (a pseudo-terminal here, python's ``pty``) it asks first and draws a progress bar; otherwise it
needs ``--yes`` and prints one plain line per user. The summary table and the exit code close every run;
Ctrl-C lets the steps in flight finish, starts no others and says which users are left.
"""

from __future__ import annotations

import os
import pty
import select
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from conftest import FAST_CONFIG, ROOT, AwsEnv, assert_no_secrets, cli_argv, run_cli, write_config
from faultproxy import FaultProxy

pytestmark = pytest.mark.timeout(120)


def run_on_terminal(
    args: list[str], aws: AwsEnv, config: Path, answer: str | None, timeout: float = 60
) -> tuple[int, str]:
    """Run the CLI with stdin, stdout and stderr on a pseudo-terminal; type ``answer`` at the prompt."""
    leader, follower = pty.openpty()
    process = subprocess.Popen(
        [*cli_argv(), "--config", str(config), *args],
        stdin=follower,
        stdout=follower,
        stderr=follower,
        env=aws.env,
        cwd=ROOT,
        close_fds=True,
    )
    os.close(follower)
    output = b""
    answered = answer is None
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([leader], [], [], 0.2)
            if ready:
                try:
                    chunk = os.read(leader, 65536)
                except OSError:  # EIO: the child closed its end
                    break
                if not chunk:
                    break
                output += chunk
                if not answered and b"[y/N]" in output:
                    os.write(leader, answer.encode() + b"\n")  # type: ignore[union-attr]
                    answered = True
            elif process.poll() is not None:
                break
        code = process.wait(timeout=max(1.0, deadline - time.monotonic()))
    finally:
        if process.poll() is None:
            process.kill()
        os.close(leader)
    return code, output.decode(errors="replace")


def seed(aws: AwsEnv) -> None:
    """Three managed users (one key, no secret: each is bootstrapped), one with team=red, one unmanaged."""
    aws.user("alice", path="/svc/")
    aws.user("bob", path="/svc/", tags={"team": "red"})
    aws.user("carol", path="/ops/")
    aws.user("mallory", path="/svc/", managed=False)


def test_on_a_terminal_it_asks_then_draws_a_bar_and_a_table(aws: AwsEnv, tmp_path: Path) -> None:
    seed(aws)
    before = {user: set(aws.keys(user)) for user in ("alice", "bob", "carol", "mallory")}
    code, output = run_on_terminal(["rotate", "--all"], aws, write_config(tmp_path, FAST_CONFIG), answer="y")
    assert code == 0, output
    assert "Rotate the access keys of 3 managed users in 1 account? [y/N]" in output
    assert "\r[" + "#" * 30 + "] 3/3" in output  # the bar, redrawn in place, full at the end
    assert "failed 0" in output and "ETA" in output and "/s" in output
    table = output[output.index("account") :]
    for user in ("alice", "bob", "carol"):
        assert user in table
        assert aws.secret(user)["AccessKeyId"] not in before[user]  # a new key is current
    assert "3 rotated, 0 failed, 0 left of 3" in output
    assert set(aws.keys("mallory")) == before["mallory"]  # not managed: untouched
    assert '"event"' not in output  # info logs would scroll the bar away: a terminal gets warnings only
    assert_no_secrets([output], aws.created_secrets)


def test_a_no_at_the_prompt_changes_nothing(aws: AwsEnv, tmp_path: Path) -> None:
    seed(aws)
    before = aws.snapshot()
    code, output = run_on_terminal(["rotate", "--all"], aws, write_config(tmp_path, FAST_CONFIG), answer="n")
    assert code == 1, output
    assert "aborted: nothing rotated" in output
    assert aws.snapshot() == before


def test_without_a_terminal_it_needs_yes(aws: AwsEnv, tmp_path: Path) -> None:
    seed(aws)
    before = aws.snapshot()
    result = run_cli(["rotate", "--all"], aws, write_config(tmp_path, FAST_CONFIG))
    assert result.returncode == 2, result.stderr
    assert "--yes" in result.stderr
    assert aws.snapshot() == before


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["rotate"], "give USER names, or --all"),
        (["rotate", "alice", "--all"], "not both"),
        (["rotate", "alice", "--yes"], "--yes only go with --all"),
        (["rotate", "--all", "--tag", "novalue"], "is not KEY=VALUE"),
    ],
)
def test_usage_errors_exit_2(aws: AwsEnv, tmp_path: Path, args: list[str], message: str) -> None:
    result = run_cli(args, aws, write_config(tmp_path, FAST_CONFIG))
    assert result.returncode == 2, result.stderr
    assert message in result.stderr


def test_path_and_tag_narrow_it_and_plain_lines_report_each_user(aws: AwsEnv, tmp_path: Path) -> None:
    seed(aws)
    config = write_config(tmp_path, FAST_CONFIG)
    carol = aws.snapshot()["users"]["carol"]
    result = run_cli(["rotate", "--all", "--yes", "--path", "/svc/", "--tag", "team=red"], aws, config)
    assert result.returncode == 0, result.stderr
    assert "[1/1] bob: rotated" in result.stdout
    assert "\r" not in result.stdout + result.stderr  # no bar off a terminal
    assert "1 rotated, 0 failed, 0 left of 1" in result.stderr
    assert aws.secret("bob")["UserName"] == "bob"
    with pytest.raises(aws.sm.exceptions.ResourceNotFoundException):
        aws.secret("alice")  # under /svc/ but without the tag
    assert aws.snapshot()["users"]["carol"] == carol
    # bob's bootstrapped key still has its predecessor: a forced rotation without --revoke refuses (SPEC), exit 1.
    both = run_cli(["rotate", "--all", "--yes", "--path", "/svc/"], aws, config)
    assert both.returncode == 1, both.stderr
    assert "alice: rotated" in both.stdout and "bob: not rotated" in both.stdout and "carol" not in both.stdout
    assert "1 rotated, 1 failed, 0 left of 2" in both.stderr


def test_revoke_disables_each_previous_key(aws: AwsEnv, tmp_path: Path) -> None:
    seed(aws)
    config = write_config(tmp_path, FAST_CONFIG)
    first = run_cli(["rotate", "--all", "--yes"], aws, config)  # bootstrap: each user's own key is previous
    assert first.returncode == 0, first.stderr
    current = {user: aws.secret(user)["AccessKeyId"] for user in ("alice", "bob", "carol")}
    # The bootstrapped users now hold two keys: --revoke deletes the older one, rotates, disables the current.
    result = run_cli(["rotate", "--all", "--yes", "--revoke"], aws, config)
    assert result.returncode == 0, result.stdout + result.stderr
    for user, key in current.items():
        keys = aws.keys(user)
        assert keys[key] == "Inactive", (user, keys)
        assert keys[aws.secret(user)["AccessKeyId"]] == "Active"
        assert "previous key" in result.stdout and "disabled" in result.stdout


#: Runs the command with SIGINT's default action, as a terminal gives it: a suite started as a background job (`&`
#: in a non-interactive shell) ignores SIGINT, and a child inherits that across exec (POSIX, "Asynchronous Lists").
DEFAULT_SIGINT = (
    sys.executable,
    "-c",
    "import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); os.execv(sys.argv[1], sys.argv[1:])",
)


def test_ctrl_c_stops_between_users_and_says_what_is_left(
    aws: AwsEnv, proxied_aws: AwsEnv, fault_proxy: FaultProxy, tmp_path: Path
) -> None:
    users = [f"u{n:02d}" for n in range(10)]
    for user in users:
        aws.user(user)
    config = write_config(tmp_path, FAST_CONFIG + "  concurrency: 1\n")
    # The second user's CreateAccessKey waits until Ctrl-C was sent: a step in flight when it comes (and on a
    # loaded machine the other nine bootstraps cannot all finish before the signal lands, ~30 ms each).
    pressed = threading.Event()
    fault_proxy.before(
        "CreateAccessKey", lambda _call: pressed.wait(30), when=lambda c: c.params.get("UserName") == "u01"
    )
    process = subprocess.Popen(
        [*DEFAULT_SIGINT, *cli_argv(), "--config", str(config), "rotate", "--all", "--yes"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=proxied_aws.env,
        cwd=ROOT,
    )
    assert process.stdout is not None
    first = process.stdout.readline()  # the first user is done
    assert first.startswith("[1/10] "), first
    process.send_signal(signal.SIGINT)
    time.sleep(0.5)  # the signal is handled while u01's CreateAccessKey waits
    pressed.set()
    out, err = process.communicate(timeout=60)
    assert process.returncode == 130, err
    assert "interrupted: finishing the steps in flight" in err
    left_line = next(line for line in err.splitlines() if "not rotated yet:" in line)
    left = left_line.split("not rotated yet:")[1].split()
    assert left, err
    rotated = [user for user in users if user not in left]
    assert rotated and set(left) | set(rotated) == set(users)
    for user in rotated:  # finished: the secret holds its new key
        assert aws.secret(user)["AccessKeyId"] in aws.keys(user)
    for user in left:  # never started: one key, no secret, nothing half-done
        assert len(aws.keys(user)) == 1
        with pytest.raises(aws.sm.exceptions.ResourceNotFoundException):
            aws.secret(user)
    assert f"{len(rotated)} rotated, 0 failed, {len(left)} left of 10" in err
    assert "left: not started (interrupted)" in out


def test_dry_run_refuses_before_anything_is_read(aws: AwsEnv, tmp_path: Path) -> None:
    seed(aws)
    before = aws.snapshot()
    config = write_config(tmp_path, FAST_CONFIG + "safety: {dry_run: true}\n")
    result = run_cli(["rotate", "--all", "--yes"], aws, config)
    assert result.returncode == 1, result.stderr
    assert "safety.dry_run is on: nothing rotated" in result.stderr
    assert "ROTATOR_SAFETY__DRY_RUN=false rotator rotate --all" in result.stderr
    assert aws.snapshot() == before


def test_several_accounts_are_rotated_at_once_each_in_place(aws: AwsEnv, tmp_path: Path) -> None:
    """Explicit role ARNs: the same user name in two accounts is two users, each rotated in its own account."""
    from test_accounts import member, role_arn  # noqa: PLC0415 - the multi-account helpers of test_accounts

    first, second = member(aws, "111111111111"), member(aws, "222222222222")
    keys = {m.account_id: m.user("app") for m in (first, second)}
    config = write_config(
        tmp_path,
        FAST_CONFIG
        + "  parallel_accounts: 2\n"
        + f"accounts: ['{role_arn(first.account_id)}', '{role_arn(second.account_id)}']\n",
    )
    result = run_cli(["rotate", "--all", "--yes"], aws, config)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "app (account 111111111111): rotated" in result.stdout
    assert "app (account 222222222222): rotated" in result.stdout
    assert "2 rotated, 0 failed, 0 left of 2" in result.stderr
    for account in (first, second):
        current = account.current("app")["AccessKeyId"]
        assert current != keys[account.account_id] and current in account.keys("app")
    only = run_cli(["rotate", "--all", "--yes", "--revoke", "--account", "222222222222"], aws, config)
    assert only.returncode == 0, only.stdout + only.stderr
    assert "1 rotated, 0 failed, 0 left of 1" in only.stderr and "111111111111" not in only.stdout
