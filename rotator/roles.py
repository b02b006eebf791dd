"""Every key of a user by its role, and who may be proven to own a key. Pure.

Key roles (SPEC "Key lifecycle, precisely"):

* *current*  - the key held by the secret's ``AWSCURRENT`` version;
* *previous* - the key held by ``AWSPREVIOUS`` while it still exists in IAM;
* *pending*  - the key held by ``AWSPENDING``: a rotation that wrote its new version and has not
  published it yet;
* *orphan*   - an unreferenced key the rotator can prove it created: the user carries its ownership
  record ``rotator:own:<key id>`` (written right after CreateAccessKey returned), or CloudTrail names
  the rotator's own principal as its creator;
* *unproven* - an unreferenced, unrecorded active key created close to the rotator's intent mark
  (``rotator:rotation-started``): perhaps the rotator's (a crash or a lost answer between
  CreateAccessKey and its record), perhaps an operator's made in the same minute. Never touched; past
  the in-flight window it is reported loudly until CloudTrail settles whose it is;
* *foreign*  - any other active key: reported, never touched;
* *stray*    - any other inactive key: deleted only when a rotation needs its slot.
"""

from __future__ import annotations

from datetime import timedelta

from rotator.model import (
    AWSCURRENT,
    AWSPENDING,
    AWSPREVIOUS,
    TAG_CURRENT_KEY,
    TAG_PREVIOUS_KEY,
    AccessKey,
    EffectivePolicy,
    KeyRoles,
    UserState,
)


def classify(state: UserState, policy: EffectivePolicy) -> KeyRoles:
    """Sort the user's keys into the roles described in the module docstring."""
    secret = state.secret
    current = state.key(secret.key_in(AWSCURRENT)) if secret.exists else None
    previous = state.key(secret.key_in(AWSPREVIOUS)) if secret.exists else None
    if previous is None and current is not None and secret.tags.get(TAG_CURRENT_KEY) == current.key_id:
        # Bootstrap: the pre-existing key was never stored (its secret is unknown), so only the tags
        # written with this publication name it.
        previous = state.key(secret.tags.get(TAG_PREVIOUS_KEY))
    pending = state.key(secret.key_in(AWSPENDING)) if secret.exists else None
    if previous is not None and current is not None and previous.key_id == current.key_id:
        previous = None
    if pending is not None and current is not None and pending.key_id == current.key_id:
        pending = None
    if pending is not None and previous is not None and pending.key_id == previous.key_id:
        pending = None  # a stale label on the replaced key's version: that key follows its own schedule (I5)
    referenced = {key.key_id for key in (current, previous, pending) if key is not None}
    orphans: list[AccessKey] = []
    foreign: list[AccessKey] = []
    strays: list[AccessKey] = []
    unproven: list[AccessKey] = []
    for key in state.keys:
        if key.key_id in referenced:
            continue
        if is_proven_own(key, state):
            orphans.append(key)
        elif key.active and is_ownership_candidate(key, state, policy):
            unproven.append(key)
        elif key.active:
            foreign.append(key)
        else:
            strays.append(key)
    return KeyRoles(current, previous, pending, tuple(orphans), tuple(foreign), tuple(strays), tuple(unproven))


def ownership_candidates(state: UserState, validation_timeout: timedelta) -> tuple[AccessKey, ...]:
    """The keys CloudTrail should be asked about (the inventory's evidence, before any plan).

    Only a user with an intent mark can have any, so for every other user this costs nothing.
    """
    if not state.intent_marks:
        return ()
    durations_unused = timedelta(0)  # classification depends on validation_timeout alone
    probe = EffectivePolicy(durations_unused, durations_unused, durations_unused, validation_timeout=validation_timeout)
    return classify(state, probe).unproven


