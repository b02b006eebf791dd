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

import json
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import TypedDict

from rotator.config import Settings
from rotator.errors import (
    AwsError,
    ConcurrentlyDone,
    ConflictError,
    KeyOutcomeUnknownError,
    LimitExceededError,
    NotFoundError,
    NotManagedError,
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
    KeyOwnershipUnproven,
    KeyPublished,
    KeyWithdrawn,
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
    TAG_USER,
    USER_TAG_ROTATION_KEYS,
    USER_TAG_ROTATION_STARTED,
    AccessKey,
    Action,
    EffectivePolicy,
    KeyStatus,
    NewKey,
    SecretText,
    Step,
    UserPlan,
    UserState,
    own_tag,
    version_id_for,
)
from rotator.policy import _after, decide_forced, plan_user, tag_room_problem
from rotator.ports import AccountPort
from rotator.user_policy import resolve_policy

Clock = Callable[[], datetime]


class _Context(TypedDict):
    """The context every per-user event carries."""

    account: str
    user: str
    key_id: str | None
    sweep_id: str | None


@dataclass(frozen=True)
class Failure:
    """A step (or the user's refresh, ``step`` None) that failed, with the error itself (never a string)."""

    step: Step | None
    error: Exception

    @property
    def message(self) -> str:
        if isinstance(self.error, RotatorError):
            return str(self.error)
        # A defect: its text may hold anything (a response body); the log has the traceback.
        return f"unexpected {type(self.error).__name__} (see the log)"


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
    failed: list[Failure] = field(default_factory=list)
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
        aws: AccountPort,
        inventory: Inventory,
        settings: Settings,
        emit: Callable[[Event], None],
        clock: Clock,
        *,
        sleep: Callable[[float], None] = time.sleep,
        sweep_id: str | None = None,
        stop: threading.Event | None = None,
        dry_run: bool = False,
    ) -> None:
        self.aws = aws
        self.inventory = inventory
        self.settings = settings
        self.defaults = settings.policy_defaults()
        #: Decided by the caller (``App``): plan and report, change nothing.
        self.dry_run = dry_run
        self.emit = emit
        self.clock = clock
        self.sleep = sleep
        self.sweep_id = sweep_id
        #: Set by the daemon on SIGTERM: no new step starts, the one in flight finishes.
        self.stop = stop
        #: The key this executor published last (``--revoke`` disables against it, not the stale state).
        self._published_key: str | None = None

    # -- entry points ----------------------------------------------------------------------------

    def run_user(self, user: str, budget: Budget) -> UserOutcome:
        """Refresh ``user``, plan again, act on that plan. Never raises for a per-user problem."""
        outcome = UserOutcome(user=user, account=self.inventory.account)
        if self.stop is not None and self.stop.is_set():
            outcome.interrupted = True
            return outcome
        try:
            state = self.inventory.refresh(user)
        except RotatorError as exc:
            outcome.failed.append(Failure(None, exc))
            self._failed(user, None, Action.SKIP, exc)
            return outcome
        if state is None:
            note = self._note(user, "user no longer exists or is no longer managed")
            outcome.skipped.append(note)
            self.emit(ActionSkipped(**self._ctx(note), action=note.action, reason=note.reason))
            return outcome
        now = self.clock()
        plan = plan_user(state, self.defaults, now)
        self._repair(state, plan, now)
        self._execute(state, plan, budget, outcome)
        return outcome

    def rotate_forced(self, user: str, *, revoke: bool) -> UserOutcome:
        """``rotator rotate USER [--revoke]``: rotate now whatever the key's age."""
        outcome = UserOutcome(user=user, account=self.inventory.account)
        state = self.inventory.refresh(user)
        if state is None:
            raise NotManagedError(user, "not a managed user (missing, outside the selection or excluded)")
        now = self.clock()
        plan = decide_forced(state, resolve_policy(self.defaults, state.tags, state.user), now, revoke=revoke)
        self._repair(state, plan, now)
        self._execute(state, plan, Budget(None), outcome, revoke=revoke)
        return outcome

    # -- the loop over one user's steps -----------------------------------------------------

    def _execute(
        self,
        state: UserState,
        plan: UserPlan,
        budget: Budget,
        outcome: UserOutcome,
        *,
        revoke: bool = False,
    ) -> None:
        for step in plan.steps:
            if step.action is Action.SKIP:
                record_skip(step, outcome, self.emit, self.sweep_id)
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
            if self.dry_run:
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
                state = self._apply(state, plan, step)
            except ConcurrentlyDone as exc:
                self._skip(outcome.skipped, step, str(exc))
                return
            except RotatorError as exc:
                outcome.failed.append(Failure(step, exc))
                self._failed(state.user, exc.key_id or step.key_id, step.action, exc)
                return  # later steps of this user depend on this one
            outcome.done.append(step)
            if revoke and step.action is Action.ROTATE and step.key_id is not None:
                self._revoke(state, step, outcome)

    def _revoke(self, state: UserState, rotated: Step, outcome: UserOutcome) -> None:
        """``rotate --revoke``: the key that was current until now is disabled at once."""
        replaced = state.key(rotated.key_id)
        if replaced is None or not replaced.active:
            return  # nothing to disable: the outcome shows no disable step
        step = Step(state.account, state.user, Action.DISABLE, replaced.key_id, "forced rotation with --revoke")
        try:
            self._disable(state, replaced.key_id, step.reason, loud=True, current=self._published_key)
        except RotatorError as exc:
            outcome.failed.append(Failure(step, exc))
            self._failed(state.user, step.key_id, step.action, exc)
            return
        outcome.done.append(step)

    def _apply(self, state: UserState, plan: UserPlan, step: Step) -> UserState:
        if step.action is Action.ROTATE:
            if step.resume:
                self._resume(state, plan, step)
            else:
                self._rotate(state, plan, step)
            return state
        assert step.key_id is not None
        if step.action is Action.DISABLE:
            self._disable(state, step.key_id, step.reason, loud=step.loud)
        elif step.action is Action.DELETE:
            self._delete(state, step.key_id)
            self.emit(KeyDeleted(**self._ctx(step), reason=step.reason))
            if state.secret.exists and step.key_id == plan.roles.previous_id:
                # Recorded after the fact; a crash in between only costs a stale plan line.
                self.aws.tag_secret(state.secret.name, {TAG_DELETED_KEY: step.key_id})
        elif step.action is Action.CLEANUP:
            if step.key_id == state.secret.key_in(AWSPENDING):
                # An abandoned rotation: its version loses the label first, so nobody resumes it.
                self.aws.move_stage(state.secret.name, AWSPENDING, from_version=version_id_for(step.key_id))
            self._delete(state, step.key_id)
            self.emit(OrphanDeleted(**self._ctx(step), reason=step.reason))
            self._untag(state, [own_tag(step.key_id), USER_TAG_ROTATION_STARTED, USER_TAG_ROTATION_KEYS])
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
        """Intent mark, CreateAccessKey, ownership record: the three calls that make a key ours.

        The intent mark proves nothing (docs/design.md, "Ownership"); it only lets a key whose record
        was never written (a crash or a lost answer in between) be found again and settled from
        CloudTrail. The record ``rotator:own:<key id>`` is the proof, written the moment the id is known.
        """
        no_room = tag_room_problem(state)
        if no_room is not None:  # the policy says so first; this is defence in depth
            raise UserError(state.user, no_room)
        existing = " ".join(sorted(k.key_id for k in state.keys))
        intent = {USER_TAG_ROTATION_STARTED: _iso(self.clock()), USER_TAG_ROTATION_KEYS: existing}
        try:
            self.aws.tag_user(state.user, intent)
        except LimitExceededError as exc:
            raise UserError(state.user, f"cannot write the rotation mark: {exc}") from exc
        try:
            key = self.aws.create_access_key(state.user)
        except AwsError as exc:
            if exc.maybe_acted:
                # A key may exist whose id we never learnt: the intent mark stays so that it is found,
                # reported and settled from CloudTrail (never deleted on a guess).
                raise KeyOutcomeUnknownError(
                    f"{state.user}: CreateAccessKey failed after AWS may have acted ({exc.code or type(exc).__name__});"
                    " a key it created would be unrecorded: left alone until CloudTrail proves its creator",
                    service="iam",
                    operation="CreateAccessKey",
                    maybe_acted=True,
                ) from None
            # AWS did not act: the mark must not outlive the attempt (it proves nothing about later keys).
            self._untag(state, list(intent))
            if isinstance(exc, LimitExceededError):
                raise ConcurrentlyDone(
                    f"{state.user}: key limit reached: another key appeared since the re-read; not rotated"
                ) from exc
            raise
        self.emit(KeyCreated(account=state.account, user=state.user, key_id=key.key_id, sweep_id=self.sweep_id))
        try:
            self.aws.tag_user(state.user, {own_tag(key.key_id): _iso(key.created)})
        except AwsError as exc:
            self._withdraw(state, key.key_id, "its ownership record could not be written")
            error = AwsError(f"{state.user}: could not record new key {key.key_id}, withdrawn: {exc}")
            error.key_id = key.key_id
            raise error from None
        return key

    def _withdraw(self, state: UserState, key_id: str, why: str) -> None:
        """Delete a new key of this run that cannot be stored (it is ours: we hold its id from IAM)."""
        try:
            self.aws.delete_access_key(state.user, key_id)
        except NotFoundError:
            pass
        except AwsError:
            return  # its ownership record stays: the first sweep after the in-flight window cleans it
        self.emit(
            KeyWithdrawn(account=state.account, user=state.user, key_id=key_id, sweep_id=self.sweep_id, reason=why)
        )
        # The attempt is over: neither its record nor its intent mark may speak for keys created later.
        self._untag(state, [own_tag(key_id), USER_TAG_ROTATION_STARTED, USER_TAG_ROTATION_KEYS])

    def _untag(self, state: UserState, tags: list[str]) -> None:
        try:
            self.aws.untag_user(state.user, tags)
        except AwsError:
            return  # a stale record of a deleted key, or a stale mark, only costs a report line

    def _stored(self, state: UserState, key: NewKey) -> bool:
        """After an ambiguous write: does the secret hold ``key`` (in any version) now?"""
        summary = self.aws.describe_secret(state.secret.name)
        return summary is not None and version_id_for(key.key_id) in summary.versions

    def _rotate(self, state: UserState, plan: UserPlan, step: Step) -> None:
        policy = _resolved(plan)
        replaced = plan.roles.current if state.secret.exists else state.key(step.key_id)
        key = self._start(state)
        document = credential_document(state.user, key)
        version = version_id_for(key.key_id)
        deadline = _after(key.created, policy.validation_timeout)
        try:
            if not state.secret.exists:
                try:
                    self._validate(state, key, deadline)
                except RotatorError:
                    self._withdraw(state, key.key_id, "it did not validate in time")
                    raise
                self._check_deadline(state, key, deadline)
                self._create_secret(state, key, document, version, replaced)
                self._published(state, key.key_id, replaced, resumed=False)
            else:
                self._check_deadline(state, key, deadline)
                self._put_pending(state, key, document, version)
                try:
                    self._validate(state, key, deadline)
                    self._check_deadline(state, key, deadline)
                except RotatorError:
                    self._abandon(state, key.key_id, version)
                    raise
                self._publish(state, version, key, replaced, resumed=False)
        except RotatorError as exc:
            exc.key_id = exc.key_id or key.key_id
            raise
        self._published_key = key.key_id

    def _create_secret(
        self, state: UserState, key: NewKey, document: SecretText, version: str, replaced: AccessKey | None
    ) -> None:
        tags = dict(self.settings.secrets.tags)
        tags.update(
            {
                TAG_MANAGED: "true",
                TAG_USER: state.user,
                TAG_CURRENT_KEY: key.key_id,
                TAG_CURRENT_CREATED: _iso(key.created),
            }
        )
        if replaced is not None:
            tags.update({TAG_PREVIOUS_KEY: replaced.key_id, TAG_PREVIOUS_CREATED: _iso(replaced.created)})
        try:
            self.aws.create_secret(
                state.secret.name,
                document,
                version,
                tags=tags,
                kms_key_id=self.settings.secrets.kms_key_id,
                replica_regions=list(self.settings.secrets.replica_regions),
                description=f"IAM access key of {state.user}, rotated by iam-key-rotator",
            )
        except AwsError as exc:
            if not (exc.maybe_acted or isinstance(exc, ConflictError)):
                self._withdraw(state, key.key_id, "the secret could not be created")
                raise
            # A lost answer (our secret exists) or a concurrent bootstrap (theirs does): look.
            summary = self.aws.describe_secret(state.secret.name)
            current = next((v for v, s in (summary.versions if summary else {}).items() if AWSCURRENT in s), None)
            if current == version:
                return  # our own CreateSecret went through; its answer was lost
            if summary is None and not isinstance(exc, ConflictError):
                self._withdraw(state, key.key_id, "the secret could not be created")
                raise
            self._withdraw(state, key.key_id, "another run created the secret first")
            raise ConcurrentlyDone(
                f"{state.user}: another run created secret {state.secret.name} first; new key {key.key_id} withdrawn"
            ) from None

    def _put_pending(self, state: UserState, key: NewKey, document: SecretText, version: str) -> None:
        try:
            self.aws.put_secret_value(state.secret.name, document, version, [AWSPENDING])
        except AwsError as exc:
            # Never simply repeated: moto moves AWSCURRENT on a repeated token, and a lost answer may
            # mean it is stored. Stored -> carry on; not stored -> the key is withdrawn at once.
            if exc.maybe_acted and self._stored(state, key):
                return
            self._withdraw(state, key.key_id, "its secret version could not be written")
            raise

    def _resume(self, state: UserState, plan: UserPlan, step: Step) -> None:
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
        self._validate(state, key, _after(self.clock(), _resolved(plan).validation_timeout))
        replaced = plan.roles.current
        self._publish(state, version, key, replaced, resumed=True)

    def _publish(
        self, state: UserState, version: str, key: NewKey, replaced: AccessKey | None, *, resumed: bool
    ) -> None:
        old_version = state.secret.version_with(AWSCURRENT)
        moved = self.aws.move_stage(state.secret.name, AWSCURRENT, to_version=version, from_version=old_version)
        if not moved and resumed:
            # Two runs resuming the same pending key: the other moved AWSCURRENT first. The goal
            # holds and the publication is the other's (reported once, by it).
            raise ConcurrentlyDone(f"{state.user}: a concurrent run published {key.key_id}")
        # (Not moved on a fresh rotation: our own move went through and its answer was lost - nobody
        # else publishes a key of ours within its validation_timeout - so the publication is ours.)
        # The secret holds the key now: its ownership record must not outlive that (were the secret
        # purged, a stale record would condemn the published key as an orphan). A crash right here
        # leaves it for the next sweep's repair.
        self._finish(state, key.key_id)
        # A concurrent run's repair may remove AWSPENDING first (it saw what a crash here leaves):
        # move_stage then reports the goal as already met, and the publication is finished anyway.
        self.aws.move_stage(state.secret.name, AWSPENDING, from_version=version)
        tags = {TAG_USER: state.user, TAG_CURRENT_KEY: key.key_id, TAG_CURRENT_CREATED: _iso(key.created)}
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

    def _published(self, state: UserState, key_id: str, replaced: AccessKey | None, *, resumed: bool) -> None:
        self._finish(state, key_id)  # first: the secret holds the key now (see _publish)
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

    def _finish(self, state: UserState, key_id: str) -> None:
        # The secret now holds the key: its ownership record and the intent mark have done their work.
        self._untag(state, [own_tag(key_id), USER_TAG_ROTATION_STARTED, USER_TAG_ROTATION_KEYS])

    def _abandon(self, state: UserState, key_id: str, version: str) -> None:
        """A new key that never validated: unlabel its version and delete it (best effort)."""
        try:
            self.aws.move_stage(state.secret.name, AWSPENDING, from_version=version)
        except AwsError:
            return  # what is left is an orphan: the first sweep after the in-flight window cleans it
        self._withdraw(state, key_id, "it did not validate in time")

    def _check_deadline(self, state: UserState, key: NewKey, deadline: datetime) -> None:
        """Past ``validation_timeout`` another run may treat our key as an orphan: stop."""
        if self.clock() > deadline:
            if state.secret.exists:
                self._abandon(state, key.key_id, version_id_for(key.key_id))
            else:
                self._withdraw(state, key.key_id, "it overran aws.validation_timeout")
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

    def _repair(self, state: UserState, plan: UserPlan, now: datetime) -> None:
        if self.dry_run:
            return
        needed = plan.repairs
        try:
            if needed.published_key is not None:
                tags = {TAG_CURRENT_KEY: needed.published_key, TAG_PUBLISHED_AT: _iso(now)}
                # Also the ids and creation dates the interrupted publication never wrote: left stale,
                # the inventory's credential-report fast path pairs report slots with key ids by
                # these dates and would lend the new key the old key's age.
                roles = plan.roles
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
            if needed.stale_user_tags:
                self.aws.untag_user(state.user, list(needed.stale_user_tags))
                self.emit(
                    RecordRepaired(
                        account=state.account, user=state.user, key_id=None, record="stale rotation tags removed"
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
        into.append(replace(step, reason=reason))
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


def _resolved(plan: UserPlan) -> EffectivePolicy:
    """The plan's policy; a plan with steps to carry out always has one (else it is one problem skip)."""
    assert plan.policy is not None, plan
    return plan.policy


def record_skip(step: Step, outcome: UserOutcome, emit: Callable[[Event], None], sweep_id: str | None) -> None:
    """A planned ``skip``: a per-user problem fails the user (I10); an unproven key is reported loudly."""
    who: _Context = {"account": step.account, "user": step.user, "key_id": step.key_id, "sweep_id": sweep_id}
    if step.unproven:
        emit(KeyOwnershipUnproven(**who, reason=step.reason))
    if step.problem:
        outcome.failed.append(Failure(step, UserError(step.user, step.reason)))
        emit(ActionFailed(**who, action=step.action, error=step.reason, error_type="UserError"))
    else:
        outcome.skipped.append(step)
        emit(ActionSkipped(**who, action=step.action, reason=step.reason))


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
            outcome.failed.append(Failure(None, exc))
            executor._failed(user, None, Action.SKIP, exc)
            return outcome

    with ThreadPoolExecutor(max_workers=max(1, min(workers, len(users)))) as pool:
        return list(pool.map(one, users))
