"""One simulation run: a seed and a number of steps in, violations, a trace and figures out.

``run(seed, steps)`` builds the world (``tests.sim.world``) and its knobs from the seed, the settings
(short policies in days, so a run covers months), the users and the actors, then lets the scheduler
run ``steps`` chaos steps (faults, crashes, the operator) checking the safety invariants after each,
then a calm phase (no crashes or faults, the operator tidies up) long enough for every managed user
to converge, and checks liveness. ``replay_command`` is the one line that replays a seed exactly.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import io
import logging
import random
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TextIO, cast

import structlog

from rotator import logs
from rotator.app import SweepReport
from rotator.config import Settings
from rotator.events import (
    ActionFailed,
    ActionSkipped,
    Event,
    InventorySnapshot,
    KeyOwnershipUnproven,
    UserEvent,
    ValidationAttempt,
)
from tests.sim import actors
from tests.sim.checks import Limits, Monitor, Violation
from tests.sim.scheduler import Scheduler, SchedulerError
from tests.sim.world import Killed, Knobs, World

_MODEL = "tests.sim.world"

#: The CI budget (tests/sim/test_simulation.py, ``benchmarks/simulate.py --ci``): fixed seeds, fixed steps, so a
#: CI run is reproducible; sized to about two minutes on the 2-core CI machine (docs/reliability.md).
CI_STEPS = 5000
CI_SEED_COUNT = 48


def ci_seeds() -> list[int]:
    return [1000 + i for i in range(CI_SEED_COUNT)]


MANAGED_USERS = ("alice", "bob", "carol", "dave")
UNMANAGED_USER = "outsider"
TRACE_LENGTH = 40
#: Scheduler steps in a row at one simulated instant that make a livelock.
FROZEN_STEPS = 10_000


def replay_command(seed: int, steps: int) -> str:
    return f"PYTHONHASHSEED=0 python benchmarks/simulate.py --seed {seed} --steps {steps}"


@dataclass
class Result:
    seed: int
    steps: int
    violations: list[Violation]
    trace: list[str]
    wall_seconds: float
    simulated: timedelta
    crashes: int
    crash_points: set[str]
    calls: int
    interleavings: int
    knobs: str
    settings: str
    model: str = _MODEL

    @property
    def ok(self) -> bool:
        return not self.violations

    def report(self) -> str:
        lines = [
            f"seed {self.seed}: {len(self.violations)} violation(s) in {self.steps} steps "
            f"({self.simulated.total_seconds() / 86400:.1f} simulated days; {self.crashes} crashes)",
            f"  knobs: {self.knobs}",
            f"  settings: {self.settings}",
        ]
        lines += [f"  {v}" for v in self.violations[:10]]
        lines.append("  last steps:")
        lines += [f"    {line}" for line in self.trace]
        lines.append(f"  replay: {replay_command(self.seed, self.steps)}")
        return "\n".join(lines)


class _Lines(io.TextIOBase):
    """A stream the log handler writes to: each line is kept for the I7 check."""

    def __init__(self, sink: list[str]) -> None:
        self.sink = sink

    def write(self, text: str) -> int:
        if text.strip():
            self.sink.append(text)
        return len(text)

    def isatty(self) -> bool:
        return False


@contextlib.contextmanager
def _simulation_process() -> Iterator[list[str]]:
    """Capture structlog's output (the I7 check reads every line)."""
    lines: list[str] = []
    saved = structlog.get_config()
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    logs.configure("json", "info", stream=cast(TextIO, _Lines(lines)))
    try:
        yield lines
    finally:  # the process's logging as it was (the simulation runs inside pytest too)
        structlog.configure(**saved)
        root.handlers[:] = handlers
        root.setLevel(level)


