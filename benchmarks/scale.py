"""Whole-account figures under an AWS-like proxy: steady-state ``plan``, a bootstrap sweep, ``rotate --all``.

Usage::

    python benchmarks/scale.py [--users 1000] [--latency 0.05] [--iam-rate 20] [--propagation 5]
                               [--custodian PATH/TO/custodian] [--steady-only] [--json]

A loopback proxy (``tests/faultproxy.py``'s, plus three AWS behaviours moto lacks) sits between every client
and a moto server:

* **latency**: every request waits ``--latency`` seconds (default 50 ms) before it is served;
* **throttling**: a token bucket per service (``--iam-rate`` 20/s, ``--sm-rate`` 50/s, ``--sts-rate`` 50/s,
  ``--other-rate`` 50/s; a burst of one second's worth) answers ``Throttling``/``ThrottlingException``
  past the rate, before moto sees the request;
* **key propagation**: a request signed by a key created through the proxy less than ``--propagation`` seconds
  ago (default 5 s) is refused with ``InvalidClientTokenId``, as AWS does until a new key has propagated.

For ``--users`` managed users (each created with one access key, no secret) it measures, in this order and in
one run: the **bootstrap sweep** (``rotator sweep``), the **steady-state plan** (``rotator plan --json``; the
keys the bootstrap replaced are deleted first, straight on moto, so that every user has one young key), and
**``rotate --all --yes``**. Each runs as a child process (wall time, peak RSS from ``wait4``); the proxy counts
every call it answered, every throttle it sent and every propagation refusal. Beside them, through the same
proxy: **Cloud Custodian**'s inventory of the same users (``custodian run``, ``iam-user`` with the managed tag
and an access-key filter; given ``--custodian``), the **bulk-read floor** (a bare boto3 script that only makes
the listing calls a steady-state plan cannot avoid) and the **IAM floor** (IAM calls needed / IAM rate, both
for the calls the run made and for issue 12's target of 3 IAM calls per key).

``--steady-only`` seeds the steady state straight on moto (each user one key and the secret holding it, tagged as
the rotator tags it) and measures ``plan``, a steady-state ``sweep`` and their baselines only: 10,000 users without
a 10,000-user bootstrap; with ``--rotate`` it then measures ``rotate --all`` of them too. ``--baseline DIR`` (a
checkout of another commit) measures that commit's ``plan`` beside this one's, in turn, in the same run.
``--repeat N`` runs the steady-state phases (``plan``, ``sweep``, the bulk-read floor) N times in turn and reports
each one's median run (a single run of a few seconds is at the mercy of the machine).

Figures go to stdout as a table (``--json``: one JSON object). docs/performance.md records them with the command.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import textwrap
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from _support import MANAGED, MotoServer, aws_env, client, create_users

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from faultproxy import Call, FaultProxy, Rule

ROOT = Path(__file__).resolve().parent.parent
PATH = "/bench/"
#: The code AWS answers past its rate, per service (each in its own protocol; botocore retries them all).
THROTTLE_CODES = {
    "iam": "Throttling",
    "sts": "Throttling",
    "secretsmanager": "ThrottlingException",
    "dynamodb": "ThrottlingException",
    "organizations": "TooManyRequestsException",
}


class TokenBucket:
    """``rate`` requests per second with a burst of one second's worth; :meth:`refuse` takes a token or says no."""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self.tokens = rate
        self.stamp = time.monotonic()

    def refuse(self, _call: Call) -> bool:
        now = time.monotonic()
        self.tokens = min(self.rate, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return False
        return True


class AwsLikeProxy(FaultProxy):
    """The fault proxy with AWS's latency, per-service throttling and key propagation delay."""

    def __init__(self, upstream: str, *, latency: float, rates: dict[str, float], propagation: float) -> None:
        super().__init__(upstream, resolve_signers=False)
        self.latency = latency
        self.propagation = propagation
        self._born: dict[str, float] = {}
        self.refused_young = self.add(
            Rule(
                "fail_before",
                None,
                when=self._young,
                times=None,
                status=403,
                code="InvalidClientTokenId",
                message="The security token included in the request is invalid.",
            )
        )
        self.throttles = {
            service: self.add(
                Rule(
                    "fail_before",
                    None,
                    service=service,
                    when=TokenBucket(rate).refuse,
                    times=None,
                    status=400,
                    code=THROTTLE_CODES.get(service, "ThrottlingException"),
                    message="Rate exceeded",
                )
            )
            for service, rate in rates.items()
        }

    def _young(self, call: Call) -> bool:
        born = self._born.get(call.signer_key_id or "")
        return born is not None and time.monotonic() - born < self.propagation

    def _handle(self, h: Any) -> None:
        time.sleep(self.latency)
        super()._handle(h)

    def _observe(self, call: Call, response: Any) -> Any:
        response = super()._observe(call, response)
        if call.operation == "CreateAccessKey" and response.status == 200:
            found = re.search(rb"<AccessKeyId>([A-Z0-9]+)</AccessKeyId>", response.body)
            if found:
                self._born[found.group(1).decode()] = time.monotonic()
        return response


@dataclass
class Phase:
    """One measured run: what the proxy saw while it ran."""

    name: str
    wall: float = 0.0
    rss_mib: float | None = None
    exit_code: int | None = None
    calls: Counter[str] = field(default_factory=Counter)
    throttled: int = 0
    refused_young: int = 0
    #: Every run's wall time when the phase was repeated (``--repeat``); this phase is the median one.
    walls: list[float] = field(default_factory=list)

    @property
    def total(self) -> int:
        return sum(self.calls.values())

    def service(self, name: str) -> int:
        return sum(n for op, n in self.calls.items() if op.startswith(name + ":"))


def measure(
    proxy: AwsLikeProxy,
    name: str,
    argv: list[str],
    env: dict[str, str],
    stdin: str | None = None,
    *,
    cwd: Path = ROOT,
) -> Phase:
    """Run ``argv`` as a child process through the proxy: wall time, peak RSS, the proxy's view of its calls."""
    proxy.clear_calls()
    started = time.perf_counter()
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        process = subprocess.Popen(
            argv, stdin=subprocess.PIPE if stdin else subprocess.DEVNULL, stdout=out, stderr=err, env=env, cwd=cwd
        )
        if stdin and process.stdin:
            process.stdin.write(stdin.encode())
            process.stdin.close()
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
        wall = time.perf_counter() - started
        if process.returncode not in (0,):
            err.seek(0)
            tail = err.read().decode(errors="replace")[-1500:]
            print(f"# {name}: exit {process.returncode}\n{textwrap.indent(tail, '#   ')}", file=sys.stderr)
    calls = proxy.calls
    phase = Phase(name, wall, usage.ru_maxrss / 1024, process.returncode)
    for call in calls:
        if call.fault is None:
            phase.calls[f"{call.service}:{call.operation}"] += 1
        elif call.fault == "fail_before" and call.status == 403:
            phase.refused_young += 1
        else:
            phase.throttled += 1
    return phase


def median(runs: list[Phase]) -> Phase:
    """The run of median wall time (the lower one of an even count), with every run's wall time."""
    chosen = sorted(runs, key=lambda p: p.wall)[(len(runs) - 1) // 2]
    chosen.walls = [round(p.wall, 2) for p in runs] if len(runs) > 1 else []
    chosen.exit_code = next((p.exit_code for p in runs if p.exit_code != 0), chosen.exit_code)
    return chosen


BULK_READ_FLOOR = """
import sys, time, boto3
prefix, path = sys.argv[1], sys.argv[2]
iam, sm = boto3.client("iam"), boto3.client("secretsmanager")
for page in iam.get_paginator("get_account_authorization_details").paginate(Filter=["User"]):
    pass
iam.generate_credential_report()
iam.get_credential_report()
for page in sm.get_paginator("list_secrets").paginate(Filters=[{"Key": "name", "Values": [prefix]}]):
    pass
"""


def custodian_policy(directory: Path) -> Path:
    policy = directory / "custodian.yml"
    policy.write_text(
        textwrap.dedent(
            f"""\
            policies:
              - name: managed-users-keys
                resource: iam-user
                filters:
                  - "tag:{next(iter(MANAGED))}": {MANAGED[next(iter(MANAGED))]}
                  - type: access-key
                    key: Status
                    value: Active
            """
        )
    )
    return policy


def config_file(directory: Path, users: int) -> Path:
    path = directory / "rotator.yaml"
    path.write_text(
        textwrap.dedent(
            f"""\
            selection: {{path_prefix: {PATH}}}
            safety: {{max_actions_per_sweep: {users * 3}}}
            aws: {{validation_timeout: 60s}}
            logging: {{level: warning}}
            """
        )
    )
    return path


def delete_replaced_keys(url: str, names: list[str]) -> list[str]:
    """Straight on moto: each user keeps only the key its secret holds (the bootstrap's previous key goes).

    Returns the users without a secret (a bootstrap that failed: the sweep said why), left as they are.
    """
    iam, sm = client(url, "iam"), client(url, "secretsmanager")
    missing: list[str] = []

    def one(name: str) -> None:
        try:
            value = sm.get_secret_value(SecretId=f"iam-keys/{name}", VersionStage="AWSCURRENT")
        except sm.exceptions.ResourceNotFoundException:
            missing.append(name)
            return
        current = json.loads(value["SecretString"])
        for key in iam.list_access_keys(UserName=name)["AccessKeyMetadata"]:
            if key["AccessKeyId"] != current["AccessKeyId"]:
                iam.delete_access_key(UserName=name, AccessKeyId=key["AccessKeyId"])

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(one, names))
    return sorted(missing)


def seed_steady_state(url: str, names: list[str]) -> None:
    """Straight on moto, what a completed rotation leaves: one key per user, its secret holding it, tagged as the
    rotator tags it (``--steady-only``: a 10,000-user steady state without a 10,000-user bootstrap first).
    """
    from rotator.model import (  # noqa: PLC0415 - only this mode needs the rotator's names
        TAG_CURRENT_CREATED,
        TAG_CURRENT_KEY,
        TAG_MANAGED,
        TAG_PUBLISHED_AT,
        TAG_USER,
        version_id_for,
    )

    iam, sm = client(url, "iam"), client(url, "secretsmanager")

    def one(name: str) -> None:
        tags = [{"Key": k, "Value": v} for k, v in MANAGED.items()]
        iam.create_user(UserName=name, Path=PATH, Tags=tags)
        key = iam.create_access_key(UserName=name)["AccessKey"]
        created = key["CreateDate"].isoformat()
        document = {
            "Version": 1,
            "AccessKeyId": key["AccessKeyId"],
            "SecretAccessKey": key["SecretAccessKey"],
            "UserName": name,
            "CreateDate": created,
        }
        secret_tags = {
            TAG_MANAGED: "true",
            TAG_USER: name,
            TAG_CURRENT_KEY: key["AccessKeyId"],
            TAG_CURRENT_CREATED: created,
            TAG_PUBLISHED_AT: created,
        }
        sm.create_secret(
            Name=f"iam-keys/{name}",
            SecretString=json.dumps(document),
            ClientRequestToken=version_id_for(key["AccessKeyId"]),
            Tags=[{"Key": k, "Value": v} for k, v in secret_tags.items()],
        )

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(one, names))
    # A steady state has a credential report under 4 hours old (IAM answers COMPLETE at once): without it the
    # first phase measured would wait for one to be generated and the later ones, the floor among them, not.
    while iam.generate_credential_report()["State"] != "COMPLETE":
        time.sleep(0.1)


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument("--latency", type=float, default=0.05)
    parser.add_argument("--iam-rate", type=float, default=20.0)
    parser.add_argument("--sm-rate", type=float, default=50.0)
    parser.add_argument("--sts-rate", type=float, default=50.0)
    parser.add_argument("--other-rate", type=float, default=50.0)
    parser.add_argument("--propagation", type=float, default=5.0)
    parser.add_argument("--custodian", default=None, help="the custodian executable (a venv with c7n from PyPI)")
    parser.add_argument(
        "--steady-only",
        action="store_true",
        help="seed the steady state straight on moto; measure plan, a sweep and their baselines (no bootstrap)",
    )
    parser.add_argument(
        "--rotate", action="store_true", help="with --steady-only: then rotate --all the seeded users too"
    )
    parser.add_argument(
        "--repeat", type=int, default=1, help="run the steady-state phases N times in turn; report each one's median"
    )
    parser.add_argument(
        "--baseline",
        metavar="DIR",
        help="another commit's tree (git archive COMMIT | tar -x -C DIR): its plan is measured beside this one's",
    )
    parser.add_argument("--json", action="store_true")
    return parser.parse_args()


