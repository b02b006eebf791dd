"""Benchmark of the executor: wall time and AWS calls per rotated, disabled and deleted key.

Everything runs locally against this script's own ``moto_server`` subprocess (stopped at the end):

1. **seed** ``--users`` managed users without keys, and let the real rotator bootstrap them (one
   in-process sweep): each then has one key, held by the ``AWSCURRENT`` version of a secret the
   rotator published - the steady state;
2. **rotate** - once those keys are older than ``max_key_age`` (1 s), one sweep rotates every user:
   new key, ``AWSPENDING``, validation, ``AWSCURRENT`` moved, records written;
3. **disable** - once every publication is ``grace_period`` (3 s) old, one sweep disables every
   previous key (``disable_guard: hold`` with a 1 s ``quiet_period``: the guard's last-use read is
   part of the cost, and the old keys have not been used);
4. **delete** - once every key has been Inactive for ``retention`` (3 s), one sweep deletes them.

Each phase is an in-process :class:`rotator.app.App` with a fresh ``CollectorRegistry`` (so its
``rotator_aws_api_calls_total`` counts that sweep alone), the client-side rate limit lifted (wall
time is work, not throttling) and ``safety.max_actions_per_sweep`` above the number of users. The
disable and delete phases use ``max_key_age: 1h``: with 1 s the delete sweep would at once rotate
the keys again (deleting the previous key frees the slot a rotation waits for), mixing two costs.

For each phase the script prints the users, the wall time, the AWS calls in total and per key acted
on, by operation, split into reads and writes (``sts:GetCallerIdentity`` signed with a new key is the
validation: a read), and checks the outcome against IAM and Secrets Manager directly: every secret's
``AWSCURRENT`` holds SPEC's document for the new key, which exists, is Active and signs requests;
after disable the old keys are Inactive (and no earlier than ``grace_period`` after publication);
after delete they are gone. Any mismatch ends the run with exit 1.

Usage: ``python benchmarks/executor.py [--users 200]``
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from _support import MANAGED, MUTATING, MotoServer, api_calls, client, create_users, moto_environ, timed_sweep

from rotator.app import SweepReport
from rotator.model import (
    AWSCURRENT,
    AWSPENDING,
    AWSPREVIOUS,
    TAG_DISABLED_AT,
    TAG_DISABLED_KEY,
    TAG_PUBLISHED_AT,
    Action,
    version_id_for,
)

PATH = "/svc/"
GRACE = 3.0  # seconds
RETENTION = 3.0  # seconds
DOCUMENT_FIELDS = {"Version", "AccessKeyId", "SecretAccessKey", "UserName", "CreateDate"}
#: AWS operations that change state; every other call the rotator makes only reads.
WRITES = MUTATING


def config_text(users: int, max_key_age: str) -> str:
    return (
        "policy:\n"
        f"  max_key_age: {max_key_age}\n"
        f"  grace_period: {int(GRACE)}s\n"
        f"  retention: {int(RETENTION)}s\n"
        "  disable_guard: hold\n"
        "  quiet_period: 1s\n"
        "  max_hold: 1h\n"
        f"selection: {{path_prefix: {PATH}, tag: {{key: rotator, value: enabled}}}}\n"
        f"safety: {{max_actions_per_sweep: {users + 10}}}\n"
        "aws: {max_calls_per_second: 1000000, validation_timeout: 60s}\n"
    )


def seed(url: str, users: list[str]) -> None:
    create_users(url, dict.fromkeys(users, MANAGED), path=PATH, keys=0)


# -- one measured sweep ----------------------------------------------------------------------------------


@dataclass
class Phase:
    name: str
    action: Action
    report: SweepReport
    wall: float
    calls: Counter[tuple[str, str]] = field(default_factory=Counter)  # (service, operation) -> ok|error calls
    errors: Counter[str] = field(default_factory=Counter)  # operation -> calls answered with an error
    throttled: int = 0

    @property
    def keys(self) -> int:
        return self.report.count(self.action)


def sweep(name: str, action: Action, config: Path) -> Phase:
    report, registry, wall = timed_sweep(config)
    phase = Phase(name, action, report, wall)
    for labels, count in api_calls(registry):
        if not count:
            continue
        if labels["outcome"] == "throttled":
            phase.throttled += count
            continue
        phase.calls[(labels["service"], labels["operation"])] += count
        if labels["outcome"] == "error":
            phase.errors[labels["operation"]] += count
    return phase


def print_phase(phase: Phase, users: int, checked: str) -> None:
    report = phase.report
    keys = phase.keys
    total = sum(phase.calls.values())
    writes = sum(n for (_, op), n in phase.calls.items() if op in WRITES)
    reads = total - writes
    done = {a.value: report.count(a) for a in Action if report.count(a)}
    per = keys or 1
    print(f"== {phase.name}: {users} users, {keys} keys {phase.action.value}d, wall {phase.wall:.2f} s")
    print(
        f"   AWS calls {total} = {total / per:.2f} per key: reads {reads} ({reads / per:.2f}/key), "
        f"writes {writes} ({writes / per:.2f}/key); throttled retries {phase.throttled}; "
        f"actions {done or '-'}; failed {report.failed}"
    )
    rows = sorted(phase.calls.items(), key=lambda item: (item[0][1] not in WRITES, -item[1], item[0][1]))
    width = max(len(f"{svc}:{op}") for (svc, op), _ in rows)
    print(f"   {'operation':{width}}  kind   calls  per key")
    for (svc, op), count in rows:
        kind = "write" if op in WRITES else "read"
        note = f"  ({phase.errors[op]} answered with an expected error)" if phase.errors.get(op) else ""
        print(f"   {svc + ':' + op:{width}}  {kind:5}  {count:5}  {count / per:7.3f}{note}")
    print(f"   verified: {checked}")
    print()


# -- checking the outcome against AWS directly -----------------------------------------------------------


class Mismatch(Exception):
    """The AWS state after a phase is not what the phase must leave."""


@dataclass
class UserView:
    keys: dict[str, str]  # key id -> status
    stages: dict[str, list[str]]  # version id -> staging labels
    tags: dict[str, str]
    document: dict[str, Any]


_CLIENTS: dict[tuple[str, str], Any] = {}


def shared(url: str, service: str) -> Any:
    """One client per service for the checks (boto3 clients are thread-safe; building one is slow)."""
    if (url, service) not in _CLIENTS:
        _CLIENTS[(url, service)] = client(url, service)
    return _CLIENTS[(url, service)]


def look(url: str, user: str) -> UserView:
    iam, sm = shared(url, "iam"), shared(url, "secretsmanager")
    keys = {k["AccessKeyId"]: k["Status"] for k in iam.list_access_keys(UserName=user)["AccessKeyMetadata"]}
    described = sm.describe_secret(SecretId=f"iam-keys/{user}")
    stages = {v: s for v, s in described.get("VersionIdsToStages", {}).items() if s}
    tags = {t["Key"]: t["Value"] for t in described.get("Tags", [])}
    value = sm.get_secret_value(SecretId=f"iam-keys/{user}", VersionStage=AWSCURRENT)
    return UserView(keys, stages, tags, json.loads(value["SecretString"]))


def check_current(url: str, user: str, view: UserView) -> str:
    """SPEC's document in AWSCURRENT, for a key that exists, is Active and signs requests."""
    document = view.document
    if set(document) != DOCUMENT_FIELDS or document["Version"] != 1 or document["UserName"] != user:
        raise Mismatch(f"{user}: AWSCURRENT does not hold SPEC's document (fields {sorted(document)})")
    key_id = document["AccessKeyId"]
    if view.keys.get(key_id) != "Active":
        raise Mismatch(f"{user}: AWSCURRENT holds {key_id}, IAM has {view.keys}")
    current_versions = [v for v, s in view.stages.items() if AWSCURRENT in s]
    if current_versions != [version_id_for(key_id)]:
        raise Mismatch(f"{user}: AWSCURRENT on {current_versions}, expected the version of {key_id}")
    if any(AWSPENDING in s for s in view.stages.values()):
        raise Mismatch(f"{user}: AWSPENDING left: {view.stages}")
    sts = client(url, "sts", key_id, document["SecretAccessKey"])
    if not sts.get_caller_identity()["Arn"].endswith(f":user{PATH}{user}"):
        raise Mismatch(f"{user}: the published key does not authenticate as the user")
    return str(key_id)


