"""The policy as a specification: (user state, policy, now) -> plan, with the clock as an argument.

The table below walks every branch of SPEC "Key lifecycle, precisely" and "The guard"; the hypothesis
properties at the end check the invariants the policy alone is responsible for (I1's slot count, I3's
in-flight window, I4, I5, I9's "a key whose owner is not proven is never touched") over random states and
clock positions.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rotator.errors import UserError
from rotator.model import (
    AWSCURRENT,
    AWSPENDING,
    AWSPREVIOUS,
    TAG_CURRENT_KEY,
    TAG_DISABLED_AT,
    TAG_DISABLED_KEY,
    TAG_MANAGED,
    TAG_PREVIOUS_KEY,
    TAG_PUBLISHED_AT,
    TAG_USER,
    USER_TAG_ROTATION_KEYS,
    USER_TAG_ROTATION_STARTED,
    AccessKey,
    Action,
    EffectivePolicy,
    GuardMode,
    KeyStatus,
    RepairNeeded,
    SecretState,
    Step,
    Upcoming,
    UserPlan,
    UserState,
    own_tag,
    parse_instant,
    version_id_for,
)
from rotator.policy import classify, decide, decide_forced, repairs_needed
from rotator.roles import tag_room_problem

# -- building blocks ------------------------------------------------------------------------------

T0 = datetime(2024, 1, 1, tzinfo=UTC)
SECRET_NAME = "iam-keys/alice"

ACTIVE = KeyStatus.ACTIVE
INACTIVE = KeyStatus.INACTIVE

CUR = "AKIACURRENT000000001"
PRE = "AKIAPREVIOUS00000001"
OLD = "AKIAPREEXISTING00001"
OTHER = "AKIAPREEXISTING00002"
FOREIGN = "AKIAFOREIGN000000001"
STRAY = "AKIASTRAY00000000001"
NEW = "AKIANEW0000000000001"
PEND = "AKIAPENDING000000001"
GONE = "AKIADELETED000000001"
SECOND = "AKIANEW0000000000002"
TRAILED = "AKIACLOUDTRAILOWN001"
DISOWNED = "AKIACLOUDTRAILFOR001"
UNRECORDED = "AKIAUNRECORDED000001"
UNRECORDED_OFF = "AKIAUNRECORDED000002"

MAX_KEY_AGE = timedelta(days=90)
GRACE = timedelta(days=7)
RETENTION = timedelta(days=7)
QUIET = timedelta(hours=4)
MAX_HOLD = timedelta(days=14)
VALIDATION_TIMEOUT = timedelta(seconds=120)
WINDOW = 2 * VALIDATION_TIMEOUT


def at(**offset: float) -> datetime:
    """An instant relative to the fixed epoch ``T0`` (the injected clock)."""
    return T0 + timedelta(**offset)


def policy(guard: GuardMode = GuardMode.HOLD, **overrides: timedelta) -> EffectivePolicy:
    values: dict[str, timedelta] = {
        "max_key_age": MAX_KEY_AGE,
        "grace_period": GRACE,
        "retention": RETENTION,
        "quiet_period": QUIET,
        "max_hold": MAX_HOLD,
        "validation_timeout": VALIDATION_TIMEOUT,
    }
    values.update(overrides)
    return EffectivePolicy(disable_guard=guard, **values)


def key(
    key_id: str,
    status: KeyStatus = ACTIVE,
    created: datetime = T0,
    last_used: datetime | None = None,
) -> AccessKey:
    return AccessKey(key_id=key_id, status=status, created=created, last_used=last_used)


def secret(
    current: str | None = None,
    previous: str | None = None,
    pending: str | None = None,
    tags: Mapping[str, str] | None = None,
    *,
    managed: bool = True,
    version_users: Mapping[str, str] | None = None,
    deleted: bool = False,
) -> SecretState:
    """An existing secret whose labelled versions hold the given keys (ids as the rotator writes them)."""
    versions: dict[str, tuple[str, ...]] = {}
    version_keys: dict[str, str | None] = {}
    for stage, key_id in ((AWSCURRENT, current), (AWSPREVIOUS, previous), (AWSPENDING, pending)):
        if key_id is None:
            continue
        version = version_id_for(key_id)
        versions[version] = (*versions.get(version, ()), stage)
        version_keys[version] = key_id
    all_tags = {TAG_MANAGED: "true"} if managed else {}
    all_tags.update(tags or {})
    return SecretState(
        name=SECRET_NAME,
        exists=True,
        managed=managed,
        versions=versions,
        version_keys=version_keys,
        tags=all_tags,
        version_users=dict(version_users or {}),
        deleted=deleted,
    )


NO_SECRET = SecretState(name=SECRET_NAME)


def published(key_id: str, when: datetime, previous: str | None = None) -> dict[str, str]:
    """The tags a publication of ``key_id`` at ``when`` leaves on the secret."""
    tags = {TAG_CURRENT_KEY: key_id, TAG_PUBLISHED_AT: when.isoformat()}
    if previous is not None:
        tags[TAG_PREVIOUS_KEY] = previous
    return tags


def disabled(key_id: str, when: datetime) -> dict[str, str]:
    return {TAG_DISABLED_KEY: key_id, TAG_DISABLED_AT: when.isoformat()}


def started(when: datetime, *existing: str, own: Sequence[str] = ()) -> dict[str, str]:
    """The user tags a rotation writes right before CreateAccessKey (with the keys that exist then).

    ``own``: the keys whose ownership record (``rotator:own:<id>``) runs wrote after CreateAccessKey.
    """
    tags = {USER_TAG_ROTATION_STARTED: when.isoformat()}
    if existing:
        tags[USER_TAG_ROTATION_KEYS] = " ".join(existing)
    tags.update(recorded(*own, when=when))
    return tags


def recorded(*key_ids: str, when: datetime = T0) -> dict[str, str]:
    """The ownership records a run writes on the user right after CreateAccessKey returned ``key_ids``."""
    return {own_tag(key_id): when.isoformat() for key_id in key_ids}


def user(
    *keys: AccessKey,
    secret: SecretState = NO_SECRET,
    tags: Mapping[str, str] | None = None,
    secret_name_error: str | None = None,
    creators: Mapping[str, bool] | None = None,
) -> UserState:
    return UserState(
        account="123456789012",
        user="alice",
        tags=dict(tags or {}),
        keys=keys,
        secret=secret,
        secret_name_error=secret_name_error,
        creators=dict(creators or {}),
    )


# -- the steady state most cases start from ----------------------------------------------------------

#: The current key, created at T0 and published right away: rotation falls due at T0 + 90d.
CURRENT = key(CUR, created=T0)
ROTATION_DUE = T0 + MAX_KEY_AGE
#: The key it replaced, published away at T0: disable falls due at T0 + 7d.
PREVIOUS = key(PRE, created=at(days=-90))
DISABLE_DUE = T0 + GRACE
PUBLISHED_AT_T0 = published(CUR, T0)


def steady(*extra: AccessKey, previous: AccessKey | None = PREVIOUS) -> UserState:
    """CUR current (published at T0), optionally ``previous`` in AWSPREVIOUS, plus ``extra`` keys."""
    keys = (CURRENT, previous, *extra) if previous is not None else (CURRENT, *extra)
    return user(
        *keys,
        secret=secret(current=CUR, previous=previous.key_id if previous else None, tags=PUBLISHED_AT_T0),
    )


def retired_previous(disabled_at: datetime) -> UserState:
    """The previous key was disabled at ``disabled_at``: it now waits out the retention."""
    return user(
        CURRENT,
        key(PRE, INACTIVE, created=at(days=-90)),
        secret=secret(current=CUR, previous=PRE, tags={**PUBLISHED_AT_T0, **disabled(PRE, disabled_at)}),
    )


# -- expectations -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Expect:
    """A step as the table writes it: action, key, a fragment of the reason, and the flags.

    Every flag is compared, ``problem`` included: a skip is an ordinary one unless the table says otherwise.
    """

    action: Action
    key_id: str | None
    reason: str = ""
    due_at: datetime | None = None
    loud: bool = False
    resume: bool = False
    problem: bool = False
    unproven: bool = False

    def matches(self, step: Step) -> bool:
        return (
            step.action is self.action
            and step.key_id == self.key_id
            and self.reason.lower() in step.reason.lower()
            and (self.due_at is None or step.due_at == self.due_at)
            and step.loud == self.loud
            and step.resume == self.resume
            and step.problem == self.problem
            and step.unproven == self.unproven
        )


@dataclass(frozen=True)
class Case:
    state: UserState
    now: datetime
    steps: Sequence[Expect]
    policy: EffectivePolicy = field(default_factory=policy)
    #: ``None``: not checked; otherwise the exact upcoming actions.
    upcoming: Sequence[Upcoming] | None = None


def assert_steps(plan: UserPlan, expected: Sequence[Expect]) -> None:
    described = [
        (s.action.value, s.key_id, s.reason, s.due_at, s.loud, s.resume, s.problem, s.unproven) for s in plan.steps
    ]
    assert len(plan.steps) == len(expected), described
    for step, expect in zip(plan.steps, expected, strict=True):
        assert expect.matches(step), (expect, described)


def skip(
    key_id: str | None,
    reason: str,
    *,
    due_at: datetime | None = None,
    problem: bool = False,
    unproven: bool = False,
) -> Expect:
    return Expect(Action.SKIP, key_id, reason, due_at, problem=problem, unproven=unproven)


def stuck(key_id: str | None, reason: str, *, due_at: datetime | None = None) -> Expect:
    """A rotation that cannot happen (no free key slot): a problem, so the user has a series and an alert (I10)."""
    return skip(key_id, reason, due_at=due_at, problem=True)


def problem(reason: str) -> Expect:
    """The single skip of a user the rotator may not touch (the sweep fails for it)."""
    return skip(None, reason, problem=True)


def unproven(key_id: str, *, due_at: datetime | None = None) -> Expect:
    """The loud report of an unrecorded key near the intent mark, past its in-flight window."""
    return skip(key_id, "ownership unproven", due_at=due_at, problem=True, unproven=True)


def rotate(key_id: str | None, reason: str = "", *, due_at: datetime | None = None, resume: bool = False) -> Expect:
    return Expect(Action.ROTATE, key_id, reason, due_at, resume=resume)


def disable(key_id: str, reason: str = "", *, due_at: datetime | None = None, loud: bool = False) -> Expect:
    return Expect(Action.DISABLE, key_id, reason, due_at, loud=loud)


def delete(key_id: str, reason: str = "", *, due_at: datetime | None = None) -> Expect:
    return Expect(Action.DELETE, key_id, reason, due_at)


def cleanup(key_id: str, reason: str = "", *, due_at: datetime | None = None) -> Expect:
    return Expect(Action.CLEANUP, key_id, reason, due_at)


def hold(key_id: str, reason: str = "", *, due_at: datetime | None = None) -> Expect:
    return Expect(Action.HOLD, key_id, reason, due_at)


# Times for the in-flight cases: a rotation marked the user at MARK, shortly after CUR fell due.
MARK = ROTATION_DUE + timedelta(hours=1)
ORPHAN = key(NEW, created=MARK + timedelta(seconds=5))
ORPHAN_DUE = ORPHAN.created + WINDOW
PENDING = key(PEND, created=MARK + timedelta(seconds=5))
PENDING_DUE = PENDING.created + WINDOW


def in_flight_user(
    *extra: AccessKey,
    pending: str | None = None,
    mark: datetime = MARK,
    own: Sequence[str] = (),
    creators: Mapping[str, bool] | None = None,
) -> UserState:
    """CUR current (and overdue at ``MARK``), a rotation marked at ``mark``, ``own`` keys recorded as its own."""
    return user(
        CURRENT,
        *extra,
        secret=secret(current=CUR, pending=pending, tags=PUBLISHED_AT_T0),
        tags=started(mark, own=own),
        creators=creators,
    )


CASES = [
    # -- users the policy must not touch --------------------------------------------------------------
    pytest.param(
        Case(
            user(key(OLD), secret_name_error="name too long"),
            T0,
            [problem("cannot form a secret name: name too long")],
        ),
        id="secret-name-error-skips",
    ),
    pytest.param(
        Case(
            user(key(OLD, created=at(days=-400)), secret=secret(current=OLD, managed=False)),
            T0,
            [problem("not written by the rotator")],
        ),
        id="unmanaged-secret-skips",
    ),
    # -- a secret that holds another user's keys, or is being deleted ----------------------------------
    pytest.param(
        Case(
            user(CURRENT, secret=secret(current=CUR, tags={**PUBLISHED_AT_T0, TAG_USER: "bob"})),
            ROTATION_DUE,
            [problem(f"secret {SECRET_NAME} holds the keys of user bob")],
        ),
        id="secret-tagged-for-another-user-skips",
    ),
    pytest.param(
        Case(
            user(CURRENT, secret=secret(current=CUR, version_users={version_id_for(CUR): "bob"})),
            ROTATION_DUE,
            [problem("holds the keys of user bob")],
        ),
        id="secret-whose-current-version-names-another-user-skips",
    ),
    pytest.param(
        Case(
            user(
                CURRENT,
                PREVIOUS,
                secret=secret(
                    current=CUR, previous=PRE, tags=PUBLISHED_AT_T0, version_users={version_id_for(PRE): "bob"}
                ),
            ),
            DISABLE_DUE,
            [disable(PRE, "past grace period")],
        ),
        id="secret-owner-is-read-from-the-current-version-only",
    ),
    pytest.param(
        Case(
            user(
                CURRENT,
                secret=secret(
                    current=CUR,
                    tags={**PUBLISHED_AT_T0, TAG_USER: "alice"},
                    version_users={version_id_for(CUR): "bob"},
                ),
            ),
            ROTATION_DUE,
            [rotate(CUR, "max_key_age")],
        ),
        id="secret-owner-tag-of-this-user-wins-over-the-version",
    ),
    pytest.param(
        Case(
            user(CURRENT, secret=secret(current=CUR, tags=PUBLISHED_AT_T0, deleted=True)),
            ROTATION_DUE,
            [problem(f"secret {SECRET_NAME} is scheduled for deletion")],
        ),
        id="secret-scheduled-for-deletion-skips",
    ),
    # -- bootstrap: no secret yet ---------------------------------------------------------------------
    pytest.param(
        Case(user(), T0, [rotate(None, "no secret and no key", due_at=T0)], upcoming=[]),
        id="bootstrap-no-keys-creates-first",
    ),
    pytest.param(
        Case(
            user(key(OLD, created=T0 - timedelta(minutes=1))),
            T0,
            [rotate(OLD, "bootstrap", due_at=T0)],
        ),
        id="bootstrap-one-active-key-rotates-at-once-whatever-its-age",
    ),
    pytest.param(
        Case(user(key(OLD), key(OTHER)), T0, [skip(None, "two active keys and no secret")]),
        id="bootstrap-two-active-keys-single-skip",
    ),
    pytest.param(
        Case(
            user(key(OLD), key(STRAY, INACTIVE)),
            T0,
            [delete(STRAY, "frees a key slot"), rotate(OLD, "bootstrap")],
        ),
        id="bootstrap-stray-inactive-deleted-first",
    ),
    pytest.param(
        Case(user(key(STRAY, INACTIVE)), T0, [rotate(None, "no secret")]),
        id="bootstrap-only-inactive-key-slot-free-stray-kept",
    ),
    # -- the current key's age --------------------------------------------------------------------------
    pytest.param(
        Case(
            steady(previous=None),
            at(days=10),
            [],
            upcoming=[Upcoming(Action.ROTATE, CUR, ROTATION_DUE)],
        ),
        id="current-young-nothing-to-do",
    ),
    pytest.param(
        Case(
            steady(previous=None),
            ROTATION_DUE,
            [rotate(CUR, "older than max_key_age", due_at=ROTATION_DUE)],
        ),
        id="current-due-rotates-exactly-at-max-key-age",
    ),
    pytest.param(
        Case(
            retired_previous(disabled_at=at(days=89)),
            ROTATION_DUE,
            [skip(CUR, f"previous key {PRE} still exists: waits", due_at=ROTATION_DUE)],
            # The blocked rotation stays visible as overdue (RotatorKeyPastMaxAge alerts on it).
            upcoming=[Upcoming(Action.DELETE, PRE, at(days=96)), Upcoming(Action.ROTATE, CUR, ROTATION_DUE)],
        ),
        id="current-due-waits-for-inactive-previous",
    ),
    pytest.param(
        Case(
            user(
                key(CUR, created=T0),
                PREVIOUS,
                secret=secret(current=CUR, previous=PRE, tags=published(CUR, ROTATION_DUE - timedelta(days=1))),
            ),
            ROTATION_DUE,
            [skip(CUR, "waits")],
            upcoming=[
                Upcoming(Action.DISABLE, PRE, ROTATION_DUE + GRACE - timedelta(days=1)),
                Upcoming(Action.ROTATE, CUR, ROTATION_DUE),
            ],
        ),
        id="current-due-waits-for-active-previous-in-grace",
    ),
    pytest.param(
        Case(
            retired_previous(disabled_at=at(days=80)),
            ROTATION_DUE,
            [delete(PRE, "past retention", due_at=at(days=87)), rotate(CUR, "max_key_age")],
        ),
        id="previous-past-retention-deleted-then-rotation-in-same-plan",
    ),
    # -- the previous key: grace and the guard -----------------------------------------------------------
    pytest.param(
        Case(
            steady(),
            at(days=3),
            [],
            upcoming=[Upcoming(Action.DISABLE, PRE, DISABLE_DUE), Upcoming(Action.ROTATE, CUR, ROTATION_DUE)],
        ),
        id="previous-active-within-grace-nothing",
    ),
    pytest.param(
        Case(
            steady(previous=key(PRE, created=at(days=-90), last_used=at(days=-1))),
            DISABLE_DUE,
            [disable(PRE, "past grace period", due_at=DISABLE_DUE)],
        ),
        id="previous-past-grace-unused-disabled",
    ),
    pytest.param(
        Case(
            steady(previous=key(PRE, created=at(days=-90), last_used=DISABLE_DUE - timedelta(hours=1))),
            DISABLE_DUE,
            [hold(PRE, "quiet_period (4h)", due_at=DISABLE_DUE)],
            upcoming=[
                Upcoming(Action.DISABLE, PRE, DISABLE_DUE + timedelta(hours=3)),
                Upcoming(Action.ROTATE, CUR, ROTATION_DUE),
            ],
        ),
        id="guard-hold-recent-use-holds",
    ),
    pytest.param(
        Case(
            steady(previous=key(PRE, created=at(days=-90), last_used=DISABLE_DUE + timedelta(days=14))),
            DISABLE_DUE + timedelta(days=14, hours=1),
            [hold(PRE, due_at=DISABLE_DUE)],
            # The next look is capped at max_hold, not pushed out by the latest use.
            upcoming=[
                Upcoming(Action.DISABLE, PRE, DISABLE_DUE + timedelta(days=14, hours=2)),
                Upcoming(Action.ROTATE, CUR, ROTATION_DUE),
            ],
            policy=policy(max_hold=timedelta(days=14, hours=2)),
        ),
        id="guard-hold-next-look-capped-at-max-hold",
    ),
    pytest.param(
        Case(
            steady(previous=key(PRE, created=at(days=-90), last_used=DISABLE_DUE + MAX_HOLD)),
            DISABLE_DUE + MAX_HOLD,
            [disable(PRE, "held past max_hold", loud=True)],
        ),
        id="guard-hold-past-max-hold-disables-loudly",
    ),
    pytest.param(
        Case(
            steady(previous=key(PRE, created=at(days=-90), last_used=DISABLE_DUE)),
            DISABLE_DUE,
            [disable(PRE, "guard=warn", loud=True)],
            policy=policy(GuardMode.WARN),
        ),
        id="guard-warn-disables-loudly",
    ),
    pytest.param(
        Case(
            steady(previous=key(PRE, created=at(days=-90), last_used=DISABLE_DUE)),
            DISABLE_DUE,
            [disable(PRE, "past grace period")],
            policy=policy(GuardMode.IGNORE),
        ),
        id="guard-ignore-disables-quietly",
    ),
    pytest.param(
        Case(
            steady(previous=key(PRE, created=at(days=-90), last_used=DISABLE_DUE - QUIET)),
            DISABLE_DUE,
            [disable(PRE, "past grace period")],
        ),
        id="guard-use-exactly-quiet-period-ago-is-not-recent",
    ),
    pytest.param(
        Case(
            user(CURRENT, PREVIOUS, secret=secret(current=CUR, previous=PRE)),
            at(days=60),
            [],
            upcoming=[
                Upcoming(Action.DISABLE, PRE, at(days=60) + GRACE),
                Upcoming(Action.ROTATE, CUR, ROTATION_DUE),
            ],
        ),
        id="published-at-missing-grace-counts-from-now",
    ),
    pytest.param(
        Case(
            user(CURRENT, PREVIOUS, secret=secret(current=CUR, previous=PRE, tags=published(PRE, at(days=-90)))),
            at(days=60),
            [],
        ),
        id="published-at-of-another-key-is-not-trusted",
    ),
    pytest.param(
        Case(
            user(
                CURRENT,
                PREVIOUS,
                secret=secret(current=CUR, previous=PRE, tags={TAG_CURRENT_KEY: CUR, TAG_PUBLISHED_AT: "soon"}),
            ),
            at(days=60),
            [],
        ),
        id="published-at-unparsable-grace-counts-from-now",
    ),
    pytest.param(
        Case(
            retired_previous(disabled_at=at(days=8)),
            at(days=10),
            [],
            upcoming=[Upcoming(Action.DELETE, PRE, at(days=15)), Upcoming(Action.ROTATE, CUR, ROTATION_DUE)],
        ),
        id="previous-inactive-within-retention-nothing",
    ),
    pytest.param(
        Case(
            user(
                CURRENT,
                key(PRE, INACTIVE, created=at(days=-90)),
                secret=secret(current=CUR, previous=PRE, tags=PUBLISHED_AT_T0),
            ),
            at(days=60),
            [],
            upcoming=[
                Upcoming(Action.DELETE, PRE, at(days=60) + RETENTION),
                Upcoming(Action.ROTATE, CUR, ROTATION_DUE),
            ],
        ),
        id="disabled-at-missing-retention-counts-from-now",
    ),
    pytest.param(
        Case(
            user(
                key(CUR, created=T0),
                key(OLD, created=at(days=-200)),
                secret=secret(current=CUR, tags=published(CUR, T0, previous=OLD)),
            ),
            DISABLE_DUE,
            [disable(OLD, "past grace period")],
        ),
        id="bootstrap-replaced-key-tracked-by-tags-is-the-previous-key",
    ),
    # -- keys the secret does not hold -------------------------------------------------------------------
    pytest.param(
        Case(
            steady(key(FOREIGN, created=at(days=-500)), previous=None),
            at(days=10),
            [skip(FOREIGN, "foreign active key")],
            upcoming=[Upcoming(Action.ROTATE, CUR, ROTATION_DUE)],
        ),
        id="foreign-active-key-reported-never-touched",
    ),
    pytest.param(
        Case(
            steady(key(FOREIGN, created=at(days=-500)), previous=None),
            ROTATION_DUE,
            [skip(FOREIGN, "foreign"), stuck(CUR, f"no free key slot (held by {FOREIGN})")],
        ),
        id="foreign-key-filling-the-slot-blocks-rotation",
    ),
    pytest.param(
        Case(
            steady(key(STRAY, INACTIVE, created=at(days=-500)), previous=None),
            ROTATION_DUE,
            [delete(STRAY, "frees a key slot", due_at=ROTATION_DUE), rotate(CUR, "max_key_age")],
        ),
        id="stray-inactive-key-deleted-when-rotation-needs-its-slot",
    ),
    pytest.param(
        Case(steady(key(STRAY, INACTIVE, created=at(days=-500)), previous=None), at(days=10), []),
        id="stray-inactive-key-kept-while-no-slot-is-needed",
    ),
    # -- rotations in flight and their leftovers (I3) ----------------------------------------------------
    pytest.param(
        Case(
            in_flight_user(ORPHAN, own=[NEW]),
            ORPHAN.created + timedelta(seconds=60),
            [skip(NEW, "rotation in flight: new key not stored yet", due_at=ORPHAN_DUE)],
            upcoming=[Upcoming(Action.CLEANUP, NEW, ORPHAN_DUE)],
        ),
        id="orphan-within-window-is-in-flight-nothing-else",
    ),
    pytest.param(
        Case(
            in_flight_user(ORPHAN, own=[NEW]),
            ORPHAN_DUE,
            [cleanup(NEW, "orphan", due_at=ORPHAN_DUE), rotate(CUR, "max_key_age")],
        ),
        id="orphan-past-window-cleaned-and-its-slot-reused",
    ),
    pytest.param(
        Case(
            user(CURRENT, ORPHAN, secret=secret(current=CUR, tags=PUBLISHED_AT_T0), tags=started(MARK, own=[NEW])),
            ORPHAN_DUE,
            [cleanup(NEW, "orphan")],
            policy=policy(max_key_age=timedelta(days=365)),
        ),
        id="orphan-past-window-cleaned-current-young",
    ),
    pytest.param(
        Case(
            in_flight_user(key(NEW, INACTIVE, created=MARK), own=[NEW]),
            MARK + WINDOW,
            [cleanup(NEW, "orphan"), rotate(CUR)],
        ),
        id="inactive-orphan-is-still-an-orphan",
    ),
    pytest.param(
        Case(
            in_flight_user(key(FOREIGN, created=MARK + timedelta(hours=1))),
            MARK + timedelta(hours=1, seconds=10),
            [
                skip(FOREIGN, "foreign"),
                skip(
                    CUR,
                    f"no free key slot (held by {FOREIGN}); a key created moments ago may be another run's",
                ),
            ],
        ),
        id="key-created-long-after-rotation-mark-is-foreign",
    ),
    pytest.param(
        Case(
            in_flight_user(key(FOREIGN, created=MARK - timedelta(hours=1))),
            MARK + timedelta(hours=1),
            [skip(FOREIGN, "foreign"), stuck(CUR, "no free key slot")],
        ),
        id="key-created-long-before-rotation-mark-is-foreign",
    ),
    pytest.param(
        Case(
            user(key(OLD, created=MARK - timedelta(seconds=60)), ORPHAN, tags=started(MARK, OLD, own=[NEW])),
            ORPHAN_DUE,
            [cleanup(NEW, "orphan"), rotate(OLD, "bootstrap")],
        ),
        id="key-that-existed-before-the-mark-is-never-the-orphan",
    ),
    # -- ownership: only a record or CloudTrail proves a key the rotator's (I3, I9) -----------------------
    pytest.param(
        Case(
            in_flight_user(ORPHAN),
            ORPHAN.created + timedelta(seconds=60),
            [skip(NEW, "rotation in flight: new key not recorded yet", due_at=ORPHAN_DUE)],
            upcoming=[],  # no cleanup is ever scheduled for it
        ),
        id="unrecorded-key-near-mark-within-window-is-in-flight-nothing-else",
    ),
    pytest.param(
        Case(
            in_flight_user(ORPHAN),
            ORPHAN_DUE,
            [unproven(NEW, due_at=ORPHAN_DUE), stuck(CUR, "rotation due but no free key slot", due_at=ROTATION_DUE)],
            upcoming=[Upcoming(Action.ROTATE, CUR, ROTATION_DUE)],
        ),
        id="unrecorded-key-near-mark-past-window-unproven-and-holds-the-slot",
    ),
    pytest.param(
        Case(
            in_flight_user(ORPHAN),
            ORPHAN_DUE + timedelta(days=365),
            [unproven(NEW, due_at=ORPHAN_DUE), stuck(CUR, "no free key slot")],
        ),
        id="unrecorded-key-near-mark-never-cleaned-however-late",
    ),
    pytest.param(
        Case(
            user(CURRENT, ORPHAN, secret=secret(current=CUR, tags=PUBLISHED_AT_T0), tags=started(MARK)),
            ORPHAN_DUE,
            [unproven(NEW, due_at=ORPHAN_DUE)],
            policy=policy(max_key_age=timedelta(days=365)),
            upcoming=[Upcoming(Action.ROTATE, CUR, T0 + timedelta(days=365))],
        ),
        id="unrecorded-key-near-mark-reported-beside-a-young-current-key",
    ),
    pytest.param(
        Case(
            in_flight_user(key(NEW, created=MARK - VALIDATION_TIMEOUT)),
            MARK + WINDOW,
            [unproven(NEW), stuck(CUR, "no free key slot")],
        ),
        id="unrecorded-key-exactly-validation-timeout-before-mark-is-unproven",
    ),
    pytest.param(
        Case(
            in_flight_user(key(FOREIGN, created=MARK + VALIDATION_TIMEOUT + timedelta(seconds=1))),
            MARK + WINDOW * 2,
            [skip(FOREIGN, "foreign"), stuck(CUR, f"no free key slot (held by {FOREIGN})")],
        ),
        id="unrecorded-key-just-outside-validation-timeout-is-foreign",
    ),
    pytest.param(
        Case(
            in_flight_user(ORPHAN, own=[SECOND]),
            ORPHAN_DUE,
            [unproven(NEW), stuck(CUR, "no free key slot")],
        ),
        id="another-keys-record-proves-nothing",
    ),
    # A bootstrap whose CreateAccessKey answer was lost left NEW near its mark; the legacy key is Inactive now,
    # so a slot could be freed. A new bootstrap would write its mark over the one that keeps NEW a candidate
    # (listing NEW as already there): NEW foreign for ever, an orphan nobody cleans (I3; simulation seed 71028).
    pytest.param(
        Case(
            user(ORPHAN, key(STRAY, INACTIVE, created=at(days=-100)), tags=started(MARK, STRAY)),
            ORPHAN_DUE,
            [unproven(NEW, due_at=ORPHAN_DUE), stuck(None, "overwrite the intent mark that keeps it a candidate")],
        ),
        id="no-new-attempt-over-the-mark-of-an-unproven-candidate",
    ),
    pytest.param(
        Case(
            user(ORPHAN, key(STRAY, INACTIVE, created=at(days=-100)), tags=started(MARK, STRAY), creators={NEW: True}),
            ORPHAN_DUE,
            [cleanup(NEW, "orphan"), rotate(None, "no secret and no key yet")],
        ),
        id="cloudtrail-settles-the-candidate-then-the-bootstrap-runs",
    ),
    pytest.param(
        Case(
            user(
                CURRENT,
                key(NEW, created=at(days=50)),
                secret=secret(current=CUR, tags=PUBLISHED_AT_T0),
                tags=recorded(NEW),
            ),
            ROTATION_DUE,
            [cleanup(NEW, "orphan", due_at=at(days=50) + WINDOW), rotate(CUR, "max_key_age")],
        ),
        id="record-proves-an-orphan-without-any-mark",
    ),
    pytest.param(
        Case(
            in_flight_user(ORPHAN, creators={NEW: True}),
            ORPHAN.created + timedelta(seconds=60),
            [skip(NEW, "rotation in flight: new key not stored yet", due_at=ORPHAN_DUE)],
            upcoming=[Upcoming(Action.CLEANUP, NEW, ORPHAN_DUE)],
        ),
        id="cloudtrail-proven-orphan-within-window-is-in-flight",
    ),
    pytest.param(
        Case(
            in_flight_user(ORPHAN, creators={NEW: True}),
            ORPHAN_DUE,
            [cleanup(NEW, "orphan", due_at=ORPHAN_DUE), rotate(CUR, "max_key_age")],
        ),
        id="cloudtrail-names-the-rotator-orphan-cleaned",
    ),
    pytest.param(
        Case(
            user(
                CURRENT,
                key(NEW, created=at(days=50)),
                secret=secret(current=CUR, tags=PUBLISHED_AT_T0),
                creators={NEW: True},
            ),
            ROTATION_DUE,
            [cleanup(NEW, "orphan"), rotate(CUR, "max_key_age")],
        ),
        id="cloudtrail-proves-an-orphan-without-any-mark",
    ),
    pytest.param(
        Case(
            in_flight_user(ORPHAN, creators={NEW: False}),
            ORPHAN.created + timedelta(seconds=60),
            [
                skip(NEW, "foreign"),
                skip(
                    CUR,
                    f"no free key slot (held by {NEW}); a key created moments ago may be another run's",
                ),
            ],
        ),
        id="cloudtrail-names-another-creator-foreign-even-within-window",
    ),
    pytest.param(
        Case(
            in_flight_user(ORPHAN, creators={NEW: False}),
            ORPHAN_DUE,
            [skip(NEW, "foreign"), stuck(CUR, f"no free key slot (held by {NEW})")],
        ),
        id="cloudtrail-names-another-creator-foreign-past-window",
    ),
    pytest.param(
        Case(
            in_flight_user(key(NEW, INACTIVE, created=ORPHAN.created), creators={NEW: False}),
            ORPHAN_DUE,
            [delete(NEW, "inactive key tracked by no secret: frees a key slot"), rotate(CUR, "max_key_age")],
        ),
        id="cloudtrail-names-another-creator-inactive-is-a-stray",
    ),
    pytest.param(
        Case(
            in_flight_user(key(NEW, INACTIVE, created=ORPHAN.created)),
            ORPHAN_DUE,
            [delete(NEW, "inactive key tracked by no secret: frees a key slot"), rotate(CUR, "max_key_age")],
        ),
        id="unrecorded-inactive-key-near-mark-is-a-stray-not-an-orphan",
    ),
    pytest.param(
        Case(
            in_flight_user(key(NEW, INACTIVE, created=ORPHAN.created)),
            ORPHAN_DUE,
            [],
            policy=policy(max_key_age=timedelta(days=365)),
        ),
        id="unrecorded-inactive-key-near-mark-kept-while-no-slot-is-needed",
    ),
    pytest.param(
        Case(
            user(
                key(NEW, created=MARK + timedelta(seconds=5)),
                key(SECOND, created=MARK + timedelta(seconds=7)),
                tags=started(MARK, own=[NEW, SECOND]),
            ),
            MARK + timedelta(seconds=60),
            [skip(NEW, "rotation in flight"), skip(SECOND, "rotation in flight")],
            upcoming=[
                Upcoming(Action.CLEANUP, NEW, MARK + timedelta(seconds=5) + WINDOW),
                Upcoming(Action.CLEANUP, SECOND, MARK + timedelta(seconds=7) + WINDOW),
            ],
        ),
        id="two-concurrent-runs-records-both-in-flight",
    ),
    pytest.param(
        Case(
            user(
                key(NEW, created=MARK + timedelta(seconds=5)),
                key(SECOND, created=MARK + timedelta(seconds=7)),
                tags=started(MARK, own=[NEW, SECOND]),
            ),
            MARK + timedelta(seconds=5) + WINDOW,
            [cleanup(NEW, "orphan"), skip(SECOND, "rotation in flight: new key not stored yet")],
        ),
        id="two-concurrent-runs-records-each-cleaned-after-its-own-window",
    ),
    pytest.param(
        Case(
            user(
                key(NEW, created=MARK + timedelta(seconds=5)),
                key(SECOND, created=MARK + timedelta(seconds=7)),
                tags=started(MARK, own=[NEW, SECOND]),
            ),
            MARK + timedelta(seconds=7) + WINDOW,
            [cleanup(NEW, "orphan"), cleanup(SECOND, "orphan"), rotate(None, "no secret")],
        ),
        id="two-concurrent-runs-records-both-orphans",
    ),
    pytest.param(
        Case(
            user(
                key(NEW, created=MARK + timedelta(seconds=5)),
                key(SECOND, created=MARK + timedelta(seconds=7)),
                secret=secret(current=NEW, tags=published(NEW, MARK + timedelta(seconds=30))),
                tags=started(MARK, own=[NEW, SECOND]),
            ),
            MARK + timedelta(seconds=7) + WINDOW,
            [cleanup(SECOND, "orphan")],
        ),
        id="concurrent-loser-orphan-cleaned-beside-the-published-winner",
    ),
    pytest.param(
        Case(
            user(
                ORPHAN,
                key(PEND, created=MARK - timedelta(days=1)),
                secret=secret(current=GONE, pending=PEND),
                tags=started(MARK, own=[NEW]),
            ),
            ORPHAN.created + timedelta(seconds=60),
            [skip(NEW, "in flight"), skip(PEND, "pending version not published yet")],
        ),
        id="stale-pending-version-waits-while-another-key-is-in-flight",
    ),
    pytest.param(
        Case(
            in_flight_user(PENDING, pending=PEND),
            PENDING.created + timedelta(seconds=30),
            [skip(PEND, "pending version not published yet", due_at=PENDING_DUE)],
            upcoming=[Upcoming(Action.ROTATE, PEND, PENDING_DUE)],
        ),
        id="pending-version-within-window-is-in-flight",
    ),
    pytest.param(
        Case(
            in_flight_user(PENDING, pending=PEND),
            PENDING_DUE,
            [rotate(PEND, "resume interrupted rotation", due_at=PENDING_DUE, resume=True)],
        ),
        id="pending-version-past-window-resumed",
    ),
    pytest.param(
        Case(
            in_flight_user(key(PEND, INACTIVE, created=PENDING.created), pending=PEND),
            PENDING.created + timedelta(seconds=30),
            [skip(PEND, "pending version not published yet", due_at=PENDING_DUE)],
        ),
        id="disabled-pending-key-within-window-waits",
    ),
    pytest.param(
        Case(
            in_flight_user(key(PEND, INACTIVE, created=PENDING.created), pending=PEND),
            PENDING_DUE,
            [
                cleanup(PEND, "pending key was disabled before publication: rotation abandoned", due_at=PENDING_DUE),
                rotate(CUR, "max_key_age"),  # the freed slot serves the overdue rotation in the same sweep
            ],
        ),
        id="disabled-pending-key-past-window-abandoned-then-rotated",
    ),
    pytest.param(
        Case(
            user(CURRENT, secret=secret(current=CUR, pending=GONE, tags=PUBLISHED_AT_T0)),
            at(days=10),
            [],
        ),
        id="pending-version-of-a-deleted-key-ignored",
    ),
    # -- a secret that no longer matches IAM --------------------------------------------------------------
    pytest.param(
        Case(
            user(secret=secret(current=GONE, tags=published(GONE, T0))),
            at(days=1),
            [rotate(None, "current key no longer exists", due_at=at(days=1))],
        ),
        id="current-key-missing-from-iam-rotates",
    ),
    pytest.param(
        Case(
            user(key(FOREIGN), secret=secret(current=GONE)),
            at(days=1),
            [skip(FOREIGN, "foreign"), rotate(None, "no longer exists")],
        ),
        id="current-key-missing-rotates-beside-foreign-key",
    ),
    pytest.param(
        Case(
            user(key(CUR, INACTIVE), secret=secret(current=CUR, tags=PUBLISHED_AT_T0)),
            at(days=1),
            [rotate(None, "current key is inactive")],
        ),
        id="current-key-inactive-rotates",
    ),
    pytest.param(
        Case(
            user(key(CUR, INACTIVE), PREVIOUS, secret=secret(current=CUR, previous=PRE, tags=PUBLISHED_AT_T0)),
            at(days=1),
            [stuck(None, "no free key slot")],
        ),
        id="current-key-inactive-without-free-slot-skips",
    ),
]


@pytest.mark.parametrize("case", CASES)
def test_decide(case: Case) -> None:
    plan = decide(case.state, case.policy, case.now)

    assert (plan.account, plan.user) == (case.state.account, case.state.user)
    assert_steps(plan, case.steps)
    if case.upcoming is not None:
        assert list(plan.upcoming) == list(case.upcoming)


def test_decide_is_a_pure_function_of_its_arguments() -> None:
    state = steady(previous=key(PRE, created=at(days=-90), last_used=DISABLE_DUE - timedelta(hours=1)))
    assert decide(state, policy(), DISABLE_DUE) == decide(state, policy(), DISABLE_DUE)


# Gaps the property tests found in the policy (fixed): each stays as a regression test.


def test_a_disabled_previous_key_that_also_carries_awspending_waits_out_its_retention() -> None:
    state = user(
        CURRENT,
        key(PRE, INACTIVE, created=at(days=-90)),
        secret=secret(current=CUR, previous=PRE, pending=PRE, tags={**PUBLISHED_AT_T0, **disabled(PRE, at(days=1))}),
    )

    plan = decide(state, policy(), at(days=2))

    assert not [s for s in plan.steps if s.key_id == PRE and s.mutating], plan.steps


def test_abandoning_a_disabled_pending_key_still_replaces_a_missing_current_key() -> None:
    state = user(
        key(PEND, INACTIVE, created=PENDING.created),
        secret=secret(current=GONE, pending=PEND),
        tags=started(MARK),
    )

    plan = decide(state, policy(), PENDING_DUE)

    # I2's policy half (assert_live): the plan rotates, or says why it cannot.
    assert {s.action for s in plan.steps} & {Action.ROTATE, Action.SKIP}, plan.steps


# -- decide_forced: ``rotator rotate USER [--revoke]`` -----------------------------------------------------


FORCED_CASES = [
    pytest.param(steady(previous=None), False, at(days=1), [rotate(CUR, "forced rotation")], id="young-key"),
    pytest.param(
        steady(),
        True,
        at(days=1),
        [delete(PRE, "--revoke"), rotate(CUR, "forced rotation with --revoke")],
        id="revoke-deletes-previous-first",
    ),
    pytest.param(
        steady(key(STRAY, INACTIVE), previous=None),
        False,
        at(days=1),
        [delete(STRAY, "frees a key slot"), rotate(CUR)],
        id="stray-deleted-first",
    ),
    pytest.param(user(key(OLD)), False, at(days=1), [rotate(OLD, "forced")], id="bootstrap-one-key"),
    pytest.param(user(), False, at(days=1), [rotate(None, "forced")], id="bootstrap-no-key"),
    pytest.param(
        in_flight_user(key(NEW, created=MARK), own=[NEW]),
        False,
        MARK + WINDOW,
        [cleanup(NEW, "orphan"), rotate(CUR, "forced")],
        id="orphan-past-window-cleaned-first",
    ),
    pytest.param(
        in_flight_user(key(NEW, created=MARK), creators={NEW: True}),
        False,
        MARK + WINDOW,
        [cleanup(NEW, "orphan"), rotate(CUR, "forced")],
        id="cloudtrail-proven-orphan-cleaned-first",
    ),
    pytest.param(
        user(key(NEW, created=MARK), key(SECOND, created=MARK), tags=started(MARK, own=[NEW, SECOND])),
        False,
        MARK + WINDOW,
        [cleanup(NEW, "orphan"), cleanup(SECOND, "orphan"), rotate(None, "forced")],
        id="two-concurrent-runs-orphans-cleaned-first",
    ),
    pytest.param(
        in_flight_user(key(NEW, INACTIVE, created=MARK)),
        False,
        MARK + WINDOW,
        [delete(NEW, "frees a key slot"), rotate(CUR, "forced")],
        id="unrecorded-inactive-key-near-mark-is-a-stray",
    ),
]


@pytest.mark.parametrize(("state", "revoke", "now", "expected"), FORCED_CASES)
def test_decide_forced(state: UserState, revoke: bool, now: datetime, expected: Sequence[Expect]) -> None:
    plan = decide_forced(state, policy(), now, revoke=revoke)

    assert_steps(plan, expected)
    assert all(step.due_at == now for step in plan.steps)  # forced: everything is due now
    assert plan.upcoming == ()


FORCED_REFUSALS = [
    pytest.param(steady(), False, at(days=1), "use --revoke", id="previous-exists-without-revoke"),
    pytest.param(
        user(key(OLD), secret=secret(current=OLD, managed=False)),
        True,
        at(days=1),
        "not written by the rotator",
        id="unmanaged-secret",
    ),
    pytest.param(
        user(key(OLD), secret_name_error="bad"), False, at(days=1), "cannot form a secret name", id="bad-name"
    ),
    pytest.param(
        in_flight_user(ORPHAN, own=[NEW]),
        True,
        ORPHAN.created + timedelta(seconds=1),
        "in flight",
        id="orphan-in-flight",
    ),
    pytest.param(
        in_flight_user(PENDING, pending=PEND),
        True,
        PENDING_DUE + timedelta(days=1),
        "in flight",
        id="pending",
    ),
    pytest.param(user(key(OLD), key(OTHER)), False, at(days=1), "two active keys", id="bootstrap-two-keys"),
    pytest.param(
        steady(key(FOREIGN), previous=None),
        True,
        at(days=1),
        f"no free key slot (held by {FOREIGN})",
        id="foreign",
    ),
    pytest.param(
        in_flight_user(ORPHAN),
        True,
        ORPHAN.created + timedelta(seconds=1),
        f"a rotation is in flight (key {NEW})",
        id="unrecorded-key-near-mark-in-flight",
    ),
    pytest.param(
        in_flight_user(ORPHAN),
        True,
        ORPHAN_DUE + timedelta(days=1),
        f"no free key slot (held by {NEW})",
        id="unrecorded-key-near-mark-holds-the-slot",
    ),
    pytest.param(
        in_flight_user(ORPHAN, creators={NEW: False}),
        True,
        ORPHAN_DUE,
        f"no free key slot (held by {NEW})",
        id="cloudtrail-names-another-creator",
    ),
    pytest.param(
        in_flight_user(key(PEND, INACTIVE, created=PENDING.created), pending=PEND),
        True,
        PENDING_DUE,
        "in flight",
        id="disabled-pending",
    ),
    pytest.param(
        user(CURRENT, secret=secret(current=CUR, tags={TAG_USER: "bob"})),
        True,
        at(days=1),
        f"secret {SECRET_NAME} holds the keys of user bob",
        id="secret-tagged-for-another-user",
    ),
    pytest.param(
        user(CURRENT, secret=secret(current=CUR, version_users={version_id_for(CUR): "bob"})),
        False,
        at(days=1),
        "holds the keys of user bob",
        id="secret-whose-current-version-names-another-user",
    ),
    pytest.param(
        user(CURRENT, secret=secret(current=CUR, deleted=True)),
        True,
        at(days=1),
        "scheduled for deletion",
        id="secret-scheduled-for-deletion",
    ),
]


@pytest.mark.parametrize(("state", "revoke", "now", "message"), FORCED_REFUSALS)
def test_decide_forced_refuses(state: UserState, revoke: bool, now: datetime, message: str) -> None:
    with pytest.raises(UserError, match=r"^alice: ") as raised:
        decide_forced(state, policy(), now, revoke=revoke)

    assert message in str(raised.value)
    assert raised.value.user == "alice"


# -- repairs_needed: records a crash kept from being written --------------------------------------------


REPAIRS = [
    pytest.param(steady(), RepairNeeded(), id="all-recorded"),
    pytest.param(
        user(CURRENT, PREVIOUS, secret=secret(current=CUR, previous=PRE)),
        RepairNeeded(published_key=CUR),
        id="publication-unrecorded",
    ),
    pytest.param(
        user(CURRENT, key(PRE, INACTIVE), secret=secret(current=CUR, previous=PRE, tags=PUBLISHED_AT_T0)),
        RepairNeeded(disabled_key=PRE),
        id="disable-unrecorded",
    ),
    pytest.param(
        user(CURRENT, key(PRE, INACTIVE), secret=secret(current=CUR, previous=PRE)),
        RepairNeeded(published_key=CUR, disabled_key=PRE),
        id="both-unrecorded",
    ),
    pytest.param(retired_previous(at(days=8)), RepairNeeded(), id="disable-recorded"),
    pytest.param(user(CURRENT, secret=secret(current=CUR)), RepairNeeded(), id="no-previous-key-nothing-to-protect"),
    pytest.param(user(key(OLD)), RepairNeeded(), id="no-secret"),
    pytest.param(
        user(CURRENT, PREVIOUS, secret=secret(current=CUR, previous=PRE, managed=False)),
        RepairNeeded(),
        id="unmanaged-secret-never-written",
    ),
]


@pytest.mark.parametrize(("state", "expected"), REPAIRS)
def test_repairs_needed(state: UserState, expected: RepairNeeded) -> None:
    assert repairs_needed(state, policy()) == expected


# -- classify ---------------------------------------------------------------------------------------


def test_classify_sorts_every_role() -> None:
    near_mark = MARK + timedelta(seconds=10)
    state = user(
        CURRENT,
        key(OLD),  # replaced by a bootstrap: named only by the publication tags
        key(PEND),
        key(NEW, created=MARK),  # recorded as the rotator's own
        key(TRAILED, created=at(days=-30)),  # far from any mark, but CloudTrail names the rotator
        key(UNRECORDED, created=near_mark),  # near the mark, no record, no verdict: perhaps ours
        key(OTHER, created=MARK - timedelta(seconds=30)),  # near the mark, but existed before it
        key(DISOWNED, created=near_mark),  # near the mark, but CloudTrail names another creator
        key(FOREIGN, created=at(days=-1)),
        key(STRAY, INACTIVE),
        key(UNRECORDED_OFF, INACTIVE, created=near_mark),  # near the mark, no record, inactive
        secret=secret(current=CUR, pending=PEND, tags=published(CUR, T0, previous=OLD)),
        # A record left on the published key (crash before it was removed) changes nothing.
        tags=started(MARK, CUR, OLD, PEND, OTHER, own=[NEW, CUR, GONE]),
        creators={TRAILED: True, DISOWNED: False},
    )

    roles = classify(state, policy())

    assert roles.current == CURRENT
    assert roles.previous == key(OLD)
    assert roles.pending == key(PEND)
    assert [k.key_id for k in roles.orphans] == [NEW, TRAILED]
    assert [k.key_id for k in roles.unproven] == [UNRECORDED]
    assert [k.key_id for k in roles.foreign] == [OTHER, DISOWNED, FOREIGN]
    assert [k.key_id for k in roles.strays] == [STRAY, UNRECORDED_OFF]


def test_classify_a_key_in_two_stages_plays_the_current_role_only() -> None:
    state = user(CURRENT, secret=secret(current=CUR, previous=CUR, pending=CUR))

    roles = classify(state, policy())

    assert (roles.current, roles.previous, roles.pending) == (CURRENT, None, None)


# -- totality: hand-edited tags and extreme overrides never crash a sweep ------------------------------


TOTALITY = [
    pytest.param(
        user(
            CURRENT,
            PREVIOUS,
            secret=secret(current=CUR, previous=PRE, tags=published(CUR, T0.replace(tzinfo=None))),
        ),
        [],
        id="naive-published-at-is-unrecorded",
    ),
    pytest.param(
        user(
            CURRENT,
            key(PRE, INACTIVE),
            secret=secret(current=CUR, previous=PRE, tags={**PUBLISHED_AT_T0, **disabled(PRE, at(days=58))}),
        ),
        [],
        id="aware-disabled-at-within-retention",
    ),
    pytest.param(
        user(
            CURRENT,
            key(PRE, INACTIVE),
            secret=secret(
                current=CUR,
                previous=PRE,
                tags={**PUBLISHED_AT_T0, **disabled(PRE, at(days=8).replace(tzinfo=None))},
            ),
        ),
        [],
        id="naive-disabled-at-is-unrecorded",
    ),
    pytest.param(
        user(
            CURRENT,
            key(NEW, created=at(days=1)),
            secret=secret(current=CUR, tags=PUBLISHED_AT_T0),
            tags={USER_TAG_ROTATION_STARTED: at(days=1).replace(tzinfo=None).isoformat()},
        ),
        [skip(NEW, "foreign")],
        id="naive-rotation-mark-proves-nothing",
    ),
    pytest.param(
        user(
            CURRENT,
            PREVIOUS,
            secret=secret(current=CUR, previous=PRE, tags=published(CUR, datetime.max.replace(tzinfo=UTC))),
        ),
        [],
        id="publication-at-the-end-of-time",
    ),
    pytest.param(
        user(
            CURRENT,
            key(PRE, INACTIVE),
            secret=secret(
                current=CUR,
                previous=PRE,
                tags={**PUBLISHED_AT_T0, **disabled(PRE, datetime.max.replace(tzinfo=UTC))},
            ),
        ),
        [],
        id="disable-at-the-end-of-time",
    ),
]


@pytest.mark.parametrize(("state", "expected"), TOTALITY)
def test_decide_is_total_over_hand_edited_tags(state: UserState, expected: Sequence[Expect]) -> None:
    assert_steps(decide(state, policy(), at(days=60)), expected)


def test_decide_is_total_over_huge_duration_overrides() -> None:
    # ``rotator:max-key-age=99999999d`` parses; adding it to a CreateDate overflows datetime.
    forever = timedelta(days=99_999_999)
    huge = policy(max_key_age=forever, grace_period=forever, retention=forever, max_hold=forever)

    plan = decide(steady(previous=key(PRE, created=at(days=-90), last_used=at(days=59))), huge, at(days=60))

    assert plan.steps == ()
    assert {u.action for u in plan.upcoming} == {Action.DISABLE, Action.ROTATE}


# -- properties over random states and clock positions -------------------------------------------------

HYPO_KEYS = ("AKIAHYPOTHESIS000001", "AKIAHYPOTHESIS000002")
HYPO_GONE = ("AKIAHYPOTHESISGONE01", "AKIAHYPOTHESISGONE02")
UNRESOLVED = "unresolved"
UNITS = (1, 60, 3600, 86400)
REMOVALS = frozenset({Action.DISABLE, Action.DELETE, Action.CLEANUP})


@dataclass(frozen=True)
class Scenario:
    state: UserState
    policy: EffectivePolicy
    now: datetime


@st.composite
def stagings(draw: st.DrawFn, key_ids: tuple[str, ...]) -> tuple[str | None, ...]:
    """Which key AWSCURRENT, AWSPREVIOUS and AWSPENDING hold, and which key TAG_PREVIOUS_KEY names.

    ``steady``: as the rotator leaves it, the first key current and the second previous (held by
    AWSPREVIOUS, or after a bootstrap only named by the publication tags). ``roles``: each key plays
    at most one random role, a role nobody plays is unstaged or staged onto a deleted key.
    ``anything``: each label on any key, a deleted one, or a version the inventory could not resolve.
    """
    ids = (*key_ids, *HYPO_GONE)
    anything = st.sampled_from((None, *ids, UNRESOLVED))
    gone_or_none = st.sampled_from((None, HYPO_GONE[1]))
    layout = draw(st.sampled_from(("steady", "steady", "roles", "anything")))
    if layout == "anything":
        return tuple(draw(anything) for _ in range(4))
    current: str | None
    if layout == "steady":
        current = key_ids[0] if key_ids else HYPO_GONE[0]
        second = key_ids[1] if len(key_ids) > 1 else None
        pending = draw(st.sampled_from((None, None, None, *ids)))
    else:
        holders: dict[str, str] = {}
        for key_id in key_ids:
            holders.setdefault(draw(st.sampled_from((AWSCURRENT, AWSPREVIOUS, AWSPENDING, "none"))), key_id)
        current = holders.get(AWSCURRENT) or draw(st.sampled_from((HYPO_GONE[0], None)))
        second = holders.get(AWSPREVIOUS)
        pending = holders.get(AWSPENDING) or draw(st.sampled_from((None, HYPO_GONE[1])))
    by_label = draw(st.integers(0, 9)) < 7
    previous = second if by_label and second else draw(gone_or_none)
    if draw(st.integers(0, 9)) == 9:
        previous = current  # both labels on one version, as a half-done stage move can leave them
    previous_tag = second if not by_label or draw(st.booleans()) else draw(anything)
    return current, previous, pending, previous_tag


@st.composite
def scenarios(draw: st.DrawFn) -> Scenario:
    """A user as AWS may show it after any sequence of runs, crashes and hand edits.

    Most examples are coherent stories (the secret's stages and tags name the user's keys, as the
    rotator leaves them); the rest stage labels and tags at random, onto deleted keys too.
    """
    # One time unit per example makes key ages, tags, durations and the clock collide on boundaries.
    unit = timedelta(seconds=draw(st.sampled_from(UNITS)))

    def instant(low: int = -40, high: int = 20) -> datetime:
        return T0 + unit * draw(st.integers(low, high)) + timedelta(seconds=draw(st.integers(0, 2)))

    def duration() -> timedelta:
        scale = draw(st.sampled_from((unit.total_seconds(), *UNITS)))
        return timedelta(seconds=scale * draw(st.integers(1, 20)))

    def often(tenths: int) -> bool:
        """True with probability ``tenths``/10 (and True when shrunk)."""
        return draw(st.integers(0, 9)) < tenths

    def stamp() -> str:
        """A timestamp tag: usually the rotator's own format, sometimes a hand edit."""
        when = instant()
        if often(8):
            return when.isoformat()
        return draw(st.sampled_from((when.replace(tzinfo=None).isoformat(), "yesterday")))

    # The clock mostly runs ahead of what the state records, as it does in production.
    now = instant(-20, 60)

    def last_use() -> datetime | None:
        """Never, at some point, or recently (the case the guard exists for)."""
        return draw(st.sampled_from((None, instant(), now - unit * draw(st.integers(0, 3)))))

    keys = tuple(
        key(
            key_id,
            ACTIVE if often(7) else INACTIVE,
            created=instant(),
            last_used=last_use(),
        )
        for key_id in HYPO_KEYS[: draw(st.sampled_from((2, 2, 2, 1, 1, 0)))]
    )
    key_ids = tuple(k.key_id for k in keys)
    ids = (*key_ids, *HYPO_GONE)

    def anything() -> str | None:
        return draw(st.sampled_from((None, *ids, UNRESOLVED)))

    state_secret = NO_SECRET
    if often(8):
        current, previous, pending, previous_tag = draw(stagings(key_ids))
        versions: dict[str, tuple[str, ...]] = {}
        version_keys: dict[str, str | None] = {}
        for stage, target in ((AWSCURRENT, current), (AWSPREVIOUS, previous), (AWSPENDING, pending)):
            if target is None:
                continue
            version = version_id_for(f"{UNRESOLVED}:{stage}" if target == UNRESOLVED else target)
            versions[version] = (*versions.get(version, ()), stage)
            version_keys[version] = None if target == UNRESOLVED else target
        managed = often(9)
        named = {
            TAG_CURRENT_KEY: current if often(8) else anything(),
            TAG_PREVIOUS_KEY: previous_tag,
            TAG_DISABLED_KEY: (previous or previous_tag) if often(7) else anything(),
        }
        tags = {tag: key_id for tag, key_id in named.items() if key_id not in (None, UNRESOLVED)}
        if managed:
            tags[TAG_MANAGED] = "true"
        if often(8):
            tags[TAG_PUBLISHED_AT] = stamp()
        if often(7):
            tags[TAG_DISABLED_AT] = stamp()
        # Whose keys the secret holds: its tag, or the user a resolved AWSCURRENT version names (a
        # name template that maps two users onto one secret, or a secret copied by hand).
        if often(2):
            tags[TAG_USER] = draw(st.sampled_from(("alice", "alice", "alice", "alice", "bob", "")))
        version_users = (
            {draw(st.sampled_from(sorted(versions))): draw(st.sampled_from(("alice", "alice", "alice", "bob")))}
            if versions and often(2)
            else {}
        )
        state_secret = SecretState(
            name=SECRET_NAME,
            exists=True,
            managed=managed,
            versions=versions,
            version_keys=version_keys,
            tags=tags,
            version_users=version_users,
            deleted=draw(st.integers(0, 39)) == 0,
        )

    def intent_mark(into: dict[str, str]) -> None:
        if keys and often(5):
            # Seconds apart (a run's own key, or an operator's made in the same minute), or minutes.
            skew = draw(st.integers(-2, 2)) if often(5) else draw(st.integers(-300, 300))
            near = draw(st.sampled_from(keys)).created + timedelta(seconds=skew)
            into[USER_TAG_ROTATION_STARTED] = near.isoformat()
        else:
            into[USER_TAG_ROTATION_STARTED] = stamp()
        if often(5):
            # Newer runs also name the keys that existed before their CreateAccessKey.
            into[USER_TAG_ROTATION_KEYS] = " ".join(k.key_id for k in keys if often(5))

    user_tags: dict[str, str] = {}
    if not often(6):
        intent_mark(user_tags)  # a bootstrap's mark (or an older release's rotation)
    if state_secret.exists and not often(6):
        secret_tags = dict(state_secret.tags)
        intent_mark(secret_tags)  # a rotation's mark, on the secret
        state_secret = replace(state_secret, tags=secret_tags)
    # Ownership records: a run's new key, a published key's record a crash left behind, a deleted key's.
    user_tags.update({own_tag(key_id): stamp() for key_id in ids if often(2)})
    # CloudTrail's verdict on some keys (the inventory asks only for unproven ones; any may carry one).
    creators = {key_id: draw(st.booleans()) for key_id in ids if often(2)}

    state = user(
        *keys,
        secret=state_secret,
        tags=user_tags,
        secret_name_error=None if often(9) else "name too long",
        creators=creators,
    )
    effective = EffectivePolicy(
        max_key_age=duration(),
        grace_period=duration(),
        retention=duration(),
        disable_guard=draw(st.sampled_from(tuple(GuardMode))),
        quiet_period=duration(),
        max_hold=duration(),
        validation_timeout=duration(),
    )
    return Scenario(state, effective, now)


