"""Leader election between replicas over a DynamoDB lease (``coordination.lease_table``).

One item per lease in a table whose partition key is ``name`` (string)::

    {"name": "iam-key-rotator", "owner": "<host>:<pid>:<random>", "expires": <epoch seconds>,
     "last_sweep": <epoch seconds>}

:meth:`Lease.try_acquire` takes or renews it with a conditional ``PutItem``
(``attribute_not_exists(#name) OR #owner = :me OR #expires < :now``); a ``GetItem`` first spares the
standby replicas a failing conditional write on every renewal. :meth:`Lease.release` deletes it on
``owner = :me``.

Time (docs/design.md, "Time and leadership"): ``expires`` and ``:now`` are AWS's time (the daemon's
``clock`` is :meth:`rotator.awsclock.AwsClock.checked_now`, read after the ``GetItem`` answered), so
replicas whose host clocks disagree agree on when a lease expires. :attr:`Lease.held` - what the fencing
guard asks before every mutating call - counts *monotonic* time since the start of the last successful
renewal: ``ttl - margin`` of it and the lease is no longer relied on, whatever the wall clock does and
however long the process was paused. ``last_sweep`` carries the end of the last successful sweep from
leader to leader, so a new leader knows whether the schedule is overdue (:attr:`Lease.last_sweep`).

Fail safe: any AWS error while acquiring or renewing means "not leader", is emitted as
:class:`LeaseError` (logged), and is never raised. The lease is an optimisation on top of I8, which
holds without it (IAM's two-key limit): a sweep that outlives a lost lease stays correct.

Without a lease table the daemon is always the leader: :class:`NoLease`, same interface.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Protocol

from rotator.config import Settings
from rotator.errors import AwsError, ConflictError, MutationRefusedError
from rotator.events import Event, LeaderChanged, LeaseError
from rotator.ports import LeaseStore

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]
Emit = Callable[[Event], None]

DEFAULT_NAME = "iam-key-rotator"
DEFAULT_TTL = timedelta(seconds=60)


class Leadership(Protocol):
    """What the daemon needs: :class:`Lease` and :class:`NoLease` both provide it."""

    @property
    def held(self) -> bool: ...

    @property
    def renew_interval(self) -> timedelta: ...

    @property
    def last_sweep(self) -> datetime | None:
        """End of the last successful sweep by any leader (AWS time), as the lease item says; None: unknown."""
        ...

    def record_sweep(self, at: datetime) -> None:
        """A sweep of ours succeeded at ``at`` (AWS time): the next write of the lease item carries it."""
        ...

    def try_acquire(self) -> bool: ...

    def release(self) -> None: ...


class FencedError(MutationRefusedError):
    """A mutating call refused: the lease was not renewed within ``ttl - margin`` of monotonic time."""


def fence(leadership: Leadership, operation: str) -> None:
    """The fencing guard (rotator.guard): raise :class:`FencedError` unless ``leadership`` is held now."""
    if not leadership.held:
        raise FencedError(
            f"{operation} refused: this replica no longer holds the lease (not renewed in time: paused, "
            "or DynamoDB unreachable); the next leader completes or cleans what this run left"
        )


def new_owner_id() -> str:
    """A per-process owner id: host, pid and a random part (a restarted pid never reuses a lease)."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"


