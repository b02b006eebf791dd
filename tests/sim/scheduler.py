"""The seeded scheduler: actors in threads, one baton, virtual time.

Every actor (a daemon replica, a forced ``rotate``, the operator, a consumer) runs its body in its own
thread, but only the thread holding the baton runs: an actor gives the baton back at every yield point
(``world.hook``, called before each AWS call and after a mutating call acted; and the injected
``sleep``). The main thread then checks the invariants and lets the seeded ``random.Random`` pick who
runs next, so the seed alone decides the interleaving. The simulation's settings have
``aws.concurrency: 1`` (see :mod:`tests.sim.run`): a sweep's users run on the actor's own thread, so one
thread per actor is ever live.

Time is virtual: the core's clock is the world's clock; ``sleep(s)`` parks the actor until ``now + s``;
when nobody is runnable the clock jumps to the earliest wake-up. A crash is decided when an actor is
resumed at a hook: the hook raises ``Killed`` (kill -9; the world refuses the actor's later calls until
it is revived) and the actor is restarted later from scratch (its in-memory state is lost).
"""

from __future__ import annotations

import random
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Protocol


class Stopped(BaseException):
    """Raised in an actor's thread at its next yield point when the run ends."""


class SchedulerError(RuntimeError):
    """The simulation itself is broken (an actor never yielded back: a deadlock)."""


class SimClock(Protocol):
    def now(self) -> datetime: ...

    def advance(self, seconds: float) -> None: ...


Body = Callable[[], None]


@dataclass
class ActorState:
    name: str
    make: Callable[[], Body]
    #: Restart after a crash (a daemon replica, a consumer); a one-shot command is not restarted.
    restart: bool = True
    crashable: bool = True
    thread: threading.Thread | None = None
    go: threading.Event = field(default_factory=threading.Event)
    wake_at: datetime | None = None  # None: runnable now (parked at a hook, or not started)
    #: What the actor is parked at: an operation ("iam:CreateAccessKey", "acted:..."), "sleep" or "start".
    parked_at: str = "start"
    command: str = "run"  # what the next grant tells the actor: run | kill | stop
    alive: bool = False  # a thread exists and has not finished
    dead_until: datetime | None = None  # killed: restart at this time
    finished: bool = False
    incarnation: int = 0


@dataclass
class Stats:
    steps: int = 0
    crashes: int = 0
    crash_points: set[str] = field(default_factory=set)
    calls: int = 0


