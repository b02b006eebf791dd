"""Who still uses a held key: the service and region of a key's last use, from IAM to the operator.

IAM reports them in ``GetAccessKeyLastUsed`` and in the credential report's ``access_key_N_last_used_service`` /
``_region`` columns (``N/A`` for a key never used). The adapters read them, the inventory carries them in
``AccessKey``, the executor puts them in ``key.held`` with a sentence for people, ``inventory`` and the sandbox
show them, and ``rotator_held_keys{account}`` counts the keys the guard holds now.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import pytest
from fakes import FakeAccount
from prometheus_client import CollectorRegistry

from rotator.aws.iam import IamAdapter
from rotator.aws.transport import Boundary
from rotator.config import Settings
from rotator.events import Event, InventorySnapshot, KeyHeld
from rotator.executor import Budget, Executor
from rotator.inventory import Inventory
from rotator.metrics import Metrics
from rotator.model import TAG_PUBLISHED_AT, AccessKey, Action, KeyStatus, UserPlan, UserState, parse_instant
from rotator.policy import plan_user
from rotator.records import KeyLastUsed, ReportKey
from rotator.render import last_use_cell, last_use_phrase, when

USER = "app"
DAY = timedelta(days=1)
NOW = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)

# -- the IAM adapter -------------------------------------------------------------------------------------------

# The credential report's columns as AWS documents them (IAM User Guide, "Getting credential reports").
REPORT_HEADER = (
    "user,arn,user_creation_time,password_enabled,password_last_used,password_last_changed,password_next_rotation,"
    "mfa_active,access_key_1_active,access_key_1_last_rotated,access_key_1_last_used_date,"
    "access_key_1_last_used_region,access_key_1_last_used_service,access_key_2_active,access_key_2_last_rotated,"
    "access_key_2_last_used_date,access_key_2_last_used_region,access_key_2_last_used_service,cert_1_active,"
    "cert_1_last_rotated,cert_2_active,cert_2_last_rotated"
)
REPORT_ROW = (
    "app,arn:aws:iam::123456789012:user/app,2024-01-01T00:00:00+00:00,false,N/A,N/A,N/A,false,"
    "true,2024-12-01T00:00:00+00:00,2025-03-01T09:00:00+00:00,eu-west-1,s3,"
    "true,2025-02-20T00:00:00+00:00,N/A,N/A,N/A,false,N/A,false,N/A"
)


class AnsweringBoundary:
    """Stands in for :class:`Boundary`: canned answers of IAM by operation (the adapter's only collaborator)."""

    def __init__(self, answers: dict[str, dict[str, Any]]) -> None:
        self.answers = answers

    def call(self, service: str, operation: str, **_params: Any) -> dict[str, Any]:
        assert service == "iam"
        return self.answers[operation]

    def pages(self, *_args: Any, **_params: Any) -> Iterator[dict[str, Any]]:
        raise AssertionError("no listing expected")


def adapter(answers: dict[str, dict[str, Any]]) -> IamAdapter:
    return IamAdapter(cast(Boundary, AnsweringBoundary(answers)))


def test_the_credential_report_carries_each_slots_last_service_and_region() -> None:
    report = adapter(
        {
            "GenerateCredentialReport": {"State": "COMPLETE"},
            "GetCredentialReport": {"Content": f"{REPORT_HEADER}\n{REPORT_ROW}\n".encode(), "GeneratedTime": NOW},
        }
    ).credential_report()

    used, unused = report.users[USER]
    assert used == ReportKey(
        True, datetime(2024, 12, 1, tzinfo=UTC), datetime(2025, 3, 1, 9, tzinfo=UTC), "s3", "eu-west-1"
    )
    assert unused == ReportKey(True, datetime(2025, 2, 20, tzinfo=UTC), None, None, None)  # "N/A": never used


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        (
            {"LastUsedDate": datetime(2025, 3, 1, 9, tzinfo=UTC), "ServiceName": "s3", "Region": "eu-west-1"},
            KeyLastUsed(datetime(2025, 3, 1, 9, tzinfo=UTC), "s3", "eu-west-1"),
        ),
        ({"ServiceName": "N/A", "Region": "N/A"}, KeyLastUsed(None, None, None)),  # never used
        ({}, KeyLastUsed(None, None, None)),
    ],
)
def test_get_access_key_last_used_answers_when_which_service_and_region(
    answer: dict[str, Any], expected: KeyLastUsed
) -> None:
    found = adapter({"GetAccessKeyLastUsed": {"UserName": USER, "AccessKeyLastUsed": answer}}).key_last_used("AKIA1")
    assert found == expected


# -- inventory, executor, metrics over the in-memory AWS -------------------------------------------------------


