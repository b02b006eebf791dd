"""The actors of the simulation: what each one does, in its own thread, between yield points.

* ``replica-a``/``replica-b``: daemon replicas. Each sweep is the real core (``App.sweep``: inventory,
  plan, executor, rotation), with the real lease (``rotator.lease``) when the run has a lease table.
* ``rotate``: a forced ``rotator rotate USER [--revoke]`` now and then (``App.rotate``), a new process
  each time.
* ``operator``: creates, disables and deletes its own keys, edits tags, deletes or schedules secrets
  for deletion (and restores them), creates and deletes users, pins a consumer.
* ``consumer-<user>``: signs with the secret's ``AWSCURRENT``, re-reads it every hour and on failure.
* ``pinned``: the consumer the operator pinned to one key: it never re-reads (the guard's customer).

Every actor draws its choices from its own ``random.Random`` seeded by (seed, name, incarnation):
only one actor runs at a time, so the run is a function of the seed alone.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any, cast

from rotator.app import App
from rotator.aws import Aws
from rotator.errors import RotatorError
from rotator.events import EventBus
from rotator.lease import lease_for
from rotator.model import AWSCURRENT, KeyStatus
from tests.sim.checks import ConsumerSample, secret_of

if TYPE_CHECKING:
    from tests.sim.run import Sim

Body = Callable[[], None]
HOUR = 3600.0
DAY = 24 * HOUR


class _Facade:
    """What ``App`` needs of ``rotator.aws.Aws``: the account's ports and a ``boundary.account`` slot."""

    def __init__(self, port: Any) -> None:
        self._port = port
        self.boundary = SimpleNamespace(account="")

    def __getattr__(self, name: str) -> Any:
        return getattr(self._port, name)


def make_app(sim: Sim, name: str, *, lease: bool) -> App:
    bus = EventBus([lambda event: sim.record(name, event)])
    return App(
        sim.settings(lease=lease),
        clock=sim.world.clock,
        bus=bus,
        aws=cast(Aws, _Facade(sim.world.account(name))),
        sleep=lambda seconds: sim.sched.sleep(name, seconds),
    )


def actor_rng(sim: Sim, name: str) -> random.Random:
    incarnation = sim.sched.actors[name].incarnation
    return random.Random(f"{sim.seed}:{name}:{incarnation}")  # noqa: S311 - a simulation


def replica(sim: Sim, name: str) -> Body:
    def body() -> None:
        app = make_app(sim, name, lease=sim.lease)
        interval = sim.limits.interval.total_seconds()
        # The daemon renews the lease every ttl/3 on its own job; here the replica wakes for it.
        ttl = timedelta(seconds=1.5 * interval)
        leadership = lease_for(
            app.settings, sim.world.lease_store(name), app.bus.emit, sim.world.clock, ttl=ttl, owner=name
        )
        retry = 30.0
        next_sweep = sim.world.clock.now()
        while True:
            now = sim.world.clock.now()
            if sim.lease:
                leader = leadership.try_acquire()
                if not leader or now < next_sweep:
                    wait = leadership.renew_interval.total_seconds()
                    if leader:
                        wait = min(wait, (next_sweep - now).total_seconds())
                    sim.sched.sleep(name, max(1.0, wait))
                    continue
            sim.sweep_started(name)
            report = app.sweep()
            sim.sweep_finished(name, report)
            if report.result == "failure":
                wait, retry = retry, min(retry * 2, 900.0)
            else:
                wait, retry = interval, 30.0
            next_sweep = sim.world.clock.now() + timedelta(seconds=wait)
            if not sim.lease:
                sim.sched.sleep(name, wait)

    return body


