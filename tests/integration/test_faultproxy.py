"""The fault proxy (``tests/faultproxy.py``): real boto3 clients through it, the moto server behind it."""

from __future__ import annotations

import contextlib
import json
import random
import threading
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError, ConnectionClosedError, EndpointConnectionError, ReadTimeoutError
from botocore.parsers import ResponseParserError
from conftest import REGION, AwsEnv, StartSignedMoto, user_with_policy
from faultproxy import Call, FaultProxy, Rule
from helpers import MOTO_KEY

MOTO_ARN = "arn:aws:sts::123456789012:user/moto"  # moto's GetCallerIdentity answer for a key it does not know


def one_shot(url: str, service: str, key: str = MOTO_KEY, secret: str = MOTO_KEY, read_timeout: float = 5) -> Any:
    """A client for the server at ``url`` that makes one attempt per call, so that every fault shows."""
    return boto3.client(
        service,
        endpoint_url=url,
        region_name=REGION,
        aws_access_key_id=key,
        aws_secret_access_key=secret,
        config=Config(retries={"total_max_attempts": 1}, connect_timeout=2, read_timeout=read_timeout),
    )


def code(error: pytest.ExceptionInfo[ClientError]) -> str:
    return str(error.value.response["Error"]["Code"])


def users(aws: AwsEnv) -> list[str]:
    return [u["UserName"] for u in aws.iam.list_users()["Users"]]


# -- forwarding -----------------------------------------------------------------------------------------------------


def test_forwards_query_and_json_protocols_and_records_every_call(fault_proxy: FaultProxy, aws: AwsEnv) -> None:
    proxied = AwsEnv(fault_proxy.url)
    proxied.iam.create_user(UserName="alice", Path="/svc/")
    proxied.sm.create_secret(Name="iam-keys/alice", SecretString='{"a": 1}')

    assert users(aws) == ["alice"]  # upstream
    assert aws.sm.get_secret_value(SecretId="iam-keys/alice")["SecretString"] == '{"a": 1}'
    assert proxied.sm.get_secret_value(SecretId="iam-keys/alice")["SecretString"] == '{"a": 1}'
    with pytest.raises(ClientError) as missing:  # upstream errors come back as they are
        proxied.iam.get_user(UserName="nobody")
    assert code(missing) == "NoSuchEntity"

    create_user, create_secret, get_value, get_user = fault_proxy.calls
    assert (create_user.service, create_user.operation, create_user.protocol) == ("iam", "CreateUser", "query")
    assert create_user.params["UserName"] == "alice" and create_user.params["Path"] == "/svc/"
    assert create_user.signer_key_id == "testing" and create_user.region == REGION
    assert (create_user.status, create_user.upstream_status, create_user.fault) == (200, 200, None)
    assert (create_secret.service, create_secret.operation, create_secret.protocol) == (
        "secretsmanager",
        "CreateSecret",
        "json",
    )
    assert create_secret.params["Name"] == "iam-keys/alice"
    assert "SecretString" not in repr(create_secret)  # parameters stay out of assertion output
    assert get_value.operation == "GetSecretValue"
    assert (get_user.operation, get_user.status, get_user.upstream_status) == ("GetUser", 404, 404)
    assert [c.seq for c in fault_proxy.calls] == [1, 2, 3, 4]
    assert fault_proxy.operations("iam") == ["CreateUser", "GetUser"]


def test_signatures_survive_the_proxy(signed_moto: StartSignedMoto) -> None:
    """Host and every header go upstream verbatim: a moto server that verifies SigV4 accepts proxied requests."""
    policy = '{"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "iam:*", "Resource": "*"}]}'
    signer, _ = user_with_policy(signed_moto(4), "admin", policy)
    with FaultProxy(signer.url) as proxy:
        one_shot(proxy.url, "iam", signer.access_key, signer.secret_key).create_user(UserName="alice")
        with pytest.raises(ClientError) as forged:
            one_shot(proxy.url, "iam", signer.access_key, "not-the-secret").list_users()
    assert code(forged) == "SignatureDoesNotMatch"
    assert [u["UserName"] for u in signer.iam.list_users()["Users"]] == ["admin", "alice"]


