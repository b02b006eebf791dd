"""An in-memory AWS behind the ports (:mod:`rotator.ports`): a test swaps the world, not a method.

Dict-backed models of what the rotator relies on, as AWS documents it (not as an emulator happens to do it):

* IAM: users with paths and tags, at most two access keys per user (``LimitExceededError``), a key's
  ``CreateDate`` from the injected clock (whole seconds, as IAM reports it), a credential report that is
  always fresh, and no CloudTrail events unless a test adds them (:meth:`FakeIam.record_creation`).
* Secrets Manager: versions and staging labels. A secret's first version always gets ``AWSCURRENT``;
  moving ``AWSCURRENT`` gives the version that held it ``AWSPREVIOUS``; a ``ClientRequestToken`` repeated
  with the same value is a no-op (with another value: ``ConflictError``); ``CreateSecret`` of an existing
  name is ``ResourceExistsException`` (``ConflictError``); ``UpdateSecretVersionStage`` naming a version
  that does not hold the label is refused, which the port reports as "already done" where it is.
* STS: a new key authenticates at once, as the ARN of its user.

Faults: :meth:`Faults.before` runs a function before an operation (by its API name, e.g.
``"PutSecretValue"``); it may change the world (an operator creates a key) or raise an
:class:`~rotator.errors.AwsError` (the call fails; AWS did not act).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from rotator.errors import AwsError, ConflictError, LimitExceededError, NotFoundError
from rotator.model import AWSCURRENT, AWSPREVIOUS, AccessKey, KeyStatus, NewKey, SecretText
from rotator.ports import Ports
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
    from rotator.ports import AccountPort, IamPort, LeaseStore, OrganizationsPort, SecretsPort, StsPort

ACCOUNT = "123456789012"
START = datetime(2025, 1, 1, 12, 0, tzinfo=UTC)
#: IAM's quota of access keys per user.
KEYS_PER_USER = 2
#: IAM's quota of tags per user.
TAGS_PER_USER = 50


class Clock:
    """The injected clock: time moves only when a test (or an injected ``sleep``) moves it."""

    def __init__(self, now: datetime = START) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, delta: timedelta) -> None:
        self.now += delta

    def sleep(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


class Faults:
    """Functions to run before an operation (API name -> functions, run in order, each once)."""

    def __init__(self) -> None:
        self._before: dict[str, list[Callable[[], None]]] = {}
        #: Every operation the fakes were asked for, in order (``"iam:CreateAccessKey"``).
        self.calls: list[str] = []

    def before(self, operation: str, action: Callable[[], None]) -> None:
        self._before.setdefault(operation, []).append(action)

    def fail(self, operation: str, code: str = "InternalFailure", *, maybe_acted: bool = False) -> None:
        """The next ``operation`` fails before AWS acts; ``maybe_acted``: it says it may have (a lost answer)."""

        def raise_error() -> None:
            raise AwsError(f"fake: {operation}: {code}", operation=operation, code=code, maybe_acted=maybe_acted)

        self.before(operation, raise_error)

    def enter(self, service: str, operation: str) -> None:
        self.calls.append(f"{service}:{operation}")
        actions = self._before.get(operation)
        if actions:
            actions.pop(0)()


# -- IAM -----------------------------------------------------------------------------------------


@dataclass
class _Key:
    key_id: str
    secret: str
    created: datetime
    status: KeyStatus = KeyStatus.ACTIVE
    last_used: datetime | None = None
    last_used_service: str | None = None
    last_used_region: str | None = None


@dataclass
class _User:
    name: str
    path: str
    arn: str
    tags: dict[str, str] = field(default_factory=dict)
    keys: dict[str, _Key] = field(default_factory=dict)
    #: ARNs of attached managed policies (AWS's quarantine policy, say).
    policies: list[str] = field(default_factory=list)


class FakeIam:
    """IAM users and keys in dicts; implements :class:`rotator.ports.IamPort`."""

    def __init__(self, clock: Clock, faults: Faults, account: str = ACCOUNT) -> None:
        self.clock = clock
        self.faults = faults
        self.account = account
        self.users: dict[str, _User] = {}
        #: CloudTrail's ``CreateAccessKey`` events: key id -> creating principal (none unless a test adds them).
        self.trail: dict[str, str] = {}
        self._ids = itertools.count(1)

    # -- setting the world up (no faults, not counted) -------------------------------------------

    def add_user(self, name: str, *, path: str = "/", tags: Mapping[str, str] | None = None) -> str:
        """A user, managed by default (``rotator=enabled``); returns its ARN."""
        arn = f"arn:aws:iam::{self.account}:user{path}{name}"
        self.users[name] = _User(name, path, arn, dict({"rotator": "enabled"} if tags is None else tags))
        return arn

    def add_key(self, user: str, *, age: timedelta = timedelta(0)) -> NewKey:
        """A key created ``age`` ago (by an operator, say); the two-key limit holds."""
        return self._create(user, self.clock() - age)

    def use_key(
        self, key_id: str, service: str = "s3", region: str = "eu-west-1", *, ago: timedelta = timedelta(0)
    ) -> None:
        """A consumer signed a ``service`` call in ``region`` with ``key_id``, ``ago`` before now."""
        key = self._key(key_id)
        key.last_used = self.clock() - ago
        key.last_used_service, key.last_used_region = service, region

    def record_creation(self, key_id: str, principal_arn: str) -> None:
        """CloudTrail's event: ``principal_arn`` created ``key_id``."""
        self.trail[key_id] = principal_arn

    def keys(self, user: str) -> dict[str, KeyStatus]:
        return {key.key_id: key.status for key in self._user(user).keys.values()}

    # -- the port ------------------------------------------------------------------------------

    def user_details(self) -> list[UserDetail]:
        self.faults.enter("iam", "GetAccountAuthorizationDetails")
        return [self._detail(user) for user in self.users.values()]

    def user(self, user: str) -> UserDetail:
        self.faults.enter("iam", "GetUser")
        return replace(self._detail(self._user(user)), attached_policies=())  # GetUser lists no policies

    def attached_policies(self, user: str) -> tuple[str, ...]:
        self.faults.enter("iam", "ListAttachedUserPolicies")
        return tuple(self._user(user).policies)

    def attach_policy(self, user: str, policy_arn: str) -> None:
        """What AWS does to a user whose key it found in public (not counted, no faults)."""
        self._user(user).policies.append(policy_arn)

    def credential_report(self) -> CredentialReport:
        self.faults.enter("iam", "GetCredentialReport")
        rows = {
            user.name: [
                ReportKey(
                    key.status is KeyStatus.ACTIVE,
                    key.created,
                    key.last_used,
                    key.last_used_service,
                    key.last_used_region,
                )
                for key in sorted(user.keys.values(), key=lambda k: k.created)
            ]
            for user in self.users.values()
        }
        return CredentialReport(self.clock(), rows)

    def access_keys(self, user: str) -> list[AccessKey]:
        self.faults.enter("iam", "ListAccessKeys")
        return [AccessKey(k.key_id, k.status, k.created) for k in self._user(user).keys.values()]

    def key_last_used(self, key_id: str) -> KeyLastUsed:
        self.faults.enter("iam", "GetAccessKeyLastUsed")
        key = self._key(key_id)
        return KeyLastUsed(key.last_used, key.last_used_service, key.last_used_region)

    def create_access_key(self, user: str) -> NewKey:
        self.faults.enter("iam", "CreateAccessKey")
        return self._create(user, self.clock())

    def set_key_status(self, user: str, key_id: str, status: KeyStatus) -> None:
        self.faults.enter("iam", "UpdateAccessKey")
        self._owned_key(user, key_id).status = status

    def delete_access_key(self, user: str, key_id: str) -> None:
        self.faults.enter("iam", "DeleteAccessKey")
        self._owned_key(user, key_id)
        del self.users[user].keys[key_id]

    def tag_user(self, user: str, tags: Mapping[str, str]) -> None:
        self.faults.enter("iam", "TagUser")
        found = self._user(user)
        if len(found.tags.keys() | tags.keys()) > TAGS_PER_USER:
            raise LimitExceededError(f"fake: iam:TagUser: more than {TAGS_PER_USER} tags", code="LimitExceeded")
        found.tags.update(tags)

    def untag_user(self, user: str, keys: list[str]) -> None:
        self.faults.enter("iam", "UntagUser")
        found = self._user(user)
        for key in keys:
            found.tags.pop(key, None)

    def key_creation(self, key_id: str, created: datetime) -> KeyCreation | None:
        self.faults.enter("cloudtrail", "LookupEvents")
        principal = self.trail.get(key_id)
        return KeyCreation(key_id, principal) if principal is not None else None

    # -- helpers --------------------------------------------------------------------------------

    def _create(self, user: str, created: datetime) -> NewKey:
        found = self._user(user)
        if len(found.keys) >= KEYS_PER_USER:
            raise LimitExceededError(
                f"fake: iam:CreateAccessKey: {user} already has {KEYS_PER_USER} keys", code="LimitExceeded"
            )
        number = next(self._ids)
        key = _Key(f"AKIAFAKE{number:012d}", f"fake-secret-{number}", created.replace(microsecond=0))
        found.keys[key.key_id] = key
        return NewKey(key.key_id, SecretText(key.secret), key.created)

    def _user(self, user: str) -> _User:
        try:
            return self.users[user]
        except KeyError:
            raise NotFoundError(f"fake: iam: no user {user}", code="NoSuchEntity") from None

    def _key(self, key_id: str) -> _Key:
        for user in self.users.values():
            if key_id in user.keys:
                return user.keys[key_id]
        raise NotFoundError(f"fake: iam: no key {key_id}", code="NoSuchEntity")

    def _owned_key(self, user: str, key_id: str) -> _Key:
        try:
            return self._user(user).keys[key_id]
        except KeyError:
            raise NotFoundError(f"fake: iam: {user} has no key {key_id}", code="NoSuchEntity") from None

    @staticmethod
    def _detail(user: _User) -> UserDetail:
        return UserDetail(user.name, user.path, user.arn, dict(user.tags), tuple(user.policies))


