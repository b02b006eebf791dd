"""The one exception tree of iam-key-rotator.

::

    RotatorError                  root; every error the rotator raises on purpose
    ├── ConfigError               bad configuration (exit 2)
    ├── UsageError                bad command-line use (exit 2)
    ├── AwsError                  an AWS call failed (translated at the boundary in ``aws``)
    │   ├── ThrottledError        still throttled after the retry budget
    │   ├── AccessDeniedError     the rotator's role may not do this
    │   ├── NotFoundError         the resource does not exist (user, key, secret)
    │   ├── LimitExceededError    IAM's 2-keys-per-user limit (or another quota)
    │   ├── ConflictError         the resource changed under us (concurrent writer)
    │   ├── UnreachableError      endpoint unreachable / no credentials
    │   └── KeyOutcomeUnknownError CreateAccessKey failed after AWS may have created the key
    ├── UserError                 a per-user problem that stops that user only
    │   └── NotManagedError       not a managed user (in this account)
    ├── ConcurrentlyDone          another run did this step first (reported as skipped, not failed)
    ├── DryRunRefusedError        a changing command while ``safety.dry_run`` is on (exit 1)
    └── ValidationTimeoutError    a new key never authenticated within ``aws.validation_timeout``

No botocore, urllib3 or socket exception escapes ``rotator.aws``: each is translated there into this
tree, and an answer that could not be parsed is raised ``from None`` (a cut-off response body can hold
a new secret access key, and a chained exception would print it in a traceback). An :class:`AwsError`
whose ``maybe_acted`` is true is ambiguous: AWS may have carried the call out (a 5xx, a dropped
connection or an unparsable answer after the request was sent). Exit codes are mapped in one place,
``rotator.cli``.
"""

from __future__ import annotations


class RotatorError(Exception):
    """Root of every error the rotator raises on purpose."""

    #: The access key the failed step is about when it is not the planned one: a rotation that failed
    #: after creating its new key names the new key (events and ``action.failed`` report it).
    key_id: str | None = None


class ConfigError(RotatorError):
    """The configuration file or environment is invalid. The message names the key."""


class UsageError(RotatorError):
    """The command line is invalid."""


class AwsError(RotatorError):
    """An AWS call failed. ``service``/``operation``/``code`` say which and why."""

    def __init__(
        self, message: str, *, service: str = "", operation: str = "", code: str = "", maybe_acted: bool = False
    ) -> None:
        super().__init__(message)
        self.service = service
        self.operation = operation
        self.code = code
        #: AWS may have carried the call out although it failed (a lost or garbled answer, a 5xx).
        self.maybe_acted = maybe_acted


class ThrottledError(AwsError):
    """Still throttled after the retry budget: never read as an empty result."""


class AccessDeniedError(AwsError):
    """The rotator's credentials are not allowed to make this call."""


class NotFoundError(AwsError):
    """The user, key or secret does not exist (any more)."""


class LimitExceededError(AwsError):
    """A quota refused the call, most often IAM's limit of two access keys per user."""


class ConflictError(AwsError):
    """The resource changed concurrently (e.g. a secret version already exists with other content)."""


class UnreachableError(AwsError):
    """The endpoint could not be reached or no credentials were found."""


class UserError(RotatorError):
    """A problem confined to one user (bad tag, foreign secret, invalid secret name)."""

    def __init__(self, user: str, message: str) -> None:
        super().__init__(f"{user}: {message}")
        self.user = user
        #: The problem without the user's name (a plan step's reason).
        self.reason = message


class NotManagedError(UserError):
    """The user does not exist in this account, or is outside the selection, or excluded."""


class ConcurrentlyDone(RotatorError):
    """Another run completed this very step first, or took the slot it needed; nothing is left to do."""


class KeyOutcomeUnknownError(AwsError):
    """CreateAccessKey failed in a way that does not say whether AWS created the key."""


class DryRunRefusedError(RotatorError):
    """A command that must change AWS was asked for while ``safety.dry_run`` is on."""


class ValidationTimeoutError(RotatorError):
    """A newly created key did not authenticate within the configured bound."""


class MutationRefusedError(RotatorError):
    """A mutating AWS call was refused before it went out: this process may not change anything now
    (it no longer holds the lease, or AWS's clock is unknown); see ``rotator.guard``."""