def test_verify_signatures_refuses_a_wrong_secret_for_a_key_created_through_it(aws: AwsEnv) -> None:
    """moto (without INITIAL_NO_AUTH_ACTION_COUNT) takes any secret; the proxy checks SigV4 for keys it saw made."""
    aws.iam.create_user(UserName="alice")
    with FaultProxy(aws.url, verify_signatures=True) as proxy:
        key = one_shot(proxy.url, "iam").create_access_key(UserName="alice")["AccessKey"]
        key_id, secret = key["AccessKeyId"], key["SecretAccessKey"]
        right = one_shot(proxy.url, "sts", key_id, secret).get_caller_identity()
        with pytest.raises(ClientError) as forged:
            one_shot(proxy.url, "sts", key_id, secret[:-1] + ("A" if secret[-1] != "A" else "B")).get_caller_identity()
        with pytest.raises(ClientError) as forged_json:  # the JSON protocol too, and before AWS acts
            one_shot(proxy.url, "secretsmanager", key_id, "wrong").create_secret(Name="x", SecretString="y")
        one_shot(proxy.url, "iam").list_users()  # the test's own credentials: moto's rules
        checked = [(c.operation, c.status, c.fault) for c in proxy.calls]
    assert right["Arn"].endswith(":user/alice")
    assert code(forged) == code(forged_json) == "SignatureDoesNotMatch"
    assert aws.sm.list_secrets()["SecretList"] == []
    assert checked == [
        ("CreateAccessKey", 200, None),
        ("GetCallerIdentity", 200, None),
        ("GetCallerIdentity", 403, "bad_signature"),
        ("CreateSecret", 403, "bad_signature"),
        ("ListUsers", 200, None),
    ]
    with FaultProxy(aws.url) as lax:  # off by default: moto's own (lax) rules
        lax_key = one_shot(lax.url, "iam").create_access_key(UserName="alice")["AccessKey"]
        assert one_shot(lax.url, "sts", lax_key["AccessKeyId"], "wrong").get_caller_identity()["Arn"]


def test_identifies_signer_and_json_targets(fault_proxy: FaultProxy) -> None:
    dynamodb = one_shot(fault_proxy.url, "dynamodb", key="AKIAOPERATOR0000TEST", secret="x")
    dynamodb.list_tables()
    with pytest.raises(ClientError):  # moto has no trail named so; the call is identified all the same
        one_shot(fault_proxy.url, "cloudtrail").get_trail_status(Name="none")

    tables, trail = fault_proxy.calls
    assert (tables.service, tables.operation, tables.signer_key_id) == (
        "dynamodb",
        "ListTables",
        "AKIAOPERATOR0000TEST",
    )
    assert (trail.service, trail.operation) == ("cloudtrail", "GetTrailStatus")
    assert trail.params == {"Name": "none"}


# -- faults before AWS acts -----------------------------------------------------------------------------------------


def test_fail_before_answers_a_query_protocol_error_and_aws_never_acts(fault_proxy: FaultProxy, aws: AwsEnv) -> None:
    iam = one_shot(fault_proxy.url, "iam")
    rule = fault_proxy.fail_before("CreateUser", status=503, code="ServiceUnavailable", message="Slow down")

    with pytest.raises(ClientError) as error:
        iam.create_user(UserName="alice")
    assert code(error) == "ServiceUnavailable"
    assert error.value.response["Error"]["Message"] == "Slow down"
    assert error.value.response["Error"]["Type"] == "Receiver"
    assert error.value.response["ResponseMetadata"]["HTTPStatusCode"] == 503
    assert users(aws) == []
    assert rule.fired == 1 and rule.matched == 1

    iam.create_user(UserName="alice")  # times=1: the next call goes through
    assert users(aws) == ["alice"]
    assert rule.fired == 1 and rule.matched == 2
    failed, passed = fault_proxy.calls
    assert (failed.status, failed.fault, failed.upstream_status, failed.acted) == (503, "fail_before", None, False)
    assert (passed.status, passed.fault, passed.acted) == (200, None, True)


def test_fail_before_answers_a_json_protocol_error(fault_proxy: FaultProxy, aws: AwsEnv) -> None:
    sm = one_shot(fault_proxy.url, "secretsmanager")
    fault_proxy.fail_before("CreateSecret", status=400, code="ThrottlingException")

    with pytest.raises(ClientError) as error:
        sm.create_secret(Name="s", SecretString="x")
    assert code(error) == "ThrottlingException"
    headers = error.value.response["ResponseMetadata"]["HTTPHeaders"]
    assert headers["x-amzn-errortype"] == "ThrottlingException"
    assert headers["content-type"] == "application/x-amz-json-1.1"
    assert aws.sm.list_secrets()["SecretList"] == []


