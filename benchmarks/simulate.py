"""The deterministic simulation (``tests/sim``): replay a seed, run for minutes, or prove the checks bite.

Usage::

    python benchmarks/simulate.py --seed S --steps N      replay one seed exactly (its report and trace)
    python benchmarks/simulate.py --ci                    the CI budget (tests/sim/test_simulation.py runs it)
    python benchmarks/simulate.py --minutes N [--seed S]  seeds S, S+1, ... for N minutes
    python benchmarks/simulate.py --mutants [--only a,b]  each deliberate bug on a copy of the core: caught?

Figures printed: seeds, steps (scheduler steps: one actor from one yield point to the next), steps/s, simulated
days, crashes injected, crash points covered (distinct operations crashed before / after AWS acted), interleavings
of two rotator writers on one user within the in-flight window, violations, wall time.

A mutant is applied to a COPY of ``rotator/`` in a temporary directory by exact text replacement (a patch that no
longer matches fails loudly), and the CI budget runs in a subprocess whose ``PYTHONPATH`` puts the copy first
(the subprocess checks that it imports the copy). Caught = a violation within the CI budget.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# Appended, not prepended: a mutant's copy of the core (PYTHONPATH) must win over the checkout's.
for extra in (ROOT, ROOT / "tests"):
    if str(extra) not in sys.path:
        sys.path.append(str(extra))


@dataclass(frozen=True)
class Mutant:
    name: str
    path: str  # inside rotator/
    old: str
    new: str
    why: str
    #: Test files of the suite that also run against the mutated copy (where the simulation alone cannot tell
    #: the bug from a lost race); caught = the simulation or these tests fail.
    tests: tuple[str, ...] = ()


MUTANTS = (
    Mutant(
        "no grace period",
        "policy.py",
        "            due = after(published, self.policy.grace_period)\n",
        "            due = published\n",
        "the previous key is disabled the moment the new one is published (I5; consumers fail)",
    ),
    Mutant(
        "orphan cleanup without the window",
        "policy.py",
        "        for key in roles.orphans:\n            due = after(key.created, window)\n",
        "        for key in roles.orphans:\n            due = key.created\n",
        "another process's key is deleted while it is still being stored (I3)",
    ),
    Mutant(
        "publish before validation",
        "rotation.py",
        "                try:\n                    self._validate(state, key, deadline)\n"
        "                    self._check_deadline(state, key, deadline)\n                except RotatorError:\n"
        "                    self._abandon(state, key.key_id, version)\n                    raise\n"
        "                self._publish(state, version, key, replaced, resumed=False)\n",
        "                self._publish(state, version, key, replaced, resumed=False)\n",
        "AWSCURRENT moves to a key IAM has not propagated yet (I2)",
    ),
    Mutant(
        "delete the current key",
        "executor.py",
        "        elif step.action is Action.DELETE:\n            self._delete(state, step.key_id)\n",
        "        elif step.action is Action.DELETE:\n"
        "            self.aws.delete_access_key(state.user, state.secret.key_in(AWSCURRENT) or step.key_id)\n",
        "the retention delete hits the key in AWSCURRENT (I4)",
    ),
    Mutant(
        "ignore LimitExceeded",
        "rotation.py",
        "                raise ConcurrentlyDone(\n"
        '                    f"{state.user}: key limit reached: another key appeared since the re-read; not rotated"\n'
        "                ) from exc\n",
        "                raise RuntimeError(str(exc)) from exc\n",
        "IAM's two-key limit surfaces as a crash instead of a handled race (I1)",
    ),
    Mutant(
        "trust a stale report",
        "inventory.py",
        "        if current_id not in {k.key_id for k in keys} or len({k.key_id for k in keys}) != len(keys):\n"
        "            return None\n",
        "",
        "the credential report (up to 4 h old) is trusted although the user's secret says it is stale (needs the"
        " support patch: changed_since never says so either)",
    ),
    Mutant(
        "skip the re-read",
        "executor.py",
        "        try:\n            state = self.inventory.refresh(user)\n        except RotatorError as exc:\n",
        "        try:\n            state = self.inventory.bulk.get(user)\n        except RotatorError as exc:\n",
        "the executor acts on the sweep's bulk read, never re-reading the user (needs the bulk cache below)",
        ("tests/unit/test_executor_reread.py",),
    ),
    Mutant(
        "act on the bulk read after the re-read",
        "executor.py",
        "        try:\n            state = self.inventory.refresh(user)\n        except RotatorError as exc:\n",
        "        try:\n            state = self.inventory.refresh(user)\n"
        "            state = self.inventory.bulk.get(user, state)\n        except RotatorError as exc:\n",
        "the re-read is made but the bulk state is acted on (the two-key limit hid this from the suite)",
        ("tests/unit/test_executor_reread.py",),
    ),
    Mutant(
        "leak a secret into an event",
        "rotation.py",
        "key_id=key.key_id, sweep_id=self.sweep_id))\n        if on_secret:\n",
        "key_id=key.key_id, sweep_id=key.secret_access_key.reveal()))\n        if on_secret:\n",
        "a secret access key in an event (and so in the log pipeline) (I7)",
    ),
    Mutant(
        "no abandon of a key that never validated",
        "rotation.py",
        '        """A new key that never validated: unlabel its version and delete it (best effort)."""\n',
        '        """A new key that never validated: unlabel its version and delete it (best effort)."""\n'
        "        return\n",
        "AWSPENDING left and the key not deleted after a failed validation",
    ),
    Mutant(
        "a validation deadline that never fires",
        "rotation.py",
        "            if remaining <= 0:\n",
        "            if remaining <= 0 and False:\n",
        "validation polls past aws.validation_timeout (another run may take the key for an orphan)",
    ),
    Mutant(
        "a wrong SecretAccessKey stored",
        "rotation.py",
        '                "SecretAccessKey": key.secret_access_key.reveal(),\n',
        '                "SecretAccessKey": key.secret_access_key.reveal()[::-1],\n',
        "the secret stores a SecretAccessKey IAM did not issue (I2: AWSCURRENT does not sign)",
    ),
    Mutant(
        "a rotation without its intent mark",
        "rotation.py",
        "            if on_secret:\n                self.aws.tag_secret(state.secret.name, intent)\n",
        "            if on_secret:\n                pass\n",
        "a rotation's key lost between CreateAccessKey and its AWSPENDING version is never a candidate: an"
        " orphan for ever (I3)",
    ),
    Mutant(
        "defect found by the simulation: loser removes the intent mark",
        "rotation.py",
        "            if isinstance(exc, LimitExceededError):\n                # Another key took the slot",
        "            if on_secret:\n                self.aws.tag_secret(state.secret.name, MARK_CLEARED)\n"
        "            else:\n                self.untag(state, list(MARK_TAGS))\n"
        "            if isinstance(exc, LimitExceededError):\n                # Another key took the slot",
        "the fix of the defect the simulation found (seed 32): reverted, a crashed rotation's key is orphaned",
    ),
    Mutant(
        "defect found by the simulation: a withdrawal removes the intent mark",
        "rotation.py",
        "            self.untag(state, [own_tag(key_id)])\n",
        "            self.untag(state, [own_tag(key_id), *MARK_TAGS])\n",
        "the fix of the defect the simulation found (seed 80576): reverted, another run's bootstrap key is orphaned",
    ),
)

#: Extra patches some mutants need (a bulk-state cache on the inventory); harmless on their own.
SUPPORT = {
    "trust a stale report": [
        ("inventory.py", "    if generated is None:\n        return True\n", "    return False\n")
    ],
    "skip the re-read": [
        (
            "inventory.py",
            "        return states\n",
            "        self.bulk = {s.user: s for s in states}\n        return states\n",
        )
    ],
    "act on the bulk read after the re-read": [
        (
            "inventory.py",
            "        return states\n",
            "        self.bulk = {s.user: s for s in states}\n        return states\n",
        )
    ],
}

#: A cheap sample the CI test runs, so the harness itself cannot rot.
CI_SAMPLE = ("no grace period", "leak a secret into an event", "a wrong SecretAccessKey stored")


def _replace_once(text: str, old: str, new: str, where: str) -> str:
    count = text.count(old)
    if count != 1:
        raise SystemExit(f"mutant patch does not apply to {where}: expected text found {count} times:\n{old}")
    return text.replace(old, new)


def apply_mutant(mutant: Mutant, into: Path) -> Path:
    """A copy of rotator/ under ``into`` with ``mutant`` applied; returns the directory for PYTHONPATH."""
    shutil.copytree(ROOT / "rotator", into / "rotator", ignore=shutil.ignore_patterns("__pycache__"))
    patches = [*SUPPORT.get(mutant.name, []), (mutant.path, mutant.old, mutant.new)]
    for path, old, new in patches:
        target = into / "rotator" / path
        target.write_text(_replace_once(target.read_text(), old, new, f"rotator/{path}"))
    return into


def _suite_passes(path: str, copy: Path) -> bool:
    """``path`` (a test file of the suite) run against the mutated copy: True when it passes."""
    done = subprocess.run(
        # -P: the checkout (the working directory) must not come before the copy on sys.path.
        [sys.executable, "-P", "-m", "pytest", "-q", "-p", "no:cacheprovider", "--no-cov", path],
        env=_env(copy),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    return done.returncode == 0


def _env(pythonpath: Path | None) -> dict[str, str]:
    env = dict(os.environ, PYTHONHASHSEED="0")
    if pythonpath is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(pythonpath), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return env


def run_mutants(names: list[str] | None, timeout: float) -> int:
    chosen = [m for m in MUTANTS if names is None or m.name in names]
    if names is not None and len(chosen) != len(names):
        known = ", ".join(m.name for m in MUTANTS)
        raise SystemExit(f"unknown mutant in {names}; known: {known}")
    rows = []
    for mutant in chosen:
        with tempfile.TemporaryDirectory(prefix="rotator-mutant-") as tmp:
            copy = apply_mutant(mutant, Path(tmp))
            started = time.perf_counter()
            try:
                done = subprocess.run(
                    [sys.executable, str(Path(__file__).resolve()), "--ci", "--stop", "--expect-core", str(copy)],
                    env=_env(copy),
                    capture_output=True,
                    text=True,
                    timeout=timeout,
                    check=False,
                )
                output, code = done.stdout + done.stderr, done.returncode
            except subprocess.TimeoutExpired as exc:
                output, code = f"{exc.stdout or ''}timed out after {timeout:.0f}s", -1
            suite_failed = [path for path in mutant.tests if not _suite_passes(path, copy)]
            seconds = time.perf_counter() - started
        first = next((line for line in output.splitlines() if line.startswith("FIRST-VIOLATION")), None)
        if code == 3:
            raise SystemExit(f"mutant {mutant.name!r}: the subprocess did not import the mutated copy:\n{output}")
        caught = (code == 1 and first is not None) or bool(suite_failed)
        detail = first.removeprefix("FIRST-VIOLATION ") if first else f"simulation: none (exit {code})"
        if mutant.tests:
            detail += "; suite: " + (f"{', '.join(suite_failed)} failed" if suite_failed else "passed")
        rows.append((mutant.name, caught, detail, seconds))
        print(f"{mutant.name:<62} {'caught' if caught else 'SURVIVED':<9} {detail} ({seconds:.1f}s)", flush=True)
    caught_count = sum(1 for row in rows if row[1])
    print(f"caught {caught_count} of {len(rows)}")
    return 0 if caught_count == len(rows) else 1


def _summary(label: str, results: list, wall: float) -> None:  # type: ignore[type-arg]
    steps = sum(r.calls for r in results)
    days = sum(r.simulated.total_seconds() for r in results) / 86400
    points: set[str] = set().union(*(r.crash_points for r in results)) if results else set()
    violations = sum(len(r.violations) for r in results)
    print(
        f"{label}: seeds {len(results)}, steps {steps}, steps/s {steps / max(wall, 1e-9):.0f}, "
        f"simulated days {days:.0f}, crashes injected {sum(r.crashes for r in results)}, "
        f"crash points covered {len(points)}, interleavings {sum(r.interleavings for r in results)}, "
        f"violations {violations}, wall {wall:.1f}s"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seed", type=int)
    parser.add_argument("--steps", type=int)
    parser.add_argument("--minutes", type=float)
    parser.add_argument("--ci", action="store_true")
    parser.add_argument("--stop", action="store_true", help="stop at the first violating seed")
    parser.add_argument("--mutants", action="store_true")
    parser.add_argument("--only", help="comma-separated mutant names (with --mutants)")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds per mutant (with --mutants)")
    parser.add_argument("--expect-core", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.mutants:
        return run_mutants(args.only.split(",") if args.only else None, args.timeout)

    import rotator  # noqa: PLC0415 - after sys.path is settled (a mutant's copy first)
    from tests.sim.regressions import REGRESSIONS  # noqa: PLC0415
    from tests.sim.run import CI_STEPS, ci_seeds, run  # noqa: PLC0415

    if args.expect_core and not Path(rotator.__file__).resolve().is_relative_to(Path(args.expect_core).resolve()):
        print(f"imported {rotator.__file__}, not the copy under {args.expect_core}", file=sys.stderr)
        return 3

    results = []
    started = time.perf_counter()
    if args.seed is not None and args.minutes is None:
        result = run(args.seed, args.steps or CI_STEPS)
        print(result.report())
        _summary("run", [result], time.perf_counter() - started)
        return 0 if result.ok else 1
    if args.minutes is not None:
        seeds: Iterator[int | tuple[int, int]] = iter(range(args.seed or 1, sys.maxsize))
        deadline = started + args.minutes * 60
        steps = args.steps or CI_STEPS
    else:  # the CI budget: the regression seeds, then the CI seeds (what tests/sim/test_simulation.py runs)
        budget = [(seed, seed_steps) for seed, seed_steps, _ in REGRESSIONS]
        budget += [(seed, args.steps or CI_STEPS) for seed in ci_seeds()]
        seeds = iter(budget)
        deadline = None
        steps = args.steps or CI_STEPS
    failed = 0
    for item in seeds:
        if deadline is not None and time.perf_counter() > deadline:
            break
        seed, seed_steps = item if isinstance(item, tuple) else (item, steps)
        result = run(seed, seed_steps)
        results.append(result)
        if not result.ok:
            failed += 1
            print(result.report(), flush=True)
            if failed == 1:
                print(
                    f"FIRST-VIOLATION seed {seed}, steps {result.calls}, "
                    f"{time.perf_counter() - started:.1f}s: {result.violations[0].check}",
                    flush=True,
                )
            if args.stop:
                break
    _summary("ci" if deadline is None else "minutes", results, time.perf_counter() - started)
    if results:
        print(f"seeds: {', '.join(str(r.seed) for r in results[:8])}, ... {results[-1].seed} ({len(results)})")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
