"""The transport: every AWS call of one account, counted, rate-limited and translated (httpx's transports).

Only this module, ``session`` and ``current_secret`` (``rotator credential-process``'s one call) import
boto3/botocore; the adapters beside them (``iam``, ``secrets``, ``sts``, ``organizations``, ``dynamodb``) speak
to AWS only through a :class:`Boundary`. Every call goes through :meth:`Boundary.call` (or
:meth:`Boundary.pages`), which

* waits, on every attempt, for its service's adaptive rate limit in this account (``aws.rates``: IAM,
  Secrets Manager, STS, Organizations, DynamoDB each in their own bucket; lowered on throttling, raised
  back when it stops - :class:`RateLimiter`),
* lets botocore retry throttling with its ``standard`` mode up to ``aws.max_attempts``,
* emits an :class:`~rotator.events.AwsCall` event per logical call (``ok``/``error``) and per
  throttled attempt (``throttled``) - ``rotator_aws_api_calls_total`` subscribes to these,
* translates every botocore error into the :mod:`rotator.errors` tree (``raise ... from exc``), through
  the one map of AWS error codes below.

A paginated listing either returns every page or raises: a throttled or partial listing is never
read as "no keys".
"""

from __future__ import annotations

import math
import random
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime
from typing import Any

import boto3
import botocore.config
import botocore.exceptions
import botocore.parsers

from rotator import __version__
from rotator.aws.errors import THROTTLING_CODES, garbled, translate, translate_failure, unreadable
from rotator.errors import (
    AwsError,
    MutationRefusedError,
    NotFoundError,
    ThrottledError,
    UnreachableError,
)
from rotator.events import AwsCall, Event
from rotator.guard import at_send
from rotator.model import SecretText

#: Seconds without a throttled answer before a lowered rate starts to climb back.
RECOVER_AFTER = 2.0
#: How fast a lowered rate climbs back: this fraction of its ceiling per second, until it is back at it.
RECOVERY_PER_SECOND = 0.1
#: What one throttled answer leaves of the rate (at most one cut per second: a burst of throttled answers
#: to calls sent together is one signal, not many).
CUT = 0.5
#: The lowest a rate goes, as a fraction of its ceiling.
FLOOR = 0.05


