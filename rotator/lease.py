"""Leader election between replicas over a DynamoDB lease (``coordination.lease_table``).

One item per lease in a table whose partition key is ``name`` (string)::

    {"name": "iam-key-rotator", "owner": "<host>:<pid>:<random>", "expires": <epoch seconds>}

:meth:`Lease.try_acquire` takes or renews it with a conditional ``PutItem``
(``attribute_not_exists(#name) OR #owner = :me OR #expires < :now``); a ``GetItem`` first spares the
standby replicas a failing conditional write on every renewal. :meth:`Lease.release` deletes it on
``owner = :me``. :attr:`Lease.held` is true while the lease is ours by our own clock, a safety margin
before the expiry we wrote (so clock skew between replicas eats the margin, not the exclusivity).

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
from datetime import datetime, timedelta
from typing import Protocol

from rotator.config import Settings
from rotator.errors import AwsError, ConflictError
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

    def try_acquire(self) -> bool: ...

    def release(self) -> None: ...


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
        #: Guards the state below; never held across an AWS call (``held`` must answer at once).
        self._lock = threading.Lock()
        #: Serialises try_acquire/release (their AWS calls).
        self._op_lock = threading.Lock()
        self._released = False
        #: We wrote the item and saw no one else take it since: release deletes it (conditionally).
        self._may_own = False
        #: Until when the lease is ours by our clock (already minus the margin); None = not ours.
        self._valid_until: datetime | None = None
        #: Last leadership emitted (None until the first attempt, so the gauge is always set once).
        self._leader: bool | None = None

    @property
    def renew_interval(self) -> timedelta:
        """How often the holder should call :meth:`try_acquire` (a third of the ttl)."""
        return self.ttl / 3

    @property
    def held(self) -> bool:
        """Acquired and, by our own clock, not within ``margin`` of the expiry we wrote."""
        with self._lock:
            held = self._valid_until is not None and self._clock() < self._valid_until
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
            started = self._clock()
            now = started.timestamp()
            try:
                current = self.aws.get_lease(self.table, self.name)
                if current is not None and current.owner != self.owner and current.expires >= now:
                    self._may_own = False
                    return self._lost()
                self._may_own = True  # from here on the item may be ours, whatever the answer
                self.aws.put_lease(self.table, self.name, self.owner, (started + self.ttl).timestamp(), now)
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
                valid_until = started + self.ttl - self.margin
                held = self._clock() < valid_until  # false if the calls took longer than ttl - margin
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
    ttl: timedelta = DEFAULT_TTL,
    owner: str | None = None,
) -> Lease | NoLease:
    """The daemon's leadership: a :class:`Lease` on ``coordination.lease_table``, else :class:`NoLease`."""
    table = settings.coordination.lease_table
    if table is None:
        return NoLease(emit=emit, ttl=ttl)
    return Lease(aws, table, emit=emit, clock=clock, ttl=ttl, owner=owner)
