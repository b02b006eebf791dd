"""The ports: what the core needs of AWS, one small protocol per concern (STYLE principle 9).

Like an httpx transport, a port is a constructor argument. The boto3 adapters in :mod:`rotator.aws`
implement these protocols over the transport (:class:`rotator.aws.Boundary`); ``tests/fakes.py``
implements them in memory. A test swaps the world, not a method of a class.

::

    IamPort            users, keys, user tags, credential report, who created a key (CloudTrail)
    SecretsPort        Secrets Manager: list, describe, read, create, put, move a label, tag
    StsPort            who we are, and whether a new key authenticates
    OrganizationsPort  the member accounts to manage
    LeaseStore         the leader lease (DynamoDB)

Every operation speaks the project's own values (:mod:`rotator.model`, :mod:`rotator.records`) and
raises only the :mod:`rotator.errors` tree (:class:`~rotator.errors.NotFoundError`,
:class:`~rotator.errors.LimitExceededError`, :class:`~rotator.errors.ConflictError`, ...).

The inventory and the executor see one account through :class:`AccountPort`, the three ports of that
account in one flat interface; :class:`Ports` builds it from any three implementations.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Protocol

from rotator.model import AccessKey, KeyStatus, NewKey, SecretText
from rotator.records import (
    CredentialReport,
    KeyCreation,
    KeyLastUsed,
    LeaseRecord,
    OrgAccount,
    SecretSummary,
    UserDetail,
)


class IamPort(Protocol):
    """IAM users and their access keys (and CloudTrail's record of who created a key)."""

    def user_details(self) -> list[UserDetail]:
        """Every IAM user with path and tags."""
        ...

    def user(self, user: str) -> UserDetail:
        """One user, fresh; :class:`~rotator.errors.NotFoundError` when it does not exist."""
        ...

    def attached_policies(self, user: str) -> tuple[str, ...]:
        """ARNs of the managed policies attached to ``user``, fresh."""
        ...

    def credential_report(self) -> CredentialReport: ...

    def access_keys(self, user: str) -> list[AccessKey]: ...

    def key_last_used(self, key_id: str) -> KeyLastUsed:
        """When, by which service and in which region IAM last saw ``key_id`` used."""
        ...

    def create_access_key(self, user: str) -> NewKey:
        """A new key (:class:`~rotator.errors.LimitExceededError` when the user has two)."""
        ...

    def set_key_status(self, user: str, key_id: str, status: KeyStatus) -> None: ...

    def delete_access_key(self, user: str, key_id: str) -> None: ...

    def tag_user(self, user: str, tags: Mapping[str, str]) -> None: ...

    def untag_user(self, user: str, keys: list[str]) -> None: ...

    def key_creation(self, key_id: str, created: datetime) -> KeyCreation | None:
        """CloudTrail's ``CreateAccessKey`` event of ``key_id``, or None when there is none (yet)."""
        ...


class SecretsPort(Protocol):
    """Secrets Manager: the secrets, their versions and staging labels."""

    def secrets(self, name_prefix: str) -> list[SecretSummary]: ...

    def describe_secret(self, name: str) -> SecretSummary | None:
        """The secret without its value; None when it does not exist."""
        ...

    def secret_value(self, name: str, *, stage: str | None = None, version_id: str | None = None) -> SecretText: ...

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
        """The new secret's ARN; :class:`~rotator.errors.ConflictError` when the name exists."""
        ...

    def put_secret_value(self, name: str, value: SecretText, token: str, stages: list[str]) -> None: ...

    def move_stage(
        self, name: str, stage: str, *, to_version: str | None = None, from_version: str | None = None
    ) -> bool:
        """True when this call moved the label; False when it already was where it should be."""
        ...

    def tag_secret(self, name: str, tags: Mapping[str, str]) -> None: ...


class StsPort(Protocol):
    """Who the rotator is, and whether a new key works."""

    def account_id(self) -> str: ...

    def own_principal(self) -> str:
        """The ARN this process acts as."""
        ...

    def caller_arn_with(self, key: NewKey) -> str:
        """The ARN ``key`` authenticates as (it proves the secret key works)."""
        ...


class OrganizationsPort(Protocol):
    """The member accounts of an organization."""

    def org_accounts(self) -> list[OrgAccount]: ...

    def org_accounts_under(self, parent_ids: Sequence[str]) -> list[OrgAccount]: ...


class SnsPort(Protocol):
    """Publishing notifications to an SNS topic."""

    def publish(self, topic_arn: str, subject: str, message: str, attributes: Mapping[str, str]) -> None: ...


class LeaseStore(Protocol):
    """The leader lease: conditional writes on one item (:class:`~rotator.errors.ConflictError` when lost)."""

    def get_lease(self, table: str, name: str) -> LeaseRecord | None: ...

    def put_lease(
        self, table: str, name: str, owner: str, expires: float, now: float, *, last_sweep: float | None = None
    ) -> None: ...

    def delete_lease(self, table: str, name: str, owner: str) -> None: ...


class AccountPort(IamPort, SecretsPort, StsPort, Protocol):
    """One account as the inventory and the executor see it: its IAM, Secrets Manager and STS ports."""


class Ports:
    """Three ports of one account behind the flat :class:`AccountPort` (``Ports(iam, secrets, sts)``).

    The boto3 facade :class:`rotator.aws.Aws` is one, over the boto3 adapters; the tests build one over
    the in-memory model.
    """

    def __init__(self, iam: IamPort, secretsmanager: SecretsPort, sts: StsPort) -> None:
        self.iam = iam
        self.secretsmanager = secretsmanager
        self.sts = sts

    # -- IAM -----------------------------------------------------------------------------------

    def user_details(self) -> list[UserDetail]:
        return self.iam.user_details()

    def user(self, user: str) -> UserDetail:
        return self.iam.user(user)

    def attached_policies(self, user: str) -> tuple[str, ...]:
        return self.iam.attached_policies(user)

    def credential_report(self) -> CredentialReport:
        return self.iam.credential_report()

    def access_keys(self, user: str) -> list[AccessKey]:
        return self.iam.access_keys(user)

    def key_last_used(self, key_id: str) -> KeyLastUsed:
        return self.iam.key_last_used(key_id)

    def create_access_key(self, user: str) -> NewKey:
        return self.iam.create_access_key(user)

    def set_key_status(self, user: str, key_id: str, status: KeyStatus) -> None:
        self.iam.set_key_status(user, key_id, status)

    def delete_access_key(self, user: str, key_id: str) -> None:
        self.iam.delete_access_key(user, key_id)

    def tag_user(self, user: str, tags: Mapping[str, str]) -> None:
        self.iam.tag_user(user, tags)

    def untag_user(self, user: str, keys: list[str]) -> None:
        self.iam.untag_user(user, keys)

    def key_creation(self, key_id: str, created: datetime) -> KeyCreation | None:
        return self.iam.key_creation(key_id, created)

    # -- Secrets Manager -------------------------------------------------------------------------

    def secrets(self, name_prefix: str) -> list[SecretSummary]:
        return self.secretsmanager.secrets(name_prefix)

    def describe_secret(self, name: str) -> SecretSummary | None:
        return self.secretsmanager.describe_secret(name)

    def secret_value(self, name: str, *, stage: str | None = None, version_id: str | None = None) -> SecretText:
        return self.secretsmanager.secret_value(name, stage=stage, version_id=version_id)

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
        return self.secretsmanager.create_secret(
            name,
            value,
            token,
            tags=tags,
            kms_key_id=kms_key_id,
            replica_regions=replica_regions,
            description=description,
        )

    def put_secret_value(self, name: str, value: SecretText, token: str, stages: list[str]) -> None:
        self.secretsmanager.put_secret_value(name, value, token, stages)

    def move_stage(
        self, name: str, stage: str, *, to_version: str | None = None, from_version: str | None = None
    ) -> bool:
        return self.secretsmanager.move_stage(name, stage, to_version=to_version, from_version=from_version)

    def tag_secret(self, name: str, tags: Mapping[str, str]) -> None:
        self.secretsmanager.tag_secret(name, tags)

    # -- STS -------------------------------------------------------------------------------------

    def account_id(self) -> str:
        return self.sts.account_id()

    def own_principal(self) -> str:
        return self.sts.own_principal()

    def caller_arn_with(self, key: NewKey) -> str:
        return self.sts.caller_arn_with(key)


if TYPE_CHECKING:

    def _ports_are_an_account(ports: Ports) -> AccountPort:
        return ports  # mypy proves that Ports implements AccountPort