# -- Secrets Manager -----------------------------------------------------------------------------


@dataclass
class _Version:
    value: str
    stages: set[str] = field(default_factory=set)


@dataclass
class _Secret:
    name: str
    arn: str
    changed: datetime
    tags: dict[str, str] = field(default_factory=dict)
    versions: dict[str, _Version] = field(default_factory=dict)
    deleted: bool = False
    created: datetime | None = None

    def holder(self, stage: str) -> str | None:
        return next((vid for vid, version in self.versions.items() if stage in version.stages), None)


class FakeSecrets:
    """Secrets Manager in dicts; implements :class:`rotator.ports.SecretsPort`."""

    def __init__(self, clock: Clock, faults: Faults, account: str = ACCOUNT, region: str = "us-east-1") -> None:
        self.clock = clock
        self.faults = faults
        self.account = account
        self.region = region
        self.store: dict[str, _Secret] = {}

    # -- reading the world in assertions -------------------------------------------------------

    def stages(self, name: str) -> dict[str, tuple[str, ...]]:
        """version id -> its labels, labelled versions only."""
        return {vid: tuple(sorted(v.stages)) for vid, v in self.store[name].versions.items() if v.stages}

    def value(self, name: str, stage: str = AWSCURRENT) -> str:
        secret = self.store[name]
        holder = secret.holder(stage)
        assert holder is not None, f"{name}: no version holds {stage}"
        return secret.versions[holder].value

    # -- the port ------------------------------------------------------------------------------

    def secrets(self, name_prefix: str) -> list[SecretSummary]:
        self.faults.enter("secretsmanager", "ListSecrets")
        return [self._summary(s) for name, s in sorted(self.store.items()) if name.startswith(name_prefix)]

    def describe_secret(self, name: str) -> SecretSummary | None:
        self.faults.enter("secretsmanager", "DescribeSecret")
        secret = self.store.get(name)
        return self._summary(secret) if secret is not None else None

    def secret_value(self, name: str, *, stage: str | None = None, version_id: str | None = None) -> SecretText:
        self.faults.enter("secretsmanager", "GetSecretValue")
        secret = self._secret(name)
        wanted = version_id or secret.holder(stage or AWSCURRENT)
        if wanted is None or wanted not in secret.versions:
            raise NotFoundError(f"fake: secretsmanager: {name} has no such version", code="ResourceNotFoundException")
        return SecretText(secret.versions[wanted].value)

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
        self.faults.enter("secretsmanager", "CreateSecret")
        if name in self.store:
            raise ConflictError(f"fake: secretsmanager: {name} exists", code="ResourceExistsException")
        arn = f"arn:aws:secretsmanager:{self.region}:{self.account}:secret:{name}-AbCdEf"
        secret = _Secret(name, arn, self.clock(), dict(tags), created=self.clock())
        secret.versions[token] = _Version(value.reveal(), {AWSCURRENT})  # a first version is always current
        self.store[name] = secret
        return arn

    def put_secret_value(self, name: str, value: SecretText, token: str, stages: list[str]) -> None:
        self.faults.enter("secretsmanager", "PutSecretValue")
        secret = self._secret(name)
        existing = secret.versions.get(token)
        if existing is not None:
            if existing.value != value.reveal():
                raise ConflictError(
                    f"fake: secretsmanager: version {token} exists with another value", code="ResourceExistsException"
                )
            return  # the same request again: nothing changes (idempotent, no label moves)
        first = not secret.versions
        secret.versions[token] = _Version(value.reveal())
        for stage in {*(stages or [AWSCURRENT]), *([AWSCURRENT] if first else [])}:
            self._attach(secret, stage, token)
        secret.changed = self.clock()

    def move_stage(
        self, name: str, stage: str, *, to_version: str | None = None, from_version: str | None = None
    ) -> bool:
        self.faults.enter("secretsmanager", "UpdateSecretVersionStage")
        secret = self._secret(name)
        holder = secret.holder(stage)
        refused = (
            (to_version is not None and to_version not in secret.versions)
            or (to_version is not None and holder not in (None, to_version) and from_version != holder)
            or (from_version is not None and from_version != holder)
        )
        if refused:
            # Secrets Manager refuses (InvalidParameterException); the port reports a goal already met.
            placed = to_version is None or holder == to_version
            removed = from_version is None or from_version == to_version or holder != from_version
            if placed and removed:
                return False
            raise AwsError(f"fake: secretsmanager: cannot move {stage}", code="InvalidParameterException")
        if to_version is None:
            if from_version is not None:
                secret.versions[from_version].stages.discard(stage)
        else:
            self._attach(secret, stage, to_version)
        secret.changed = self.clock()
        return True

    def tag_secret(self, name: str, tags: Mapping[str, str]) -> None:
        self.faults.enter("secretsmanager", "TagResource")
        secret = self._secret(name)
        secret.tags.update(tags)
        secret.changed = self.clock()

    # -- helpers --------------------------------------------------------------------------------

    @staticmethod
    def _attach(secret: _Secret, stage: str, version_id: str) -> None:
        """Put ``stage`` on one version; ``AWSCURRENT`` leaves ``AWSPREVIOUS`` on the version it left."""
        holder = secret.holder(stage)
        if holder == version_id:
            return
        if holder is not None:
            secret.versions[holder].stages.discard(stage)
            if stage == AWSCURRENT:
                FakeSecrets._attach(secret, AWSPREVIOUS, holder)
        secret.versions[version_id].stages.add(stage)

    def _secret(self, name: str) -> _Secret:
        try:
            return self.store[name]
        except KeyError:
            raise NotFoundError(f"fake: secretsmanager: no secret {name}", code="ResourceNotFoundException") from None

    @staticmethod
    def _summary(secret: _Secret) -> SecretSummary:
        return SecretSummary(
            name=secret.name,
            arn=secret.arn,
            tags=dict(secret.tags),
            versions={vid: tuple(sorted(v.stages)) for vid, v in secret.versions.items() if v.stages},
            last_changed=secret.changed,
            deleted=secret.deleted,
            created=secret.created,
        )


