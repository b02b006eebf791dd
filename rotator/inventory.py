"""Gathers the state of every managed user with as few AWS calls as correctness allows.

A steady-state account is read in a handful of calls whatever its size:

* ``GetAccountAuthorizationDetails`` - every user with path and tags, 1000 a page;
* ``GenerateCredentialReport`` + ``GetCredentialReport`` - every user's key slots (status, creation,
  last use) in one CSV, but *without key ids*;
* ``ListSecrets`` - every secret with tags and its version-to-stage map, 100 a page.

The secrets listing is independent of the other two, so with ``aws.concurrency`` above 1 it runs beside
them (each a chain of calls under its own service's rate): a steady-state inventory takes about as long as
the longest chain, not the sum of all three.

Key ids come from the secret's tags (``rotator:current-key-id`` and ``rotator:previous-key-id`` with
their creation dates, written at publication). A user's report slots are trusted only when they
match those tags exactly; otherwise (a rotation since the report, a foreign key, a crash) the user
falls back to ``ListAccessKeys``. Secret version ids are ``uuid5(key id)``, so which key each
version holds follows from the stage map without reading secret values.

Whatever the inventory reports, the executor re-reads a user's state fresh (:meth:`refresh`)
before it changes anything.
"""

from __future__ import annotations

import contextvars
import fnmatch
import json
import re
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import replace
from datetime import UTC, datetime
from typing import TypeVar

from rotator.config import Settings
from rotator.errors import AwsError, NotFoundError
from rotator.model import (
    AWSCURRENT,
    AWSPENDING,
    AWSPREVIOUS,
    TAG_CURRENT_CREATED,
    TAG_CURRENT_KEY,
    TAG_DELETED_KEY,
    TAG_DISABLED_AT,
    TAG_DISABLED_KEY,
    TAG_MANAGED,
    TAG_PREVIOUS_CREATED,
    TAG_PREVIOUS_KEY,
    TAG_PUBLISHED_AT,
    TAG_QUARANTINE_AT,
    TAG_USER,
    USER_TAG_OWN_PREFIX,
    USER_TAG_ROTATION_KEYS,
    USER_TAG_ROTATION_STARTED,
    AccessKey,
    GuardMode,
    KeyStatus,
    QuarantineMode,
    SecretState,
    UserState,
    quarantine_policy_names,
    version_id_for,
)
from rotator.policy import ownership_candidates
from rotator.ports import AccountPort
from rotator.records import KeyLastUsed, ReportKey, SecretSummary, UserDetail, same_principal
from rotator.user_policy import is_excluded_by_tag

_SECRET_NAME = re.compile(r"^[A-Za-z0-9/_+=.@-]{1,512}$")
_LABELS = (AWSCURRENT, AWSPREVIOUS, AWSPENDING)
_IN_FLIGHT_USER_TAGS = (USER_TAG_ROTATION_STARTED, USER_TAG_ROTATION_KEYS)


def is_managed(detail: UserDetail, settings: Settings) -> bool:
    selection = settings.selection
    if not detail.path.startswith(selection.path_prefix):
        return False
    if selection.tag is not None and detail.tags.get(selection.tag.key) != selection.tag.value:
        return False
    if any(fnmatch.fnmatchcase(detail.name, pattern) for pattern in selection.exclude):
        return False
    return not is_excluded_by_tag(detail.tags)


def secret_name(template: str, user: str, account: str, path: str) -> tuple[str, str | None]:
    """The secret name for ``user``, or an explanation why none can be formed."""
    name = template.format(user=user, account=account, path=path.strip("/"))
    name = re.sub(r"/{2,}", "/", name)
    if not _SECRET_NAME.match(name):
        return name, (
            f"secret name {name!r} is not valid for Secrets Manager "
            "(allowed: letters, digits and /_+=.@-, at most 512 characters)"
        )
    return name, None


def secret_prefix(template: str) -> str:
    """The static part of the name template before its first placeholder (ListSecrets filter)."""
    return template.split("{", 1)[0]


def _seconds(value: datetime) -> datetime:
    return value.replace(microsecond=0)


def _parse_time(raw: str | None) -> datetime | None:
    if not raw:
        return None
    try:
        return datetime.fromisoformat(raw)
    except ValueError:
        return None


