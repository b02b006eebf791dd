"""Frozen value objects shared by the policy, the inventory and the executor.

Everything here is data: no I/O, no clock. The policy turns a :class:`UserState` and an
:class:`EffectivePolicy` into a :class:`UserPlan`; the executor carries out its :class:`Step` objects.
"""

from __future__ import annotations

import enum
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from types import MappingProxyType

#: Namespace of the deterministic secret version ids. A version holding access key ``K`` always has
#: the id ``uuid5(VERSION_NAMESPACE, K)``: retries of the same write are idempotent (the
#: ``ClientRequestToken``), and the inventory can tell which key a version holds from
#: ``ListSecrets``' version-to-stage map without reading any secret value.
VERSION_NAMESPACE = uuid.UUID("7d1f6a53-3c1e-4c55-9a54-2b0b3c7e9a11")

# Staging labels of Secrets Manager's rotation protocol.
AWSCURRENT = "AWSCURRENT"
AWSPREVIOUS = "AWSPREVIOUS"
AWSPENDING = "AWSPENDING"

# Tags written by the rotator. Secret tags record what later steps need to know; the user tag marks
# a rotation in flight so that an orphaned key can be proven to be the rotator's own.
TAG_MANAGED = "rotator:managed"
TAG_CURRENT_KEY = "rotator:current-key-id"
TAG_CURRENT_CREATED = "rotator:current-key-created"
TAG_PUBLISHED_AT = "rotator:published-at"
#: ``published-at`` of a key a bootstrap published by creating the secret: the publication *is* the
#: creation, whose time Secrets Manager keeps (``CreatedDate``), so no ``TagResource`` has to record it.
PUBLISHED_AT_CREATION = "secret-created"
TAG_PREVIOUS_KEY = "rotator:previous-key-id"
TAG_PREVIOUS_CREATED = "rotator:previous-key-created"
TAG_DISABLED_KEY = "rotator:disabled-key-id"
TAG_DISABLED_AT = "rotator:disabled-at"
#: The previous key the rotator deleted last: a credential report (cached up to 4 h by IAM) that still
#: lists it is stale for this user, so the inventory asks IAM instead.
TAG_DELETED_KEY = "rotator:deleted-key-id"
#: The user the secret's keys belong to: a secret another user's rotation wrote is never written again.
TAG_USER = "rotator:user"
#: The intent mark, written before CreateAccessKey: a rotation of this user may be creating a key. It
#: proves nothing about whose a key is (an operator may create one in the same minute); it only makes
#: an unrecorded key created near it a *candidate* orphan, whose creator CloudTrail may still prove.
#: A rotation writes it on the user's secret (Secrets Manager's rate, not IAM's; an empty value is no
#: mark), a bootstrap on the user (there is no secret yet): the same two tag names in either place.
USER_TAG_ROTATION_STARTED = "rotator:rotation-started"
#: Written with the mark: the (space-separated) ids of the keys that existed before CreateAccessKey.
#: None of them can be the rotation's orphan, however close its CreateDate is to the mark.
USER_TAG_ROTATION_KEYS = "rotator:rotation-keys"
#: The intent mark's tags (on the user or on the secret).
MARK_TAGS = (USER_TAG_ROTATION_STARTED, USER_TAG_ROTATION_KEYS)
#: The tags that clear a mark on the secret (Secrets Manager tags are written, an empty value is no mark).
MARK_CLEARED: Mapping[str, str] = MappingProxyType(dict.fromkeys(MARK_TAGS, ""))
#: The ownership record, written right after CreateAccessKey returned: ``rotator:own:<key id>=<time>``.
#: One tag per key, so two runs never overwrite each other's proof; removed when the key is published
#: or withdrawn. This (or a secret version holding the key, or CloudTrail) is the only proof of ownership.
USER_TAG_OWN_PREFIX = "rotator:own:"


def own_tag(key_id: str) -> str:
    """The user tag that records ``key_id`` as created by the rotator."""
    return USER_TAG_OWN_PREFIX + key_id