def forced_rotate(sim: Sim, name: str) -> Body:
    def body() -> None:
        rng = actor_rng(sim, name)
        while True:
            sim.sched.sleep(name, rng.uniform(0.5 * DAY, 4 * DAY))
            if sim.calm:
                continue
            users = sorted(u for u in sim.managed if u in sim.world.truth().users)
            if not users:
                continue
            user = rng.choice(users)
            revoke = rng.random() < 0.35
            app = make_app(sim, name, lease=False)  # a new `rotator rotate` process
            window = len(sim.monitor.revokes)
            if revoke:
                sim.monitor.revokes.append((user, sim.world.clock.now(), None))
            sim.note(f"{name}: rotate {user}" + (" --revoke" if revoke else ""))
            try:
                results = app.rotate([user], revoke=revoke)
            except RotatorError as exc:  # the CLI prints it and exits 1 (AWS unreachable, ...)
                sim.texts.append(str(exc))
                results = []
            finally:
                if revoke:
                    sim.monitor.revokes[window] = (user, sim.monitor.revokes[window][1], sim.world.clock.now())
            for result in results:
                if result.error:
                    sim.texts.append(result.error)

    return body


@dataclass
class Cached:
    key_id: str
    secret: str
    read_at: datetime


def _read(sim: Sim, name: str, user: str) -> Cached | None:
    try:
        text = sim.world.account(name).secret_value(secret_of(user), stage=AWSCURRENT).reveal()
    except RotatorError as exc:
        sim.texts.append(str(exc))
        return None
    try:
        document = json.loads(text)
        return Cached(str(document["AccessKeyId"]), str(document["SecretAccessKey"]), sim.world.clock.now())
    except (ValueError, KeyError, TypeError):
        return None


def consumer(sim: Sim, name: str, user: str) -> Body:
    def body() -> None:
        rng = actor_rng(sim, name)
        cached: Cached | None = None
        while True:
            sim.sched.sleep(name, rng.uniform(300.0, 2 * HOUR))
            fresh = False
            if cached is None or sim.world.clock.now() - cached.read_at > timedelta(hours=1):
                cached = _read(sim, name, user)
                fresh = True
                if cached is None:
                    continue
            for attempt in range(2):
                sim.sched.hook(name, "consumer:sign")
                ok = sim.world.sign(cached.key_id, cached.secret)
                now = sim.world.clock.now()
                sim.monitor.consumer(ConsumerSample(name, user, now, cached.key_id, cached.read_at, ok, fresh))
                if ok or attempt:
                    break
                cached = _read(sim, name, user)  # re-read on failure
                fresh = True
                if cached is None:
                    break

    return body


def pinned(sim: Sim, name: str) -> Body:
    def body() -> None:
        rng = actor_rng(sim, name)
        while True:
            sim.sched.sleep(name, rng.uniform(1200.0, HOUR))
            pin = sim.pin
            if pin is None:
                continue
            sim.sched.hook(name, "consumer:sign")
            if not sim.world.sign(pin[1].key_id, pin[1].secret):
                sim.note(f"{name}: pinned key {pin[1].key_id} of {pin[0]} stopped working")
                sim.pin = None

    return body


