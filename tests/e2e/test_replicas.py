"""Replicas you can trust: three ``rotator run`` processes sharing a DynamoDB lease on one moto server.

Black-box: the replicas are real processes, paused with SIGSTOP, killed with SIGKILL, run under Debian's
``faketime`` with their clocks two minutes off; the tests see them only through HTTP, stderr and AWS. Lease
TTL, intervals and key ages are seconds, so each test runs in tens of seconds.

What they show (issue: "Replicas you can trust"): a leader paused past its lease changes nothing once it
wakes (fencing) and no due key is replaced twice; replicas whose clocks are 120 s off read AWS's time
(rotator_clock_skew_seconds), so one leader at a time, every rotation succeeds and grace and retention
hold in AWS's time; a new leader sweeps at once when the dead leader's schedule is overdue; a /metrics
client that disconnects leaves stderr pure JSON.
"""

from __future__ import annotations

import glob
import json
import shutil
import signal
import socket
import statistics
import struct
import time
from collections import Counter
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError
from conftest import AwsEnv, FaultProxy, free_port, write_config
from test_daemon import Daemon, assert_converged, collect_secrets, config_text

pytestmark = pytest.mark.timeout(150)

TABLE = "rotator-leases"
TTL = 3.0  # coordination.lease_ttl in these tests, seconds
#: Events that say a replica changed something in AWS.
MUTATING_EVENTS = {
    "rotation.key_created",
    "rotation.published",
    "rotation.key_withdrawn",
    "key.disabled",
    "key.deleted",
    "key.orphan_deleted",
    "state.record_repaired",
}
FENCED = "no longer holds the lease"


