"""Issue 15: what the rotator tells operators, so that alerts page for the right reasons.

* A stuck user (two active keys and no secret, a malformed tag) keeps a ``rotate`` next-action series, so
  ``RotatorKeyPastMaxAge`` can fire for it (I10).
* One user's or one member account's problem makes the sweep ``partial``, never ``failure``: the last-success
  timestamp moves on, ``rotator_problems{account,kind}`` counts the problem; only a rotator that cannot do its job
  (no account list, not one account readable) fails the sweep.
* A dry-run sweep counts skips, problems, holds and deferred changes like a real sweep.
* Lease errors are counted (``rotator_lease_errors_total``), and a replica whose lease calls fail says
  ``lease unavailable`` at warning level, not a standby's "another replica holds the lease" at info.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import cast

from fakes import FakeAccount
from prometheus_client import CollectorRegistry
from structlog.testing import capture_logs

from rotator.app import Account, AccountFailure, AccountView, App, SweepReport
from rotator.aws import Aws
from rotator.config import Settings
from rotator.daemon.loop import Daemon
from rotator.errors import AwsError, UserError
from rotator.events import (
    ActionFailed,
    Event,
    InventorySnapshot,
    LeaseError,
    SweepFinished,
    SweepStarted,
)
from rotator.executor import Failure, UserOutcome
from rotator.inventory import Inventory
from rotator.metrics import Metrics
from rotator.model import AccessKey, Action, KeyStatus, SecretState, Step, UserState
from rotator.policy import plan_user

NOW = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
DAY = timedelta(days=1)
ACCOUNT = "111111111111"


def key(key_id: str, age: timedelta, status: KeyStatus = KeyStatus.ACTIVE) -> AccessKey:
    return AccessKey(key_id, status, NOW - age)


def state(user: str, keys: tuple[AccessKey, ...], tags: dict[str, str] | None = None) -> UserState:
    return UserState(ACCOUNT, user, keys=keys, tags=tags or {}, secret=SecretState(name=f"iam-keys/{user}"))


# -- item 4: a stuck user keeps a rotate series ------------------------------------------------------------------


def test_two_active_keys_and_no_secret_is_a_problem_with_a_rotate_due_date() -> None:
    defaults = Settings().policy_defaults()  # max_key_age 90d
    plan = plan_user(state("stuck", (key("AKIAOLD", 200 * DAY), key("AKIANEW", 10 * DAY))), defaults, NOW)
    assert plan.has_problem
    assert [s.action for s in plan.steps] == [Action.SKIP]
    (rotate,) = [u for u in plan.upcoming if u.action is Action.ROTATE]
    # The oldest active key's CreateDate + max_key_age: 110 days overdue, which RotatorKeyPastMaxAge sees.
    assert rotate.key_id == "AKIAOLD"
    assert rotate.due_at == NOW - 200 * DAY + defaults.max_key_age


def test_a_malformed_tag_is_a_problem_with_a_rotate_due_date_from_the_defaults() -> None:
    defaults = Settings().policy_defaults()
    bad = state("badtag", (key("AKIAONE", 100 * DAY),), tags={"rotator": "enabled", "rotator:max-key-age": "soon"})
    plan = plan_user(bad, defaults, NOW)
    assert plan.has_problem and plan.policy is None
    (rotate,) = plan.upcoming
    assert (rotate.action, rotate.key_id, rotate.due_at) == (Action.ROTATE, "AKIAONE", NOW - 100 * DAY + 90 * DAY)


def test_a_user_that_progresses_gets_no_extra_series() -> None:
    defaults = Settings().policy_defaults()
    plan = plan_user(state("fresh", (key("AKIAONE", 1 * DAY),)), defaults, NOW)  # bootstrap, no problem
    assert not plan.has_problem
    assert not [u for u in plan.upcoming if u.action is Action.ROTATE]


def test_the_stuck_users_series_is_exported() -> None:
    metrics = Metrics(CollectorRegistry())
    user = state("stuck", (key("AKIAOLD", 200 * DAY), key("AKIANEW", 10 * DAY)))
    plan = plan_user(user, Settings().policy_defaults(), NOW)
    metrics.observe(InventorySnapshot(account=ACCOUNT, states=[user], plans=[plan]))
    due = metrics.registry.get_sample_value(
        "rotator_next_action_timestamp_seconds", {"account": ACCOUNT, "user": "stuck", "action": "rotate"}
    )
    assert due == (NOW - 110 * DAY).timestamp()


# -- item 2: problems per user and per account, not a failed sweep ----------------------------------------------


def report(*, views: int = 1, user_failures: int = 0, account_errors: tuple[str | None, ...] = ()) -> SweepReport:
    result = SweepReport(sweep_id="s", dry_run=False)
    result.views = [AccountView(str(n), [], []) for n in range(views)]
    for n in range(user_failures):
        outcome = UserOutcome(user=f"u{n}", account="0")
        step = Step("0", f"u{n}", Action.SKIP, None, "bad tag", problem=True)
        outcome.failed.append(Failure(step, UserError(f"u{n}", "bad tag")))
        result.outcomes.append(outcome)
    result.errors = [AccountFailure(account, AwsError("AccessDenied")) for account in account_errors]
    return result


def test_sweep_results() -> None:
    assert report().result == "success"
    assert report(user_failures=1).result == "partial"
    assert report(views=2, account_errors=("222222222222",)).result == "partial"  # one member account
    assert report(views=0, account_errors=("222222222222",)).result == "failure"  # not one account readable
    assert report(account_errors=(None,)).result == "failure"  # the account list itself failed
    assert report(user_failures=3).failed == 3  # still counted: `rotator sweep` exits 1 (I10)


def sample(metrics: Metrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


def test_problems_gauge_and_last_success_follow_a_partial_sweep() -> None:
    metrics = Metrics(CollectorRegistry())
    events: list[Event] = []
    bad = state("badtag", (key("AKIAONE", 1 * DAY),), tags={"rotator:exclude": "yes"})
    good = state("good", (key("AKIATWO", 1 * DAY),))
    defaults = Settings().policy_defaults()
    events += [
        SweepStarted(sweep_id="s1"),
        InventorySnapshot(
            account=ACCOUNT, states=[bad, good], plans=[plan_user(u, defaults, NOW) for u in (bad, good)]
        ),
        ActionFailed(account=ACCOUNT, user="badtag", action=Action.SKIP, error="bad tag", error_type="UserError"),
        ActionFailed(account="222222222222", user="", error="cannot assume", error_type="AwsError"),
        SweepFinished(sweep_id="s1", result="partial", failed=2, finished_at=NOW),
    ]
    for event in events:
        metrics.observe(event)
    assert sample(metrics, "rotator_problems", account=ACCOUNT, kind="user") == 1
    assert sample(metrics, "rotator_problems", account=ACCOUNT, kind="account") == 0
    assert sample(metrics, "rotator_problems", account="222222222222", kind="account") == 1
    assert sample(metrics, "rotator_last_sweep_success_timestamp_seconds") == NOW.timestamp()
    assert sample(metrics, "rotator_sweeps_total", result="partial") == 1
    # The account-wide failure is no action: it is not counted as a failed `skip` action.
    assert sample(metrics, "rotator_actions_total", action="skip", result="failure") == 1

    # Next sweep: the tag is fixed, the account is entered again; a failed sweep leaves the last success alone.
    later = NOW + timedelta(hours=1)
    fixed = state("badtag", (key("AKIAONE", 1 * DAY),))
    for event in (
        SweepStarted(sweep_id="s2"),
        InventorySnapshot(account=ACCOUNT, states=[fixed], plans=[plan_user(fixed, defaults, later)]),
        InventorySnapshot(account="222222222222", states=[], plans=[]),
        SweepFinished(sweep_id="s2", result="success", finished_at=later),
        SweepStarted(sweep_id="s3"),
        SweepFinished(sweep_id="s3", result="failure", finished_at=later + timedelta(hours=1)),
    ):
        metrics.observe(event)
    assert sample(metrics, "rotator_problems", account=ACCOUNT, kind="user") == 0
    assert sample(metrics, "rotator_problems", account="222222222222", kind="account") == 0
    assert sample(metrics, "rotator_last_sweep_success_timestamp_seconds") == later.timestamp()


def test_a_failure_outside_a_sweep_is_no_sweep_problem() -> None:
    metrics = Metrics(CollectorRegistry())
    metrics.observe(ActionFailed(account=ACCOUNT, user="app", action=Action.ROTATE, error="x", error_type="AwsError"))
    assert sample(metrics, "rotator_problems", account=ACCOUNT, kind="user") is None
    assert sample(metrics, "rotator_actions_total", action="rotate", result="failure") == 1


# -- item 10: a dry-run sweep counts like a real one --------------------------------------------------------------


def app_over(fake: FakeAccount, settings: Settings) -> tuple[App, list[Event]]:
    app = App(settings, registry=CollectorRegistry(), clock=fake.clock, log=False)
    events: list[Event] = []
    app.bus.subscribe(events.append)
    inventory = Inventory(fake.ports, settings, fake.account)
    app._accounts = [Account(fake.account, cast(Aws, fake.ports), inventory)]
    return app, events


def test_a_dry_run_sweep_counts_skips_problems_and_deferred_changes() -> None:
    fake = FakeAccount()
    fake.iam.add_user("due")
    fake.iam.add_key("due", age=5 * DAY)  # bootstrap: would rotate
    fake.iam.add_user("stuck")
    fake.iam.add_key("stuck", age=200 * DAY)
    fake.iam.add_key("stuck", age=100 * DAY)  # two active keys and no secret: a problem
    fake.iam.add_user("badtag", tags={"rotator": "enabled", "rotator:exclude": "maybe"})
    settings = Settings.model_validate({"safety": {"dry_run": True}})
    app, events = app_over(fake, settings)

    result = app.sweep()
    (finished,) = [e for e in events if isinstance(e, SweepFinished)]
    assert result.dry_run and finished.dry_run
    assert (finished.deferred, finished.failed, finished.rotated) == (1, 2, 0)
    assert result.result == "partial"  # two users cannot progress; the sweep itself did its job
    assert fake.iam.keys("due") and len(fake.iam.keys("due")) == 1, "a dry run changes nothing"
    assert app.metrics.registry.get_sample_value("rotator_problems", {"account": fake.account, "kind": "user"}) == 2


def test_a_dry_run_counts_plain_skips() -> None:
    """The reported bug: ``sweep --dry-run`` said skipped=0 whatever the plan skipped."""
    fake = FakeAccount()
    fake.iam.add_user("racing")
    fake.iam.add_key("racing", age=100 * DAY)
    fake.iam.add_key("racing")  # created this moment: perhaps another run's rotation in flight, a plain skip
    settings = Settings.model_validate({"safety": {"dry_run": True}})
    app, events = app_over(fake, settings)
    result = app.sweep()
    (finished,) = [e for e in events if isinstance(e, SweepFinished)]
    assert (finished.skipped, finished.failed, finished.deferred) == (1, 0, 0)
    assert result.result == "success"


# -- item 1: lease errors are counted ---------------------------------------------------------------------------


def test_lease_errors_are_counted_by_operation() -> None:
    metrics = Metrics(CollectorRegistry())
    for _ in range(3):
        metrics.observe(LeaseError(table="t", operation="PutItem", error="AccessDenied", error_type="AwsError"))
    assert sample(metrics, "rotator_lease_errors_total", operation="PutItem") == 3


def test_sweep_skipped_names_a_failing_lease_at_warning() -> None:
    class Leadership:
        renew_interval = timedelta(seconds=20)

    now = [100.0]
    daemon = cast(Daemon, object.__new__(Daemon))
    daemon.leadership = cast(object, Leadership())  # type: ignore[assignment]
    daemon._monotonic = lambda: now[0]
    daemon._lease_failed_at = None
    with capture_logs() as logs:
        daemon._log_not_leader("schedule")
        daemon._lease_failed_at = 95.0
        daemon._log_not_leader("schedule")
        now[0] = 200.0  # the last lease error is long past: a plain standby again
        daemon._log_not_leader("schedule")
    assert [(e["log_level"], e["reason"]) for e in logs] == [
        ("info", "another replica holds the lease"),
        ("warning", "lease unavailable (see lease.error)"),
        ("info", "another replica holds the lease"),
    ]
