"""Prometheus metrics (SPEC's table): a subscriber of core events over an injected registry."""

from __future__ import annotations

import threading
from datetime import datetime

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from rotator import __version__
from rotator.events import (
    ActionFailed,
    ActionSkipped,
    AwsCall,
    Event,
    InventorySnapshot,
    KeyDeleted,
    KeyDisabled,
    KeyHeld,
    KeyPublished,
    LeaderChanged,
    OrphanDeleted,
    SettingsApplied,
    SweepFinished,
)
from rotator.model import Action

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
        self.leader = Gauge("rotator_leader", "1 on the replica holding the lease.", registry=registry)
        self.build_info = Gauge("rotator_build_info", "Build information.", ["version"], registry=registry)
        self.dry_run = Gauge("rotator_dry_run", "1 when the rotator only plans (safety.dry_run).", registry=registry)
        self.build_info.labels(version=__version__).set(1)
        self._lock = threading.Lock()
        self._key_labels: dict[str, set[tuple[str, ...]]] = {}
        self._used_labels: dict[str, set[tuple[str, ...]]] = {}
        self._next_labels: dict[str, set[tuple[str, ...]]] = {}

    def __call__(self, event: Event) -> None:
        self.observe(event)

    def observe(self, event: Event) -> None:
        """The metrics follow the events, and nothing else (no component sets a metric directly)."""
        counted = _ACTION_RESULTS.get(type(event))
        if counted is not None:
            self.actions.labels(*counted).inc()
        elif isinstance(event, ActionFailed | ActionSkipped):
            self.actions.labels(event.action.value, "failure" if isinstance(event, ActionFailed) else "skipped").inc()
        elif isinstance(event, AwsCall):
            self.aws_calls.labels(event.service, event.operation, event.outcome).inc()
        elif isinstance(event, SweepFinished):
            self.sweeps.labels(event.result).inc()
            self.sweep_duration.observe(event.duration_seconds)
            self.dry_run.set(1 if event.dry_run else 0)
            if event.result == "success" and event.finished_at is not None:
                self.last_success.set(_ts(event.finished_at))
        elif isinstance(event, SettingsApplied):
            self.dry_run.set(1 if event.dry_run else 0)
        elif isinstance(event, InventorySnapshot):
            self.snapshot(event)
        elif isinstance(event, LeaderChanged):
            self.leader.set(1 if event.leader else 0)

    def snapshot(self, event: InventorySnapshot) -> None:
        """Set the per-key gauges of one account and remove those of keys that disappeared."""
        account = event.account
        created: set[tuple[str, ...]] = set()
        used: set[tuple[str, ...]] = set()
        upcoming: set[tuple[str, ...]] = set()
        with self._lock:
            self.managed_users.labels(account).set(len(event.states))
            self.unproven_keys.labels(account).set(sum(1 for p in event.plans for s in p.steps if s.unproven))
            self.held_keys.labels(account).set(
                len({(p.user, s.key_id) for p in event.plans for s in p.steps if s.action is Action.HOLD})
            )
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
                soonest: dict[str, datetime] = {}
                for item in plan.upcoming:
                    action = item.action.value
                    if action not in soonest or item.due_at < soonest[action]:
                        soonest[action] = item.due_at
                for step in plan.steps:
                    if step.mutating and step.due_at is not None:
                        action = step.action.value
                        if action not in soonest or step.due_at < soonest[action]:
                            soonest[action] = step.due_at
                for action, due in soonest.items():
                    labels = (account, plan.user, action)
                    self.next_action.labels(*labels).set(_ts(due))
                    upcoming.add(labels)
            self._prune(self.key_created, self._key_labels, account, created)
            self._prune(self.key_last_used, self._used_labels, account, used)
            self._prune(self.next_action, self._next_labels, account, upcoming)

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