class Lease:
    """A leader lease in a DynamoDB table. Thread-safe; never raises from its methods."""

    def __init__(
        self,
        aws: LeaseStore,
        table: str,
        *,
        emit: Emit,
        clock: Clock,
        name: str = DEFAULT_NAME,
        owner: str | None = None,
        ttl: timedelta = DEFAULT_TTL,
        margin: timedelta | None = None,
        monotonic: Callable[[], float] | None = None,
    ) -> None:
        if ttl <= timedelta(0):
            raise ValueError("lease ttl must be positive")
        self.aws = aws
        self.table = table
        self.name = name
        self.owner = owner or new_owner_id()
        self.ttl = ttl
        self.margin = ttl / 4 if margin is None else margin
        if not timedelta(0) <= self.margin < ttl:
            raise ValueError("lease margin must be in [0, ttl)")
        self._emit = emit
        self._clock = clock
        #: Measures how long the lease is relied on (default: ``clock``'s own seconds, for simulated time).
        self._monotonic = monotonic or (lambda: clock().timestamp())
        #: Guards the state below; never held across an AWS call (``held`` must answer at once).
        self._lock = threading.Lock()
        #: Serialises try_acquire/release (their AWS calls).
        self._op_lock = threading.Lock()
        self._released = False
        #: We wrote the item and saw no one else take it since: release deletes it (conditionally).
        self._may_own = False
        #: Until when (monotonic) the lease is ours (already minus the margin); None = not ours.
        self._valid_until: float | None = None
        #: The last successful sweep (AWS epoch seconds) we know of: the item's, or our own.
        self._last_sweep: float | None = None
        #: Last leadership emitted (None until the first attempt, so the gauge is always set once).
        self._leader: bool | None = None

    @property
    def renew_interval(self) -> timedelta:
        """How often the holder should call :meth:`try_acquire` (a third of the ttl)."""
        return self.ttl / 3

    @property
    def last_sweep(self) -> datetime | None:
        with self._lock:
            return None if self._last_sweep is None else datetime.fromtimestamp(self._last_sweep, UTC)

    def record_sweep(self, at: datetime) -> None:
        with self._lock:
            self._last_sweep = max(at.timestamp(), self._last_sweep or 0.0)

    @property
    def held(self) -> bool:
        """Acquired, and less than ``ttl - margin`` of monotonic time since the last renewal started."""
        with self._lock:
            held = self._valid_until is not None and self._monotonic() < self._valid_until
            if not held and self._leader:
                self._valid_until = None
                self._set_leader(False)
            return held

    def try_acquire(self) -> bool:
        """Take the lease if it is free, expired or ours (renewing it). True when we hold it now.

        After :meth:`release` it stays released (returns False): shutdown must not take it back.
        """
        with self._op_lock:
            if self._released:
                return False
            started = self._monotonic()
            try:
                current = self.aws.get_lease(self.table, self.name)
                # AWS's time, read after GetItem answered (its Date header is the freshest sample); it
                # raises when AWS's time is not known well enough: then we are not leader.
                now = self._clock().timestamp()
                if current is not None and current.owner != self.owner and current.expires >= now:
                    self._may_own = False
                    with self._lock:
                        self._last_sweep = _later(self._last_sweep, current.last_sweep)
                    return self._lost()
                with self._lock:
                    if current is not None:
                        self._last_sweep = _later(self._last_sweep, current.last_sweep)
                    last_sweep = self._last_sweep
                self._may_own = True  # from here on the item may be ours, whatever the answer
                # ``now`` is no earlier than AWS's time at ``started``: the item expires no earlier than
                # ``ttl`` after it, so our validity (below, from ``started``) ends first.
                expires = now + self.ttl.total_seconds()
                self.aws.put_lease(self.table, self.name, self.owner, expires, now, last_sweep=last_sweep)
            except ConflictError:
                self._may_own = False
                return self._lost()  # another replica won the race: plainly not leader
            except Exception as exc:  # fail safe: any error is "not leader", never the scheduler's problem
                self._failed(exc, "PutItem")
                return self._lost()
            with self._lock:
                if self._released:  # released while we were renewing: stay down (it expires by itself)
                    return False
                # Validity counts from *before* the calls: the item may have been written at their start.
                valid_until = started + (self.ttl - self.margin).total_seconds()
                held = self._monotonic() < valid_until  # false if the calls took longer than ttl - margin
                self._valid_until = valid_until if held else None
                self._set_leader(held)
                return held

    def release(self, wait: float = 5.0) -> None:
        """Give the lease up at once (shutdown), if it may be ours; errors are emitted, never raised.

        Leadership ends immediately. The conditional delete (on our owner id: it never removes a lease
        another replica took) waits at most ``wait`` seconds for a renewal still in flight; past that
        it is skipped and the lease simply expires after its ttl.
        """
        with self._lock:
            self._released = True
            self._valid_until = None
            self._set_leader(False)
        if not self._op_lock.acquire(timeout=wait):
            return
        try:
            if not self._may_own:
                return
            self._may_own = False
            try:
                self.aws.delete_lease(self.table, self.name, self.owner)
            except ConflictError:
                pass  # already taken over (or gone): nothing of ours to delete
            except Exception as exc:  # it expires on its own after the ttl
                self._failed(exc, "DeleteItem")
        finally:
            self._op_lock.release()

    def _failed(self, exc: Exception, operation: str) -> None:
        if not isinstance(exc, AwsError):
            log.warning("lease call failed unexpectedly", exc_info=True)
        self._emit(
            LeaseError(
                table=self.table,
                operation=getattr(exc, "operation", "") or operation,
                error=str(exc),
                error_type=type(exc).__name__,
            )
        )

    def _lost(self) -> bool:
        with self._lock:
            self._valid_until = None
            self._set_leader(False)
        return False

    def _set_leader(self, leader: bool) -> None:
        """Emit :class:`LeaderChanged` on a transition (caller holds ``_lock``)."""
        if self._leader is not leader:
            self._leader = leader
            self._emit(LeaderChanged(leader=leader))


def _later(a: float | None, b: float | None) -> float | None:
    return b if a is None else a if b is None else max(a, b)


class NoLease:
    """No lease table: this process is always the leader (``rotator_leader`` = 1)."""

    def __init__(self, *, emit: Emit, ttl: timedelta = DEFAULT_TTL) -> None:
        self._emit = emit
        self.ttl = ttl
        self._announced = False
        self._lock = threading.Lock()

    @property
    def renew_interval(self) -> timedelta:
        return self.ttl / 3

    @property
    def held(self) -> bool:
        return True

    @property
    def last_sweep(self) -> datetime | None:
        return None  # never a takeover: this process leads from its start

    def record_sweep(self, at: datetime) -> None:
        """Nothing to record (no item)."""

    def try_acquire(self) -> bool:
        with self._lock:
            if not self._announced:
                self._announced = True
                self._emit(LeaderChanged(leader=True))
        return True

    def release(self) -> None:
        """Nothing to give up (the gauge stays 1: without a table every replica leads)."""


def lease_for(
    settings: Settings,
    aws: LeaseStore,
    emit: Emit,
    clock: Clock,
    *,
    ttl: timedelta | None = None,
    owner: str | None = None,
    monotonic: Callable[[], float] | None = None,
) -> Lease | NoLease:
    """The daemon's leadership: a :class:`Lease` on ``coordination.lease_table``, else :class:`NoLease`.

    ``ttl``: ``coordination.lease_ttl`` unless given. ``monotonic``: what the hold is measured on (fencing;
    the daemon passes ``time.monotonic``); None: ``clock``'s own seconds (a simulation's time).
    """
    table = settings.coordination.lease_table
    ttl = settings.coordination.lease_ttl if ttl is None else ttl
    if table is None:
        return NoLease(emit=emit, ttl=ttl)
    return Lease(aws, table, emit=emit, clock=clock, ttl=ttl, owner=owner, monotonic=monotonic)
