"""A small smoke of ``benchmarks/scale.py`` (the benchmark itself is not part of CI; its figures are in
docs/performance.md): a handful of users through the AWS-like proxy, every phase run and counted.

Nothing here is timed: the smoke checks that the proxy throttles and refuses unpropagated keys as it claims,
and that every phase of the benchmark completes and is reported.
"""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import boto3
import botocore.config
import botocore.exceptions
import pytest
from conftest import REGION, ROOT, AwsEnv
from helpers import client

sys.path.insert(0, str(ROOT / "benchmarks"))
from scale import AwsLikeProxy

pytestmark = pytest.mark.timeout(300)


def test_the_scale_benchmark_runs_end_to_end_on_a_few_users() -> None:
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "scale.py"),
            "--users",
            "6",
            "--latency",
            "0.01",
            "--propagation",
            "1",
            "--iam-rate",
            "8",
            "--json",
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=280,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    figures = json.loads(result.stdout)
    phases = {p["name"]: p for p in figures["phases"]}
    assert set(phases) == {"bootstrap sweep", "plan (steady state)", "bulk-read floor (boto3)", "rotate --all"}
    assert all(p["exit"] == 0 for p in phases.values())
    rotate = phases["rotate --all"]
    assert rotate["by_operation"]["iam:CreateAccessKey"] == 6
    assert rotate["by_operation"]["secretsmanager:UpdateSecretVersionStage"] == 12
    # A new key is refused until it propagated: each of the 6 validations met at least one refusal.
    assert rotate["refused_unpropagated"] >= 6
    plan = phases["plan (steady state)"]
    assert plan["calls"] == sum(plan["by_operation"].values()) and plan["calls"] <= 8
    assert figures["iam_floor_s"]["target_3_per_key"] == pytest.approx(3 * 6 / 8, abs=0.1)


def untried(url: str, service: str, key_id: str, secret: str) -> Any:
    """A client that never retries (botocore would retry the throttled answers on its own)."""
    return boto3.client(
        service,  # type: ignore[call-overload]
        endpoint_url=url,
        region_name=REGION,
        aws_access_key_id=key_id,
        aws_secret_access_key=secret,
        config=botocore.config.Config(retries={"total_max_attempts": 1, "mode": "standard"}),
    )


def test_the_proxy_throttles_past_the_rate_and_refuses_a_key_until_it_propagated(aws: AwsEnv) -> None:
    proxy = AwsLikeProxy(aws.url, latency=0.0, rates={"iam": 2.0}, propagation=30.0).start()
    try:
        iam = untried(proxy.url, "iam", "testing", "testing")
        codes = []
        for _ in range(10):  # far faster than 2/s: the 1 s burst (2 calls) passes, most others are throttled
            try:
                iam.list_users()
                codes.append("ok")
            except botocore.exceptions.ClientError as exc:
                codes.append(exc.response["Error"]["Code"])
        assert codes[:2] == ["ok", "ok"] and codes.count("Throttling") >= 5, codes
        admin = client(aws.url, "iam")  # straight to moto: no throttling
        admin.create_user(UserName="fresh")
        proxy.throttles["iam"].remove()  # no more throttling: only propagation is left
        key = client(proxy.url, "iam").create_access_key(UserName="fresh")["AccessKey"]
        aws.created_secrets.append(key["SecretAccessKey"])
        sts = untried(proxy.url, "sts", key["AccessKeyId"], key["SecretAccessKey"])
        with pytest.raises(botocore.exceptions.ClientError) as refused:
            sts.get_caller_identity()
        assert refused.value.response["Error"]["Code"] == "InvalidClientTokenId"
        assert proxy.refused_young.fired == 1
    finally:
        proxy.stop()
