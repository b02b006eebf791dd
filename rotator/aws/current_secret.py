"""One ``GetSecretValue`` of a secret's ``AWSCURRENT``, for ``rotator credential-process``.

SDKs start that command on every credential refresh, so this module is built for start-up time: botocore
only (``boto3`` would load s3transfer, about 35 ms), no :class:`~rotator.aws.transport.Boundary` (events,
rate limiter, the daemon's retry budget), a short timeout and few attempts. Its errors are translated here
into the :mod:`rotator.errors` tree, like the transport's, and like there no text of an unparsable answer
is kept: the body of a ``GetSecretValue`` answer is the secret.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, cast

import botocore.config
import botocore.exceptions
import botocore.parsers
import botocore.session

from rotator import __version__
from rotator.errors import (
    AccessDeniedError,
    AwsError,
    NotFoundError,
    RotatorError,
    ThrottledError,
    UnreachableError,
    UsageError,
)

if TYPE_CHECKING:
    from mypy_boto3_secretsmanager import SecretsManagerClient

#: Seconds to connect and to wait for the answer, per attempt; attempts in all (botocore's ``standard`` retry
#: mode: throttling, 5xx and connection errors). An SDK waits for its credential process without a limit, so
#: these bound the wait of the consumer: about 20 s at most.
CONNECT_TIMEOUT = 2.0
READ_TIMEOUT = 5.0
MAX_ATTEMPTS = 3

_ERRORS: dict[str, type[AwsError]] = {
    "ResourceNotFoundException": NotFoundError,
    "AccessDeniedException": AccessDeniedError,
    "AccessDenied": AccessDeniedError,
    "ThrottlingException": ThrottledError,
}


def read_current_secret(secret_id: str, *, region: str | None = None, profile: str | None = None) -> str:
    """The ``SecretString`` of ``secret_id``'s ``AWSCURRENT`` version.

    Credentials come from botocore's standard chain (or ``profile``), the endpoint from it too
    (``AWS_ENDPOINT_URL``). ``region``: given, else the chain's (profile, ``AWS_DEFAULT_REGION``), else
    ``AWS_REGION`` (which botocore does not read). Raises :class:`~rotator.errors.UsageError` for a
    missing region or profile, :class:`~rotator.errors.AwsError` for everything AWS or the network said.
    """
    where = f"secretsmanager:GetSecretValue {secret_id}"
    try:
        session = botocore.session.Session(profile=profile)
        region = region or session.get_config_variable("region") or os.environ.get("AWS_REGION") or None
        if region is None:
            raise UsageError("no AWS region: pass --region, or set AWS_REGION or a profile region")
        where = f"secretsmanager:GetSecretValue {secret_id} in {region}"
        client = cast(
            "SecretsManagerClient",
            session.create_client(
                "secretsmanager",
                region_name=region,
                config=botocore.config.Config(
                    connect_timeout=CONNECT_TIMEOUT,
                    read_timeout=READ_TIMEOUT,
                    retries={"mode": "standard", "total_max_attempts": MAX_ATTEMPTS},
                    user_agent_extra=f"iam-key-rotator/{__version__} credential-process",
                ),
            ),
        )
        answer = client.get_secret_value(SecretId=secret_id, VersionStage="AWSCURRENT")
    except botocore.exceptions.ClientError as exc:
        error = exc.response.get("Error", {})
        code = str(error.get("Code", "Unknown"))
        message = " ".join(str(error.get("Message", "")).split())[:300]
        text = f"{where}: {code}: {message}" if message else f"{where}: {code}"
        if code == "ResourceNotFoundException":  # AWS's message does not always say which of the two
            text += " (no secret by that name in this region, or it has no AWSCURRENT version)"
        error_class = _ERRORS.get(code, AwsError)
        raise error_class(text, service="secretsmanager", operation="GetSecretValue", code=code) from None
    except (botocore.exceptions.ProfileNotFound, botocore.exceptions.ConfigParseError) as exc:
        raise UsageError("AWS configuration: " + " ".join(str(exc).split())[:300]) from None
    except botocore.parsers.ResponseParserError:
        raise AwsError(f"{where}: unreadable answer") from None  # its text is the raw body: the secret
    except (botocore.exceptions.NoCredentialsError, botocore.exceptions.PartialCredentialsError) as exc:
        raise UnreachableError(f"no AWS credentials to read the secret with ({type(exc).__name__})") from None
    except botocore.exceptions.CredentialRetrievalError as exc:
        # Another credential_process (the reader profile's) failed: its own stderr, which never held our secret.
        raise UnreachableError(" ".join(str(exc).split())[:500]) from None
    except (botocore.exceptions.ConnectionError, botocore.exceptions.HTTPClientError) as exc:
        raise UnreachableError(f"{where}: endpoint unreachable or no answer ({type(exc).__name__})") from None
    except botocore.exceptions.BotoCoreError as exc:
        raise AwsError(f"{where}: {type(exc).__name__}") from None
    value = answer.get("SecretString")
    if isinstance(value, str):
        return value
    if "SecretBinary" in answer:
        raise RotatorError(f"{secret_id}: AWSCURRENT holds a binary value, not the rotator's JSON document")
    raise AwsError(f"{where}: unreadable answer")  # botocore's {"message": <raw body>} for a garbled 2xx