#: The response to an exposed key (docs/operations.md, "Exposed keys"): written on the secret before the
#: response's rotation starts (or with the secret a bootstrap creates), so that a crash or a later sweep
#: knows which keys were exposed and which quarantine was answered. Keys created later are not exposed:
#: a user still quarantined whose keys are all newer than the response is not rotated again.
TAG_QUARANTINE_AT = "rotator:quarantine-answered-at"
#: The (space-separated) ids of the user's keys when the quarantine was seen: disabled at once after
#: the new key is published, deleted after ``retention``.
TAG_QUARANTINE_KEYS = "rotator:quarantine-keys"
#: The (space-separated) names of the quarantine policies answered: another one appearing is a new exposure.
TAG_QUARANTINE_POLICIES = "rotator:quarantine-policies"
#: AWS attaches this AWS-managed policy (``AWSCompromisedKeyQuarantine``, ``...V2``, ``...V3``) to a user whose
#: access key it found in public.
#: https://docs.aws.amazon.com/aws-managed-policy/latest/reference/AWSCompromisedKeyQuarantineV3.html
QUARANTINE_POLICY_PREFIX = "AWSCompromisedKeyQuarantine"


def quarantine_policy_names(policy_arns: tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """The AWS-managed quarantine policies among ``policy_arns`` (by name, sorted).

    Only AWS-managed ones (``arn:<partition>:iam::aws:policy/...``): a customer policy with the same name
    is not AWS's verdict.
    """
    names = set()
    for arn in policy_arns:
        head, _, name = arn.rpartition("/")
        if head.endswith(":iam::aws:policy") and name.startswith(QUARANTINE_POLICY_PREFIX):
            names.add(name)
    return tuple(sorted(names))


# Per-user policy overrides (IAM user tags).
USER_TAG_MAX_KEY_AGE = "rotator:max-key-age"
USER_TAG_GRACE_PERIOD = "rotator:grace-period"
USER_TAG_RETENTION = "rotator:retention"
USER_TAG_EXCLUDE = "rotator:exclude"


def version_id_for(key_id: str) -> str:
    """The secret version id (and ``ClientRequestToken``) under which ``key_id`` is stored."""
    return str(uuid.uuid5(VERSION_NAMESPACE, key_id))


def parse_instant(raw: str | None) -> datetime | None:
    """A timestamp tag as an aware datetime; ``None`` when absent, unparsable or without a UTC offset.

    The rotator always writes offsets. A naive value was written by hand: its zone is unknown, and
    comparing it with the aware clock would raise ``TypeError`` inside the policy and stop the sweep.
    So it counts as unrecorded: a grace or retention period then starts from now (it can only grow,
    I5) and a rotation mark proves no orphan (nothing is deleted, I3).
    """
    if raw is None:
        return None
    try:
        value = datetime.fromisoformat(raw)
    except ValueError:
        return None
    return value if value.utcoffset() is not None else None


class KeyStatus(enum.StrEnum):
    ACTIVE = "Active"
    INACTIVE = "Inactive"


class Action(enum.StrEnum):
    ROTATE = "rotate"
    DISABLE = "disable"
    DELETE = "delete"
    CLEANUP = "cleanup"
    HOLD = "hold"
    SKIP = "skip"


#: Actions that change AWS; ``hold`` and ``skip`` only report.
MUTATING_ACTIONS = frozenset({Action.ROTATE, Action.DISABLE, Action.DELETE, Action.CLEANUP})


class QuarantineMode(enum.StrEnum):
    """``response.quarantine``: what a managed user with a quarantine policy attached gets."""

    ROTATE_AND_REVOKE = "rotate_and_revoke"
    REPORT = "report"
    IGNORE = "ignore"


class GuardMode(enum.StrEnum):
    HOLD = "hold"
    WARN = "warn"
    IGNORE = "ignore"


@dataclass(frozen=True)
class AccessKey:
    key_id: str
    status: KeyStatus
    created: datetime
    last_used: datetime | None = None
    #: Where IAM last saw the key used (``GetAccessKeyLastUsed``, the credential report): the service's
    #: short name (``s3``, ``sts``) and the region. None when IAM does not say (never used, or "N/A").
    last_used_service: str | None = None
    last_used_region: str | None = None

    @property
    def active(self) -> bool:
        return self.status is KeyStatus.ACTIVE


class SecretText:
    """A secret string that will not print itself (I7): repr/str show a mask."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "SecretText('****')"

    __str__ = __repr__


@dataclass(frozen=True)
class NewKey:
    """An access key as ``CreateAccessKey`` returned it: the only moment its secret is known."""

    key_id: str
    secret_access_key: SecretText
    created: datetime


@dataclass(frozen=True)
class SecretState:
    """What Secrets Manager says about one user's secret, without its value."""

    name: str
    exists: bool = False
    #: Carries ``rotator:managed=true``: the rotator wrote it and may write it again.
    managed: bool = False
    #: version id -> staging labels (only labelled versions).
    versions: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    #: The access key id each labelled version holds, where known (``None`` = unresolved).
    version_keys: Mapping[str, str | None] = field(default_factory=dict)
    tags: Mapping[str, str] = field(default_factory=dict)
    arn: str | None = None
    #: The user named by a version read to resolve it (a version the rotator's ids do not explain).
    version_users: Mapping[str, str] = field(default_factory=dict)
    #: Scheduled for deletion: neither written nor re-created until it is restored or purged.
    deleted: bool = False
    #: ``CreatedDate``: when Secrets Manager created the secret (and, for a bootstrap, published its key).
    created: datetime | None = None

    @property
    def owner(self) -> str | None:
        """The user whose keys this secret holds, as far as the secret says."""
        tagged = self.tags.get(TAG_USER)
        if tagged:
            return tagged
        current = self.version_with(AWSCURRENT)
        return self.version_users.get(current) if current else None

    def version_with(self, stage: str) -> str | None:
        for version_id, stages in self.versions.items():
            if stage in stages:
                return version_id
        return None

    def key_in(self, stage: str) -> str | None:
        version_id = self.version_with(stage)
        if version_id is None:
            return None
        return self.version_keys.get(version_id)

    @property
    def referenced_keys(self) -> frozenset[str]:
        return frozenset(key for key in self.version_keys.values() if key is not None)

    def recorded_time(self, key_tag: str, time_tag: str, key_id: str) -> datetime | None:
        """A timestamp tag, trusted only when its companion tag names ``key_id``."""
        if self.tags.get(key_tag) != key_id:
            return None
        return parse_instant(self.tags.get(time_tag))

    def published_at(self, key_id: str) -> datetime | None:
        if self.tags.get(TAG_CURRENT_KEY) == key_id and self.tags.get(TAG_PUBLISHED_AT) == PUBLISHED_AT_CREATION:
            # Published by CreateSecret (a bootstrap: the tag went with the secret, atomically). A later
            # publication rewrites both tags in one TagResource, so the pair names this key only while it is
            # the one the secret was created with. One second added: CreatedDate may be truncated (moto keeps
            # whole seconds), and the grace period may only grow (I5).
            return self.created + timedelta(seconds=1) if self.created is not None else None
        return self.recorded_time(TAG_CURRENT_KEY, TAG_PUBLISHED_AT, key_id)

    def disabled_at(self, key_id: str) -> datetime | None:
        return self.recorded_time(TAG_DISABLED_KEY, TAG_DISABLED_AT, key_id)

    @property
    def quarantine_record(self) -> QuarantineRecord | None:
        """The response to an exposed key this secret records, or None."""
        answered = parse_instant(self.tags.get(TAG_QUARANTINE_AT))
        if not self.exists or answered is None:
            return None
        return QuarantineRecord(
            answered_at=answered,
            key_ids=tuple(self.tags.get(TAG_QUARANTINE_KEYS, "").split()),
            policies=tuple(self.tags.get(TAG_QUARANTINE_POLICIES, "").split()),
        )


@dataclass(frozen=True)
class QuarantineRecord:
    """Which quarantine the rotator answered, when, and which keys existed then (the exposed ones)."""

    answered_at: datetime
    key_ids: tuple[str, ...]
    policies: tuple[str, ...]

    def tags(self) -> dict[str, str]:
        return {
            TAG_QUARANTINE_AT: self.answered_at.isoformat(),
            TAG_QUARANTINE_KEYS: " ".join(self.key_ids),
            TAG_QUARANTINE_POLICIES: " ".join(self.policies),
        }


@dataclass(frozen=True)
class QuarantineResponse:
    """The policy's decision about a quarantined user (``UserPlan.quarantine``).

    ``exposed`` are the keys the response revokes (every key the user had when the quarantine was first
    seen); ``record`` is what the secret must say before the response's rotation starts (``record_needed``:
    it does not say it yet). ``mode`` is ``response.quarantine``.
    """

    policies: tuple[str, ...]
    exposed: tuple[str, ...]
    record: QuarantineRecord
    record_needed: bool
    mode: QuarantineMode


@dataclass(frozen=True)
class IntentMark:
    """A rotation may be creating a key: when it started and which keys existed then (``MARK_TAGS``)."""

    started: datetime
    keys: frozenset[str]
    #: Written on the secret (a rotation) rather than on the user (a bootstrap).
    on_secret: bool

    @classmethod
    def read(cls, tags: Mapping[str, str], *, on_secret: bool) -> IntentMark | None:
        started = parse_instant(tags.get(USER_TAG_ROTATION_STARTED) or None)
        if started is None:
            return None
        return cls(started, frozenset(tags.get(USER_TAG_ROTATION_KEYS, "").split()), on_secret)

    def may_have_created(self, key: AccessKey, validation_timeout: timedelta) -> bool:
        """``key`` may be this mark's rotation's own: created near the mark and not among the keys it lists.

        A key that already existed when the mark was written is not that rotation's own, however close its
        CreateDate lies to the mark (the window is symmetric for clock skew).
        """
        return key.key_id not in self.keys and abs(key.created - self.started) <= validation_timeout


@dataclass(frozen=True)
class UserState:
    """Everything the policy needs to know about one managed user, read at one moment."""

    account: str
    user: str
    path: str = "/"
    arn: str = ""
    tags: Mapping[str, str] = field(default_factory=dict)
    keys: tuple[AccessKey, ...] = ()
    secret: SecretState = field(default_factory=lambda: SecretState(name=""))
    #: A secret name could not be formed from the template (reported as a per-user error).
    secret_name_error: str | None = None
    #: CloudTrail's verdict for keys whose ownership the rotator's own records cannot prove:
    #: key id -> True (created by the rotator's principal) / False (by another principal).
    creators: Mapping[str, bool] = field(default_factory=dict)
    #: ARNs of the managed policies attached to the user (GetAccountAuthorizationDetails).
    attached_policies: tuple[str, ...] = ()

    @property
    def quarantine_policies(self) -> tuple[str, ...]:
        """Names of the AWS quarantine policies attached to the user (empty: not quarantined)."""
        return quarantine_policy_names(self.attached_policies)

    def key(self, key_id: str | None) -> AccessKey | None:
        for key in self.keys:
            if key.key_id == key_id:
                return key
        return None

    @property
    def intent_marks(self) -> tuple[IntentMark, ...]:
        """The intent marks in force: a bootstrap's on the user, a rotation's on the secret."""
        found = [IntentMark.read(self.tags, on_secret=False)]
        if self.secret.exists:
            found.append(IntentMark.read(self.secret.tags, on_secret=True))
        return tuple(mark for mark in found if mark is not None)

    @property
    def recorded_own_keys(self) -> frozenset[str]:
        """Keys with an ownership record (``rotator:own:<id>``) on the user."""
        return frozenset(tag[len(USER_TAG_OWN_PREFIX) :] for tag in self.tags if tag.startswith(USER_TAG_OWN_PREFIX))

    @property
    def in_flight_tags(self) -> tuple[str, ...]:
        """The rotator's in-flight user tags: a rotation started or a key of its own not yet stored."""
        return tuple(
            tag
            for tag in self.tags
            if tag in (USER_TAG_ROTATION_STARTED, USER_TAG_ROTATION_KEYS) or tag.startswith(USER_TAG_OWN_PREFIX)
        )


@dataclass(frozen=True)
class PolicyDefaults:
    """The configured policy every user starts from (``policy.*`` and ``aws.validation_timeout``)."""

    max_key_age: timedelta
    grace_period: timedelta
    retention: timedelta
    disable_guard: GuardMode = GuardMode.HOLD
    quiet_period: timedelta = timedelta(hours=4)
    max_hold: timedelta = timedelta(days=14)
    validation_timeout: timedelta = timedelta(seconds=120)
    quarantine: QuarantineMode = QuarantineMode.ROTATE_AND_REVOKE


@dataclass(frozen=True)
class EffectivePolicy:
    """The policy for one user after per-user tag overrides."""

    max_key_age: timedelta
    grace_period: timedelta
    retention: timedelta
    disable_guard: GuardMode = GuardMode.HOLD
    quiet_period: timedelta = timedelta(hours=4)
    max_hold: timedelta = timedelta(days=14)
    validation_timeout: timedelta = timedelta(seconds=120)
    quarantine: QuarantineMode = QuarantineMode.ROTATE_AND_REVOKE

    @property
    def in_flight_window(self) -> timedelta:
        """How long a rotation may legitimately leave a key unreferenced (SPEC I3)."""
        return 2 * self.validation_timeout


@dataclass(frozen=True)
class Step:
    """One thing to do (or report) for one user. ``plan --json`` prints these."""

    account: str
    user: str
    action: Action
    key_id: str | None
    reason: str
    due_at: datetime | None = None
    #: The guard decided to disable a key that is still in use (``warn`` or past ``max_hold``).
    loud: bool = False
    #: ``rotate`` that finishes a rotation another run left pending (the key already exists).
    resume: bool = False
    #: A per-user problem (bad tag, foreign secret, impossible secret name): reported for the user every sweep
    #: (``rotator_problems``); the sweep is ``partial`` and ``rotator sweep`` exits 1.
    problem: bool = False
    #: The step is about a key whose owner cannot be proven (left alone, reported loudly).
    unproven: bool = False
    #: Why, for machines (notifications): ``max_hold`` (the guard gave up), ``quarantine`` (response to an
    #: exposed key), ``foreign`` (a key the rotator did not create); None for the ordinary lifecycle.
    cause: str | None = None

    @property
    def mutating(self) -> bool:
        return self.action in MUTATING_ACTIONS

    def to_json(self) -> dict[str, object]:
        return {
            "account": self.account,
            "user": self.user,
            "action": self.action.value,
            "key_id": self.key_id,
            "reason": self.reason,
            "due_at": self.due_at.isoformat() if self.due_at else None,
        }


@dataclass(frozen=True)
class Upcoming:
    """An action that will fall due later (for ``rotator_next_action_timestamp_seconds``)."""

    action: Action
    key_id: str | None
    due_at: datetime


@dataclass(frozen=True)
class RepairNeeded:
    """Records the executor must (re)write because a crash lost them (see docs/design.md)."""

    published_key: str | None = None
    disabled_key: str | None = None
    #: User tags a finished or abandoned rotation left behind (its answer lost, or a crash).
    stale_user_tags: tuple[str, ...] = ()
    #: The intent mark a finished or abandoned rotation left on the secret (cleared by empty values).
    stale_secret_mark: bool = False
    #: A quarantine record whose quarantine is over (no policy attached) and whose exposed keys are all
    #: gone: removed, so that a later quarantine is answered as a new one.
    quarantine_record_done: bool = False

    @property
    def any(self) -> bool:
        return (
            self.published_key is not None
            or self.disabled_key is not None
            or bool(self.stale_user_tags)
            or self.stale_secret_mark
            or self.quarantine_record_done
        )


@dataclass(frozen=True)
class KeyRoles:
    """Every key of a user by its role (see :mod:`rotator.policy`)."""

    current: AccessKey | None = None
    previous: AccessKey | None = None
    pending: AccessKey | None = None
    orphans: tuple[AccessKey, ...] = ()
    foreign: tuple[AccessKey, ...] = ()
    strays: tuple[AccessKey, ...] = ()
    unproven: tuple[AccessKey, ...] = ()

    @property
    def previous_id(self) -> str | None:
        return self.previous.key_id if self.previous else None

    def role_of(self, key_id: str) -> str:
        """The role's name for people (``inventory``, the sandbox view)."""
        for name in ("current", "previous", "pending"):
            key = getattr(self, name)
            if key is not None and key.key_id == key_id:
                return str(name)
        for name in ("orphans", "unproven", "foreign", "strays"):
            if any(key.key_id == key_id for key in getattr(self, name)):
                return {"orphans": "orphan", "strays": "stray"}.get(name, name)
        return "other"


@dataclass(frozen=True)
class UserPlan:
    """The complete instruction for one user at one moment: the one thing everybody reads.

    ``policy`` is the user's resolved policy (None when its tags do not resolve: the plan is then a
    single problem ``skip``), ``roles`` every key's role, ``steps`` what to do now (each names the key it
    touches), ``upcoming`` what falls due later, ``repairs`` the records a crash kept from being written.
    """

    account: str
    user: str
    steps: tuple[Step, ...] = ()
    upcoming: tuple[Upcoming, ...] = ()
    policy: EffectivePolicy | None = None
    roles: KeyRoles = field(default_factory=KeyRoles)
    repairs: RepairNeeded = field(default_factory=RepairNeeded)
    #: The user is quarantined (an AWS quarantine policy attached) and ``response.quarantine`` is not ignore.
    quarantine: QuarantineResponse | None = None

    @property
    def mutating_steps(self) -> tuple[Step, ...]:
        return tuple(step for step in self.steps if step.mutating)

    @property
    def has_problem(self) -> bool:
        return any(step.problem for step in self.steps)

    @property
    def wants_executor(self) -> bool:
        """Something to change (or to hold and report with fresh data), or records to repair."""
        wants = any(step.mutating or step.action is Action.HOLD for step in self.steps)
        return wants or (not self.has_problem and self.repairs.any)
