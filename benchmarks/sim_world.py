"""Benchmark of the simulation's model of AWS (``tests/sim/world.py``): port calls per second.

The same mix of calls (what a sweep and a rotation make: reads of users, keys, secrets and the report, key
creation and deletion, secret writes and label moves, STS validation, the lease) against:

- the baseline: ``tests/fakes.py``'s ``FakeAccount`` (dicts, no lag, no faults, no hook);
- the model with ``Knobs.calm()`` (every behaviour off: the cost of the gate, the histories, the audit);
- the model with the knobs of seeds 0..9 (lags, throttling, faults and latency as the simulation runs them).

Each figure is the median of ``--rounds`` rounds of ``--calls`` calls, the three interleaved per round.

Usage: ``python benchmarks/sim_world.py [--calls 20000] [--rounds 5]``
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from fakes import FakeAccount, FakeLeaseStore  # noqa: E402 - after the path set-up

from rotator.errors import AwsError  # noqa: E402
from rotator.model import AWSCURRENT, AWSPENDING, KeyStatus, SecretText  # noqa: E402
from rotator.ports import AccountPort, LeaseStore  # noqa: E402
from tests.sim.world import Killed, Knobs, World  # noqa: E402

Subject = tuple[AccountPort, LeaseStore, Callable[[float], None], Callable[[], int]]


def mix(port: AccountPort, lease: LeaseStore, rounds: int, first: int) -> None:
    """``rounds`` rounds of a sweep's mix (an error ends its round: AWS answered, the caller moves on)."""
    for n in range(first, first + rounds):
        user = f"u{n % 10}"
        name = f"iam-keys/{user}"
        try:
            port.user_details()
            port.credential_report()
            port.secrets("iam-keys/")
            port.user(user)
            keys = port.access_keys(user)
            port.describe_secret(name)
            for key in keys:
                port.key_last_used(key.key_id)
            if len(keys) == 2:
                port.set_key_status(user, keys[0].key_id, KeyStatus.INACTIVE)
                port.delete_access_key(user, keys[0].key_id)
            new = port.create_access_key(user)
            port.tag_user(user, {f"rotator:own:{new.key_id}": "x"})
            port.caller_arn_with(new)
            token = f"{n:08d}-0000-4000-8000-000000000000"
            if port.describe_secret(name) is None:
                port.create_secret(
                    name, SecretText(f"v{n}"), token, tags={}, kms_key_id=None, replica_regions=[], description=""
                )
            else:
                port.put_secret_value(name, SecretText(f"v{n}"), token, [AWSPENDING])
                port.move_stage(name, AWSCURRENT, to_version=token)
            port.untag_user(user, [f"rotator:own:{new.key_id}"])
            port.secret_value(name)
            lease.get_lease("t", "l")
            lease.put_lease("t", "l", "me", float(n + 60), float(n))
        except AwsError:
            pass


def run(make: Callable[[], Subject], calls: int) -> float:
    """Port calls per second (counted by the subject itself) over at least ``calls`` calls."""
    port, lease, advance, count = make()
    start = time.perf_counter()
    first = 0
    while count() < calls:
        mix(port, lease, 50, first)
        first += 50
        advance(600.0)
    return count() / (time.perf_counter() - start)


def fakes() -> Subject:
    account = FakeAccount()
    for n in range(10):
        account.iam.add_user(f"u{n}")

    def advance(seconds: float) -> None:
        account.clock.sleep(seconds)

    lease = FakeLeaseStore()  # not counted by the fakes: one GetItem and one PutItem per round, added below
    rounds = [0]

    def advance_and_count(seconds: float) -> None:
        rounds[0] += 50
        advance(seconds)

    return (
        account.ports,
        lease,
        advance_and_count,
        lambda: len(account.faults.calls) + 2 * rounds[0],
    )


def model(knobs: Callable[[int], Knobs]) -> Callable[[], Subject]:
    seeds = iter(range(10**6))

    def make() -> Subject:
        seed = next(seeds) % 10
        world = World(seed, knobs=knobs(seed))
        for n in range(10):
            world.add_user(f"u{n}")
        world.clock.advance(3600)

        def hook(actor: str, operation: str) -> None:
            if actor == "never":
                raise Killed(actor)

        world.hook = hook  # the simulation always has one
        return world.account("r"), world.lease_store("r"), world.clock.advance, lambda: len(world.calls)

    return make


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    subjects = {
        "baseline: tests/fakes.py FakeAccount": fakes,
        "model, Knobs.calm()": model(lambda _seed: Knobs.calm()),
        "model, Knobs.from_seed(0..9)": model(Knobs.from_seed),
    }
    figures: dict[str, list[float]] = {name: [] for name in subjects}
    for _ in range(args.rounds):
        for name, make in subjects.items():
            figures[name].append(run(make, args.calls))
    print(f"port calls per second, median of {args.rounds} rounds of {args.calls} calls")
    base = statistics.median(figures["baseline: tests/fakes.py FakeAccount"])
    for name, values in figures.items():
        median = statistics.median(values)
        print(f"  {name:<40} {median:>10,.0f}/s  ({median / base:.2f}x the baseline)")


if __name__ == "__main__":
    main()
