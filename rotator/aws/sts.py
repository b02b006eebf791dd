"""STS through the transport: who the rotator is, whether a new key works, other accounts' roles.

Implements :class:`rotator.ports.StsPort`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from rotator.aws.errors import need
from rotator.aws.session import refreshable_session
from rotator.aws.transport import Boundary, as_utc
from rotator.model import NewKey

if TYPE_CHECKING:
    from rotator.ports import StsPort


class StsAdapter:
    """STS operations of one account, over a :class:`Boundary`."""

    def __init__(self, boundary: Boundary) -> None:
        self.boundary = boundary
        self._own_principal: str | None = None

    def account_id(self) -> str:
        return str(need(self.boundary.call("sts", "GetCallerIdentity"), "Account", "sts", "GetCallerIdentity"))

    def own_principal(self) -> str:
        """The principal this process acts as (``sts:GetCallerIdentity``), cached; see ``same_principal``."""
        if self._own_principal is None:
            self._own_principal = str(
                need(self.boundary.call("sts", "GetCallerIdentity"), "Arn", "sts", "GetCallerIdentity")
            )
        return self._own_principal

    def caller_arn_with(self, key: NewKey) -> str:
        """``sts:GetCallerIdentity`` signed with ``key`` itself: proves the secret key works."""
        client = self.boundary.client_signed_by(key.key_id, key.secret_access_key, "sts")
        return str(
            need(self.boundary.call("sts", "GetCallerIdentity", client=client), "Arn", "sts", "GetCallerIdentity")
        )

    def assume_role(self, role_arn: str, session_name: str = "iam-key-rotator") -> Boundary:
        """A :class:`Boundary` in another account, through ``sts:AssumeRole``.

        The first ``AssumeRole`` happens now (a failure raises here, per account); later ones renew the
        temporary credentials before they expire (a daemon outlives their hour), through this boundary.
        """

        def fetch() -> dict[str, str]:
            creds = self.boundary.call("sts", "AssumeRole", RoleArn=role_arn, RoleSessionName=session_name)[
                "Credentials"
            ]
            return {
                "access_key": creds["AccessKeyId"],
                "secret_key": creds["SecretAccessKey"],
                "token": creds["SessionToken"],
                "expiry_time": as_utc(creds["Expiration"]).isoformat(),
            }

        session = refreshable_session(fetch, self.boundary.session.region_name)
        return self.boundary.for_account(session, role_arn.split(":")[4])


if TYPE_CHECKING:

    def _implements(adapter: StsAdapter) -> StsPort:
        return adapter  # mypy proves the adapter implements its port
