"""Prometheus metrics (SPEC's table): a subscriber of core events over an injected registry."""

from __future__ import annotations

import threading
from datetime import datetime

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from rotator import __version__
from rotator.events import (
    AccountSwept,
    ActionFailed,
    ActionSkipped,
    AwsCall,
    ClockSkew,
    Event,
    InventorySnapshot,
    KeyDeleted,
    KeyDisabled,
    KeyHeld,
    KeyPublished,
    LeaderChanged,
    LeaseError,
    NotificationSent,
    OrphanDeleted,
    SettingsApplied,
    SweepFinished,
    SweepStarted,
)
from rotator.model import Action, UserPlan

#: Events that are one action with one result (``rotator_actions_total``).
_ACTION_RESULTS: dict[type[Event], tuple[str, str]] = {
    KeyPublished: (Action.ROTATE.value, "success"),
    KeyDisabled: (Action.DISABLE.value, "success"),
    KeyHeld: (Action.DISABLE.value, "held"),
    KeyDeleted: (Action.DELETE.value, "success"),
    OrphanDeleted: (Action.CLEANUP.value, "success"),
}


def _ts(value: datetime) -> float:
    return value.timestamp()


def _soonest(plan: UserPlan) -> dict[str, datetime]:
    """Per action, when it next falls due for the plan's user (upcoming, or a due step)."""
    soonest: dict[str, datetime] = {}
    dated = [(item.action.value, item.due_at) for item in plan.upcoming]
    dated += [(step.action.value, step.due_at) for step in plan.steps if step.mutating and step.due_at is not None]
    for action, due in dated:
        if action not in soonest or due < soonest[action]:
            soonest[action] = due
    return soonest


class Metrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.key_created = Gauge(
            "rotator_access_key_created_timestamp_seconds",
            "Creation time of each access key of a managed user.",
            ["account", "user", "key_id", "status"],
            registry=registry,
        )
        self.key_last_used = Gauge(
            "rotator_access_key_last_used_timestamp_seconds",
            "Last use of each access key, as IAM reports it (lags up to hours).",
            ["account", "user", "key_id"],
            registry=registry,
        )
        self.next_action = Gauge(
            "rotator_next_action_timestamp_seconds",
            "When the next action of each kind falls due for a user.",
            ["account", "user", "action"],
            registry=registry,
        )
        self.actions = Counter(
            "rotator_actions_total", "Actions taken, by result.", ["action", "result"], registry=registry
        )
        self.sweeps = Counter("rotator_sweeps_total", "Sweeps, by result.", ["result"], registry=registry)
        for result in ("success", "partial", "failure", "interrupted"):
            # At 0 from the start: increase() over a series that appears at 1 would miss the first failure.
            self.sweeps.labels(result)
        self.sweep_duration = Histogram(
            "rotator_sweep_duration_seconds",
            "Duration of sweeps.",
            buckets=(0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600),
            registry=registry,
        )
        self.last_success = Gauge(
            "rotator_last_sweep_success_timestamp_seconds",
            "End of the last successful sweep.",
            registry=registry,
        )
        self.managed_users = Gauge(
            "rotator_managed_users", "Managed users per account.", ["account"], registry=registry
        )
        self.aws_calls = Counter(
            "rotator_aws_api_calls_total",
            "AWS API calls by outcome (throttled counts each throttled attempt).",
            ["service", "operation", "outcome"],
            registry=registry,
        )
        self.unproven_keys = Gauge(
            "rotator_unproven_keys",
            "Keys left alone because no record or CloudTrail event proves the rotator created them.",
            ["account"],
            registry=registry,
        )
        self.held_keys = Gauge(
            "rotator_held_keys",
            "Previous keys the guard keeps Active now because consumers still use them (hold steps of the plans).",
            ["account"],
            registry=registry,
        )
        self.quarantined_users = Gauge(
            "rotator_quarantined_users",
            "Managed users with an AWSCompromisedKeyQuarantine* policy attached (AWS found a key in public).",
            ["account"],
            registry=registry,
        )
        self.notifications = Counter(
            "rotator_notifications_total",
            "Notification deliveries by channel (sns, webhook) and result (success, failure, dropped).",
            ["channel", "result"],
            registry=registry,
        )
        for channel in ("sns", "webhook"):
            for result in ("success", "failure", "dropped"):
                self.notifications.labels(channel, result)  # at 0: increase() sees the first failure
        self.problems = Gauge(
            "rotator_problems",
            "Per-user and per-account problems of the last sweep: kind=user counts the users that cannot progress "
            "or whose action failed, kind=account is 1 when the account could not be entered or read.",
            ["account", "kind"],
            registry=registry,
        )
        self.lease_errors = Counter(
            "rotator_lease_errors_total",
            "Failed AWS calls of the leader lease (this replica cannot lead while they fail).",
            ["operation"],
            registry=registry,
        )
        for operation in ("GetItem", "PutItem", "DeleteItem"):
            # Present at 0 from the start, so increase() sees the first error (and dashboards have a series).
            self.lease_errors.labels(operation)
        self.key_held = Gauge(
            "rotator_key_held",
            "1 for each previous key the guard keeps Active now (its last use: "
            "rotator_access_key_last_used_timestamp_seconds).",
            ["account", "user", "key_id"],
            registry=registry,
        )
        self.leader = Gauge("rotator_leader", "1 on the replica holding the lease.", registry=registry)
        self.clock_skew = Gauge(
            "rotator_clock_skew_seconds",
            "AWS's clock minus this host's, estimated from the Date header of AWS's answers.",
            registry=registry,
        )
        self.account_last_success = Gauge(
            "rotator_account_last_success_timestamp_seconds",
            "End of the last sweep of each account that succeeded there (AWS time).",
            ["account"],
            registry=registry,
        )
        self.build_info = Gauge("rotator_build_info", "Build information.", ["version"], registry=registry)
        self.dry_run = Gauge("rotator_dry_run", "1 when the rotator only plans (safety.dry_run).", registry=registry)
        self.build_info.labels(version=__version__).set(1)
        self._lock = threading.Lock()
        self._key_labels: dict[str, set[tuple[str, ...]]] = {}
        self._used_labels: dict[str, set[tuple[str, ...]]] = {}
        self._next_labels: dict[str, set[tuple[str, ...]]] = {}
        self._held_labels: dict[str, set[tuple[str, ...]]] = {}
        #: The running sweep's problems (None outside a sweep): account -> users, and failing accounts.
        self._sweep_users: dict[str, set[str]] | None = None
        self._sweep_accounts: set[str] = set()
        #: Accounts with a ``rotator_problems`` series (removed once an account leaves the configuration).
        self._problem_accounts: set[str] = set()
        #: Accounts the running sweep read (an account without problems gets its zeros).
        self._managed_accounts: set[str] = set()

    def __call__(self, event: Event) -> None:
        if isinstance(event, NotificationSent):  # from the notifier's delivery thread
            self.notifications.labels(event.channel, event.result).inc()
            return
        if isinstance(event, ClockSkew | AccountSwept):
            self._time(event)
            return
        self.observe(event)

    def observe(self, event: Event) -> None:
        """The metrics follow the events, and nothing else (no component sets a metric directly)."""
        counted = _ACTION_RESULTS.get(type(event))
        if counted is not None:
            self.actions.labels(*counted).inc()
        elif isinstance(event, ActionFailed | ActionSkipped):
            if event.user:  # an account-wide failure (user "") is no action: ``rotator_problems`` counts it
                result = "failure" if isinstance(event, ActionFailed) else "skipped"
                self.actions.labels(event.action.value, result).inc()
            if isinstance(event, ActionFailed):
                self._sweep_problem(event.account, event.user)
        elif isinstance(event, AwsCall):
            self.aws_calls.labels(event.service, event.operation, event.outcome).inc()
        elif isinstance(event, SweepStarted):
            with self._lock:
                self._sweep_users, self._sweep_accounts = {}, set()
        elif isinstance(event, SweepFinished):
            self.sweeps.labels(event.result).inc()
            self.sweep_duration.observe(event.duration_seconds)
            self.dry_run.set(1 if event.dry_run else 0)
            # A partial sweep (per-user or per-account problems, reported apart) still did the rotator's job.
            if event.result in ("success", "partial") and event.finished_at is not None:
                self.last_success.set(_ts(event.finished_at))
            self._publish_problems(complete=event.result != "failure")
        elif isinstance(event, LeaseError):
            self.lease_errors.labels(event.operation or "unknown").inc()
        elif isinstance(event, SettingsApplied):
            self.dry_run.set(1 if event.dry_run else 0)
        elif isinstance(event, InventorySnapshot):
            self.snapshot(event)
        elif isinstance(event, LeaderChanged):
            self.leader.set(1 if event.leader else 0)

    def _time(self, event: ClockSkew | AccountSwept) -> None:
        """AWS's clock against the host's, and when each account last succeeded (AWS time)."""
        if isinstance(event, ClockSkew):
            self.clock_skew.set(event.offset_seconds)
        elif event.result == "success" and event.finished_at is not None:
            self.account_last_success.labels(event.account).set(_ts(event.finished_at))

    def _sweep_problem(self, account: str, user: str) -> None:
        with self._lock:
            if self._sweep_users is None or not account:
                return  # outside a sweep (``rotate``), or the account discovery itself (a failed sweep)
            if user:
                self._sweep_users.setdefault(account, set()).add(user)
            else:
                self._sweep_accounts.add(account)

    def _publish_problems(self, *, complete: bool) -> None:
        """``rotator_problems`` from the sweep that just ended.

        A failed sweep read too little to say an account is gone: it updates what it saw and removes nothing.
        """
        with self._lock:
            users, failing = self._sweep_users, self._sweep_accounts
            self._sweep_users, self._sweep_accounts = None, set()
            if users is None:
                return
            accounts = set(users) | failing | set(self._managed_accounts)
            for account in accounts:
                self.problems.labels(account, "user").set(len(users.get(account, ())))
                self.problems.labels(account, "account").set(1 if account in failing else 0)
            if not complete:
                self._problem_accounts |= accounts
                self._managed_accounts.clear()
                return
            for gone in self._problem_accounts - accounts:
                for kind in ("user", "account"):
                    try:
                        self.problems.remove(gone, kind)
                    except KeyError:
                        continue
            self._problem_accounts = accounts
            self._managed_accounts.clear()

    def snapshot(self, event: InventorySnapshot) -> None:
        """Set the per-key gauges of one account and remove those of keys that disappeared."""
        account = event.account
        created: set[tuple[str, ...]] = set()
        used: set[tuple[str, ...]] = set()
        upcoming: set[tuple[str, ...]] = set()
        held: set[tuple[str, ...]] = set()
        with self._lock:
            if self._sweep_users is not None:
                self._managed_accounts.add(account)
                problem_users = {p.user for p in event.plans if p.has_problem}
                if problem_users:
                    self._sweep_users.setdefault(account, set()).update(problem_users)
            self.managed_users.labels(account).set(len(event.states))
            self.unproven_keys.labels(account).set(sum(1 for p in event.plans for s in p.steps if s.unproven))
            held = {
                (account, p.user, s.key_id)
                for p in event.plans
                for s in p.steps
                if s.action is Action.HOLD and s.key_id is not None
            }
            self.held_keys.labels(account).set(len(held))
            for labels in held:
                self.key_held.labels(*labels).set(1)
            self.quarantined_users.labels(account).set(sum(1 for state in event.states if state.quarantine_policies))
            for state in event.states:
                for key in state.keys:
                    key_labels = (account, state.user, key.key_id, key.status.value)
                    self.key_created.labels(*key_labels).set(_ts(key.created))
                    created.add(key_labels)
                    if key.last_used is not None:
                        used_labels = (account, state.user, key.key_id)
                        self.key_last_used.labels(*used_labels).set(_ts(key.last_used))
                        used.add(used_labels)
            for plan in event.plans:
                for action, due in _soonest(plan).items():
                    labels = (account, plan.user, action)
                    self.next_action.labels(*labels).set(_ts(due))
                    upcoming.add(labels)
            self._prune(self.key_created, self._key_labels, account, created)
            self._prune(self.key_last_used, self._used_labels, account, used)
            self._prune(self.next_action, self._next_labels, account, upcoming)
            self._prune(self.key_held, self._held_labels, account, held)

    @staticmethod
    def _prune(
        gauge: Gauge, seen: dict[str, set[tuple[str, ...]]], account: str, now_present: set[tuple[str, ...]]
    ) -> None:
        for labels in seen.get(account, set()) - now_present:
            try:
                gauge.remove(*labels)
            except KeyError:
                continue
        seen[account] = now_present
