"""The one map from what botocore raises to the :mod:`rotator.errors` tree (botocore only, no boto3).

Used by the transport under every adapter and by ``rotator credential-process``, which must start without
boto3: both translate with these functions, so an error means the same wherever it is met.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import botocore.exceptions
import botocore.parsers

from rotator.errors import (
    AccessDeniedError,
    AwsError,
    ConflictError,
    LimitExceededError,
    NotFoundError,
    ThrottledError,
    UnreachableError,
)

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


def garbled(result: Mapping[str, Any]) -> bool:
    """A 2xx JSON answer botocore could not parse: it hands back ``{"message": <raw body>}`` instead of raising.

    (A cut-off Secrets Manager answer, say.) No successful answer of the services we call has a
    top-level ``message``; read as a result, it would be a silently empty listing or value.
    """
    return (
        isinstance(result.get("message"), str)
        and int(result.get("ResponseMetadata", {}).get("HTTPStatusCode", 200)) < 300
    )


def unreadable(service: str, operation: str) -> AwsError:
    return AwsError(f"{service}:{operation}: unreadable answer", service=service, operation=operation, maybe_acted=True)


def need(result: Mapping[str, Any], key: str, service: str, operation: str) -> Any:
    """A field every complete answer has; its absence means the answer was cut off (AWS may have acted)."""
    try:
        return result[key]
    except (KeyError, TypeError):
        raise unreadable(service, operation) from None


def translate_failure(exc: Exception, service: str, operation: str) -> AwsError:
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
