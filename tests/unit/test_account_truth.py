"""Per-account truth: any exception in one account costs that account only, every failure names its account,
and ``rotator_account_last_success_timestamp_seconds{account}`` says when each account last succeeded.

Also the App's own guard: with AWS's clock deciding (no clock injected), no change goes out while that clock
is unknown.
"""

from __future__ import annotations

import threading
from datetime import timedelta
from typing import cast

import pytest
from fakes import FakeAccount
from prometheus_client import CollectorRegistry

from rotator.app import Account, App
from rotator.aws import Aws
from rotator.awsclock import AwsClock, ClockError
from rotator.config import Settings
from rotator.events import AccountSwept, ActionFailed, Event
from rotator.inventory import Inventory

DAY = timedelta(days=1)
GOOD, BAD = "111111111111", "222222222222"


def two_accounts() -> tuple[App, FakeAccount, FakeAccount, list[Event]]:
    good, bad = FakeAccount(account=GOOD), FakeAccount(account=BAD)
    bad.clock = good.clock
    settings = Settings()
    app = App(settings, registry=CollectorRegistry(), clock=good.clock, log=False)
    events: list[Event] = []
    app.bus.subscribe(events.append)
    app._accounts = [
        Account(fake.account, cast(Aws, fake.ports), Inventory(fake.ports, settings, fake.account))
        for fake in (bad, good)  # the failing account first: the good one must still be swept
    ]
    for fake in (good, bad):
        fake.iam.add_user("app")
        fake.iam.add_key("app", age=100 * DAY)
    return app, good, bad, events


def sample(app: App, name: str, **labels: str) -> float | None:
    return app.registry.get_sample_value(name, labels)


@pytest.mark.parametrize(
    "error",
    [
        RuntimeError("a defect"),
        KeyError("Credentials"),  # what a botocore credential refresh raises on a malformed answer
    ],
)
def test_an_exception_in_one_account_costs_that_account_only(error: Exception) -> None:
    app, good, bad, events = two_accounts()

    def explode() -> None:
        raise error

    bad.faults.before("GetAccountAuthorizationDetails", explode)
    bad.faults.before("ListUsers", explode)

    report = app.sweep()

    assert good.iam.keys("app") and len(good.iam.keys("app")) == 2, "the good account was rotated"
    (failure,) = report.errors
    assert failure.account == BAD and f"unexpected {type(error).__name__}" in failure.message
    failed = [e for e in events if isinstance(e, ActionFailed)]
    assert [e.account for e in failed] == [BAD], "every failure event names its account"
    swept = {e.account: e.result for e in events if isinstance(e, AccountSwept)}
    assert swept == {BAD: "failure", GOOD: "success"}
    assert sample(app, "rotator_account_last_success_timestamp_seconds", account=GOOD) == good.clock.now.timestamp()
    assert sample(app, "rotator_account_last_success_timestamp_seconds", account=BAD) is None


def test_with_aws_time_deciding_nothing_changes_while_that_clock_is_unknown() -> None:
    fake = FakeAccount()
    fake.iam.add_user("app")
    fake.iam.add_key("app", age=100 * DAY)
    settings = Settings()
    clock = AwsClock()  # no AWS answer yet: unknown
    app = App(settings, registry=CollectorRegistry(), log=False, aws_clock=clock)
    assert app.clock == clock.now and app.guards, "AWS's time decides; its guard is on"
    with pytest.raises(ClockError, match="iam:CreateAccessKey refused: AWS clock unknown"):
        app.guard("iam:CreateAccessKey")
    events: list[Event] = []
    app.bus.subscribe(events.append)
    app._accounts = [Account(fake.account, cast(Aws, fake.ports), Inventory(fake.ports, settings, fake.account))]
    report = app.sweep()
    assert len(fake.iam.keys("app")) == 1, "nothing created"
    (failed,) = [e for e in events if isinstance(e, ActionFailed)]
    assert failed.account == fake.account and "AWS clock unknown" in failed.error
    assert report.failed == 1


@pytest.mark.parametrize("parallel", [1, 2])
def test_a_sweep_runs_aws_parallel_accounts_accounts_at_once_and_reports_them_in_order(parallel: int) -> None:
    """Issue 12, item 3: a sweep works on ``aws.parallel_accounts`` accounts at once (each under its own limits);
    its report lists them in account order whatever finished first. Both accounts' inventories wait at a barrier
    for two parties: swept one after the other, neither gets past it (its account fails, nothing is rotated)."""
    app, good, bad, _events = two_accounts()
    app.settings = app.settings.model_copy(
        update={"aws": app.settings.aws.model_copy(update={"parallel_accounts": parallel})}
    )
    barrier = threading.Barrier(2, timeout=2.0)
    for fake in (good, bad):
        fake.faults.before("GetAccountAuthorizationDetails", barrier.wait)

    report = app.sweep()

    if parallel == 1:
        assert {f.account for f in report.errors} == {BAD, GOOD}, "serially, each account waited alone"
        return
    assert not report.errors, [f.message for f in report.errors]
    assert [v.account for v in report.views] == [BAD, GOOD], "merged in account order"
    assert len(good.iam.keys("app")) == 2 and len(bad.iam.keys("app")) == 2, "both accounts rotated"
