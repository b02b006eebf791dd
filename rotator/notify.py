"""Notifications to key owners and the security team: a subscriber of the event bus, like metrics and logs.

::

    core --events--> Notifier(event) --(build, route, de-duplicate)--> one bounded queue per channel
                                                                          |  (a background thread each)
                                                          SnsPort.publish / post_json (webhook), with timeouts

The sweep only ever enqueues (``put_nowait``): a slow or hanging webhook fills its own queue, whose
overflow is dropped and counted, and never stalls a sweep or a rotation. Every delivery is counted
(``rotator_notifications_total{channel,result}`` through :class:`~rotator.events.NotificationSent`) and a
failure is logged (``notification.failed``), never retried in a loop and never raised.

**No secret in a notification, by construction.** A :class:`Notification` holds identifiers only (account,
user, key ids, policy names, an error's *type*), instants and the owner tag's value; it has no free-text
field, and :func:`notifications_for` copies no event's free text (``reason``, ``error``, ``summary``) into
it. The message is rendered from fixed templates over those fields. (Secret material is never an event
field to begin with; this makes a second wall that needs no filter.)

**De-duplication** (time is injected): each notification has a key; the same key is sent again only after
``notifications.repeat_after`` (a key still held, a sweep still failing), and warnings of a scheduled
disable and foreign keys once per key. The memory of what was sent lives in the process: a restarted
daemon may send a pending warning once more.
"""

from __future__ import annotations

import atexit
import json
import queue
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from rotator.config_sections import NotificationSettings
from rotator.events import (
    ActionFailed,
    Event,
    InventorySnapshot,
    KeyDeleted,
    KeyDisabled,
    KeyHeld,
    KeyPublished,
    NotificationFailed,
    NotificationSent,
    QuarantineResponded,
    SweepFinished,
    SweepStarted,
)
from rotator.model import Action
from rotator.ports import SnsPort

Clock = Callable[[], datetime]
#: POST ``body`` (JSON) to ``url`` within ``timeout`` seconds; returns the HTTP status or raises ``OSError``.
WebhookPost = Callable[[str, bytes, float], int]

#: Every kind of notification, with the sentence its message starts with.
KINDS: dict[str, str] = {
    "rotation.published": "A new access key was published",
    "key.disabled": "The previous access key was disabled",
    "key.deleted": "The previous access key was deleted",
    "key.held": "The previous access key is held active: a consumer still uses it",
    "key.released": "The previous access key, held while in use, is no longer used and was disabled",
    "key.max_hold": "The previous access key was still in use but held past max_hold: disabled anyway",
    "key.disable_warning": "The previous access key will be disabled soon: move its consumers to the new key",
    "key.quarantine_response": "AWS quarantined this user (an access key was found in public)",
    "rotation.failed": "A rotation failed",
    "sweep.failed": "A sweep failed",
    "key.foreign": "A key the rotator did not create was found (left alone)",
}

#: Kinds sent once per key, whatever ``repeat_after`` says.
_ONCE = frozenset({"key.disable_warning", "key.foreign"})
_PHASES = frozenset({"started", "revoked", "reported"})
_PHASE_TEXT = {
    "started": "the exposed keys are being replaced now",
    "revoked": "the new key is published and the exposed key disabled; it is deleted after retention. "
    "Review the user's activity (CloudTrail), then detach the quarantine policy",
    "reported": "response.quarantine=report: nothing was changed; rotate with 'rotator rotate USER --revoke'",
}


