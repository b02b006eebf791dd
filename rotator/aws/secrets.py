"""Secrets Manager through the transport: secrets, their versions and staging labels.

Implements :class:`rotator.ports.SecretsPort`.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any

from rotator.aws.transport import Boundary, as_utc
from rotator.errors import AwsError, NotFoundError
from rotator.model import SecretText
from rotator.records import SecretSummary

if TYPE_CHECKING:
    from rotator.ports import SecretsPort


class SecretsAdapter:
    """Secrets Manager operations of one account, over a :class:`Boundary`."""

    def __init__(self, boundary: Boundary) -> None:
        self.boundary = boundary

    def secrets(self, name_prefix: str) -> list[SecretSummary]:
        # Secrets scheduled for deletion too: a plan must see what the sweep's DescribeSecret will.
        params: dict[str, Any] = {"MaxResults": 100, "IncludePlannedDeletion": True}
        if name_prefix:
            params["Filters"] = [{"Key": "name", "Values": [name_prefix]}]
        out: list[SecretSummary] = []
        for page in self.boundary.pages("secretsmanager", "ListSecrets", "NextToken", "NextToken", **params):
            for item in page.get("SecretList", []):
                if name_prefix and not item["Name"].startswith(name_prefix):
                    continue  # the name filter also matches words inside names
                out.append(_summary(item, item.get("SecretVersionsToStages", {})))
            del page  # only the summaries kept: the page goes before the next one is read
        return out

    def describe_secret(self, name: str) -> SecretSummary | None:
        try:
            item = self.boundary.call("secretsmanager", "DescribeSecret", SecretId=name, missing_ok=True)
        except NotFoundError:
            return None
        return _summary(item, item.get("VersionIdsToStages", {}))

    def secret_value(self, name: str, *, stage: str | None = None, version_id: str | None = None) -> SecretText:
        params: dict[str, Any] = {"SecretId": name}
        if version_id:
            params["VersionId"] = version_id
        else:
            params["VersionStage"] = stage or "AWSCURRENT"
        item = self.boundary.call("secretsmanager", "GetSecretValue", **params)
        return SecretText(str(item.get("SecretString", "")))

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
        params: dict[str, Any] = {
            "Name": name,
            "SecretString": value.reveal(),
            "ClientRequestToken": token,
            "Description": description,
            "Tags": [{"Key": k, "Value": v} for k, v in tags.items()],
        }
        if kms_key_id:
            params["KmsKeyId"] = kms_key_id
        if replica_regions:
            params["AddReplicaRegions"] = [{"Region": region} for region in replica_regions]
        return str(self.boundary.call("secretsmanager", "CreateSecret", once=True, **params).get("ARN", ""))

    def put_secret_value(self, name: str, value: SecretText, token: str, stages: list[str]) -> None:
        self.boundary.call(
            "secretsmanager",
            "PutSecretValue",
            once=True,
            SecretId=name,
            SecretString=value.reveal(),
            ClientRequestToken=token,
            VersionStages=stages,
        )

    def move_stage(
        self, name: str, stage: str, *, to_version: str | None = None, from_version: str | None = None
    ) -> bool:
        """Put ``stage`` on ``to_version`` and/or take it off ``from_version``.

        Idempotent: True when this call moved the label; False when another writer had already
        left it where it should be (Secrets Manager then rejects the move as naming a version that
        no longer holds the label). Anything else raises.
        """
        params: dict[str, Any] = {"SecretId": name, "VersionStage": stage}
        if to_version:
            params["MoveToVersionId"] = to_version
        if from_version:
            params["RemoveFromVersionId"] = from_version
        try:
            self.boundary.call("secretsmanager", "UpdateSecretVersionStage", **params)
        except AwsError as exc:
            if exc.code != "InvalidParameterException":
                raise
            summary = self.describe_secret(name)
            if summary is None or not summary.stage_is_where(stage, to_version=to_version, from_version=from_version):
                raise
            return False
        return True

    def tag_secret(self, name: str, tags: Mapping[str, str]) -> None:
        self.boundary.call(
            "secretsmanager",
            "TagResource",
            SecretId=name,
            Tags=[{"Key": k, "Value": v} for k, v in tags.items()],
        )


def _summary(item: Mapping[str, Any], versions: Mapping[str, list[str]]) -> SecretSummary:
    changed = item.get("LastChangedDate")
    created = item.get("CreatedDate")
    return SecretSummary(
        name=item["Name"],
        arn=item.get("ARN", ""),
        # Tag keys and stage labels repeat across every secret: one string each (sys.intern), not one a secret.
        tags={sys.intern(tag["Key"]): tag["Value"] for tag in item.get("Tags", []) or []},
        versions={
            version: tuple(sys.intern(stage) for stage in stages) for version, stages in versions.items() if stages
        },
        last_changed=as_utc(changed) if isinstance(changed, datetime) else None,
        deleted=bool(item.get("DeletedDate")),
        created=as_utc(created) if isinstance(created, datetime) else None,
    )


if TYPE_CHECKING:

    def _implements(adapter: SecretsAdapter) -> SecretsPort:
        return adapter  # mypy proves the adapter implements its port