# The spec's vocabulary, computed from the raw state independently of ``classify``.


def current_key_id(state: UserState) -> str | None:
    return state.secret.key_in(AWSCURRENT) if state.secret.exists else None


def tracked_previous_id(state: UserState) -> str | None:
    """AWSPREVIOUS's key, or the key the publication tags name as replaced (bootstrap)."""
    secret_ = state.secret
    if not secret_.exists:
        return None
    current = current_key_id(state)
    previous = secret_.key_in(AWSPREVIOUS)
    if state.key(previous) is None and state.key(current) is not None and secret_.tags.get(TAG_CURRENT_KEY) == current:
        previous = secret_.tags.get(TAG_PREVIOUS_KEY)
    return previous if previous != current and state.key(previous) is not None else None


def held_keys(state: UserState) -> frozenset[str]:
    return state.secret.referenced_keys if state.secret.exists else frozenset()


def unreferenced(state: UserState, candidate: AccessKey) -> bool:
    """No secret version holds it and it is not the tracked previous key."""
    return candidate.key_id not in held_keys(state) and candidate.key_id != tracked_previous_id(state)


def proven_own(state: UserState, candidate: AccessKey) -> bool:
    """The only proofs that the rotator created a key: its record on the user, or CloudTrail's word.

    A key created near the ``rotator:rotation-started`` mark is *not* proven: an operator may have
    created it in the same minute. CloudTrail naming another creator outweighs a record (anyone allowed to
    tag the user could write one).
    """
    verdict = state.creators.get(candidate.key_id)
    return verdict is not False and (own_tag(candidate.key_id) in state.tags or verdict is True)


