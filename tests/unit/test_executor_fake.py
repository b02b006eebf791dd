"""The executor against the in-memory AWS (``tests/fakes.py``): the call sequences of docs/design.md, fast.

Each test builds the world, an ``Inventory`` and an ``Executor`` on the same ports, and reads the result
from the world (keys, secret versions and labels, tags) and from the events: the same facts the moto
integration tests read, without a server. Faults are injected at the port (``faults.before``/``fail``).
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import TypeVar

import pytest
from fakes import FakeAccount
from helpers import MUTATING

from rotator.config import Settings
from rotator.events import ActionSkipped, Event, KeyCreated, KeyDisabled, KeyPublished, KeyWithdrawn
from rotator.executor import Budget, Executor, UserOutcome
from rotator.inventory import Inventory
from rotator.model import (
    AWSCURRENT,
    AWSPENDING,
    AWSPREVIOUS,
    PUBLISHED_AT_CREATION,
    TAG_CURRENT_KEY,
    TAG_DISABLED_KEY,
    TAG_MANAGED,
    TAG_PREVIOUS_KEY,
    TAG_PUBLISHED_AT,
    TAG_USER,
    USER_TAG_ROTATION_KEYS,
    USER_TAG_ROTATION_STARTED,
    Action,
    KeyStatus,
    version_id_for,
)

USER = "app"
SECRET = f"iam-keys/{USER}"
DAY = timedelta(days=1)
E = TypeVar("E", bound=Event)


class World:
    """One fake account, the settings and the events: ``run()`` is one executor pass over ``USER``."""

    def __init__(self, settings: Settings | None = None) -> None:
        self.fake = FakeAccount()
        self.settings = settings or Settings()
        self.events: list[Event] = []

    def run(self, user: str = USER) -> UserOutcome:
        self.fake.faults.calls.clear()
        self.events.clear()
        inventory = Inventory(self.fake.ports, self.settings, self.fake.account)
        executor = Executor(
            self.fake.ports,
            inventory,
            self.settings,
            self.events.append,
            self.fake.clock,
            sleep=self.fake.clock.sleep,
            sweep_id="fake-sweep",
        )
        return executor.run_user(user, Budget(None))

    def mutations(self) -> list[str]:
        return [call for call in self.fake.faults.calls if call.split(":")[1] in MUTATING]

    def events_of(self, kind: type[E]) -> list[E]:
        return [event for event in self.events if isinstance(event, kind)]

    def current_key(self) -> str:
        document = json.loads(self.fake.secrets.value(SECRET))
        key_id = document["AccessKeyId"]
        assert isinstance(key_id, str)
        return key_id

    def user_tags(self) -> dict[str, str]:
        return dict(self.fake.iam.users[USER].tags)


def published(world: World) -> str:
    """A user whose only key was bootstrapped into its secret by the rotator; returns that key."""
    world.fake.iam.add_user(USER)
    outcome = world.run()
    assert [step.action for step in outcome.done] == [Action.ROTATE]
    return world.current_key()


def rotated(world: World) -> tuple[str, str]:
    """``published``, then aged past ``max_key_age`` and rotated: (previous, current)."""
    first = published(world)
    world.fake.clock.advance(world.settings.policy.max_key_age + DAY)
    outcome = world.run()
    assert [step.action for step in outcome.done] == [Action.ROTATE]
    return first, world.current_key()


def test_bootstrap_validates_the_new_key_before_the_secret_exists() -> None:
    world = World()
    world.fake.iam.add_user(USER)
    old = world.fake.iam.add_key(USER, age=100 * DAY).key_id

    outcome = world.run()

    assert [step.action for step in outcome.done] == [Action.ROTATE]
    assert world.mutations() == [
        "iam:TagUser",  # intent mark
        "iam:CreateAccessKey",
        "iam:TagUser",  # ownership record
        "secretsmanager:CreateSecret",
        "iam:UntagUser",  # record and mark have done their work
    ]  # no TagResource: the publication's time is the secret's CreatedDate
    calls = world.fake.faults.calls
    assert calls.index("sts:GetCallerIdentity") < calls.index("secretsmanager:CreateSecret")
    new = world.current_key()
    assert new != old
    assert world.fake.iam.keys(USER) == {old: KeyStatus.ACTIVE, new: KeyStatus.ACTIVE}
    assert world.fake.secrets.stages(SECRET) == {version_id_for(new): (AWSCURRENT,)}
    tags = world.fake.secrets.store[SECRET].tags
    assert tags[TAG_MANAGED] == "true"
    assert tags[TAG_USER] == USER
    assert (tags[TAG_CURRENT_KEY], tags[TAG_PREVIOUS_KEY]) == (new, old)
    assert tags[TAG_PUBLISHED_AT] == PUBLISHED_AT_CREATION
    assert world.user_tags() == {"rotator": "enabled"}
    assert [e.key_id for e in world.events_of(KeyCreated)] == [new]
    assert [e.key_id for e in world.events_of(KeyPublished)] == [new]


def test_an_old_key_is_rotated_through_awspending_and_the_old_version_becomes_previous() -> None:
    world = World()
    old = published(world)
    world.fake.clock.advance(world.settings.policy.max_key_age + DAY)

    outcome = world.run()

    assert [step.action for step in outcome.done] == [Action.ROTATE]
    assert world.mutations() == [
        "secretsmanager:TagResource",  # the intent mark, on the secret: IAM's rate is the scarce one
        "iam:CreateAccessKey",
        "secretsmanager:PutSecretValue",  # AWSPENDING: the new key's record
        "secretsmanager:UpdateSecretVersionStage",  # AWSCURRENT -> the new version
        "secretsmanager:UpdateSecretVersionStage",  # AWSPENDING removed
        "secretsmanager:TagResource",  # publication records; the mark cleared
    ]
    new = world.current_key()
    assert world.fake.secrets.stages(SECRET) == {
        version_id_for(new): (AWSCURRENT,),
        version_id_for(old): (AWSPREVIOUS,),
    }
    assert world.fake.iam.keys(USER) == {old: KeyStatus.ACTIVE, new: KeyStatus.ACTIVE}
    assert world.fake.secrets.store[SECRET].tags[TAG_PREVIOUS_KEY] == old
    assert world.user_tags() == {"rotator": "enabled"}
    mark = {t: world.fake.secrets.store[SECRET].tags[t] for t in (USER_TAG_ROTATION_STARTED, USER_TAG_ROTATION_KEYS)}
    assert mark == {USER_TAG_ROTATION_STARTED: "", USER_TAG_ROTATION_KEYS: ""}  # cleared by the publication


def test_the_previous_key_is_disabled_after_the_grace_period_then_deleted_after_retention() -> None:
    world = World()
    old, new = rotated(world)
    policy = world.settings.policy

    world.fake.clock.advance(policy.grace_period - DAY)
    assert world.run().done == []  # still in its grace period
    world.fake.clock.advance(2 * DAY)
    outcome = world.run()

    assert [(step.action, step.key_id) for step in outcome.done] == [(Action.DISABLE, old)]
    assert world.fake.iam.keys(USER) == {old: KeyStatus.INACTIVE, new: KeyStatus.ACTIVE}
    assert world.fake.secrets.store[SECRET].tags[TAG_DISABLED_KEY] == old
    assert [e.key_id for e in world.events_of(KeyDisabled)] == [old]

    world.fake.clock.advance(policy.retention + DAY)
    outcome = world.run()

    assert [(step.action, step.key_id) for step in outcome.done] == [(Action.DELETE, old)]
    assert world.fake.iam.keys(USER) == {new: KeyStatus.ACTIVE}
    assert world.current_key() == new


def test_a_bootstrap_s_grace_period_counts_from_the_secret_s_creation_rounded_up_to_the_second() -> None:
    """The bootstrap records no publication time of its own: the grace period of the pre-existing key runs from
    Secrets Manager's ``CreatedDate`` plus one second (a truncated CreatedDate may not shorten it, I5)."""
    world = World()
    world.fake.iam.add_user(USER)
    old = world.fake.iam.add_key(USER, age=100 * DAY).key_id
    world.run()
    created = world.fake.secrets.store[SECRET].created
    assert created is not None
    due = created + world.settings.policy.grace_period + timedelta(seconds=1)

    world.fake.clock.advance(due - world.fake.clock() - timedelta(milliseconds=10))
    assert world.run().done == []  # 10 ms before: still in its grace period
    assert world.fake.iam.keys(USER)[old] is KeyStatus.ACTIVE
    world.fake.clock.advance(timedelta(milliseconds=20))
    outcome = world.run()

    assert [(step.action, step.key_id) for step in outcome.done] == [(Action.DISABLE, old)]