def test_default_retries_ride_over_a_single_fault(fault_proxy: FaultProxy, aws: AwsEnv) -> None:
    fault_proxy.fail_before("CreateUser", status=500, code="InternalFailure")
    AwsEnv(fault_proxy.url).iam.create_user(UserName="alice")  # botocore's default retry mode retries a 500

    assert users(aws) == ["alice"]
    assert [(c.operation, c.status) for c in fault_proxy.calls] == [("CreateUser", 500), ("CreateUser", 200)]


def test_reset_before_is_a_connection_error_and_aws_never_acts(fault_proxy: FaultProxy, aws: AwsEnv) -> None:
    fault_proxy.reset_before("CreateUser")

    with pytest.raises(ConnectionClosedError):
        one_shot(fault_proxy.url, "iam").create_user(UserName="alice")
    assert users(aws) == []
    (call,) = fault_proxy.calls
    assert (call.status, call.fault, call.upstream_status) == (None, "reset_before", None)


# -- faults after AWS acted -----------------------------------------------------------------------------------------


def test_fail_after_loses_the_answer_but_aws_acted(fault_proxy: FaultProxy, aws: AwsEnv) -> None:
    fault_proxy.fail_after("CreateUser", status=500, code="InternalFailure")

    with pytest.raises(ClientError) as error:
        one_shot(fault_proxy.url, "iam").create_user(UserName="alice")
    assert code(error) == "InternalFailure"
    assert users(aws) == ["alice"]
    (call,) = fault_proxy.calls
    assert (call.status, call.fault, call.upstream_status) == (500, "fail_after", 200)


def test_reset_after_loses_the_answer_but_aws_acted(fault_proxy: FaultProxy, aws: AwsEnv) -> None:
    fault_proxy.reset_after("PutSecretValue")
    aws.sm.create_secret(Name="s", SecretString="v1")

    with pytest.raises(ConnectionClosedError):
        one_shot(fault_proxy.url, "secretsmanager").put_secret_value(SecretId="s", SecretString="v2")
    assert aws.sm.get_secret_value(SecretId="s")["SecretString"] == "v2"


def test_truncated_create_access_key_is_a_parser_error_and_the_key_exists(fault_proxy: FaultProxy, aws: AwsEnv) -> None:
    aws.iam.create_user(UserName="alice")
    fault_proxy.truncate_after("CreateAccessKey")  # half the body: the cut falls inside the SecretAccessKey

    with pytest.raises(ResponseParserError) as error:
        one_shot(fault_proxy.url, "iam").create_access_key(UserName="alice")
    (key,) = aws.keys("alice")
    assert key in str(error.value)  # botocore's message quotes the body it got ...
    assert "<SecretAccessKey>" in str(error.value)  # ... secret included, as far as it came: never log it
    (call,) = fault_proxy.calls
    assert (call.status, call.fault, call.upstream_status) == (200, "truncate_after", 200)


def test_truncate_at_a_marker_and_with_a_short_read(fault_proxy: FaultProxy, aws: AwsEnv) -> None:
    aws.iam.create_user(UserName="alice")
    iam = one_shot(fault_proxy.url, "iam")
    fault_proxy.truncate_after("CreateAccessKey", at="</SecretAccessKey>")
    fault_proxy.truncate_after("CreateAccessKey", full_length=True)

    with pytest.raises(ResponseParserError) as whole_secret:
        iam.create_access_key(UserName="alice")
    text = str(whole_secret.value)
    secret = text.split("<SecretAccessKey>")[1].rstrip("'")
    assert len(secret) == 40  # the whole secret access key is in the exception's message
    with pytest.raises(ResponseParserError):  # botocore does not notice a short read (enforce_content_length=False)
        iam.create_access_key(UserName="alice")
    assert len(aws.keys("alice")) == 2


def test_truncated_json_answer_is_no_error_at_all(fault_proxy: FaultProxy, aws: AwsEnv) -> None:
    """botocore parses an unparsable JSON body as ``{"message": body}``: the call "succeeds" without its fields."""
    aws.sm.create_secret(Name="s", SecretString="v1")
    fault_proxy.truncate_after("GetSecretValue")

    answer = one_shot(fault_proxy.url, "secretsmanager").get_secret_value(SecretId="s")
    assert "SecretString" not in answer and "ARN" not in answer


