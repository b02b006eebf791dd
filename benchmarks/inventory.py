"""Benchmark of ``rotator plan``: AWS calls per managed user, wall time and peak RSS, beside a naive baseline.

Everything runs locally against this script's own ``moto_server`` subprocess (stopped at the end), in two
shapes of account, each with ``--users`` managed users plus ``--unmanaged`` others:

* **steady** - every managed user has a secret holding its one young key, exactly as the executor leaves
  it: the users are seeded without keys and the real rotator bootstraps them (an in-process
  ``App.sweep()`` with the rate limit lifted), then the plan is measured;
* **due** - every managed user has one key and no secret, so a bootstrap rotation is due for each.

Each measured plan runs in a child process of its own, so "peak RSS" is that run's own high-water mark
(``ru_maxrss``; ``+plan`` is what the plan added to the child's footprint after imports). AWS calls
come from ``rotator_aws_api_calls_total`` of a fresh Prometheus registry. The naive baseline, in the
same run against the same server: ``ListUsers`` (all pages), ``ListUserTags`` per user under the path
(selection), ``ListAccessKeys`` per managed user and ``GetAccessKeyLastUsed`` per key - and it does not
even look at Secrets Manager. Both run with the client-side rate limit lifted, so wall time is work,
not throttling. moto ignores ``MaxItems`` on ``ListUsers`` and ``GetAccountAuthorizationDetails`` (one
page each here); real IAM pages those at 1000 (rotator) and 100 (naive default) users.

Usage: ``python benchmarks/inventory.py [--users 1000] [--unmanaged 100]``
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from _support import MANAGED, MotoServer, api_calls, aws_env, create_users, memory_kib, moto_environ, timed_sweep
from faultproxy import FaultProxy

PATH = "/svc/"
CONFIG = """\
policy: {max_key_age: 90d, grace_period: 7d, retention: 7d}
selection: {path_prefix: /svc/, tag: {key: rotator, value: enabled}}
safety: {max_actions_per_sweep: 1000000}
aws: {max_calls_per_second: 1000000, validation_timeout: 60s}
"""


# -- seeding ---------------------------------------------------------------------------------------------


def seed(url: str, users: int, unmanaged: int, keys: int) -> None:
    managed = {f"svc-{index:05d}": MANAGED for index in range(users)}
    others = {f"other-{index:05d}": {"team": "x"} for index in range(users, users + unmanaged)}
    create_users(url, managed | others, path=PATH, keys=keys)


def bootstrap(url: str, config: Path) -> tuple[int, float]:
    """Bring every managed user to the steady state with the real rotator: one sweep, in-process."""
    from rotator.model import Action  # noqa: PLC0415

    with moto_environ(url):
        report, _, elapsed = timed_sweep(config)
    if report.failed:
        raise SystemExit(f"bootstrap sweep failed: {report.errors or report.failed}")
    return report.count(Action.ROTATE), elapsed


# -- the measured runs (child processes) -----------------------------------------------------------------


def rss_mib() -> float:
    """This process's peak resident set size so far, in MiB.

    ``VmHWM`` belongs to this process image; ``ru_maxrss`` would not do in a child, as Linux carries it
    over from the (larger) parent across fork and exec.
    """
    try:
        return memory_kib("self", "VmHWM") / 1024
    except (OSError, KeyError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux, bytes on macOS


def child_rotator(config: str) -> dict[str, Any]:
    from prometheus_client import CollectorRegistry  # noqa: PLC0415

    from rotator.app import App  # noqa: PLC0415
    from rotator.config import load_settings  # noqa: PLC0415

    registry = CollectorRegistry()
    app = App(load_settings(config), registry=registry, log=False)
    base = rss_mib()
    started = time.perf_counter()
    views = app.plan()
    wall = time.perf_counter() - started
    calls: Counter[str] = Counter()
    for labels, count in api_calls(registry):
        if labels["outcome"] != "throttled":
            calls[labels["operation"]] += count
    actions = Counter(step.action.value for view in views for plan in view.plans for step in plan.steps)
    managed = sum(len(view.states) for view in views)
    return {"managed": managed, "calls": dict(calls), "wall": wall, "rss": rss_mib(), "base": base, "actions": actions}


def child_naive() -> dict[str, Any]:
    import boto3  # noqa: PLC0415

    iam = boto3.client("iam")
    calls: Counter[str] = Counter()
    iam.meta.events.register("before-call", lambda model, **_: calls.update([model.name]))
    base = rss_mib()
    started = time.perf_counter()
    users: list[dict[str, Any]] = []
    params: dict[str, Any] = {"PathPrefix": PATH}
    while True:
        page = iam.list_users(**params)
        users.extend(page["Users"])
        if not page.get("IsTruncated"):
            break
        params["Marker"] = page["Marker"]
    managed = 0
    inventory: dict[str, list[tuple[str, str, Any]]] = {}
    for user in users:
        name = user["UserName"]
        tags = {t["Key"]: t["Value"] for t in iam.list_user_tags(UserName=name)["Tags"]}
        if tags.get("rotator") != "enabled" or tags.get("rotator:exclude", "").lower() == "true":
            continue
        managed += 1
        keys = iam.list_access_keys(UserName=name)["AccessKeyMetadata"]
        inventory[name] = [
            (
                key["AccessKeyId"],
                key["Status"],
                iam.get_access_key_last_used(AccessKeyId=key["AccessKeyId"])["AccessKeyLastUsed"].get("LastUsedDate"),
            )
            for key in keys
        ]
    wall = time.perf_counter() - started
    return {"managed": managed, "calls": dict(calls), "wall": wall, "rss": rss_mib(), "base": base, "actions": {}}


def measure(kind: str, url: str, config: Path) -> dict[str, Any]:
    argv = [sys.executable, __file__, "--child", kind, "--config", str(config)]
    result = subprocess.run(argv, env=aws_env(url), capture_output=True, text=True, check=False, timeout=1800)
    if result.returncode != 0:
        raise SystemExit(f"{kind} child failed:\n{result.stderr[-3000:]}")
    measured: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    return measured


# -- driver ----------------------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=1000, help="managed users (default 1000)")
    parser.add_argument("--unmanaged", type=int, default=None, help="other users (default users/10)")
    parser.add_argument("--child", choices=["rotator", "naive"], help=argparse.SUPPRESS)
    parser.add_argument("--config", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child == "rotator":
        print(json.dumps(child_rotator(args.config)))
        return 0
    if args.child == "naive":
        print(json.dumps(child_naive()))
        return 0

    unmanaged = args.users // 10 if args.unmanaged is None else args.unmanaged
    rows: list[tuple[str, str, dict[str, Any]]] = []
    notes: list[str] = []
    server = MotoServer()
    # Both plans read AWS through the tests' proxy, which gives moto's live credential report its real
    # GeneratedTime (moto says 2015, and a report older than every change is trusted for no user).
    proxy = FaultProxy(server.url).start()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            config = Path(tmp) / "rotator.yaml"
            config.write_text(CONFIG)
            for shape in ("steady", "due"):
                server.reset()
                started = time.perf_counter()
                seed(server.url, args.users, unmanaged, keys=0 if shape == "steady" else 1)
                notes.append(f"{shape}: seeded {args.users}+{unmanaged} users in {time.perf_counter() - started:.1f}s")
                if shape == "steady":
                    rotated, elapsed = bootstrap(server.url, config)
                    notes.append(f"steady: the rotator bootstrapped {rotated} users in one sweep of {elapsed:.1f}s")
                    time.sleep(1.1)  # the report's GeneratedTime has whole seconds: be past the last change
                for kind in ("rotator", "naive"):
                    rows.append((shape, kind, measure(kind, proxy.url, config)))
    finally:
        proxy.stop()
        server.stop()

    header = ("shape", "plan by", "managed", "AWS calls", "calls/user", "wall s", "peak RSS MiB", "+plan MiB")
    table = [header]
    for shape, kind, m in rows:
        total = sum(m["calls"].values())
        table.append(
            (
                shape,
                "rotator" if kind == "rotator" else "naive baseline",
                str(m["managed"]),
                str(total),
                f"{total / max(m['managed'], 1):.3f}",
                f"{m['wall']:.2f}",
                f"{m['rss']:.0f}",
                f"{m['rss'] - m['base']:.0f}",
            )
        )
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    print(f"rotator plan vs naive baseline: {args.users} managed + {unmanaged} unmanaged users (moto_server)")
    for index, row in enumerate(table):
        print(
            "  ".join(
                cell.rjust(w) if i >= 2 else cell.ljust(w) for i, (cell, w) in enumerate(zip(row, widths, strict=True))
            )
        )
        if index == 0:
            print("  ".join("-" * w for w in widths))
    print()
    for shape, kind, m in rows:
        ops = ", ".join(f"{op} {n}" for op, n in sorted(m["calls"].items(), key=lambda item: -item[1]))
        acts = ", ".join(f"{a} {n}" for a, n in sorted(m["actions"].items())) or "-"
        print(f"{shape:6} {kind:7} calls: {ops}")
        if kind == "rotator":
            print(f"{'':14} planned: {acts}")
    for note in notes:
        print(note)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
