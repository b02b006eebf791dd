"""A seeded model of AWS behind the project's ports (:mod:`rotator.ports`), for the deterministic simulation.

::

    from tests.sim.world import World, Knobs, Killed

    knobs = Knobs.from_seed(seed)        # every behaviour switchable, chosen by the seed
    world = World(seed, knobs=knobs)     # owns rng (random.Random(seed)) and the virtual clock
    world.clock.now() / world.clock() / world.clock.advance(seconds) / world.clock.sleep(seconds)
    world.account(actor) -> AccountPort; world.lease_store(actor) -> LeaseStore;
    world.organizations(actor) -> OrganizationsPort
    world.hook = lambda actor, operation: ...   # "iam:CreateAccessKey" before, "acted:iam:CreateAccessKey" after
    world.sleep = lambda actor, seconds: ...    # how an actor waits inside a port call (throttling back-off,
                                                # the credential report's polling); default: clock.advance
    world.kill(actor) / world.revive(actor) / world.killed(actor)
    operator actions, sign(), truth(), calls, audit, rotator_principal(actor)

Each behaviour is what AWS documents (the URL is beside the code that models it), switched on or off and sized
per run by :class:`Knobs`; ``docs/reliability.md`` ("The model") lists them with their gaps against AWS, and
``tests/integration/test_model_conformance.py`` runs the same scenarios here and against moto.

What the core sees is what the boto3 adapters of :mod:`rotator.aws` would hand it: the :mod:`rotator.errors`
tree with the AWS error code, ``maybe_acted`` as the boundary sets it (a 5xx or a lost answer: True; a 4xx or
a refused connection: False), :class:`~rotator.errors.ThrottledError` only once the boundary's retries are
spent, and the adapters' own follow-up calls (``UpdateSecretVersionStage``'s ``DescribeSecret`` on
``InvalidParameterException``, the credential report's ``GenerateCredentialReport`` polling).

Speed: no I/O, no sleeping, no deepcopy; reads of lagged views bisect a short per-item history.

Note to the runner (R), beyond SIM_CONTRACT.md: ``world.sleep(actor, seconds)`` is how an actor waits *inside*
a port call (set it to the scheduler's sleep so that others run meanwhile); ``world.faults`` counts injected
faults by kind; ``world.attach_policy(user)`` (AWS's quarantine policy), ``operator_restore_secret``,
``operator_break_kms`` and ``add_org_account`` are extra operator actions; operator methods return bool (applied
or not); ``Truth.deleted_keys`` keeps every deleted key with its creator; ``world.audit`` lists every change AWS
carried out (a lost answer's too) with the actor that asked for it. A user added less than the lags before a
read may not be found by it yet (eventual consistency): advance the clock after setting up. pyproject's mypy
now checks ``tests/sim`` as the package ``tests.sim`` (``explicit_package_bases``), strict like the rest.
"""

from __future__ import annotations

import math
import random
import re
from bisect import bisect_right
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Generic, TypeVar

from rotator.aws.errors import _ERRORS as ERROR_CLASSES  # the boundary's own map: no drift
from rotator.aws.organizations import accounts_under  # the adapter's own walk over the modelled pages
from rotator.errors import AwsError, ThrottledError, UnreachableError
from rotator.model import AWSCURRENT, AWSPREVIOUS, AccessKey, KeyStatus, NewKey, SecretText
from rotator.records import (
    CredentialReport,
    KeyCreation,
    KeyLastUsed,
    LeaseRecord,
    OrgAccount,
    ReportKey,
    SecretSummary,
    UserDetail,
)

if TYPE_CHECKING:
    from rotator.ports import AccountPort, LeaseStore, OrganizationsPort

#: The simulated account (one account; Organizations may list more).
ACCOUNT = "123456789012"
REGION = "eu-west-1"
#: Where the virtual clock starts.
START = datetime(2025, 1, 1, 0, 0, tzinfo=UTC)
#: The principal the operator acts as (CloudTrail's creator of the keys the operator creates).
OPERATOR_ARN = f"arn:aws:iam::{ACCOUNT}:user/operator"
#: The actor name under which operator actions appear in :attr:`World.calls` and :attr:`World.audit`.
OPERATOR = "operator"
#: The policy AWS attaches to a user whose access key it found exposed in public.
QUARANTINE_POLICY = "arn:aws:iam::aws:policy/AWSCompromisedKeyQuarantineV2"
#: The organization's root.
ROOT = "r-sim"

# IAM quotas: two access keys and 50 tags per user.
# https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_iam-quotas.html
KEYS_PER_USER = 2
TAGS_PER_USER = 50
# Tag keys up to 128 characters, values up to 256, of letters, digits, spaces and _.:/=+-@.
# https://docs.aws.amazon.com/IAM/latest/APIReference/API_Tag.html
_TAG_TEXT = re.compile(r"^[\w\s.:/=+\-@]*$")
# Secrets Manager: 50 tags per secret; 100 most recent versions kept, and every version of the last 24 h.
# https://docs.aws.amazon.com/secretsmanager/latest/userguide/reference_limits.html
# https://docs.aws.amazon.com/secretsmanager/latest/apireference/API_PutSecretValue.html
TAGS_PER_SECRET = 50
VERSIONS_KEPT = 100
VERSIONS_KEPT_FOR = timedelta(hours=24)
_SECRET_NAME = re.compile(r"^[A-Za-z0-9/_+=.@-]{1,512}$")
#: CloudTrail's event history keeps 90 days of management events.
#: https://docs.aws.amazon.com/awscloudtrail/latest/userguide/view-cloudtrail-events.html
TRAIL_RETENTION = timedelta(days=90)
#: The IAM adapter waits this long for a credential report (``IamAdapter.report_timeout``).
REPORT_TIMEOUT = 120.0
#: Pages: GetAccountAuthorizationDetails (MaxItems=1000), ListSecrets (MaxResults=100), ListAccounts (20).
_PAGE = {"GetAccountAuthorizationDetails": 1000, "ListSecrets": 100, "ListAccounts": 20}

#: Services with a token bucket (Knobs.throttle keys).
SERVICES = ("iam", "secretsmanager", "sts", "cloudtrail", "dynamodb", "organizations")

T = TypeVar("T")


class Killed(BaseException):
    """The actor was killed (kill -9): raised by the hook, and by the world for every later call of that actor.

    A ``BaseException`` so that the core's ``except Exception`` blocks do not swallow it.
    """


