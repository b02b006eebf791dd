"""The transport: every AWS call of one account, counted, rate-limited and translated (httpx's transports).

Only this module, ``session`` and ``current_secret`` (``rotator credential-process``'s one call) import
boto3/botocore; the adapters beside them (``iam``, ``secrets``, ``sts``, ``organizations``, ``dynamodb``) speak
to AWS only through a :class:`Boundary`. Every call goes through :meth:`Boundary.call` (or
:meth:`Boundary.pages`), which

* waits for the client-side rate limit (``aws.max_calls_per_second``),
* lets botocore retry throttling with its ``standard`` mode up to ``aws.max_attempts``,
* emits an :class:`~rotator.events.AwsCall` event per logical call (``ok``/``error``) and per
  throttled attempt (``throttled``) - ``rotator_aws_api_calls_total`` subscribes to these,
* translates every botocore error into the :mod:`rotator.errors` tree (``raise ... from exc``), through
  the one map of AWS error codes below.

A paginated listing either returns every page or raises: a throttled or partial listing is never
read as "no keys".
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Iterator
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
    NotFoundError,
    ThrottledError,
    UnreachableError,
)
from rotator.events import AwsCall, Event
from rotator.model import SecretText


class RateLimiter:
    """A token bucket shared by every thread of the process."""

    def __init__(self, per_second: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.interval = 1.0 / per_second
        self._clock = clock
        self._next = 0.0
        self._lock = threading.Lock()

    def wait(self) -> None:
        with self._lock:
            now = self._clock()
            start = max(now, self._next)
            self._next = start + self.interval
        delay = start - now
        if delay > 0:
            time.sleep(delay)


class Boundary:
    """Counts, rate-limits and translates every AWS call of one account."""

    def __init__(
        self,
        session: boto3.session.Session,
        emit: Callable[[Event], None],
        *,
        max_attempts: int = 8,
        limiter: RateLimiter | None = None,
        account: str | None = None,
        sleep: Callable[[float], None] = time.sleep,
        connect_timeout: float = 5.0,
        read_timeout: float = 15.0,
        endpoint_url: str | None = None,
    ) -> None:
        self.sleep = sleep
        #: An explicit endpoint (the sandbox's emulator); None: boto3's own resolution (``AWS_ENDPOINT_URL``).
        self.endpoint_url = endpoint_url
        #: Seconds per attempt (``aws.connect_timeout``/``aws.read_timeout``); see TRANSPORT_ATTEMPTS.
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.session = session
        self.emit = emit
        self.max_attempts = max_attempts
        self.limiter = limiter or RateLimiter(10.0)
        self.account = account
        self._clients: dict[str, Any] = {}
        self._lock = threading.Lock()

    def for_account(self, session: boto3.session.Session, account: str) -> Boundary:
        """A boundary for another account's session, sharing this one's events, rate limit and timeouts."""
        return Boundary(
            session,
            self.emit,
            max_attempts=self.max_attempts,
            limiter=self.limiter,
            account=account,
            connect_timeout=self.connect_timeout,
            read_timeout=self.read_timeout,
            endpoint_url=self.endpoint_url,
        )

    def client_config(self) -> botocore.config.Config:
        return botocore.config.Config(
            retries={"total_max_attempts": self.max_attempts, "mode": "standard"},
            connect_timeout=self.connect_timeout,
            read_timeout=self.read_timeout,
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
        if code in THROTTLING_CODES:
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
            self.limiter.wait()
            try:
                result: dict[str, Any] = method(**params)
            except botocore.exceptions.ClientError as exc:
                error: AwsError = translate(exc, service, operation)
                cause: BaseException | None = exc
            except Exception as exc:  # every transport or parser failure becomes ours, here
                error, cause = translate_failure(exc, service, operation), None
            else:
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