def orphan_window(policy_: EffectivePolicy) -> timedelta:
    """SPEC I3's in-flight window, written out here rather than read from the model (an independent
    oracle: a production change to the window cannot also move the property's idea of it)."""
    return policy_.validation_timeout * 2


def provable_orphan(state: UserState, candidate: AccessKey) -> bool:
    return unreferenced(state, candidate) and proven_own(state, candidate)


def ownership_candidate(state: UserState, policy_: EffectivePolicy, candidate: AccessKey) -> bool:
    """Unreferenced, unproven, active, without CloudTrail verdict, created near the mark and not listed
    by it as pre-existing: perhaps the rotator's key whose record a crash lost (SPEC I9: reported)."""
    # A bootstrap marks the user, a rotation the secret: the same two tags in either place.
    places = [state.tags, *([state.secret.tags] if state.secret.exists else [])]
    near_a_mark = False
    for tags in places:
        mark = parse_instant(tags.get(USER_TAG_ROTATION_STARTED) or None)
        existed_before_mark = tags.get(USER_TAG_ROTATION_KEYS, "").split()
        near_a_mark |= (
            mark is not None
            and candidate.key_id not in existed_before_mark
            and abs(candidate.created - mark) <= policy_.validation_timeout
        )
    return (
        candidate.active
        and unreferenced(state, candidate)
        and not proven_own(state, candidate)
        and candidate.key_id not in state.creators
        and near_a_mark
    )