class Sim:
    """Everything the actors share: the world, the scheduler, the settings and the recorders."""

    def __init__(self, seed: int) -> None:
        self.seed = seed
        rng = random.Random(f"{seed}:settings")  # noqa: S311 - a simulation
        self.knobs = Knobs.from_seed(seed)
        self.world = World(seed, knobs=self.knobs)
        self.lease = rng.random() < 0.5
        hours = rng.choice((2, 6, 12))
        # As in production, grace_period + retention (+ max_hold) stays below max_key_age: a rotation that
        # falls due while the previous key still exists waits for it (SPEC), which the liveness bound omits.
        self._policy = {
            "max_key_age": f"{rng.choice((4, 5, 7))}d",
            "grace_period": rng.choice(("12h", "1d")),
            "retention": rng.choice(("12h", "1d")),
            "disable_guard": rng.choice(("hold", "warn", "ignore")),
            "quiet_period": "4h",
            "max_hold": "1d",
        }
        self.base = Settings.model_validate(
            {
                "schedule": {"interval": f"{hours}h"},
                "policy": self._policy,
                # One worker: a sweep's users run in order on the actor's own thread (one live thread per
                # actor, so the seed alone decides the interleaving).
                "aws": {"validation_timeout": f"{rng.choice((20, 75, 120))}s", "concurrency": 1},
                "safety": {"max_actions_per_sweep": 100},
            }
        )
        report_age = getattr(self.knobs, "report_max_age", 4 * 3600.0)
        self.limits = Limits(
            max_key_age=self.base.policy.max_key_age,
            grace_period=self.base.policy.grace_period,
            retention=self.base.policy.retention,
            validation_timeout=self.base.aws.validation_timeout,
            interval=timedelta(hours=hours),
            report_max_age=timedelta(seconds=report_age),
            age_bound=self.base.aws.validation_timeout.total_seconds()
            >= getattr(self.knobs, "propagation_delay", 0.0) + 2,
        )
        self.managed: set[str] = set(MANAGED_USERS)
        self.monitor = Monitor(self.limits, managed=set(MANAGED_USERS), unmanaged={UNMANAGED_USER})
        crash_rate = rng.choice((0.0, 0.002, 0.01, 0.03))
        self.sched = Scheduler(
            self.world.clock,
            random.Random(f"{seed}:scheduler"),  # noqa: S311 - a simulation
            kill=self.world.kill,
            revive=self.world.revive,
            killed=Killed,
            crash_rate=crash_rate,
            trace_length=TRACE_LENGTH,
        )
        self.world.hook = self.sched.hook
        self.monitor.incarnation = lambda actor: (
            self.sched.actors[actor].incarnation if actor in self.sched.actors else 0
        )
        faults = getattr(self.world, "faults", {})
        self.monitor.faults = lambda: sum(faults.values())
        if hasattr(self.world, "sleep"):
            self.world.sleep = self.sched.sleep  # the boundary's back-off on throttling parks the actor
        self.calm = False
        self.pin: tuple[str, actors.Cached] | None = None
        self.scheduled: set[str] = set()
        self.initial_keys: set[str] = set()
        self.texts: list[str] = []
        self.events: list[tuple[str, datetime, Event]] = []
        self._event_texts_seen = 0
        #: replica -> (incarnation, when its sweep in progress started)
        self.sweeping: dict[str, tuple[int, datetime]] = {}
        self.last_sweep: dict[str, datetime] = {}
        self.max_sweep = timedelta(minutes=30) + 8 * self.limits.window
        #: How stale a read may be by the model's documented lags (ListSecrets, ListAccessKeys, tags), plus a minute.
        self.read_lag = timedelta(
            seconds=max(
                getattr(self.knobs, "secrets_list_lag", 0.0),
                getattr(self.knobs, "list_lag", 0.0),
                getattr(self.knobs, "tag_lag", 0.0),
            )
            + 60
        )
        self._lock = threading.Lock()
        self._last_now: datetime | None = None
        self._frozen = 0

    def settings(self, *, lease: bool) -> Settings:
        if not lease:
            return self.base
        return self.base.model_copy(
            update={"coordination": self.base.coordination.model_copy(update={"lease_table": "rotator-lease"})}
        )

    def describe_settings(self) -> str:
        policy = " ".join(f"{k}={v}" for k, v in self._policy.items())
        return (
            f"interval={self.limits.interval} {policy} validation_timeout={self.limits.validation_timeout}"
            f" lease={self.lease} crash_rate={self.sched.crash_rate}"
        )

    # -- recorders (called in actor threads, one at a time) -----------------------------------------

    def record(self, actor: str, event: Event) -> None:
        self.events.append((actor, self.world.clock.now(), event))

    def note(self, text: str) -> None:
        self.sched.trace.append(f"{self.world.clock.now().isoformat()} {text}")

    def sweep_started(self, name: str) -> None:
        self.sweeping[name] = (self.sched.actors[name].incarnation, self.world.clock.now())

    def sweep_finished(self, name: str, report: SweepReport) -> None:
        self.sweeping.pop(name, None)
        self.last_sweep[name] = self.world.clock.now()

    # -- setup ----------------------------------------------------------------------------------------

    def populate(self) -> None:
        rng = random.Random(f"{self.seed}:users")  # noqa: S311 - a simulation
        for user in MANAGED_USERS:
            self.world.add_user(user)
            key = self.world.operator_create_key(user)
            if key is not None:
                self.initial_keys.add(key.key_id)
        self.world.add_user(UNMANAGED_USER, tags={"team": "other"})
        outsider = self.world.operator_create_key(UNMANAGED_USER)
        if outsider is not None:
            self.initial_keys.add(outsider.key_id)
        self.world.clock.advance(rng.uniform(0, 3600))
        self.sched.add("replica-a", lambda: actors.replica(self, "replica-a"))
        self.sched.add("replica-b", lambda: actors.replica(self, "replica-b"))
        self.sched.add("rotate", lambda: actors.forced_rotate(self, "rotate"))
        self.sched.add("operator", lambda: actors.operator(self, "operator"), crashable=False)
        for user in MANAGED_USERS[:2]:
            name = f"consumer-{user}"
            self.sched.add(name, functools.partial(actors.consumer, self, name, user))
        self.sched.add("pinned", lambda: actors.pinned(self, "pinned"))

    # -- checks ---------------------------------------------------------------------------------------

    def check_step(self) -> None:
        now = self.world.clock.now()
        self._frozen = self._frozen + 1 if now == self._last_now else 0
        self._last_now = now
        if self._frozen == FROZEN_STEPS:
            # Every AWS call takes simulated time and every wait sleeps: steps that never advance the clock are an
            # actor polling without waiting (a livelock no invariant would ever see).
            self.monitor.fail("livelock", f"{FROZEN_STEPS} steps without simulated time advancing", now)
        self.monitor.step(self.world.truth, self.world.audit, now)
        fresh = self.events[self._event_texts_seen :]
        self._event_texts_seen = len(self.events)
        texts = [_event_text(event) for _, _, event in fresh if not isinstance(event, InventorySnapshot)]
        texts += self.texts
        self.texts.clear()
        self.monitor.texts(texts, now)
        self.monitor.errors((e.error_type for _, _, e in fresh if isinstance(e, ActionFailed) and e.error_type), now)
        for who, at, event in fresh:
            if isinstance(event, ValidationAttempt) and event.key_id is not None:
                self.monitor.validation_attempt(who, event.key_id, at)
            if isinstance(event, InventorySnapshot) and who in self.sweeping:
                views = [(state.user, [key.key_id for key in state.keys]) for state in event.states]
                self.monitor.bulk_view(views, self.sweeping[who][1], self.read_lag, now)
        for name, (incarnation, started) in list(self.sweeping.items()):
            actor = self.sched.actors[name]
            if actor.incarnation != incarnation or not actor.alive:
                del self.sweeping[name]  # killed mid-sweep: kill -9 ends a sweep too
            elif now - started > self.max_sweep:
                self.monitor.fail("stuck", f"{name}'s sweep started {now - started} ago and is not finished", now)
                del self.sweeping[name]

    def reported(self, since: datetime) -> set[str]:
        users = set()
        for _actor, at, event in self.events:
            if at >= since and isinstance(event, ActionFailed | ActionSkipped | KeyOwnershipUnproven):
                assert isinstance(event, UserEvent)
                users.add(event.user)
        return users


