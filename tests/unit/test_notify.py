"""Notifications as data: which event makes which message, de-duplication and warnings on an injected clock,
and no secret in any message by construction (``rotator.notify``).

The webhook's transport is injected here (a function recording what it was given); the real one, and SNS,
are exercised against a local HTTP receiver and moto in ``tests/integration/test_notifications.py``.
"""

from __future__ import annotations

import dataclasses
import json
import threading
from datetime import UTC, datetime, timedelta

import pytest
from prometheus_client import CollectorRegistry

from rotator.config_sections import NotificationSettings
from rotator.events import (
    ActionFailed,
    Event,
    EventBus,
    InventorySnapshot,
    KeyDeleted,
    KeyDisabled,
    KeyHeld,
    KeyPublished,
    NotificationSent,
    QuarantineResponded,
    SweepFinished,
    SweepStarted,
)
from rotator.metrics import Metrics
from rotator.model import (
    AWSCURRENT,
    AWSPREVIOUS,
    TAG_CURRENT_KEY,
    TAG_MANAGED,
    TAG_PREVIOUS_KEY,
    TAG_PUBLISHED_AT,
    AccessKey,
    Action,
    KeyStatus,
    PolicyDefaults,
    SecretState,
    UserState,
    version_id_for,
)
from rotator.notify import KINDS, Notification, Notifier
from rotator.policy import plan_user

T0 = datetime(2024, 3, 1, 12, 0, tzinfo=UTC)
ACCOUNT = "111111111111"
#: What a secret access key looks like; every free-text field of the events below carries it.
SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


class Sink:
    """The injected webhook transport: records every body it was asked to POST."""

    def __init__(self, status: int = 200) -> None:
        self.bodies: list[dict[str, object]] = []
        self.status = status
        self.lock = threading.Lock()

    def __call__(self, url: str, body: bytes, timeout: float) -> int:
        with self.lock:
            self.bodies.append(json.loads(body))
        return self.status


def notifier(clock: Clock, sink: Sink, events: list[Event] | None = None, **settings: object) -> Notifier:
    config = NotificationSettings.model_validate({"webhook_url": "https://hooks.example/T0/B0/x", **settings})
    emit = events.append if events is not None else lambda _e: None
    return Notifier(config, clock=clock, emit=emit, webhook_post=sink, flush_at_exit=0)


def deliver(n: Notifier, *events: Event) -> None:
    for event in events:
        n(event)
    assert n.flush(5.0)


def who(key_id: str | None = "AKIAOLD0000000000001") -> dict[str, object]:
    return {"account": ACCOUNT, "user": "alice", "key_id": key_id, "sweep_id": "s1"}


def user_state(owner: str | None = "#team-payments") -> UserState:
    """A user whose previous key is due to be disabled 2 days from T0 (grace 7d, published 5d ago)."""
    current, previous = "AKIANEW0000000000001", "AKIAOLD0000000000001"
    secret = SecretState(
        "iam-keys/alice",
        exists=True,
        managed=True,
        versions={version_id_for(current): (AWSCURRENT,), version_id_for(previous): (AWSPREVIOUS,)},
        version_keys={version_id_for(current): current, version_id_for(previous): previous},
        tags={
            TAG_MANAGED: "true",
            TAG_CURRENT_KEY: current,
            TAG_PREVIOUS_KEY: previous,
            TAG_PUBLISHED_AT: (T0 - timedelta(days=5)).isoformat(),
        },
    )
    keys = (
        AccessKey(current, KeyStatus.ACTIVE, T0 - timedelta(days=5)),
        AccessKey(previous, KeyStatus.ACTIVE, T0 - timedelta(days=60)),
        AccessKey("AKIAFOREIGN000000001", KeyStatus.ACTIVE, T0 - timedelta(days=1)),
    )
    tags = {"rotator": "enabled"} | ({"owner": owner} if owner else {})
    return UserState(ACCOUNT, "alice", keys=keys, secret=secret, tags=tags)


def snapshot(clock: Clock, owner: str | None = "#team-payments") -> InventorySnapshot:
    state = user_state(owner)
    defaults = PolicyDefaults(timedelta(days=90), timedelta(days=7), timedelta(days=7))
    return InventorySnapshot(account=ACCOUNT, states=[state], plans=[plan_user(state, defaults, clock())])