# -- rule windows ---------------------------------------------------------------------------------------------------


def test_rules_skip_fire_count_match_predicates_and_are_removed(fault_proxy: FaultProxy, aws: AwsEnv) -> None:
    iam = one_shot(fault_proxy.url, "iam")
    only_bob = fault_proxy.add(
        Rule("fail_before", "CreateUser", service="iam", when=lambda c: c.params.get("UserName", "").startswith("b"))
    )
    skip_one = fault_proxy.fail_before(["TagUser", "UntagUser"], code="Throttling", status=400, after=1, times=2)

    iam.create_user(UserName="alice")
    with pytest.raises(ClientError):
        iam.create_user(UserName="bob")
    iam.create_user(UserName="bert")  # times=1
    assert (only_bob.matched, only_bob.fired) == (2, 1)

    tag = [{"Key": "k", "Value": "v"}]
    iam.tag_user(UserName="alice", Tags=tag)  # skipped (after=1)
    for _ in range(2):
        with pytest.raises(ClientError) as throttled:
            iam.tag_user(UserName="alice", Tags=tag)
        assert code(throttled) == "Throttling"
    iam.untag_user(UserName="alice", TagKeys=["k"])  # window over
    assert (skip_one.matched, skip_one.fired) == (4, 2)

    always = fault_proxy.fail_before("GetUser", times=None)
    for _ in range(3):
        with pytest.raises(ClientError):
            iam.get_user(UserName="alice")
    always.remove()
    iam.get_user(UserName="alice")
    assert always.fired == 3
    assert sorted(users(aws)) == ["alice", "bert"]


def test_fault_rules_take_turns_and_hooks_combine(fault_proxy: FaultProxy, aws: AwsEnv) -> None:
    iam = one_shot(fault_proxy.url, "iam")
    seen: list[int] = []
    fault_proxy.fail_before("CreateUser")
    fault_proxy.fail_after("CreateUser")
    fault_proxy.before("CreateUser", lambda c: seen.append(c.seq), times=None)

    for name in ("a", "b", "c"):
        with pytest.raises(ClientError) if name != "c" else contextlib.nullcontext():
            iam.create_user(UserName=name)
    assert [c.fault for c in fault_proxy.calls] == ["fail_before", "fail_after", None]
    assert sorted(users(aws)) == ["b", "c"]
    assert seen == [1, 2, 3]


# -- hooks ----------------------------------------------------------------------------------------------------------


def test_lockstep_releases_two_callers_together(fault_proxy: FaultProxy, aws: AwsEnv) -> None:
    fault_proxy.lockstep("CreateUser", parties=2)
    forwarded: dict[str, float] = {}
    fault_proxy.before("CreateUser", lambda c: forwarded.setdefault(c.params["UserName"], time.monotonic()), times=2)
    arrived: dict[str, float] = {}

    def create(name: str) -> None:
        arrived[name] = time.monotonic()
        one_shot(fault_proxy.url, "iam").create_user(UserName=name)

    first = threading.Thread(target=create, args=("first",))
    first.start()
    time.sleep(0.5)
    assert users(aws) == []  # held
    second = threading.Thread(target=create, args=("second",))
    second.start()
    first.join(10)
    second.join(10)

    assert sorted(users(aws)) == ["first", "second"]
    assert forwarded["first"] >= arrived["second"]
    assert abs(forwarded["first"] - forwarded["second"]) < 0.2


class UpstreamOverlap(FaultProxy):
    """Each forward lasts 0.2 s longer; the most forwards of one operation upstream at once is kept."""

    def __init__(self, upstream: str) -> None:
        super().__init__(upstream)
        self.in_flight: Counter[str] = Counter()
        self.peak: Counter[str] = Counter()
        self._count = threading.Lock()
        self._serving = threading.local()  # the call this request thread serves (the proxy identified it)

    def _act(self, call: Call, headers: list[tuple[str, str]], body: bytes) -> Any:
        self._serving.operation = call.operation
        return super()._act(call, headers, body)

    def _forward(self, method: str, path: str, headers: list[tuple[str, str]], body: bytes) -> Any:
        operation = getattr(self._serving, "operation", "")
        with self._count:
            self.in_flight[operation] += 1
            self.peak[operation] = max(self.peak[operation], self.in_flight[operation])
        try:
            time.sleep(0.2)
            return super()._forward(method, path, headers, body)
        finally:
            with self._count:
                self.in_flight[operation] -= 1


