"""run_users: a defect while handling one user costs that user, never the sweep."""

from __future__ import annotations

from typing import Any

from rotator.events import ActionFailed, Event
from rotator.executor import Budget, UserOutcome, run_users


class _Inventory:
    account = "123456789012"


class _Executor:
    """The executor's interface as run_users uses it; ``bad`` users hit a bug."""

    def __init__(self, events: list[Event]) -> None:
        self.inventory = _Inventory()
        self.events = events

    def run_user(self, user: str, budget: Budget) -> UserOutcome:
        if user.startswith("bad"):
            raise TypeError("can't compare offset-naive and offset-aware datetimes")
        return UserOutcome(user=user, account=self.inventory.account)

    def _failed(self, user: str, key_id: str | None, action: Any, exc: BaseException) -> None:
        self.events.append(ActionFailed(account=self.inventory.account, user=user, error=str(exc)))


def test_an_unexpected_error_fails_that_user_and_the_others_proceed() -> None:
    events: list[Event] = []
    outcomes = run_users(lambda: _Executor(events), ["a", "bad-1", "b"], Budget(None))  # type: ignore[arg-type,return-value]
    assert [o.user for o in outcomes] == ["a", "bad-1", "b"]
    assert [bool(o.failed) for o in outcomes] == [False, True, False]
    assert "unexpected TypeError" in outcomes[1].failed[0].message
    assert [e.user for e in events if isinstance(e, ActionFailed)] == ["bad-1"]
