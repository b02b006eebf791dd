"""The AWS boundary: the only module that imports boto3/botocore.

Every call goes through :meth:`Boundary.call` (or :meth:`Boundary.pages`), which

* waits for the client-side rate limit (``aws.max_calls_per_second``),
* lets botocore retry throttling with its ``standard`` mode up to ``aws.max_attempts``,
* emits an :class:`~rotator.events.AwsCall` event per logical call (``ok``/``error``) and per
  throttled attempt (``throttled``) - ``rotator_aws_api_calls_total`` subscribes to these,
* translates every botocore error into the :mod:`rotator.errors` tree (``raise ... from exc``).

A paginated listing either returns every page or raises: a throttled or partial listing is never
read as "no keys".
"""

from __future__ import annotations

import csv
import io
import json
import os
import random
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import botocore.config
import botocore.credentials
import botocore.exceptions
import botocore.loaders
import botocore.parsers
import botocore.session

from rotator import __version__
from rotator.errors import (
    AccessDeniedError,
    AwsError,
    ConflictError,
    LimitExceededError,
    NotFoundError,
    ThrottledError,
    UnreachableError,
)
from rotator.events import AwsCall, Event
from rotator.model import AccessKey, KeyStatus

THROTTLING_CODES = frozenset(
    {
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "RequestLimitExceeded",
        "TooManyRequestsException",
        "RequestThrottled",
        "RequestThrottledException",
        "SlowDown",
    }
)
_ERRORS: dict[str, type[AwsError]] = {
    "AccessDenied": AccessDeniedError,
    "AccessDeniedException": AccessDeniedError,
    "UnauthorizedOperation": AccessDeniedError,
    "NoSuchEntity": NotFoundError,
    "ResourceNotFoundException": NotFoundError,
    "LimitExceeded": LimitExceededError,
    "LimitExceededException": LimitExceededError,
    "ResourceExistsException": ConflictError,
    "EntityAlreadyExists": ConflictError,
    "ConcurrentModification": ConflictError,
    "ConcurrentModificationException": ConflictError,
    # DynamoDB: a conditional write lost (the lease is held by another replica).
    "ConditionalCheckFailedException": ConflictError,
}


class SecretText:
    """A secret string that will not print itself (I7): repr/str show a mask."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "SecretText('****')"

    __str__ = __repr__


@dataclass(frozen=True)
class NewKey:
    key_id: str
    secret_access_key: SecretText
    created: datetime


@dataclass(frozen=True)
class UserDetail:
    name: str
    path: str
    arn: str
    tags: Mapping[str, str]


@dataclass(frozen=True)
class ReportKey:
    """One access-key slot of a credential report row (the report has no key ids)."""

    active: bool
    created: datetime
    last_used: datetime | None


@dataclass(frozen=True)
class SecretSummary:
    name: str
    arn: str
    tags: Mapping[str, str]
    versions: Mapping[str, tuple[str, ...]]
    #: ``LastChangedDate``: the last change of any kind (value, stages, tags).
    last_changed: datetime | None = None
    #: ``DeletedDate`` is set: scheduled for deletion (restore or purge it before it is written again).
    deleted: bool = False


@dataclass(frozen=True)
class CredentialReport:
    """Access-key slots per user, and when IAM generated the report (it serves one up to 4 h old)."""

    generated: datetime | None
    users: Mapping[str, list[ReportKey]]


@dataclass(frozen=True)
class KeyCreation:
    """Who created an access key, from CloudTrail's ``CreateAccessKey`` event."""

    key_id: str
    principal_arn: str


@dataclass(frozen=True)
class OrgAccount:
    """A member account as AWS Organizations lists it."""

    account_id: str
    arn: str
    name: str
    state: str  # ACTIVE | SUSPENDED | PENDING_CLOSURE | CLOSED

    @property
    def partition(self) -> str:
        parts = self.arn.split(":")
        return parts[1] if len(parts) > 1 and parts[1] else "aws"


@dataclass(frozen=True)
class LeaseRecord:
    """The leader lease item of the coordination table."""

    name: str
    owner: str
    expires: float  # epoch seconds


_LOADER: list[botocore.loaders.Loader] = []
_LOADER_LOCK = threading.Lock()


