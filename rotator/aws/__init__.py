"""The AWS edge: the only package that imports boto3/botocore (STYLE principle 1).

::

    transport      Boundary: rate limit, AwsCall events, retries, timeouts, the one error map
    session        boto3 sessions (the environment's, an assumed role's)
    iam            IamAdapter            -> rotator.ports.IamPort (CloudTrail's key creations too)
    secrets        SecretsAdapter        -> rotator.ports.SecretsPort
    sts            StsAdapter            -> rotator.ports.StsPort
    organizations  OrganizationsAdapter  -> rotator.ports.OrganizationsPort
    sns            SnsAdapter            -> rotator.ports.SnsPort (notifications)
    dynamodb       DynamoDbLease         -> rotator.ports.LeaseStore
    account        Aws: one account's adapters behind the flat interface the core calls
    current_secret read_current_secret: one GetSecretValue for ``rotator credential-process``, botocore only

No botocore exception escapes this package: each is translated into the :mod:`rotator.errors` tree.
The names importable from ``rotator.aws`` before it became a package still are (records and
``SecretText``/``NewKey`` now live in :mod:`rotator.records` and :mod:`rotator.model`). They load on first
use (PEP 562): importing one module of the package, as ``rotator credential-process`` does on every SDK
credential refresh, does not load boto3 and every adapter.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rotator.aws.account import Aws
    from rotator.aws.dynamodb import DynamoDbLease
    from rotator.aws.errors import THROTTLING_CODES, need, translate
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
    from rotator.aws.sns import SnsAdapter
    from rotator.aws.sts import StsAdapter
    from rotator.aws.transport import TRANSPORT_ATTEMPTS, Boundary, RateLimiter, ServiceLimits
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

#: Each exported name -> the module that defines it (the imports above, for the type checker).
_EXPORTS: dict[str, str] = {
    "Aws": "rotator.aws.account",
    "DynamoDbLease": "rotator.aws.dynamodb",
    "IamAdapter": "rotator.aws.iam",
    "OrganizationsAdapter": "rotator.aws.organizations",
    "SecretsAdapter": "rotator.aws.secrets",
    "SnsAdapter": "rotator.aws.sns",
    "now_utc": "rotator.aws.session",
    "refreshable_session": "rotator.aws.session",
    "session_from_environment": "rotator.aws.session",
    "static_client": "rotator.aws.session",
    "static_session": "rotator.aws.session",
    "StsAdapter": "rotator.aws.sts",
    "THROTTLING_CODES": "rotator.aws.errors",
    "TRANSPORT_ATTEMPTS": "rotator.aws.transport",
    "Boundary": "rotator.aws.transport",
    "RateLimiter": "rotator.aws.transport",
    "ServiceLimits": "rotator.aws.transport",
    "need": "rotator.aws.errors",
    "translate": "rotator.aws.errors",
    "NewKey": "rotator.model",
    "SecretText": "rotator.model",
    "CredentialReport": "rotator.records",
    "KeyCreation": "rotator.records",
    "LeaseRecord": "rotator.records",
    "OrgAccount": "rotator.records",
    "ReportKey": "rotator.records",
    "SecretSummary": "rotator.records",
    "UserDetail": "rotator.records",
    "same_principal": "rotator.records",
}

if not TYPE_CHECKING:  # the type checker reads the imports above; a module __getattr__ would hide typos from it

    def __getattr__(name: str) -> object:
        module = _EXPORTS.get(name)
        if module is None:
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        globals()[name] = value
        return value


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
    "ServiceLimits",
    "SnsAdapter",
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