def _event_text(event: Event) -> str:
    return f"{event.name} {event!r}"


def run(seed: int, steps: int, *, log_lines: bool = True) -> Result:
    started = time.perf_counter()
    sim = Sim(seed)
    with _simulation_process() as lines:
        sim.populate()
        start = sim.world.clock.now()
        checked_lines = 0
        try:
            for _ in range(steps):
                if sim.sched.step() is None:
                    break
                sim.check_step()
                if log_lines and len(lines) > checked_lines:
                    sim.monitor.texts(lines[checked_lines:], sim.world.clock.now())
                    checked_lines = len(lines)
                if sim.monitor.violations or sim.sched.escaped:
                    break
            if not (sim.monitor.violations or sim.sched.escaped):
                _calm_phase(sim)
                sim.monitor.texts(lines[checked_lines:], sim.world.clock.now())
        except SchedulerError as exc:
            sim.monitor.fail("scheduler", str(exc), sim.world.clock.now())
        finally:
            sim.sched.stop()
    for name, error in sim.sched.escaped:
        sim.monitor.fail("escaped", f"{name}: {type(error).__name__}: {error}", sim.world.clock.now())
    describe = getattr(sim.knobs, "describe", None)
    try:
        knobs = describe() if describe else repr(sim.knobs)
    except NotImplementedError:
        knobs = repr(sim.knobs)
    return Result(
        seed=seed,
        steps=steps,
        violations=sim.monitor.violations,
        trace=list(sim.sched.trace),
        wall_seconds=time.perf_counter() - started,
        simulated=sim.world.clock.now() - start,
        crashes=sim.sched.stats.crashes,
        crash_points=set(sim.sched.stats.crash_points),
        calls=sim.sched.stats.steps,
        interleavings=sim.monitor.interleavings,
        knobs=knobs,
        settings=sim.describe_settings(),
    )


