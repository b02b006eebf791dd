"""``rotator credential-process``: a secret's ``AWSCURRENT`` as AWS ``credential_process`` output.

::

    credential_process = rotator credential-process --secret-id iam-keys/app

prints one line, ``{"Version": 1, "AccessKeyId": ..., "SecretAccessKey": ..., "Expiration": "...Z"}``, with
``Expiration`` ``--refresh`` from now: an SDK re-runs the command before then and so picks up a rotated key
by itself (botocore starts 15 minutes before ``Expiration``: see :data:`DEFAULT_REFRESH`).

SDKs run the command on every credential refresh, so it starts fast: this module imports the standard
library, :mod:`rotator.durations` and :mod:`rotator.errors` only, and the botocore reader
(:mod:`rotator.aws.current_secret`) once the arguments are valid; never the configuration (pydantic), logging
(structlog), metrics or the scheduler. It reads no configuration file. ``rotator.cli`` routes the command here
before it builds its own parser, and the ``rotator`` console script (:mod:`rotator.__main__`) before it even
imports ``rotator.cli``.

Errors: one line on stderr; exit 2 for usage (arguments, no region, an unknown profile, a recursive call),
1 for AWS and the secret (missing, access denied, no ``AWSCURRENT``, not the rotator's document). Never the
secret access key, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any, NoReturn, Protocol

from rotator.durations import format_duration, parse_duration
from rotator.errors import AwsError, ConfigError, RotatorError, UsageError

COMMAND = "credential-process"
#: How far ahead ``Expiration`` is set by default. Not shorter: botocore (the AWS CLI, boto3) refreshes
#: credentials from 15 minutes before their ``Expiration`` (and blocks on it from 10 minutes before), so with
#: 15m or less it would run this command for every API call. 30m makes it re-read about every 15 minutes.
DEFAULT_REFRESH = timedelta(minutes=30)
MIN_REFRESH = timedelta(minutes=1)
MAX_REFRESH = timedelta(hours=12)

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2

#: Secret ids this command is already reading, in the processes above this one. The command inherits the
#: SDK's environment: with ``AWS_PROFILE=app`` it would read the secret with profile ``app``, whose
#: credential_process is this command again - without this mark, processes without end.
#: (Not ``ROTATOR_*``: only configuration variables carry that prefix.)
CHAIN_ENV = "IAM_KEY_ROTATOR_CREDENTIAL_PROCESS_CHAIN"

#: Secrets Manager's SecretId: a name (ASCII letters, digits, ``/_+=.@-``) or an ARN (``:`` too).
_SECRET_ID = re.compile(r"[A-Za-z0-9/_+=.@:-]{1,2048}")
_SECRET_ARN_REGION = re.compile(r"arn:[a-z-]+:secretsmanager:([a-z0-9-]+):[0-9]{12}:secret:.")
_REGION = re.compile(r"[a-z]{2}(-[a-z0-9]+){1,4}")
_ACCESS_KEY_ID = re.compile(r"[A-Z0-9]{16,128}")
#: The command line's options that take a value and may stand before the command (``rotator --config X ...``).
_GLOBAL_OPTIONS = ("--config", "--log-format", "--log-level")


class SecretReader(Protocol):
    def __call__(self, secret_id: str, *, region: str | None = None, profile: str | None = None) -> str: ...


# -- arguments ---------------------------------------------------------------------------------------


def _shown(value: str) -> str:
    return repr(value if len(value) <= 70 else value[:67] + "...")


def _secret_id(value: str) -> str:
    if _SECRET_ID.fullmatch(value) is None:
        raise argparse.ArgumentTypeError(
            f"{_shown(value)} is not a secret name or ARN (1 to 2048 of A-Z a-z 0-9 /_+=.@- and : in an ARN)"
        )
    return value


def _refresh(value: str) -> timedelta:
    try:
        refresh = parse_duration(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    if not MIN_REFRESH <= refresh <= MAX_REFRESH:
        raise argparse.ArgumentTypeError(
            f"{_shown(value)} is out of range ({format_duration(MIN_REFRESH)} to {format_duration(MAX_REFRESH)})"
        )
    return refresh


def _region(value: str) -> str:
    if _REGION.fullmatch(value) is None:
        raise argparse.ArgumentTypeError(f"{_shown(value)} is not an AWS region (e.g. eu-west-1)")
    return value


def _profile(value: str) -> str:
    if not value.strip() or any(char in value for char in "\r\n[]"):
        raise argparse.ArgumentTypeError(f"{_shown(value)} is not a profile name")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The command's options, on its own parser and on ``rotator.cli``'s subcommand alike."""
    parser.add_argument(
        "--secret-id", required=True, type=_secret_id, metavar="NAME", help="the secret's name or ARN (iam-keys/app)"
    )
    parser.add_argument(
        "--refresh",
        type=_refresh,
        default=DEFAULT_REFRESH,
        metavar="DURATION",
        help=f"Expiration this far from now; the SDK re-runs the command before then "
        f"({format_duration(MIN_REFRESH)} to {format_duration(MAX_REFRESH)}, default "
        f"{format_duration(DEFAULT_REFRESH)}; botocore refreshes 15m before Expiration)",
    )
    parser.add_argument(
        "--region", type=_region, help="the secret's region (default: the ARN's, else AWS's chain: profile, AWS_REGION)"
    )
    parser.add_argument(
        "--profile",
        type=_profile,
        help="profile whose credentials read the secret (default: the standard chain; needed when the consumer "
        "selects its own profile with AWS_PROFILE, which this command inherits)",
    )


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # One line on stderr (exit 2), as everywhere in the CLI; ``--help`` still prints the full usage.
        self.exit(EXIT_USAGE, f"rotator: error: {message} (see rotator {COMMAND} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog=f"rotator {COMMAND}",
        description="Print a secret's AWSCURRENT as AWS credential_process JSON with an Expiration.",
    )
    add_arguments(parser)
    return parser


