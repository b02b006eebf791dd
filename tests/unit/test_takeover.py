"""A new leader's first sweep (the lease item's last sweep against the schedule), the fencing guard the daemon
installs, and /readyz saying why nothing may change while AWS's clock is unknown."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest

from rotator.app import App
from rotator.awsclock import AwsClock
from rotator.config import Settings
from rotator.daemon.loop import Daemon
from rotator.daemon.scheduling import SWEEP_JOB, TAKEOVER_JOB
from rotator.events import AwsCall
from rotator.lease import FencedError

INTERVAL = timedelta(hours=1)


class Leadership:
    """A lease this replica has just taken, whose item says the last sweep was ``ago`` before now."""

    def __init__(self, last_sweep: datetime | None) -> None:
        self.held = True
        self.renew_interval = timedelta(seconds=20)
        self.last_sweep = last_sweep
        self.recorded: list[datetime] = []
        self.acquired = 0

    def record_sweep(self, at: datetime) -> None:
        self.recorded.append(at)

    def try_acquire(self) -> bool:
        self.acquired += 1
        return self.held

    def release(self) -> None:
        self.held = False


def daemon_with(last_sweep: datetime | None, now: datetime) -> Daemon:
    app = App(Settings.model_validate({"schedule": {"interval": "1h"}}), clock=lambda: now, log=False)
    daemon = Daemon(app, leadership=Leadership(last_sweep))
    daemon.scheduler.start_paused()
    daemon._schedule()
    # This replica's own next slot: an hour away (its start-up sweep already ran, as a standby).
    daemon.scheduler._scheduler.modify_job(SWEEP_JOB, next_run_time=datetime.now(UTC) + INTERVAL)
    return daemon


@pytest.fixture
def now() -> datetime:
    return datetime(2030, 1, 1, 12, 0, tzinfo=UTC)


def takeover_at(daemon: Daemon) -> datetime | None:
    job = daemon.scheduler.job(TAKEOVER_JOB)
    return None if job is None else job.next_run_time


def test_overdue_or_unknown_last_sweep_sweeps_at_once(now: datetime) -> None:
    for last in (None, now - INTERVAL - timedelta(minutes=1)):
        daemon = daemon_with(last, now)
        try:
            before = datetime.now(UTC)
            daemon._lease_job()  # the lease job takes the lease: a takeover
            at = takeover_at(daemon)
            assert at is not None and at - before < timedelta(seconds=2), last
            assert tuple(daemon.scheduler.job(TAKEOVER_JOB).args) == ("takeover",)
            daemon._lease_job()  # a renewal is no takeover
            assert takeover_at(daemon) == at
        finally:
            daemon.scheduler.shutdown()


def test_a_recent_sweep_keeps_the_dead_leaders_schedule(now: datetime) -> None:
    daemon = daemon_with(now - timedelta(minutes=45), now)  # due in 15 minutes, before our own slot
    try:
        daemon._lease_job()
        at = takeover_at(daemon)
        assert at is not None
        assert abs((at - datetime.now(UTC)) - timedelta(minutes=15)) < timedelta(seconds=2)
    finally:
        daemon.scheduler.shutdown()
    daemon = daemon_with(now - timedelta(minutes=1), now)  # due in 59 minutes: our own slot (60) is no later
    try:
        daemon._lease_job()
        at = takeover_at(daemon)
        assert at is not None and abs((at - datetime.now(UTC)) - timedelta(minutes=59)) < timedelta(seconds=2)
    finally:
        daemon.scheduler.shutdown()


def test_a_successful_sweep_is_recorded_in_the_lease_at_once(now: datetime) -> None:
    daemon = daemon_with(None, now)
    leadership = daemon.leadership
    assert isinstance(leadership, Leadership)
    daemon.app.sweep = lambda **_: type("R", (), {"result": "success", "dry_run": False})()  # type: ignore[method-assign]
    try:
        daemon._sweep_job("schedule")
    finally:
        daemon.scheduler.shutdown()
    assert leadership.recorded == [now]
    assert leadership.acquired == 1, "written now, not at the next renewal"


def test_the_daemon_fences_every_change_on_its_leadership(now: datetime) -> None:
    daemon = daemon_with(None, now)
    daemon.scheduler.shutdown()
    daemon.app.guard("iam:CreateAccessKey")  # held: allowed
    daemon.leadership.release()
    with pytest.raises(FencedError, match="iam:CreateAccessKey refused"):
        daemon.app.guard("iam:CreateAccessKey")


def test_readyz_says_why_while_aws_time_is_unknown() -> None:
    clock = AwsClock()
    app = App(Settings(), log=False, aws_clock=clock)
    daemon = Daemon(app)
    app.bus.emit(AwsCall(service="sts", operation="GetCallerIdentity"))
    status, body = daemon.readiness()
    assert status == 503
    assert str(body["status"]).startswith("AWS clock unknown")
    assert isinstance(body["aws_clock"], dict) and body["aws_clock"]["offset_seconds"] is None
    stamp = datetime.now(UTC).strftime("%a, %d %b %Y %H:%M:%S GMT")
    clock.observe(stamp, time.monotonic() - 0.01, time.monotonic())
    status, body = daemon.readiness()
    assert status == 200, body
    assert isinstance(body["aws_clock"], dict) and abs(body["aws_clock"]["offset_seconds"]) < 1.5