class Scheduler:
    """Grants the baton to one actor at a time, chosen by ``rng``; see the module docstring."""

    def __init__(
        self,
        clock: SimClock,
        rng: random.Random,
        *,
        kill: Callable[[str], None],
        revive: Callable[[str], None],
        killed: type[BaseException],
        crash_rate: float = 0.0,
        latency: tuple[float, float] = (0.0, 0.0),
        restart_delay: tuple[float, float] = (30.0, 1800.0),
        trace_length: int = 40,
        stall_seconds: float = 20.0,
    ) -> None:
        self.clock = clock
        self.rng = rng
        self._kill = kill
        self._revive = revive
        self.killed = killed
        self.crash_rate = crash_rate
        self.latency = latency
        self.restart_delay = restart_delay
        self.actors: dict[str, ActorState] = {}
        self.stats = Stats()
        self.trace: deque[str] = deque(maxlen=trace_length)
        self._yielded = threading.Event()
        self._stall = stall_seconds
        self.current: str | None = None
        self.stopping = False
        self.crashes_enabled = True
        #: Errors that escaped an actor body (not Killed/Stopped): a defect of the core or the simulation.
        self.escaped: list[tuple[str, BaseException]] = []

    # -- actors ------------------------------------------------------------------------------------

    def add(self, name: str, make: Callable[[], Body], *, restart: bool = True, crashable: bool = True) -> None:
        self.actors[name] = ActorState(name, make, restart=restart, crashable=crashable)

    def _start(self, actor: ActorState) -> None:
        actor.incarnation += 1
        actor.alive = True
        actor.parked_at = "start"
        actor.command = "run"
        actor.go.clear()
        body = actor.make()
        thread = threading.Thread(
            target=self._thread_main, args=(actor, body), name=f"sim-{actor.name}-{actor.incarnation}", daemon=True
        )
        actor.thread = thread
        thread.start()

    def _thread_main(self, actor: ActorState, body: Body) -> None:
        try:
            self._wait_turn(actor)
            body()
            actor.finished = not actor.restart
        except Stopped:
            pass
        except self.killed:
            actor.dead_until = self.clock.now() + timedelta(seconds=self.rng.uniform(*self.restart_delay))
        except BaseException as exc:
            self.escaped.append((actor.name, exc))
            actor.finished = True
        finally:
            actor.alive = False
            actor.wake_at = None
            self._yielded.set()

    # -- the yield points (called in actor threads) -------------------------------------------------

    def hook(self, actor_name: str, operation: str) -> None:
        """``world.hook``: park before (or after acting on) an AWS call; maybe be killed on resume."""
        actor = self.actors.get(actor_name)
        if actor is None:  # not a scheduled actor (the main thread's own observation): no yield
            return
        if self.stopping:
            raise Stopped
        if actor.command == "dead":
            raise self.killed(actor_name)
        self.stats.calls += 1
        actor.parked_at = operation
        actor.wake_at = None
        self._yield(actor)

    def sleep(self, actor_name: str, seconds: float) -> None:
        """The core's injected sleep (and the actors' own waits): park until ``now + seconds``."""
        actor = self.actors[actor_name]
        if self.stopping:
            raise Stopped
        actor.parked_at = "sleep"
        actor.wake_at = self.clock.now() + timedelta(seconds=max(0.0, seconds))
        self._yield(actor)

    def _yield(self, actor: ActorState) -> None:
        actor.go.clear()
        self._yielded.set()
        self._wait_turn(actor)

    def _wait_turn(self, actor: ActorState) -> None:
        actor.go.wait()
        command = actor.command
        actor.command = "run"
        if command == "stop":
            raise Stopped
        if command == "kill":
            actor.command = "dead"
            raise self.killed(actor.name)

    # -- the main loop (main thread) ----------------------------------------------------------------

    def runnable(self) -> list[ActorState]:
        # A millisecond of slack: the clock may round a jump to a wake-up a microsecond short (seed 5146).
        now = self.clock.now() + timedelta(milliseconds=1)
        ready = []
        for name in sorted(self.actors):
            actor = self.actors[name]
            if actor.finished:
                continue
            if not actor.alive:
                if actor.dead_until is None or actor.dead_until <= now:
                    ready.append(actor)
                continue
            if actor.wake_at is None or actor.wake_at <= now:
                ready.append(actor)
        return ready

    def next_wake(self) -> datetime | None:
        times = []
        for actor in self.actors.values():
            if actor.finished:
                continue
            if actor.alive and actor.wake_at is not None:
                times.append(actor.wake_at)
            elif not actor.alive and actor.dead_until is not None:
                times.append(actor.dead_until)
        return min(times) if times else None

    def step(self) -> str | None:
        """Run one actor to its next yield point; returns what it did (for the trace), None when idle."""
        ready = self.runnable()
        if not ready:
            wake = self.next_wake()
            if wake is None:
                return None
            self.clock.advance(max(0.0, (wake - self.clock.now()).total_seconds()))
            ready = self.runnable()
            if not ready:
                return None
        actor = self.rng.choice(ready)
        if not actor.alive:
            if actor.dead_until is not None:
                self._revive(actor.name)
                actor.dead_until = None
                self.trace.append(f"{self.clock.now().isoformat()} {actor.name}: restarted")
            self._start(actor)
        what = actor.parked_at
        command = "run"
        if (
            self.crashes_enabled
            and actor.crashable
            and what not in ("start", "sleep")
            and self.rng.random() < self.crash_rate
        ):
            command = "kill"
            self._kill(actor.name)
            self.stats.crashes += 1
            point = what.removeprefix("acted:")
            self.stats.crash_points.add(("after " if what.startswith("acted:") else "before ") + point)
        if what not in ("start", "sleep") and not what.startswith("acted:") and self.latency[1] > 0:
            self.clock.advance(self.rng.uniform(*self.latency))
        self.trace.append(
            f"{self.clock.now().isoformat()} {actor.name}#{actor.incarnation}: "
            + ("CRASH at " if command == "kill" else "")
            + what
        )
        self._grant(actor, command)
        self.stats.steps += 1
        return what

    def _grant(self, actor: ActorState, command: str) -> None:
        self.current = actor.name
        self._yielded.clear()
        actor.command = command
        actor.go.set()
        if not self._yielded.wait(self._stall):
            raise SchedulerError(f"actor {actor.name} did not yield within {self._stall}s (deadlock?)")
        self.current = None

    def stop(self) -> None:
        """End every actor thread (each raises ``Stopped`` at its yield point; no AWS call follows)."""
        self.stopping = True
        for actor in self.actors.values():
            if actor.alive and actor.thread is not None:
                self._yielded.clear()
                actor.command = "stop"
                actor.go.set()
                actor.thread.join(self._stall)