def foreign_ids(state: UserState) -> set[str]:
    """Active keys no version holds, not the tracked previous key, and not proven the rotator's own
    (the unproven ones included: they are never touched either)."""
    return {k.key_id for k in state.keys if k.active and unreferenced(state, k) and not proven_own(state, k)}


def foreign_owner(state: UserState) -> str | None:
    """Another user the secret says its keys belong to (its tag first, else its AWSCURRENT version)."""
    secret_ = state.secret
    if not secret_.exists:
        return None
    current_version = next((v for v, stages in secret_.versions.items() if AWSCURRENT in stages), None)
    owner = secret_.tags.get(TAG_USER) or (secret_.version_users.get(current_version) if current_version else None)
    return owner if owner and owner != state.user else None


def untouchable(state: UserState) -> bool:
    """I6 and the secret checks: the user is reported with a single problem, nothing else is planned."""
    secret_ = state.secret
    return bool(
        state.secret_name_error or (secret_.exists and not secret_.managed) or foreign_owner(state) or secret_.deleted
    )


def assert_safe(scenario: Scenario, plan: UserPlan) -> None:
    """What every plan, forced or not, must respect."""
    state, policy_ = scenario.state, scenario.policy
    removals = [s for s in plan.steps if s.action in REMOVALS]
    rotations = [s for s in plan.steps if s.action is Action.ROTATE]

    assert all(s.key_id is not None and state.key(s.key_id) is not None for s in removals)
    # I4: the key consumers read from AWSCURRENT is never disabled or deleted.
    current = current_key_id(state)
    assert current is None or all(s.key_id != current for s in removals)
    # I9: active keys the rotator cannot prove its own (foreign and unproven alike) are never touched.
    assert not foreign_ids(state) & {s.key_id for s in removals}
    # I9 and SPEC "a rotation needs a free key slot": a key neither referenced nor proven the
    # rotator's leaves only as an inactive stray deleted to free the slot of the rotation the plan
    # ends with - and no more of them than that rotation needs (exactly one slot is left for it).
    strays_deleted = 0
    for step in removals:
        target = state.key(step.key_id)
        assert target is not None
        if unreferenced(state, target) and not proven_own(state, target):
            assert not target.active and step.action is Action.DELETE, step
            assert "frees a key slot" in step.reason, step
            assert plan.steps[-1].action is Action.ROTATE and not plan.steps[-1].resume, plan.steps
            strays_deleted += 1
    if strays_deleted:
        assert len(state.keys) - len(removals) == 1, plan.steps
    # I3: cleanup deletes only the rotator's own keys, and only after the in-flight window: an orphan
    # proven by its record or by CloudTrail, or the key of its own pending version that was disabled
    # before publication (abandoned).
    for step in plan.steps:
        if step.action is Action.CLEANUP:
            target = state.key(step.key_id)
            assert target is not None
            abandoned = step.key_id == pending_key_id(state) and not target.active
            assert provable_orphan(state, target) or abandoned, step
            assert scenario.now >= target.created + orphan_window(policy_)
    # I1 and I8: one new key at most, and never a third key.
    assert len(rotations) <= 1
    created = sum(1 for s in rotations if not s.resume)
    assert len(state.keys) - len(removals) + created <= 2
    # A rotation is the last thing planned: the executor re-decides after it.
    assert not rotations or plan.steps[-1] is rotations[0]
    # I8: while another run may be mid-rotation (a recorded key or an unrecorded candidate within its
    # window) nothing but the cleanup of older orphans (past their window, I3) is done, and no second
    # key is created beside a pending one.
    if in_flight_keys(scenario):
        assert not [s for s in plan.steps if s.mutating and s.action is not Action.CLEANUP], plan.steps
    if pending_key_id(state) is not None and not abandoned_pending(state, plan):
        assert created == 0
    # I3: a new key's rotation writes its intent mark over the one in its place (the secret's, or the user's for
    # a bootstrap) and lists every existing key as already there: no key may then lose the candidacy only that
    # mark gave it (it would be foreign for ever, an orphan nobody cleans; simulation seed 71028).
    if created:
        place = state.secret.tags if state.secret.exists else state.tags
        mark = parse_instant(place.get(USER_TAG_ROTATION_STARTED) or None)
        listed = place.get(USER_TAG_ROTATION_KEYS, "").split()
        assert mark is None or not [
            k
            for k in state.keys
            if ownership_candidate(state, policy_, k)
            and k.key_id not in listed
            and abs(k.created - mark) <= policy_.validation_timeout
        ], plan.steps