def check_all(url: str, users: list[str], one: Callable[[str, UserView], None]) -> None:
    def run(user: str) -> str | None:
        try:
            one(user, look(url, user))
        except Mismatch as exc:
            return str(exc)
        return None

    with ThreadPoolExecutor(8) as pool:
        problems = [p for p in pool.map(run, users) if p]
    if problems:
        raise Mismatch(f"{len(problems)} users wrong, e.g.: " + "; ".join(problems[:3]))


def latest(url: str, users: list[str], tag: str) -> datetime:
    sm = shared(url, "secretsmanager")
    found = []
    for user in users:
        tags = {t["Key"]: t["Value"] for t in sm.describe_secret(SecretId=f"iam-keys/{user}").get("Tags", [])}
        found.append(datetime.fromisoformat(tags[tag]))
    return max(found)


def sleep_until(moment: datetime) -> float:
    delay = max(0.0, (moment - datetime.now(UTC)).total_seconds())
    time.sleep(delay)
    return delay


def expect(phase: Phase, users: int) -> None:
    report = phase.report
    if report.failed:
        failures = [msg for o in report.outcomes for _, msg in o.failed] + report.errors
        raise Mismatch(f"{phase.name}: {report.failed} failures, e.g. {failures[:3]}")
    others = {a.value: report.count(a) for a in Action if a is not phase.action and report.count(a)}
    if phase.keys != users or others:
        raise Mismatch(f"{phase.name}: {phase.keys} keys {phase.action.value}d of {users}; also {others}")