def main() -> int:
    args = arguments()
    rates = {
        "iam": args.iam_rate,
        "secretsmanager": args.sm_rate,
        "sts": args.sts_rate,
        "dynamodb": args.other_rate,
        "organizations": args.other_rate,
    }
    moto = MotoServer()
    proxy = AwsLikeProxy(moto.url, latency=args.latency, rates=rates, propagation=args.propagation).start()
    phases: list[Phase] = []
    try:
        names = [f"bench-{n:05d}" for n in range(args.users)]
        seeding = time.perf_counter()
        if args.steady_only:
            seed_steady_state(moto.url, names)
        else:
            create_users(moto.url, dict.fromkeys(names, MANAGED), path=PATH, keys=1)
        print(f"# seeded {args.users} users on moto in {time.perf_counter() - seeding:.1f} s", file=sys.stderr)
        work = Path(tempfile.mkdtemp(prefix="rotator-scale-"))
        config = config_file(work, args.users)
        env = {**aws_env(proxy.url), "PATH": os.environ.get("PATH", "")}
        rotator = [sys.executable, "-m", "rotator.cli", "--config", str(config)]

        if not args.steady_only:
            phases.append(measure(proxy, "bootstrap sweep", [*rotator, "sweep"], env))
            missing = delete_replaced_keys(moto.url, names)
            if missing:
                print(f"# {len(missing)} users without a secret after the bootstrap: {missing[:10]}", file=sys.stderr)
        floor_script = work / "floor.py"
        floor_script.write_text(BULK_READ_FLOOR)
        steady = [("plan (steady state)", [*rotator, "plan", "--json"], ROOT)]
        if args.baseline:
            # ``python -m`` puts the working directory first on sys.path: that checkout's rotator runs.
            steady.append(("plan (baseline checkout)", [*rotator, "plan", "--json"], Path(args.baseline).resolve()))
        if args.steady_only:
            # The same inventory, then nothing to act on: issue 12's "10,000-user sweep under 120 MB".
            steady.append(("sweep (steady state)", [*rotator, "sweep"], ROOT))
        steady.append(("bulk-read floor (boto3)", [sys.executable, str(floor_script), "iam-keys/", PATH], ROOT))
        runs: dict[str, list[Phase]] = {name: [] for name, _, _ in steady}
        for _ in range(max(1, args.repeat)):
            for name, argv, cwd in steady:
                runs[name].append(measure(proxy, name, argv, env, cwd=cwd))
        phases.extend(median(runs[name]) for name, _, _ in steady)
        if args.custodian:
            policy = custodian_policy(work)
            phases.append(
                measure(
                    proxy,
                    "Cloud Custodian inventory",
                    [
                        args.custodian,
                        "run",
                        "--cache-period",
                        "0",
                        "-s",
                        str(work / "c7n-out"),
                        "--region",
                        "us-east-1",
                        str(policy),
                    ],
                    env,
                )
            )
        if args.rotate or not args.steady_only:
            phases.append(measure(proxy, "rotate --all", [*rotator, "rotate", "--all", "--yes"], env))
    finally:
        proxy.stop()
        moto.stop()
    report(args, phases)
    return 0 if all(p.exit_code == 0 for p in phases) else 1


