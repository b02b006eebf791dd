"""The adaptive per-service rate limits of the AWS boundary (rotator.aws.transport), on a fake clock."""

from __future__ import annotations

import pytest

from rotator.aws.transport import (
    CUT,
    DEFAULT_RATES,
    FLOOR,
    OTHER_SERVICES_RATE,
    RECOVER_AFTER,
    RECOVERY_PER_SECOND,
    RateLimiter,
    ServiceLimits,
)
from rotator.config import Settings


class FakeTime:
    def __init__(self) -> None:
        self.now = 100.0
        self.slept: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def limiter(rate: float = 10.0) -> tuple[RateLimiter, FakeTime]:
    fake = FakeTime()
    return RateLimiter(rate, fake.clock, fake.sleep), fake


def test_calls_are_spaced_at_the_rate() -> None:
    bucket, fake = limiter(10.0)
    for _ in range(21):
        bucket.wait()
    assert fake.now == pytest.approx(102.0)  # 21 calls at 10/s: the first at once, the 21st 2 s later


def test_a_throttled_answer_halves_the_rate_at_most_once_a_second() -> None:
    bucket, fake = limiter(20.0)
    for _ in range(5):  # a burst of throttled answers to calls sent together: one signal
        bucket.throttled()
    assert (bucket.rate, bucket.throttles, bucket.cuts) == (20.0 * CUT, 5, 1)
    fake.now += 1.0
    bucket.throttled()
    assert bucket.rate == pytest.approx(20.0 * CUT * CUT)


def test_the_rate_never_falls_below_the_floor() -> None:
    bucket, fake = limiter(20.0)
    for _ in range(30):
        bucket.throttled()
        fake.now += 1.0
    assert bucket.rate == pytest.approx(20.0 * FLOOR)
    bucket.wait()
    bucket.wait()
    assert fake.slept == [pytest.approx(1.0)]  # 1 call/s


def test_the_rate_climbs_back_once_aws_stops_throttling() -> None:
    bucket, fake = limiter(20.0)
    bucket.throttled()
    assert bucket.rate == 10.0
    fake.now += RECOVER_AFTER / 2
    bucket.answered()
    assert bucket.rate == 10.0  # still within the quiet spell
    fake.now += RECOVER_AFTER / 2 + 1.0  # one second past the quiet spell
    bucket.answered()
    assert bucket.rate == pytest.approx(10.0 + 20.0 * RECOVERY_PER_SECOND)
    fake.now += 60.0
    bucket.answered()
    assert bucket.rate == 20.0  # never above the ceiling


def test_each_service_has_its_own_bucket() -> None:
    fake = FakeTime()
    limits = ServiceLimits({"iam": 20.0, "dynamodb": 20.0}, other=5.0, clock=fake.clock, sleep=fake.sleep)
    limits.of("iam").throttled()
    assert limits.of("iam").rate == 10.0
    assert limits.of("dynamodb").rate == 20.0  # a lease renewal never waits behind throttled IAM traffic
    assert limits.of("sns").rate == 5.0
    assert limits.of("iam") is limits.of("iam")
    other_account = limits.fresh()
    assert other_account.of("iam").rate == 20.0  # each account: its own quotas
    for _ in range(40):
        limits.of("iam").wait()
    assert fake.slept and all(s == pytest.approx(0.1) for s in fake.slept)  # halved: 10/s
    fake.slept.clear()
    limits.of("dynamodb").wait()
    assert fake.slept == []


def test_a_shared_limiter_is_one_bucket_for_every_service() -> None:
    shared = RateLimiter(1000.0)
    limits = ServiceLimits(shared=shared)
    assert limits.of("iam") is limits.of("secretsmanager") is shared
    assert limits.fresh() is limits


def test_the_transport_defaults_are_the_settings_defaults() -> None:
    rates, other = Settings().aws.ceilings()
    assert (rates, other) == (DEFAULT_RATES, OTHER_SERVICES_RATE)


def test_max_calls_per_second_replaces_every_ceiling() -> None:
    settings = Settings.model_validate({"aws": {"max_calls_per_second": 1000}})
    assert settings.aws.ceilings() == ({}, 1000.0)
