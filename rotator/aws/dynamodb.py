"""DynamoDB through the transport: the leader lease item (``coordination.lease_table``, :mod:`rotator.lease`).

Implements :class:`rotator.ports.LeaseStore`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from rotator.aws.transport import Boundary
from rotator.records import LeaseRecord

if TYPE_CHECKING:
    from rotator.ports import LeaseStore


class DynamoDbLease:
    """The lease item's conditional reads and writes, over a :class:`Boundary`."""

    def __init__(self, boundary: Boundary) -> None:
        self.boundary = boundary

    def get_lease(self, table: str, name: str) -> LeaseRecord | None:
        """The lease item, read consistently (``dynamodb:GetItem``); None when nobody holds it."""
        item = self.boundary.call(
            "dynamodb", "GetItem", TableName=table, Key={"name": {"S": name}}, ConsistentRead=True
        ).get("Item")
        if not item:
            return None
        try:
            record = LeaseRecord(
                name=str(item["name"]["S"]),
                owner=str(item.get("owner", {}).get("S", "")),
                expires=float(item.get("expires", {}).get("N", "0")),
            )
        except (KeyError, TypeError, ValueError):
            return LeaseRecord(name=name, owner="", expires=0.0)  # a malformed item counts as expired
        try:
            swept = item.get("last_sweep", {}).get("N")
            return LeaseRecord(record.name, record.owner, record.expires, None if swept is None else float(swept))
        except (AttributeError, TypeError, ValueError):
            return record  # an unreadable last_sweep is no record of one (the new leader sweeps at once)

    def put_lease(
        self, table: str, name: str, owner: str, expires: float, now: float, *, last_sweep: float | None = None
    ) -> None:
        """Take or renew the lease (``dynamodb:PutItem``) if it is free, ours, or expired at ``now``.

        ``last_sweep`` (the end of the last successful sweep, AWS time) is carried in the same item.
        Raises :class:`~rotator.errors.ConflictError` when another owner holds an unexpired lease.
        """
        item = {"name": {"S": name}, "owner": {"S": owner}, "expires": {"N": _epoch_number(expires)}}
        if last_sweep is not None:
            item["last_sweep"] = {"N": _epoch_number(last_sweep)}
        self.boundary.call(
            "dynamodb",
            "PutItem",
            TableName=table,
            Item=item,
            ConditionExpression="attribute_not_exists(#name) OR #owner = :me OR #expires < :now",
            ExpressionAttributeNames={"#name": "name", "#owner": "owner", "#expires": "expires"},
            ExpressionAttributeValues={":me": {"S": owner}, ":now": {"N": _epoch_number(now)}},
        )

    def delete_lease(self, table: str, name: str, owner: str) -> None:
        """Give the lease up (``dynamodb:DeleteItem``) if ``owner`` still holds it.

        Raises :class:`~rotator.errors.ConflictError` when someone else holds it (nothing to give up).
        """
        self.boundary.call(
            "dynamodb",
            "DeleteItem",
            TableName=table,
            Key={"name": {"S": name}},
            ConditionExpression="#owner = :me",
            ExpressionAttributeNames={"#owner": "owner"},
            ExpressionAttributeValues={":me": {"S": owner}},
        )


def _epoch_number(value: float) -> str:
    """A DynamoDB number for epoch seconds, millisecond precision."""
    return f"{value:.3f}"


if TYPE_CHECKING:

    def _implements(adapter: DynamoDbLease) -> LeaseStore:
        return adapter  # mypy proves the adapter implements its port