class RateLimiter:
    """An adaptive token bucket: one service's calls of one account, shared by every thread of the process.

    Starts at ``per_second`` (its ceiling); each throttled answer (at most one per second) halves the rate,
    down to :data:`FLOOR` of the ceiling; once :data:`RECOVER_AFTER` seconds passed without one, the rate
    climbs back by :data:`RECOVERY_PER_SECOND` of the ceiling per second (additive increase, multiplicative
    decrease). docs/performance.md says why this and not botocore's adaptive retry mode.
    """

    def __init__(
        self,
        per_second: float,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.ceiling = float(per_second)
        self._rate = self.ceiling
        self._clock = clock
        self._sleep = sleep
        self._next = 0.0
        self._last_cut = -math.inf
        self._last_throttle = -math.inf
        self._last_raise = -math.inf
        self._lock = threading.Lock()
        #: Throttled answers seen, and how often they lowered the rate (for tests and the benchmark).
        self.throttles = 0
        self.cuts = 0

    @property
    def interval(self) -> float:
        return 1.0 / self._rate

    @property
    def rate(self) -> float:
        """Calls per second allowed now."""
        with self._lock:
            return self._rate

    def wait(self) -> None:
        """Block until this call may be sent (one call per ``1/rate`` seconds, first come first served)."""
        with self._lock:
            now = self._clock()
            start = max(now, self._next)
            self._next = start + 1.0 / self._rate
        delay = start - now
        if delay > 0:
            self._sleep(delay)

    def throttled(self) -> None:
        """AWS answered a call with throttling: lower the rate (at most once a second)."""
        with self._lock:
            now = self._clock()
            self.throttles += 1
            self._last_throttle = now
            if now - self._last_cut >= 1.0:
                self._last_cut = now
                self._rate = max(self.ceiling * FLOOR, self._rate * CUT)
                self.cuts += 1

    def answered(self) -> None:
        """AWS answered a call without throttling: after a quiet spell, climb back towards the ceiling."""
        with self._lock:
            if self._rate >= self.ceiling:
                return
            now = self._clock()
            quiet_since = self._last_throttle + RECOVER_AFTER
            if now < quiet_since:
                return
            since = max(self._last_raise, quiet_since)
            self._rate = min(self.ceiling, self._rate + self.ceiling * RECOVERY_PER_SECOND * (now - since))
            self._last_raise = now


#: Ceilings in calls per second per account when no settings name them (``aws.rates`` defaults; a unit test
#: keeps the two equal). AWS publishes most of these quotas; IAM's is unpublished, so 20 is a guess that
#: the adaptive limiter corrects downwards at the first throttled answer:
#: https://docs.aws.amazon.com/secretsmanager/latest/userguide/reference_limits.html (50/s for writes),
#: https://docs.aws.amazon.com/organizations/latest/userguide/orgs_reference_limits.html#throttling-limits,
#: https://docs.aws.amazon.com/awscloudtrail/latest/userguide/WhatIsCloudTrail-Limits.html (LookupEvents 2/s).
DEFAULT_RATES: dict[str, float] = {
    "iam": 20.0,
    "secretsmanager": 40.0,
    "sts": 50.0,
    "organizations": 5.0,
    "dynamodb": 20.0,
    "cloudtrail": 2.0,
}
#: The ceiling of a service none of the above names (SNS, KMS, ...).
OTHER_SERVICES_RATE = 5.0


class ServiceLimits:
    """One :class:`RateLimiter` per AWS service for one account: IAM's quota is not Secrets Manager's, and
    a DynamoDB lease renewal never queues behind a sweep's IAM calls.

    ``rates`` maps botocore service names (``iam``, ``secretsmanager``, ``sts``, ``organizations``,
    ``dynamodb``, ...) to ceilings; ``other`` is the ceiling of any other service (SNS, CloudTrail's own
    entry aside). ``shared``: one limiter for every service (tests that want no limit at all).
    """

    def __init__(
        self,
        rates: Mapping[str, float] | None = None,
        *,
        other: float = OTHER_SERVICES_RATE,
        shared: RateLimiter | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.rates = dict(rates or {})
        self.other = other
        self._shared = shared
        self._clock = clock
        self._sleep = sleep
        self._limiters: dict[str, RateLimiter] = {}
        self._lock = threading.Lock()

    def of(self, service: str) -> RateLimiter:
        """The limiter of ``service`` (made on first use)."""
        if self._shared is not None:
            return self._shared
        with self._lock:
            limiter = self._limiters.get(service)
            if limiter is None:
                rate = self.rates.get(service, self.other)
                limiter = self._limiters[service] = RateLimiter(rate, self._clock, self._sleep)
            return limiter

    def fresh(self) -> ServiceLimits:
        """The same ceilings in new buckets: another account has its own quotas."""
        if self._shared is not None:
            return self
        return ServiceLimits(self.rates, other=self.other, clock=self._clock, sleep=self._sleep)

    def snapshot(self) -> dict[str, RateLimiter]:
        with self._lock:
            return dict(self._limiters)


class Boundary:
    """Counts, rate-limits and translates every AWS call of one account."""

    def __init__(
        self,
        session: boto3.session.Session,
        emit: Callable[[Event], None],
        *,
        max_attempts: int = 8,
        limiter: RateLimiter | ServiceLimits | None = None,
        account: str | None = None,
        sleep: Callable[[float], None] = time.sleep,
        connect_timeout: float = 5.0,
        read_timeout: float = 15.0,
        endpoint_url: str | None = None,
        max_pool_connections: int = 10,
        clock_sample: Callable[[object, float, float], None] | None = None,
    ) -> None:
        self.sleep = sleep
        #: HTTP connections per client: as many as the threads that call through it at once.
        self.max_pool_connections = max_pool_connections
        #: An explicit endpoint (the sandbox's emulator); None: boto3's own resolution (``AWS_ENDPOINT_URL``).
        self.endpoint_url = endpoint_url
        #: Seconds per attempt (``aws.connect_timeout``/``aws.read_timeout``); see TRANSPORT_ATTEMPTS.
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.session = session
        self.emit = emit
        self.max_attempts = max_attempts
        #: One adaptive limiter per service of this account (a bare RateLimiter: one for every service).
        self.limits = (
            limiter
            if isinstance(limiter, ServiceLimits)
            else ServiceLimits(shared=limiter)
            if limiter is not None
            else ServiceLimits(DEFAULT_RATES)
        )
        self.account = account
        #: Gets each answer's ``Date`` header with the monotonic times of sending and answer
        #: (:meth:`rotator.awsclock.AwsClock.observe`): AWS's clock, for every time decision.
        self.clock_sample = clock_sample
        self._clients: dict[str, Any] = {}
        self._lock = threading.Lock()

    def for_account(self, session: boto3.session.Session, account: str) -> Boundary:
        """A boundary for another account's session: this one's events and timeouts, and the same rate
        ceilings in buckets of its own (each account has its own AWS quotas)."""
        return Boundary(
            session,
            self.emit,
            max_attempts=self.max_attempts,
            limiter=self.limits.fresh(),
            account=account,
            connect_timeout=self.connect_timeout,
            read_timeout=self.read_timeout,
            endpoint_url=self.endpoint_url,
            max_pool_connections=self.max_pool_connections,
            clock_sample=self.clock_sample,
        )

    def client_config(self) -> botocore.config.Config:
        return botocore.config.Config(
            retries={"total_max_attempts": self.max_attempts, "mode": "standard"},
            connect_timeout=self.connect_timeout,
            read_timeout=self.read_timeout,
            max_pool_connections=self.max_pool_connections,
            user_agent_extra=f"iam-key-rotator/{__version__}",
        )

    def client(self, service: str, *, once: bool = False) -> Any:
        """The shared client of ``service``; ``once``: one that botocore never retries (see :meth:`call`)."""
        name = f"{service}#once" if once else service
        with self._lock:
            if name not in self._clients:
                config = self.client_config()
                if once:
                    config = config.merge(botocore.config.Config(retries={"total_max_attempts": 1, "mode": "standard"}))
                region = _iam_events_region(self.session.region_name) if service == "cloudtrail" else None
                self._clients[name] = self._make_client(self.session, service, config=config, region=region)
            return self._clients[name]

    def client_signed_by(self, key_id: str, secret: SecretText, service: str) -> Any:
        """A one-off client that signs with the given key (validating a new key), same config and hooks.

        Built from the existing session: a new boto3 Session per key would load every service model
        again (tens of milliseconds each, on every rotation). boto3 sessions are not thread-safe.
        """
        with self._lock:
            return self._make_client(
                self.session, service, aws_access_key_id=key_id, aws_secret_access_key=secret.reveal()
            )

    def _make_client(
        self,
        session: boto3.session.Session,
        service: str,
        *,
        config: botocore.config.Config | None = None,
        region: str | None = None,
        **credentials: str,
    ) -> Any:
        try:
            client = session.client(  # type: ignore[call-overload]
                service,
                config=config or self.client_config(),
                region_name=region,
                endpoint_url=self.endpoint_url,
                **credentials,
            )
        except botocore.exceptions.NoRegionError as exc:
            raise UnreachableError(
                "no AWS region configured (set AWS_REGION or a profile region)", service=service
            ) from exc
        # Every attempt (botocore's own retries too) waits for its service's limiter, as botocore's
        # adaptive mode does on the same event; a handler of ``before-send`` must return None.
        service_name = client.meta.service_model.service_name
        limiter = self.limits.of(service_name)

        def before_send(event_name: str = "", **_: Any) -> None:
            limiter.wait()
            # A guarded (mutating) call asks its guard again now that its request leaves (rotator.guard).
            at_send(f"{service_name}:{event_name.rsplit('.', 1)[-1]}")

        client.meta.events.register("before-send", before_send)
        client.meta.events.register(f"needs-retry.{client.meta.service_model.endpoint_prefix}", self._on_retry)
        # Ahead of botocore's own retry handler (same event name, registered first).
        retry_event = f"needs-retry.{client.meta.service_model.service_id.hyphenize()}"
        client.meta.events.register_first(retry_event, _limit_transport_retries)
        return client

    def _on_retry(self, response: Any = None, operation: Any = None, **_: Any) -> None:
        """botocore hook, once per attempt: count attempts that were throttled."""
        if not response or operation is None:
            return
        parsed = response[1] if isinstance(response, tuple) and len(response) > 1 else None
        code = (parsed or {}).get("Error", {}).get("Code") if isinstance(parsed, dict) else None
        limiter = self.limits.of(operation.service_model.service_name)
        if code not in THROTTLING_CODES:
            limiter.answered()
        else:
            limiter.throttled()
            self.emit(
                AwsCall(
                    service=operation.service_model.service_name,
                    operation=operation.name,
                    outcome="throttled",
                    account=self.account,
                )
            )

    def call(
        self,
        service: str,
        operation: str,
        client: Any = None,
        *,
        missing_ok: bool = False,
        once: bool = False,
        **params: Any,
    ) -> dict[str, Any]:
        """One AWS call, counted and translated. ``operation`` is the API name (``ListAccessKeys``).

        ``missing_ok``: "not found" is an answer the caller expects (DescribeSecret before a
        bootstrap), counted as ``ok`` so dashboards do not show it as an error; it still raises
        :class:`NotFoundError` for the caller to handle.

        ``once``: the call must not be repeated blindly after AWS may have acted on it
        (``CreateAccessKey`` would create a second key; ``CreateSecret`` would answer "exists";
        moto moves ``AWSCURRENT`` on a repeated ``PutSecretValue``). botocore does not retry it;
        only throttling - an answer that says AWS did *not* act - is retried here, with backoff. Any
        other failure raises with ``maybe_acted`` telling the caller whether to look before retrying.
        """
        method = getattr(client or self.client(service, once=once), _snake(operation))
        attempts = self.max_attempts if once else 1
        for attempt in range(1, attempts + 1):
            sent = time.monotonic()
            try:
                result: dict[str, Any] = method(**params)
            except botocore.exceptions.ClientError as exc:
                self._date_seen(exc.response, sent)  # an error answer is AWS's answer too
                error: AwsError = translate(exc, service, operation)
                cause: BaseException | None = exc
            except MutationRefusedError:
                raise  # refused at send (rotator.guard.at_send): nothing went out
            except Exception as exc:  # every transport or parser failure becomes ours, here
                error, cause = translate_failure(exc, service, operation), None
            else:
                self._date_seen(result, sent)
                if not garbled(result):
                    self.emit(AwsCall(service=service, operation=operation, outcome="ok", account=self.account))
                    return result
                error, cause = unreadable(service, operation), None
            if once and isinstance(error, ThrottledError) and attempt < attempts:
                self.emit(AwsCall(service=service, operation=operation, outcome="throttled", account=self.account))
                self.sleep(min(20.0, 0.5 * 2**attempt) * random.uniform(0.5, 1.0))  # noqa: S311 - jitter
                continue
            outcome = "ok" if missing_ok and isinstance(error, NotFoundError) else "error"
            self.emit(
                AwsCall(
                    service=service,
                    operation=operation,
                    outcome=outcome,
                    account=self.account,
                    reachable=_answered(error, cause),
                )
            )
            if cause is None:
                # Raised outside the ``except`` block and ``from None``: no traceback ever shows the
                # original exception, whose text may hold a (cut-off) response body with a secret key.
                raise error from None
            raise error from cause
        raise AssertionError("unreachable")  # pragma: no cover - the loop returns or raises

    def _date_seen(self, response: Any, sent: float) -> None:
        """Hand an answer's ``Date`` header to :attr:`clock_sample` (never fails the call)."""
        if self.clock_sample is None or not isinstance(response, dict):
            return
        headers = response.get("ResponseMetadata", {}).get("HTTPHeaders", {})
        if isinstance(headers, dict):
            self.clock_sample(headers.get("date"), sent, time.monotonic())

    def pages(
        self, service: str, operation: str, token_in: str, token_out: str, **params: Any
    ) -> Iterator[dict[str, Any]]:
        """Every page of a listing; any failing page raises (never a silently short listing)."""
        token: str | None = None
        while True:
            page_params = dict(params)
            if token:
                page_params[token_in] = token
            page = self.call(service, operation, **page_params)
            yield page
            token = page.get(token_out)
            truncated = page.get("IsTruncated")
            del page  # not held while the next one is read and parsed (a page of 1,000 users is megabytes)
            if not token or truncated is False:
                return


#: Tries of one call that got no answer (connection refused or lost, connect or read timeout). botocore
#: would make ``aws.max_attempts`` of them, each waiting up to a whole timeout: against an endpoint that
#: accepts and never answers, 8 read timeouts for one call. One retry still covers a dropped connection;


TRANSPORT_ATTEMPTS = 2


def _limit_transport_retries(attempts: int = 1, caught_exception: BaseException | None = None, **_: Any) -> None:
    """botocore ``needs-retry`` hook, run before its retry handler: no third try of a call without an answer.

    Raising the caught exception ends the call with it, just as botocore does when out of attempts.
    """
    if attempts >= TRANSPORT_ATTEMPTS and isinstance(
        caught_exception, botocore.exceptions.ConnectionError | botocore.exceptions.HTTPClientError
    ):
        raise caught_exception


def _answered(error: AwsError, cause: BaseException | None) -> bool:
    """Whether AWS answered a failed call (``AwsCall.reachable``): an error answer below 5xx shows it is up."""
    if isinstance(error, UnreachableError):
        return False
    if isinstance(cause, botocore.exceptions.ClientError):
        return int(cause.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0) < 500
    return True


def _iam_events_region(region: str | None) -> str:
    """Where CloudTrail records IAM's events: IAM is global, its events land in the partition's home region.

    https://docs.aws.amazon.com/awscloudtrail/latest/userguide/cloudtrail-concepts.html#cloudtrail-concepts-global-service-events
    """
    if region and region.startswith("cn-"):
        return "cn-north-1"
    if region and region.startswith("us-gov-"):
        return "us-gov-west-1"
    return "us-east-1"


def _snake(operation: str) -> str:
    out = []
    for index, char in enumerate(operation):
        if char.isupper() and index:
            out.append("_")
        out.append(char.lower())
    return "".join(out)


def as_utc(value: datetime) -> datetime:
    """An AWS timestamp as an aware UTC datetime (botocore's are aware; an emulator's may not be)."""
    return value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)
