"""IAM through the transport: users, their access keys and tags, the credential report - and
CloudTrail's record of who created a key (the witness of ownership, docs/design.md).

Implements :class:`rotator.ports.IamPort`.
"""

from __future__ import annotations

import csv
import io
import json
import sys
import time
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from rotator.aws.errors import need
from rotator.aws.transport import Boundary, as_utc
from rotator.errors import AwsError
from rotator.model import AccessKey, KeyStatus, NewKey, SecretText
from rotator.records import CredentialReport, KeyCreation, KeyLastUsed, ReportKey, UserDetail

if TYPE_CHECKING:
    from rotator.ports import IamPort


class IamAdapter:
    """IAM operations of one account, over a :class:`Boundary`."""

    def __init__(
        self,
        boundary: Boundary,
        *,
        sleep: Callable[[float], None] = time.sleep,
        report_timeout: float = 120.0,
    ) -> None:
        self.boundary = boundary
        self.sleep = sleep
        #: Seconds to wait for IAM to generate a credential report.
        self.report_timeout = report_timeout

    # -- IAM reads -----------------------------------------------------------------------------

    def user_details(self) -> list[UserDetail]:
        """Every IAM user with path and tags, in a few pages (GetAccountAuthorizationDetails)."""
        users: list[UserDetail] = []
        for page in self.boundary.pages(
            "iam", "GetAccountAuthorizationDetails", "Marker", "Marker", Filter=["User"], MaxItems=1000
        ):
            users.extend(_user_detail(item) for item in page.get("UserDetailList", []))
            del page  # only the fields kept: the page goes before the next one is read
        return users

    def user(self, user: str) -> UserDetail:
        return _user_detail(need(self.boundary.call("iam", "GetUser", UserName=user), "User", "iam", "GetUser"))

    def attached_policies(self, user: str) -> tuple[str, ...]:
        """ARNs of the managed policies attached to ``user``, fresh (ListAttachedUserPolicies)."""
        arns: list[str] = []
        for page in self.boundary.pages("iam", "ListAttachedUserPolicies", "Marker", "Marker", UserName=user):
            arns.extend(p["PolicyArn"] for p in page.get("AttachedPolicies", []) if "PolicyArn" in p)
        return tuple(arns)

    def credential_report(self) -> CredentialReport:
        """Access-key slots of every user from one credential report (no key ids in it).

        IAM regenerates the report only when the one it holds is more than 4 hours old, so the content
        may be that old: ``generated`` says how old, and the inventory trusts a user's row only where
        nothing newer contradicts it.
        https://docs.aws.amazon.com/IAM/latest/UserGuide/id_credentials_getting-report.html
        """
        deadline = time.monotonic() + self.report_timeout
        delay = 0.5
        while True:
            state = self.boundary.call("iam", "GenerateCredentialReport").get("State")
            if state == "COMPLETE":
                break
            if time.monotonic() > deadline:
                raise AwsError(
                    "iam:GenerateCredentialReport: report not ready in time",
                    service="iam",
                    operation="GenerateCredentialReport",
                )
            self.sleep(delay)
            delay = min(delay * 2, 8.0)
        answer = self.boundary.call("iam", "GetCredentialReport")
        content = need(answer, "Content", "iam", "GetCredentialReport")
        generated = answer.get("GeneratedTime")
        del answer  # 10,000 users' report is megabytes: held once, as bytes, while its rows are read
        # Read line by line from the bytes (newline="": a quoted field may span lines, as csv wants): neither
        # a whole decoded copy nor io.StringIO's (4 bytes a character) is ever held beside them.
        lines = (
            io.TextIOWrapper(io.BytesIO(content), encoding="utf-8", newline="")
            if isinstance(content, bytes)
            else io.StringIO(str(content), newline="")
        )
        report: dict[str, list[ReportKey]] = {}
        for row in csv.DictReader(lines):
            try:
                report[row["user"]] = _report_slots(row)
            except (ValueError, KeyError, TypeError):
                # A row that does not parse (an emulator that leaves commas unquoted, say) is
                # dropped: its user falls back to ListAccessKeys, never to "no keys".
                continue
        return CredentialReport(as_utc(generated) if isinstance(generated, datetime) else None, report)

    def access_keys(self, user: str) -> list[AccessKey]:
        keys: list[AccessKey] = []
        for page in self.boundary.pages("iam", "ListAccessKeys", "Marker", "Marker", UserName=user):
            for item in page.get("AccessKeyMetadata", []):
                keys.append(
                    AccessKey(
                        key_id=item["AccessKeyId"],
                        status=KeyStatus(item["Status"]),
                        created=as_utc(item["CreateDate"]),
                    )
                )
        return keys

    def key_last_used(self, key_id: str) -> KeyLastUsed:
        """When, by which service and in which region the key was last used (``N/A``: None)."""
        info = self.boundary.call("iam", "GetAccessKeyLastUsed", AccessKeyId=key_id).get("AccessKeyLastUsed", {})
        used = info.get("LastUsedDate")
        return KeyLastUsed(
            at=as_utc(used) if isinstance(used, datetime) else None,
            service=_reported_name(info.get("ServiceName")),
            region=_reported_name(info.get("Region")),
        )

    # -- IAM writes ----------------------------------------------------------------------------

    def create_access_key(self, user: str) -> NewKey:
        """A new key; never retried after AWS may have acted (a retry would create a second key)."""
        answer = self.boundary.call("iam", "CreateAccessKey", once=True, UserName=user)
        item = need(answer, "AccessKey", "iam", "CreateAccessKey")
        return NewKey(
            key_id=item["AccessKeyId"],
            secret_access_key=SecretText(item["SecretAccessKey"]),
            created=as_utc(item["CreateDate"]),
        )

    def set_key_status(self, user: str, key_id: str, status: KeyStatus) -> None:
        self.boundary.call("iam", "UpdateAccessKey", UserName=user, AccessKeyId=key_id, Status=status.value)

    def delete_access_key(self, user: str, key_id: str) -> None:
        self.boundary.call("iam", "DeleteAccessKey", UserName=user, AccessKeyId=key_id)

    def tag_user(self, user: str, tags: Mapping[str, str]) -> None:
        self.boundary.call("iam", "TagUser", UserName=user, Tags=[{"Key": k, "Value": v} for k, v in tags.items()])

    def untag_user(self, user: str, keys: list[str]) -> None:
        self.boundary.call("iam", "UntagUser", UserName=user, TagKeys=keys)

    # -- who created a key (CloudTrail event history) --------------------------------------

    def key_creation(self, key_id: str, created: datetime) -> KeyCreation | None:
        """The ``CreateAccessKey`` event that created ``key_id``, or None when CloudTrail has none (yet).

        CloudTrail's event history keeps 90 days of management events in every account without a
        trail, delivers an event typically within 5 minutes (not guaranteed), and records IAM's events
        in the partition's home region. Lookups are limited to 2 per second per account and region.
        https://docs.aws.amazon.com/awscloudtrail/latest/userguide/view-cloudtrail-events.html
        """
        start = created - timedelta(hours=1)
        end = created + timedelta(hours=1)
        for page in self.boundary.pages(
            "cloudtrail",
            "LookupEvents",
            "NextToken",
            "NextToken",
            LookupAttributes=[{"AttributeKey": "ResourceName", "AttributeValue": key_id}],
            StartTime=start,
            EndTime=end,
        ):
            for event in page.get("Events", []):
                if event.get("EventName") != "CreateAccessKey":
                    continue
                try:
                    detail = json.loads(event.get("CloudTrailEvent") or "{}")
                    created_id = detail["responseElements"]["accessKey"]["accessKeyId"]
                    principal = detail["userIdentity"]["arn"]
                except (ValueError, KeyError, TypeError):
                    continue
                if created_id == key_id and isinstance(principal, str):
                    return KeyCreation(key_id, principal)
        return None


