"""Typed events: the core emits them, logs and metrics subscribe.

Each event is a frozen dataclass with a stable dotted ``name``. Secret material is never a field:
events carry key *ids* only. ``fields()`` is what the log subscriber writes next to ``event``.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import ClassVar

from rotator.model import Action, UserPlan, UserState


@dataclass(frozen=True)
class Event:
    name: ClassVar[str] = "event"
    level: ClassVar[str] = "info"

    def fields(self) -> dict[str, object]:
        out: dict[str, object] = {}
        for key, value in asdict(self).items():
            if value is None:
                continue
            if isinstance(value, datetime):
                out[key] = value.isoformat()
            elif isinstance(value, Action):
                out[key] = value.value
            else:
                out[key] = value
        return out


@dataclass(frozen=True)
class UserEvent(Event):
    account: str
    user: str
    key_id: str | None = None
    sweep_id: str | None = None


@dataclass(frozen=True)
class KeyCreated(UserEvent):
    """Exactly once per IAM key the rotator creates."""

    name: ClassVar[str] = "rotation.key_created"


@dataclass(frozen=True)
class KeyPublished(UserEvent):
    name: ClassVar[str] = "rotation.published"
    previous_key_id: str | None = None
    secret: str | None = None
    resumed: bool = False


@dataclass(frozen=True)
class KeyDisabled(UserEvent):
    name: ClassVar[str] = "key.disabled"
    reason: str = ""
    loud: bool = False
    #: ``max_hold`` (the guard gave up holding), ``quarantine`` (an exposed key), ``revoke`` (``rotate --revoke``);
    #: None: the previous key's ordinary end of grace.
    cause: str | None = None


@dataclass(frozen=True)
class QuarantineResponded(UserEvent):
    """The response to an exposed key: ``phase`` ``started`` (the record is written, the rotation runs),
    ``revoked`` (the new key is published and the exposed key ``key_id`` disabled) or ``reported``
    (``response.quarantine=report``: nothing done). ``policies`` are AWS's quarantine policies attached.
    """

    name: ClassVar[str] = "key.quarantine_response"
    level: ClassVar[str] = "warning"
    phase: str = "started"
    policies: tuple[str, ...] = ()
    exposed_key_ids: tuple[str, ...] = ()
    new_key_id: str | None = None
    reason: str = ""


@dataclass(frozen=True)
class KeyHeld(UserEvent):
    """The guard kept a previous key Active: a consumer still uses it (who: service and region)."""

    name: ClassVar[str] = "key.held"
    level: ClassVar[str] = "warning"
    reason: str = ""
    last_used: datetime | None = None
    #: Where IAM last saw the key used (``GetAccessKeyLastUsed``): ``s3``, ``eu-west-1``.
    last_used_service: str | None = None
    last_used_region: str | None = None
    #: For people: ``last used 3h0m ago by s3 in eu-west-1; disabled once unused for 4h, or regardless from ...``.
    summary: str = ""


@dataclass(frozen=True)
class KeyDeleted(UserEvent):
    name: ClassVar[str] = "key.deleted"
    reason: str = ""


@dataclass(frozen=True)
class OrphanDeleted(UserEvent):
    name: ClassVar[str] = "key.orphan_deleted"
    level: ClassVar[str] = "warning"
    reason: str = ""


@dataclass(frozen=True)
class KeyWithdrawn(UserEvent):
    """A key this run created and could not store or validate was deleted at once."""

    name: ClassVar[str] = "rotation.key_withdrawn"
    level: ClassVar[str] = "warning"
    reason: str = ""


@dataclass(frozen=True)
class KeyOwnershipUnproven(UserEvent):
    """An unreferenced key whose creator cannot be proven: left alone, reported every sweep (I9, I10)."""

    name: ClassVar[str] = "key.ownership_unproven"
    level: ClassVar[str] = "error"
    reason: str = ""


@dataclass(frozen=True)
class RecordRepaired(UserEvent):
    """A timestamp a crash kept from being written was recorded late (see docs/design.md)."""

    name: ClassVar[str] = "state.record_repaired"
    level: ClassVar[str] = "warning"
    record: str = ""


@dataclass(frozen=True)
class ActionSkipped(UserEvent):
    name: ClassVar[str] = "action.skipped"
    action: Action = Action.SKIP
    reason: str = ""


@dataclass(frozen=True)
class ActionFailed(UserEvent):
    name: ClassVar[str] = "action.failed"
    level: ClassVar[str] = "error"
    action: Action = Action.SKIP
    error: str = ""
    error_type: str = ""


@dataclass(frozen=True)
class ValidationAttempt(UserEvent):
    name: ClassVar[str] = "rotation.validation_pending"
    level: ClassVar[str] = "debug"
    attempt: int = 0


@dataclass(frozen=True)
class NotificationSent(Event):
    """One delivery attempt of a notification (``rotator_notifications_total{channel,result}``)."""

    name: ClassVar[str] = "notification.sent"
    level: ClassVar[str] = "debug"
    channel: str = ""  # sns | webhook
    result: str = "success"  # success | failure | dropped
    kind: str = ""
    error_type: str = ""


@dataclass(frozen=True)
class NotificationFailed(NotificationSent):
    """A notification not delivered (``result`` failure or dropped): logged, counted, never retried forever."""

    name: ClassVar[str] = "notification.failed"
    level: ClassVar[str] = "warning"


@dataclass(frozen=True)
class SweepStarted(Event):
    name: ClassVar[str] = "sweep.started"
    sweep_id: str = ""
    dry_run: bool = False


@dataclass(frozen=True)
class SweepFinished(Event):
    name: ClassVar[str] = "sweep.finished"
    sweep_id: str = ""
    #: success | partial (per-user or per-account problems only) | failure (the rotator could not do its job)
    #: | interrupted; see ``SweepReport.result``.
    result: str = "success"
    dry_run: bool = False
    duration_seconds: float = 0.0
    users: int = 0
    rotated: int = 0
    disabled: int = 0
    held: int = 0
    deleted: int = 0
    cleaned: int = 0
    skipped: int = 0
    deferred: int = 0
    failed: int = 0
    #: When the sweep ended (by the App's clock): a successful sweep's time is the last-success metric.
    finished_at: datetime | None = None


@dataclass(frozen=True)
class SettingsApplied(Event):
    """The daemon runs with these settings now (start-up or SIGHUP reload)."""

    name: ClassVar[str] = "config.applied"
    level: ClassVar[str] = "debug"
    dry_run: bool = False


@dataclass(frozen=True)
class AwsCall(Event):
    """One logical AWS call through the boundary (or one throttled attempt inside it)."""

    name: ClassVar[str] = "aws.call"
    level: ClassVar[str] = "debug"
    service: str = ""
    operation: str = ""
    outcome: str = "ok"  # ok | error | throttled
    account: str | None = None
    #: AWS answered (any answer below 5xx: an AccessDenied or NotFound shows AWS is up). False: no
    #: connection, no answer in time, a dropped connection, no credentials, or a 5xx. /readyz follows it.
    reachable: bool = True


@dataclass(frozen=True)
class InventorySnapshot(Event):
    """What one account looked like after a sweep or plan; drives the per-key gauges (not logged)."""

    name: ClassVar[str] = "inventory.snapshot"
    level: ClassVar[str] = "debug"
    account: str = ""
    states: Sequence[UserState] = ()
    plans: Sequence[UserPlan] = ()


@dataclass(frozen=True)
class LeaderChanged(Event):
    name: ClassVar[str] = "leader.changed"
    leader: bool = False


@dataclass(frozen=True)
class LeaseError(Event):
    """An AWS call of the lease failed: this replica is (now) not the leader."""

    name: ClassVar[str] = "lease.error"
    level: ClassVar[str] = "warning"
    table: str = ""
    operation: str = ""
    error: str = ""
    error_type: str = ""


@dataclass(frozen=True)
class ClockSkew(Event):
    """The host clock's offset from AWS's (``Date`` headers) moved: ``rotator_clock_skew_seconds``."""

    name: ClassVar[str] = "clock.skew"
    offset_seconds: float = 0.0  # AWS's time minus the host's
    uncertainty_seconds: float = 0.0
    plausible: bool = True
    problem: str = ""


@dataclass(frozen=True)
class AccountSwept(Event):
    """One account's part of a sweep ended: ``rotator_account_last_success_timestamp_seconds``."""

    name: ClassVar[str] = "sweep.account_finished"
    level: ClassVar[str] = "debug"
    account: str = ""
    sweep_id: str = ""
    result: str = "success"  # success | failure | interrupted
    finished_at: datetime | None = None


Subscriber = Callable[[Event], None]


class EventBus:
    """Fan-out of events to subscribers; a failing subscriber never breaks the core."""

    def __init__(self, subscribers: list[Subscriber] | None = None) -> None:
        self._subscribers: list[Subscriber] = list(subscribers or [])
        self._lock = threading.Lock()

    def subscribe(self, subscriber: Subscriber) -> None:
        with self._lock:
            self._subscribers.append(subscriber)

    def emit(self, event: Event) -> None:
        with self._lock:
            subscribers = list(self._subscribers)
        for subscriber in subscribers:
            try:
                subscriber(event)
            except Exception:  # observability must never stop a rotation
                logging.getLogger(__name__).warning("event subscriber failed", exc_info=True)
