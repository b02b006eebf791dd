"""Leader election over a DynamoDB lease (``rotator.lease``) against the moto server."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import pytest
from conftest import REGION, AwsEnv, write_config
from prometheus_client import CollectorRegistry

from rotator.aws import Aws, Boundary, RateLimiter
from rotator.awsclock import AwsClock
from rotator.config import load_settings
from rotator.errors import ConflictError
from rotator.events import AwsCall, Event, LeaderChanged, LeaseError
from rotator.lease import Lease, NoLease, lease_for
from rotator.metrics import Metrics

MakeAws = Callable[["Recorder"], Aws]
TABLE = "rotator-leases"
TTL = timedelta(seconds=60)


class FakeClock:
    def __init__(self) -> None:
        self.now = datetime(2030, 1, 1, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


class Recorder:
    def __init__(self) -> None:
        self.events: list[Event] = []

    def __call__(self, event: Event) -> None:
        self.events.append(event)

    def leadership(self) -> list[bool]:
        return [e.leader for e in self.events if isinstance(e, LeaderChanged)]

    def errors(self) -> list[LeaseError]:
        return [e for e in self.events if isinstance(e, LeaseError)]


@pytest.fixture
def make_aws(aws: AwsEnv, moto_environ: None) -> MakeAws:
    # One session for all: its loader caches the (large) DynamoDB model; each Boundary has its own client.
    session = boto3.session.Session(
        aws_access_key_id=aws.access_key, aws_secret_access_key=aws.secret_key, region_name=REGION
    )

    def make(emit: Recorder) -> Aws:
        return Aws(Boundary(session, emit, limiter=RateLimiter(1000.0), account="123456789012"))

    return make


@pytest.fixture
def ddb(aws: AwsEnv) -> Any:
    return aws.client("dynamodb")


@pytest.fixture
def table(ddb: Any) -> str:
    ddb.create_table(
        TableName=TABLE,
        KeySchema=[{"AttributeName": "name", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "name", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    return TABLE


def pair(make_aws: MakeAws, clock: FakeClock) -> tuple[Lease, Recorder, Lease, Recorder]:
    rec_a, rec_b = Recorder(), Recorder()
    a = Lease(make_aws(rec_a), TABLE, emit=rec_a, clock=clock, owner="host-a:1:aa", ttl=TTL)
    b = Lease(make_aws(rec_b), TABLE, emit=rec_b, clock=clock, owner="host-b:2:bb", ttl=TTL)
    return a, rec_a, b, rec_b


def item(ddb: Any) -> dict[str, Any]:
    got = ddb.get_item(TableName=TABLE, Key={"name": {"S": "iam-key-rotator"}}, ConsistentRead=True)
    return dict(got.get("Item", {}))


def test_only_one_of_two_replicas_acquires(ddb: Any, make_aws: MakeAws, table: str) -> None:
    clock = FakeClock()
    a, rec_a, b, rec_b = pair(make_aws, clock)
    assert a.try_acquire() is True and a.held
    assert b.try_acquire() is False and not b.held
    assert a.try_acquire() is True  # the holder renews
    assert rec_a.leadership() == [True] and rec_b.leadership() == [False]  # transitions only
    assert not rec_a.errors() and not rec_b.errors()  # a standby is not an error
    stored = item(ddb)
    assert stored["owner"] == {"S": "host-a:1:aa"}
    assert float(stored["expires"]["N"]) == (clock.now + TTL).timestamp()
    # Every call went through the boundary, counted per operation.
    ops = {(e.operation, e.outcome) for e in rec_a.events + rec_b.events if isinstance(e, AwsCall)}
    assert ("PutItem", "ok") in ops and ("GetItem", "ok") in ops


def test_the_other_replica_takes_over_after_the_ttl(make_aws: MakeAws, table: str) -> None:
    clock = FakeClock()
    a, rec_a, b, _ = pair(make_aws, clock)
    assert a.try_acquire()
    clock.advance(TTL.total_seconds() - 1)
    assert not b.try_acquire()  # not expired yet
    assert not a.held  # but a, within its safety margin, already stopped relying on it
    assert rec_a.leadership() == [True, False]
    clock.advance(2)
    assert b.try_acquire() and b.held
    assert not a.try_acquire() and not a.held  # a came back too late: b keeps it


def test_held_lapses_by_our_own_clock_minus_the_margin(make_aws: MakeAws, table: str) -> None:
    clock = FakeClock()
    a, rec_a, _, _ = pair(make_aws, clock)
    assert a.try_acquire()
    clock.advance(44)  # ttl 60, margin 15
    assert a.held
    clock.advance(2)
    assert not a.held
    assert rec_a.leadership() == [True, False]


def test_renewal_keeps_the_lease(make_aws: MakeAws, table: str) -> None:
    clock = FakeClock()
    a, rec_a, b, _ = pair(make_aws, clock)
    assert a.try_acquire()
    for _ in range(9):  # three ttls, renewed every ttl/3
        clock.advance(a.renew_interval.total_seconds())
        assert a.try_acquire() and a.held
        assert not b.try_acquire()
    assert rec_a.leadership() == [True]


def test_release_hands_over_at_once(ddb: Any, make_aws: MakeAws, table: str) -> None:
    clock = FakeClock()
    a, rec_a, b, _ = pair(make_aws, clock)
    assert a.try_acquire()
    assert not b.try_acquire()
    a.release()
    assert not a.held and rec_a.leadership() == [True, False]
    assert item(ddb) == {}
    assert b.try_acquire()
    assert not a.try_acquire()  # a released for good (shutdown): it does not take it back
    b.release()
    b.release()  # idempotent
    a.release()  # not ours: no delete, no error
    assert not rec_a.errors()


def test_release_after_a_takeover_deletes_nothing(ddb: Any, make_aws: MakeAws, table: str) -> None:
    clock = FakeClock()
    a, rec_a, b, _ = pair(make_aws, clock)
    assert a.try_acquire()
    clock.advance(TTL.total_seconds() + 1)
    assert b.try_acquire()
    a.release()  # a wrote the item once, so it tries a delete: conditional on its owner id
    assert item(ddb)["owner"] == {"S": "host-b:2:bb"}
    assert not rec_a.errors()


def test_a_lost_race_is_plainly_not_leader(make_aws: MakeAws, table: str) -> None:
    """Both replicas saw the lease free; the conditional write lets only one of them have it."""
    clock = FakeClock()
    a, _, b, rec_b = pair(make_aws, clock)
    assert a.try_acquire()
    now = clock.now.timestamp()
    with pytest.raises(ConflictError):  # ConditionalCheckFailedException, translated
        b.aws.put_lease(TABLE, b.name, b.owner, now + 60, now)
    b.aws.get_lease = lambda table, name: None  # type: ignore[method-assign]  # b read before a wrote
    assert not b.try_acquire() and not b.held
    assert rec_b.leadership() == [False] and not rec_b.errors()


def test_aws_errors_mean_not_leader_and_never_raise(make_aws: MakeAws) -> None:
    clock = FakeClock()
    a, rec_a, _, _ = pair(make_aws, clock)
    assert a.try_acquire() is False  # the table does not exist
    assert not a.held
    assert rec_a.leadership() == [False]
    (error,) = rec_a.errors()
    assert error.table == TABLE and error.error_type == "NotFoundError" and error.operation == "GetItem"
    a.release()  # nothing held: nothing to do, nothing raised


def test_losing_the_table_while_leading_steps_down(ddb: Any, make_aws: MakeAws, table: str) -> None:
    clock = FakeClock()
    a, rec_a, _, _ = pair(make_aws, clock)
    assert a.try_acquire()
    ddb.delete_table(TableName=TABLE)
    clock.advance(a.renew_interval.total_seconds())
    assert a.try_acquire() is False and not a.held
    assert rec_a.leadership() == [True, False]
    assert len(rec_a.errors()) == 1
    a.release()  # the delete fails too: emitted, not raised
    assert len(rec_a.errors()) == 2


def test_leader_gauge_and_lease_for(aws: AwsEnv, make_aws: MakeAws, table: str, tmp_path: Path) -> None:
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    clock = FakeClock()
    aws_client = make_aws(Recorder())

    def leader() -> float | None:
        return registry.get_sample_value("rotator_leader")

    none = lease_for(load_settings(str(write_config(tmp_path, "{}\n"))), aws_client, metrics, clock)
    assert isinstance(none, NoLease)
    assert none.held and none.try_acquire() and leader() == 1.0
    none.release()
    assert none.held and leader() == 1.0  # without a table every replica leads

    settings = load_settings(str(write_config(tmp_path, f"coordination: {{lease_table: {TABLE}}}\n")))
    first = lease_for(settings, aws_client, metrics, clock)
    second = lease_for(settings, aws_client, Recorder(), clock)
    assert isinstance(first, Lease) and isinstance(second, Lease)
    assert first.owner != second.owner and str(os.getpid()) in first.owner
    assert first.try_acquire() and leader() == 1.0
    assert not second.try_acquire()
    first.release()
    assert leader() == 0.0
    assert second.try_acquire()


def test_release_never_waits_long_for_a_renewal_in_flight(ddb: Any, make_aws: MakeAws, table: str) -> None:
    clock = FakeClock()
    a, rec_a, b, _ = pair(make_aws, clock)
    assert a.try_acquire()
    with a._op_lock:  # as if a renewal were stuck in AWS retries
        a.release(wait=0.01)
        assert not a.held and rec_a.leadership() == [True, False]
    assert item(ddb)["owner"] == {"S": "host-a:1:aa"}  # left to expire on its own
    assert not a.try_acquire()
    clock.advance(TTL.total_seconds() + 1)
    assert b.try_acquire()


# -- time and leadership (docs/design.md, "Time and leadership") ------------------------------------------


class Monotonic:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_held_counts_monotonic_time_since_the_renewal_whatever_the_wall_clock(make_aws: MakeAws, table: str) -> None:
    clock, mono, rec = FakeClock(), Monotonic(), Recorder()
    a = Lease(make_aws(rec), TABLE, emit=rec, clock=clock, owner="a", ttl=TTL, monotonic=mono)
    assert a.try_acquire() and a.held
    clock.advance(-3600)  # the wall clock steps back an hour: changes nothing
    mono.now += 44  # ttl 60, margin 15
    assert a.held
    mono.now += 2  # paused (SIGSTOP) past ttl - margin: the fence closes at once, the wall clock unmoved
    assert not a.held
    assert rec.leadership() == [True, False]


def _aws_with_clock(aws: AwsEnv, emit: Recorder, skew: float) -> tuple[Aws, AwsClock]:
    """An Aws whose answers feed an AwsClock on a host whose wall clock is ``skew`` seconds off."""
    session = boto3.session.Session(
        aws_access_key_id=aws.access_key, aws_secret_access_key=aws.secret_key, region_name=REGION
    )
    clock = AwsClock(emit=emit, wall=lambda: time.time() + skew)
    boundary = Boundary(session, emit, limiter=RateLimiter(1000.0), account="123456789012", clock_sample=clock.observe)
    return Aws(boundary), clock


@pytest.mark.parametrize("skew", [120.0, -120.0])
def test_a_replica_whose_clock_is_two_minutes_off_reads_aws_time(
    aws: AwsEnv, moto_environ: None, table: str, skew: float
) -> None:
    rec_a, rec_b = Recorder(), Recorder()
    aws_a, clock_a = _aws_with_clock(aws, rec_a, 0.0)
    aws_b, clock_b = _aws_with_clock(aws, rec_b, skew)
    ttl = timedelta(seconds=60)
    a = Lease(aws_a, TABLE, emit=rec_a, clock=clock_a.checked_now, owner="right", ttl=ttl, monotonic=time.monotonic)
    b = Lease(aws_b, TABLE, emit=rec_b, clock=clock_b.checked_now, owner="skewed", ttl=ttl, monotonic=time.monotonic)
    assert a.try_acquire()
    assert not b.try_acquire(), "the lease is not free in AWS's time"
    offset = clock_b.reading().offset_seconds
    assert offset is not None and abs(offset + skew) < 1.5  # measured from the Date headers of the lease calls
    assert not rec_b.errors()
    # The same replica reading its own host clock (what the rotator did before) takes a lease that is not
    # free (+120 s) - or writes one that is already expired (-120 s).
    host = Lease(aws_b, TABLE, emit=Recorder(), clock=lambda: datetime.now(UTC) + timedelta(seconds=skew), owner="host")
    if skew > 0:
        assert host.try_acquire(), "a +120 s host clock takes a lease that is still held"
    else:
        a.release()
        assert host.try_acquire()
        expires = float(item(aws.client("dynamodb"))["expires"]["N"])
        assert expires < time.time(), "a -120 s host clock writes a lease that is already expired"


def test_the_aws_clock_refuses_until_aws_answered(make_aws: MakeAws, table: str) -> None:
    rec = Recorder()
    clock = AwsClock()  # fed by nobody: AWS's time unknown
    a = Lease(make_aws(rec), TABLE, emit=rec, clock=clock.checked_now, owner="a", monotonic=time.monotonic)
    assert not a.try_acquire() and not a.held
    (error,) = rec.errors()
    assert error.error_type == "ClockError" and "AWS clock unknown" in error.error


def test_the_last_sweep_travels_with_the_lease(ddb: Any, make_aws: MakeAws, table: str) -> None:
    clock = FakeClock()
    a, _, b, _ = pair(make_aws, clock)
    assert a.try_acquire() and a.last_sweep is None
    swept = clock.now - timedelta(minutes=5)
    a.record_sweep(swept)
    assert a.try_acquire()
    assert float(item(ddb)["last_sweep"]["N"]) == swept.timestamp()
    assert not b.try_acquire() and b.last_sweep == swept  # a standby learns it from the item it reads
    clock.advance(TTL.total_seconds() + 1)  # a died
    assert b.try_acquire() and b.last_sweep == swept
    assert float(item(ddb)["last_sweep"]["N"]) == swept.timestamp()  # carried on by the new leader
    b.record_sweep(clock.now)
    assert b.try_acquire() and float(item(ddb)["last_sweep"]["N"]) == clock.now.timestamp()
