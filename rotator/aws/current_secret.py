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
import botocore.session

from rotator import __version__
from rotator.aws.errors import translate, translate_failure, unreadable
from rotator.errors import (
    AwsError,
    NotFoundError,
    RotatorError,
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


def read_current_secret(secret_id: str, *, region: str | None = None, profile: str | None = None) -> str:
    """The ``SecretString`` of ``secret_id``'s ``AWSCURRENT`` version.

    Credentials come from botocore's standard chain (or ``profile``), the endpoint from it too
    (``AWS_ENDPOINT_URL``). ``region``: given, else the chain's (profile, ``AWS_DEFAULT_REGION``), else
    ``AWS_REGION`` (which botocore does not read). Raises :class:`~rotator.errors.UsageError` for a
    missing region or profile, :class:`~rotator.errors.AwsError` for everything AWS or the network said.
    """
    where = secret_id
    try:
        session = botocore.session.Session(profile=profile)
        region = region or session.get_config_variable("region") or os.environ.get("AWS_REGION") or None
        if region is None:
            raise UsageError("no AWS region: pass --region, or set AWS_REGION or a profile region")
        where = f"{secret_id} in {region}"
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
        error = translate(exc, "secretsmanager", "GetSecretValue")
        if isinstance(error, NotFoundError):  # AWS's message does not always say which of the two
            where += " (no secret by that name in this region, or it has no AWSCURRENT version)"
        raise _about(error, where) from None
    except (botocore.exceptions.ProfileNotFound, botocore.exceptions.ConfigParseError) as exc:
        raise UsageError("AWS configuration: " + " ".join(str(exc).split())[:300]) from None
    except (botocore.exceptions.NoCredentialsError, botocore.exceptions.PartialCredentialsError) as exc:
        raise UnreachableError(f"no AWS credentials to read the secret with ({type(exc).__name__})") from None
    except botocore.exceptions.CredentialRetrievalError as exc:
        # Another credential_process (the reader profile's) failed: its own stderr, which never held our secret.
        raise UnreachableError(" ".join(str(exc).split())[:500]) from None
    except RotatorError:
        raise  # our own (no region): already what the caller should see
    except Exception as exc:  # every transport and parser failure, through the one map (never its text)
        raise _about(translate_failure(exc, "secretsmanager", "GetSecretValue"), where) from None
    value = answer.get("SecretString")
    if isinstance(value, str):
        return value
    if "SecretBinary" in answer:
        raise RotatorError(f"{secret_id}: AWSCURRENT holds a binary value, not the rotator's JSON document")
    raise _about(unreadable("secretsmanager", "GetSecretValue"), where)  # botocore's {"message": <raw body>}


def _about(error: AwsError, where: str) -> AwsError:
    """``error`` (from the one map in :mod:`rotator.aws.errors`), naming the secret and region it was about."""
    return type(error)(
        f"{error} [{where}]",
        service=error.service,
        operation=error.operation,
        code=error.code,
        maybe_acted=error.maybe_acted,
    )
