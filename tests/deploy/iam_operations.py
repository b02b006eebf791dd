"""The AWS API operations iam-key-rotator calls, as IAM actions ("service:Operation").

The single source of truth for `deploy/iam/rotator-policy.json` (see test_iam_policy.py). A test that records
every call the rotator sends can assert ``recorded <= ROTATOR_OPERATIONS``: the boto3 service names the
rotator uses (``iam``, ``secretsmanager``, ``sts``) are also the IAM action prefixes.
"""

from __future__ import annotations

ROTATOR_OPERATIONS: frozenset[str] = frozenset(
    {
        # IAM: inventory
        "iam:GetAccountAuthorizationDetails",
        "iam:GenerateCredentialReport",
        "iam:GetCredentialReport",
        "iam:GetUser",
        "iam:ListAccessKeys",
        "iam:GetAccessKeyLastUsed",
        "iam:ListAttachedUserPolicies",  # a quarantined user's policies, fresh (issue 14)
        # IAM: key lifecycle and the rotation marker tag
        "iam:CreateAccessKey",
        "iam:UpdateAccessKey",
        "iam:DeleteAccessKey",
        "iam:TagUser",
        "iam:UntagUser",
        # Secrets Manager
        "secretsmanager:ListSecrets",
        "secretsmanager:DescribeSecret",
        "secretsmanager:GetSecretValue",
        "secretsmanager:CreateSecret",
        "secretsmanager:PutSecretValue",
        "secretsmanager:UpdateSecretVersionStage",
        "secretsmanager:TagResource",
        # STS
        "sts:GetCallerIdentity",
        "sts:AssumeRole",  # multi-account only
        # CloudTrail: who created a key an interrupted rotation left unrecorded
        "cloudtrail:LookupEvents",
        # SNS: notifications, only with notifications.sns_topic_arn (optional/sns-notifications.json)
        "sns:Publish",
    }
)

#: Operations without a resource type: AWS only accepts ``"Resource": "*"`` for them.
#: None of them changes anything.
ACCOUNT_LEVEL_OPERATIONS: frozenset[str] = frozenset(
    {
        "iam:GetAccountAuthorizationDetails",
        "iam:GenerateCredentialReport",  # generates a read-only report; no resource type
        "iam:GetCredentialReport",
        "secretsmanager:ListSecrets",
        "sts:GetCallerIdentity",
        "cloudtrail:LookupEvents",  # no resource-level permissions
    }
)

#: Operations that change state in AWS: never allowed on ``"Resource": "*"``.
MUTATING_OPERATIONS: frozenset[str] = frozenset(
    {
        "iam:CreateAccessKey",
        "iam:UpdateAccessKey",
        "iam:DeleteAccessKey",
        "iam:TagUser",
        "iam:UntagUser",
        "secretsmanager:CreateSecret",
        "secretsmanager:PutSecretValue",
        "secretsmanager:UpdateSecretVersionStage",
        "secretsmanager:TagResource",
        "sts:AssumeRole",
        "sns:Publish",
    }
)

#: Operations on a managed IAM user (resource ``arn:aws:iam::ACCOUNT:user/PATH/NAME``).
USER_OPERATIONS: frozenset[str] = frozenset(
    op for op in ROTATOR_OPERATIONS if op.startswith("iam:") and op not in ACCOUNT_LEVEL_OPERATIONS
)

#: Operations on a managed secret (resource ``arn:aws:secretsmanager:REGION:ACCOUNT:secret:PREFIX...``).
SECRET_OPERATIONS: frozenset[str] = frozenset(
    op for op in ROTATOR_OPERATIONS if op.startswith("secretsmanager:") and op not in ACCOUNT_LEVEL_OPERATIONS
)

#: Not called by the rotator itself: Secrets Manager calls KMS on its behalf when a customer managed key
#: is used.
#: Allowed only in a statement conditioned on ``kms:ViaService``.
OPTIONAL_KMS_ACTIONS: frozenset[str] = frozenset({"kms:Decrypt", "kms:GenerateDataKey"})
