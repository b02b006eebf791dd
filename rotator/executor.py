"""Carries out plans through the AWS boundary, crash-safe and safe under concurrency.

For each user with something to do, the executor re-reads the user's state (``Inventory.refresh``),
decides again with the pure policy, and acts only on that fresh decision: a stale plan never
mutates anything. ``docs/design.md`` draws the rotation's state diagram and argues I1-I8.

Rotation (secret exists)::

    tag user rotation-started -> CreateAccessKey -> PutSecretValue(AWSPENDING, token=uuid5(key))
      -> validate (sts:GetCallerIdentity signed with the new key) -> move AWSCURRENT (AWSPREVIOUS
      follows) -> remove AWSPENDING -> tag secret (current/previous ids, published-at) -> untag user

Bootstrap (no secret; a first version is always AWSCURRENT, so validate *before* storing)::

    tag user -> CreateAccessKey -> validate -> CreateSecret(token=uuid5(key), tags name the
      previous key) -> tag secret published-at -> untag user
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from typing import TypedDict

from rotator.aws import Aws, NewKey, SecretText
from rotator.config import Settings, policy_for_user
from rotator.errors import (
    AwsError,
    LimitExceededError,
    NotFoundError,
    RotatorError,
    UserError,
    ValidationTimeoutError,
)
from rotator.events import (
    ActionFailed,
    ActionSkipped,
    Event,
    KeyCreated,
    KeyDeleted,
    KeyDisabled,
    KeyHeld,
    KeyPublished,
    OrphanDeleted,
    RecordRepaired,
    ValidationAttempt,
)
from rotator.inventory import Inventory
from rotator.model import (
    AWSCURRENT,
    AWSPENDING,
    TAG_CURRENT_CREATED,
    TAG_CURRENT_KEY,
    TAG_DELETED_KEY,
    TAG_DISABLED_AT,
    TAG_DISABLED_KEY,
    TAG_MANAGED,
    TAG_PREVIOUS_CREATED,
    TAG_PREVIOUS_KEY,
    TAG_PUBLISHED_AT,
    USER_TAG_ROTATION_KEYS,
    USER_TAG_ROTATION_STARTED,
    AccessKey,
    Action,
    EffectivePolicy,
    KeyStatus,
    Step,
    UserPlan,
    UserState,
    version_id_for,
)
from rotator.policy import classify, decide, decide_forced, repairs_needed

Clock = Callable[[], datetime]


class _Context(TypedDict):
    """The context every per-user event carries."""

    account: str
    user: str
    key_id: str | None
    sweep_id: str | None


class ConcurrentlyDone(RotatorError):
    """Another run completed this very step first; nothing is left to do (not a failure)."""


class Budget:
    """``safety.max_actions_per_sweep``, shared by the worker threads of one sweep."""

    def __init__(self, limit: int | None) -> None:
        self.limit = limit
        self.used = 0
        self._lock = threading.Lock()

    def take(self) -> bool:
        with self._lock:
            if self.limit is not None and self.used >= self.limit:
                return False
            self.used += 1
            return True


@dataclass
class UserOutcome:
    user: str
    account: str
    done: list[Step] = field(default_factory=list)
    held: list[Step] = field(default_factory=list)
    skipped: list[Step] = field(default_factory=list)
    deferred: list[Step] = field(default_factory=list)
    failed: list[tuple[Step | None, str]] = field(default_factory=list)
    #: A stop request (daemon shutdown) ended this user's run at a step boundary.
    interrupted: bool = False


def credential_document(user: str, key: NewKey) -> SecretText:
    """SPEC's secret: usable directly as AWS CLI ``credential_process`` output."""
    return SecretText(
        json.dumps(
            {
                "Version": 1,
                "AccessKeyId": key.key_id,
                "SecretAccessKey": key.secret_access_key.reveal(),
                "UserName": user,
                "CreateDate": _iso(key.created),
            }
        )
    )


def _iso(value: datetime) -> str:
    return value.isoformat()


