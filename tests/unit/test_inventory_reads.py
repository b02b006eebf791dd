"""The inventory's secrets listing runs beside its other bulk reads (users, credential report) when concurrency allows.

Issue 12: a steady-state ``plan`` costs about its longest chain of calls, not the sum of all three. With
``aws.concurrency: 1`` (the deterministic simulation) they run one after the other on the calling thread.
"""

from __future__ import annotations

import threading

import pytest
from fakes import FakeAccount

from rotator.config import Settings
from rotator.errors import AwsError
from rotator.inventory import Inventory

BULK_READS = ("GetAccountAuthorizationDetails", "GetCredentialReport", "ListSecrets")


def settings(concurrency: int) -> Settings:
    base = Settings()
    return base.model_copy(update={"aws": base.aws.model_copy(update={"concurrency": concurrency})})


def test_with_concurrency_the_secrets_are_listed_while_the_users_and_the_report_are_read() -> None:
    """The listing waits at a barrier for the users' read, then for the report's: only reads made at once pass."""
    fake = FakeAccount()
    fake.iam.add_user("app")
    fake.iam.add_key("app")
    users, report = threading.Barrier(2, timeout=5.0), threading.Barrier(2, timeout=5.0)
    fake.faults.before("GetAccountAuthorizationDetails", users.wait)
    fake.faults.before("GetCredentialReport", report.wait)
    fake.faults.before("ListSecrets", lambda: (users.wait(), report.wait()))

    (state,) = Inventory(fake.ports, settings(8), fake.account).gather()

    assert state.user == "app" and len(state.keys) == 1
    assert not users.broken and not report.broken


def test_without_concurrency_they_run_in_order_on_the_calling_thread() -> None:
    fake = FakeAccount()
    fake.iam.add_user("app")
    fake.iam.add_key("app")
    threads: set[str] = set()
    for operation in BULK_READS:
        fake.faults.before(operation, lambda: threads.add(threading.current_thread().name))

    (state,) = Inventory(fake.ports, settings(1), fake.account).gather()

    assert state.user == "app"
    assert threads == {threading.current_thread().name}
    reads = [call.split(":")[1] for call in fake.faults.calls if call.split(":")[1] in BULK_READS]
    assert reads == list(BULK_READS)


def test_without_managed_users_and_concurrency_nothing_else_is_listed() -> None:
    fake = FakeAccount()
    fake.iam.add_user("unmanaged", tags={})

    assert Inventory(fake.ports, settings(1), fake.account).gather() == []
    assert fake.faults.calls == ["iam:GetAccountAuthorizationDetails"]


@pytest.mark.parametrize("failing", ["GetCredentialReport", "ListSecrets"])
def test_a_failing_read_beside_the_users_fails_the_inventory(failing: str) -> None:
    """A read on another thread that fails is the inventory's failure (never "no keys")."""
    fake = FakeAccount()
    fake.iam.add_user("app")
    fake.iam.add_key("app")
    fake.faults.fail(failing, "Throttling")

    with pytest.raises(AwsError, match=f"{failing}: Throttling"):
        Inventory(fake.ports, settings(8), fake.account).gather()