def one_of_each_kind() -> list[Event]:
    """An event for every kind, each free-text field carrying a secret."""
    return [
        KeyPublished(**who("AKIANEW0000000000001"), previous_key_id="AKIAOLD0000000000001", secret=SECRET),
        KeyDisabled(**who(), reason=SECRET),
        KeyDeleted(**who(), reason=SECRET),
        KeyHeld(**who("AKIAHELD000000000001"), reason=SECRET, summary=SECRET, last_used=T0, last_used_service="s3"),
        KeyDisabled(**who("AKIAHELD000000000001"), reason=SECRET),  # released: it was held
        KeyDisabled(**who("AKIAMAXHOLD000000001"), reason=SECRET, loud=True, cause="max_hold"),
        QuarantineResponded(
            **who(),
            phase="revoked",
            policies=("AWSCompromisedKeyQuarantineV3",),
            exposed_key_ids=("AKIAOLD0000000000001",),
            new_key_id="AKIANEW0000000000001",
            reason=SECRET,
        ),
        ActionFailed(**who(), action=Action.ROTATE, error=SECRET, error_type="ValidationTimeoutError"),
        SweepFinished(sweep_id="s1", result="failure"),
    ]


def test_every_kind_is_built_from_its_event_and_none_carries_a_secret() -> None:
    clock, sink = Clock(), Sink()
    n = notifier(clock, sink)
    deliver(n, SweepStarted(sweep_id="s1"), snapshot(clock), *one_of_each_kind())
    kinds = [body["kind"] for body in sink.bodies]
    assert sorted(kinds) == sorted(KINDS)  # one of each, warning and foreign key from the snapshot
    for body in sink.bodies:
        assert SECRET not in json.dumps(body)
        assert SECRET[:20] not in json.dumps(body)
    by_kind = {body["kind"]: body for body in sink.bodies}
    assert by_kind["rotation.published"]["key_id"] == "AKIAOLD0000000000001"
    assert by_kind["rotation.published"]["new_key_id"] == "AKIANEW0000000000001"
    assert by_kind["key.released"]["key_id"] == "AKIAHELD000000000001"
    assert by_kind["key.max_hold"]["key_id"] == "AKIAMAXHOLD000000001"
    assert by_kind["rotation.failed"]["error_type"] == "ValidationTimeoutError"
    assert by_kind["key.disable_warning"]["due_at"] == (T0 + timedelta(days=2)).isoformat()
    assert by_kind["key.foreign"]["key_id"] == "AKIAFOREIGN000000001"
    assert by_kind["key.quarantine_response"]["policies"] == ["AWSCompromisedKeyQuarantineV3"]
    # Owner routing: the user's owner tag, learnt from the inventory.
    assert by_kind["key.held"]["owner"] == "#team-payments"
    assert "Owner: #team-payments." in str(by_kind["key.held"]["text"])
    assert "owner" not in by_kind["sweep.failed"]


def test_a_notification_has_no_free_text_field_by_construction() -> None:
    """Identifiers, instants and fixed phrases only: no field could carry an event's reason or error text."""
    fields = {f.name for f in dataclasses.fields(Notification)}
    assert fields == {
        "kind",
        "account",
        "user",
        "at",
        "key_id",
        "new_key_id",
        "owner",
        "due_at",
        "last_used",
        "last_used_service",
        "last_used_region",
        "policies",
        "phase",
        "error_type",
        "sweep_id",
    }
    clock, sink = Clock(), Sink()
    n = notifier(clock, sink)
    weird = ActionFailed(**who(), action=Action.ROTATE, error="x", error_type=f"Boom {SECRET}")
    odd_phase = QuarantineResponded(**who(), phase=SECRET)
    deliver(n, weird, odd_phase)
    assert sink.bodies[0].get("error_type") is None  # not an identifier: not copied
    assert sink.bodies[1].get("phase") is None
    assert SECRET not in json.dumps(sink.bodies)


def test_a_held_key_notifies_once_per_repeat_after_and_again_when_released() -> None:
    clock, sink = Clock(), Sink()
    n = notifier(clock, sink, repeat_after="1d")
    held = KeyHeld(**who(), reason="in use", last_used=T0, last_used_service="s3", last_used_region="eu-west-1")
    for hour in range(0, 24, 1):  # hourly sweeps for a day
        clock.now = T0 + timedelta(hours=hour)
        deliver(n, held)
    assert [b["kind"] for b in sink.bodies] == ["key.held"]
    clock.now = T0 + timedelta(days=1)
    deliver(n, held)
    assert [b["kind"] for b in sink.bodies] == ["key.held", "key.held"]
    clock.now += timedelta(hours=1)
    deliver(n, KeyDisabled(**who(), reason="quiet now"))
    assert [b["kind"] for b in sink.bodies][-1] == "key.released"
    deliver(n, held)  # held again (a later episode): told again at once
    assert [b["kind"] for b in sink.bodies][-1] == "key.held"