# -- driver ----------------------------------------------------------------------------------------------


@dataclass
class Run:
    url: str
    users: list[str]
    due_config: Path  # max_key_age 1 s: every key is due
    later_config: Path  # max_key_age 1 h: disable and delete only
    old: dict[str, str] = field(default_factory=dict)  # user -> the key before the rotation
    new: dict[str, str] = field(default_factory=dict)  # user -> the key the rotation published
    phases: list[Phase] = field(default_factory=list)

    def measure(self, name: str, action: Action, config: Path) -> Phase:
        phase = sweep(name, action, config)
        expect(phase, len(self.users))
        return phase

    def setup(self) -> None:
        phase = self.measure(
            "setup: first key and secret (bootstrap of users without a key)", Action.ROTATE, self.later_config
        )

        def first(user: str, view: UserView) -> None:
            self.old[user] = check_current(self.url, user, view)
            if list(view.keys) != [self.old[user]]:
                raise Mismatch(f"{user}: expected one key, IAM has {view.keys}")

        check_all(self.url, self.users, first)
        print_phase(
            phase, len(self.users), "each secret's AWSCURRENT holds the user's only key: Active, signs requests"
        )

    def rotate(self) -> None:
        time.sleep(1.1)  # every key is now older than max_key_age (1 s)
        phase = self.measure("rotate", Action.ROTATE, self.due_config)
        old, new = self.old, self.new

        def rotated(user: str, view: UserView) -> None:
            new[user] = check_current(self.url, user, view)
            if new[user] == old[user] or view.keys != {old[user]: "Active", new[user]: "Active"}:
                raise Mismatch(f"{user}: expected old {old[user]} and a new key, both Active; IAM has {view.keys}")
            previous = [v for v, s in view.stages.items() if AWSPREVIOUS in s]
            if previous != [version_id_for(old[user])]:
                raise Mismatch(f"{user}: AWSPREVIOUS is not on the old key's version: {view.stages}")

        check_all(self.url, self.users, rotated)
        self.phases.append(phase)
        print_phase(
            phase,
            len(self.users),
            "each AWSCURRENT holds a new key (exists, Active, signs requests), AWSPREVIOUS the old one, "
            "no AWSPENDING; old keys still Active",
        )

    def disable(self) -> None:
        waited = sleep_until(latest(self.url, self.users, TAG_PUBLISHED_AT) + timedelta(seconds=GRACE + 0.2))
        print(f"(waited {waited:.1f} s more for the last publication's grace period of {GRACE:.0f} s)")
        phase = self.measure("disable", Action.DISABLE, self.later_config)
        old, new = self.old, self.new

        def disabled(user: str, view: UserView) -> None:
            if check_current(self.url, user, view) != new[user]:
                raise Mismatch(f"{user}: AWSCURRENT moved off the new key")
            if view.keys != {old[user]: "Inactive", new[user]: "Active"}:
                raise Mismatch(f"{user}: expected old Inactive and new Active; IAM has {view.keys}")
            if view.tags.get(TAG_DISABLED_KEY) != old[user]:
                raise Mismatch(f"{user}: disable not recorded: {view.tags}")
            published = datetime.fromisoformat(view.tags[TAG_PUBLISHED_AT])
            if datetime.fromisoformat(view.tags[TAG_DISABLED_AT]) < published + timedelta(seconds=GRACE):
                raise Mismatch(f"{user}: disabled before its grace period (I5)")

        check_all(self.url, self.users, disabled)
        self.phases.append(phase)
        print_phase(
            phase, len(self.users), "old keys Inactive, disabled-at >= published-at + grace; AWSCURRENT new key, Active"
        )

    def delete(self) -> None:
        waited = sleep_until(latest(self.url, self.users, TAG_DISABLED_AT) + timedelta(seconds=RETENTION + 0.2))
        print(f"(waited {waited:.1f} s more for the last disabled key's retention of {RETENTION:.0f} s)")
        phase = self.measure("delete", Action.DELETE, self.later_config)
        new = self.new

        def deleted(user: str, view: UserView) -> None:
            if check_current(self.url, user, view) != new[user] or view.keys != {new[user]: "Active"}:
                raise Mismatch(f"{user}: expected only the new key, Active and current; IAM has {view.keys}")

        check_all(self.url, self.users, deleted)
        self.phases.append(phase)
        print_phase(phase, len(self.users), "old keys gone; each user has one key, Active, held by AWSCURRENT")

    def summary(self) -> None:
        print(f"{'per key':8} {'calls':>7} {'reads':>7} {'writes':>7}   (wall s for {len(self.users)} users)")
        for phase in self.phases:
            total = sum(phase.calls.values())
            writes = sum(n for (_, op), n in phase.calls.items() if op in WRITES)
            keys = phase.keys or 1
            print(
                f"{phase.name:8} {total / keys:7.2f} {(total - writes) / keys:7.2f} {writes / keys:7.2f}"
                f"   ({phase.wall:.2f})"
            )


def run(url: str, count: int, tmp: Path) -> None:
    users = [f"svc-{n:05d}" for n in range(count)]
    due_config, later_config = tmp / "due.yaml", tmp / "later.yaml"
    due_config.write_text(config_text(count, "1s"))
    later_config.write_text(config_text(count, "1h"))
    started = time.perf_counter()
    seed(url, users)
    print(f"seeded {count} managed users (no keys) in {time.perf_counter() - started:.1f} s")
    benchmark = Run(url, users, due_config, later_config)
    with moto_environ(url):  # the in-process rotator's AWS is the emulator
        benchmark.setup()
        benchmark.rotate()
        benchmark.disable()
        benchmark.delete()
    benchmark.summary()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=200, help="managed users (default 200)")
    args = parser.parse_args()
    server = MotoServer()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            print(f"executor benchmark: {args.users} managed users, moto_server {server.url}")
            run(server.url, args.users, Path(tmp))
    except Mismatch as exc:
        print(f"FAILED: {exc}", file=sys.stderr)
        return 1
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