def test_a_published_at_from_creation_speaks_only_for_the_key_the_secret_was_created_with() -> None:
    """A rotation after the bootstrap rewrites ``current-key-id`` and ``published-at`` together; should it crash
    between moving AWSCURRENT and that TagResource, the creation time must not lend the new key an old
    publication (which would end the grace period at once): the repair records the publication as now."""
    world = World()
    first = published(world)
    world.fake.clock.advance(world.settings.policy.max_key_age + DAY)
    world.fake.faults.before("TagResource", lambda: None)  # the intent mark goes through
    world.fake.faults.fail("TagResource")  # the publication's records do not
    world.run()
    new = world.current_key()
    assert new != first
    tags = world.fake.secrets.store[SECRET].tags
    assert (tags[TAG_CURRENT_KEY], tags[TAG_PUBLISHED_AT]) == (first, PUBLISHED_AT_CREATION)

    repaired_at = world.fake.clock()
    world.run()  # repairs the publication's records
    tags = world.fake.secrets.store[SECRET].tags
    assert tags[TAG_CURRENT_KEY] == new
    assert tags[TAG_PUBLISHED_AT] != PUBLISHED_AT_CREATION
    assert datetime.fromisoformat(tags[TAG_PUBLISHED_AT]) >= repaired_at
    world.fake.clock.advance(world.settings.policy.grace_period - DAY)
    assert [step.action for step in world.run().done] == []  # the grace period counts from the repair