# -- the knobs ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Knobs:
    """Per-run switches of the model; 0 (or an empty mapping) turns a behaviour off.

    All durations are virtual seconds; probabilities are per call. What AWS documents for each:

    * propagation, list and tag lag - IAM is eventually consistent:
      https://docs.aws.amazon.com/IAM/latest/UserGuide/troubleshoot_general.html#troubleshoot_general_eventual-consistency
    * secrets_list_lag - "ListSecrets might not reflect changes from the last five minutes":
      https://docs.aws.amazon.com/secretsmanager/latest/apireference/API_ListSecrets.html
    * report_max_age, report_generation_time - a new report only when the last is older than 4 hours:
      https://docs.aws.amazon.com/IAM/latest/UserGuide/id_credentials_getting-report.html
    * last_used_lag - recent activity usually appears within 4 hours:
      https://docs.aws.amazon.com/IAM/latest/UserGuide/access_policies_last-accessed.html
    * trail_delay - CloudTrail delivers an event typically within 5 minutes (not guaranteed):
      https://docs.aws.amazon.com/awscloudtrail/latest/userguide/how-cloudtrail-works.html
    * force_delete_delay - a forced deletion is asynchronous ("a short delay"):
      https://docs.aws.amazon.com/secretsmanager/latest/apireference/API_DeleteSecret.html
    * throttle, max_attempts - the SDK's standard retry mode:
      https://docs.aws.amazon.com/sdkref/latest/guide/feature-retry-behavior.html
    * kms_failure - DecryptionFailure / EncryptionFailure:
      https://docs.aws.amazon.com/secretsmanager/latest/apireference/API_GetSecretValue.html
    """

    #: A new key authenticates (STS, :meth:`World.sign`) only after a delay drawn in [0, this] per key.
    propagation_delay: float = 0.0
    #: ListAccessKeys may miss a new key (and still show a deleted one, or an old status) for a delay drawn in
    #: [0, this] per read.
    list_lag: float = 0.0
    #: GetUser / GetAccountAuthorizationDetails may return tags (and users) this stale, drawn per read.
    tag_lag: float = 0.0
    #: ListSecrets may not reflect changes of the last this-many seconds (drawn per read; AWS: up to 5 min).
    secrets_list_lag: float = 0.0
    #: GenerateCredentialReport makes a new report only when the one it holds is older than this (AWS: 4 h).
    report_max_age: float = 4 * 3600.0
    #: Seconds a new credential report takes to generate (GenerateCredentialReport answers STARTED meanwhile).
    report_generation_time: float = 0.0
    #: A key's use shows in GetAccessKeyLastUsed and the credential report after this delay (AWS: hours).
    last_used_lag: float = 0.0
    #: CloudTrail delivers a CreateAccessKey event after a delay drawn in [0, this] (AWS: typically < 5 min).
    trail_delay: float = 0.0
    #: A force-deleted secret's name stays unavailable this long (deletion is asynchronous).
    force_delete_delay: float = 0.0
    #: Token buckets per service ("iam", "secretsmanager", "sts", "cloudtrail", "dynamodb", "organizations"):
    #: (refill rate per second, burst). A service absent here is never throttled.
    throttle: Mapping[str, tuple[float, float]] = field(default_factory=dict)
    #: Attempts the boundary makes of a throttled call before it raises ThrottledError (aws.max_attempts).
    max_attempts: int = 8
    #: Probability that a call fails before AWS acted (a 5xx after the SDK's retries, a refused connection).
    fail_before: float = 0.0
    #: Probability that AWS acted on a mutating call but its answer was lost (``maybe_acted=True``).
    fail_after: float = 0.0
    #: Virtual seconds each call takes, drawn uniformly in this range.
    latency: tuple[float, float] = (0.0, 0.0)
    #: Probability that a Secrets Manager read or write of a value fails on KMS (DecryptionFailure /
    #: EncryptionFailure / access to KMS denied).
    kms_failure: float = 0.0
    #: CreateSecret repeated with the same ClientRequestToken and value is ignored and answers the ARN, as the
    #: parameter's documentation says (False: ResourceExistsException, as moto and possibly AWS answer; the
    #: seed picks either, since the core must survive both).
    create_token_idempotent: bool = True

    @classmethod
    def calm(cls) -> Knobs:
        """Every behaviour off: consistent at once, no faults, no latency (AWS on its best day)."""
        return cls()

    @classmethod
    def from_seed(cls, seed: int) -> Knobs:
        """The switches of run ``seed``: each behaviour on or off and its magnitude, drawn from the seed.

        Drawn from their own generator (``random.Random(f"knobs:{seed}")``), so the world's stream of
        random numbers does not depend on which knobs are on.
        """
        r = random.Random(f"knobs:{seed}")  # noqa: S311 - a simulation, not cryptography

        def on(probability: float) -> bool:
            return r.random() < probability

        throttle: dict[str, tuple[float, float]] = {}
        for service in SERVICES:
            if on(0.25):
                # CloudTrail's LookupEvents is documented at 2 per second per account and region.
                rate = 2.0 if service == "cloudtrail" else round(r.uniform(0.5, 20.0), 2)
                throttle[service] = (rate, float(r.randint(1, 10)))
        return cls(
            propagation_delay=round(r.uniform(1.0, 60.0), 1) if on(0.8) else 0.0,
            list_lag=round(r.uniform(0.5, 15.0), 1) if on(0.5) else 0.0,
            tag_lag=round(r.uniform(0.5, 5.0), 1) if on(0.3) else 0.0,
            secrets_list_lag=round(r.uniform(1.0, 300.0), 1) if on(0.5) else 0.0,
            report_max_age=4 * 3600.0,
            report_generation_time=round(r.uniform(0.5, 30.0), 1) if on(0.5) else 0.0,
            last_used_lag=round(r.uniform(60.0, 4 * 3600.0)) if on(0.7) else 0.0,
            trail_delay=round(r.uniform(5.0, 900.0) if on(0.1) else r.uniform(5.0, 300.0), 1) if on(0.8) else 0.0,
            force_delete_delay=round(r.uniform(1.0, 60.0), 1) if on(0.5) else 0.0,
            throttle=throttle,
            fail_before=r.choice([0.0, 0.0, 0.001, 0.01, 0.03]),
            fail_after=r.choice([0.0, 0.0, 0.001, 0.01, 0.03]),
            latency=(0.01, round(r.uniform(0.05, 2.0), 2)) if on(0.8) else (0.0, 0.0),
            kms_failure=r.choice([0.0, 0.0, 0.0, 0.001, 0.01]),
            create_token_idempotent=on(0.5),
        )

    def describe(self) -> str:
        """One line naming the behaviours switched on (for a failing seed's report)."""
        parts = []
        for name in (
            "propagation_delay",
            "list_lag",
            "tag_lag",
            "secrets_list_lag",
            "report_generation_time",
            "last_used_lag",
            "trail_delay",
            "force_delete_delay",
            "fail_before",
            "fail_after",
            "kms_failure",
        ):
            value = getattr(self, name)
            if value:
                parts.append(f"{name}={value:g}")
        if not self.create_token_idempotent:
            parts.append("create_token_idempotent=False")
        if self.report_max_age != 4 * 3600.0:
            parts.append(f"report_max_age={self.report_max_age:g}")
        if self.latency[1] > 0:
            parts.append(f"latency={self.latency[0]:g}..{self.latency[1]:g}")
        for service, (rate, burst) in sorted(self.throttle.items()):
            parts.append(f"throttle.{service}={rate:g}/s burst {burst:g}")
        return ", ".join(parts) or "calm"


# -- the clock ----------------------------------------------------------------------------------


class VirtualClock:
    """AWS's true time: aware UTC, moved only by :meth:`advance`; callable as the core's Clock."""

    def __init__(self, start: datetime = START) -> None:
        self._start = start
        self._now = start
        #: Seconds since the start (a float, for the token buckets).
        self.seconds = 0.0

    def now(self) -> datetime:
        return self._now

    def __call__(self) -> datetime:
        return self._now

    def advance(self, seconds: float) -> None:
        if seconds > 0:
            self.seconds += seconds
            self._now = self._start + timedelta(seconds=self.seconds)

    def sleep(self, seconds: float) -> None:
        """Time passes (what an injected ``sleep`` does when nothing else runs meanwhile)."""
        self.advance(seconds)


# -- the truth, for the checks ------------------------------------------------------------------


@dataclass(frozen=True)
class TrueKey:
    key_id: str
    user: str
    status: KeyStatus
    created: datetime
    #: The secret access key (only the checks see it: to find it leaked, and to sign with it).
    secret: str
    #: CloudTrail's creator: :meth:`World.rotator_principal` of an actor, or :data:`OPERATOR_ARN`.
    creator: str
    #: The actor whose call created the key ("operator" for the operator).
    creator_actor: str
    #: From when the key authenticates (propagation).
    authenticates_from: datetime
    #: The true last use (not lagged).
    last_used: datetime | None


@dataclass(frozen=True)
class TrueUser:
    name: str
    path: str
    arn: str
    tags: Mapping[str, str]
    keys: Mapping[str, TrueKey]


@dataclass(frozen=True)
class TrueVersion:
    version_id: str
    value: str
    stages: frozenset[str]
    created: datetime


@dataclass(frozen=True)
class TrueSecret:
    name: str
    arn: str
    tags: Mapping[str, str]
    versions: Mapping[str, TrueVersion]
    #: Scheduled for deletion (DeletedDate set): reads fail, the name cannot be created again.
    deleted: bool
    #: When the scheduled deletion purges it (None when not scheduled).
    purge_at: datetime | None

    def holder(self, stage: str) -> TrueVersion | None:
        return next((v for v in self.versions.values() if stage in v.stages), None)


@dataclass(frozen=True)
class Truth:
    """A frozen snapshot of the world (no faults, not counted)."""

    users: Mapping[str, TrueUser]
    secrets: Mapping[str, TrueSecret]
    #: Every key that existed and is deleted now (its own deletion or its user's), as it was when deleted.
    deleted_keys: Mapping[str, TrueKey]


@dataclass(frozen=True)
class Audit:
    """One change AWS carried out (including those whose answer was lost), in order."""

    at: datetime
    actor: str
    operation: str  # "iam:DeleteAccessKey"
    target: str  # user name, secret name or lease name
    key_id: str | None = None
    detail: str = ""


# -- internal state -----------------------------------------------------------------------------


class _History(Generic[T]):
    """A value over time, read as of an earlier instant (eventual consistency). ``None``: did not exist."""

    __slots__ = ("times", "values")

    def __init__(self) -> None:
        self.times: list[datetime] = []
        self.values: list[T | None] = []

    def set(self, at: datetime, value: T | None, keep: float) -> None:
        if self.times and self.times[-1] >= at:
            self.values[-1] = value  # the same instant: the later write wins
            return
        self.times.append(at)
        self.values.append(value)
        # Forget what no read can reach any more (older than the longest lag), keeping one entry before it.
        horizon = at - timedelta(seconds=keep)
        drop = bisect_right(self.times, horizon) - 1
        if drop > 0:
            del self.times[:drop]
            del self.values[:drop]

    def at(self, when: datetime) -> T | None:
        i = bisect_right(self.times, when) - 1
        return self.values[i] if i >= 0 else None


