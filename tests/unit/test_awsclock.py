"""AWS's clock from ``Date`` headers (``rotator.awsclock``), and when a new leader's sweep falls due.

The clocks are injected: the host's wall clock may be anywhere, AWS's time is read off monotonic time and
the answers' headers only.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest

from rotator.awsclock import AwsClock, ClockError
from rotator.config import ScheduleSettings
from rotator.daemon.scheduling import sweep_due
from rotator.events import ClockSkew, Event

AWS_EPOCH = 1_800_000_000.0  # AWS's time at monotonic 0 in these tests


class Host:
    """A host whose wall clock is ``skew`` seconds off AWS's; monotonic time moves only when told."""

    def __init__(self, skew: float) -> None:
        self.mono = 100.0
        self.skew = skew

    def monotonic(self) -> float:
        return self.mono

    def wall(self) -> float:
        return AWS_EPOCH + self.mono + self.skew

    def date(self, at: float | None = None) -> str:
        """The Date header AWS sends at monotonic ``at`` (whole seconds, truncated)."""
        aws = AWS_EPOCH + (self.mono if at is None else at)
        return format_datetime(datetime.fromtimestamp(int(aws), UTC), usegmt=True)

    def answer(self, clock: AwsClock, rtt: float = 0.05) -> None:
        """One AWS call: sent now, stamped halfway, answered ``rtt`` later."""
        sent = self.mono
        header = self.date(sent + rtt / 2)
        self.mono += rtt
        clock.observe(header, sent, self.mono)


@pytest.mark.parametrize("skew", [0.0, 120.0, -120.0, 3.7])
def test_the_offset_is_measured_whatever_the_host_clock_says(skew: float) -> None:
    host = Host(skew)
    events: list[Event] = []
    clock = AwsClock(emit=events.append, wall=host.wall, monotonic=host.monotonic)
    for _ in range(20):  # answers at different fractions of a second narrow the estimate
        host.answer(clock)
        host.mono += 0.137
    reading = clock.reading()
    assert reading.problem is None
    assert reading.offset_seconds == pytest.approx(-skew, abs=0.15)
    assert reading.uncertainty_seconds is not None and reading.uncertainty_seconds < 0.15
    assert clock.now().timestamp() == pytest.approx(AWS_EPOCH + host.mono, abs=0.15)
    clock.check()
    assert isinstance(events[0], ClockSkew) and events[0].offset_seconds == pytest.approx(-skew, abs=0.6)


def test_a_host_clock_that_jumps_changes_nothing() -> None:
    host = Host(0.0)
    clock = AwsClock(wall=host.wall, monotonic=host.monotonic)
    host.answer(clock)
    before = clock.now().timestamp()
    host.skew = 3600.0  # NTP steps the host clock an hour
    host.mono += 10
    assert clock.now().timestamp() == pytest.approx(before + 10, abs=0.01)
    assert clock.reading().offset_seconds == pytest.approx(-3600, abs=1)


def test_unknown_stale_imprecise_and_implausible_refuse() -> None:
    host = Host(0.0)
    clock = AwsClock(wall=host.wall, monotonic=host.monotonic, max_age=600, max_skew=300, max_uncertainty=10)
    with pytest.raises(ClockError, match="AWS clock unknown"):
        clock.checked_now()
    assert clock.now().timestamp() == host.wall()  # reads fall back to the host's clock

    host.answer(clock)
    clock.check()
    host.mono += 601
    with pytest.raises(ClockError, match="AWS clock stale"):
        clock.check()

    slow = AwsClock(wall=host.wall, monotonic=host.monotonic, max_uncertainty=10)
    host.answer(slow, rtt=30.0)  # one answer that took 30 s: +/- 15 s
    with pytest.raises(ClockError, match="imprecise"):
        slow.check()

    far = Host(-400.0)
    skewed = AwsClock(wall=far.wall, monotonic=far.monotonic, max_skew=300)
    far.answer(skewed)
    with pytest.raises(ClockError, match="implausible"):
        skewed.check()
    assert "host clock -400" in (skewed.reading().problem or "")


def test_an_answer_that_contradicts_the_others_starts_the_estimate_again() -> None:
    host = Host(0.0)
    clock = AwsClock(wall=host.wall, monotonic=host.monotonic)
    for _ in range(5):
        host.answer(clock)
    clock.observe(host.date(host.mono + 50), host.mono, host.mono + 0.05)  # AWS's time moved by 50 s
    assert clock.now().timestamp() == pytest.approx(AWS_EPOCH + host.mono + 50, abs=1)


def test_no_or_garbled_header_is_no_sample() -> None:
    host = Host(0.0)
    clock = AwsClock(wall=host.wall, monotonic=host.monotonic)
    clock.observe(None, 1.0, 2.0)
    clock.observe("yesterday", 1.0, 2.0)
    assert clock.aws_timestamp() is None


INTERVAL = ScheduleSettings(interval=timedelta(hours=1))
DAILY = ScheduleSettings(cron="0 3 * * *")


def test_the_next_sweep_falls_due_by_the_schedule_after_the_last_one() -> None:
    last = datetime(2030, 1, 1, 2, 59, tzinfo=UTC)
    assert sweep_due(INTERVAL, None) is None  # never swept: at once
    assert sweep_due(INTERVAL, last) == last + timedelta(hours=1)
    assert sweep_due(DAILY, last) == datetime(2030, 1, 1, 3, 0, tzinfo=UTC)
    assert sweep_due(DAILY, datetime(2030, 1, 1, 3, 0, tzinfo=UTC)) == datetime(2030, 1, 2, 3, 0, tzinfo=UTC)
