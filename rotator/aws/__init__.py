"""The AWS edge: the only package that imports boto3/botocore (STYLE principle 1).

::

    transport      Boundary: rate limit, AwsCall events, retries, timeouts, the one error map
    session        boto3 sessions (the environment's, an assumed role's)
    iam            IamAdapter            -> rotator.ports.IamPort (CloudTrail's key creations too)
    secrets        SecretsAdapter        -> rotator.ports.SecretsPort
    sts            StsAdapter            -> rotator.ports.StsPort
    organizations  OrganizationsAdapter  -> rotator.ports.OrganizationsPort
    dynamodb       DynamoDbLease         -> rotator.ports.LeaseStore
    account        Aws: one account's adapters behind the flat interface the core calls

No botocore exception escapes this package: each is translated into the :mod:`rotator.errors` tree.
The names importable from ``rotator.aws`` before it became a package still are (records and
``SecretText``/``NewKey`` now live in :mod:`rotator.records` and :mod:`rotator.model`).
"""

from __future__ import annotations

from rotator.aws.account import Aws
from rotator.aws.dynamodb import DynamoDbLease
from rotator.aws.iam import IamAdapter
from rotator.aws.organizations import OrganizationsAdapter
from rotator.aws.secrets import SecretsAdapter
from rotator.aws.session import (
    now_utc,
    refreshable_session,
    session_from_environment,
    static_client,
    static_session,
)
from rotator.aws.sts import StsAdapter
from rotator.aws.transport import (
    THROTTLING_CODES,
    TRANSPORT_ATTEMPTS,
    Boundary,
    RateLimiter,
    need,
    translate,
)
from rotator.model import NewKey, SecretText
from rotator.records import (
    CredentialReport,
    KeyCreation,
    LeaseRecord,
    OrgAccount,
    ReportKey,
    SecretSummary,
    UserDetail,
    same_principal,
)

__all__ = [
    "THROTTLING_CODES",
    "TRANSPORT_ATTEMPTS",
    "Aws",
    "Boundary",
    "CredentialReport",
    "DynamoDbLease",
    "IamAdapter",
    "KeyCreation",
    "LeaseRecord",
    "NewKey",
    "OrgAccount",
    "OrganizationsAdapter",
    "RateLimiter",
    "ReportKey",
    "SecretSummary",
    "SecretText",
    "SecretsAdapter",
    "StsAdapter",
    "UserDetail",
    "need",
    "now_utc",
    "refreshable_session",
    "same_principal",
    "session_from_environment",
    "static_client",
    "static_session",
    "translate",
]
