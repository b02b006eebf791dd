"""AWS Organizations through the transport: the member accounts to manage (``organization`` settings).

Implements :class:`rotator.ports.OrganizationsPort`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from rotator.aws.transport import Boundary
from rotator.errors import AwsError
from rotator.records import OrgAccount

if TYPE_CHECKING:
    from rotator.ports import OrganizationsPort


class OrganizationsAdapter:
    """Organizations operations, over a :class:`Boundary` of the management (or a delegated) account."""

    def __init__(self, boundary: Boundary) -> None:
        self.boundary = boundary

    def org_accounts(self) -> list[OrgAccount]:
        """Every account of the organization (``organizations:ListAccounts``), all pages or an error.

        An organization always lists at least its management account, so an empty answer is an
        error too (never read as "no accounts to manage").
        """
        accounts = self._org_account_pages("ListAccounts")
        if not accounts:
            raise AwsError(
                "organizations:ListAccounts: no accounts listed (is the caller in an organization?)",
                service="organizations",
                operation="ListAccounts",
            )
        return accounts

    def org_accounts_for_parent(self, parent_id: str) -> list[OrgAccount]:
        """Accounts directly under a root or OU (``organizations:ListAccountsForParent``)."""
        return self._org_account_pages("ListAccountsForParent", ParentId=parent_id)

    def org_child_ous(self, parent_id: str) -> list[str]:
        """Ids of the OUs directly under a root or OU (``organizations:ListChildren``)."""
        ids: list[str] = []
        for page in self.boundary.pages(
            "organizations",
            "ListChildren",
            "NextToken",
            "NextToken",
            ParentId=parent_id,
            ChildType="ORGANIZATIONAL_UNIT",
        ):
            ids.extend(str(child["Id"]) for child in page.get("Children", []))
        return ids

    def org_accounts_under(self, parent_ids: Sequence[str]) -> list[OrgAccount]:
        """Accounts under the given roots/OUs and every OU nested below them, each once."""
        return accounts_under(parent_ids, self.org_accounts_for_parent, self.org_child_ous)

    def _org_account_pages(self, operation: str, **params: Any) -> list[OrgAccount]:
        out: list[OrgAccount] = []
        for page in self.boundary.pages("organizations", operation, "NextToken", "NextToken", **params):
            for item in page.get("Accounts", []):
                out.append(
                    OrgAccount(
                        account_id=str(item["Id"]),
                        arn=str(item.get("Arn", "")),
                        name=str(item.get("Name", "")),
                        # ``State`` replaces the deprecated ``Status`` (both ACTIVE for live accounts).
                        state=str(item.get("State") or item.get("Status") or "UNKNOWN"),
                    )
                )
        return out


if TYPE_CHECKING:

    def _implements(adapter: OrganizationsAdapter) -> OrganizationsPort:
        return adapter  # mypy proves the adapter implements its port


def accounts_under(
    parent_ids: Sequence[str],
    accounts_for_parent: Callable[[str], list[OrgAccount]],
    child_ous: Callable[[str], list[str]],
) -> list[OrgAccount]:
    """Breadth-first over roots/OUs: the accounts directly under each parent, then its child OUs; each once."""
    seen_parents: set[str] = set()
    found: dict[str, OrgAccount] = {}
    todo = list(parent_ids)
    while todo:
        parent = todo.pop(0)
        if parent in seen_parents:
            continue
        seen_parents.add(parent)
        for account in accounts_for_parent(parent):
            found.setdefault(account.account_id, account)
        todo.extend(child_ous(parent))
    return list(found.values())