def lease_table(aws: AwsEnv) -> str:
    aws.client("dynamodb").create_table(
        TableName=TABLE,
        KeySchema=[{"AttributeName": "name", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "name", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    return TABLE


def start(
    stack: ExitStack,
    aws: AwsEnv,
    tmp_path: Path,
    name: str,
    *,
    fake_offset: str | None = None,
    interval: str = "2s",
    max_key_age: str = "8s",
    validation_timeout: str = "2s",
    lease: bool = True,
) -> Daemon:
    """One replica (lease TTL 3 s) with its own directory, config and metrics port; closed by ``stack``.

    ``fake_offset``: the replica's clocks run that far off (``+120s``), through Debian's libfaketime
    (what the ``faketime`` command preloads; preloaded here directly, so that signals reach the daemon).
    """
    (tmp_path / name).mkdir()
    port = free_port()
    text = config_text(
        port,
        interval=interval,
        max_key_age=max_key_age,
        validation_timeout=validation_timeout,
        lease_table=TABLE if lease else None,
        lease_ttl=f"{TTL:g}s",
    )
    env = dict(aws.env)
    if fake_offset is not None:
        # The wall clock only (a host's monotonic clock cannot be set); faketime_shim/sitecustomize.py says
        # why, and works around libfaketime 0.9.10's failing sleeps.
        env.update(
            LD_PRELOAD=libfaketime(),
            FAKETIME=fake_offset,
            FAKETIME_DONT_FAKE_MONOTONIC="1",
            PYTHONPATH=str(Path(__file__).parent / "faketime_shim"),
        )
    process = Daemon(tmp_path, write_config(tmp_path / name, text), port, env, name=name)
    stack.callback(process.close)
    process.wait_http()
    return process


def libfaketime() -> str:
    """The library behind Debian's ``faketime`` command (package faketime; scripts/test installs it)."""
    found = sorted(glob.glob("/usr/lib/*/faketime/libfaketime.so.1"))
    assert found and shutil.which("faketime"), "Debian's faketime is not installed (scripts/test installs it)"
    return found[0]


def events(process: Daemon, since: int = 0) -> list[dict[str, Any]]:
    """The JSON lines written from byte ``since`` on (a line still being written is left out)."""
    data = process.stderr_path.read_bytes()[since:]
    lines = data.split(b"\n")[:-1]  # the last piece has no newline yet (or is empty)
    return [json.loads(line) for line in lines if line.strip()]


def named(process: Daemon, name: str, since: int = 0) -> list[dict[str, Any]]:
    return [e for e in events(process, since) if e.get("event") == name]


def wait(condition: Callable[[], object], timeout: float, what: str) -> float:
    """Poll ``condition`` every 0.1 s; returns the monotonic time it first held."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return time.monotonic()
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def leading(process: Daemon) -> bool:
    return bool(process.value("rotator_leader") == 1.0)


def current_key(aws: AwsEnv, user: str) -> str | None:
    try:
        return str(aws.secret(user)["AccessKeyId"])
    except ClientError:
        return None  # no secret yet


def stop_all(*processes: Daemon) -> None:
    for process in processes:
        if process.proc.poll() is None:
            process.proc.send_signal(signal.SIGTERM)
    for process in processes:
        assert process.proc.wait(timeout=30) in (0, 1)


# -- fencing ---------------------------------------------------------------------------------------------


def test_a_leader_paused_past_its_lease_changes_nothing_when_it_wakes(
    fault_proxy: FaultProxy, proxied_aws: AwsEnv, tmp_path: Path
) -> None:
    aws = proxied_aws
    lease_table(aws)
    users = [f"burst-{n:02d}" for n in range(40)]
    original = {user: aws.user(user)[0] for user in users}  # each due 8 s from now: one burst
    # AWS at a realistic pace for the calls that change keys and secrets: the burst lasts long enough
    # for a SIGSTOP to land in its middle.
    fault_proxy.before(
        ["CreateAccessKey", "CreateSecret", "PutSecretValue"], lambda _call: time.sleep(0.25), times=None
    )
    with ExitStack() as stack:
        a = start(stack, aws, tmp_path, "a")
        wait(lambda: leading(a), 20, "the first replica to lead")
        b = start(stack, aws, tmp_path, "b")
        c = start(stack, aws, tmp_path, "c")
        wait(lambda: named(a, "rotation.key_created"), 30, "the leader's rotation burst")
        a.signal(signal.SIGSTOP)  # in the middle of the burst
        paused = time.monotonic()
        led = wait(lambda: leading(b) or leading(c), TTL + 10, "another replica to take the lease")
        print(f"\nfailover after SIGSTOP: {led - paused:.1f}s (lease_ttl {TTL:g}s)")
        time.sleep(max(0.0, paused + TTL + 2 - time.monotonic()))  # paused well past the lease
        resumed_at = a.stderr_path.stat().st_size
        a.signal(signal.SIGCONT)
        wait(
            lambda: all(current_key(aws, u) not in (None, original[u]) for u in users),
            60,
            "every user to have a new key published",
        )
        wait(lambda: named(a, "action.failed", resumed_at), 10, "the woken replica to meet the fence")
        time.sleep(1.0)  # whatever else the woken replica still tries
        stop_all(a, b, c)

        after = events(a, resumed_at)
        refused = [e for e in after if e.get("event") == "action.failed" and FENCED in str(e.get("error"))]
        changed = [e for e in after if e.get("event") in MUTATING_EVENTS]
        print(f"woken leader: {len(refused)} calls refused by the fence, {len(changed)} in-flight calls completed")
        assert refused, "the woken replica's next change was refused"
        # A call sent before the pause may complete after it (at most one per worker thread); the same
        # thread's next change is refused. Without the fence the woken replica went on through its queue.
        assert len(changed) <= len(refused), changed
        assert not [e for e in after if e.get("event") == "sweep.started"], "no new sweep on the paused replica"

        published = [e for p in (a, b, c) for e in named(p, "rotation.published")]
        replaced = Counter(e.get("previous_key_id") for e in published)
        assert all(count == 1 for count in replaced.values()), replaced  # one new key per due key (I8)
        collect_secrets(aws, users)
        assert_converged(aws, users)
        for process in (a, b, c):
            process.assert_clean_output(aws.created_secrets)


def test_a_leader_stopped_in_a_long_step_renews_its_lease_until_the_step_ends(
    fault_proxy: FaultProxy, proxied_aws: AwsEnv, tmp_path: Path
) -> None:
    """SIGTERM while a bootstrap waits on AWS longer than the lease lasts unrenewed (3/4 of its ttl, 2.25 s).

    Before, the stop halted the renewals with the scheduler and then waited for the step: the step's next
    call after the slow one was refused by the replica's own fence (``action.failed``), leaving the new key
    for the next leader to settle.
    """
    aws = proxied_aws
    lease_table(aws)
    original = aws.user("slow-0")[0]
    slow = 2 * TTL  # seconds the CreateSecret takes
    fault_proxy.before("CreateSecret", lambda _call: time.sleep(slow), times=1)
    with ExitStack() as stack:
        a = start(stack, aws, tmp_path, "a", validation_timeout="20s")
        wait(lambda: named(a, "rotation.key_created"), 30, "the bootstrap to create its key")
        a.signal(signal.SIGTERM)
        stopping = time.monotonic()
        code = a.proc.wait(timeout=30)
        took = time.monotonic() - stopping
        print(f"\nSIGTERM in a {slow:g} s step: exit {code} after {took:.1f}s (lease_ttl {TTL:g}s)")
        assert code == 0
        assert not named(a, "action.failed"), named(a, "action.failed")
        assert [e.get("previous_key_id") for e in named(a, "rotation.published")] == [original]
        assert current_key(aws, "slow-0") not in (None, original), "the step in flight published its key"
        assert took >= slow - 1.0, "the stop waited for the step"
        assert aws.client("dynamodb").scan(TableName=TABLE)["Items"] == [], "the lease released after the step"
        a.assert_clean_output(aws.created_secrets)


# -- AWS's clock ----------------------------------------------------------------------------------------


class KeyTimes:
    """What the test sees in IAM and Secrets Manager, timed by its own clock (moto's: AWS's time here).

    A poll sees a moment between its request and its answer, and the next poll of the same user comes a
    whole cycle later (longer on a loaded machine), so an event is bracketed, not timed: it happened after
    the request of the last poll that saw the state before it and no later than the answer of the first
    poll that saw it. :meth:`longest` is the longest interval two events can be apart: a grace or a
    retention cut short shows there as surely as the poll cycle allows, and a slow poll never fails a
    correct rotator.
    """

    def __init__(self, aws: AwsEnv, users: list[str]) -> None:
        self.aws = aws
        self.users = users
        self.disabled: dict[str, float] = {}  # key id -> the answer that first showed it Inactive
        self.deleted: dict[str, float] = {}  # key id -> the answer that first showed it gone
        self.replaced_after: dict[str, float] = {}  # key id -> a request that still saw it AWSCURRENT
        self.active_after: dict[str, float] = {}  # key id -> a request that still saw it Active
        self.successor: dict[str, str] = {}  # key id -> the key published over it
        self.cycles: list[float] = []  # seconds between two polls of one user
        self._current: dict[str, str] = {}  # user -> its AWSCURRENT key
        self._keys: dict[str, set[str]] = {user: set() for user in users}
        self._polled: dict[str, float] = {}  # user -> the request of its last poll

    def poll(self) -> None:
        for user in self.users:
            asked = time.time()
            keys = self.aws.keys(user)
            current = current_key(self.aws, user)
            answered = time.time()
            if user in self._polled:
                self.cycles.append(answered - self._polled[user])
            self._polled[user] = asked
            if current is not None and current != self._current.get(user):
                if user in self._current:
                    self.successor[self._current[user]] = current
                self._current[user] = current
            if current is not None and current not in self.successor:
                self.replaced_after[current] = asked
            for key_id, status in keys.items():
                if status == "Inactive":
                    self.disabled.setdefault(key_id, answered)
                elif key_id not in self.disabled:
                    self.active_after[key_id] = asked
            for key_id in self._keys[user] - set(keys):
                self.deleted.setdefault(key_id, answered)
            self._keys[user] |= set(keys)

    def graces(self) -> list[float]:
        """The longest each disable can have come after its successor's publication."""
        return [self.disabled[k] - self.replaced_after[k] for k in self.successor if k in self.disabled]

    def retentions(self) -> list[float]:
        """The longest each deletion can have come after the key's disable."""
        return [self.deleted[k] - self.active_after[k] for k in self.deleted if k in self.active_after]


def test_replicas_with_clocks_two_minutes_off_agree_on_aws_time(aws: AwsEnv, tmp_path: Path) -> None:
    lease_table(aws)
    users = [f"skew-{n}" for n in range(4)]
    for user in users:
        aws.user(user)
    seen = KeyTimes(aws, users)
    samples: list[tuple[bool, bool, bool]] = []
    with ExitStack() as stack:
        # Sweeps every second: a record written in a host's time lets the next sweep delete (or disable), so
        # a retention or grace cut short shows as about one interval, well under the bound asserted below.
        # The validation deadline counts from CreateDate, whole seconds, read on a skewed replica's estimate
        # of AWS's time (half a second either way): 8 s, so that a loaded machine never withdraws a key.
        timing = {"max_key_age": "5s", "interval": "1s", "validation_timeout": "8s"}
        right = start(stack, aws, tmp_path, "right", **timing)
        wait(lambda: leading(right), 20, "the replica with the right clock to lead")
        ahead = start(stack, aws, tmp_path, "ahead", fake_offset="+120s", **timing)
        behind = start(stack, aws, tmp_path, "behind", fake_offset="-120s", **timing)
        replicas = {"right": right, "ahead": ahead, "behind": behind}

        def watch(seconds: float, alive: list[Daemon]) -> None:
            end = time.monotonic() + seconds
            while time.monotonic() < end:
                seen.poll()
                right_, ahead_, behind_ = (leading(p) if p in alive else False for p in replicas.values())
                samples.append((right_, ahead_, behind_))
                time.sleep(0.2)

        watch(8, [right, ahead, behind])  # the skewed replicas start beside a leader: they must not lead
        assert not any(s[1] or s[2] for s in samples), "a skewed replica took a lease that was not free"
        skew = {name: p.value("rotator_clock_skew_seconds") for name, p in replicas.items()}
        print(f"\nclock skew each replica measured (AWS minus host): {skew}")
        assert abs(skew["right"]) < 1.5 and abs(skew["ahead"] + 120) < 1.5 and abs(skew["behind"] - 120) < 1.5

        stop_all(right)  # hands the lease over: now a skewed replica leads and rotates
        watch(9, [ahead, behind])
        first = "ahead" if any(s[1] for s in samples) else "behind"
        other = "behind" if first == "ahead" else "ahead"
        stop_all(replicas[first])
        watch(9, [replicas[other]])
        assert any(s[2 if other == "behind" else 1] for s in samples), "the last replica led"
        stop_all(replicas[other])

        assert all(sum(s) <= 1 for s in samples), "one leader at a time"
        led_rotations = {name: len(named(p, "rotation.published")) for name, p in replicas.items()}
        print(f"rotations published per replica: {led_rotations}")
        assert led_rotations["ahead"] and led_rotations["behind"], led_rotations
        for name, process in replicas.items():
            assert not named(process, "action.failed"), (name, named(process, "action.failed"))
            assert not named(process, "rotation.key_withdrawn"), name  # every rotation succeeded

        # Grace (3 s) from publication of the successor to disabling, retention (3 s) from disabling to
        # deletion, bracketed on the test's clock (moto's: AWS's time here) by the polls (KeyTimes). 1 s for
        # the rotator's own reading of AWS's time (Date headers have whole seconds); a host clock's 120 s, or
        # the 0.5 s retention the issue measured, stand far outside it.
        graces, retentions = seen.graces(), seen.retentions()
        assert graces and retentions, (graces, retentions)
        print(
            f"grace observed: min {min(graces):.1f}s; retention observed: min {min(retentions):.1f}s "
            f"(each the longest the polls allow; poll cycle median {statistics.median(seen.cycles):.2f}s, "
            f"max {max(seen.cycles):.2f}s)"
        )
        assert min(graces) >= 3 - 1.0, graces
        assert min(retentions) >= 3 - 1.0, retentions
        collect_secrets(aws, users)
        assert_converged(aws, users)
        for process in replicas.values():
            process.assert_clean_output(aws.created_secrets)


# -- takeover sweeps ------------------------------------------------------------------------------------


def test_a_new_leader_sweeps_at_once_when_the_dead_leaders_schedule_is_overdue(aws: AwsEnv, tmp_path: Path) -> None:
    lease_table(aws)
    users = [f"late-{n:02d}" for n in range(20)]
    for user in users:
        aws.user(user)
    time.sleep(1.1)  # every key is older than max_key_age
    with ExitStack() as stack:
        a = start(stack, aws, tmp_path, "a", interval="1h", max_key_age="1s")
        wait(lambda: leading(a), 20, "the first replica to lead")
        b = start(stack, aws, tmp_path, "b", interval="1h", max_key_age="1s")
        wait(lambda: named(b, "sweep.skipped"), 20, "the standby's own first slot to pass")
        wait(lambda: named(a, "rotation.key_created"), 30, "the leader's sweep")
        a.proc.kill()  # kill -9 in the middle of its sweep: no successful sweep recorded
        killed = time.monotonic()
        a.proc.wait(timeout=10)
        led = wait(lambda: leading(b), TTL + 10, "the standby to take over")
        swept = wait(lambda: named(b, "sweep.started"), TTL + 10, "the new leader's sweep")
        print(
            f"\nfailover after kill -9: {led - killed:.1f}s; takeover to first sweep: {max(0.0, swept - led):.1f}s; "
            f"kill to sweep: {swept - killed:.1f}s (lease_ttl {TTL:g}s, interval 1h)"
        )
        assert swept - killed <= TTL + 5, "the new leader swept within the lease TTL plus a few seconds"
        (takeover,) = named(b, "leader.takeover")
        assert takeover["overdue"] is True and takeover["last_sweep"] is None
        wait(lambda: named(b, "sweep.finished"), 60, "the new leader's sweep to finish")
        assert named(b, "sweep.finished")[0]["users"] == len(users), "the new leader swept every user"
        stop_all(b)
        collect_secrets(aws, users)
        b.assert_clean_output(aws.created_secrets)


# -- clean stderr ---------------------------------------------------------------------------------------


def _hang_up(port: int, *, before_request: bool) -> None:
    """Connect to /metrics and reset the connection (SO_LINGER 0), before or right after asking."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        if not before_request:
            conn.sendall(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")


def test_metrics_clients_that_hang_up_leave_stderr_pure_json(aws: AwsEnv, tmp_path: Path) -> None:
    users = [f"scraped-{n}" for n in range(10)]
    for user in users:
        aws.user(user)
    with ExitStack() as stack:
        run = start(stack, aws, tmp_path, "run", lease=False, max_key_age="1s")
        deadline = time.monotonic() + 6  # while it rotates (and logs) steadily
        hung_up = 0
        while time.monotonic() < deadline:
            _hang_up(run.port, before_request=hung_up % 2 == 0)
            hung_up += 1
            time.sleep(0.01)
        assert run.get("/healthz")[0] == 200, "the endpoint still answers"
        stop_all(run)
        assert named(run, "rotation.published"), "log lines were being written meanwhile"
        collect_secrets(aws, users)
        run.assert_clean_output(aws.created_secrets)  # every line one JSON object with timestamp/level/event
        print(f"\n{hung_up} /metrics clients hung up; stderr: {len(events(run))} JSON lines, nothing else")
