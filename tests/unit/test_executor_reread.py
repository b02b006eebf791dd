"""The executor acts on its own re-read of the user, never on the sweep's bulk read.

IAM's two-key limit hides a stale act from every end-to-end check (the stale rotation only meets
``LimitExceeded``), so this pins the call sequence instead: when another run rotated the user between this
sweep's bulk read and this executor's turn, the re-read shows nothing due and no key is created.
``benchmarks/simulate.py --mutants`` runs this file against the "skip the re-read" and "act on the bulk
read after the re-read" mutants (the simulation alone cannot tell them from a lost race).
"""

from __future__ import annotations

from datetime import timedelta

from fakes import FakeAccount

from rotator.config import Settings
from rotator.events import Event
from rotator.executor import Budget, Executor
from rotator.inventory import Inventory
from rotator.model import Action

USER = "app"


def executor(fake: FakeAccount, settings: Settings, inventory: Inventory, events: list[Event]) -> Executor:
    return Executor(fake.ports, inventory, settings, events.append, fake.clock, sleep=fake.clock.sleep, sweep_id="s")


def test_a_rotation_made_after_the_bulk_read_is_seen_by_the_re_read() -> None:
    fake, settings, events = FakeAccount(), Settings(), []
    fake.iam.add_user(USER)
    first = executor(fake, settings, Inventory(fake.ports, settings, fake.account), events)
    assert [s.action for s in first.run_user(USER, Budget(None)).done] == [Action.ROTATE]  # bootstrap
    fake.clock.advance(settings.policy.max_key_age + timedelta(days=1))

    mine = Inventory(fake.ports, settings, fake.account)
    [bulk] = mine.gather()  # this sweep's bulk read: the current key is due
    assert bulk.user == USER
    other = executor(fake, settings, Inventory(fake.ports, settings, fake.account), events)
    assert [s.action for s in other.run_user(USER, Budget(None)).done] == [Action.ROTATE]  # another run rotates
    keys_after_other = fake.iam.keys(USER)
    fake.faults.calls.clear()

    outcome = executor(fake, settings, mine, events).run_user(USER, Budget(None))

    assert "iam:CreateAccessKey" not in fake.faults.calls, fake.faults.calls
    assert "iam:TagUser" not in fake.faults.calls, fake.faults.calls  # not even the intent mark
    assert outcome.done == [] and outcome.failed == [] and outcome.skipped == []
    assert fake.iam.keys(USER) == keys_after_other