def test_a_key_created_concurrently_wins_the_slot_and_the_rotation_steps_back() -> None:
    """IAM's two-key limit decides a race (I8): the loser touches nothing else; its intent mark stays (the key
    that won may be a crashed rotation's, never recorded: the mark lets CloudTrail settle whose it is, I3)."""
    world = World()
    current = published(world)
    world.fake.clock.advance(world.settings.policy.max_key_age + DAY)
    operator: list[str] = []
    world.fake.faults.before("CreateAccessKey", lambda: operator.append(world.fake.iam.add_key(USER).key_id))

    outcome = world.run()

    assert outcome.done == []
    assert [step.action for step in outcome.skipped] == [Action.ROTATE]
    assert "key limit reached" in outcome.skipped[0].reason
    assert world.fake.iam.keys(USER) == {current: KeyStatus.ACTIVE, operator[0]: KeyStatus.ACTIVE}
    assert world.current_key() == current
    assert set(world.user_tags()) == {"rotator"}
    secret_tags = world.fake.secrets.store[SECRET].tags  # a rotation marks the secret
    assert secret_tags[USER_TAG_ROTATION_STARTED]
    assert secret_tags[USER_TAG_ROTATION_KEYS] == current  # the keys before the attempt: not the winner
    assert world.events_of(KeyCreated) == []
    assert len(world.events_of(ActionSkipped)) == 1


def test_a_withdrawn_bootstrap_leaves_the_intent_mark_another_run_wrote_meanwhile() -> None:
    """Simulation seed 80576: a bootstrap's ownership record fails, so it withdraws its key; meanwhile another
    replica's bootstrap wrote its own intent mark over ours. The withdrawal removes its own record only: had it
    removed "its" mark it would have removed the other run's, whose key - should that run crash before its
    record - would then be foreign for ever (I3). The repair removes a mark once older than the in-flight window.
    """
    world = World()
    world.fake.iam.add_user(USER)
    world.fake.iam.add_key(USER, age=100 * DAY)
    theirs = {USER_TAG_ROTATION_STARTED: "2030-01-01T00:00:00+00:00", USER_TAG_ROTATION_KEYS: "AKIAOTHERRUN00000001"}
    world.fake.faults.before("TagUser", lambda: None)  # our intent mark
    world.fake.faults.fail("TagUser")  # our ownership record
    world.fake.faults.before("DeleteAccessKey", lambda: world.fake.iam.users[USER].tags.update(theirs))

    outcome = world.run()

    assert len(outcome.failed) == 1
    [created] = [e.key_id for e in world.events_of(KeyCreated)]
    assert [e.key_id for e in world.events_of(KeyWithdrawn)] == [created]
    tags = world.user_tags()
    assert {t: tags.get(t) for t in theirs} == theirs, tags  # the other run's mark is still in place


@pytest.mark.parametrize("maybe_acted", [False, True], ids=["definite", "answer-lost-not-stored"])
def test_a_new_key_whose_secret_version_cannot_be_written_is_withdrawn(maybe_acted: bool) -> None:
    world = World()
    current = published(world)
    world.fake.clock.advance(world.settings.policy.max_key_age + DAY)
    versions_before = world.fake.secrets.stages(SECRET)
    world.fake.faults.fail("PutSecretValue", maybe_acted=maybe_acted)

    outcome = world.run()

    assert outcome.done == []
    assert len(outcome.failed) == 1
    [created] = [e.key_id for e in world.events_of(KeyCreated)]
    assert [e.key_id for e in world.events_of(KeyWithdrawn)] == [created]
    assert world.fake.iam.keys(USER) == {current: KeyStatus.ACTIVE}
    assert world.fake.secrets.stages(SECRET) == versions_before
    assert not any(AWSPENDING in stages for stages in world.fake.secrets.stages(SECRET).values())
    assert world.user_tags() == {"rotator": "enabled"}  # no record or mark outlives the attempt
    assert not world.fake.secrets.store[SECRET].tags.get(USER_TAG_ROTATION_STARTED), "its own mark is cleared"
    assert world.current_key() == current