def _user_detail(item: Mapping[str, Any]) -> UserDetail:
    # Paths and tag keys repeat across a whole account's users: one string each (sys.intern), not one a user.
    return UserDetail(
        name=item["UserName"],
        path=sys.intern(item.get("Path", "/")),
        arn=item.get("Arn", ""),
        tags={sys.intern(tag["Key"]): tag["Value"] for tag in item.get("Tags", [])},
        attached_policies=tuple(p["PolicyArn"] for p in item.get("AttachedManagedPolicies", []) if "PolicyArn" in p),
    )


#: What IAM writes where it has no value: never used, not tracked, or not applicable.
_NO_VALUE = frozenset({"", "N/A", "no_information", "not_supported"})


def _parse_report_time(raw: str) -> datetime | None:
    if raw in _NO_VALUE:
        return None
    return as_utc(datetime.fromisoformat(raw.replace("Z", "+00:00")))


def _reported_name(raw: object) -> str | None:
    """A service or region name as IAM reports a key's last use; None for "N/A" and the like."""
    if not isinstance(raw, str) or raw.strip() in _NO_VALUE:
        return None
    return raw.strip()


def _report_slots(row: Mapping[str, str]) -> list[ReportKey]:
    """The access-key slots of one credential report row."""
    slots: list[ReportKey] = []
    for n in (1, 2):
        created = _parse_report_time(row.get(f"access_key_{n}_last_rotated", "N/A"))
        if created is None:
            continue
        slots.append(
            ReportKey(
                active=row.get(f"access_key_{n}_active") == "true",
                created=created,
                last_used=_parse_report_time(row.get(f"access_key_{n}_last_used_date", "N/A")),
                last_used_service=_reported_name(row.get(f"access_key_{n}_last_used_service")),
                last_used_region=_reported_name(row.get(f"access_key_{n}_last_used_region")),
            )
        )
    return slots


if TYPE_CHECKING:

    def _implements(adapter: IamAdapter) -> IamPort:
        return adapter  # mypy proves the adapter implements its port