def operator(sim: Sim, name: str) -> Body:
    def body() -> None:  # noqa: PLR0912 - one branch per operator action
        rng = actor_rng(sim, name)
        temp = 0
        while True:
            sim.sched.sleep(name, rng.uniform(2 * HOUR, DAY))
            if sim.calm:
                continue
            world = sim.world
            truth = world.truth()
            users = sorted(u for u in sim.managed if u in truth.users)
            if not users:
                continue
            user = rng.choice(users)
            mine = [k for k in truth.users[user].keys.values() if k.creator_actor == "operator"]
            mine = [k for k in mine if k.key_id not in sim.monitor.adopted | sim.initial_keys]
            roll = rng.random()
            sim.sched.hook(name, "operator:act")
            if sim.calm:
                continue  # the calm phase began while this actor waited at its hook: calm_down tidied already
            if roll < 0.25:
                made = world.operator_create_key(user)
                sim.note(f"operator: create key for {user}: {made.key_id if made else 'refused'}")
            elif roll < 0.45 and mine:
                key = rng.choice(mine)
                if rng.random() < 0.5:
                    world.operator_set_key_status(user, key.key_id, KeyStatus.INACTIVE)
                    sim.note(f"operator: disable own key {key.key_id} of {user}")
                else:
                    world.operator_delete_key(user, key.key_id)
                    sim.note(f"operator: delete own key {key.key_id} of {user}")
            elif roll < 0.6:
                if rng.random() < 0.5:
                    world.operator_tag_user(user, {"team": f"t{rng.randrange(5)}"})
                else:
                    world.operator_untag_user(user, ["team"])
                sim.note(f"operator: edit tags of {user}")
            elif roll < 0.68:
                secret = truth.secrets.get(secret_of(user))
                if secret is not None:
                    sim.monitor.disturbed.add(user)
                    if rng.random() < 0.5:
                        world.operator_delete_secret(secret.name, recovery_days=None)
                        sim.note(f"operator: force-delete {secret.name}")
                    else:
                        world.operator_delete_secret(secret.name, recovery_days=7)
                        sim.scheduled.add(secret.name)
                        sim.note(f"operator: schedule deletion of {secret.name}")
            elif roll < 0.72 and sim.scheduled:
                restored = sorted(sim.scheduled)[0]
                world.operator_restore_secret(restored)
                sim.scheduled.discard(restored)
                sim.note(f"operator: restore {restored}")
            elif roll < 0.82:
                cached = _peek(sim, user)
                if cached is not None:
                    sim.pin = (user, cached)
                    sim.note(f"operator: pin a consumer of {user} to {cached.key_id}")
            elif roll < 0.85:
                # A key the rotator is validating, disabled by hand (it can never validate now).
                secret = truth.secrets.get(secret_of(user))
                current = _peek(sim, user)
                for key in truth.users[user].keys.values():
                    fresh = sim.world.clock.now() - key.created < sim.limits.window
                    if fresh and key.creator_actor != "operator" and (current is None or current.key_id != key.key_id):
                        world.operator_set_key_status(user, key.key_id, KeyStatus.INACTIVE)
                        sim.note(f"operator: disable {user}'s new key {key.key_id} (secret: {secret is not None})")
                        break
            elif roll < 0.9:
                temp += 1
                new = f"temp{rng.randrange(1000)}-{temp}"
                world.add_user(new)
                world.operator_create_key(new)
                sim.managed.add(new)
                sim.monitor.managed.add(new)
                sim.note(f"operator: add user {new}")
            else:
                temps = [u for u in users if u.startswith("temp")]
                if temps:
                    gone = rng.choice(temps)
                    sim.monitor.disturbed.add(gone)
                    world.delete_user(gone)
                    sim.note(f"operator: delete user {gone}")

    return body


def _peek(sim: Sim, user: str) -> Cached | None:
    """What a human reads in the console: the secret's AWSCURRENT (no faults, not counted)."""
    secret = sim.world.truth().secrets.get(secret_of(user))
    version = secret.holder(AWSCURRENT) if secret is not None and not secret.deleted else None
    if version is None:
        return None
    try:
        document = json.loads(version.value)
        return Cached(str(document["AccessKeyId"]), str(document["SecretAccessKey"]), sim.world.clock.now())
    except (ValueError, KeyError, TypeError):
        return None


def calm_down(sim: Sim) -> None:
    """The operator tidies up before the liveness checks: its own keys go, scheduled deletions are undone."""
    truth = sim.world.truth()
    for user in truth.users.values():
        for key in user.keys.values():
            if key.creator_actor == "operator" and key.key_id not in sim.monitor.adopted | sim.initial_keys:
                sim.world.operator_delete_key(user.name, key.key_id)
    for name in sorted(sim.scheduled):
        sim.world.operator_restore_secret(name)
    sim.scheduled.clear()
    sim.pin = None