def is_proven_own(key: AccessKey, state: UserState) -> bool:
    """The rotator created ``key``, by its own record on the user or by CloudTrail's word.

    A time window around a mark is no proof: an operator's key created in that window, or after a
    rotation that failed before CreateAccessKey, would pass for ours (docs/design.md, "Ownership").
    """
    verdict = state.creators.get(key.key_id)
    if verdict is False:
        return False  # CloudTrail names another creator: a record saying otherwise was not ours to trust
    return key.key_id in state.recorded_own_keys or verdict is True


def is_ownership_candidate(key: AccessKey, state: UserState, policy: EffectivePolicy) -> bool:
    """``key`` may be the rotator's, created but never recorded: near the intent mark, unknown to it.

    CloudTrail's verdict settles a candidate either way; until then it is never touched.
    """
    if key.key_id in state.creators:
        return False  # CloudTrail named another creator (the rotator's would have proven it above)
    return any(mark.may_have_created(key, policy.validation_timeout) for mark in state.intent_marks)


def marked_candidates(
    state: UserState, policy: EffectivePolicy, unproven: tuple[AccessKey, ...]
) -> tuple[AccessKey, ...]:
    """The ``unproven`` keys whose candidacy rests on the mark a new attempt would overwrite.

    A rotation writes its intent mark on the secret, a bootstrap on the user: the same two tags, one mark per
    place. Written again, the mark lists every existing key as already there, so a key that was a candidate of
    the old mark becomes foreign for ever - an orphan of the rotator's that nobody cleans (I3; found by the
    simulation, seed 71028: a bootstrap's lost CreateAccessKey answer, one failed CloudTrail lookup, then a new
    bootstrap in the slot an inactive key freed).
    """
    place = [mark for mark in state.intent_marks if mark.on_secret == state.secret.exists]
    return tuple(k for k in unproven if any(mark.may_have_created(k, policy.validation_timeout) for mark in place))


#: IAM's limit of tags per user.
IAM_USER_TAG_LIMIT = 50
#: Tags a bootstrap writes on the user: the intent mark (2) and its key's ownership record (1).
ROTATION_TAGS = 3
#: Secrets Manager's limit of tags per secret.
SECRET_TAG_LIMIT = 50
#: The most ``rotator:`` tags a secret carries: managed, user, current and previous key with their dates,
#: published-at, disabled key and time, deleted key, the quarantine record (3) and the intent mark (2).
SECRET_ROTATOR_TAGS = 15


def tag_room_problem(state: UserState) -> str | None:
    """Why the user (a bootstrap) or its secret (a rotation) has no room for a rotation's tags, or None."""
    if state.secret.exists:
        others = len([t for t in state.secret.tags if not t.startswith("rotator:")])
        if others + SECRET_ROTATOR_TAGS <= SECRET_TAG_LIMIT:
            return None
        return (
            f"secret {state.secret.name} has {others} tags of its own; the rotator needs {SECRET_ROTATOR_TAGS} "
            f"of Secrets Manager's {SECRET_TAG_LIMIT} (its records and intent mark): remove some"
        )
    others = len([t for t in state.tags if t not in state.in_flight_tags])
    if others + ROTATION_TAGS <= IAM_USER_TAG_LIMIT:
        return None
    return (
        f"the user has {others} tags; a rotation needs {ROTATION_TAGS} free of IAM's {IAM_USER_TAG_LIMIT} "
        "(intent mark and ownership record): remove some"
    )


def secret_problem(state: UserState) -> str | None:
    """Why the user's secret must not be written at all (a per-user problem), or None."""
    secret = state.secret
    if state.secret_name_error:
        return f"cannot form a secret name: {state.secret_name_error}"
    if not secret.exists:
        return None
    if not secret.managed:
        return (
            f"secret {secret.name} exists but was not written by the rotator "
            "(no rotator:managed=true tag); refusing to overwrite it"
        )
    if secret.owner not in (None, state.user):
        return f"secret {secret.name} holds the keys of user {secret.owner}; refusing to write it"
    if secret.deleted:
        return f"secret {secret.name} is scheduled for deletion; restore or purge it first"
    return None