@dataclass(slots=True)
class _Key:
    key_id: str
    user: str
    secret: str
    created: datetime
    status: KeyStatus
    creator: str
    creator_actor: str
    auth_from: datetime
    #: True uses (at, service, region), oldest first; only the newest that a lagged read can reach are kept.
    uses: list[tuple[datetime, str, str]] = field(default_factory=list)

    def record_use(self, at: datetime, service: str, region: str, lag: float) -> None:
        uses = self.uses
        uses.append((at, service, region))
        horizon = at - timedelta(seconds=lag)
        while len(uses) > 1 and uses[1][0] <= horizon:
            del uses[0]

    def use_seen(self, now: datetime, lag: float) -> tuple[datetime, str, str] | None:
        """The last use IAM reports at ``now`` (uses show after ``lag`` seconds)."""
        visible = now - timedelta(seconds=lag) if lag else now
        for use in reversed(self.uses):
            if use[0] <= visible:
                return use
        return None

    def truth(self) -> TrueKey:
        return TrueKey(
            key_id=self.key_id,
            user=self.user,
            status=self.status,
            created=self.created,
            secret=self.secret,
            creator=self.creator,
            creator_actor=self.creator_actor,
            authenticates_from=self.auth_from,
            last_used=self.uses[-1][0] if self.uses else None,
        )


@dataclass(slots=True)
class _User:
    name: str
    path: str
    arn: str
    tags: dict[str, str]
    keys: dict[str, _Key] = field(default_factory=dict)
    #: ARNs of the attached managed policies (AWS's quarantine policy on a leaked key, say).
    policies: list[str] = field(default_factory=list)


@dataclass(slots=True)
class _Version:
    value: str
    stages: set[str]
    created: datetime


@dataclass(slots=True)
class _Secret:
    name: str
    arn: str
    tags: dict[str, str]
    created: datetime
    changed: datetime
    versions: dict[str, _Version] = field(default_factory=dict)
    deleted_at: datetime | None = None
    purge_at: datetime | None = None
    kms_broken: bool = False

    def holder(self, stage: str) -> str | None:
        for vid, version in self.versions.items():
            if stage in version.stages:
                return vid
        return None

    def summary(self) -> SecretSummary:
        return SecretSummary(
            name=self.name,
            arn=self.arn,
            tags=dict(self.tags),
            versions={vid: tuple(sorted(v.stages)) for vid, v in self.versions.items() if v.stages},
            last_changed=self.changed,
            deleted=self.deleted_at is not None,
            created=self.created,
        )


