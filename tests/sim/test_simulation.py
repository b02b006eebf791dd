"""The simulation's CI budget: fixed seeds and steps (reproducible), about two minutes on the 2-core machine.

Every seed runs the real core (daemon replicas, forced rotations, the operator, consumers, crashes) against
the model of AWS (``tests/sim/world.py``), checking the safety invariants after every step and liveness at
quiescence. A failure prints the seed's report: its violations, the last steps and the one command that
replays it (``PYTHONHASHSEED=0 python benchmarks/simulate.py --seed S --steps N``).
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.append(str(ROOT))

from tests.sim.checks import Violation  # noqa: E402 - after the repository root is importable
from tests.sim.regressions import REGRESSIONS  # noqa: E402
from tests.sim.run import CI_STEPS, ci_seeds, run  # noqa: E402

SIMULATE = ROOT / "benchmarks" / "simulate.py"


@pytest.mark.parametrize("seed", ci_seeds())
def test_ci_budget_seed(seed: int) -> None:
    started = time.perf_counter()
    result = run(seed, CI_STEPS)
    print(
        f"seed {seed}: {result.calls} steps in {time.perf_counter() - started:.1f}s wall,"
        f" {result.simulated.total_seconds() / 86400:.1f} simulated days, {result.crashes} crashes"
    )
    assert result.ok, result.report()
    assert result.calls > CI_STEPS, "the run must reach its calm phase (liveness was checked)"


@pytest.mark.parametrize(("seed", "steps", "why"), REGRESSIONS, ids=[f"seed{s}" for s, _, _ in REGRESSIONS])
def test_regression_seed(seed: int, steps: int, why: str) -> None:
    result = run(seed, steps)
    assert result.ok, f"{why}\n{result.report()}"


def test_a_seed_replays_exactly() -> None:
    """The seed alone decides the run: the same seed gives the same steps, trace and outcome."""
    first, second = run(1005, 1500), run(1005, 1500)
    assert first.calls == second.calls
    assert (
        hashlib.sha256("\n".join(first.trace).encode()).digest()
        == hashlib.sha256("\n".join(second.trace).encode()).digest()
    )
    assert [str(v) for v in first.violations] == [str(v) for v in second.violations]
    assert first.simulated == second.simulated


def test_a_seed_replays_exactly_in_another_process_whatever_the_hash_seed() -> None:
    """The replay command reproduces a run: two processes with different string hashing print the same report."""

    def report(hash_seed: str) -> list[str]:
        done = subprocess.run(
            [sys.executable, str(SIMULATE), "--seed", "1007", "--steps", "1500"],
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
            env=dict(os.environ, PYTHONHASHSEED=hash_seed),
            cwd=ROOT,
        )
        assert done.returncode in (0, 1), done.stderr
        return [line for line in done.stdout.splitlines() if not line.startswith("run: ")]  # minus the wall time

    first = report("1")
    assert any("last steps:" in line for line in first)
    assert report("2") == first


def test_a_violation_report_names_the_replay_command() -> None:
    result = run(1005, 200)
    result.violations.append(Violation("demo", "a violation", datetime(2025, 1, 1, tzinfo=UTC)))
    report = result.report()
    assert "PYTHONHASHSEED=0 python benchmarks/simulate.py --seed 1005 --steps 200" in report
    assert "[demo]" in report
    assert "last steps:" in report
    assert len([line for line in report.splitlines() if line.startswith("    ")]) == len(result.trace) > 0


def _harness() -> ModuleType:
    spec = importlib.util.spec_from_file_location("simulate_harness", SIMULATE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


def test_every_mutant_patch_applies_to_the_current_core(tmp_path: Path) -> None:
    """A mutant whose text no longer matches the core fails loudly (and here, before CI relies on it)."""
    harness = _harness()
    assert len(harness.MUTANTS) >= 8
    for number, mutant in enumerate(harness.MUTANTS):
        copy = harness.apply_mutant(mutant, tmp_path / str(number))
        assert (copy / "rotator" / mutant.path).read_text() != (ROOT / "rotator" / mutant.path).read_text()


def test_the_mutation_harness_catches_a_sample_of_mutants() -> None:
    """The harness itself cannot rot: a few cheap mutants, each on a copy of the core, caught by the budget."""
    sample = _harness().CI_SAMPLE
    done = subprocess.run(
        [sys.executable, str(SIMULATE), "--mutants", "--only", ",".join(sample), "--timeout", "300"],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
        env=dict(os.environ, PYTHONHASHSEED="0"),
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"caught {len(sample)} of {len(sample)}" in done.stdout, done.stdout