def abandoned_pending(state: UserState, plan: UserPlan) -> bool:
    """The plan gives up a pending key (disabled before publication): its slot is free for a rotation."""
    return any(s.action is Action.CLEANUP and s.key_id == pending_key_id(state) for s in plan.steps)


def pending_key_id(state: UserState) -> str | None:
    """AWSPENDING's key, unless it is the current or the tracked previous key (a stale label there)."""
    pending = state.secret.key_in(AWSPENDING) if state.secret.exists else None
    if state.key(pending) is None or pending in (current_key_id(state), tracked_previous_id(state)):
        return None
    return pending


def in_flight_keys(scenario: Scenario) -> list[AccessKey]:
    """Keys another run may still be storing: proven orphans and ownership candidates in their window."""
    state, policy_ = scenario.state, scenario.policy
    return [
        k
        for k in state.keys
        if (provable_orphan(state, k) or ownership_candidate(state, policy_, k))
        and scenario.now < k.created + orphan_window(policy_)
    ]


def assert_live(scenario: Scenario, plan: UserPlan) -> None:
    """Users the rotator may not touch get one explanation; a broken or overdue key is never ignored."""
    state, now = scenario.state, scenario.now
    if untouchable(state):
        # I6, another user's secret, a secret being deleted: reported as a problem, nothing else.
        assert [(s.action, s.key_id, s.problem) for s in plan.steps] == [(Action.SKIP, None, True)], plan.steps
        return
    current = state.key(current_key_id(state))
    overdue = current is not None and now >= current.created + scenario.policy.max_key_age
    if not state.secret.exists or current is None or not current.active or overdue:
        # I2's policy half: the plan rotates, or says why it cannot.
        assert {s.action for s in plan.steps} & {Action.ROTATE, Action.SKIP}, plan.steps