def _shared_loader() -> botocore.loaders.Loader:
    """One botocore model loader (and its cache) for the sessions of every assumed account."""
    with _LOADER_LOCK:
        if not _LOADER:
            _LOADER.append(botocore.session.Session().get_component("data_loader"))  # honours AWS_DATA_PATH
        return _LOADER[0]


class _Given(botocore.credentials.CredentialProvider):
    """A credential provider that hands out credentials we already hold (refreshable ones)."""

    METHOD = "sts-assume-role"

    def __init__(self, credentials: botocore.credentials.Credentials) -> None:
        super().__init__()
        self._given = credentials

    def load(self) -> botocore.credentials.Credentials:
        return self._given


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
    ) -> None:
        self.sleep = sleep
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
                service, config=config or self.client_config(), region_name=region, **credentials
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
                error, cause = _translate_failure(exc, service, operation), None
            else:
                if not _garbled(result):
                    self.emit(AwsCall(service=service, operation=operation, outcome="ok", account=self.account))
                    return result
                error, cause = _unreadable(service, operation), None
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
#: with the default timeouts a call that gets no answer gives up within 2 x 15 s.
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


def translate(exc: botocore.exceptions.ClientError, service: str, operation: str) -> AwsError:
    error = exc.response.get("Error", {})
    code = str(error.get("Code", "Unknown"))
    message = str(error.get("Message", ""))[:300]
    text = f"{service}:{operation}: {code}: {message}" if message else f"{service}:{operation}: {code}"
    if code in THROTTLING_CODES:
        return ThrottledError(text, service=service, operation=operation, code=code)
    status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
    cls = _ERRORS.get(code, AwsError)
    # A 5xx may come after AWS acted (an internal failure answering a committed write).
    return cls(text, service=service, operation=operation, code=code, maybe_acted=status >= 500)


def _garbled(result: Mapping[str, Any]) -> bool:
    """A 2xx JSON answer botocore could not parse: it hands back ``{"message": <raw body>}`` instead of raising.

    (A cut-off Secrets Manager answer, say.) No successful answer of the services we call has a
    top-level ``message``; read as a result, it would be a silently empty listing or value.
    """
    return (
        isinstance(result.get("message"), str)
        and int(result.get("ResponseMetadata", {}).get("HTTPStatusCode", 200)) < 300
    )


def _unreadable(service: str, operation: str) -> AwsError:
    return AwsError(f"{service}:{operation}: unreadable answer", service=service, operation=operation, maybe_acted=True)


def need(result: Mapping[str, Any], key: str, service: str, operation: str) -> Any:
    """A field every complete answer has; its absence means the answer was cut off (AWS may have acted)."""
    try:
        return result[key]
    except (KeyError, TypeError):
        raise _unreadable(service, operation) from None


def _translate_failure(exc: Exception, service: str, operation: str) -> AwsError:
    """Anything but an AWS error answer, as our own error - naming its type only, never its text.

    The text of a parser error is the raw response body: for ``CreateAccessKey`` that is the new
    secret access key, cut off where the answer broke. So no message of these exceptions is kept.
    """
    where = f"{service}:{operation}"
    kind = type(exc).__name__
    if isinstance(exc, botocore.exceptions.NoCredentialsError):
        return UnreachableError(
            "no AWS credentials found (boto3's standard chain)", service=service, operation=operation
        )
    if isinstance(exc, botocore.exceptions.NoRegionError):
        return UnreachableError(
            "no AWS region configured (set AWS_REGION or a profile region)", service=service, operation=operation
        )
    if isinstance(exc, (botocore.exceptions.EndpointConnectionError, botocore.exceptions.ConnectTimeoutError)):
        # Never connected: the request was not sent, AWS did not act.
        return UnreachableError(f"{where}: endpoint unreachable ({kind})", service=service, operation=operation)
    if isinstance(exc, (botocore.exceptions.HTTPClientError, OSError)):
        return UnreachableError(
            f"{where}: connection lost before the answer ({kind})",
            service=service,
            operation=operation,
            maybe_acted=True,
        )
    if isinstance(exc, botocore.parsers.ResponseParserError):
        return AwsError(f"{where}: unreadable answer ({kind})", service=service, operation=operation, maybe_acted=True)
    return AwsError(f"{where}: {kind}", service=service, operation=operation, maybe_acted=True)


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


