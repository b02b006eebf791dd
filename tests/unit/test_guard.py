"""The guard before every mutating AWS call (``rotator.guard``): fencing and AWS's clock, on the in-memory AWS.

A refused call is never sent; the executor stops that user's work at once, reports it (``action.failed``) and
leaves AWS as a crash at that step boundary would: the next leader completes or cleans it.
"""

from __future__ import annotations

import inspect
from datetime import timedelta

import pytest
from fakes import FakeAccount
from helpers import MUTATING as MUTATING_OPERATIONS

from rotator.config import Settings
from rotator.errors import MutationRefusedError
from rotator.events import ActionFailed, Event, KeyCreated, KeyPublished
from rotator.executor import Budget, Executor, UserOutcome
from rotator.guard import MUTATING, GuardedPort, all_of, allow_all
from rotator.inventory import Inventory
from rotator.lease import FencedError, NoLease, fence
from rotator.model import USER_TAG_ROTATION_STARTED, KeyStatus, SecretText, own_tag
from rotator.ports import Ports

USER = "app"
DAY = timedelta(days=1)


class Switch:
    """A guard that refuses from a chosen operation on (``after``: the first that many calls go through)."""

    def __init__(self, after: int | None = None) -> None:
        self.after = after
        self.asked: list[str] = []

    def __call__(self, operation: str) -> None:
        self.asked.append(operation)
        if self.after is not None and len(self.asked) > self.after:
            raise FencedError(f"{operation} refused: test fence")


def run(fake: FakeAccount, guard: Switch | None, events: list[Event]) -> UserOutcome:
    settings = Settings()
    executor = Executor(
        fake.ports,
        Inventory(fake.ports, settings, fake.account),
        settings,
        events.append,
        fake.clock,
        sleep=fake.clock.sleep,
        sweep_id="guarded",
        guard=guard,
    )
    return executor.run_user(USER, Budget(None))


def mutations(fake: FakeAccount) -> list[str]:
    return [call for call in fake.faults.calls if call.split(":")[1] in MUTATING_OPERATIONS]


def test_every_mutating_port_method_asks_the_guard_and_no_read_does() -> None:
    mutating_ops = {name.split(":")[1] for name in MUTATING.values()}
    assert mutating_ops == set(MUTATING_OPERATIONS), "rotator.guard names every mutating AWS operation"
    public = {name for name, _ in inspect.getmembers(Ports, inspect.isfunction) if not name.startswith("_")}
    overridden = {name for name in public if getattr(GuardedPort, name) is not getattr(Ports, name)}
    assert overridden == set(MUTATING), "exactly the mutating methods are guarded"

    fake = FakeAccount()
    fake.iam.add_user(USER)
    switch = Switch(after=0)
    port = GuardedPort(fake.ports, switch)
    with pytest.raises(FencedError):
        port.create_access_key(USER)
    with pytest.raises(FencedError):
        port.tag_user(USER, {"x": "y"})
    with pytest.raises(FencedError):
        port.put_secret_value("s", SecretText("v"), "t", ["AWSPENDING"])
    assert mutations(fake) == [], "a refused call is never sent"
    assert port.user(USER).name == USER  # reads go straight through, unasked
    assert switch.asked == ["iam:CreateAccessKey", "iam:TagUser", "secretsmanager:PutSecretValue"]


def test_without_a_guard_nothing_is_asked_and_the_rotation_runs() -> None:
    fake = FakeAccount()
    fake.iam.add_user(USER)
    fake.iam.add_key(USER, age=100 * DAY)
    events: list[Event] = []
    outcome = run(fake, None, events)
    assert outcome.done and not outcome.failed
    assert [type(e) for e in events if isinstance(e, KeyPublished)] == [KeyPublished]


def test_a_fenced_rotation_stops_before_its_next_change_and_leaves_a_recorded_key() -> None:
    """Fenced right after CreateAccessKey: only the ownership record of that key is still written."""
    fake = FakeAccount()
    fake.iam.add_user(USER)
    old = fake.iam.add_key(USER, age=100 * DAY).key_id
    events: list[Event] = []
    switch = Switch(after=2)  # intent mark, CreateAccessKey; then the guard refuses

    outcome = run(fake, switch, events)

    assert mutations(fake) == [
        "iam:TagUser",  # intent mark
        "iam:CreateAccessKey",
        "iam:TagUser",  # the ownership record of the key it just created: exempt, changes no credential
    ]
    assert switch.asked == ["iam:TagUser", "iam:CreateAccessKey", "secretsmanager:CreateSecret"]
    (created,) = [e.key_id for e in events if isinstance(e, KeyCreated)]
    assert created is not None
    tags = fake.iam.users[USER].tags
    assert own_tag(created) in tags and USER_TAG_ROTATION_STARTED in tags  # the next leader cleans it
    assert fake.iam.keys(USER) == {old: KeyStatus.ACTIVE, created: KeyStatus.ACTIVE}  # nothing withdrawn
    (failure,) = outcome.failed
    assert isinstance(failure.error, MutationRefusedError)
    (failed,) = [e for e in events if isinstance(e, ActionFailed)]
    assert "refused" in failed.error and failed.user == USER and failed.key_id == created


def test_a_fenced_repair_reports_the_user_and_changes_nothing() -> None:
    fake = FakeAccount()
    fake.iam.add_user(USER)
    fake.iam.add_key(USER, age=100 * DAY)
    fake.iam.users[USER].tags[USER_TAG_ROTATION_STARTED] = "2020-01-01T00:00:00+00:00"  # stale mark: repaired
    events: list[Event] = []
    switch = Switch(after=0)
    outcome = run(fake, switch, events)
    assert switch.asked == ["iam:UntagUser"]  # the repair's first change: refused, and nothing after it
    assert mutations(fake) == []
    assert outcome.failed and not outcome.done
    assert [e.user for e in events if isinstance(e, ActionFailed)] == [USER]


def test_the_fence_follows_the_leadership_and_guards_compose() -> None:
    events: list[Event] = []
    fence(NoLease(emit=events.append), "iam:CreateAccessKey")  # without a table every replica leads

    class Lost:
        held = False

    with pytest.raises(FencedError, match="iam:DeleteAccessKey refused: this replica no longer holds the lease"):
        fence(Lost(), "iam:DeleteAccessKey")  # type: ignore[arg-type]
    first, second = Switch(), Switch(after=0)
    guard = all_of(allow_all, first, second)
    with pytest.raises(FencedError):
        guard("iam:TagUser")
    assert first.asked == second.asked == ["iam:TagUser"]