def assert_unproven_reported(scenario: Scenario, plan: UserPlan) -> None:
    """I9/I10: a key whose owner is not proven is left alone, "in flight" within its window and
    loudly "ownership unproven" (a problem) past it - never cleaned up, however late."""
    state, policy_, now = scenario.state, scenario.policy, scenario.now
    flagged = {s.key_id for s in plan.steps if s.unproven}
    if untouchable(state):
        assert not flagged
        return
    candidates = [k for k in state.keys if ownership_candidate(state, policy_, k)]
    past_window = {k.key_id for k in candidates if now >= k.created + orphan_window(policy_)}
    assert flagged == past_window, plan.steps
    for candidate in candidates:
        about = [s for s in plan.steps if s.key_id == candidate.key_id]
        if now < candidate.created + orphan_window(policy_):
            assert [(s.action, s.problem, s.unproven) for s in about] == [(Action.SKIP, False, False)], about
            assert "rotation in flight" in about[0].reason
        else:
            assert [(s.action, s.problem, s.unproven) for s in about] == [(Action.SKIP, True, True)], about
            assert about[0].reason.startswith("ownership unproven")


def assert_lifecycle_respected(scenario: Scenario, plan: UserPlan) -> None:
    """I5 and the slot rule for the daemon's own plans (a forced --revoke may cut them short)."""
    state, policy_, now = scenario.state, scenario.policy, scenario.now
    secret_ = state.secret
    previous = tracked_previous_id(state)
    for step in plan.steps:
        target = state.key(step.key_id)
        if step.action in (Action.DISABLE, Action.HOLD):
            assert target is not None and target.active and step.key_id == previous
            published_at = secret_.published_at(current_key_id(state) or "")
            assert published_at is not None, "grace counted from an unrecorded publication"
            assert now >= published_at + policy_.grace_period
            assert step.action is Action.DISABLE or policy_.disable_guard is GuardMode.HOLD
        elif step.action is Action.DELETE:
            assert target is not None and not target.active
            if previous is not None and step.key_id == previous:
                disabled_at = secret_.disabled_at(previous)
                assert disabled_at is not None, "retention counted from an unrecorded disable"
                assert now >= disabled_at + policy_.retention
            else:
                # A stray leaves only to free the slot of the rotation it precedes.
                assert plan.steps[-1].action is Action.ROTATE and not plan.steps[-1].resume
        assert not step.loud or step.action is Action.DISABLE


