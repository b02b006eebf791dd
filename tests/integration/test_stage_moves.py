"""Aws.move_stage is idempotent: a move another writer already made is reported, not raised."""

from __future__ import annotations

import pytest
from conftest import AwsEnv

from rotator.aws import Aws, Boundary, RateLimiter, session_from_environment
from rotator.errors import AwsError


@pytest.fixture
def secret(aws: AwsEnv, moto_environ: None) -> tuple[Aws, str, str, str]:
    first = "11111111-1111-4111-8111-111111111111"
    second = "22222222-2222-4222-8222-222222222222"
    aws.sm.create_secret(Name="iam-keys/x", SecretString="{}", ClientRequestToken=first)
    aws.sm.put_secret_value(
        SecretId="iam-keys/x", SecretString="{}", ClientRequestToken=second, VersionStages=["AWSPENDING"]
    )
    boundary = Boundary(session_from_environment(), lambda _event: None, limiter=RateLimiter(1000))
    return Aws(boundary), "iam-keys/x", first, second


def test_a_move_made_by_another_writer_is_reported_as_already_done(secret: tuple[Aws, str, str, str]) -> None:
    aws, name, first, second = secret
    assert aws.move_stage(name, "AWSCURRENT", to_version=second, from_version=first) is True
    # A second run with the same (now stale) view: the label already sits where it wants it.
    assert aws.move_stage(name, "AWSCURRENT", to_version=second, from_version=first) is False
    assert aws.move_stage(name, "AWSPENDING", from_version=second) is True
    assert aws.move_stage(name, "AWSPENDING", from_version=second) is False


def test_a_move_whose_goal_does_not_hold_still_raises(secret: tuple[Aws, str, str, str]) -> None:
    aws, name, _first, second = secret
    # AWSCURRENT is on the first version, not ``second``, and no version 333... exists: nothing
    # another writer did makes this goal true, so it is an error.
    with pytest.raises(AwsError):
        aws.move_stage(name, "AWSCURRENT", to_version="33333333-3333-4333-8333-333333333333", from_version=second)