def changed_since(generated: datetime | None, detail: UserDetail, summary: SecretSummary | None) -> bool:
    """Whether fresher bulk data says the credential report may be stale for this user.

    IAM serves a report up to 4 hours old. Its row is trusted for a user only when nothing read in the
    same sweep is newer: an intent mark or ownership record (a rotation may have created a key since), the
    secret's last change (stages, values and tags: a rotation, a disable or a delete recorded there),
    and the rotator's own timestamp tags. A change made outside the rotator and invisible here (an
    operator disabling the current key) shows once IAM regenerates the report: within 4 hours plus one
    sweep interval (docs/reliability.md).
    """
    if generated is None:
        return True
    if any(tag in _IN_FLIGHT_USER_TAGS or tag.startswith(USER_TAG_OWN_PREFIX) for tag in detail.tags):
        return True
    if summary is None:
        return False
    if summary.tags.get(USER_TAG_ROTATION_STARTED):
        return True  # a rotation's intent mark (on the secret): a key may have been created since
    stamps = [summary.last_changed]
    stamps += [_parse_time(summary.tags.get(tag)) for tag in (TAG_PUBLISHED_AT, TAG_DISABLED_AT)]
    return any(stamp is not None and _aware(stamp) >= generated for stamp in stamps)


_R = TypeVar("_R")


class _Alongside:
    """Reads started beside the calling thread's own, on threads of their own; off, each runs inline
    when its result is first asked for (and a read never asked for never runs: one worker, as a
    deterministic simulation needs, and no listing for an account without managed users).

    Leaving the block waits for every started read, so a failure in one never leaves another running.
    """

    def __init__(self, *, enabled: bool) -> None:
        self._pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="inventory") if enabled else None

    def __enter__(self) -> _Alongside:
        return self

    def __exit__(self, *_exc: object) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)

    def start(self, read: Callable[[], _R]) -> Callable[[], _R]:
        """``read`` begun now (or deferred, when off); the returned callable gives its result or raises."""
        if self._pool is None:
            return read
        future: Future[_R] = self._pool.submit(contextvars.copy_context().run, read)
        return future.result


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _with_slot_use(key: AccessKey, slot: ReportKey | None) -> AccessKey:
    """``key`` with the last use (when, service, region) its credential report slot records."""
    if slot is None:
        return replace(key, last_used=None, last_used_service=None, last_used_region=None)
    return replace(
        key,
        last_used=slot.last_used,
        last_used_service=slot.last_used_service,
        last_used_region=slot.last_used_region,
    )


