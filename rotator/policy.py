"""The heart: a pure function from (user state, effective policy, now) to a plan.

Nothing here reads the clock or talks to AWS. The executor calls :func:`decide` again on freshly read
state right before it acts, so a stale plan never mutates anything.

Key roles and the checks that make a user untouchable live in :mod:`rotator.roles`.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

from rotator.durations import format_duration
from rotator.errors import UserError
from rotator.model import (
    MARK_TAGS,
    AccessKey,
    Action,
    EffectivePolicy,
    GuardMode,
    KeyRoles,
    PolicyDefaults,
    QuarantineMode,
    QuarantineRecord,
    QuarantineResponse,
    RepairNeeded,
    Step,
    Upcoming,
    UserPlan,
    UserState,
    own_tag,
    parse_instant,
)
from rotator.roles import (
    ROTATION_TAGS,
    classify,
    is_ownership_candidate,
    is_proven_own,
    marked_candidates,
    ownership_candidates,
    secret_problem,
    tag_room_problem,
)
from rotator.user_policy import resolve_policy

__all__ = [
    "KEY_SLOTS",
    "ROTATION_TAGS",
    "classify",
    "decide",
    "decide_forced",
    "is_ownership_candidate",
    "is_proven_own",
    "ownership_candidates",
    "plan_user",
    "quarantine_response",
    "repairs_needed",
    "secret_problem",
    "tag_room_problem",
]

#: IAM allows two access keys per user.
KEY_SLOTS = 2


def plan_user(state: UserState, defaults: PolicyDefaults, now: datetime) -> UserPlan:
    """The one plan of ``state`` at ``now``: resolved policy, key roles, steps, upcoming, repairs.

    Everything that shows or acts on a user (``plan``, ``inventory``, the sandbox view, the metrics, the
    executor) reads this object; nobody resolves a policy or classifies keys again. Pure and total.
    """
    try:
        policy = resolve_policy(defaults, state.tags, state.user)
    except UserError as exc:
        step = Step(state.account, state.user, Action.SKIP, None, exc.reason, problem=True)
        return UserPlan(state.account, state.user, (step,), stuck_rotation(state, (step,), (), defaults.max_key_age))
    return decide(state, policy, now)


def stuck_rotation(
    state: UserState, steps: tuple[Step, ...], upcoming: tuple[Upcoming, ...], max_key_age: timedelta
) -> tuple[Upcoming, ...]:
    """``upcoming`` plus, for a user that cannot progress, when its oldest active key is due for rotation.

    A stuck user (a problem ``skip``: two keys and no secret, a bad tag, no free slot...) would otherwise
    have no ``rotate`` series, and ``RotatorKeyPastMaxAge`` could never fire however old its keys get (I10).
    """
    if not any(step.problem for step in steps):
        return upcoming
    if any(item.action is Action.ROTATE for item in upcoming) or any(s.action is Action.ROTATE for s in steps):
        return upcoming
    active = [key for key in state.keys if key.active]
    if not active:
        return upcoming
    oldest = min(active, key=lambda key: key.created)
    return (*upcoming, Upcoming(Action.ROTATE, oldest.key_id, after(oldest.created, max_key_age)))


def decide(state: UserState, policy: EffectivePolicy, now: datetime) -> UserPlan:
    """The plan for ``state`` under an already resolved ``policy`` at ``now``; pure and total."""
    roles = classify(state, policy)
    quarantine = quarantine_response(state, policy, now, roles)
    planner = _Planner(state, policy, now, roles, quarantine)
    planner.run()
    return UserPlan(
        state.account,
        state.user,
        tuple(planner.steps),
        stuck_rotation(state, tuple(planner.steps), tuple(planner.upcoming), policy.max_key_age),
        policy=policy,
        roles=roles,
        repairs=repairs_needed(state, policy, now, roles),
        quarantine=quarantine,
    )


def quarantine_response(
    state: UserState, policy: EffectivePolicy, now: datetime, roles: KeyRoles
) -> QuarantineResponse | None:
    """The response to AWS's quarantine of ``state``'s user, or None (not quarantined, or ignored).

    Exposed are the keys the user had when the quarantine was first seen: the secret's record says
    which (``rotator:quarantine-keys``, written before the response's rotation starts). Without a record,
    or when a quarantine policy the record does not name appears (a new exposure), they are the user's
    keys now - except keys of a rotation in flight, which nobody can have seen yet. A key created after
    the record is not exposed: so a user still quarantined after the response is not rotated again.
    """
    names = state.quarantine_policies
    if not names or policy.quarantine is QuarantineMode.IGNORE:
        return None
    secret = state.secret
    record = secret.quarantine_record if secret.managed else None
    if record is not None and set(names) <= set(record.policies):
        exposed = tuple(key_id for key_id in record.key_ids if state.key(key_id) is not None)
        return QuarantineResponse(names, exposed, record, record_needed=False, mode=policy.quarantine)
    in_flight = {key.key_id for key in (*roles.orphans, *roles.unproven)}
    if roles.pending is not None:
        in_flight.add(roles.pending.key_id)
    exposed = tuple(sorted(key.key_id for key in state.keys if key.key_id not in in_flight))
    fresh = QuarantineRecord(answered_at=now, key_ids=exposed, policies=names)
    return QuarantineResponse(names, exposed, fresh, record_needed=True, mode=policy.quarantine)


class _Planner:
    def __init__(
        self,
        state: UserState,
        policy: EffectivePolicy,
        now: datetime,
        roles: KeyRoles,
        quarantine: QuarantineResponse | None = None,
    ) -> None:
        self.state = state
        self.policy = policy
        self.now = now
        self.roles = roles
        self.quarantine = quarantine
        #: Keys the quarantine response revokes (empty unless ``response.quarantine`` is rotate_and_revoke).
        self.exposed: frozenset[str] = frozenset(
            quarantine.exposed if quarantine and quarantine.mode is QuarantineMode.ROTATE_AND_REVOKE else ()
        )
        #: Key slots freed by steps already planned besides orphan cleanups (an abandoned pending key).
        self.freed = 0
        self.steps: list[Step] = []
        self.upcoming: list[Upcoming] = []

    def step(
        self,
        action: Action,
        key: AccessKey | None,
        reason: str,
        due_at: datetime | None = None,
        *,
        loud: bool = False,
        resume: bool = False,
        problem: bool = False,
        unproven: bool = False,
        cause: str | None = None,
    ) -> None:
        self.steps.append(
            Step(
                account=self.state.account,
                user=self.state.user,
                action=action,
                key_id=key.key_id if key else None,
                reason=reason,
                due_at=due_at,
                loud=loud,
                resume=resume,
                problem=problem,
                unproven=unproven,
                cause=cause,
            )
        )

    def young(self, keys: Sequence[AccessKey]) -> str:
        """A note when one of ``keys`` is younger than the in-flight window, else "".

        Reads of one user are not atomic (tags, then keys): a key another run created a moment ago can be
        seen before its record or intent mark. Until the window has passed, a block it causes may be that
        run's rotation in flight, not a problem (the next sweep decides again).
        """
        window = self.policy.in_flight_window
        if any(self.now < after(key.created, window) for key in keys):
            return "; a key created moments ago may be another run's rotation in flight"
        return ""

    def later(self, action: Action, key: AccessKey | None, due_at: datetime) -> None:
        self.upcoming.append(Upcoming(action, key.key_id if key else None, due_at))

    def run(self) -> None:
        state, secret = self.state, self.state.secret
        problem = secret_problem(state)
        if problem is not None:
            self.step(Action.SKIP, None, problem, problem=True)
            return
        roles = self.roles
        quarantine = self.quarantine
        if quarantine is not None and quarantine.mode is QuarantineMode.REPORT:
            self.step(
                Action.SKIP,
                None,
                f"quarantined by AWS ({', '.join(quarantine.policies)}): response.quarantine=report; "
                f"rotate with 'rotator rotate {state.user} --revoke', review, then detach the policy",
                cause="quarantine",
            )
        for key in roles.foreign:
            if key.key_id in self.exposed:
                self.step(
                    Action.SKIP,
                    key,
                    "exposed key of a quarantined user, but not the rotator's (held by no secret version): "
                    "disable and delete it by hand",
                    problem=True,
                    cause="foreign",
                )
            else:
                self.step(
                    Action.SKIP, key, "foreign active key: held by no secret version; left alone", cause="foreign"
                )
        if not self.handle_in_flight(roles):
            return
        free_slots = KEY_SLOTS - len(state.keys) + len(roles.orphans) + self.freed
        if not secret.exists:
            self.bootstrap(roles, free_slots)
            return
        current, previous = roles.current, roles.previous
        if current is not None and current.key_id in self.exposed and previous is not None:
            # The response needs the previous key's slot now, and that key is exposed too: it leaves at
            # once instead of on its own schedule (I5's exception, as ``rotate --revoke`` in the SPEC).
            self.step(
                Action.DELETE,
                previous,
                "quarantine response: the previous key is exposed too and its slot is needed now",
                self.now,
                cause="quarantine",
            )
            previous_leaves = True
        else:
            previous_leaves = self.previous_lifecycle(roles)
        self.current_lifecycle(roles, free_slots + (1 if previous_leaves else 0), previous_leaves)

    # -- in-flight rotations and their leftovers ------------------------------------------------

    def handle_in_flight(self, roles: KeyRoles) -> bool:
        """Clean up orphans past the in-flight window, resume stale pending versions.

        Returns False when a rotation by another run may still be in flight: then nothing else is
        decided for this user in this sweep (we must neither race it nor delete its key).
        """
        window = self.policy.in_flight_window
        in_flight = False
        for key in roles.unproven:
            due = after(key.created, window)
            if self.now < due:
                # Perhaps another run's key between CreateAccessKey and its ownership record.
                in_flight = True
                self.step(Action.SKIP, key, "rotation in flight: new key not recorded yet", due)
                continue
            self.step(
                Action.SKIP,
                key,
                "ownership unproven: created during an interrupted rotation but not recorded as the "
                "rotator's, and CloudTrail names no creator (yet); left alone - delete it by hand once "
                "you know it is not in use",
                due,
                problem=True,
                unproven=True,
            )
        for key in roles.orphans:
            due = after(key.created, window)
            if self.now >= due:
                self.step(Action.CLEANUP, key, "orphan of an interrupted rotation: held by no secret", due)
            else:
                in_flight = True
                self.step(Action.SKIP, key, "rotation in flight: new key not stored yet", due)
                self.later(Action.CLEANUP, key, due)
        pending = roles.pending
        if pending is not None and not pending.active and self.now >= after(pending.created, window):
            # Disabled by someone while pending: it can never validate. Abandon it and start again.
            self.step(
                Action.CLEANUP,
                pending,
                "pending key was disabled before publication: rotation abandoned",
                after(pending.created, window),
            )
            self.freed += 1  # its slot is free again: the rest of the plan may use it (I2)
            return not in_flight
        if pending is not None:
            due = after(pending.created, window)
            # Not while another run's new key is still in flight: publishing the pending key would
            # race that run's own publication (I8). The skip below reports it; the next sweep resumes.
            if self.now >= due and not in_flight:
                self.step(
                    Action.ROTATE,
                    pending,
                    "resume interrupted rotation: publish the pending key",
                    due,
                    resume=True,
                )
                return False
            self.step(Action.SKIP, pending, "rotation in flight: pending version not published yet", due)
            self.later(Action.ROTATE, pending, due)
            return False
        return not in_flight

    # -- no secret yet --------------------------------------------------------------------------

    def bootstrap(self, roles: KeyRoles, free_slots: int) -> None:
        active = roles.foreign  # with no secret, every active non-orphan key is unreferenced
        if len(active) >= 2:
            self.steps = [s for s in self.steps if s.action is not Action.SKIP]
            young = self.young(active)
            self.step(
                Action.SKIP,
                None,
                "two active keys and no secret: cannot tell which one to replace" + young,
                problem=not young,
            )
            return
        replaced = active[0] if active else None
        if replaced is not None:
            # The pre-existing key is replaced; it is not foreign but the future previous key.
            self.steps = [s for s in self.steps if s.key_id != replaced.key_id]
        if replaced and replaced.key_id in self.exposed:
            reason = "quarantined by AWS: bootstrap now, the exposed key is disabled once the new one is published"
        elif replaced:
            reason = "no secret yet: bootstrap, the existing key becomes the previous key"
        else:
            reason = "no secret and no key yet: create the first key"
        cause = "quarantine" if replaced is not None and replaced.key_id in self.exposed else None
        self.rotate_with_slot(roles, free_slots, reason, self.now, replaced=replaced, cause=cause)

    # -- the previous key: grace, guard, disable, retention, delete -----------------------------

    def previous_lifecycle(self, roles: KeyRoles) -> bool:
        """Plan the previous key's next step; True when it is deleted in this sweep."""
        previous, secret = roles.previous, self.state.secret
        if previous is None or roles.current is None:
            return False
        if previous.active and previous.key_id in self.exposed:
            # No grace period and no hold: the guard only reports who still uses an exposed key.
            used = ""
            if previous.last_used is not None:
                used = f"; last used {previous.last_used.isoformat()}"
                if previous.last_used_service:
                    used += f" by {previous.last_used_service}"
            self.step(
                Action.DISABLE,
                previous,
                "exposed key of a quarantined user: disabled without grace period" + used,
                self.now,
                loud=True,
                cause="quarantine",
            )
            return False
        if previous.active:
            # An unrecorded publication (crash before the tag was written) counts from now: the
            # executor records it, and the grace period can only grow (I5).
            published = secret.published_at(roles.current.key_id) or self.now
            due = after(published, self.policy.grace_period)
            if self.now < due:
                self.later(Action.DISABLE, previous, due)
            else:
                self.guard(previous, due)
            return False
        disabled = secret.disabled_at(previous.key_id) or self.now
        due = after(disabled, self.policy.retention)
        if self.now >= due:
            self.step(Action.DELETE, previous, "previous key past retention", due)
            return True
        self.later(Action.DELETE, previous, due)
        return False

    def guard(self, previous: AccessKey, due: datetime) -> None:
        mode = self.policy.disable_guard
        recently_used = previous.last_used is not None and self.now - previous.last_used < self.policy.quiet_period
        if mode is GuardMode.IGNORE or not recently_used:
            self.step(Action.DISABLE, previous, "previous key past grace period", due)
            return
        if mode is GuardMode.WARN:
            self.step(
                Action.DISABLE,
                previous,
                "previous key past grace period but still in use (guard=warn): disabling anyway",
                due,
                loud=True,
            )
            return
        hold_until = after(due, self.policy.max_hold)
        if self.now >= hold_until:
            self.step(
                Action.DISABLE,
                previous,
                "previous key still in use but held past max_hold: disabling anyway",
                due,
                loud=True,
                cause="max_hold",
            )
            return
        self.step(
            Action.HOLD,
            previous,
            f"previous key used within quiet_period ({format_duration(self.policy.quiet_period)}): kept active",
            due,
        )
        assert previous.last_used is not None
        self.later(Action.DISABLE, previous, min(after(previous.last_used, self.policy.quiet_period), hold_until))

    # -- the current key: age, rotation -------------------------------------------------------

    def current_lifecycle(self, roles: KeyRoles, free_slots: int, previous_leaves: bool) -> None:
        current = roles.current
        if current is None:
            self.rotate_with_slot(roles, free_slots, "the secret's current key no longer exists", self.now)
            return
        if not current.active:
            self.rotate_with_slot(roles, free_slots, "the secret's current key is inactive", self.now)
            return
        if current.key_id in self.exposed:
            names = ", ".join(self.quarantine.policies) if self.quarantine else ""
            self.rotate_with_slot(
                roles,
                free_slots,
                f"quarantined by AWS ({names}): the exposed key is replaced now and disabled once the new one "
                "is published",
                self.now,
                replaced=current,
                cause="quarantine",
            )
            return
        due = after(current.created, self.policy.max_key_age)
        if self.now < due:
            self.later(Action.ROTATE, current, due)
            return
        if roles.previous is not None and not previous_leaves:
            # I5: the previous key leaves only on its own schedule; the rotation waits for it.
            self.step(
                Action.SKIP,
                current,
                f"rotation due but previous key {roles.previous.key_id} still exists: waits for its deletion",
                due,
            )
            # Still a rotation due (and overdue): the next-action gauge keeps saying so for alerts.
            self.later(Action.ROTATE, current, due)
            return
        self.rotate_with_slot(roles, free_slots, "key older than max_key_age", due, replaced=current)

    def rotate_with_slot(
        self,
        roles: KeyRoles,
        free_slots: int,
        reason: str,
        due: datetime,
        *,
        replaced: AccessKey | None = None,
        cause: str | None = None,
    ) -> None:
        """Rotate, first deleting untracked inactive keys when IAM's two slots are full.

        A rotation that cannot run is a problem (I10: reported every sweep, exit code 1), except
        while it waits for the previous key's own schedule (I5), which is progress.
        """
        no_room = tag_room_problem(self.state)
        if no_room is not None:
            self.step(Action.SKIP, replaced, f"rotation due but {no_room}", due, problem=True)
            self.later(Action.ROTATE, replaced, due)
            return
        marked = marked_candidates(self.state, self.policy, roles.unproven)
        if marked:
            # Its intent mark is all that keeps such a key a candidate: a new mark in its place would make it
            # foreign for ever. CloudTrail settles it first (the next sweep asks again), or the operator does.
            keys = ", ".join(k.key_id for k in marked)
            self.step(
                Action.SKIP,
                replaced,
                "rotation due but " + _MARK_WOULD_BE_OVERWRITTEN.format(keys=keys),
                due,
                problem=True,
            )
            self.later(Action.ROTATE, replaced, due)
            return
        strays = list(roles.strays)
        while free_slots < 1 and strays:
            stray = strays.pop(0)
            self.step(Action.DELETE, stray, "inactive key tracked by no secret: frees a key slot", due)
            free_slots += 1
        if free_slots < 1:
            held_by = (*roles.foreign, *roles.unproven)
            blockers = ", ".join(k.key_id for k in held_by) or "keys of the user"
            young = self.young(held_by)
            self.step(
                Action.SKIP,
                replaced,
                f"rotation due but no free key slot (held by {blockers})" + young,
                due,
                problem=not young,
            )
            self.later(Action.ROTATE, replaced, due)
            return
        self.step(Action.ROTATE, replaced, reason, due, cause=cause)


#: Why no new attempt starts beside an unproven key of the intent mark it would overwrite (``marked_candidates``).
_MARK_WOULD_BE_OVERWRITTEN = (
    "{keys} may be an interrupted rotation's key: a new attempt would overwrite the intent mark that keeps it a "
    "candidate; waiting until CloudTrail names its creator (or it is deleted by hand)"
)


def after(instant: datetime, delta: timedelta) -> datetime:
    """``instant + delta``, saturating at the end of time instead of raising ``OverflowError``.

    Timestamp tags can be edited by hand and per-user overrides such as ``rotator:max-key-age=99999999d``
    parse, so a due time can fall outside ``datetime``'s range. "Never" is the honest answer, and it
    keeps :func:`decide` total: one user's odd tag must not stop the sweep for every user.
    """
    try:
        return instant + delta
    except OverflowError:
        return datetime.max.replace(tzinfo=instant.tzinfo)


def repairs_needed(
    state: UserState, policy: EffectivePolicy, now: datetime | None = None, roles: KeyRoles | None = None
) -> RepairNeeded:
    """Records a crash (or a lost answer) kept from being written or removed; the executor mends them.

    Timestamps are recorded as "now". Stale user tags are removed: an ownership record of a key a secret
    version now holds, or of a key gone for longer than the in-flight window (a stale record would
    condemn a key as an orphan if its secret were ever purged), and an intent mark (on the user or the
    secret) older than the window when nothing is in flight (it would make an operator's later key look
    like a candidate).
    """
    secret = state.secret
    if secret.exists and not secret.managed:
        return RepairNeeded()
    roles = roles or classify(state, policy)
    stale: list[str] = []
    secret_mark = False
    if now is not None:
        window = policy.in_flight_window
        referenced = secret.referenced_keys if secret.exists else frozenset()
        for key_id in sorted(state.recorded_own_keys):
            recorded = parse_instant(state.tags.get(own_tag(key_id)))
            gone = state.key(key_id) is None and (recorded is None or now >= after(recorded, window))
            if key_id in referenced or gone:
                stale.append(own_tag(key_id))
        settled = not (roles.orphans or roles.unproven or roles.pending) and len(stale) == len(state.recorded_own_keys)
        for mark in state.intent_marks if settled else ():
            if now >= after(mark.started, window):
                if mark.on_secret:
                    secret_mark = not secret.deleted  # a secret scheduled for deletion takes no tags
                else:
                    stale += [t for t in MARK_TAGS if t in state.tags]
    record = secret.quarantine_record
    done = (
        record is not None
        and not state.quarantine_policies
        and not any(state.key(key_id) is not None for key_id in record.key_ids)
    )
    if not secret.exists or roles.current is None or roles.previous is None:
        return RepairNeeded(stale_user_tags=tuple(stale), stale_secret_mark=secret_mark, quarantine_record_done=done)
    published = None if secret.published_at(roles.current.key_id) else roles.current.key_id
    disabled = None
    if not roles.previous.active and secret.disabled_at(roles.previous.key_id) is None:
        disabled = roles.previous.key_id
    return RepairNeeded(
        published_key=published,
        disabled_key=disabled,
        stale_user_tags=tuple(stale),
        stale_secret_mark=secret_mark,
        quarantine_record_done=done,
    )


def decide_forced(state: UserState, policy: EffectivePolicy, now: datetime, *, revoke: bool) -> UserPlan:
    """``rotator rotate``: rotate now whatever the age; raises :class:`UserError` when it may not.

    Without ``revoke`` a still existing previous key blocks the rotation (I5: it leaves only on its
    own schedule). With ``revoke`` it is deleted first and, after publication, the key that was
    current until now is disabled at once (the executor does that last part).
    """
    secret = state.secret
    problem = secret_problem(state)
    if problem is not None:
        raise UserError(state.user, problem)
    roles = classify(state, policy)
    in_flight = [k for k in (*roles.orphans, *roles.unproven) if now < after(k.created, policy.in_flight_window)]
    if roles.pending is not None:
        in_flight.append(roles.pending)
    if in_flight:
        raise UserError(
            state.user,
            f"a rotation is in flight (key {in_flight[0].key_id}); "
            f"try again after {after(in_flight[0].created, policy.in_flight_window).isoformat()}",
        )
    marked = marked_candidates(state, policy, roles.unproven)
    if marked:
        raise UserError(state.user, _MARK_WOULD_BE_OVERWRITTEN.format(keys=", ".join(k.key_id for k in marked)))
    planner = _Planner(state, policy, now, roles)
    for key in roles.orphans:
        planner.step(Action.CLEANUP, key, "orphan of an interrupted rotation: held by no secret", now)
    free_slots = KEY_SLOTS - len(state.keys) + len(roles.orphans)
    replaced = roles.current
    if not secret.exists:
        if len(roles.foreign) >= 2:
            raise UserError(state.user, "two active keys and no secret: cannot tell which one to replace")
        replaced = roles.foreign[0] if roles.foreign else None
    elif roles.previous is not None:
        if not revoke:
            raise UserError(
                state.user,
                f"previous key {roles.previous.key_id} still exists and leaves only on its own schedule; "
                "use --revoke to delete it now (compromise response)",
            )
        planner.step(Action.DELETE, roles.previous, "forced rotation with --revoke: frees a key slot", now)
        free_slots += 1
    strays = list(roles.strays)
    while free_slots < 1 and strays:
        planner.step(Action.DELETE, strays.pop(0), "inactive key tracked by no secret: frees a key slot", now)
        free_slots += 1
    if free_slots < 1:
        blockers = ", ".join(k.key_id for k in (*roles.foreign, *roles.unproven)) or "keys of the user"
        raise UserError(state.user, f"no free key slot (held by {blockers})")
    no_room = tag_room_problem(state)
    if no_room is not None:
        raise UserError(state.user, no_room)
    planner.step(Action.ROTATE, replaced, "forced rotation" + (" with --revoke" if revoke else ""), now)
    return UserPlan(
        state.account,
        state.user,
        tuple(planner.steps),
        (),
        policy=policy,
        roles=roles,
        repairs=repairs_needed(state, policy, now, roles),
    )