def report(args: argparse.Namespace, phases: list[Phase]) -> None:
    users = args.users
    by_name = {p.name: p for p in phases}
    rotate = by_name.get("rotate --all")
    plan = by_name["plan (steady state)"]
    floor = by_name["bulk-read floor (boto3)"]
    custodian = by_name.get("Cloud Custodian inventory")
    baseline = by_name.get("plan (baseline checkout)")
    iam_floor_made = rotate.service("iam") / args.iam_rate if rotate else 0.0
    iam_floor_target = 3 * users / args.iam_rate
    figures: dict[str, Any] = {
        "users": users,
        "proxy": {
            "latency_s": args.latency,
            "iam_rate": args.iam_rate,
            "sm_rate": args.sm_rate,
            "sts_rate": args.sts_rate,
            "propagation_s": args.propagation,
        },
        "phases": [
            {
                "name": p.name,
                "wall_s": round(p.wall, 2),
                "peak_rss_mib": round(p.rss_mib, 1) if p.rss_mib else None,
                "exit": p.exit_code,
                "calls": p.total,
                "calls_per_user": round(p.total / users, 4),
                "iam_calls_per_user": round(p.service("iam") / users, 3),
                "throttled": p.throttled,
                "refused_unpropagated": p.refused_young,
                "by_operation": dict(sorted(p.calls.items())),
                "walls_s": p.walls,
            }
            for p in phases
        ],
        "iam_floor_s": {"calls_made": round(iam_floor_made, 1), "target_3_per_key": round(iam_floor_target, 1)},
        "ratios": {
            "rotate_all_vs_iam_floor_target": round(rotate.wall / iam_floor_target, 2) if rotate else None,
            "rotate_all_vs_iam_floor_calls_made": round(rotate.wall / iam_floor_made, 2) if rotate else None,
            "plan_vs_bulk_read_floor": round(plan.wall / floor.wall, 2),
            "baseline_plan_vs_bulk_read_floor": round(baseline.wall / floor.wall, 2) if baseline else None,
            "custodian_vs_plan": round(custodian.wall / plan.wall, 1) if custodian else None,
        },
    }
    if args.json:
        print(json.dumps(figures, indent=2))
        return
    print(
        f"users={users} latency={args.latency}s iam={args.iam_rate}/s sm={args.sm_rate}/s sts={args.sts_rate}/s "
        f"propagation={args.propagation}s"
    )
    header = f"{'run':28} {'wall s':>8} {'peak MiB':>9} {'calls':>7} {'calls/user':>10} {'IAM/user':>9}"
    header += f" {'throttled':>9} {'unprop.':>7}"
    print(header)
    for p in figures["phases"]:
        print(
            f"{p['name']:28} {p['wall_s']:8.2f} {p['peak_rss_mib'] or 0:9.1f} {p['calls']:7d} "
            f"{p['calls_per_user']:10.4f} {p['iam_calls_per_user']:9.3f} {p['throttled']:9d} "
            f"{p['refused_unpropagated']:7d}"
        )
    print(f"{'IAM floor (calls made/rate)':28} {iam_floor_made:8.2f}")
    print(f"{'IAM floor (3 per key/rate)':28} {iam_floor_target:8.2f}")
    for name, value in figures["ratios"].items():
        print(f"{name}: {value}")
    for p in figures["phases"]:
        print(f"# {p['name']}: {p['by_operation']}")
        if p["walls_s"]:
            print(f"# {p['name']}: median of {len(p['walls_s'])} runs {p['walls_s']}")


if __name__ == "__main__":
    raise SystemExit(main())