@st.composite
def guard_scenarios(draw: st.DrawFn) -> Scenario:
    """CUR published at T0 over an active PRE: only the grace period and the guard are in play."""
    unit = timedelta(seconds=draw(st.sampled_from(UNITS)))

    def units(low: int, high: int) -> timedelta:
        return unit * draw(st.integers(low, high))

    now = T0 + units(-5, 60)
    last_used = draw(st.sampled_from((None, now - units(0, 10), T0 + units(-10, 60))))
    state = steady(previous=key(PRE, created=at(days=-90), last_used=last_used))
    effective = policy(
        draw(st.sampled_from(tuple(GuardMode))),
        max_key_age=timedelta(days=3650),
        grace_period=units(1, 20),
        quiet_period=units(1, 20),
        max_hold=units(1, 20),
    )
    return Scenario(state, effective, now)


PROPERTY_SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@PROPERTY_SETTINGS
@given(scenarios())
def test_every_plan_respects_the_invariants(scenario: Scenario) -> None:
    plan = decide(scenario.state, scenario.policy, scenario.now)  # total: never raises

    assert_safe(scenario, plan)
    assert_lifecycle_respected(scenario, plan)
    assert_live(scenario, plan)
    assert_unproven_reported(scenario, plan)


@PROPERTY_SETTINGS
@given(guard_scenarios())
def test_the_guard(scenario: Scenario) -> None:
    previous = scenario.state.key(PRE)
    assert previous is not None
    effective, now = scenario.policy, scenario.now
    due = T0 + effective.grace_period
    in_use = previous.last_used is not None and now - previous.last_used < effective.quiet_period

    plan = decide(scenario.state, effective, now)

    if now < due:
        assert plan.steps == ()
        assert Upcoming(Action.DISABLE, PRE, due) in plan.upcoming
    elif not in_use or effective.disable_guard is GuardMode.IGNORE:
        assert_steps(plan, [disable(PRE, "past grace period", due_at=due)])
    elif effective.disable_guard is GuardMode.WARN or now >= due + effective.max_hold:
        assert_steps(plan, [disable(PRE, "disabling anyway", due_at=due, loud=True)])
    else:
        assert_steps(plan, [hold(PRE, "quiet_period", due_at=due)])
        # Looked at again once the key has been quiet long enough, or when the hold runs out.
        assert previous.last_used is not None
        next_look = min(previous.last_used + effective.quiet_period, due + effective.max_hold)
        assert Upcoming(Action.DISABLE, PRE, next_look) in plan.upcoming
        assert next_look > now