def _utc(value: datetime) -> datetime:
    return value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)


def _parse_report_time(raw: str) -> datetime | None:
    if raw in ("", "N/A", "no_information", "not_supported"):
        return None
    return _utc(datetime.fromisoformat(raw.replace("Z", "+00:00")))


def _report_slots(row: Mapping[str, str]) -> list[ReportKey]:
    """The access-key slots of one credential report row."""
    slots: list[ReportKey] = []
    for n in (1, 2):
        created = _parse_report_time(row.get(f"access_key_{n}_last_rotated", "N/A"))
        if created is None:
            continue
        slots.append(
            ReportKey(
                active=row.get(f"access_key_{n}_active") == "true",
                created=created,
                last_used=_parse_report_time(row.get(f"access_key_{n}_last_used_date", "N/A")),
            )
        )
    return slots


class Aws:
    """Typed IAM / Secrets Manager / STS operations of one account, over a :class:`Boundary`."""

    def __init__(
        self,
        boundary: Boundary,
        *,
        sleep: Callable[[float], None] = time.sleep,
        report_timeout: float = 120.0,
    ) -> None:
        self.boundary = boundary
        self.sleep = sleep
        self.report_timeout = report_timeout
        self._own_principal: str | None = None

    # -- account -----------------------------------------------------------------------------

    def account_id(self) -> str:
        return str(need(self.boundary.call("sts", "GetCallerIdentity"), "Account", "sts", "GetCallerIdentity"))

    def assume(self, role_arn: str, session_name: str = "iam-key-rotator") -> Aws:
        """An :class:`Aws` for another account, through ``sts:AssumeRole``.

        The first ``AssumeRole`` happens now (a failure raises here, per account); later ones renew the
        temporary credentials before they expire (a daemon outlives their hour), through this boundary.
        """

        def fetch() -> dict[str, str]:
            creds = self.boundary.call("sts", "AssumeRole", RoleArn=role_arn, RoleSessionName=session_name)[
                "Credentials"
            ]
            return {
                "access_key": creds["AccessKeyId"],
                "secret_key": creds["SecretAccessKey"],
                "token": creds["SessionToken"],
                "expiry_time": _utc(creds["Expiration"]).isoformat(),
            }

        credentials = botocore.credentials.RefreshableCredentials.create_from_metadata(
            metadata=fetch(), refresh_using=fetch, method="sts-assume-role"
        )
        core = botocore.session.Session()
        core.register_component("data_loader", _shared_loader())  # parse the API models once per process
        core.register_component("credential_provider", botocore.credentials.CredentialResolver([_Given(credentials)]))
        session = boto3.session.Session(botocore_session=core, region_name=self.boundary.session.region_name)
        account = role_arn.split(":")[4]
        boundary = Boundary(
            session,
            self.boundary.emit,
            max_attempts=self.boundary.max_attempts,
            limiter=self.boundary.limiter,
            account=account,
            connect_timeout=self.boundary.connect_timeout,
            read_timeout=self.boundary.read_timeout,
        )
        return Aws(boundary, sleep=self.sleep, report_timeout=self.report_timeout)

    # -- AWS Organizations (account discovery) ------------------------------------------------------

    def org_accounts(self) -> list[OrgAccount]:
        """Every account of the organization (``organizations:ListAccounts``), all pages or an error.

        An organization always lists at least its management account, so an empty answer is an
        error too (never read as "no accounts to manage").
        """
        accounts = self._org_account_pages("ListAccounts")
        if not accounts:
            raise AwsError(
                "organizations:ListAccounts: no accounts listed (is the caller in an organization?)",
                service="organizations",
                operation="ListAccounts",
            )
        return accounts

    def org_accounts_for_parent(self, parent_id: str) -> list[OrgAccount]:
        """Accounts directly under a root or OU (``organizations:ListAccountsForParent``)."""
        return self._org_account_pages("ListAccountsForParent", ParentId=parent_id)

    def org_child_ous(self, parent_id: str) -> list[str]:
        """Ids of the OUs directly under a root or OU (``organizations:ListChildren``)."""
        ids: list[str] = []
        for page in self.boundary.pages(
            "organizations",
            "ListChildren",
            "NextToken",
            "NextToken",
            ParentId=parent_id,
            ChildType="ORGANIZATIONAL_UNIT",
        ):
            ids.extend(str(child["Id"]) for child in page.get("Children", []))
        return ids

    def org_accounts_under(self, parent_ids: Sequence[str]) -> list[OrgAccount]:
        """Accounts under the given roots/OUs and every OU nested below them, each once."""
        seen_parents: set[str] = set()
        found: dict[str, OrgAccount] = {}
        todo = list(parent_ids)
        while todo:
            parent = todo.pop(0)
            if parent in seen_parents:
                continue
            seen_parents.add(parent)
            for account in self.org_accounts_for_parent(parent):
                found.setdefault(account.account_id, account)
            todo.extend(self.org_child_ous(parent))
        return list(found.values())

    def _org_account_pages(self, operation: str, **params: Any) -> list[OrgAccount]:
        out: list[OrgAccount] = []
        for page in self.boundary.pages("organizations", operation, "NextToken", "NextToken", **params):
            for item in page.get("Accounts", []):
                out.append(
                    OrgAccount(
                        account_id=str(item["Id"]),
                        arn=str(item.get("Arn", "")),
                        name=str(item.get("Name", "")),
                        # ``State`` replaces the deprecated ``Status`` (both ACTIVE for live accounts).
                        state=str(item.get("State") or item.get("Status") or "UNKNOWN"),
                    )
                )
        return out

    # -- DynamoDB (leader lease) -----------------------------------------------------------------

    def get_lease(self, table: str, name: str) -> LeaseRecord | None:
        """The lease item, read consistently (``dynamodb:GetItem``); None when nobody holds it."""
        item = self.boundary.call(
            "dynamodb", "GetItem", TableName=table, Key={"name": {"S": name}}, ConsistentRead=True
        ).get("Item")
        if not item:
            return None
        try:
            return LeaseRecord(
                name=str(item["name"]["S"]),
                owner=str(item.get("owner", {}).get("S", "")),
                expires=float(item.get("expires", {}).get("N", "0")),
            )
        except (KeyError, TypeError, ValueError):
            return LeaseRecord(name=name, owner="", expires=0.0)  # a malformed item counts as expired

    def put_lease(self, table: str, name: str, owner: str, expires: float, now: float) -> None:
        """Take or renew the lease (``dynamodb:PutItem``) if it is free, ours, or expired at ``now``.

        Raises :class:`~rotator.errors.ConflictError` when another owner holds an unexpired lease.
        """
        self.boundary.call(
            "dynamodb",
            "PutItem",
            TableName=table,
            Item={"name": {"S": name}, "owner": {"S": owner}, "expires": {"N": _epoch_number(expires)}},
            ConditionExpression="attribute_not_exists(#name) OR #owner = :me OR #expires < :now",
            ExpressionAttributeNames={"#name": "name", "#owner": "owner", "#expires": "expires"},
            ExpressionAttributeValues={":me": {"S": owner}, ":now": {"N": _epoch_number(now)}},
        )

    def delete_lease(self, table: str, name: str, owner: str) -> None:
        """Give the lease up (``dynamodb:DeleteItem``) if ``owner`` still holds it.

        Raises :class:`~rotator.errors.ConflictError` when someone else holds it (nothing to give up).
        """
        self.boundary.call(
            "dynamodb",
            "DeleteItem",
            TableName=table,
            Key={"name": {"S": name}},
            ConditionExpression="#owner = :me",
            ExpressionAttributeNames={"#owner": "owner"},
            ExpressionAttributeValues={":me": {"S": owner}},
        )

    # -- IAM reads -----------------------------------------------------------------------------

    def user_details(self) -> list[UserDetail]:
        """Every IAM user with path and tags, in a few pages (GetAccountAuthorizationDetails)."""
        users: list[UserDetail] = []
        for page in self.boundary.pages(
            "iam", "GetAccountAuthorizationDetails", "Marker", "Marker", Filter=["User"], MaxItems=1000
        ):
            for item in page.get("UserDetailList", []):
                users.append(
                    UserDetail(
                        name=item["UserName"],
                        path=item.get("Path", "/"),
                        arn=item.get("Arn", ""),
                        tags={tag["Key"]: tag["Value"] for tag in item.get("Tags", [])},
                    )
                )
        return users

    def user(self, user: str) -> UserDetail:
        item = need(self.boundary.call("iam", "GetUser", UserName=user), "User", "iam", "GetUser")
        return UserDetail(
            name=item["UserName"],
            path=item.get("Path", "/"),
            arn=item.get("Arn", ""),
            tags={tag["Key"]: tag["Value"] for tag in item.get("Tags", [])},
        )

    def credential_report(self) -> CredentialReport:
        """Access-key slots of every user from one credential report (no key ids in it).

        IAM regenerates the report only when the one it holds is more than 4 hours old, so the content
        may be that old: ``generated`` says how old, and the inventory trusts a user's row only where
        nothing newer contradicts it.
        https://docs.aws.amazon.com/IAM/latest/UserGuide/id_credentials_getting-report.html
        """
        deadline = time.monotonic() + self.report_timeout
        delay = 0.5
        while True:
            state = self.boundary.call("iam", "GenerateCredentialReport").get("State")
            if state == "COMPLETE":
                break
            if time.monotonic() > deadline:
                raise AwsError(
                    "iam:GenerateCredentialReport: report not ready in time",
                    service="iam",
                    operation="GenerateCredentialReport",
                )
            self.sleep(delay)
            delay = min(delay * 2, 8.0)
        answer = self.boundary.call("iam", "GetCredentialReport")
        content = need(answer, "Content", "iam", "GetCredentialReport")
        generated = answer.get("GeneratedTime")
        text = content.decode() if isinstance(content, bytes) else str(content)
        report: dict[str, list[ReportKey]] = {}
        for row in csv.DictReader(io.StringIO(text)):
            try:
                report[row["user"]] = _report_slots(row)
            except (ValueError, KeyError, TypeError):
                # A row that does not parse (an emulator that leaves commas unquoted, say) is
                # dropped: its user falls back to ListAccessKeys, never to "no keys".
                continue
        return CredentialReport(_utc(generated) if isinstance(generated, datetime) else None, report)

    def access_keys(self, user: str) -> list[AccessKey]:
        keys: list[AccessKey] = []
        for page in self.boundary.pages("iam", "ListAccessKeys", "Marker", "Marker", UserName=user):
            for item in page.get("AccessKeyMetadata", []):
                keys.append(
                    AccessKey(
                        key_id=item["AccessKeyId"],
                        status=KeyStatus(item["Status"]),
                        created=_utc(item["CreateDate"]),
                    )
                )
        return keys

    def key_last_used(self, key_id: str) -> datetime | None:
        info = self.boundary.call("iam", "GetAccessKeyLastUsed", AccessKeyId=key_id).get("AccessKeyLastUsed", {})
        used = info.get("LastUsedDate")
        return _utc(used) if used else None

    # -- IAM writes ----------------------------------------------------------------------------

    def create_access_key(self, user: str) -> NewKey:
        """A new key; never retried after AWS may have acted (a retry would create a second key)."""
        answer = self.boundary.call("iam", "CreateAccessKey", once=True, UserName=user)
        item = need(answer, "AccessKey", "iam", "CreateAccessKey")
        return NewKey(
            key_id=item["AccessKeyId"],
            secret_access_key=SecretText(item["SecretAccessKey"]),
            created=_utc(item["CreateDate"]),
        )

    def set_key_status(self, user: str, key_id: str, status: KeyStatus) -> None:
        self.boundary.call("iam", "UpdateAccessKey", UserName=user, AccessKeyId=key_id, Status=status.value)

    def delete_access_key(self, user: str, key_id: str) -> None:
        self.boundary.call("iam", "DeleteAccessKey", UserName=user, AccessKeyId=key_id)

    def tag_user(self, user: str, tags: Mapping[str, str]) -> None:
        self.boundary.call("iam", "TagUser", UserName=user, Tags=[{"Key": k, "Value": v} for k, v in tags.items()])

    def untag_user(self, user: str, keys: list[str]) -> None:
        self.boundary.call("iam", "UntagUser", UserName=user, TagKeys=keys)

    # -- Secrets Manager -----------------------------------------------------------------------

    def secrets(self, name_prefix: str) -> list[SecretSummary]:
        # Secrets scheduled for deletion too: a plan must see what the sweep's DescribeSecret will.
        params: dict[str, Any] = {"MaxResults": 100, "IncludePlannedDeletion": True}
        if name_prefix:
            params["Filters"] = [{"Key": "name", "Values": [name_prefix]}]
        out: list[SecretSummary] = []
        for page in self.boundary.pages("secretsmanager", "ListSecrets", "NextToken", "NextToken", **params):
            for item in page.get("SecretList", []):
                if name_prefix and not item["Name"].startswith(name_prefix):
                    continue  # the name filter also matches words inside names
                out.append(_summary(item, item.get("SecretVersionsToStages", {})))
        return out

    def describe_secret(self, name: str) -> SecretSummary | None:
        try:
            item = self.boundary.call("secretsmanager", "DescribeSecret", SecretId=name, missing_ok=True)
        except NotFoundError:
            return None
        return _summary(item, item.get("VersionIdsToStages", {}))

    def secret_value(self, name: str, *, stage: str | None = None, version_id: str | None = None) -> SecretText:
        params: dict[str, Any] = {"SecretId": name}
        if version_id:
            params["VersionId"] = version_id
        else:
            params["VersionStage"] = stage or "AWSCURRENT"
        item = self.boundary.call("secretsmanager", "GetSecretValue", **params)
        return SecretText(str(item.get("SecretString", "")))

    def create_secret(
        self,
        name: str,
        value: SecretText,
        token: str,
        *,
        tags: Mapping[str, str],
        kms_key_id: str | None,
        replica_regions: list[str],
        description: str,
    ) -> str:
        params: dict[str, Any] = {
            "Name": name,
            "SecretString": value.reveal(),
            "ClientRequestToken": token,
            "Description": description,
            "Tags": [{"Key": k, "Value": v} for k, v in tags.items()],
        }
        if kms_key_id:
            params["KmsKeyId"] = kms_key_id
        if replica_regions:
            params["AddReplicaRegions"] = [{"Region": region} for region in replica_regions]
        return str(self.boundary.call("secretsmanager", "CreateSecret", once=True, **params).get("ARN", ""))

    def put_secret_value(self, name: str, value: SecretText, token: str, stages: list[str]) -> None:
        self.boundary.call(
            "secretsmanager",
            "PutSecretValue",
            once=True,
            SecretId=name,
            SecretString=value.reveal(),
            ClientRequestToken=token,
            VersionStages=stages,
        )

    def move_stage(
        self, name: str, stage: str, *, to_version: str | None = None, from_version: str | None = None
    ) -> bool:
        """Put ``stage`` on ``to_version`` and/or take it off ``from_version``.

        Idempotent: True when this call moved the label; False when another writer had already
        left it where it should be (Secrets Manager then rejects the move as naming a version that
        no longer holds the label). Anything else raises.
        """
        params: dict[str, Any] = {"SecretId": name, "VersionStage": stage}
        if to_version:
            params["MoveToVersionId"] = to_version
        if from_version:
            params["RemoveFromVersionId"] = from_version
        try:
            self.boundary.call("secretsmanager", "UpdateSecretVersionStage", **params)
        except AwsError as exc:
            if exc.code != "InvalidParameterException":
                raise
            summary = self.describe_secret(name)
            versions = summary.versions if summary is not None else {}
            placed = to_version is None or stage in versions.get(to_version, ())
            removed = from_version is None or from_version == to_version or stage not in versions.get(from_version, ())
            if summary is None or not (placed and removed):
                raise
            return False
        return True

    def tag_secret(self, name: str, tags: Mapping[str, str]) -> None:
        self.boundary.call(
            "secretsmanager",
            "TagResource",
            SecretId=name,
            Tags=[{"Key": k, "Value": v} for k, v in tags.items()],
        )

    # -- who created a key (CloudTrail event history) --------------------------------------

    def own_principal(self) -> str:
        """The principal this process acts as (``sts:GetCallerIdentity``), cached; see :func:`same_principal`."""
        if self._own_principal is None:
            self._own_principal = str(
                need(self.boundary.call("sts", "GetCallerIdentity"), "Arn", "sts", "GetCallerIdentity")
            )
        return self._own_principal

    def key_creation(self, key_id: str, created: datetime) -> KeyCreation | None:
        """The ``CreateAccessKey`` event that created ``key_id``, or None when CloudTrail has none (yet).

        CloudTrail's event history keeps 90 days of management events in every account without a
        trail, delivers an event typically within 5 minutes (not guaranteed), and records IAM's events
        in the partition's home region. Lookups are limited to 2 per second per account and region.
        https://docs.aws.amazon.com/awscloudtrail/latest/userguide/view-cloudtrail-events.html
        """
        start = created - timedelta(hours=1)
        end = created + timedelta(hours=1)
        for page in self.boundary.pages(
            "cloudtrail",
            "LookupEvents",
            "NextToken",
            "NextToken",
            LookupAttributes=[{"AttributeKey": "ResourceName", "AttributeValue": key_id}],
            StartTime=start,
            EndTime=end,
        ):
            for event in page.get("Events", []):
                if event.get("EventName") != "CreateAccessKey":
                    continue
                try:
                    detail = json.loads(event.get("CloudTrailEvent") or "{}")
                    created_id = detail["responseElements"]["accessKey"]["accessKeyId"]
                    principal = detail["userIdentity"]["arn"]
                except (ValueError, KeyError, TypeError):
                    continue
                if created_id == key_id and isinstance(principal, str):
                    return KeyCreation(key_id, principal)
        return None

    # -- validation of a new key ---------------------------------------------------------------

    def caller_arn_with(self, key: NewKey) -> str:
        """``sts:GetCallerIdentity`` signed with ``key`` itself: proves the secret key works."""
        client = self.boundary.client_signed_by(key.key_id, key.secret_access_key, "sts")
        return str(
            need(self.boundary.call("sts", "GetCallerIdentity", client=client), "Arn", "sts", "GetCallerIdentity")
        )


