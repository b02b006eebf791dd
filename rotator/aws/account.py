"""The boto3 side of one account: its adapters behind the flat interface the core calls.

:class:`Aws` is :class:`rotator.ports.Ports` over the IAM, Secrets Manager and STS adapters, plus the
two ports the composition root uses (Organizations and the DynamoDB lease) and :meth:`Aws.assume`, which
builds the same for another account.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from rotator.aws.dynamodb import DynamoDbLease
from rotator.aws.iam import IamAdapter
from rotator.aws.organizations import OrganizationsAdapter
from rotator.aws.secrets import SecretsAdapter
from rotator.aws.sns import SnsAdapter
from rotator.aws.sts import StsAdapter
from rotator.aws.transport import Boundary
from rotator.ports import Ports
from rotator.records import LeaseRecord, OrgAccount

if TYPE_CHECKING:
    from rotator.ports import AccountPort, LeaseStore, OrganizationsPort


class Aws(Ports):
    """Typed IAM / Secrets Manager / STS / Organizations / DynamoDB operations of one account, over a
    :class:`Boundary`. Each operation is its adapter's (``aws.iam``, ``aws.secretsmanager``, ``aws.sts``,
    ``aws.organizations``, ``aws.lease_store``).
    """

    def __init__(
        self,
        boundary: Boundary,
        *,
        sleep: Callable[[float], None] = time.sleep,
        report_timeout: float = 120.0,
    ) -> None:
        super().__init__(
            IamAdapter(boundary, sleep=sleep, report_timeout=report_timeout),
            SecretsAdapter(boundary),
            StsAdapter(boundary),
        )
        self.boundary = boundary
        self.sleep = sleep
        self.report_timeout = report_timeout
        self.organizations = OrganizationsAdapter(boundary)
        self.lease_store = DynamoDbLease(boundary)
        #: Notifications (``notifications.sns_topic_arn``); see :mod:`rotator.notify`.
        self.sns = SnsAdapter(boundary)

    def assume(self, role_arn: str, session_name: str = "iam-key-rotator") -> Aws:
        """An :class:`Aws` for another account, through ``sts:AssumeRole`` (see :meth:`StsAdapter.assume_role`)."""
        boundary = StsAdapter(self.boundary).assume_role(role_arn, session_name)
        return Aws(boundary, sleep=self.sleep, report_timeout=self.report_timeout)

    # -- AWS Organizations (account discovery) ------------------------------------------------------

    def org_accounts(self) -> list[OrgAccount]:
        return self.organizations.org_accounts()

    def org_accounts_for_parent(self, parent_id: str) -> list[OrgAccount]:
        return self.organizations.org_accounts_for_parent(parent_id)

    def org_child_ous(self, parent_id: str) -> list[str]:
        return self.organizations.org_child_ous(parent_id)

    def org_accounts_under(self, parent_ids: Sequence[str]) -> list[OrgAccount]:
        return self.organizations.org_accounts_under(parent_ids)

    # -- DynamoDB (leader lease) -----------------------------------------------------------------

    def get_lease(self, table: str, name: str) -> LeaseRecord | None:
        return self.lease_store.get_lease(table, name)

    def put_lease(
        self, table: str, name: str, owner: str, expires: float, now: float, *, last_sweep: float | None = None
    ) -> None:
        self.lease_store.put_lease(table, name, owner, expires, now, last_sweep=last_sweep)

    def delete_lease(self, table: str, name: str, owner: str) -> None:
        self.lease_store.delete_lease(table, name, owner)


if TYPE_CHECKING:

    def _implements(aws: Aws) -> tuple[AccountPort, OrganizationsPort, LeaseStore]:
        return aws, aws, aws  # mypy proves the facade offers every port