# -- STS -----------------------------------------------------------------------------------------


class FakeSts:
    """Implements :class:`rotator.ports.StsPort`: a key authenticates as its user the moment it exists."""

    def __init__(self, iam: FakeIam, faults: Faults, principal: str | None = None) -> None:
        self.iam = iam
        self.faults = faults
        self.principal = principal or f"arn:aws:sts::{iam.account}:assumed-role/Rotator/fake-session"

    def account_id(self) -> str:
        self.faults.enter("sts", "GetCallerIdentity")
        return self.iam.account

    def own_principal(self) -> str:
        self.faults.enter("sts", "GetCallerIdentity")
        return self.principal

    def caller_arn_with(self, key: NewKey) -> str:
        self.faults.enter("sts", "GetCallerIdentity")
        for user in self.iam.users.values():
            found = user.keys.get(key.key_id)
            if found and found.status is KeyStatus.ACTIVE and found.secret == key.secret_access_key.reveal():
                return user.arn
        raise AwsError("fake: sts: the security token included in the request is invalid", code="InvalidClientTokenId")


# -- Organizations and the lease -----------------------------------------------------------------


class FakeOrganizations:
    """Implements :class:`rotator.ports.OrganizationsPort`: accounts by parent (root or OU), OUs by parent."""

    def __init__(self) -> None:
        self.accounts: dict[str, list[OrgAccount]] = {}
        self.children: dict[str, list[str]] = {}

    def org_accounts(self) -> list[OrgAccount]:
        return [account for accounts in self.accounts.values() for account in accounts]

    def org_accounts_under(self, parent_ids: Sequence[str]) -> list[OrgAccount]:
        found: dict[str, OrgAccount] = {}
        todo = list(parent_ids)
        while todo:
            parent = todo.pop(0)
            for account in self.accounts.get(parent, []):
                found.setdefault(account.account_id, account)
            todo.extend(self.children.get(parent, []))
        return list(found.values())


