"""Seeds that failed during development, kept as fixed regression cases (``test_simulation.py`` runs them).

Each is (seed, chaos steps, what it found). A seed that found a defect of the core fails again if the defect
comes back (``benchmarks/simulate.py --mutants`` reverts the fix and checks that the CI budget catches it); the
others found defects of the simulation's own checks (a false alarm) or of its determinism, and must stay green.
"""

from __future__ import annotations

REGRESSIONS: tuple[tuple[int, int, str], ...] = (
    (
        32,
        5000,
        "core defect (fixed in rotator/rotation.py): the loser of a key-slot race removed the intent mark a"
        " crashed concurrent rotation relied on; its unrecorded key became foreign for ever (I3)",
    ),
    (
        13,
        5000,
        "check: after the operator force-deletes a secret, the disabled previous key is a stray the SPEC lets a"
        " rotation delete for its slot (not an I5 retention breach)",
    ),
    (29, 5000, "determinism: a sweep's users ran on a thread pool (aws.concurrency must be 1 in the simulation)"),
    (4, 5000, "check: a replica killed mid-sweep is no stuck sweep"),
    (1039, 5000, "check: two replicas may both create a key for a key-less user; CreateSecret decides (no I8 breach)"),
    (2024, 5000, "check: a key whose CreateAccessKey answer was lost is left for CloudTrail, not abandoned"),
    (5146, 5000, "scheduler: a jump of the clock to a wake-up fell a microsecond short; the calm phase ended early"),
    (
        80576,
        5000,
        "core defect (fixed in rotator/rotation.py): a bootstrap that withdrew its key (its record failed) removed"
        " the intent mark another replica's bootstrap had written meanwhile; that run's key became foreign for ever"
        " (I3) and the user never got a secret",
    ),
)