def command_args(argv: Sequence[str]) -> list[str] | None:
    """The arguments after ``credential-process`` when ``argv`` (without the program) runs that command.

    Global options before it (``--config PATH`` and the like) are skipped: the command reads no configuration.
    Anything else (``--help``, an abbreviated option) is left to ``rotator.cli``'s full parser, which
    dispatches here too.
    """
    words = list(argv)
    index = 0
    while index < len(words):
        if words[index] in _GLOBAL_OPTIONS:
            index += 2
        elif words[index].startswith(tuple(f"{option}=" for option in _GLOBAL_OPTIONS)):
            index += 1
        else:
            break
    if index < len(words) and words[index] == COMMAND:
        return words[index + 1 :]
    return None


# -- the document ------------------------------------------------------------------------------------


def credential_document(secret_string: str, *, secret_id: str, expires: datetime) -> dict[str, Any]:
    """``credential_process`` output for a rotator secret's ``SecretString``, expiring at ``expires``.

    Errors name the secret and the field, never a value of the document.
    """
    problem = f"{secret_id}: AWSCURRENT is not a rotator credential document"
    try:
        document = json.loads(secret_string)
    except ValueError:
        raise RotatorError(f"{problem} (not JSON)") from None
    if not isinstance(document, dict):
        raise RotatorError(f"{problem} (not a JSON object)")
    if document.get("Version", 1) != 1:
        version = document["Version"]
        shown = repr(version) if isinstance(version, int) else "an unsupported value"
        raise RotatorError(f"{problem} (Version is {shown}, not 1)")
    key_id = document.get("AccessKeyId")
    if not isinstance(key_id, str) or not key_id:
        raise RotatorError(f"{problem} (no AccessKeyId)")
    if _ACCESS_KEY_ID.fullmatch(key_id) is None:
        raise RotatorError(f"{problem} (AccessKeyId is not an access key id)")
    secret_key = document.get("SecretAccessKey")
    if not isinstance(secret_key, str) or not secret_key:
        raise RotatorError(f"{problem} (no SecretAccessKey)")
    return {
        "Version": 1,
        "AccessKeyId": key_id,
        "SecretAccessKey": secret_key,
        "Expiration": expires.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }


# -- running -----------------------------------------------------------------------------------------


def _utc_now() -> datetime:
    return datetime.now(UTC)


@contextmanager
def _chain(secret_id: str) -> Iterator[None]:
    """Refuse a recursive call (see :data:`CHAIN_ENV`); within, the processes started see this one's mark."""
    before = os.environ.get(CHAIN_ENV)
    chain = (before or "").split()
    if secret_id in chain:
        raise UsageError(
            f"credential-process for {secret_id} called itself: the credentials that read the secret come from "
            "this same command (a profile's credential_process, e.g. through AWS_PROFILE); pass --profile with "
            "a profile that gets its credentials elsewhere"
        )
    os.environ[CHAIN_ENV] = " ".join([*chain, secret_id])
    try:
        yield
    finally:
        if before is None:
            del os.environ[CHAIN_ENV]
        else:
            os.environ[CHAIN_ENV] = before


def _region_of(secret_id: str) -> str | None:
    match = _SECRET_ARN_REGION.match(secret_id)
    return match.group(1) if match else None


def run(
    args: argparse.Namespace,
    *,
    clock: Callable[[], datetime] = _utc_now,
    read: SecretReader | None = None,
    out: Any = None,
    err: Any = None,
) -> int:
    """Print the credential document for parsed ``args``; the exit code. ``read`` defaults to botocore's."""
    out = out or sys.stdout
    err = err or sys.stderr
    try:
        if read is None:
            from rotator.aws.current_secret import read_current_secret  # noqa: PLC0415 - after the arguments

            read = read_current_secret
        with _chain(args.secret_id):
            text = read(args.secret_id, region=args.region or _region_of(args.secret_id), profile=args.profile)
        document = credential_document(text, secret_id=args.secret_id, expires=clock() + args.refresh)
    except RotatorError as exc:
        code, prefix = _exit_for(exc)
        print(f"{prefix}{' '.join(str(exc).split())}", file=err)
        return code
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # one line and exit 1, never a traceback; its text may hold the secret
        print(f"rotator: error: {COMMAND} failed unexpectedly ({type(exc).__name__})", file=err)
        return EXIT_FAILED
    out.write(json.dumps(document) + "\n")
    out.flush()
    return EXIT_OK


def _exit_for(error: RotatorError) -> tuple[int, str]:
    """As ``rotator.cli.EXIT_CODES`` (not imported: it loads the configuration and logging)."""
    if isinstance(error, (ConfigError, UsageError)):
        return EXIT_USAGE, "rotator: error: "
    if isinstance(error, AwsError):
        return EXIT_FAILED, "rotator: AWS error: "
    return EXIT_FAILED, "rotator: error: "


def main(argv: Sequence[str] | None = None) -> int:
    """``rotator credential-process ARGS``: ``argv`` holds the arguments after the command's name."""
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    return run(args)


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