def _calm_phase(sim: Sim) -> None:
    """No more crashes, faults or operator; run until every user had time to converge, then check."""
    sim.calm = True
    sim.monitor.calm = True
    sim.sched.crashes_enabled = False
    # AWS on a good day: no more faults (throttling, lags and propagation stay: they are AWS's normal).
    sim.world.knobs = dataclasses.replace(sim.world.knobs, fail_before=0.0, fail_after=0.0, kms_failure=0.0)
    actors.calm_down(sim)
    limits = sim.limits
    until = (
        sim.world.clock.now()
        + limits.max_key_age
        + limits.grace_period
        + limits.retention
        + 4 * limits.interval
        + limits.report_max_age
    )
    report_from = until - 2 * limits.interval
    while sim.world.clock.now() < until:
        if sim.sched.step() is None:
            break
        sim.check_step()
        if sim.monitor.violations or sim.sched.escaped:
            return
    now = sim.world.clock.now()
    sim.monitor.quiescence(sim.world.truth(), now, sim.reported(report_from))
    stale = [n for n in ("replica-a", "replica-b") if n not in sim.last_sweep]
    if len(stale) == 2 or (
        max(sim.last_sweep.values(), default=now - 10 * limits.interval) < now - 2 * limits.interval - sim.max_sweep
    ):
        sim.monitor.fail("liveness", "no replica finished a sweep in the last two intervals", now)
    for name, at in sorted(sim.last_sweep.items()):
        if not sim.lease and at < now - limits.interval - sim.max_sweep:
            sim.monitor.fail("liveness", f"{name} last finished a sweep at {at.isoformat()}", now)