def _summary(item: Mapping[str, Any], versions: Mapping[str, list[str]]) -> SecretSummary:
    changed = item.get("LastChangedDate")
    return SecretSummary(
        name=item["Name"],
        arn=item.get("ARN", ""),
        tags={tag["Key"]: tag["Value"] for tag in item.get("Tags", []) or []},
        versions={version: tuple(stages) for version, stages in versions.items() if stages},
        last_changed=_utc(changed) if isinstance(changed, datetime) else None,
        deleted=bool(item.get("DeletedDate")),
    )


def same_principal(a: str, b: str) -> bool:
    """Whether two ARNs are the same principal: an assumed role is the same whatever its session name.

    Each replica (and each renewal) of the rotator's role has its own session name, so
    ``arn:aws:sts::1:assumed-role/Rotator/i-0abc`` and ``.../Rotator/i-0def`` are one principal.
    """

    def identity(arn: str) -> str:
        parts = arn.split(":", 5)
        if len(parts) == 6 and parts[5].startswith("assumed-role/"):
            role = parts[5].split("/")
            return ":".join([*parts[:2], "sts", "", parts[4], "/".join(role[:2])])
        return arn

    return identity(a) == identity(b)


def _epoch_number(value: float) -> str:
    """A DynamoDB number for epoch seconds, millisecond precision."""
    return f"{value:.3f}"


def session_from_environment() -> boto3.session.Session:
    """boto3's standard chain: env, profiles, instance/container roles; AWS_ENDPOINT_URL too.

    botocore reads ``AWS_DEFAULT_REGION`` but not ``AWS_REGION`` (which the other SDKs and the
    container runtimes set), so ``AWS_REGION`` fills the gap when nothing else named a region.
    """
    session = boto3.session.Session()
    if session.region_name is None and os.environ.get("AWS_REGION"):
        session = boto3.session.Session(region_name=os.environ["AWS_REGION"])
    return session


def now_utc() -> datetime:
    """The real clock, for the composition root only (the core takes ``now`` as an argument)."""
    return datetime.now(UTC)