def test_the_disable_warning_comes_once_inside_warn_before_and_never_from_plan_or_dry_run() -> None:
    clock, sink = Clock(), Sink()
    n = notifier(clock, sink, warn_before="1d")
    clock.now = T0  # the disable falls due at T0 + 2d: outside the window
    deliver(n, SweepStarted(sweep_id="a"), snapshot(clock), SweepFinished(sweep_id="a"))
    assert "key.disable_warning" not in [b["kind"] for b in sink.bodies]
    clock.now = T0 + timedelta(days=1, hours=1)  # 23h before: inside
    deliver(n, snapshot(clock))  # ``rotator plan`` emits snapshots outside a sweep: never a warning
    deliver(n, SweepStarted(sweep_id="d", dry_run=True), snapshot(clock), SweepFinished(sweep_id="d", dry_run=True))
    assert "key.disable_warning" not in [b["kind"] for b in sink.bodies]
    for sweep in ("b", "c"):
        clock.now += timedelta(hours=1)
        deliver(n, SweepStarted(sweep_id=sweep), snapshot(clock), SweepFinished(sweep_id=sweep))
    warnings = [b for b in sink.bodies if b["kind"] == "key.disable_warning"]
    assert len(warnings) == 1
    assert warnings[0]["key_id"] == "AKIAOLD0000000000001"
    assert warnings[0]["owner"] == "#team-payments"


def test_failures_are_counted_never_raised_and_a_full_queue_drops() -> None:
    clock, sink = Clock(), Sink(status=500)
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    events: list[Event] = []

    def emit(event: Event) -> None:
        events.append(event)
        metrics(event)

    config = NotificationSettings.model_validate({"webhook_url": "https://hooks.example/x", "queue_size": 1})
    gate = threading.Event()

    def slow(url: str, body: bytes, timeout: float) -> int:
        gate.wait(5)
        return sink(url, body, timeout)

    n = Notifier(config, clock=clock, emit=emit, webhook_post=slow, flush_at_exit=0)
    for number in range(5):
        n(KeyDeleted(**who(f"AKIAKEY{number:013d}"), reason=""))
    gate.set()
    assert n.flush(5.0)
    sent = [e for e in events if isinstance(e, NotificationSent)]
    results = sorted(e.result for e in sent)
    assert "dropped" in results
    assert "failure" in results
    assert "success" not in results
    failure = registry.get_sample_value("rotator_notifications_total", {"channel": "webhook", "result": "failure"})
    dropped = registry.get_sample_value("rotator_notifications_total", {"channel": "webhook", "result": "dropped"})
    assert failure is not None
    assert dropped is not None
    assert failure + dropped == 5


def test_the_bus_survives_a_notifier_and_nothing_is_sent_without_a_channel() -> None:
    config = NotificationSettings()
    n = Notifier(config, clock=Clock(), emit=lambda _e: None, flush_at_exit=0)
    assert not n.enabled
    bus = EventBus([n])
    bus.emit(KeyDeleted(**who(), reason=""))  # no channel: nothing built, nothing raised
    assert n.flush(0.1)


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("http://hooks.example/x", "must be an https URL"),
        ("ftp://127.0.0.1/x", "must be an https URL"),
        ("not a url", "is not a URL with a host"),
    ],
)
def test_the_webhook_must_be_https_or_loopback(url: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        NotificationSettings.model_validate({"webhook_url": url})
    assert NotificationSettings.model_validate({"webhook_url": "http://127.0.0.1:8080/x"}).webhook_url is not None


def test_the_webhook_url_is_a_credential_never_printed() -> None:
    """``check-config`` prints ``effective()``: Slack's webhook URLs carry their token."""
    from rotator.config import load_settings  # noqa: PLC0415 - only here

    url = "https://hooks.slack.com/services/T000/B000/XXXXXXXXXXXXXXXXXXXXXXXX"
    settings = load_settings(env={"ROTATOR_NOTIFICATIONS__WEBHOOK_URL": url}, default_path="/nonexistent")
    assert url not in json.dumps(settings.effective())
    assert url not in repr(settings)
    assert settings.notifications.webhook_url is not None
    assert settings.notifications.webhook_url.get_secret_value() == url