class FakeLeaseStore:
    """Implements :class:`rotator.ports.LeaseStore` with DynamoDB's conditional writes."""

    def __init__(self) -> None:
        self.items: dict[tuple[str, str], LeaseRecord] = {}

    def get_lease(self, table: str, name: str) -> LeaseRecord | None:
        return self.items.get((table, name))

    def put_lease(
        self, table: str, name: str, owner: str, expires: float, now: float, *, last_sweep: float | None = None
    ) -> None:
        held = self.items.get((table, name))
        if held is not None and held.owner != owner and held.expires >= now:
            raise ConflictError("fake: dynamodb: the lease is held", code="ConditionalCheckFailedException")
        swept = None if last_sweep is None else round(last_sweep, 3)
        self.items[(table, name)] = LeaseRecord(name, owner, round(expires, 3), swept)

    def delete_lease(self, table: str, name: str, owner: str) -> None:
        held = self.items.get((table, name))
        if held is None or held.owner != owner:
            raise ConflictError("fake: dynamodb: not the owner", code="ConditionalCheckFailedException")
        del self.items[(table, name)]


# -- one account ---------------------------------------------------------------------------------


class FakeAccount:
    """One account's in-memory IAM, Secrets Manager and STS, and the flat :class:`Ports` over them."""

    def __init__(self, clock: Clock | None = None, account: str = ACCOUNT) -> None:
        self.clock = clock or Clock()
        self.faults = Faults()
        self.iam = FakeIam(self.clock, self.faults, account)
        self.secrets = FakeSecrets(self.clock, self.faults, account)
        self.sts = FakeSts(self.iam, self.faults)
        self.ports = Ports(self.iam, self.secrets, self.sts)
        self.account = account


if TYPE_CHECKING:

    def _implements(
        iam: FakeIam, secrets: FakeSecrets, sts: FakeSts, orgs: FakeOrganizations, lease: FakeLeaseStore
    ) -> tuple[IamPort, SecretsPort, StsPort, OrganizationsPort, LeaseStore, AccountPort]:
        return iam, secrets, sts, orgs, lease, Ports(iam, secrets, sts)  # mypy proves each fake fits its port