class World:
    """A user whose rotation is done and whose previous key is past its grace period, still in use."""

    def __init__(self) -> None:
        self.fake = FakeAccount()
        self.settings = Settings()
        self.events: list[Event] = []
        self.fake.iam.add_user(USER)
        self.run()  # bootstrap: the secret holds a new key
        self.fake.clock.advance(self.settings.policy.max_key_age + DAY)
        self.run()  # an ordinary rotation
        self.fake.clock.advance(self.settings.policy.grace_period + DAY)
        self.previous = self.key_of_role("previous")

    def inventory(self) -> Inventory:
        return Inventory(self.fake.ports, self.settings, self.fake.account)

    def run(self) -> None:
        inventory = self.inventory()
        executor = Executor(
            self.fake.ports, inventory, self.settings, self.events.append, self.fake.clock, sleep=self.fake.clock.sleep
        )
        executor.run_user(USER, Budget(None))

    def plans(self) -> tuple[list[UserState], list[UserPlan]]:
        states = self.inventory().gather()
        return states, [plan_user(state, self.settings.policy_defaults(), self.fake.clock()) for state in states]

    def key_of_role(self, role: str) -> str:
        (state,), (plan,) = self.plans()
        return next(key.key_id for key in state.keys if plan.roles.role_of(key.key_id) == role)


def test_a_held_key_is_logged_with_who_used_it_last() -> None:
    world = World()
    world.fake.iam.use_key(world.previous, "s3", "eu-west-1", ago=timedelta(hours=3))
    world.events.clear()

    world.run()

    (held,) = [event for event in world.events if isinstance(event, KeyHeld)]
    assert (held.user, held.key_id) == (USER, world.previous)
    assert (held.last_used_service, held.last_used_region) == ("s3", "eu-west-1")
    assert held.last_used == world.fake.clock() - timedelta(hours=3)
    # Disabled regardless max_hold after it fell due (grace_period after the publication).
    published = parse_instant(world.fake.secrets.store[f"iam-keys/{USER}"].tags[TAG_PUBLISHED_AT])
    assert published is not None
    regardless = when(published + world.settings.policy.grace_period + world.settings.policy.max_hold)
    assert held.summary == (
        f"last used 3h0m ago by s3 in eu-west-1; disabled once unused for 4h, or regardless from {regardless}"
    )
    fields = held.fields()
    assert fields["last_used_service"] == "s3" and fields["last_used_region"] == "eu-west-1"
    assert fields["reason"] == "previous key used within quiet_period (4h): kept active"
    assert world.fake.iam.keys(USER)[world.previous] is KeyStatus.ACTIVE


def test_the_inventory_reads_service_and_region_from_the_report_and_from_list_access_keys() -> None:
    world = World()
    world.fake.iam.use_key(world.previous, "lambda", "ap-south-1", ago=timedelta(minutes=5))

    world.fake.faults.calls.clear()
    (state,) = world.inventory().gather()
    assert "iam:ListAccessKeys" not in world.fake.faults.calls  # the report's fast path
    previous = state.key(world.previous)
    assert previous is not None
    assert (previous.last_used, previous.last_used_service, previous.last_used_region) == (
        world.fake.clock() - timedelta(minutes=5),
        "lambda",
        "ap-south-1",
    )

    # A rotation in flight (the intent mark) makes the report untrustworthy: ListAccessKeys, with the report's use.
    world.fake.iam.users[USER].tags["rotator:rotation-started"] = world.fake.clock().isoformat()
    world.fake.faults.calls.clear()
    (state,) = world.inventory().gather()
    assert "iam:ListAccessKeys" in world.fake.faults.calls
    previous = state.key(world.previous)
    assert previous is not None
    assert (previous.last_used_service, previous.last_used_region) == ("lambda", "ap-south-1")


def test_rotator_held_keys_counts_the_keys_the_guard_holds_now() -> None:
    world = World()
    registry = CollectorRegistry()
    metrics = Metrics(registry)

    def held_keys() -> float | None:
        states, plans = world.plans()
        metrics.observe(InventorySnapshot(account=world.fake.account, states=states, plans=plans))
        return registry.get_sample_value("rotator_held_keys", {"account": world.fake.account})

    assert held_keys() == 0  # past its grace period, never used: disabled, not held
    world.fake.iam.use_key(world.previous, ago=timedelta(minutes=1))
    assert held_keys() == 1
    _, (plan,) = world.plans()
    assert [step.action for step in plan.steps] == [Action.HOLD]
    world.fake.clock.advance(world.settings.policy.quiet_period)
    assert held_keys() == 0  # quiet long enough: the next sweep disables it


# -- how people see it --------------------------------------------------------------------------------------------


def key(last_used: datetime | None, service: str | None = None, region: str | None = None) -> AccessKey:
    return AccessKey("AKIA1", KeyStatus.ACTIVE, NOW - 30 * DAY, last_used, service, region)


@pytest.mark.parametrize(
    ("access_key", "cell", "phrase"),
    [
        (
            key(NOW - timedelta(hours=3), "s3", "eu-west-1"),
            "3h0m ago s3/eu-west-1",
            "last used 3h0m ago by s3 in eu-west-1",
        ),
        (key(NOW - timedelta(seconds=42), "sts"), "42s ago sts", "last used 42s ago by sts"),
        (key(NOW - timedelta(days=2)), "2d0h ago", "last used 2d0h ago"),
        (key(None), "-", "no recorded use"),
    ],
)
def test_last_use_in_a_table_cell_and_in_a_sentence(access_key: AccessKey, cell: str, phrase: str) -> None:
    assert last_use_cell(access_key, NOW) == cell
    assert last_use_phrase(access_key, NOW) == phrase