@PROPERTY_SETTINGS
@given(scenarios() | guard_scenarios(), st.integers(0, 10**8))
def test_disable_and_delete_stay_due_as_time_passes(scenario: Scenario, later_by: int) -> None:
    earlier = decide(scenario.state, scenario.policy, scenario.now)
    later = decide(scenario.state, scenario.policy, scenario.now + timedelta(seconds=later_by))

    previous = tracked_previous_id(scenario.state)
    later_actions = {(s.action, s.key_id) for s in later.steps}
    for step in earlier.steps:
        if step.action in (Action.DISABLE, Action.HOLD):
            assert {(Action.DISABLE, step.key_id), (Action.HOLD, step.key_id)} & later_actions, later.steps
        if step.action is Action.DELETE and step.key_id == previous:
            assert (Action.DELETE, step.key_id) in later_actions, later.steps


@PROPERTY_SETTINGS
@given(scenarios(), st.booleans())
def test_forced_plans_are_safe_or_refused(scenario: Scenario, revoke: bool) -> None:
    try:
        plan = decide_forced(scenario.state, scenario.policy, scenario.now, revoke=revoke)
    except UserError as refused:
        assert refused.user == scenario.state.user
        return

    assert not untouchable(scenario.state), plan.steps
    # A key another run may still be storing, or one whose owner is unproven and holds a slot, refuses.
    assert not in_flight_keys(scenario), plan.steps

    assert_safe(scenario, plan)
    assert [s.action for s in plan.steps].count(Action.ROTATE) == 1
    assert all(s.action in {Action.ROTATE, Action.DELETE, Action.CLEANUP} for s in plan.steps)
    previous = tracked_previous_id(scenario.state)
    assert revoke or previous is None or all(s.key_id != previous for s in plan.steps)


def test_a_rotation_needs_room_on_the_secret_and_a_bootstrap_on_the_user() -> None:
    """A rotation writes its intent mark on the secret (Secrets Manager's 50 tags, 15 of them the rotator's), a
    bootstrap its mark and record on the user (IAM's 50 tags, 3 of them): each is refused, before any key is
    created, only where its own tags go (I10: a per-user problem that says why)."""
    crowded = {f"team{i}": "x" for i in range(48)}
    old = key("AKIAOLD", created=at(days=-100))
    rotation = user(old, secret=secret(current="AKIAOLD"), tags=crowded)
    assert tag_room_problem(rotation) is None  # 48 user tags: no matter for a rotation
    full_secret = secret(current="AKIAOLD", tags={**{f"t{i}": "x" for i in range(36)}, "rotator:managed": "true"})
    problem = tag_room_problem(user(old, secret=full_secret))
    assert problem is not None and "36 tags of its own" in problem and "Secrets Manager" in problem
    assert tag_room_problem(user(old, secret=secret(current="AKIAOLD", tags={f"t{i}": "x" for i in range(35)}))) is None
    bootstrap = tag_room_problem(user(old, tags=crowded))
    assert bootstrap is not None and "48 tags" in bootstrap
    skip = [s for s in decide(user(old, secret=full_secret), policy(), at()).steps if s.problem]
    assert skip and "Secrets Manager" in skip[0].reason, skip