@dataclass(frozen=True)
class Notification:
    """One message, made of identifiers and instants only (see the module docstring)."""

    kind: str
    account: str
    user: str
    at: datetime
    key_id: str | None = None
    #: The key that replaced ``key_id`` (published, quarantine response).
    new_key_id: str | None = None
    #: The value of the user's owner tag (an address or a channel), where known.
    owner: str | None = None
    due_at: datetime | None = None
    last_used: datetime | None = None
    last_used_service: str | None = None
    last_used_region: str | None = None
    #: AWS's quarantine policies attached (names), and the response's phase.
    policies: tuple[str, ...] = ()
    phase: str | None = None
    #: The failed step's error *class* (``ValidationTimeoutError``), never its message.
    error_type: str | None = None
    sweep_id: str | None = None

    @property
    def dedup_key(self) -> tuple[str, ...]:
        return (self.kind, self.account, self.user, self.key_id or "", self.phase or "")

    def text(self) -> str:
        """For people: the kind's sentence, then the facts."""
        parts = [f"{KINDS[self.kind]}."]
        if self.user:
            parts.append(f"User {self.user} in account {self.account}.")
        if self.key_id:
            parts.append(f"Key {self.key_id}.")
        if self.new_key_id:
            parts.append(f"New key {self.new_key_id}.")
        if self.policies:
            parts.append(f"Quarantine policies: {', '.join(self.policies)}.")
        if self.phase:
            parts.append(f"Response: {_PHASE_TEXT[self.phase]}.")
        if self.due_at:
            parts.append(f"Due {self.due_at.isoformat()}.")
        if self.last_used:
            where = " ".join(x for x in (self.last_used_service, self.last_used_region) if x)
            parts.append(f"Last used {self.last_used.isoformat()}" + (f" ({where})." if where else "."))
        if self.error_type:
            parts.append(f"Error: {self.error_type} (details in the rotator's log).")
        if self.owner:
            parts.append(f"Owner: {self.owner}.")
        return " ".join(parts)

    def body(self) -> dict[str, object]:
        """The JSON document both channels carry; ``text`` makes it a Slack incoming-webhook message."""
        fields: dict[str, object] = {"text": self.text(), "kind": self.kind}
        for name in (
            "account",
            "user",
            "key_id",
            "new_key_id",
            "owner",
            "phase",
            "error_type",
            "sweep_id",
            "last_used_service",
            "last_used_region",
        ):
            value = getattr(self, name)
            if value:
                fields[name] = value
        for name in ("at", "due_at", "last_used"):
            instant = getattr(self, name)
            if instant is not None:
                fields[name] = instant.isoformat()
        if self.policies:
            fields["policies"] = list(self.policies)
        return fields

    @property
    def subject(self) -> str:
        who = f" for {self.user}" if self.user else ""
        return f"iam-key-rotator: {self.kind}{who}"


def post_json(url: str, body: bytes, timeout: float) -> int:
    """The webhook's transport: one HTTP POST with a timeout (stdlib; urllib follows no redirect for POST)."""
    request = urllib.request.Request(  # noqa: S310 - the scheme is checked by the configuration (https/loopback)
        url, data=body, method="POST", headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=timeout) as answer:  # noqa: S310 - see above
        return int(answer.status)


class _Channel:
    """One destination with its own bounded queue and delivery thread."""

    def __init__(self, name: str, send: Callable[[Notification], None], size: int, emit: Callable[[Event], None]):
        self.name = name
        self.send = send
        self.queue: queue.Queue[Notification | None] = queue.Queue(maxsize=size)
        self.emit = emit
        self.thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def offer(self, notification: Notification) -> None:
        self._start()
        try:
            self.queue.put_nowait(notification)
        except queue.Full:
            self.emit(NotificationFailed(channel=self.name, result="dropped", kind=notification.kind))

    def _start(self) -> None:
        with self._lock:
            if self.thread is None:
                self.thread = threading.Thread(target=self._run, name=f"notify-{self.name}", daemon=True)
                self.thread.start()

    def _run(self) -> None:
        while True:
            item = self.queue.get()
            try:
                if item is None:
                    return
                self._deliver(item)
            finally:
                self.queue.task_done()

    def _deliver(self, notification: Notification) -> None:
        try:
            self.send(notification)
        except Exception as exc:  # any failure of a channel is counted and logged, never raised into the core
            self.emit(
                NotificationFailed(
                    channel=self.name, result="failure", kind=notification.kind, error_type=type(exc).__name__
                )
            )
            return
        self.emit(NotificationSent(channel=self.name, result="success", kind=notification.kind))

    def drain(self, deadline: float) -> bool:
        """Wait until the queue is empty or ``deadline`` (monotonic) passes; True when it emptied."""
        while self.queue.unfinished_tasks:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.01)
        return True


