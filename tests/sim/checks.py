"""The simulation's checks: safety after every step, liveness at quiescence.

Independent oracles only: the world's truth (who created each key, as CloudTrail records it; the true
status, secret and propagation of each key; the secret's versions and labels), the world's audit log of
every change AWS carried out and by whom, and what the checks observed step by step (when a key stopped
being ``AWSCURRENT``, when it was disabled). Nothing here calls ``rotator.policy`` or ``rotator.roles``.

Exceptions the SPEC itself makes, encoded here from the SPEC's words:

* bootstrap: the user's one pre-existing active key becomes the previous key ("grace, disable, delete
  like any other"), so a key the rotator did not create may be disabled/deleted when it was *adopted*:
  Active and present at the moment the rotator created the user's secret;
* a stray (an Inactive key nobody references) may be deleted when a rotation needs its slot;
* ``rotate --revoke`` disables the replaced key at once and deletes the older one first.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import rotator.errors
from rotator.model import AWSCURRENT, AWSPENDING, KeyStatus
from tests.sim.world import Audit, TrueKey, Truth

ROTATOR_ACTORS_PREFIXES = ("replica", "rotate")
#: Sub-second rounding: tags store ISO times, IAM whole seconds.
EPSILON = timedelta(seconds=2)


def is_rotator(actor: str) -> bool:
    return actor.startswith(ROTATOR_ACTORS_PREFIXES)


@dataclass(frozen=True)
class Violation:
    check: str
    detail: str
    at: datetime

    def __str__(self) -> str:
        return f"[{self.check}] {self.at.isoformat()} {self.detail}"


@dataclass(frozen=True)
class Limits:
    """The policy the run configured (what the checks hold the rotator to)."""

    max_key_age: timedelta
    grace_period: timedelta
    retention: timedelta
    validation_timeout: timedelta
    interval: timedelta
    report_max_age: timedelta
    #: False when aws.validation_timeout is shorter than the model's propagation delay: a rotation may then
    #: need several sweeps (a misconfiguration the SPEC does not promise liveness for), so the age bound is
    #: not checked; the key in AWSCURRENT must still work.
    age_bound: bool = True

    @property
    def window(self) -> timedelta:
        """The in-flight window (SPEC I3: twice aws.validation_timeout)."""
        return 2 * self.validation_timeout


@dataclass
class ConsumerSample:
    actor: str
    user: str
    at: datetime
    key_id: str
    read_at: datetime
    ok: bool
    fresh: bool  # signed right after reading AWSCURRENT


def secret_of(user: str) -> str:
    return f"iam-keys/{user}"


def current_key(truth: Truth, user: str) -> str | None:
    secret = truth.secrets.get(secret_of(user))
    if secret is None:
        return None
    version = secret.holder(AWSCURRENT)
    if version is None:
        return None
    return key_in(version.value)


@functools.lru_cache(maxsize=4096)
def key_in(value: str) -> str | None:
    try:
        document = json.loads(value)
        key = document["AccessKeyId"]
    except (ValueError, KeyError, TypeError):
        return None
    return key if isinstance(key, str) else None


@functools.lru_cache(maxsize=4096)
def secret_in(value: str) -> str | None:
    try:
        secret = json.loads(value)["SecretAccessKey"]
    except (ValueError, KeyError, TypeError):
        return None
    return secret if isinstance(secret, str) else None


@dataclass
class Monitor:
    """Watches the world step by step and collects violations (never raises)."""

    limits: Limits
    managed: set[str]
    unmanaged: set[str]
    violations: list[Violation] = field(default_factory=list)
    #: key id -> when it stopped being the user's AWSCURRENT (or was left out by a bootstrap).
    superseded_at: dict[str, datetime] = field(default_factory=dict)
    disabled_at: dict[str, datetime] = field(default_factory=dict)
    #: key id -> when it became its user's AWSCURRENT.
    published_at: dict[str, datetime] = field(default_factory=dict)
    #: Keys the rotator adopted at a bootstrap (SPEC: the pre-existing key becomes the previous key).
    adopted: set[str] = field(default_factory=set)
    #: Every secret access key ever issued (to find one leaked).
    issued: set[str] = field(default_factory=set)
    #: Windows (user, start) in which a ``rotate --revoke`` ran: disabling at once is its job.
    revokes: list[tuple[str, datetime, datetime | None]] = field(default_factory=list)
    #: Users the operator disturbed beyond what the rotator can repair alone (secret deleted, ...).
    disturbed: set[str] = field(default_factory=set)
    interleavings: int = 0
    #: The actor's incarnation now (a restarted process is a new one): from the scheduler.
    incarnation: Callable[[str], int] = lambda _actor: 0
    #: Set in the calm phase (no crashes, no faults): a live process must finish what it started.
    calm: bool = False
    #: How many faults the world has injected so far (the calm phase still throttles).
    faults: Callable[[], int] = lambda: 0
    #: key id -> (actor, incarnation, faults so far, created in the calm phase) of the call that created it.
    created_by: dict[str, tuple[str, int, int, bool]] = field(default_factory=dict)
    #: key id -> when its creating run's last validation attempt ended
    _last_attempt: dict[str, datetime] = field(default_factory=dict)
    _audit_seen: int = 0
    _steps: int = 0
    _current: dict[str, str | None] = field(default_factory=dict)
    _texts_seen: int = 0
    _keys: dict[str, TrueKey] = field(default_factory=dict)
    _last_writer: dict[str, tuple[str, datetime]] = field(default_factory=dict)

    def fail(self, check: str, detail: str, at: datetime) -> None:
        self.violations.append(Violation(check, detail, at))

    # -- after every step ------------------------------------------------------------------------

    def step(self, read_truth: Callable[[], Truth], audit: list[Audit], now: datetime) -> None:
        """After one step: judge the changes AWS carried out in it (nothing changed: nothing to judge, except
        in the calm phase, where time alone can make a key left behind a violation)."""
        self._steps += 1
        if len(audit) == self._audit_seen and not (self.calm and self._steps % 16 == 0):
            return
        truth = read_truth()
        previous_keys = self._keys
        keys = {k.key_id: k for u in truth.users.values() for k in u.keys.values()}
        self.issued.update(key.secret for key in keys.values())
        self._keys = keys
        new = audit[self._audit_seen :]
        self._audit_seen = len(audit)
        # Track AWSCURRENT moves first: a disable in the same step is judged against the state before it.
        for user in self.managed | set(truth.users):
            now_current = current_key(truth, user)
            before = self._current.get(user)
            if now_current != before:
                if before is None and now_current is not None and user in truth.users:
                    # A bootstrap (or a re-bootstrap): the other keys present become previous keys.
                    for other in truth.users[user].keys.values():
                        racing = is_rotator(other.creator_actor) and now - other.created < self.limits.window
                        if other.key_id != now_current and not racing:  # a racing bootstrap's key is withdrawn
                            self.superseded_at.setdefault(other.key_id, now)
                            if other.status is KeyStatus.ACTIVE:
                                self.adopted.add(other.key_id)
                if before is not None:
                    self.superseded_at.setdefault(before, now)
                self._current[user] = now_current
                if now_current is not None:
                    self.published_at[now_current] = now
                if now_current is not None and user in truth.users:
                    movers = [
                        e.actor
                        for e in new
                        if e.target == secret_of(user)
                        and e.operation.endswith(("UpdateSecretVersionStage", "CreateSecret", "PutSecretValue"))
                    ]
                    if movers:
                        self._published(user, truth.users[user].keys.get(now_current), movers[-1], now)
        for entry in new:
            self._judge(entry, truth, previous_keys, now)
        self._invariants(truth, now)
        self.unfinished(truth, now)

    def _judge(  # noqa: PLR0912 - one branch per invariant
        self, entry: Audit, truth: Truth, previous_keys: dict[str, TrueKey], now: datetime
    ) -> None:
        actor, op, key_id = entry.actor, entry.operation, entry.key_id
        if not is_rotator(actor):
            return
        user = entry.target if op.startswith("iam:") else entry.target.removeprefix("iam-keys/")
        writer = self._last_writer.get(user)
        if writer is not None and writer[0] != actor and now - writer[1] < self.limits.window:
            self.interleavings += 1
        if op.startswith(("iam:", "secretsmanager:")):
            self._last_writer[user] = (actor, now)
        if user in self.unmanaged:
            self.fail("I6", f"{actor} {op} on unmanaged user {user}", now)
        if op not in ("iam:UpdateAccessKey", "iam:DeleteAccessKey") or key_id is None:
            if op == "iam:CreateAccessKey":
                self._judge_create(entry, truth, now)
            return
        key = previous_keys.get(key_id) or truth.deleted_keys.get(key_id) or self._keys.get(key_id)
        if key is None:
            return
        deleting = op == "iam:DeleteAccessKey"
        revoking = actor.startswith("rotate") and self._revoking(key.user, now)
        # I4: never the key in AWSCURRENT.
        if key_id == current_key(truth, key.user) or key_id == self._current.get(key.user):
            self.fail("I4", f"{actor} {op} {key_id}, the AWSCURRENT key of {key.user}", now)
        # I9: never a key the rotator did not create (SPEC's bootstrap adoption and strays excepted).
        if not is_rotator(key.creator_actor) and "Rotator" not in key.creator and key_id not in self.adopted:
            stray = deleting and key.status is KeyStatus.INACTIVE
            if not stray:
                self.fail("I9", f"{actor} {op} {key_id} of {key.user}, created by {key.creator}", now)
        if deleting:
            self._judge_delete(actor, key, now, revoking)
        else:  # the rotator only ever sets Inactive
            self.disabled_at.setdefault(key_id, now)
            superseded = self.superseded_at.get(key_id)
            if not revoking:
                if superseded is None:
                    self.fail("I5", f"{actor} disabled {key_id} of {key.user}, never replaced in AWSCURRENT", now)
                elif now - superseded < self.limits.grace_period - EPSILON:
                    self.fail(
                        "I5",
                        f"{actor} disabled {key_id} of {key.user} {now - superseded} after it was replaced"
                        f" (grace_period {self.limits.grace_period})",
                        now,
                    )

    def _judge_delete(self, actor: str, key: TrueKey, now: datetime, revoking: bool) -> None:
        key_id = key.key_id
        superseded = self.superseded_at.get(key_id)
        if superseded is not None:
            disabled = self.disabled_at.get(key_id)
            if revoking or key.user in self.disturbed:
                # The operator deleted the secret (and the rotator's records in its tags): the key is a
                # stray now, which the SPEC lets a rotation delete for its slot.
                return
            if key.status is KeyStatus.ACTIVE and disabled is None:
                self.fail("I5", f"{actor} deleted {key_id} of {key.user} while Active (never disabled)", now)
            elif disabled is not None and now - disabled < self.limits.retention - EPSILON:
                self.fail(
                    "I5",
                    f"{actor} deleted {key_id} of {key.user} {now - disabled} after disabling it"
                    f" (retention {self.limits.retention})",
                    now,
                )
            return
        # Never current: an orphan or a withdrawn key. I3: never one another process is still storing.
        if key.creator_actor != actor and is_rotator(key.creator_actor) and now - key.created < self.limits.window:
            self.fail(
                "I3",
                f"{actor} deleted {key_id} of {key.user}, created {now - key.created} ago by {key.creator_actor}"
                f" (inside the in-flight window {self.limits.window})",
                now,
            )

    def validation_attempt(self, actor: str, key_id: str, now: datetime) -> None:
        """A rotation polls its new key only until ``aws.validation_timeout`` (the in-flight window assumes it)."""
        made = self.created_by.get(key_id)
        key = self._keys.get(key_id)
        if made is None or key is None or made[0] != actor or self.incarnation(actor) != made[1]:
            return  # not this run's own new key (a resume counts from the resume)
        # An attempt may end past the deadline (a slow or throttled call); polling again after one did is the bug.
        previous = self._last_attempt.get(key_id)
        self._last_attempt[key_id] = now
        if previous is not None and previous - key.created > self.limits.validation_timeout + EPSILON:
            self.fail(
                "deadline",
                f"{actor} validates {key_id} again {now - key.created} after creating it, its previous attempt "
                f"already past aws.validation_timeout ({self.limits.validation_timeout})",
                now,
            )

    def _published(self, user: str, key: TrueKey | None, publisher: str, now: datetime) -> None:
        """A key its own rotation published: it validated within ``aws.validation_timeout`` (SPEC)."""
        if key is None or key.key_id not in self.created_by:
            return
        actor, incarnation, _, _ = self.created_by[key.key_id]
        if publisher != actor or self.incarnation(actor) != incarnation or now - key.created >= self.limits.window:
            return  # resumed (by another process, or past the window): validation counts from the resume
        late = key.authenticates_from - key.created
        if late > self.limits.validation_timeout + EPSILON:
            self.fail(
                "deadline",
                f"{actor} published {key.key_id} of {user}: it authenticates only {late} after its creation,"
                f" past aws.validation_timeout {self.limits.validation_timeout}",
                now,
            )

    def bulk_view(self, views: Iterable[tuple[str, list[str]]], since: datetime, lag: timedelta, now: datetime) -> None:
        """SPEC staleness: bulk data (a credential report up to 4 h old) is trusted for a user only where nothing
        newer contradicts it. A key published (AWSCURRENT, written by the rotator: the secret's stages and tags
        are newer than the report) before the sweep's reads began, beyond the documented read lags, must be in
        the view of that user the sweep builds.
        """
        for user, key_ids in views:
            current = self._current.get(user)
            published = self.published_at.get(current or "")
            if current is None or published is None or published > since - lag:
                continue
            if current not in key_ids:
                self.fail(
                    "stale",
                    f"a sweep that began at {since.isoformat()} lists {user}'s keys as {sorted(key_ids)}, without"
                    f" {current}, published in AWSCURRENT at {published.isoformat()} (a stale bulk read trusted)",
                    now,
                )

    def unfinished(self, truth: Truth, now: datetime) -> None:
        """Calm phase: a live process abandons (deletes) a new key it could not publish, at once."""
        if not self.calm:
            return
        slack = self.limits.validation_timeout + timedelta(minutes=10)
        for user in truth.users.values():
            for key in user.keys.values():
                made = self.created_by.get(key.key_id)
                if made is None or key.key_id in self.superseded_at or key.key_id == self._current.get(user.name):
                    continue
                actor, incarnation, faults, in_calm = made
                if not in_calm or self.incarnation(actor) != incarnation or self.faults() != faults:
                    continue  # its process died (a later sweep cleans up), or a fault may excuse it
                if now - key.created > slack:
                    self.fail(
                        "abandon",
                        f"{actor} left its unpublished key {key.key_id} of {user.name} behind"
                        f" ({now - key.created} after creating it)",
                        now,
                    )
                    self.created_by.pop(key.key_id)

    def errors(self, error_types: Iterable[str], now: datetime) -> None:
        """I1 and friends: a failure is one of the rotator's errors, never a defect surfacing as a crash."""
        for name in error_types:
            cls = getattr(rotator.errors, name, None)
            if not (isinstance(cls, type) and issubclass(cls, rotator.errors.RotatorError)):
                self.fail("defect", f"a failure surfaced as {name} (not a rotator error: a crash)", now)

    def _judge_create(self, entry: Audit, truth: Truth, now: datetime) -> None:
        if entry.key_id is not None:
            self.created_by[entry.key_id] = (entry.actor, self.incarnation(entry.actor), self.faults(), self.calm)
        # I8: a rotator creates a key while another rotator key of the user is still in flight
        # (younger than the window, never AWSCURRENT, not superseded).
        user = entry.target
        found = truth.users.get(user)
        if found is None:
            return
        if all(is_rotator(k.creator_actor) and now - k.created < self.limits.window for k in found.keys.values()):
            return  # a key-less user has no due key: two bootstraps may race, CreateSecret decides (I3 then)
        for key in found.keys.values():
            if key.key_id == entry.key_id or not is_rotator(key.creator_actor):
                continue
            in_flight = now - key.created < self.limits.window and key.key_id not in self.superseded_at
            if in_flight and key.key_id != self._current.get(user):
                self.fail("I8", f"{entry.actor} created {entry.key_id} for {user} while {key.key_id} in flight", now)

    def _revoking(self, user: str, now: datetime) -> bool:
        return any(u == user and start <= now and (end is None or now <= end) for u, start, end in self.revokes)

    def _invariants(self, truth: Truth, now: datetime) -> None:
        for user in self.managed:
            found = truth.users.get(user)
            secret = truth.secrets.get(secret_of(user))
            if found is None or secret is None or secret.deleted:
                continue
            version = secret.holder(AWSCURRENT)
            if version is None:
                continue
            key_id = key_in(version.value)
            key = found.keys.get(key_id or "")
            if key is None:
                continue  # I2 at quiescence (a concurrent operator may have changed the world)
            # I2, every step: AWSCURRENT stores the SecretAccessKey IAM issued, and a key that authenticates.
            if secret_in(version.value) != key.secret:
                self.fail(
                    "I2", f"{secret.name} AWSCURRENT stores a SecretAccessKey IAM did not issue for {key_id}", now
                )
            if key.authenticates_from > now:
                self.fail("I2", f"{secret.name} AWSCURRENT holds {key_id}, which does not authenticate yet", now)

    # -- texts: events, log lines, error messages ----------------------------------------------------

    def texts(self, texts: Iterable[str], now: datetime) -> None:
        """I7: no secret access key in any of ``texts`` (events, log lines, errors)."""
        for text in texts:
            for secret in self.issued:
                if secret and secret in text:
                    self.fail("I7", f"a secret access key leaked into: {text[:120]!r}...", now)
                    return

    # -- consumers ------------------------------------------------------------------------------------

    def consumer(self, sample: ConsumerSample) -> None:
        if sample.ok or sample.user in self.disturbed:
            return
        if any(
            u == sample.user and start <= sample.at and (end is None or end >= sample.read_at)
            for u, start, end in self.revokes
        ):
            return  # a revoke since the read disables the key at once, by design
        if sample.fresh:
            self.fail(
                "consumer",
                f"{sample.actor}: fresh AWSCURRENT {sample.key_id} of {sample.user} fails to sign",
                sample.at,
            )
        elif sample.at - sample.read_at < self.limits.grace_period - EPSILON:
            self.fail(
                "consumer",
                f"{sample.actor}: {sample.key_id} of {sample.user}, read from AWSCURRENT {sample.at - sample.read_at}"
                f" ago, fails (grace_period {self.limits.grace_period})",
                sample.at,
            )

    # -- at quiescence ----------------------------------------------------------------------------------

    def quiescence(  # noqa: PLR0912 - one branch per liveness problem
        self, truth: Truth, now: datetime, reported: set[str]
    ) -> None:
        """Liveness: every managed, undisturbed user converged; no orphan outlived the window."""
        limit = self.limits.max_key_age + self.limits.interval + self.limits.report_max_age + EPSILON
        for user in sorted(self.managed):
            found = truth.users.get(user)
            if found is None:
                continue
            secret = truth.secrets.get(secret_of(user))
            problem = None
            if secret is None or secret.deleted or secret.holder(AWSCURRENT) is None:
                problem = "has no readable secret"
            else:
                version = secret.holder(AWSCURRENT)
                assert version is not None
                key = found.keys.get(key_in(version.value) or "")
                if key is None:
                    problem = "AWSCURRENT holds a key that does not exist"
                elif key.status is not KeyStatus.ACTIVE:
                    problem = f"AWSCURRENT key {key.key_id} is {key.status}"
                elif secret_in(version.value) != key.secret or key.authenticates_from > now:
                    problem = f"AWSCURRENT key {key.key_id} does not sign"
                elif now - key.created > limit and self.limits.age_bound:
                    problem = f"AWSCURRENT key {key.key_id} is {now - key.created} old (limit {limit})"
                elif secret.holder(AWSPENDING) is not None:
                    problem = "an AWSPENDING version was left behind"
            if problem is None:
                continue
            if user in self.disturbed:
                if user not in reported:
                    self.fail("I10", f"{user} {problem} and no sweep reported it", now)
                continue
            self.fail("liveness", f"{user} {problem}", now)
        for found_user in truth.users.values():
            referenced: set[str | None] = set()
            secret = truth.secrets.get(secret_of(found_user.name))
            if secret is not None:
                referenced = {key_in(v.value) for v in secret.versions.values() if v.stages}
            for key in found_user.keys.values():
                if (
                    is_rotator(key.creator_actor)
                    and key.key_id not in referenced
                    and key.key_id not in self.superseded_at
                ):
                    age = now - key.created
                    if (
                        age > self.limits.window + self.limits.interval + EPSILON
                        and found_user.name not in self.disturbed
                    ):
                        self.fail(
                            "I3", f"orphan {key.key_id} of {found_user.name} outlived the window ({age} old)", now
                        )
