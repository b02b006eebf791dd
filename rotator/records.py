"""What the AWS ports return (:mod:`rotator.ports`): frozen values, no boto3, no I/O.

The records an inventory holds one of per user (a whole account's at once) have ``__slots__``: no
``__dict__`` each, a few hundred bytes less per user.

The boto3 adapters (:mod:`rotator.aws`) and the in-memory model of the tests build the same records.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True, slots=True)
class UserDetail:
    name: str
    path: str
    arn: str
    tags: Mapping[str, str]
    #: ARNs of the managed policies attached to the user (``AttachedManagedPolicies``); GetUser does not
    #: return them, so :meth:`rotator.ports.IamPort.user` leaves them empty.
    attached_policies: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class ReportKey:
    """One access-key slot of a credential report row (the report has no key ids)."""

    active: bool
    created: datetime
    last_used: datetime | None
    #: ``access_key_N_last_used_service`` / ``_region`` (None for "N/A").
    last_used_service: str | None = None
    last_used_region: str | None = None


@dataclass(frozen=True, slots=True)
class KeyLastUsed:
    """A key's last use as ``GetAccessKeyLastUsed`` reports it: when, by which service, in which region.

    IAM answers ``N/A`` for the service and region of a key never used; they are None here.
    https://docs.aws.amazon.com/IAM/latest/APIReference/API_AccessKeyLastUsed.html
    """

    at: datetime | None = None
    service: str | None = None
    region: str | None = None


@dataclass(frozen=True, slots=True)
class CredentialReport:
    """Access-key slots per user, and when IAM generated the report (it serves one up to 4 h old)."""

    generated: datetime | None
    users: Mapping[str, list[ReportKey]]


@dataclass(frozen=True, slots=True)
class SecretSummary:
    name: str
    arn: str
    tags: Mapping[str, str]
    versions: Mapping[str, tuple[str, ...]]
    #: ``LastChangedDate``: the last change of any kind (value, stages, tags).
    last_changed: datetime | None = None
    #: ``DeletedDate`` is set: scheduled for deletion (restore or purge it before it is written again).
    deleted: bool = False
    #: ``CreatedDate``: when the secret (and a bootstrap's publication) was created.
    created: datetime | None = None

    def stage_is_where(self, stage: str, *, to_version: str | None, from_version: str | None) -> bool:
        """The label already is where ``UpdateSecretVersionStage(to_version, from_version)`` would put it.

        Secrets Manager refuses a move naming a version that no longer holds the label: after another
        writer's move this says the refused call has nothing left to do.
        """
        placed = to_version is None or stage in self.versions.get(to_version, ())
        removed = from_version is None or from_version == to_version or stage not in self.versions.get(from_version, ())
        return placed and removed


@dataclass(frozen=True)
class KeyCreation:
    """Who created an access key, from CloudTrail's ``CreateAccessKey`` event."""

    key_id: str
    principal_arn: str


@dataclass(frozen=True)
class OrgAccount:
    """A member account as AWS Organizations lists it."""

    account_id: str
    arn: str
    name: str
    state: str  # ACTIVE | SUSPENDED | PENDING_CLOSURE | CLOSED

    @property
    def partition(self) -> str:
        parts = self.arn.split(":")
        return parts[1] if len(parts) > 1 and parts[1] else "aws"


@dataclass(frozen=True)
class LeaseRecord:
    """The leader lease item of the coordination table."""

    name: str
    owner: str
    expires: float  # epoch seconds
    #: End of the last successful sweep by any leader (AWS time, epoch seconds); None: none recorded.
    last_sweep: float | None = None


def same_principal(a: str, b: str) -> bool:
    """Whether two ARNs are the same principal: an assumed role is the same whatever its session name.

    Each replica (and each renewal) of the rotator's role has its own session name, so
    ``arn:aws:sts::1:assumed-role/Rotator/i-0abc`` and ``.../Rotator/i-0def`` are one principal.
    """

    def identity(arn: str) -> str:
        parts = arn.split(":", 5)
        if len(parts) == 6 and parts[5].startswith("assumed-role/"):
            role = parts[5].split("/")
            return ":".join([*parts[:2], "sts", "", parts[4], "/".join(role[:2])])
        return arn

    return identity(a) == identity(b)
