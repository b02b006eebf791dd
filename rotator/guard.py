"""The guard consulted before every mutating AWS call (docs/design.md, "Time and leadership").

A :data:`Guard` is a callable that raises :class:`~rotator.errors.MutationRefusedError` when this process
must not change anything now: the daemon's says "the lease is no longer ours by monotonic time since the
last renewal" (fencing) and "AWS's clock is not known well enough" (:class:`rotator.awsclock.AwsClock`).
The executor wraps its account port in a :class:`GuardedPort`, so no mutating call of a sweep can go out
without the guard being asked first - not even one added later: every mutating port method is listed
here, and a unit test proves each is guarded.

A refused call behaves like a crash at that step boundary (nothing sent): the protocol is crash-safe at
every boundary, and the next leader completes or cleans what was left. One call is exempt:
:attr:`GuardedPort.unguarded` writes the ownership record of a key this very run has just created
(``rotator:own:<key id>``), which changes no credential and is what lets the next leader clean that key
(docs/design.md argues it).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING

from rotator.model import KeyStatus, NewKey, SecretText
from rotator.ports import AccountPort, Ports

#: Raises MutationRefusedError to stop the call it is asked about (the operation's API name).
Guard = Callable[[str], None]

#: The port methods that change AWS, each with its API name.
MUTATING = {
    "create_access_key": "iam:CreateAccessKey",
    "set_key_status": "iam:UpdateAccessKey",
    "delete_access_key": "iam:DeleteAccessKey",
    "tag_user": "iam:TagUser",
    "untag_user": "iam:UntagUser",
    "create_secret": "secretsmanager:CreateSecret",
    "put_secret_value": "secretsmanager:PutSecretValue",
    "move_stage": "secretsmanager:UpdateSecretVersionStage",
    "tag_secret": "secretsmanager:TagResource",
}


def allow_all(_operation: str) -> None:
    """The guard of callers that bring none (tests, the simulation): every call may go out."""


def all_of(*guards: Guard) -> Guard:
    """A guard that asks each of ``guards`` in turn."""

    def guard(operation: str) -> None:
        for each in guards:
            each(operation)

    return guard


#: The guard of the mutating call this thread is making, asked again when its request goes on the wire.
_sending = threading.local()


def at_send(operation: str) -> None:
    """Ask the guard of the guarded call in progress on this thread again, right before a request is sent.

    The transport calls it on botocore's ``before-send``, after the request waited for its rate limit: a
    process paused (or kept waiting by the limiter) between :class:`GuardedPort`'s check and the wire is
    refused here once its lease is gone, instead of acting late - a bootstrap's ``CreateSecret`` landing
    after another leader cleaned up its key (found by tests/e2e/test_replicas.py). What remains is the
    moment between this check and the socket write. Calls outside a guarded call (reads, the exempt
    records) are not asked.
    """
    guard: Guard | None = getattr(_sending, "guard", None)
    if guard is not None:
        guard(operation)


class GuardedPort(Ports):
    """An account port whose mutating calls each ask ``guard`` first (and again at send); reads go straight through."""

    def __init__(self, port: AccountPort, guard: Guard) -> None:
        super().__init__(port, port, port)
        #: The port without the guard: only for the ownership record of a key this run created.
        self.unguarded = port
        self.guard = guard

    @contextlib.contextmanager
    def _asked(self, operation: str) -> Iterator[None]:
        """Ask the guard now, and again (:func:`at_send`) for each request the call sends."""
        self.guard(operation)
        outer = getattr(_sending, "guard", None)
        _sending.guard = self.guard
        try:
            yield
        finally:
            _sending.guard = outer

    def create_access_key(self, user: str) -> NewKey:
        with self._asked(MUTATING["create_access_key"]):
            return super().create_access_key(user)

    def set_key_status(self, user: str, key_id: str, status: KeyStatus) -> None:
        with self._asked(MUTATING["set_key_status"]):
            super().set_key_status(user, key_id, status)

    def delete_access_key(self, user: str, key_id: str) -> None:
        with self._asked(MUTATING["delete_access_key"]):
            super().delete_access_key(user, key_id)

    def tag_user(self, user: str, tags: Mapping[str, str]) -> None:
        with self._asked(MUTATING["tag_user"]):
            super().tag_user(user, tags)

    def untag_user(self, user: str, keys: list[str]) -> None:
        with self._asked(MUTATING["untag_user"]):
            super().untag_user(user, keys)

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
        with self._asked(MUTATING["create_secret"]):
            return super().create_secret(
                name,
                value,
                token,
                tags=tags,
                kms_key_id=kms_key_id,
                replica_regions=replica_regions,
                description=description,
            )

    def put_secret_value(self, name: str, value: SecretText, token: str, stages: list[str]) -> None:
        with self._asked(MUTATING["put_secret_value"]):
            super().put_secret_value(name, value, token, stages)

    def move_stage(
        self, name: str, stage: str, *, to_version: str | None = None, from_version: str | None = None
    ) -> bool:
        with self._asked(MUTATING["move_stage"]):
            return super().move_stage(name, stage, to_version=to_version, from_version=from_version)

    def tag_secret(self, name: str, tags: Mapping[str, str]) -> None:
        with self._asked(MUTATING["tag_secret"]):
            super().tag_secret(name, tags)


if TYPE_CHECKING:

    def _is_an_account(port: GuardedPort) -> AccountPort:
        return port