class _Refused(Exception):
    """AWS refused the call with ``code``: the port raises what the boundary's one error map makes of it
    (``rotator.aws.errors``: ``NoSuchEntity`` -> NotFoundError, ...; ``status`` >= 500: maybe acted)."""

    def __init__(self, code: str, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.cls = ERROR_CLASSES.get(code, AwsError)
        self.code = code
        self.message = message
        self.status = status


def _no_such_entity(message: str) -> _Refused:
    return _Refused("NoSuchEntity", message, 404)


# -- the world ----------------------------------------------------------------------------------


class World:
    """The simulated AWS: one account's IAM, Secrets Manager, STS, CloudTrail, Organizations and DynamoDB."""

    def __init__(self, seed: int, *, knobs: Knobs | None = None) -> None:
        self.seed = seed
        self.knobs = knobs if knobs is not None else Knobs.from_seed(seed)
        self.rng = random.Random(seed)  # noqa: S311 - a simulation, not cryptography
        self.clock = VirtualClock()
        #: Called before every port call (``hook(actor, "iam:CreateAccessKey")``) and after a mutating call was
        #: applied but before its answer returns (``hook(actor, "acted:iam:CreateAccessKey")``); may raise Killed.
        self.hook: Callable[[str, str], None] | None = None
        #: How ``actor`` waits inside a port call (``sleep(actor, seconds)``): the throttling back-off and the
        #: credential report's polling. None: the clock simply advances.
        self.sleep: Callable[[str, float], None] | None = None
        #: Every call in order: (actor, "service:Operation"); operator actions as ("operator", ...).
        self.calls: list[tuple[str, str]] = []
        #: Every change AWS carried out, in order.
        self.audit: list[Audit] = []
        #: Faults injected so far, by kind ("throttled", "before", "after", "kms").
        self.faults: dict[str, int] = {"throttled": 0, "before": 0, "after": 0, "kms": 0}
        self._dead: set[str] = set()
        # IAM
        self._users: dict[str, _User] = {}
        self._user_view: dict[str, _History[UserDetail]] = {}
        self._keys_view: dict[str, _History[tuple[AccessKey, ...]]] = {}
        self._key_index: dict[str, _Key] = {}
        self._deleted_keys: dict[str, TrueKey] = {}
        self._key_serial = 0
        #: CloudTrail: key id -> (creator principal, event time, delivered at).
        self._trail: dict[str, tuple[str, datetime, datetime]] = {}
        self._report: CredentialReport | None = None
        #: A report being generated: (its content as of the start, ready at).
        self._report_pending: tuple[CredentialReport, datetime] | None = None
        # Secrets Manager
        self._secrets: dict[str, _Secret] = {}
        self._secret_view: dict[str, _History[SecretSummary]] = {}
        # DynamoDB and Organizations
        self._items: dict[tuple[str, str], LeaseRecord] = {}
        self._org_accounts: dict[str, list[OrgAccount]] = {
            ROOT: [OrgAccount(ACCOUNT, f"arn:aws:organizations::{ACCOUNT}:account/o-sim/{ACCOUNT}", "sim", "ACTIVE")]
        }
        self._org_children: dict[str, list[str]] = {ROOT: []}
        # token buckets: service -> [tokens, at (clock seconds)]
        self._buckets: dict[str, list[float]] = {s: [burst, 0.0] for s, (_rate, burst) in self.knobs.throttle.items()}
        self._truth: Truth | None = None
        self._keep = max(self.knobs.list_lag, self.knobs.tag_lag, self.knobs.secrets_list_lag, 1.0)

    # -- the ports, as an actor sees them -------------------------------------------------------

    def account(self, actor: str) -> AccountPort:
        """The account's IAM, Secrets Manager and STS ports as ``actor`` (a rotator process) sees them."""
        return SimAccount(self, actor)  # a new process's view: nothing cached (own_principal asks STS again)

    def lease_store(self, actor: str) -> LeaseStore:
        """The DynamoDB lease table as ``actor`` sees it (conditional writes, consistent reads)."""
        return SimLeaseStore(self, actor)

    def organizations(self, actor: str) -> OrganizationsPort:
        return SimOrganizations(self, actor)

    def rotator_principal(self, actor: str) -> str:
        """The ARN ``actor`` acts as: one role, a session per actor (``same_principal`` across replicas)."""
        return f"arn:aws:sts::{ACCOUNT}:assumed-role/Rotator/{actor}"

    # -- crashes ------------------------------------------------------------------------------

    def kill(self, actor: str) -> None:
        """``actor`` is dead: every later call by it raises :class:`Killed` until :meth:`revive`."""
        self._dead.add(actor)

    def revive(self, actor: str) -> None:
        self._dead.discard(actor)

    def killed(self, actor: str) -> bool:
        return actor in self._dead

    # -- operator and consumers (applied at once, never faulted) ----------------------------------

    def add_user(self, name: str, path: str = "/", tags: Mapping[str, str] | None = None) -> str:
        """A user (tags default to ``{"rotator": "enabled"}``); returns its ARN."""
        self._operator("iam:CreateUser")
        if name in self._users:
            raise ValueError(f"user {name} exists (IAM: EntityAlreadyExists)")
        arn = f"arn:aws:iam::{ACCOUNT}:user{path}{name}"
        user = _User(name, path, arn, dict({"rotator": "enabled"} if tags is None else tags))
        self._users[name] = user
        self._user_changed(user.name)
        self._keys_changed(user.name)
        self._audit(OPERATOR, "iam:CreateUser", name)
        return arn

    def delete_user(self, name: str) -> None:
        """The operator deletes the user (its keys first, as IAM requires); later calls get NoSuchEntity.

        https://docs.aws.amazon.com/IAM/latest/APIReference/API_DeleteUser.html (DeleteConflict while keys remain)
        """
        self._operator("iam:DeleteUser")
        user = self._users.get(name)
        if user is None:
            return
        for key_id in list(user.keys):
            self._delete_key(OPERATOR, user, key_id)
        del self._users[name]
        self._user_changed(name)
        self._keys_changed(name)
        self._audit(OPERATOR, "iam:DeleteUser", name)

    def attach_policy(self, user: str, policy_arn: str = QUARANTINE_POLICY) -> bool:
        """A managed policy is attached to ``user``: by default what AWS does to a user whose key it found
        in public (``AWSCompromisedKeyQuarantineV2``).

        https://docs.aws.amazon.com/aws-managed-policy/latest/reference/AWSCompromisedKeyQuarantineV2.html
        """
        self._operator("iam:AttachUserPolicy")
        found = self._users.get(user)
        if found is None:
            return False
        if policy_arn not in found.policies:
            found.policies.append(policy_arn)
            self._user_changed(user)
            self._audit(OPERATOR, "iam:AttachUserPolicy", user, detail=policy_arn)
        return True

    def operator_create_key(self, user: str) -> NewKey | None:
        """The operator creates a key; None when IAM refuses (two keys already, or no such user)."""
        self._operator("iam:CreateAccessKey")
        try:
            return self._create_key(OPERATOR, OPERATOR_ARN, user)
        except _Refused:
            return None

    def operator_set_key_status(self, user: str, key_id: str, status: KeyStatus) -> bool:
        """True when applied (False: no such user or key)."""
        self._operator("iam:UpdateAccessKey")
        try:
            self._set_status(OPERATOR, user, key_id, status)
        except _Refused:
            return False
        return True

    def operator_delete_key(self, user: str, key_id: str) -> bool:
        self._operator("iam:DeleteAccessKey")
        found = self._users.get(user)
        if found is None or key_id not in found.keys:
            return False
        self._delete_key(OPERATOR, found, key_id)
        return True

    def operator_tag_user(self, user: str, tags: Mapping[str, str]) -> bool:
        self._operator("iam:TagUser")
        try:
            self._tag_user(OPERATOR, user, tags)
        except _Refused:
            return False
        return True

    def operator_untag_user(self, user: str, keys: Sequence[str]) -> bool:
        self._operator("iam:UntagUser")
        try:
            self._untag_user(OPERATOR, user, keys)
        except _Refused:
            return False
        return True

    def operator_delete_secret(self, name: str, *, recovery_days: int | None) -> bool:
        """DeleteSecret: ``recovery_days`` (7-30) schedules the deletion; None forces it (no recovery).

        A scheduled secret cannot be read or written, and its name cannot be created again, until it is
        purged at the end of the window (or restored). A forced deletion happens asynchronously: the name
        stays taken for ``Knobs.force_delete_delay``.
        https://docs.aws.amazon.com/secretsmanager/latest/apireference/API_DeleteSecret.html
        """
        self._operator("secretsmanager:DeleteSecret")
        secret = self._live_secret(name)
        if secret is None or secret.deleted_at is not None:
            return False
        if recovery_days is not None and not 7 <= recovery_days <= 30:
            raise ValueError("RecoveryWindowInDays is 7 to 30")
        now = self.clock()
        secret.deleted_at = now
        secret.purge_at = (
            now + timedelta(days=recovery_days)
            if recovery_days is not None
            else now + timedelta(seconds=self.knobs.force_delete_delay)
        )
        secret.changed = now
        self._secret_changed(secret)
        self._audit(OPERATOR, "secretsmanager:DeleteSecret", name, detail=f"recovery_days={recovery_days}")
        self._live_secret(name)  # a forced deletion without delay is gone at once
        return True

    def operator_restore_secret(self, name: str) -> bool:
        """RestoreSecret: cancel a scheduled deletion.

        https://docs.aws.amazon.com/secretsmanager/latest/apireference/API_RestoreSecret.html
        """
        self._operator("secretsmanager:RestoreSecret")
        secret = self._live_secret(name)
        if secret is None or secret.deleted_at is None:
            return False
        secret.deleted_at = secret.purge_at = None
        secret.changed = self.clock()
        self._secret_changed(secret)
        self._audit(OPERATOR, "secretsmanager:RestoreSecret", name)
        return True

    def operator_break_kms(self, name: str, broken: bool = True) -> None:
        """The secret's KMS key is disabled (every read and write of its value fails) or enabled again."""
        self._operator("kms:DisableKey" if broken else "kms:EnableKey")
        secret = self._live_secret(name)
        if secret is not None:
            secret.kms_broken = broken

    def sign(self, key_id: str, secret: str, *, service: str = "s3", region: str = REGION) -> bool:
        """A consumer's signed call: True when the key authenticates now; a success is recorded as a use."""
        key = self._key_index.get(key_id)
        if key is None or key.status is not KeyStatus.ACTIVE or key.secret != secret:
            return False
        now = self.clock()
        if now < key.auth_from:
            return False
        key.record_use(now, service, region, self.knobs.last_used_lag)
        self._truth = None
        return True

    def add_org_account(self, account_id: str, name: str, *, state: str = "ACTIVE", parent: str = ROOT) -> None:
        """A member account under ``parent`` (the root or an OU, created on first use under the root)."""
        if parent not in self._org_accounts:
            self._org_accounts[parent] = []
            self._org_children.setdefault(parent, [])
            self._org_children[ROOT].append(parent)
        arn = f"arn:aws:organizations::{ACCOUNT}:account/o-sim/{account_id}"
        self._org_accounts[parent].append(OrgAccount(account_id, arn, name, state))

    # -- observation (no faults, not counted) ---------------------------------------------------

    def truth(self) -> Truth:
        """A frozen snapshot of what AWS holds now (cached until the next change)."""
        self._purge_due()
        if self._truth is None:
            users = {
                user.name: TrueUser(
                    user.name,
                    user.path,
                    user.arn,
                    dict(user.tags),
                    {kid: key.truth() for kid, key in user.keys.items()},
                )
                for user in self._users.values()
            }
            secrets = {
                secret.name: TrueSecret(
                    secret.name,
                    secret.arn,
                    dict(secret.tags),
                    {
                        vid: TrueVersion(vid, v.value, frozenset(v.stages), v.created)
                        for vid, v in secret.versions.items()
                    },
                    secret.deleted_at is not None,
                    secret.purge_at,
                )
                for secret in self._secrets.values()
            }
            self._truth = Truth(users, secrets, dict(self._deleted_keys))
        return self._truth

    # == the machinery ===========================================================================

    def _operator(self, operation: str) -> None:
        self.calls.append((OPERATOR, operation))

    def _audit(self, actor: str, operation: str, target: str, key_id: str | None = None, detail: str = "") -> None:
        self.audit.append(Audit(self.clock(), actor, operation, target, key_id, detail))
        self._truth = None

    def _lagged(self, lag: float) -> datetime:
        """The instant a read with up to ``lag`` seconds of staleness sees (drawn per read)."""
        now = self.clock()
        if lag <= 0:
            return now
        return now - timedelta(seconds=self.rng.uniform(0.0, lag))

    def _wait(self, actor: str, seconds: float) -> None:
        if self.sleep is not None:
            self.sleep(actor, seconds)
        else:
            self.clock.advance(seconds)

    def call(  # noqa: PLR0912 - the boundary's steps, in order
        self,
        actor: str,
        service: str,
        operation: str,
        apply: Callable[[], T],
        *,
        mutating: bool = False,
        once: bool = False,
    ) -> T:
        """One AWS call by ``actor``, as the boundary (rotator/aws/transport.py) would report it to the core.

        Order: refused if the actor is dead; recorded; ``hook`` (yield / crash before AWS acted); latency;
        the service's token bucket (the boundary's retries with back-off; ThrottledError when spent);
        a fault before AWS acted; AWS acts (``apply``); ``hook("acted:...")`` for a change (crash after AWS
        acted); a lost answer.
        """
        if actor in self._dead:
            raise Killed(actor)
        op = f"{service}:{operation}"
        self.calls.append((actor, op))
        hook = self.hook
        if hook is not None:
            try:
                hook(actor, op)
            except Killed:
                self._dead.add(actor)
                raise
            if actor in self._dead:
                raise Killed(actor)
        knobs = self.knobs
        rng = self.rng
        if knobs.latency[1] > 0:
            self.clock.advance(rng.uniform(knobs.latency[0], knobs.latency[1]))
        if service in self._buckets:
            self._take_token(actor, service, operation)
        if knobs.fail_before and rng.random() < knobs.fail_before:
            self.faults["before"] += 1
            raise self._failure_before(service, operation) from None
        try:
            result = apply()
        except _Refused as refused:
            raise refused.cls(
                f"{op}: {refused.code}: {refused.message}",
                service=service,
                operation=operation,
                code=refused.code,
                maybe_acted=refused.status >= 500,  # rotator.aws.errors.translate
            ) from None
        if mutating:
            if hook is not None:
                try:
                    hook(actor, "acted:" + op)
                except Killed:
                    self._dead.add(actor)
                    raise
                if actor in self._dead:
                    raise Killed(actor)
            if knobs.fail_after and rng.random() < knobs.fail_after:
                self.faults["after"] += 1
                if once:
                    raise self._lost_answer(service, operation) from None
                # botocore retries a call whose answer was lost (the boundary allows a second try):
                # the caller sees the second attempt's answer - "not found" for a delete that happened.
                try:
                    return apply()
                except _Refused as refused:
                    raise refused.cls(
                        f"{op}: {refused.code}: {refused.message}",
                        service=service,
                        operation=operation,
                        code=refused.code,
                        maybe_acted=refused.status >= 500,
                    ) from None
        return result

    def _take_token(self, actor: str, service: str, operation: str) -> None:
        """The service's token bucket, with the boundary's retries: botocore's ``standard`` mode backs off
        ``random() * 2**attempt`` seconds (at most 20) between ``max_attempts`` attempts.

        https://docs.aws.amazon.com/sdkref/latest/guide/feature-retry-behavior.html
        """
        rate, burst = self.knobs.throttle[service]
        bucket = self._buckets[service]
        for attempt in range(1, self.knobs.max_attempts + 1):
            now = self.clock.seconds
            bucket[0] = min(burst, bucket[0] + (now - bucket[1]) * rate)
            bucket[1] = now
            if bucket[0] >= 1.0:
                bucket[0] -= 1.0
                return
            if attempt < self.knobs.max_attempts:
                self._wait(actor, min(20.0, self.rng.random() * 2**attempt))
                if actor in self._dead:
                    raise Killed(actor)
        self.faults["throttled"] += 1
        raise ThrottledError(
            f"{service}:{operation}: Throttling: Rate exceeded", service=service, operation=operation, code="Throttling"
        )

    def _failure_before(self, service: str, operation: str) -> AwsError:
        """AWS did not act: a refused connection (the core knows), or a 5xx (``maybe_acted``: it cannot know)."""
        if self.rng.random() < 0.5:
            return UnreachableError(
                f"{service}:{operation}: endpoint unreachable (EndpointConnectionError)",
                service=service,
                operation=operation,
            )
        code = self.rng.choice(["InternalFailure", "ServiceUnavailable", "ServiceFailure"])
        return AwsError(
            f"{service}:{operation}: {code}: sim 5xx", service=service, operation=operation, code=code, maybe_acted=True
        )

    def _lost_answer(self, service: str, operation: str) -> AwsError:
        """AWS acted, the answer was lost: the boundary's ``maybe_acted`` errors (rotator/aws/errors.py)."""
        if self.rng.random() < 0.5:
            return UnreachableError(
                f"{service}:{operation}: connection lost before the answer (ReadTimeoutError)",
                service=service,
                operation=operation,
                maybe_acted=True,
            )
        return AwsError(
            f"{service}:{operation}: unreadable answer", service=service, operation=operation, maybe_acted=True
        )

    def _kms(self, secret: _Secret, write: bool) -> None:
        """KMS refuses to encrypt or decrypt the value (a disabled key, denied access, a KMS fault).

        https://docs.aws.amazon.com/secretsmanager/latest/apireference/API_GetSecretValue.html (DecryptionFailure)
        https://docs.aws.amazon.com/secretsmanager/latest/apireference/API_PutSecretValue.html (EncryptionFailure)
        """
        broken = secret.kms_broken
        if not broken and not (self.knobs.kms_failure and self.rng.random() < self.knobs.kms_failure):
            return
        self.faults["kms"] += 1
        if broken or self.rng.random() < 0.5:
            raise _Refused("AccessDeniedException", "Access to KMS is not allowed")
        if write:
            raise _Refused("EncryptionFailure", "Secrets Manager can't encrypt the protected secret text")
        raise _Refused("DecryptionFailure", "Secrets Manager can't decrypt the protected secret text")

    # -- views (eventual consistency) -----------------------------------------------------------

    def _user_changed(self, name: str) -> None:
        user = self._users.get(name)
        detail = (
            UserDetail(user.name, user.path, user.arn, dict(user.tags), tuple(user.policies))
            if user is not None
            else None
        )
        self._user_view.setdefault(name, _History()).set(self.clock(), detail, self._keep)
        self._truth = None

    def _keys_changed(self, name: str) -> None:
        user = self._users.get(name)
        listing = (
            tuple(AccessKey(k.key_id, k.status, k.created) for k in user.keys.values()) if user is not None else None
        )
        self._keys_view.setdefault(name, _History()).set(self.clock(), listing, self._keep)
        self._truth = None

    def _secret_changed(self, secret: _Secret) -> None:
        self._secret_view.setdefault(secret.name, _History()).set(secret.changed, secret.summary(), self._keep)
        self._truth = None

    def _purge_due(self) -> None:
        now = self.clock()
        for name in [n for n, s in self._secrets.items() if s.purge_at is not None and s.purge_at <= now]:
            self._purge(name)

    def _purge(self, name: str) -> None:
        secret = self._secrets.pop(name)
        assert secret.purge_at is not None
        self._secret_view.setdefault(name, _History()).set(secret.purge_at, None, self._keep)
        self._audit("aws", "secretsmanager:PurgeSecret", name)

    def _live_secret(self, name: str) -> _Secret | None:
        """The secret under ``name`` now (purging it first when its deletion window has passed)."""
        secret = self._secrets.get(name)
        if secret is not None and secret.purge_at is not None and secret.purge_at <= self.clock():
            self._purge(name)
            return None
        return secret

    # -- IAM ------------------------------------------------------------------------------------

    def _user(self, name: str) -> _User:
        user = self._users.get(name)
        if user is None:
            raise _no_such_entity(f"The user with name {name} cannot be found.")
        return user

    def _create_key(self, actor: str, principal: str, user_name: str) -> NewKey:
        """CreateAccessKey: at most two keys per user; a new key authenticates after propagation; CloudTrail
        records who created it, delivered after a delay.

        https://docs.aws.amazon.com/IAM/latest/APIReference/API_CreateAccessKey.html
        https://docs.aws.amazon.com/IAM/latest/UserGuide/troubleshoot_general.html#troubleshoot_general_eventual-consistency
        https://docs.aws.amazon.com/awscloudtrail/latest/userguide/how-cloudtrail-works.html (typically 5 min)
        """
        user = self._user(user_name)
        if len(user.keys) >= KEYS_PER_USER:
            raise _Refused("LimitExceeded", f"Cannot exceed quota for AccessKeysPerUser: {KEYS_PER_USER}", 409)
        self._key_serial += 1
        now = self.clock()
        rng = self.rng
        key_id = f"AKIASIM{self._key_serial:013d}"
        secret = "".join(rng.choices("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/", k=40))
        created = now.replace(microsecond=0)  # IAM's CreateDate has whole seconds
        auth_from = now + timedelta(seconds=rng.uniform(0.0, self.knobs.propagation_delay))
        key = _Key(key_id, user_name, secret, created, KeyStatus.ACTIVE, principal, actor, auth_from)
        user.keys[key_id] = key
        self._key_index[key_id] = key
        self._trail[key_id] = (principal, now, now + timedelta(seconds=rng.uniform(0.0, self.knobs.trail_delay)))
        self._keys_changed(user_name)
        self._audit(actor, "iam:CreateAccessKey", user_name, key_id)
        return NewKey(key_id, SecretText(secret), created)

    def _owned_key(self, user_name: str, key_id: str) -> tuple[_User, _Key]:
        user = self._user(user_name)
        key = user.keys.get(key_id)
        if key is None:
            raise _no_such_entity(f"The Access Key with id {key_id} cannot be found.")
        return user, key

    def _set_status(self, actor: str, user_name: str, key_id: str, status: KeyStatus) -> None:
        """UpdateAccessKey: an Inactive key no longer authenticates (immediately, in this model).

        https://docs.aws.amazon.com/IAM/latest/APIReference/API_UpdateAccessKey.html
        """
        _user, key = self._owned_key(user_name, key_id)
        key.status = status
        self._keys_changed(user_name)
        self._audit(actor, "iam:UpdateAccessKey", user_name, key_id, status.value)

    def _delete_key(self, actor: str, user: _User, key_id: str) -> None:
        key = user.keys.pop(key_id)
        self._key_index.pop(key_id, None)
        self._deleted_keys[key_id] = key.truth()
        self._keys_changed(user.name)
        self._audit(actor, "iam:DeleteAccessKey", user.name, key_id)

    def _tag_user(self, actor: str, user_name: str, tags: Mapping[str, str]) -> None:
        """TagUser: at most 50 tags; keys 1-128 and values 0-256 characters of a restricted set.

        https://docs.aws.amazon.com/IAM/latest/APIReference/API_TagUser.html
        """
        user = self._user(user_name)
        for key, value in tags.items():
            if not (1 <= len(key) <= 128 and len(value) <= 256 and _TAG_TEXT.match(key) and _TAG_TEXT.match(value)):
                raise _Refused("InvalidInput", f"invalid tag {key!r}")
        if len(user.tags.keys() | tags.keys()) > TAGS_PER_USER:
            raise _Refused("LimitExceeded", f"Cannot exceed quota for TagsPerUser: {TAGS_PER_USER}", 409)
        user.tags.update(tags)
        self._user_changed(user_name)
        self._audit(actor, "iam:TagUser", user_name, detail=" ".join(sorted(tags)))

    def _untag_user(self, actor: str, user_name: str, keys: Sequence[str]) -> None:
        user = self._user(user_name)
        for key in keys:
            user.tags.pop(key, None)
        self._user_changed(user_name)
        self._audit(actor, "iam:UntagUser", user_name, detail=" ".join(sorted(keys)))

    def _report_rows(self) -> dict[str, list[ReportKey]]:
        now = self.clock()
        lag = self.knobs.last_used_lag
        rows: dict[str, list[ReportKey]] = {}
        for user in self._users.values():
            slots = []
            for key in sorted(user.keys.values(), key=lambda k: (k.created, k.key_id)):
                use = key.use_seen(now, lag)
                slots.append(
                    ReportKey(
                        key.status is KeyStatus.ACTIVE,
                        key.created,
                        use[0] if use else None,
                        use[1] if use else None,
                        use[2] if use else None,
                    )
                )
            rows[user.name] = slots
        return rows

    def _generate_report(self) -> str:
        """GenerateCredentialReport: a new report only when the one IAM holds is older than 4 hours.

        https://docs.aws.amazon.com/IAM/latest/UserGuide/id_credentials_getting-report.html
        https://docs.aws.amazon.com/IAM/latest/APIReference/API_GenerateCredentialReport.html
        """
        now = self.clock()
        pending = self._report_pending
        if pending is not None:
            if now < pending[1]:
                return "INPROGRESS"
            self._report, self._report_pending = pending[0], None
        report = self._report
        if (
            report is not None
            and report.generated is not None
            and (now - report.generated).total_seconds() <= self.knobs.report_max_age
        ):
            return "COMPLETE"
        started = now.replace(microsecond=0)
        content = CredentialReport(started, self._report_rows())
        ready = now + timedelta(seconds=self.knobs.report_generation_time)
        if ready <= now:
            self._report = content
            return "COMPLETE"
        self._report_pending = (content, ready)
        return "STARTED"

    def _get_report(self) -> CredentialReport:
        """GetCredentialReport: the last completed report (ReportNotPresent before the first).

        https://docs.aws.amazon.com/IAM/latest/APIReference/API_GetCredentialReport.html
        """
        pending = self._report_pending
        if pending is not None and self.clock() >= pending[1]:
            self._report, self._report_pending = pending[0], None
        if self._report is None:
            raise _Refused("ReportNotPresent", "The credential report does not exist.", 410)
        return self._report

    def _key_last_used(self, key_id: str) -> KeyLastUsed:
        """GetAccessKeyLastUsed: the use IAM has recorded, which lags the use itself.

        https://docs.aws.amazon.com/IAM/latest/APIReference/API_GetAccessKeyLastUsed.html
        https://docs.aws.amazon.com/IAM/latest/UserGuide/access_policies_last-accessed.html (within 4 hours)
        """
        key = self._key_index.get(key_id)
        if key is None:
            raise _no_such_entity(f"The Access Key with id {key_id} cannot be found.")
        use = key.use_seen(self.clock(), self.knobs.last_used_lag)
        return KeyLastUsed(*use) if use else KeyLastUsed()

    def _key_creation(self, key_id: str, created: datetime) -> KeyCreation | None:
        """LookupEvents: the CreateAccessKey event once delivered, for 90 days, in the adapter's window.

        https://docs.aws.amazon.com/awscloudtrail/latest/userguide/view-cloudtrail-events.html
        """
        event = self._trail.get(key_id)
        if event is None:
            return None
        principal, at, delivered = event
        now = self.clock()
        if now < delivered or now - at > TRAIL_RETENTION or abs(at - created) > timedelta(hours=1):
            return None
        return KeyCreation(key_id, principal)

    def _authenticate(self, key_id: str, secret: str) -> str:
        """STS GetCallerIdentity signed with the key: its user's ARN once propagated, while Active.

        https://docs.aws.amazon.com/STS/latest/APIReference/API_GetCallerIdentity.html
        """
        key = self._key_index.get(key_id)
        now = self.clock()
        if key is None or key.status is not KeyStatus.ACTIVE or now < key.auth_from:
            raise _Refused("InvalidClientTokenId", "The security token included in the request is invalid.", 403)
        if key.secret != secret:
            raise _Refused("SignatureDoesNotMatch", "The request signature we calculated does not match.", 403)
        key.record_use(now, "sts", REGION, self.knobs.last_used_lag)
        self._truth = None
        return self._users[key.user].arn

    # -- Secrets Manager ------------------------------------------------------------------------

    def _writable(self, name: str) -> _Secret:
        secret = self._live_secret(name)
        if secret is None:
            raise _Refused("ResourceNotFoundException", "Secrets Manager can't find the specified secret.")
        if secret.deleted_at is not None:
            raise _Refused(
                "InvalidRequestException",
                "You can't perform this operation on the secret because it was marked for deletion.",
            )
        return secret

    def _create_secret(  # noqa: PLR0917 - the port's own arguments
        self, actor: str, name: str, value: str, token: str, tags: Mapping[str, str], kms_key_id: str | None
    ) -> str:
        """CreateSecret: the first version gets AWSCURRENT; an existing name is ResourceExistsException, and a
        name scheduled for deletion is InvalidRequestException until purged.

        https://docs.aws.amazon.com/secretsmanager/latest/apireference/API_CreateSecret.html
        """
        if not _SECRET_NAME.match(name):
            raise _Refused("ValidationException", "invalid secret name")
        if len(tags) > TAGS_PER_SECRET:
            raise _Refused("ValidationException", f"more than {TAGS_PER_SECRET} tags")
        existing = self._live_secret(name)
        if existing is not None:
            if existing.deleted_at is not None:
                raise _Refused(
                    "InvalidRequestException",
                    "You can't create this secret because a secret with this name is already scheduled for deletion.",
                )
            version = existing.versions.get(token)
            if version is not None and self.knobs.create_token_idempotent:
                if version.value == value:
                    return existing.arn  # the same request again: ignored (the documented idempotency)
                raise _Refused(
                    "ResourceExistsException",
                    "You can't modify an existing version, you can only create new versions.",
                )
            raise _Refused(
                "ResourceExistsException",
                f"The operation failed because the secret {name} already exists.",
            )
        now = self.clock()
        suffix = "".join(self.rng.choices("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz", k=6))
        secret = _Secret(
            name, f"arn:aws:secretsmanager:{REGION}:{ACCOUNT}:secret:{name}-{suffix}", dict(tags), now, now
        )
        self._kms(secret, write=True)
        secret.versions[token] = _Version(value, {AWSCURRENT}, now)
        self._secrets[name] = secret
        self._secret_changed(secret)
        self._audit(actor, "secretsmanager:CreateSecret", name, detail=token)
        return secret.arn

    def _put_value(self, actor: str, name: str, value: str, token: str, stages: Sequence[str]) -> None:
        """PutSecretValue, exactly as documented: a token already used with the same value is ignored (no label
        moves); with another value it fails (ResourceExistsException); a new version takes its labels from the
        versions that held them, AWSCURRENT by default and always on a first version, and the version that loses
        AWSCURRENT gets AWSPREVIOUS.

        https://docs.aws.amazon.com/secretsmanager/latest/apireference/API_PutSecretValue.html
        """
        secret = self._writable(name)
        existing = secret.versions.get(token)
        if existing is not None:
            if existing.value != value:
                raise _Refused(
                    "ResourceExistsException",
                    "You can't modify an existing version, you can only create new versions.",
                )
            return
        self._kms(secret, write=True)
        now = self.clock()
        first = not secret.versions
        secret.versions[token] = _Version(value, set(), now)
        wanted = list(dict.fromkeys(stages)) if stages else [AWSCURRENT]
        if first and AWSCURRENT not in wanted:
            wanted.append(AWSCURRENT)
        for stage in wanted:
            self._attach(secret, stage, token)
        self._prune_versions(secret, now)
        secret.changed = now
        self._secret_changed(secret)
        self._audit(actor, "secretsmanager:PutSecretValue", name, detail=f"{token} {' '.join(wanted)}")

    @staticmethod
    def _attach(secret: _Secret, stage: str, version_id: str) -> None:
        holder = secret.holder(stage)
        if holder == version_id:
            return
        if holder is not None:
            secret.versions[holder].stages.discard(stage)
            if stage == AWSCURRENT:
                World._attach(secret, AWSPREVIOUS, holder)
        secret.versions[version_id].stages.add(stage)

    @staticmethod
    def _prune_versions(secret: _Secret, now: datetime) -> None:
        """Secrets Manager keeps the 100 most recent versions and every version of the last 24 hours; it
        removes older versions without a label."""
        if len(secret.versions) <= VERSIONS_KEPT:
            return
        recent = set(list(secret.versions)[-VERSIONS_KEPT:])
        for vid in [
            vid
            for vid, v in secret.versions.items()
            if vid not in recent and not v.stages and now - v.created > VERSIONS_KEPT_FOR
        ]:
            del secret.versions[vid]

    def _move_stage(self, actor: str, name: str, stage: str, to_version: str | None, from_version: str | None) -> None:
        """UpdateSecretVersionStage: moving a label another version holds needs RemoveFromVersionId naming that
        version, and RemoveFromVersionId must name the version that holds it (else InvalidParameterException);
        moving AWSCURRENT leaves AWSPREVIOUS on the version it left.

        https://docs.aws.amazon.com/secretsmanager/latest/apireference/API_UpdateSecretVersionStage.html
        """
        secret = self._writable(name)
        holder = secret.holder(stage)
        if to_version is not None and to_version not in secret.versions:
            raise _Refused("ResourceNotFoundException", f"version {to_version} not found")
        if from_version is not None and from_version != holder:
            raise _Refused("InvalidParameterException", f"The staging label {stage} is not attached to {from_version}")
        if to_version is not None and holder not in (None, to_version) and from_version != holder:
            raise _Refused(
                "InvalidParameterException",
                f"The staging label {stage} is attached to version {holder}; specify RemoveFromVersionId",
            )
        if to_version is None:
            if from_version is not None:
                secret.versions[from_version].stages.discard(stage)
        else:
            self._attach(secret, stage, to_version)
        secret.changed = self.clock()
        self._secret_changed(secret)
        self._audit(
            actor, "secretsmanager:UpdateSecretVersionStage", name, detail=f"{stage} {from_version}->{to_version}"
        )

    def _secret_value(self, name: str, stage: str | None, version_id: str | None) -> SecretText:
        """GetSecretValue: AWSCURRENT by default; a secret scheduled for deletion cannot be read.

        https://docs.aws.amazon.com/secretsmanager/latest/apireference/API_GetSecretValue.html
        """
        secret = self._writable(name)
        wanted = version_id if version_id else secret.holder(stage or AWSCURRENT)
        if wanted is None or wanted not in secret.versions:
            raise _Refused(
                "ResourceNotFoundException",
                "Secrets Manager can't find the specified secret value for staging label or version.",
            )
        if version_id and stage and stage not in secret.versions[wanted].stages:
            raise _Refused("ResourceNotFoundException", "the version does not hold that label")
        self._kms(secret, write=False)
        return SecretText(secret.versions[wanted].value)

    def _tag_secret(self, actor: str, name: str, tags: Mapping[str, str]) -> None:
        """TagResource: at most 50 tags per secret.

        https://docs.aws.amazon.com/secretsmanager/latest/apireference/API_TagResource.html
        """
        secret = self._writable(name)
        if len(secret.tags.keys() | tags.keys()) > TAGS_PER_SECRET:
            raise _Refused("ValidationException", f"more than {TAGS_PER_SECRET} tags")
        secret.tags.update(tags)
        secret.changed = self.clock()
        self._secret_changed(secret)
        self._audit(actor, "secretsmanager:TagResource", name, detail=" ".join(sorted(tags)))

    def _list_secrets(self, prefix: str) -> list[SecretSummary]:
        """ListSecrets (IncludePlannedDeletion): eventually consistent, it may not show the last 5 minutes.

        https://docs.aws.amazon.com/secretsmanager/latest/apireference/API_ListSecrets.html
        """
        self._purge_due()
        when = self._lagged(self.knobs.secrets_list_lag)
        out = []
        for name in sorted(self._secret_view):
            if name.startswith(prefix):
                summary = self._secret_view[name].at(when)
                if summary is not None:
                    out.append(summary)
        return out

    # -- DynamoDB -------------------------------------------------------------------------------

    def _put_lease(  # noqa: PLR0917 - the port's own arguments
        self, actor: str, table: str, name: str, owner: str, expires: float, now: float, last_sweep: float | None
    ) -> None:
        """PutItem with ``attribute_not_exists(#name) OR #owner = :me OR #expires < :now`` (rotator/aws/dynamodb.py).

        https://docs.aws.amazon.com/amazondynamodb/latest/developerguide/Expressions.ConditionExpressions.html
        """
        held = self._items.get((table, name))
        if held is not None and not (held.owner == owner or held.expires < float(f"{now:.3f}")):
            raise _Refused("ConditionalCheckFailedException", "The conditional request failed")
        swept = None if last_sweep is None else float(f"{last_sweep:.3f}")
        self._items[(table, name)] = LeaseRecord(name, owner, float(f"{expires:.3f}"), swept)
        self._audit(actor, "dynamodb:PutItem", name, detail=owner)

    def _delete_lease(self, actor: str, table: str, name: str, owner: str) -> None:
        """DeleteItem with ``#owner = :me`` (a missing item fails the condition too)."""
        held = self._items.get((table, name))
        if held is None or held.owner != owner:
            raise _Refused("ConditionalCheckFailedException", "The conditional request failed")
        del self._items[(table, name)]
        self._audit(actor, "dynamodb:DeleteItem", name, detail=owner)


# -- the ports ----------------------------------------------------------------------------------


class SimAccount:
    """One account's IAM, Secrets Manager and STS as an actor sees them; implements :class:`AccountPort`."""

    def __init__(self, world: World, actor: str) -> None:
        self.world = world
        self.actor = actor
        self._own_principal: str | None = None

    def _pages(self, service: str, operation: str, count: int) -> None:
        """The further pages of a listing: each one more call (and a chance to fail)."""
        for _ in range(1, max(1, math.ceil(count / _PAGE[operation]))):
            self.world.call(self.actor, service, operation, lambda: None)

    # -- IAM -----------------------------------------------------------------------------------

    def user_details(self) -> list[UserDetail]:
        """GetAccountAuthorizationDetails: users and tags, possibly stale by ``Knobs.tag_lag``."""
        w = self.world

        def read() -> list[UserDetail]:
            when = w._lagged(w.knobs.tag_lag)
            found = (history.at(when) for history in w._user_view.values())
            return [detail for detail in found if detail is not None]

        details = w.call(self.actor, "iam", "GetAccountAuthorizationDetails", read)
        self._pages("iam", "GetAccountAuthorizationDetails", len(details))
        return details

    def user(self, user: str) -> UserDetail:
        w = self.world

        def read() -> UserDetail:
            history = w._user_view.get(user)
            detail = history.at(w._lagged(w.knobs.tag_lag)) if history is not None else None
            if detail is None:
                raise _no_such_entity(f"The user with name {user} cannot be found.")
            return replace(detail, attached_policies=()) if detail.attached_policies else detail  # GetUser lists none

        return w.call(self.actor, "iam", "GetUser", read)

    def attached_policies(self, user: str) -> tuple[str, ...]:
        """ListAttachedUserPolicies, fresh.

        https://docs.aws.amazon.com/IAM/latest/APIReference/API_ListAttachedUserPolicies.html
        """
        w = self.world
        return w.call(self.actor, "iam", "ListAttachedUserPolicies", lambda: tuple(w._user(user).policies))

    def credential_report(self) -> CredentialReport:
        """GenerateCredentialReport until COMPLETE (polled as rotator/aws/iam.py does), then GetCredentialReport."""
        w = self.world
        deadline = w.clock.seconds + REPORT_TIMEOUT
        delay = 0.5
        while w.call(self.actor, "iam", "GenerateCredentialReport", w._generate_report) != "COMPLETE":
            if w.clock.seconds > deadline:
                raise AwsError(
                    "iam:GenerateCredentialReport: report not ready in time",
                    service="iam",
                    operation="GenerateCredentialReport",
                )
            w._wait(self.actor, delay)
            delay = min(delay * 2, 8.0)
        return w.call(self.actor, "iam", "GetCredentialReport", w._get_report)

    def access_keys(self, user: str) -> list[AccessKey]:
        """ListAccessKeys: may miss a new key (or show a deleted one) for up to ``Knobs.list_lag``."""
        w = self.world

        def read() -> list[AccessKey]:
            history = w._keys_view.get(user)
            listing = history.at(w._lagged(w.knobs.list_lag)) if history is not None else None
            if listing is None:
                raise _no_such_entity(f"The user with name {user} cannot be found.")
            return list(listing)

        return w.call(self.actor, "iam", "ListAccessKeys", read)

    def key_last_used(self, key_id: str) -> KeyLastUsed:
        return self.world.call(self.actor, "iam", "GetAccessKeyLastUsed", lambda: self.world._key_last_used(key_id))

    def create_access_key(self, user: str) -> NewKey:
        w = self.world
        principal = w.rotator_principal(self.actor)
        return w.call(
            self.actor,
            "iam",
            "CreateAccessKey",
            lambda: w._create_key(self.actor, principal, user),
            mutating=True,
            once=True,
        )

    def set_key_status(self, user: str, key_id: str, status: KeyStatus) -> None:
        w = self.world
        w.call(
            self.actor, "iam", "UpdateAccessKey", lambda: w._set_status(self.actor, user, key_id, status), mutating=True
        )

    def delete_access_key(self, user: str, key_id: str) -> None:
        w = self.world

        def delete() -> None:
            found, _key = w._owned_key(user, key_id)
            w._delete_key(self.actor, found, key_id)

        w.call(self.actor, "iam", "DeleteAccessKey", delete, mutating=True)

    def tag_user(self, user: str, tags: Mapping[str, str]) -> None:
        w = self.world
        w.call(self.actor, "iam", "TagUser", lambda: w._tag_user(self.actor, user, tags), mutating=True)

    def untag_user(self, user: str, keys: list[str]) -> None:
        w = self.world
        w.call(self.actor, "iam", "UntagUser", lambda: w._untag_user(self.actor, user, keys), mutating=True)

    def key_creation(self, key_id: str, created: datetime) -> KeyCreation | None:
        w = self.world
        return w.call(self.actor, "cloudtrail", "LookupEvents", lambda: w._key_creation(key_id, created))

    # -- Secrets Manager -------------------------------------------------------------------------

    def secrets(self, name_prefix: str) -> list[SecretSummary]:
        w = self.world
        found = w.call(self.actor, "secretsmanager", "ListSecrets", lambda: w._list_secrets(name_prefix))
        self._pages("secretsmanager", "ListSecrets", len(found))
        return found

    def describe_secret(self, name: str) -> SecretSummary | None:
        """DescribeSecret: consistent (the documented way to see a secret's latest state); None when gone.

        https://docs.aws.amazon.com/secretsmanager/latest/apireference/API_DescribeSecret.html
        """
        w = self.world

        def read() -> SecretSummary | None:
            secret = w._live_secret(name)
            return secret.summary() if secret is not None else None

        return w.call(self.actor, "secretsmanager", "DescribeSecret", read)

    def secret_value(self, name: str, *, stage: str | None = None, version_id: str | None = None) -> SecretText:
        w = self.world
        return w.call(self.actor, "secretsmanager", "GetSecretValue", lambda: w._secret_value(name, stage, version_id))

    def create_secret(
        self,
        name: str,
        value: SecretText,
        token: str,
        *,
        tags: Mapping[str, str],
        kms_key_id: str | None,
        replica_regions: list[str],
        description: str,
    ) -> str:
        w = self.world
        text = value.reveal()
        return w.call(
            self.actor,
            "secretsmanager",
            "CreateSecret",
            lambda: w._create_secret(self.actor, name, text, token, tags, kms_key_id),
            mutating=True,
            once=True,
        )

    def put_secret_value(self, name: str, value: SecretText, token: str, stages: list[str]) -> None:
        w = self.world
        text = value.reveal()
        w.call(
            self.actor,
            "secretsmanager",
            "PutSecretValue",
            lambda: w._put_value(self.actor, name, text, token, stages),
            mutating=True,
            once=True,
        )

    def move_stage(
        self, name: str, stage: str, *, to_version: str | None = None, from_version: str | None = None
    ) -> bool:
        """As :class:`rotator.aws.secrets.SecretsAdapter.move_stage`: on InvalidParameterException, a
        DescribeSecret decides whether the label already is where it should be (False) or the error stands."""
        w = self.world
        try:
            w.call(
                self.actor,
                "secretsmanager",
                "UpdateSecretVersionStage",
                lambda: w._move_stage(self.actor, name, stage, to_version, from_version),
                mutating=True,
            )
        except AwsError as exc:
            if exc.code != "InvalidParameterException":
                raise
            summary = self.describe_secret(name)
            if summary is None or not summary.stage_is_where(stage, to_version=to_version, from_version=from_version):
                raise
            return False
        return True

    def tag_secret(self, name: str, tags: Mapping[str, str]) -> None:
        w = self.world
        w.call(
            self.actor, "secretsmanager", "TagResource", lambda: w._tag_secret(self.actor, name, tags), mutating=True
        )

    # -- STS -------------------------------------------------------------------------------------

    def account_id(self) -> str:
        return self.world.call(self.actor, "sts", "GetCallerIdentity", lambda: ACCOUNT)

    def own_principal(self) -> str:
        """Cached after the first call, as :class:`rotator.aws.sts.StsAdapter` does."""
        if self._own_principal is None:
            principal = self.world.rotator_principal(self.actor)
            self._own_principal = self.world.call(self.actor, "sts", "GetCallerIdentity", lambda: principal)
        return self._own_principal

    def caller_arn_with(self, key: NewKey) -> str:
        """GetCallerIdentity signed with ``key``: fails until the key has propagated, and for an Inactive or
        deleted key or a wrong secret (unlike moto, which accepts an Inactive key)."""
        w = self.world
        secret = key.secret_access_key.reveal()
        return w.call(self.actor, "sts", "GetCallerIdentity", lambda: w._authenticate(key.key_id, secret))


class SimLeaseStore:
    """The lease table (DynamoDB) as an actor sees it; implements :class:`rotator.ports.LeaseStore`."""

    def __init__(self, world: World, actor: str) -> None:
        self.world = world
        self.actor = actor

    def get_lease(self, table: str, name: str) -> LeaseRecord | None:
        """GetItem with ConsistentRead (a strongly consistent read sees every write before it).

        https://docs.aws.amazon.com/amazondynamodb/latest/developerguide/HowItWorks.ReadConsistency.html
        """
        return self.world.call(self.actor, "dynamodb", "GetItem", lambda: self.world._items.get((table, name)))

    def put_lease(
        self, table: str, name: str, owner: str, expires: float, now: float, *, last_sweep: float | None = None
    ) -> None:
        """PutItem of the whole item: a renewal without ``last_sweep`` drops it, as the adapter's PutItem does."""
        w = self.world
        w.call(
            self.actor,
            "dynamodb",
            "PutItem",
            lambda: w._put_lease(self.actor, table, name, owner, expires, now, last_sweep),
            mutating=True,
        )

    def delete_lease(self, table: str, name: str, owner: str) -> None:
        w = self.world
        w.call(
            self.actor, "dynamodb", "DeleteItem", lambda: w._delete_lease(self.actor, table, name, owner), mutating=True
        )


class SimOrganizations:
    """AWS Organizations as an actor sees it; implements :class:`rotator.ports.OrganizationsPort`.

    https://docs.aws.amazon.com/organizations/latest/APIReference/API_ListAccounts.html
    https://docs.aws.amazon.com/organizations/latest/APIReference/API_ListAccountsForParent.html
    https://docs.aws.amazon.com/organizations/latest/APIReference/API_ListChildren.html
    """

    def __init__(self, world: World, actor: str) -> None:
        self.world = world
        self.actor = actor

    def org_accounts(self) -> list[OrgAccount]:
        w = self.world

        def read() -> list[OrgAccount]:
            return [account for accounts in w._org_accounts.values() for account in accounts]

        accounts = w.call(self.actor, "organizations", "ListAccounts", read)
        for _ in range(1, max(1, math.ceil(len(accounts) / _PAGE["ListAccounts"]))):
            w.call(self.actor, "organizations", "ListAccounts", lambda: None)
        if not accounts:
            raise AwsError(
                "organizations:ListAccounts: no accounts listed (is the caller in an organization?)",
                service="organizations",
                operation="ListAccounts",
            )
        return accounts

    def org_accounts_under(self, parent_ids: Sequence[str]) -> list[OrgAccount]:
        w = self.world

        def known(parent: str) -> None:
            if parent not in w._org_accounts:
                raise _Refused("ParentNotFoundException", f"parent {parent} not found", 404)

        def accounts_for_parent(parent: str) -> list[OrgAccount]:
            def read() -> list[OrgAccount]:
                known(parent)
                return list(w._org_accounts[parent])

            result: list[OrgAccount] = w.call(self.actor, "organizations", "ListAccountsForParent", read)
            return result

        def child_ous(parent: str) -> list[str]:
            def read() -> list[str]:
                known(parent)
                return list(w._org_children.get(parent, []))

            result: list[str] = w.call(self.actor, "organizations", "ListChildren", read)
            return result

        return accounts_under(parent_ids, accounts_for_parent, child_ous)


if TYPE_CHECKING:
    from rotator.ports import AccountPort as _AccountPort
    from rotator.ports import LeaseStore as _LeaseStore
    from rotator.ports import OrganizationsPort as _OrganizationsPort

    def _implements(
        account: SimAccount, lease: SimLeaseStore, orgs: SimOrganizations
    ) -> tuple[_AccountPort, _LeaseStore, _OrganizationsPort]:
        return account, lease, orgs  # mypy proves each fits its port