class Inventory:
    def __init__(self, aws: AccountPort, settings: Settings, account: str) -> None:
        self.aws = aws
        self.settings = settings
        self.account = account
        #: When IAM generated the credential report the last :meth:`gather` read (None: none read).
        self.report_generated: datetime | None = None
        #: Users the last :meth:`gather` saw quarantined: :meth:`refresh` confirms their policies fresh.
        self._quarantined: set[str] = set()

    # -- the whole account -------------------------------------------------------------------

    def gather(self) -> list[UserState]:
        template = self.settings.secrets.name_template
        with _Alongside(enabled=self.settings.aws.concurrency > 1) as alongside:
            # The secrets listing (100 a page: the longest chain) runs beside the users and the credential
            # report, which run one after the other: a report held while the users' page is parsed would
            # raise the peak (10,000 users: 116 MiB with all three at once, 111 MiB so, 107 MiB in series).
            secrets_read = alongside.start(lambda: self.aws.secrets(secret_prefix(template)))
            details = [d for d in self.aws.user_details() if is_managed(d, self.settings)]
            if not details:
                self.report_generated = None
                return []
            report = self.aws.credential_report()
            secrets = {s.name: s for s in secrets_read()}
        self.report_generated = report.generated
        states: list[UserState] = []
        self._quarantined = {d.name for d in details if quarantine_policy_names(d.attached_policies)}
        for detail in sorted(details, key=lambda d: d.name):
            name, error = secret_name(template, detail.name, self.account, detail.path)
            summary = secrets.get(name)
            slots = report.users.get(detail.name)
            keys = None
            if not changed_since(report.generated, detail, summary):
                keys = self._keys_from_report(slots, summary)
            if keys is None:
                keys = self._with_last_use(self.aws.access_keys(detail.name), slots)
            secret = self._secret_state(name, summary, keys)
            states.append(self._proven(self._state(detail, keys, secret, error)))
        return states

    # -- one user, fresh, for the executor --------------------------------------------------

    def refresh(self, user: str) -> UserState | None:
        """Re-read one user right before acting; ``None`` when it is gone or no longer managed."""
        try:
            detail = self.aws.user(user)
        except NotFoundError:
            return None
        if not is_managed(detail, self.settings):
            return None
        name, error = secret_name(self.settings.secrets.name_template, user, self.account, detail.path)
        try:
            keys = self.aws.access_keys(user)
        except NotFoundError:
            return None
        summary = None if error else self.aws.describe_secret(name)
        current_version = None
        if summary is not None:
            current_version = next((v for v, stages in summary.versions.items() if AWSCURRENT in stages), None)
        fresh: list[AccessKey] = []
        guard_asks = self.settings.policy.disable_guard is not GuardMode.IGNORE
        for key in keys:
            use = KeyLastUsed()
            # The guard's question (who still uses it?) is only ever asked of a previous key, which needs a
            # secret whose AWSCURRENT holds its successor: without a secret (a bootstrap) nobody asks it,
            # and with ``disable_guard: ignore`` nobody at all.
            if guard_asks and key.active and summary is not None and version_id_for(key.key_id) != current_version:
                use = self.aws.key_last_used(key.key_id)
            fresh.append(replace(key, last_used=use.at, last_used_service=use.service, last_used_region=use.region))
        secret = self._secret_state(name, summary, fresh)
        state = self._state(detail, tuple(fresh), secret, error)
        if self._quarantine_matters(user, summary):
            state = replace(state, attached_policies=self.aws.attached_policies(user))
        return self._proven(state)

    def _quarantine_matters(self, user: str, summary: SecretSummary | None) -> bool:
        """Whether :meth:`refresh` must read the user's policies (GetUser does not list them).

        The gather nominates (it read every user's policies in bulk), the refresh confirms: a user the
        gather saw quarantined, or whose secret records a response, is asked again (one call, rare users).
        A quarantine attached between the gather and the refresh is answered by the next sweep.
        """
        if self.settings.response.quarantine is QuarantineMode.IGNORE:
            return False
        return user in self._quarantined or (summary is not None and bool(summary.tags.get(TAG_QUARANTINE_AT)))

    # -- ownership that only CloudTrail can settle ----------------------------------------------

    def _proven(self, state: UserState) -> UserState:
        """Ask CloudTrail who created each ownership candidate (a key our records cannot explain).

        Rare by design (a crash or a lost answer between CreateAccessKey and its record), so the
        lookups - limited by AWS to 2 per second - cost nothing in a healthy account. A lookup that
        fails or finds nothing leaves the key unproven: reported, never touched.
        """
        if not self.settings.safety.cloudtrail_lookup:
            return state
        candidates = ownership_candidates(state, self.settings.aws.validation_timeout)
        if not candidates:
            return state
        creators = dict(state.creators)
        for key in candidates:
            try:
                creation = self.aws.key_creation(key.key_id, key.created)
                if creation is not None:
                    creators[key.key_id] = same_principal(creation.principal_arn, self.aws.own_principal())
            except AwsError:
                continue  # unproven until a later sweep can ask
        return replace(state, creators=creators)

    # -- helpers -------------------------------------------------------------------------------

    def _state(
        self,
        detail: UserDetail,
        keys: tuple[AccessKey, ...] | list[AccessKey],
        secret: SecretState,
        error: str | None,
    ) -> UserState:
        return UserState(
            account=self.account,
            user=detail.name,
            path=detail.path,
            arn=detail.arn,
            tags=dict(detail.tags),
            attached_policies=tuple(detail.attached_policies),
            keys=tuple(keys),
            secret=secret,
            secret_name_error=error,
        )

    def _keys_from_report(  # noqa: PLR0911 - each early return names one reason to ask IAM instead
        self, slots: list[ReportKey] | None, summary: SecretSummary | None
    ) -> tuple[AccessKey, ...] | None:
        """Key ids for the report's slots from the secret's tags, or None when they do not agree."""
        if slots is None or summary is None or summary.tags.get(TAG_MANAGED) != "true":
            return None
        expected: dict[datetime, str] = {}
        for key_tag, created_tag in (
            (TAG_CURRENT_KEY, TAG_CURRENT_CREATED),
            (TAG_PREVIOUS_KEY, TAG_PREVIOUS_CREATED),
        ):
            key_id = summary.tags.get(key_tag)
            created = _parse_time(summary.tags.get(created_tag))
            if key_id and created:
                if _seconds(created) in expected:
                    return None  # two keys in one second: ambiguous, ask IAM
                expected[_seconds(created)] = key_id
        current_id = summary.tags.get(TAG_CURRENT_KEY)
        current_version = next((v for v, s in summary.versions.items() if AWSCURRENT in s), None)
        if not current_id or current_version != version_id_for(current_id):
            return None  # tags lag behind the stage map (interrupted publication)
        if any(AWSPENDING in stages for stages in summary.versions.values()):
            return None  # a rotation is in flight: ask IAM
        keys: list[AccessKey] = []
        created_by_id = {v: k for k, v in expected.items()}
        for slot in slots:
            key_id = expected.get(_seconds(slot.created))
            if key_id is None:
                return None  # a key the tags do not know: foreign, stray or orphan
            created = _parse_time(
                summary.tags.get(TAG_CURRENT_CREATED if key_id == current_id else TAG_PREVIOUS_CREATED)
            )
            if slot.active and key_id == summary.tags.get(TAG_DISABLED_KEY):
                return None  # the report predates our own disable (IAM serves one up to 4h old)
            if key_id == summary.tags.get(TAG_DELETED_KEY):
                return None  # the report predates our own delete
            status = KeyStatus.ACTIVE if slot.active else KeyStatus.INACTIVE
            keys.append(_with_slot_use(AccessKey(key_id, status, created or created_by_id[key_id]), slot))
        if current_id not in {k.key_id for k in keys} or len({k.key_id for k in keys}) != len(keys):
            return None
        return tuple(keys)

    def _with_last_use(self, keys: list[AccessKey], slots: list[ReportKey] | None) -> tuple[AccessKey, ...]:
        by_second = {_seconds(slot.created): slot for slot in slots or []}
        return tuple(_with_slot_use(key, by_second.get(_seconds(key.created))) for key in keys)

    def _secret_state(
        self, name: str, summary: SecretSummary | None, keys: tuple[AccessKey, ...] | list[AccessKey]
    ) -> SecretState:
        if summary is None:
            return SecretState(name=name)
        managed = summary.tags.get(TAG_MANAGED) == "true"
        candidates = {k.key_id for k in keys}
        candidates |= {summary.tags[t] for t in (TAG_CURRENT_KEY, TAG_PREVIOUS_KEY) if t in summary.tags}
        by_version = {version_id_for(key_id): key_id for key_id in candidates}
        version_keys: dict[str, str | None] = {}
        version_users: dict[str, str] = {}
        for version, stages in summary.versions.items():
            key_id = by_version.get(version)
            if key_id is None and managed and any(label in stages for label in _LABELS):
                key_id, user = self._key_in_version(name, version)
                if user is not None:
                    version_users[version] = user
            version_keys[version] = key_id
        current = next((v for v, stages in summary.versions.items() if AWSCURRENT in stages), None)
        if (
            managed
            and current
            and TAG_USER not in summary.tags
            and version_keys.get(current)
            not in candidates
            - {
                summary.tags.get(TAG_CURRENT_KEY),
                summary.tags.get(TAG_PREVIOUS_KEY),
            }
        ):
            # An older secret without its user tag whose current key is none of this user's: read whose
            # document it holds before anyone writes into it (a template once mapped two users here?).
            key_id, user = self._key_in_version(name, current)
            if user is not None:
                version_users[current] = user
        return SecretState(
            name=name,
            exists=True,
            managed=managed,
            versions=dict(summary.versions),
            version_keys=version_keys,
            tags=dict(summary.tags),
            arn=summary.arn,
            version_users=version_users,
            deleted=summary.deleted,
            created=summary.created,
        )

    def _key_in_version(self, name: str, version: str) -> tuple[str | None, str | None]:
        """Read one version whose id is not ours (written by hand?): the key and user it holds."""
        try:
            text = self.aws.secret_value(name, version_id=version).reveal()
        except AwsError:
            return None, None
        try:
            document = json.loads(text)
        except ValueError:
            return None, None
        if not isinstance(document, Mapping):
            return None, None
        key_id, user = document.get("AccessKeyId"), document.get("UserName")
        return (key_id if isinstance(key_id, str) else None), (user if isinstance(user, str) else None)
