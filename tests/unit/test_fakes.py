"""The in-memory AWS keeps the promises the rotator relies on, as AWS documents them (``tests/fakes.py``).

A fake that drifted from AWS would make the executor tests on it prove nothing; these pin its semantics.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from fakes import Clock, FakeAccount, FakeLeaseStore

from rotator.errors import AwsError, ConflictError, LimitExceededError, NotFoundError
from rotator.events import Event, LeaderChanged
from rotator.lease import Lease
from rotator.model import AWSCURRENT, AWSPENDING, AWSPREVIOUS, SecretText

V1 = "11111111-1111-4111-8111-111111111111"
V2 = "22222222-2222-4222-8222-222222222222"


def secret_with_one_version() -> FakeAccount:
    world = FakeAccount()
    world.secrets.create_secret(
        "s", SecretText("one"), V1, tags={}, kms_key_id=None, replica_regions=[], description=""
    )
    return world


def test_iam_allows_two_keys_per_user_and_dates_them_by_the_clock() -> None:
    world = FakeAccount()
    world.iam.add_user("u")
    first = world.ports.create_access_key("u")
    world.clock.advance(timedelta(seconds=90))
    second = world.ports.create_access_key("u")
    with pytest.raises(LimitExceededError):
        world.ports.create_access_key("u")
    assert second.created - first.created == timedelta(seconds=90)
    assert {k.key_id for k in world.ports.access_keys("u")} == {first.key_id, second.key_id}
    with pytest.raises(NotFoundError):
        world.ports.access_keys("nobody")


def test_a_new_key_authenticates_at_once_as_its_user() -> None:
    world = FakeAccount()
    arn = world.iam.add_user("u", path="/svc/")
    key = world.ports.create_access_key("u")
    assert world.ports.caller_arn_with(key) == arn == "arn:aws:iam::123456789012:user/svc/u"
    with pytest.raises(AwsError):
        world.ports.caller_arn_with(type(key)(key.key_id, SecretText("wrong"), key.created))


def test_cloudtrail_knows_no_creator_unless_a_test_records_one() -> None:
    world = FakeAccount()
    world.iam.add_user("u")
    key = world.ports.create_access_key("u")
    assert world.ports.key_creation(key.key_id, key.created) is None
    world.iam.record_creation(key.key_id, world.ports.own_principal())
    creation = world.ports.key_creation(key.key_id, key.created)
    assert creation is not None and creation.principal_arn == world.sts.principal


def test_a_first_version_is_current_and_creating_an_existing_name_conflicts() -> None:
    world = secret_with_one_version()
    assert world.secrets.stages("s") == {V1: (AWSCURRENT,)}
    with pytest.raises(ConflictError):
        world.secrets.create_secret(
            "s", SecretText("two"), V2, tags={}, kms_key_id=None, replica_regions=[], description=""
        )


def test_a_repeated_token_with_the_same_value_changes_nothing() -> None:
    world = secret_with_one_version()
    world.ports.put_secret_value("s", SecretText("two"), V2, [AWSPENDING])
    world.ports.put_secret_value("s", SecretText("two"), V2, [AWSPENDING])
    world.ports.put_secret_value("s", SecretText("two"), V2, [AWSCURRENT])  # still nothing: the version exists
    assert world.secrets.stages("s") == {V1: (AWSCURRENT,), V2: (AWSPENDING,)}
    with pytest.raises(ConflictError):
        world.ports.put_secret_value("s", SecretText("other"), V2, [AWSPENDING])


def test_moving_awscurrent_leaves_awsprevious_behind_and_a_repeated_move_is_already_done() -> None:
    world = secret_with_one_version()
    world.ports.put_secret_value("s", SecretText("two"), V2, [AWSPENDING])
    assert world.ports.move_stage("s", AWSCURRENT, to_version=V2, from_version=V1) is True
    assert world.secrets.stages("s") == {V1: (AWSPREVIOUS,), V2: (AWSCURRENT, AWSPENDING)}
    assert world.ports.move_stage("s", AWSCURRENT, to_version=V2, from_version=V1) is False
    assert world.ports.move_stage("s", AWSPENDING, from_version=V2) is True
    assert world.ports.move_stage("s", AWSPENDING, from_version=V2) is False
    assert world.ports.secret_value("s").reveal() == "two"
    assert world.ports.secret_value("s", stage=AWSPREVIOUS).reveal() == "one"
    with pytest.raises(AwsError):  # the label is on V2: moving it from V1 is refused
        world.ports.move_stage("s", AWSCURRENT, to_version=V1, from_version=V1)


def test_the_lease_runs_on_the_in_memory_store() -> None:
    clock = Clock()
    store = FakeLeaseStore()
    events: list[Event] = []
    ttl = timedelta(seconds=60)
    a = Lease(store, "t", emit=events.append, clock=clock, owner="a", ttl=ttl)
    b = Lease(store, "t", emit=events.append, clock=clock, owner="b", ttl=ttl)
    assert a.try_acquire() is True
    assert b.try_acquire() is False
    clock.advance(ttl + timedelta(seconds=1))
    assert b.try_acquire() is True
    a.release()
    assert store.get_lease("t", "iam-key-rotator") is not None  # a no longer owned it: nothing deleted
    b.release()
    assert store.get_lease("t", "iam-key-rotator") is None
    assert LeaderChanged(leader=True) in events