class Executor:
    """Applies the policy's decisions for the users of one account."""

    def __init__(
        self,
        aws: Aws,
        inventory: Inventory,
        settings: Settings,
        emit: Callable[[Event], None],
        clock: Clock,
        *,
        sleep: Callable[[float], None] = time.sleep,
        sweep_id: str | None = None,
        stop: threading.Event | None = None,
    ) -> None:
        self.aws = aws
        self.inventory = inventory
        self.settings = settings
        self.emit = emit
        self.clock = clock
        self.sleep = sleep
        self.sweep_id = sweep_id
        #: Set by the daemon on SIGTERM: no new step starts, the one in flight finishes.
        self.stop = stop

    # -- entry points ----------------------------------------------------------------------------

    def policy(self, state: UserState) -> EffectivePolicy:
        return policy_for_user(self.settings, state.tags, state.user)

    def run_user(self, user: str, budget: Budget) -> UserOutcome:
        """Refresh ``user``, decide again, act. Never raises for a per-user problem."""
        outcome = UserOutcome(user=user, account=self.inventory.account)
        if self.stop is not None and self.stop.is_set():
            outcome.interrupted = True
            return outcome
        try:
            state = self.inventory.refresh(user)
        except RotatorError as exc:
            outcome.failed.append((None, str(exc)))
            self._failed(user, None, Action.SKIP, exc)
            return outcome
        if state is None:
            note = self._note(user, "user no longer exists or is no longer managed")
            outcome.skipped.append(note)
            self.emit(ActionSkipped(**self._ctx(note), action=note.action, reason=note.reason))
            return outcome
        try:
            policy = self.policy(state)
        except UserError as exc:
            outcome.failed.append((None, str(exc)))
            self._failed(user, None, Action.SKIP, exc)
            return outcome
        now = self.clock()
        plan = decide(state, policy, now)
        self._repair(state, policy, plan, now)
        self._execute(state, policy, plan, budget, outcome)
        return outcome

    def rotate_forced(self, user: str, *, revoke: bool) -> UserOutcome:
        """``rotator rotate USER [--revoke]``: rotate now whatever the key's age."""
        outcome = UserOutcome(user=user, account=self.inventory.account)
        state = self.inventory.refresh(user)
        if state is None:
            raise UserError(user, "not a managed user (missing, outside the selection or excluded)")
        policy = self.policy(state)
        now = self.clock()
        plan = decide_forced(state, policy, now, revoke=revoke)
        self._repair(state, policy, plan, now)
        self._execute(state, policy, plan, Budget(None), outcome, revoke=revoke)
        return outcome

    # -- the loop over one user's steps -----------------------------------------------------

    def _execute(
        self,
        state: UserState,
        policy: EffectivePolicy,
        plan: UserPlan,
        budget: Budget,
        outcome: UserOutcome,
        *,
        revoke: bool = False,
    ) -> None:
        for step in plan.steps:
            if step.action is Action.SKIP:
                self._skip(outcome.skipped, step, step.reason)
                continue
            if step.action is Action.HOLD:
                outcome.held.append(step)
                last_used = state.key(step.key_id)
                self.emit(
                    KeyHeld(
                        **self._ctx(step),
                        reason=step.reason,
                        last_used=last_used.last_used if last_used else None,
                    )
                )
                continue
            if self.settings.safety.dry_run:
                outcome.deferred.append(step)
                continue
            if self.stop is not None and self.stop.is_set():
                outcome.interrupted = True
                outcome.deferred.append(step)
                continue
            if not budget.take():
                self._skip(outcome.deferred, step, "deferred: safety.max_actions_per_sweep reached")
                continue
            try:
                state = self._apply(state, policy, step, revoke=revoke)
            except ConcurrentlyDone as exc:
                self._skip(outcome.skipped, step, str(exc))
                return
            except LimitExceededError:
                # I1/I8: another process took the free key slot first; its rotation stands.
                self._skip(outcome.skipped, step, "key limit reached: a concurrent rotation won")
                return
            except RotatorError as exc:
                outcome.failed.append((step, str(exc)))
                self._failed(state.user, step.key_id, step.action, exc)
                return  # later steps of this user depend on this one
            outcome.done.append(step)

    def _apply(self, state: UserState, policy: EffectivePolicy, step: Step, *, revoke: bool) -> UserState:
        if step.action is Action.ROTATE:
            if step.resume:
                self._resume(state, policy, step)
            else:
                self._rotate(state, policy, step, revoke=revoke)
            return state
        assert step.key_id is not None
        if step.action is Action.DISABLE:
            self._disable(state, step.key_id, step.reason, loud=step.loud)
        elif step.action is Action.DELETE:
            self._delete(state, step.key_id)
            self.emit(KeyDeleted(**self._ctx(step), reason=step.reason))
            if state.secret.exists and step.key_id == classify(state, policy).previous_id:
                # Recorded after the fact; a crash in between only costs a stale plan line.
                self.aws.tag_secret(state.secret.name, {TAG_DELETED_KEY: step.key_id})
        elif step.action is Action.CLEANUP:
            self._delete(state, step.key_id)
            self.emit(OrphanDeleted(**self._ctx(step), reason=step.reason))
        return state

    # -- the steps --------------------------------------------------------------------------------

    def _delete(self, state: UserState, key_id: str) -> None:
        current = state.secret.key_in(AWSCURRENT)
        if key_id == current:  # I4, defence in depth: the policy never asks for this
            raise UserError(state.user, f"refusing to delete {key_id}: it is the secret's current key")
        try:
            self.aws.delete_access_key(state.user, key_id)
        except NotFoundError:
            return  # already gone (a concurrent run or an operator): the goal holds

    def _disable(self, state: UserState, key_id: str, reason: str, *, loud: bool, current: str | None = None) -> None:
        # ``current`` overrides the state's view right after this run published a new key.
        if key_id == (current or state.secret.key_in(AWSCURRENT)):  # I4, defence in depth
            raise UserError(state.user, f"refusing to disable {key_id}: it is the secret's current key")
        self.aws.set_key_status(state.user, key_id, KeyStatus.INACTIVE)
        self.emit(
            KeyDisabled(
                account=state.account,
                user=state.user,
                key_id=key_id,
                sweep_id=self.sweep_id,
                reason=reason,
                loud=loud,
            )
        )
        # Recorded after the fact: a crash in between leaves no record, and the repair then
        # records a later time, so retention can only grow (I5).
        self.aws.tag_secret(state.secret.name, {TAG_DISABLED_KEY: key_id, TAG_DISABLED_AT: _iso(self.clock())})

    def _start(self, state: UserState) -> NewKey:
        # The mark also names the keys that exist now: a key created shortly *before* the mark (an
        # operator's key for a new user, bootstrapped at once) must never pass for our orphan.
        existing = " ".join(sorted(k.key_id for k in state.keys))
        self.aws.tag_user(state.user, {USER_TAG_ROTATION_STARTED: _iso(self.clock()), USER_TAG_ROTATION_KEYS: existing})
        key = self.aws.create_access_key(state.user)
        self.emit(KeyCreated(account=state.account, user=state.user, key_id=key.key_id, sweep_id=self.sweep_id))
        return key

    def _rotate(self, state: UserState, policy: EffectivePolicy, step: Step, *, revoke: bool) -> None:
        roles = classify(state, policy)
        replaced = roles.current if state.secret.exists else state.key(step.key_id)
        key = self._start(state)
        document = credential_document(state.user, key)
        version = version_id_for(key.key_id)
        deadline = key.created + policy.validation_timeout
        if not state.secret.exists:
            self._validate(state, key, deadline)
            self._check_deadline(state, key, deadline)
            tags = dict(self.settings.secrets.tags)
            tags.update({TAG_MANAGED: "true", TAG_CURRENT_KEY: key.key_id, TAG_CURRENT_CREATED: _iso(key.created)})
            if replaced is not None:
                tags.update({TAG_PREVIOUS_KEY: replaced.key_id, TAG_PREVIOUS_CREATED: _iso(replaced.created)})
            self.aws.create_secret(
                state.secret.name,
                document,
                version,
                tags=tags,
                kms_key_id=self.settings.secrets.kms_key_id,
                replica_regions=list(self.settings.secrets.replica_regions),
                description=f"IAM access key of {state.user}, rotated by iam-key-rotator",
            )
            self._published(state, key.key_id, replaced, resumed=False)
        else:
            self._check_deadline(state, key, deadline)
            self.aws.put_secret_value(state.secret.name, document, version, [AWSPENDING])
            try:
                self._validate(state, key, deadline)
                self._check_deadline(state, key, deadline)
            except RotatorError:
                self._abandon(state, key.key_id, version)
                raise
            self._publish(state, version, key, replaced, resumed=False)
        if revoke and replaced is not None and replaced.active:
            self._disable(state, replaced.key_id, "forced rotation with --revoke", loud=True, current=key.key_id)

    def _resume(self, state: UserState, policy: EffectivePolicy, step: Step) -> None:
        """Publish a pending version another run wrote and never published (it crashed)."""
        assert step.key_id is not None
        version = version_id_for(step.key_id)
        text = self.aws.secret_value(state.secret.name, version_id=version).reveal()
        try:
            document = json.loads(text)
            pending = state.key(step.key_id)
            assert pending is not None
            key = NewKey(step.key_id, SecretText(document["SecretAccessKey"]), pending.created)
        except (ValueError, KeyError, TypeError, AssertionError) as exc:
            raise UserError(state.user, "pending secret version does not hold the rotator's document") from exc
        self._validate(state, key, self.clock() + policy.validation_timeout)
        replaced = classify(state, policy).current
        self._publish(state, version, key, replaced, resumed=True)

    def _publish(
        self, state: UserState, version: str, key: NewKey, replaced: AccessKey | None, *, resumed: bool
    ) -> None:
        old_version = state.secret.version_with(AWSCURRENT)
        if not self.aws.move_stage(state.secret.name, AWSCURRENT, to_version=version, from_version=old_version):
            # Two runs resuming the same pending key: the other moved AWSCURRENT first. The goal
            # holds and the publication is the other's (reported once, by it).
            raise ConcurrentlyDone(f"{state.user}: a concurrent run published {key.key_id}")
        # A concurrent run's repair may remove AWSPENDING first (it saw what a crash here leaves):
        # move_stage then reports the goal as already met, and the publication is finished anyway.
        self.aws.move_stage(state.secret.name, AWSPENDING, from_version=version)
        tags = {TAG_CURRENT_KEY: key.key_id, TAG_CURRENT_CREATED: _iso(key.created)}
        if replaced is not None:
            tags.update({TAG_PREVIOUS_KEY: replaced.key_id, TAG_PREVIOUS_CREATED: _iso(replaced.created)})
        # Publication time is written after the stage moved: a crash in between leaves no record and
        # the repair records a later time, so the grace period can only grow (I5).
        tags[TAG_PUBLISHED_AT] = _iso(self.clock())
        self.emit(
            KeyPublished(
                account=state.account,
                user=state.user,
                key_id=key.key_id,
                sweep_id=self.sweep_id,
                previous_key_id=replaced.key_id if replaced else None,
                secret=state.secret.name,
                resumed=resumed,
            )
        )
        self.aws.tag_secret(state.secret.name, tags)
        self._finish(state)

    def _published(self, state: UserState, key_id: str, replaced: AccessKey | None, *, resumed: bool) -> None:
        self.emit(
            KeyPublished(
                account=state.account,
                user=state.user,
                key_id=key_id,
                sweep_id=self.sweep_id,
                previous_key_id=replaced.key_id if replaced else None,
                secret=state.secret.name,
                resumed=resumed,
            )
        )
        self.aws.tag_secret(state.secret.name, {TAG_PUBLISHED_AT: _iso(self.clock())})
        self._finish(state)

    def _finish(self, state: UserState) -> None:
        try:
            self.aws.untag_user(state.user, [USER_TAG_ROTATION_STARTED, USER_TAG_ROTATION_KEYS])
        except AwsError:
            return  # a stale mark only narrows what counts as foreign; never worth failing for

    def _abandon(self, state: UserState, key_id: str, version: str) -> None:
        """A new key that never validated: unlabel its version and delete it (best effort)."""
        try:
            self.aws.move_stage(state.secret.name, AWSPENDING, from_version=version)
            self.aws.delete_access_key(state.user, key_id)
        except AwsError:
            return  # what is left is an orphan: the first sweep after the in-flight window cleans it

    def _check_deadline(self, state: UserState, key: NewKey, deadline: datetime) -> None:
        """Past ``validation_timeout`` another run may treat our key as an orphan: stop."""
        if self.clock() > deadline:
            with contextlib.suppress(AwsError):
                self.aws.delete_access_key(state.user, key.key_id)
            raise ValidationTimeoutError(
                f"{state.user}: rotation of {key.key_id} overran aws.validation_timeout; key withdrawn"
            )

    def _validate(self, state: UserState, key: NewKey, deadline: datetime) -> None:
        """Poll ``sts:GetCallerIdentity`` signed with the new key until IAM has propagated it."""
        attempt = 0
        delay = 0.5
        expected_suffix = f":user{state.path}{state.user}"
        while True:
            attempt += 1
            try:
                arn = self.aws.caller_arn_with(key)
            except AwsError as exc:
                last_error = exc.code or type(exc).__name__
            else:
                if arn.endswith(expected_suffix) or arn.endswith(f"/{state.user}"):
                    return
                last_error = "key authenticates as another principal"
            self.emit(ValidationAttempt(account=state.account, user=state.user, key_id=key.key_id, attempt=attempt))
            remaining = (deadline - self.clock()).total_seconds()
            if remaining <= 0:
                raise ValidationTimeoutError(
                    f"{state.user}: new key {key.key_id} did not authenticate within "
                    f"aws.validation_timeout ({last_error})"
                )
            self.sleep(min(delay, remaining))
            delay = min(delay * 2, 5.0)

    # -- records a crash kept from being written ----------------------------------------------

    def _repair(self, state: UserState, policy: EffectivePolicy, plan: UserPlan, now: datetime) -> None:
        if self.settings.safety.dry_run:
            return
        needed = repairs_needed(state, policy)
        try:
            if needed.published_key is not None:
                tags = {TAG_CURRENT_KEY: needed.published_key, TAG_PUBLISHED_AT: _iso(now)}
                # Also the ids and creation dates the interrupted publication never wrote: left stale,
                # the inventory's credential-report fast path pairs report slots with key ids by
                # these dates and would lend the new key the old key's age.
                roles = classify(state, policy)
                for key, id_tag, created_tag in (
                    (roles.current, TAG_CURRENT_KEY, TAG_CURRENT_CREATED),
                    (roles.previous, TAG_PREVIOUS_KEY, TAG_PREVIOUS_CREATED),
                ):
                    if key is not None:
                        tags.update({id_tag: key.key_id, created_tag: _iso(key.created)})
                self.aws.tag_secret(state.secret.name, tags)
                self.emit(
                    RecordRepaired(
                        account=state.account,
                        user=state.user,
                        key_id=needed.published_key,
                        record="published-at",
                    )
                )
            if needed.disabled_key is not None:
                self.aws.tag_secret(
                    state.secret.name, {TAG_DISABLED_KEY: needed.disabled_key, TAG_DISABLED_AT: _iso(now)}
                )
                self.emit(
                    RecordRepaired(
                        account=state.account,
                        user=state.user,
                        key_id=needed.disabled_key,
                        record="disabled-at",
                    )
                )
            current_version = state.secret.version_with(AWSCURRENT)
            if current_version and AWSPENDING in state.secret.versions.get(current_version, ()):
                # The publishing run may remove it first: move_stage treats that as done.
                self.aws.move_stage(state.secret.name, AWSPENDING, from_version=current_version)
        except AwsError as exc:
            self._failed(state.user, None, Action.SKIP, exc)

    # -- helpers --------------------------------------------------------------------------------

    def _skip(self, into: list[Step], step: Step, reason: str) -> None:
        into.append(step)
        self.emit(ActionSkipped(**self._ctx(step), action=step.action, reason=reason))

    def _ctx(self, step: Step) -> _Context:
        return {"account": step.account, "user": step.user, "key_id": step.key_id, "sweep_id": self.sweep_id}

    def _note(self, user: str, reason: str) -> Step:
        return Step(self.inventory.account, user, Action.SKIP, None, reason)

    def _failed(self, user: str, key_id: str | None, action: Action, exc: BaseException) -> None:
        self.emit(
            ActionFailed(
                account=self.inventory.account,
                user=user,
                key_id=key_id,
                sweep_id=self.sweep_id,
                action=action,
                error=str(exc),
                error_type=type(exc).__name__,
            )
        )


def run_users(
    executor_for: Callable[[], Executor], users: list[str], budget: Budget, workers: int = 8
) -> list[UserOutcome]:
    """Run users concurrently (each user's steps stay in order); the output keeps input order."""
    if not users:
        return []

    def one(user: str) -> UserOutcome:
        executor = executor_for()
        try:
            return executor.run_user(user, budget)
        except Exception as exc:  # a defect must cost one user, never the whole sweep
            logging.getLogger(__name__).error("executor.unexpected_error", exc_info=True)
            outcome = UserOutcome(user=user, account=executor.inventory.account)
            outcome.failed.append((None, f"{user}: unexpected {type(exc).__name__} (see the log)"))
            executor._failed(user, None, Action.SKIP, exc)
            return outcome

    with ThreadPoolExecutor(max_workers=max(1, min(workers, len(users)))) as pool:
        return list(pool.map(one, users))
