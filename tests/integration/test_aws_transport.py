"""The AWS boundary when AWS does not answer: timeouts, how often a call is tried, and what readiness learns.

Every failed call's ``AwsCall`` event says whether AWS answered (``reachable``): an error *answer* such as
``NoSuchEntity`` or ``AccessDenied`` shows AWS is there; a refused connection, a timeout or a 5xx does not.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import boto3
import pytest
from conftest import REGION, AwsEnv, free_port
from faultproxy import FaultProxy
from helpers import silent_endpoint

from rotator.aws import Boundary, RateLimiter, ServiceLimits
from rotator.errors import AwsError, NotFoundError, UnreachableError
from rotator.events import AwsCall, Event

pytestmark = pytest.mark.timeout(60)


def boundary_at(
    url: str, monkeypatch: pytest.MonkeyPatch, events: list[Event], max_attempts: int = 8, **timeouts: float
) -> Boundary:
    monkeypatch.setenv("AWS_ENDPOINT_URL", url)
    session = boto3.session.Session(aws_access_key_id="testing", aws_secret_access_key="testing", region_name=REGION)
    return Boundary(session, events.append, max_attempts=max_attempts, limiter=RateLimiter(1000.0), **timeouts)


@contextmanager
def failing_endpoint(status: int) -> Iterator[str]:
    """An endpoint that answers every request with ``status`` and a Query-protocol error body."""

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            body = b"<ErrorResponse><Error><Code>ServiceUnavailable</Code><Message>down</Message></Error>"
            body += b"</ErrorResponse>"
            self.send_response(status)
            self.send_header("Content-Type", "text/xml")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def last_call(events: list[Event]) -> AwsCall:
    calls = [e for e in events if isinstance(e, AwsCall) and e.outcome != "throttled"]
    assert calls, events
    return calls[-1]


def test_an_error_answer_is_aws_answering(aws: AwsEnv, monkeypatch: pytest.MonkeyPatch) -> None:
    events: list[Event] = []
    boundary = boundary_at(aws.url, monkeypatch, events)
    with pytest.raises(NotFoundError):
        boundary.call("iam", "GetUser", UserName="nobody")
    call = last_call(events)
    assert (call.outcome, call.reachable) == ("error", True)
    boundary.call("sts", "GetCallerIdentity")
    assert last_call(events).reachable is True


def test_a_refused_connection_is_aws_not_answering(monkeypatch: pytest.MonkeyPatch) -> None:
    events: list[Event] = []
    boundary = boundary_at(f"http://127.0.0.1:{free_port()}", monkeypatch, events)
    with pytest.raises(UnreachableError):
        boundary.call("sts", "GetCallerIdentity")
    call = last_call(events)
    assert (call.outcome, call.reachable) == ("error", False)


def test_a_5xx_answer_is_aws_not_answering(monkeypatch: pytest.MonkeyPatch) -> None:
    events: list[Event] = []
    with failing_endpoint(503) as url:
        boundary = boundary_at(url, monkeypatch, events, max_attempts=2)  # botocore retries a 5xx with backoff
        with pytest.raises(AwsError):
            boundary.call("sts", "GetCallerIdentity")
    call = last_call(events)
    assert (call.outcome, call.reachable) == ("error", False)


def test_the_timeouts_are_the_configured_ones(monkeypatch: pytest.MonkeyPatch) -> None:
    boundary = boundary_at("http://127.0.0.1:1", monkeypatch, [], connect_timeout=3.0, read_timeout=7.0)
    config = boundary.client_config()
    assert (config.connect_timeout, config.read_timeout) == (3.0, 7.0)


def test_a_silent_endpoint_costs_two_read_timeouts_whatever_max_attempts(monkeypatch: pytest.MonkeyPatch) -> None:
    """botocore would try a timed-out call max_attempts (8) times: 8 read timeouts for one call."""
    events: list[Event] = []
    with silent_endpoint() as url:
        boundary = boundary_at(url, monkeypatch, events, connect_timeout=1.0, read_timeout=1.0)
        started = time.monotonic()
        with pytest.raises(UnreachableError):
            boundary.call("sts", "GetCallerIdentity")
        took = time.monotonic() - started
    assert 1.9 < took < 4.0, f"{took:.1f} s: one retry after a timeout, not {boundary.max_attempts - 1}"
    call = last_call(events)
    assert (call.outcome, call.reachable) == ("error", False)


def test_throttling_lowers_only_that_service_s_rate_in_that_account(
    fault_proxy: FaultProxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each service of each account has its own adaptive bucket; every attempt, retries included, waits on it."""
    events: list[Event] = []
    monkeypatch.setenv("AWS_ENDPOINT_URL", fault_proxy.url)
    session = boto3.session.Session(aws_access_key_id="testing", aws_secret_access_key="testing", region_name=REGION)
    boundary = Boundary(session, events.append, limiter=ServiceLimits({"iam": 50.0, "secretsmanager": 50.0}))
    rule = fault_proxy.fail_before("ListUsers", status=400, code="Throttling", times=2)
    boundary.call("iam", "ListUsers")  # botocore retries the throttled attempts; the third one passes
    boundary.call("secretsmanager", "ListSecrets")
    assert rule.fired == 2
    throttled = [e for e in events if isinstance(e, AwsCall) and e.outcome == "throttled"]
    assert [(e.service, e.operation) for e in throttled] == [("iam", "ListUsers")] * 2
    iam, secrets = boundary.limits.of("iam"), boundary.limits.of("secretsmanager")
    assert (iam.throttles, secrets.throttles) == (2, 0)
    assert iam.rate < 50.0 and secrets.rate == 50.0
    other = boundary.for_account(session, "210987654321")
    assert other.limits.of("iam").rate == 50.0  # another account: its own quota, its own bucket


def test_a_guarded_call_is_asked_again_when_its_request_leaves(aws: AwsEnv, monkeypatch: pytest.MonkeyPatch) -> None:
    """The fence is asked twice: by GuardedPort, then at botocore's ``before-send`` after the rate limiter's wait
    (a process paused between the two is refused at the wire, not acting late). Unguarded calls are not asked."""
    from rotator.aws import Aws  # noqa: PLC0415 - the port over this boundary
    from rotator.errors import MutationRefusedError  # noqa: PLC0415
    from rotator.guard import GuardedPort  # noqa: PLC0415

    aws.user("alice", keys=0)
    events: list[Event] = []
    port = Aws(boundary_at(aws.url, monkeypatch, events))
    asked: list[str] = []

    def lease_lost_after_the_first_check(operation: str) -> None:
        asked.append(operation)
        if len(asked) > 1:
            raise MutationRefusedError(f"{operation} refused: the lease was lost meanwhile")

    guarded = GuardedPort(port, lease_lost_after_the_first_check)
    with pytest.raises(MutationRefusedError, match="lease was lost"):
        guarded.create_access_key("alice")
    assert asked == ["iam:CreateAccessKey", "iam:CreateAccessKey"], asked
    assert aws.keys("alice") == {}, "refused at the wire: nothing was created"
    assert not [e for e in events if isinstance(e, AwsCall) and e.operation == "CreateAccessKey"]
    port.tag_user("alice", {"team": "x"})  # the unguarded port (the exempt records) is never asked
    assert len(asked) == 2