@pytest.mark.parametrize(
    ("operation", "refusal"), [("CreateSecret", "ResourceExistsException"), ("CreateAccessKey", "LimitExceeded")]
)
def test_checks_aws_makes_atomically_go_upstream_one_at_a_time(operation: str, refusal: str, aws: AwsEnv) -> None:
    """Eight callers released together: one secret of a name, one more key for a user with one (AWS's answers).

    moto looks, then acts, unlocked (moto/secretsmanager/models.py create_secret, moto/iam/models.py
    create_access_key), so the proxy forwards these one at a time per resource; other operations, and the
    same operation on other resources, still go upstream together.
    """
    parties = 8
    for n in range(parties):
        aws.user(f"user-{n}")
    aws.user("alice")  # one key: one free slot
    with UpstreamOverlap(aws.url) as proxy:
        outcomes: list[str] = []

        def call(n: int) -> None:
            try:
                if operation == "CreateSecret":
                    one_shot(proxy.url, "secretsmanager").create_secret(
                        Name="iam-keys/alice", SecretString=f"value {n}", ClientRequestToken=f"{n:036d}"
                    )
                else:
                    created = one_shot(proxy.url, "iam").create_access_key(UserName="alice")["AccessKey"]
                    aws.created_secrets.append(created["SecretAccessKey"])
                outcomes.append("ok")
            except ClientError as exc:
                outcomes.append(exc.response["Error"]["Code"])

        def together(target: Callable[[int], object]) -> None:
            threads = [threading.Thread(target=target, args=(n,)) for n in range(parties)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(30)

        proxy.lockstep(operation, parties=parties)
        together(call)
        assert proxy.peak[operation] == 1, "one at a time for one resource"
        assert sorted(outcomes) == sorted(["ok"] + [refusal] * (parties - 1)), outcomes

        proxy.lockstep("CreateUser", parties=parties)
        together(lambda n: one_shot(proxy.url, "iam").create_user(UserName=f"other-{n}"))
        assert proxy.peak["CreateUser"] == parties, "other operations go upstream together"
        if operation == "CreateAccessKey":
            proxy.lockstep(operation, parties=parties)
            together(lambda n: one_shot(proxy.url, "iam").create_access_key(UserName=f"user-{n}"))
            assert proxy.peak[operation] > 1, "one user's keys do not wait for another's"
        assert not proxy.errors, proxy.errors
    if operation == "CreateSecret":
        assert len(aws.sm.list_secret_version_ids(SecretId="iam-keys/alice")["Versions"]) == 1
    else:
        assert len(aws.keys("alice")) == 2


def test_before_and_after_callbacks_act_at_the_worst_moment(fault_proxy: FaultProxy, aws: AwsEnv) -> None:
    (old,) = aws.user("alice", keys=1)
    iam = one_shot(fault_proxy.url, "iam")
    # an operator deletes the key just before the client's UpdateAccessKey reaches IAM
    fault_proxy.before("UpdateAccessKey", lambda c: aws.iam.delete_access_key(UserName="alice", AccessKeyId=old))
    with pytest.raises(ClientError) as gone:
        iam.update_access_key(UserName="alice", AccessKeyId=old, Status="Inactive")
    assert code(gone) == "NoSuchEntity"

    # once IAM created the key, and before the client hears of it, the key is there upstream
    keys_then: list[dict[str, str]] = []
    statuses: list[int | None] = []

    def peek(call: Call) -> None:
        statuses.append(call.upstream_status)
        keys_then.append(aws.keys("alice"))

    fault_proxy.after("CreateAccessKey", peek)
    new = iam.create_access_key(UserName="alice")["AccessKey"]["AccessKeyId"]
    assert keys_then == [{new: "Active"}] and statuses == [200]


def test_callback_errors_are_kept(fault_proxy: FaultProxy, aws: AwsEnv) -> None:
    fault_proxy.before("CreateUser", lambda c: 1 / 0)
    one_shot(fault_proxy.url, "iam").create_user(UserName="alice")  # the request goes on
    assert users(aws) == ["alice"]
    assert [type(e) for e in fault_proxy.errors] == [ZeroDivisionError]
    fault_proxy.errors.clear()  # else the fixture fails the test


# -- silence --------------------------------------------------------------------------------------------------------


def test_silence_times_clients_out_and_stop_returns_at_once(aws: AwsEnv) -> None:
    proxy = FaultProxy(aws.url).start()
    iam = one_shot(proxy.url, "iam", read_timeout=1)
    proxy.silence()
    started = time.monotonic()
    with pytest.raises(ReadTimeoutError):
        iam.create_user(UserName="alice")
    assert 0.9 < time.monotonic() - started < 3
    proxy.unsilence()
    iam.create_user(UserName="bob")
    assert users(aws) == ["bob"]  # the silenced request never reached AWS

    proxy.silence()
    holder = threading.Thread(target=lambda: _swallow(lambda: one_shot(proxy.url, "iam", read_timeout=20).list_users()))
    holder.start()
    time.sleep(0.3)
    started = time.monotonic()
    proxy.stop()
    assert time.monotonic() - started < 1
    holder.join(5)
    assert not holder.is_alive()  # the held client saw its connection close
    assert [c.fault for c in proxy.calls] == ["silence", None, "silence"]
    with pytest.raises(EndpointConnectionError):
        iam.list_users()


def _swallow(action: Any) -> None:
    """Run ``action``, whatever it raises (its fate is asserted through the proxy)."""
    with contextlib.suppress(Exception):
        action()


def test_hang_rule_holds_one_operation(fault_proxy: FaultProxy, aws: AwsEnv) -> None:
    iam = one_shot(fault_proxy.url, "iam", read_timeout=1)
    rule = fault_proxy.hang("CreateUser")
    with pytest.raises(ReadTimeoutError):
        iam.create_user(UserName="alice")
    iam.list_users()  # other operations go on
    rule.remove()
    iam.create_user(UserName="bob")
    assert users(aws) == ["bob"]


# -- random faults --------------------------------------------------------------------------------------------------


def _random_run(aws: AwsEnv, seed: int) -> tuple[list[str | None], list[str]]:
    aws_reset_users(aws)
    with FaultProxy(aws.url) as proxy:
        proxy.random_faults(rate=0.5, seed=seed, operations={"CreateUser"})
        iam = one_shot(proxy.url, "iam")
        for n in range(16):
            _swallow(lambda n=n: iam.create_user(UserName=f"u{n:02d}"))
        iam.list_users()
        assert proxy.calls[-1].fault is None  # other operations are left alone
        return [c.fault for c in proxy.calls if c.operation == "CreateUser"], sorted(users(aws))


def aws_reset_users(aws: AwsEnv) -> None:
    for name in users(aws):
        aws.iam.delete_user(UserName=name)


def test_random_faults_are_reproducible_for_a_seed(aws: AwsEnv) -> None:
    faults, created = _random_run(aws, seed=1)
    again, created_again = _random_run(aws, seed=1)
    other, _ = _random_run(aws, seed=2)

    assert faults == again and created == created_again
    assert faults != other
    rng = random.Random(1)  # noqa: S311 - the documented draw: random() per matching request, then choice(kinds)
    kinds = ("fail_before", "reset_before", "fail_after", "reset_after")
    assert faults == [rng.choice(kinds) if rng.random() < 0.5 else None for _ in range(16)]
    assert set(faults) == {None, *kinds}
    # AWS acted on every call but those faulted before it
    assert created == [f"u{n:02d}" for n, f in enumerate(faults) if f not in ("fail_before", "reset_before")]


# -- credential report ----------------------------------------------------------------------------------------------


def report(iam: Any) -> tuple[str, datetime]:
    for _ in range(20):
        if iam.generate_credential_report()["State"] == "COMPLETE":
            break
        time.sleep(0.05)
    answer = iam.get_credential_report()
    return answer["Content"].decode(), answer["GeneratedTime"]


def test_live_credential_report_is_generated_now(fault_proxy: FaultProxy, aws: AwsEnv) -> None:
    aws.user("alice", keys=1)
    content, generated = report(one_shot(fault_proxy.url, "iam"))
    assert ",arn:aws:iam::123456789012:user/svc/alice," in content
    assert abs(datetime.now(UTC) - generated) < timedelta(seconds=30)  # moto alone says 2015-02-02


def test_frozen_credential_report_stays_as_captured(fault_proxy: FaultProxy, aws: AwsEnv) -> None:
    aws.user("alice", keys=1)
    iam = one_shot(fault_proxy.url, "iam")
    captured = fault_proxy.freeze_credential_report()
    assert "user/svc/alice" in captured.content.decode()

    aws.user("bob", keys=1)
    aws.iam.create_access_key(UserName="alice")
    time.sleep(1.1)  # GeneratedTime has whole seconds
    assert iam.generate_credential_report()["State"] == "COMPLETE"
    content, generated = report(iam)
    assert content.encode() == captured.content and "bob" not in content
    assert generated == captured.generated_time
    assert fault_proxy.calls[-1].upstream_status == 200  # served by the proxy

    backdated = fault_proxy.freeze_credential_report(generated_at=datetime.now(UTC) - timedelta(hours=3))
    assert report(iam) == (backdated.content.decode(), backdated.generated_time)
    assert "bob" in backdated.content.decode()

    fault_proxy.thaw_credential_report()
    content, generated = report(iam)
    assert "bob" in content and generated > captured.generated_time


# -- CloudTrail stand-in ---------------------------------------------------------------------------------------------


def lookup(proxy: FaultProxy, key: str, value: str, **kwargs: Any) -> list[dict[str, Any]]:
    trail = one_shot(proxy.url, "cloudtrail")
    attributes = [{"AttributeKey": key, "AttributeValue": value}]
    return list(trail.lookup_events(LookupAttributes=attributes, **kwargs)["Events"])


def test_lookup_events_finds_a_key_created_through_the_proxy(fault_proxy: FaultProxy, aws: AwsEnv) -> None:
    aws.iam.create_user(UserName="ops", Path="/ops/")
    ops = aws.iam.create_access_key(UserName="ops")["AccessKey"]
    aws.iam.create_user(UserName="alice")
    before = datetime.now(UTC)
    created = one_shot(fault_proxy.url, "iam", ops["AccessKeyId"], ops["SecretAccessKey"]).create_access_key(
        UserName="alice"
    )["AccessKey"]
    new_key, secret = created["AccessKeyId"], created["SecretAccessKey"]

    (event,) = lookup(fault_proxy, "ResourceName", new_key)
    assert event["EventName"] == "CreateAccessKey" and event["EventSource"] == "iam.amazonaws.com"
    assert event["ReadOnly"] == "false"
    assert event["AccessKeyId"] == ops["AccessKeyId"] and event["Username"] == "ops"
    assert before - timedelta(seconds=1) <= event["EventTime"] <= datetime.now(UTC)
    assert event["Resources"] == [
        {"ResourceType": "AWS::IAM::AccessKey", "ResourceName": new_key},
        {"ResourceType": "AWS::IAM::User", "ResourceName": "alice"},
    ]
    document = json.loads(event["CloudTrailEvent"])
    assert document["eventName"] == "CreateAccessKey"
    assert document["userIdentity"]["arn"] == "arn:aws:iam::123456789012:user/ops/ops"
    assert document["userIdentity"]["accessKeyId"] == ops["AccessKeyId"]
    assert document["requestParameters"] == {"userName": "alice"}
    assert document["responseElements"]["accessKey"]["accessKeyId"] == new_key
    assert document["responseElements"]["accessKey"]["status"] == "Active"
    assert datetime.fromisoformat(document["eventTime"]) >= before.replace(microsecond=0)

    assert lookup(fault_proxy, "Username", "ops")[0]["EventId"] == event["EventId"]
    assert lookup(fault_proxy, "AccessKeyId", ops["AccessKeyId"])[0]["EventId"] == event["EventId"]
    assert lookup(fault_proxy, "ResourceName", "alice")[0]["EventId"] == event["EventId"]
    assert lookup(fault_proxy, "ResourceName", "AKIANOSUCHKEY0000000") == []
    # the secret is nowhere in the proxy, and resolving the signer left its last use alone
    state = repr((fault_proxy.calls, fault_proxy.key_creations, [c.params for c in fault_proxy.calls]))
    assert secret not in state and secret not in event["CloudTrailEvent"]
    last_used = aws.iam.get_access_key_last_used(AccessKeyId=ops["AccessKeyId"])["AccessKeyLastUsed"]
    assert last_used["ServiceName"] == "iam"
    assert fault_proxy.operations("cloudtrail") == ["LookupEvents"] * 5  # served by the proxy, not moto


def test_lookup_events_for_moto_default_signer_and_lost_answers(fault_proxy: FaultProxy, aws: AwsEnv) -> None:
    aws.iam.create_user(UserName="alice")
    fault_proxy.fail_after("CreateAccessKey")
    with pytest.raises(ClientError):
        one_shot(fault_proxy.url, "iam").create_access_key(UserName="alice")
    (key,) = aws.keys("alice")

    (event,) = lookup(fault_proxy, "ResourceName", key)  # AWS acted, so CloudTrail has it
    assert event["Username"] == "moto" and event["AccessKeyId"] == "testing"
    assert json.loads(event["CloudTrailEvent"])["userIdentity"]["arn"] == MOTO_ARN


def test_lookup_events_filters_time_and_pages(fault_proxy: FaultProxy) -> None:
    now = time.time()
    for n in range(5):
        fault_proxy.record_key_creation(f"AKIAHAND{n:012d}", f"user{n}", "arn:aws:iam::123456789012:user/op", now - n)
    trail = one_shot(fault_proxy.url, "cloudtrail")

    everything = trail.lookup_events()["Events"]
    assert [e["Resources"][0]["ResourceName"] for e in everything] == [f"AKIAHAND{n:012d}" for n in range(5)]
    assert {e["Username"] for e in everything} == {"op"}
    window = trail.lookup_events(StartTime=now - 3.5, EndTime=now - 0.5)["Events"]
    assert [e["Resources"][1]["ResourceName"] for e in window] == ["user1", "user2", "user3"]
    pages = trail.get_paginator("lookup_events").paginate(
        LookupAttributes=[{"AttributeKey": "EventName", "AttributeValue": "CreateAccessKey"}],
        PaginationConfig={"PageSize": 2},
    )
    sizes = [len(page["Events"]) for page in pages]
    assert sizes == [2, 2, 1]
    with pytest.raises(ClientError) as two:
        trail.lookup_events(
            LookupAttributes=[
                {"AttributeKey": "EventName", "AttributeValue": "CreateAccessKey"},
                {"AttributeKey": "Username", "AttributeValue": "op"},
            ]
        )
    assert code(two) == "InvalidLookupAttributesException"
    with pytest.raises(ClientError) as backwards:
        trail.lookup_events(StartTime=now, EndTime=now - 10)
    assert code(backwards) == "InvalidTimeRangeException"


def test_cloudtrail_delay_and_disabled(fault_proxy: FaultProxy, aws: AwsEnv) -> None:
    aws.iam.create_user(UserName="alice")
    fault_proxy.cloudtrail_delay = 1.0
    key = one_shot(fault_proxy.url, "iam").create_access_key(UserName="alice")["AccessKey"]["AccessKeyId"]

    assert lookup(fault_proxy, "ResourceName", key) == []  # not delivered yet
    time.sleep(1.1)
    assert len(lookup(fault_proxy, "ResourceName", key)) == 1

    fault_proxy.cloudtrail_enabled = False
    with pytest.raises(ClientError) as denied:
        lookup(fault_proxy, "ResourceName", key)
    assert code(denied) == "AccessDeniedException"
    assert "cloudtrail:LookupEvents" in denied.value.response["Error"]["Message"]


def test_hand_recorded_events_and_faults_on_lookup_events(fault_proxy: FaultProxy) -> None:
    when = datetime.now(UTC) - timedelta(minutes=5)
    fault_proxy.record_key_creation("AKIAOPERATOR00000001", "alice", "arn:aws:iam::123456789012:user/admin", when)
    fault_proxy.fail_before("LookupEvents", status=400, code="ThrottlingException")

    with pytest.raises(ClientError) as throttled:
        lookup(fault_proxy, "ResourceName", "AKIAOPERATOR00000001")
    assert code(throttled) == "ThrottlingException"
    (event,) = lookup(fault_proxy, "ResourceName", "AKIAOPERATOR00000001")
    assert event["Username"] == "admin" and abs(event["EventTime"] - when) < timedelta(seconds=1)
    document = json.loads(event["CloudTrailEvent"])
    assert document["userIdentity"]["arn"] == "arn:aws:iam::123456789012:user/admin"
