"""Carries out plans through the AWS boundary, crash-safe and safe under concurrency.

For each user with something to do, the executor re-reads the user's state (``Inventory.refresh``),
decides again with the pure policy, and acts only on that fresh decision: a stale plan never
mutates anything. ``docs/design.md`` draws the rotation's state diagram and argues I1-I8.

A ``rotate`` step is carried out by ``rotator.rotation.Rotation`` (the rotation's call sequence);
the executor carries out the other steps itself.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import TypedDict

from rotator.config import Settings
from rotator.durations import format_duration
from rotator.errors import (
    AwsError,
    ConcurrentlyDone,
    MutationRefusedError,
    NotFoundError,
    NotManagedError,
    RotatorError,
    UserError,
)
from rotator.events import (
    ActionFailed,
    ActionSkipped,
    Event,
    KeyDeleted,
    KeyDisabled,
    KeyHeld,
    KeyOwnershipUnproven,
    OrphanDeleted,
    QuarantineResponded,
    RecordRepaired,
)
from rotator.guard import Guard, GuardedPort
from rotator.inventory import Inventory
from rotator.model import (
    AWSCURRENT,
    AWSPENDING,
    MARK_CLEARED,
    TAG_CURRENT_CREATED,
    TAG_CURRENT_KEY,
    TAG_DELETED_KEY,
    TAG_DISABLED_AT,
    TAG_DISABLED_KEY,
    TAG_PREVIOUS_CREATED,
    TAG_PREVIOUS_KEY,
    TAG_PUBLISHED_AT,
    TAG_QUARANTINE_AT,
    TAG_QUARANTINE_KEYS,
    TAG_QUARANTINE_POLICIES,
    Action,
    KeyStatus,
    QuarantineMode,
    Step,
    UserPlan,
    UserState,
    own_tag,
    version_id_for,
)
from rotator.policy import decide_forced, plan_user
from rotator.ports import AccountPort
from rotator.render import last_use_phrase, when
from rotator.rotation import Rotation, credential_document, iso
from rotator.user_policy import resolve_policy

# ``credential_document`` lives in ``rotator.rotation``; it stays importable from here.
__all__ = [
    "Budget",
    "Clock",
    "Executor",
    "Failure",
    "UserOutcome",
    "credential_document",
    "record_skip",
    "run_users",
]

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

    def reason(self, user: str) -> str:
        """:attr:`message` for a line that names ``user`` already (never ``app: ... app: ...``)."""
        if isinstance(self.error, UserError):
            return self.error.reason
        return self.message.removeprefix(f"{user}: ")


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
        guard: Guard | None = None,
    ) -> None:
        #: Every mutating call asks ``guard`` first (fencing, AWS's clock: rotator.guard); None: no guard.
        self.aws: AccountPort = aws if guard is None else GuardedPort(aws, guard)
        self.inventory = inventory
        self.settings = settings
        self.defaults = settings.policy_defaults()
        #: Decided by the caller (``App``): plan and report, change nothing.
        self.dry_run = dry_run
        self.emit = emit
        self.clock = clock
        self.sweep_id = sweep_id
        #: Carries out ``rotate`` steps (the rotation protocol) with the same collaborators.
        self.rotation = Rotation(self.aws, settings, emit, clock, sleep=sleep, sweep_id=sweep_id, recorder=aws)
        #: Set by the daemon on SIGTERM: no new step starts, the one in flight finishes.
        self.stop = stop
        #: Users whose quarantine record this executor wrote (once per plan).
        self._quarantine_recorded: set[str] = set()
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
        try:
            self._repair(state, plan, now)
        except MutationRefusedError as exc:  # fenced (or no AWS clock): nothing more for this user
            outcome.failed.append(Failure(None, exc))
            self._failed(user, None, Action.SKIP, exc)
            return outcome
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
                self._held(state, plan, step)
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
                if step.cause == "quarantine":
                    self._record_quarantine(state, plan)
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
            elif step.action is Action.ROTATE:
                self._revoke_exposed(state, plan, step, outcome)

    # -- the response to an exposed key (AWS's quarantine policy) ----------------------------

    def _record_quarantine(self, state: UserState, plan: UserPlan) -> None:
        """Write the quarantine record on the secret before the response changes anything.

        The record names the keys the user has now (the exposed ones): a crash anywhere later, or the
        next sweep, reads it and finishes the response, and never takes a key created after it for an
        exposed one. Without a secret (bootstrap) the record is written with the secret it creates.
        """
        quarantine = plan.quarantine
        if quarantine is None or not quarantine.record_needed or state.user in self._quarantine_recorded:
            return
        if state.secret.exists:
            self.aws.tag_secret(state.secret.name, quarantine.record.tags())
        self.emit(
            QuarantineResponded(
                account=state.account,
                user=state.user,
                key_id=None,
                sweep_id=self.sweep_id,
                phase="started",
                policies=quarantine.policies,
                exposed_key_ids=quarantine.exposed,
            )
        )
        # Once per plan: its next quarantine step (the rotation after freeing a slot) must not write it again.
        self._quarantine_recorded.add(state.user)

    def _revoke_exposed(self, state: UserState, plan: UserPlan, rotated: Step, outcome: UserOutcome) -> None:
        """After a quarantined user's new key is published: disable the exposed key it replaced at once."""
        quarantine = plan.quarantine
        if quarantine is None or quarantine.mode is not QuarantineMode.ROTATE_AND_REVOKE:
            return
        if rotated.resume:
            published, replaced = rotated.key_id, plan.roles.current
        else:
            published = self._published_key
            replaced = plan.roles.current if state.secret.exists else state.key(rotated.key_id)
        if replaced is None or not replaced.active or replaced.key_id not in quarantine.exposed:
            return
        step = Step(
            state.account,
            state.user,
            Action.DISABLE,
            replaced.key_id,
            "exposed key of a quarantined user: disabled as soon as its successor was published",
            loud=True,
            cause="quarantine",
        )
        try:
            self._disable(state, replaced.key_id, step.reason, loud=True, current=published, cause="quarantine")
        except RotatorError as exc:
            outcome.failed.append(Failure(step, exc))
            self._failed(state.user, step.key_id, step.action, exc)
            return
        outcome.done.append(step)
        self._responded(state, plan, replaced.key_id, published)

    def _responded(self, state: UserState, plan: UserPlan, disabled: str, published: str | None) -> None:
        quarantine = plan.quarantine
        self.emit(
            QuarantineResponded(
                account=state.account,
                user=state.user,
                key_id=disabled,
                sweep_id=self.sweep_id,
                phase="revoked",
                policies=quarantine.policies if quarantine else (),
                exposed_key_ids=quarantine.exposed if quarantine else (),
                new_key_id=published or (state.secret.key_in(AWSCURRENT)),
            )
        )

    def _held(self, state: UserState, plan: UserPlan, step: Step) -> None:
        """``key.held``: which key, and who still uses it (service, region, how long ago) in one line."""
        key = state.key(step.key_id)
        if key is None:  # the plan holds a key of this state: defensive only
            self.emit(KeyHeld(**self._ctx(step), reason=step.reason, summary=step.reason))
            return
        summary = last_use_phrase(key, self.clock())
        if plan.policy is not None and step.due_at is not None:
            quiet = format_duration(plan.policy.quiet_period)
            regardless = when(step.due_at + plan.policy.max_hold)
            summary += f"; disabled once unused for {quiet}, or regardless from {regardless}"
        self.emit(
            KeyHeld(
                **self._ctx(step),
                reason=step.reason,
                last_used=key.last_used,
                last_used_service=key.last_used_service,
                last_used_region=key.last_used_region,
                summary=summary,
            )
        )

    def _revoke(self, state: UserState, rotated: Step, outcome: UserOutcome) -> None:
        """``rotate --revoke``: the key that was current until now is disabled at once."""
        replaced = state.key(rotated.key_id)
        if replaced is None or not replaced.active:
            return  # nothing to disable: the outcome shows no disable step
        step = Step(state.account, state.user, Action.DISABLE, replaced.key_id, "forced rotation with --revoke")
        try:
            self._disable(state, replaced.key_id, step.reason, loud=True, current=self._published_key, cause="revoke")
        except RotatorError as exc:
            outcome.failed.append(Failure(step, exc))
            self._failed(state.user, step.key_id, step.action, exc)
            return
        outcome.done.append(step)

    def _apply(self, state: UserState, plan: UserPlan, step: Step) -> UserState:
        if step.action is Action.ROTATE:
            if step.resume:
                self.rotation.resume(state, plan, step)
            else:
                self._published_key = self.rotation.rotate(state, plan, step)
            return state
        assert step.key_id is not None
        if step.action is Action.DISABLE:
            self._disable(state, step.key_id, step.reason, loud=step.loud, cause=step.cause)
            if step.cause == "quarantine":
                self._responded(state, plan, step.key_id, None)
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
            if own_tag(step.key_id) in state.tags:
                # Its record goes with it; the intent mark stays for the repair (it may be a concurrent attempt's
                # by now: Rotation._clear_own_mark).
                self.rotation.untag(state, [own_tag(step.key_id)])
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

    def _disable(
        self,
        state: UserState,
        key_id: str,
        reason: str,
        *,
        loud: bool,
        current: str | None = None,
        cause: str | None = None,
    ) -> None:
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
                cause=cause,
            )
        )
        # Recorded after the fact: a crash in between leaves no record, and the repair then
        # records a later time, so retention can only grow (I5).
        self.aws.tag_secret(state.secret.name, {TAG_DISABLED_KEY: key_id, TAG_DISABLED_AT: iso(self.clock())})

    # -- records a crash kept from being written ----------------------------------------------

    def _repair(self, state: UserState, plan: UserPlan, now: datetime) -> None:
        if self.dry_run:
            return
        needed = plan.repairs
        try:
            if needed.published_key is not None:
                tags = {TAG_CURRENT_KEY: needed.published_key, TAG_PUBLISHED_AT: iso(now)}
                # Also the ids and creation dates the interrupted publication never wrote: left stale,
                # the inventory's credential-report fast path pairs report slots with key ids by
                # these dates and would lend the new key the old key's age.
                roles = plan.roles
                for key, id_tag, created_tag in (
                    (roles.current, TAG_CURRENT_KEY, TAG_CURRENT_CREATED),
                    (roles.previous, TAG_PREVIOUS_KEY, TAG_PREVIOUS_CREATED),
                ):
                    if key is not None:
                        tags.update({id_tag: key.key_id, created_tag: iso(key.created)})
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
                    state.secret.name, {TAG_DISABLED_KEY: needed.disabled_key, TAG_DISABLED_AT: iso(now)}
                )
                self.emit(
                    RecordRepaired(
                        account=state.account,
                        user=state.user,
                        key_id=needed.disabled_key,
                        record="disabled-at",
                    )
                )
            if needed.quarantine_record_done:
                # Secrets Manager has no partial untag in the port: an empty answered-at is "no record".
                self.aws.tag_secret(
                    state.secret.name, {TAG_QUARANTINE_AT: "", TAG_QUARANTINE_KEYS: "", TAG_QUARANTINE_POLICIES: ""}
                )
                self.emit(
                    RecordRepaired(
                        account=state.account, user=state.user, key_id=None, record="quarantine response finished"
                    )
                )
            if needed.stale_user_tags or needed.stale_secret_mark:
                if needed.stale_user_tags:
                    self.aws.untag_user(state.user, list(needed.stale_user_tags))
                if needed.stale_secret_mark:
                    self.aws.tag_secret(state.secret.name, MARK_CLEARED)
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


def record_skip(step: Step, outcome: UserOutcome, emit: Callable[[Event], None], sweep_id: str | None) -> None:
    """A planned ``skip``: a per-user problem fails the user (I10); an unproven key is reported loudly."""
    who: _Context = {"account": step.account, "user": step.user, "key_id": step.key_id, "sweep_id": sweep_id}
    if step.unproven:
        emit(KeyOwnershipUnproven(**who, reason=step.reason))
    if step.cause == "quarantine" and step.key_id is None:  # response.quarantine=report
        emit(QuarantineResponded(**who, phase="reported", reason=step.reason))
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

    if workers <= 1:  # in order, on the calling thread (aws.concurrency: 1; a deterministic simulation)
        return [one(user) for user in users]
    with ThreadPoolExecutor(max_workers=min(workers, len(users))) as pool:
        return list(pool.map(one, users))