class Notifier:
    """Subscribe it to the event bus; it builds, routes, de-duplicates and hands notifications to channels."""

    def __init__(
        self,
        settings: NotificationSettings,
        *,
        clock: Clock,
        emit: Callable[[Event], None],
        sns: SnsPort | None = None,
        webhook_post: WebhookPost = post_json,
        flush_at_exit: float = 10.0,
    ) -> None:
        self.settings = settings
        self.clock = clock
        self.emit = emit
        self.channels: list[_Channel] = []
        if settings.sns_topic_arn and sns is not None:
            topic = settings.sns_topic_arn

            def to_sns(n: Notification) -> None:
                attributes = {"kind": n.kind, "account": n.account, "user": n.user, "owner": n.owner or ""}
                sns.publish(topic, n.subject, json.dumps(n.body()), attributes)

            self.channels.append(_Channel("sns", to_sns, settings.queue_size, emit))
        if settings.webhook_url is not None:
            url = settings.webhook_url.get_secret_value()
            timeout = settings.timeout.total_seconds()

            def to_webhook(n: Notification) -> None:
                status = webhook_post(url, json.dumps(n.body()).encode(), timeout)
                if not 200 <= status < 300:
                    raise WebhookRejectedError(status)

            self.channels.append(_Channel("webhook", to_webhook, settings.queue_size, emit))
        self._lock = threading.Lock()
        self._sent: dict[tuple[str, ...], datetime] = {}
        self._owners: dict[tuple[str, str], str] = {}
        self._held: set[tuple[str, str, str]] = set()
        #: Inside a sweep that may act (not dry-run): only then do inventory snapshots warn (``plan`` never does).
        self._sweeping = False
        if self.channels and flush_at_exit > 0:
            atexit.register(self.flush, flush_at_exit)

    @property
    def enabled(self) -> bool:
        return bool(self.channels)

    def __call__(self, event: Event) -> None:
        if not self.channels or isinstance(event, NotificationSent):
            return
        for notification in self.notifications_for(event):
            if self._fresh(notification):
                for channel in self.channels:
                    channel.offer(notification)

    def flush(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for every queued notification to be delivered (or fail)."""
        deadline = time.monotonic() + timeout
        return all(channel.drain(deadline) for channel in self.channels)

    # -- building ----------------------------------------------------------------------------------------

    def notifications_for(self, event: Event) -> list[Notification]:
        """The notifications ``event`` calls for, before de-duplication."""
        handler = self._handlers.get(type(event))
        return handler(event, self.clock()) if handler is not None else []

    @property
    def _handlers(self) -> dict[type[Event], Callable[[Any, datetime], list[Notification]]]:
        return {
            SweepStarted: self._sweep_started,
            SweepFinished: self._sweep_finished,
            InventorySnapshot: self._from_snapshot,
            KeyPublished: self._published,
            KeyHeld: self._held_key,
            KeyDisabled: self._disabled,
            KeyDeleted: self._deleted,
            QuarantineResponded: self._quarantine,
            ActionFailed: self._failed,
        }

    def _sweep_started(self, event: SweepStarted, _now: datetime) -> list[Notification]:
        self._sweeping = not event.dry_run
        return []

    def _sweep_finished(self, event: SweepFinished, now: datetime) -> list[Notification]:
        self._sweeping = False
        if event.result != "failure":
            return []
        return [Notification("sweep.failed", "", "", now, sweep_id=event.sweep_id)]

    def _published(self, event: KeyPublished, now: datetime) -> list[Notification]:
        return [self._note("rotation.published", event, now, event.previous_key_id, new=event.key_id)]

    def _held_key(self, event: KeyHeld, now: datetime) -> list[Notification]:
        with self._lock:
            self._held.add((event.account, event.user, event.key_id or ""))
        note = self._note("key.held", event, now, event.key_id)
        return [
            _with(
                note,
                last_used=event.last_used,
                last_used_service=event.last_used_service,
                last_used_region=event.last_used_region,
            )
        ]

    def _deleted(self, event: KeyDeleted, now: datetime) -> list[Notification]:
        return [self._note("key.deleted", event, now, event.key_id)]

    def _quarantine(self, event: QuarantineResponded, now: datetime) -> list[Notification]:
        phase = event.phase if event.phase in _PHASES else None
        note = self._note("key.quarantine_response", event, now, event.key_id, new=event.new_key_id)
        return [_with(note, policies=tuple(event.policies), phase=phase)]

    def _failed(self, event: ActionFailed, now: datetime) -> list[Notification]:
        if event.action is not Action.ROTATE or not event.user:
            return []
        note = self._note("rotation.failed", event, now, event.key_id)
        return [_with(note, error_type=_class_name(event.error_type))]

    def _disabled(self, event: KeyDisabled, now: datetime) -> list[Notification]:
        if event.cause == "quarantine":
            return []  # the quarantine response's own notification says so
        with self._lock:
            held = (event.account, event.user, event.key_id or "")
            was_held = held in self._held
            self._held.discard(held)
            self._sent.pop(("key.held", *held, ""), None)
        if event.cause == "max_hold":
            kind = "key.max_hold"
        elif was_held:
            kind = "key.released"
        else:
            kind = "key.disabled"
        return [self._note(kind, event, now, event.key_id)]

    def _from_snapshot(self, event: InventorySnapshot, now: datetime) -> list[Notification]:
        tag = self.settings.owner_tag
        with self._lock:
            for state in event.states:
                owner = state.tags.get(tag)
                if owner:
                    self._owners[(event.account, state.user)] = owner
                else:
                    self._owners.pop((event.account, state.user), None)
        if not self._sweeping:
            return []
        out: list[Notification] = []
        horizon = now + self.settings.warn_before
        for plan in event.plans:
            owner = self._owner(event.account, plan.user)
            for item in plan.upcoming:
                if item.action is Action.DISABLE and now < item.due_at <= horizon:
                    out.append(
                        Notification(
                            "key.disable_warning",
                            event.account,
                            plan.user,
                            now,
                            key_id=item.key_id,
                            owner=owner,
                            due_at=item.due_at,
                        )
                    )
            out.extend(
                Notification("key.foreign", event.account, plan.user, now, key_id=step.key_id, owner=owner)
                for step in plan.steps
                if step.cause == "foreign" and step.key_id is not None
            )
        return out

    def _note(
        self,
        kind: str,
        event: KeyPublished | KeyHeld | KeyDisabled | KeyDeleted | QuarantineResponded | ActionFailed,
        now: datetime,
        key_id: str | None,
        *,
        new: str | None = None,
    ) -> Notification:
        return Notification(
            kind,
            event.account,
            event.user,
            now,
            key_id=key_id,
            new_key_id=new,
            owner=self._owner(event.account, event.user),
            sweep_id=event.sweep_id,
        )

    def _owner(self, account: str, user: str) -> str | None:
        with self._lock:
            return self._owners.get((account, user))

    # -- de-duplication ------------------------------------------------------------------------------------

    def _fresh(self, notification: Notification) -> bool:
        """Whether to send ``notification`` now (and remember that it was)."""
        key = notification.dedup_key
        now = notification.at
        with self._lock:
            last = self._sent.get(key)
            if last is not None and (notification.kind in _ONCE or now - last < self.settings.repeat_after):
                return False
            self._sent[key] = now
            if len(self._sent) > 10 * self.settings.queue_size:
                self._forget(now - max(self.settings.repeat_after, timedelta(0)))
            return True

    def _forget(self, before: datetime) -> None:
        for key, sent in list(self._sent.items()):
            if sent < before and key[0] not in _ONCE:
                del self._sent[key]


class WebhookRejectedError(OSError):
    """The webhook answered with a status outside 2xx (the status only: bodies may echo anything)."""

    def __init__(self, status: int) -> None:
        super().__init__(f"webhook answered HTTP {status}")
        self.status = status


def _with(notification: Notification, **changes: object) -> Notification:
    return replace(notification, **changes)  # type: ignore[arg-type]


def _class_name(raw: str) -> str | None:
    """An error *type* is an identifier; anything else is not copied."""
    return raw if raw.isidentifier() else None
