"""The rotation protocol: create, record, store, validate, publish or withdraw a user's new key.

The ``Executor`` decides which step runs; a ``Rotation`` carries out its ``rotate`` steps, call by call
as ``docs/design.md`` ("A rotation, call by call") lists them, crash-safe and safe under concurrency.

Rotation (secret exists)::

    tag secret rotation-started -> CreateAccessKey -> PutSecretValue(AWSPENDING, token=uuid5(key))
      -> validate (sts:GetCallerIdentity signed with the new key) -> move AWSCURRENT (AWSPREVIOUS
      follows) -> remove AWSPENDING -> tag secret (current/previous ids, published-at, mark cleared)

Bootstrap (no secret; a first version is always AWSCURRENT, so validate *before* storing)::

    tag user rotation-started -> CreateAccessKey -> tag user own:<key> -> validate
      -> CreateSecret(token=uuid5(key), tags name the previous key, published-at=secret-created) -> untag user
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from datetime import datetime

from rotator.config import Settings
from rotator.errors import (
    AwsError,
    ConcurrentlyDone,
    ConflictError,
    KeyOutcomeUnknownError,
    LimitExceededError,
    NotFoundError,
    RotatorError,
    UserError,
    ValidationTimeoutError,
)
from rotator.events import Event, KeyCreated, KeyPublished, KeyWithdrawn, ValidationAttempt
from rotator.model import (
    AWSCURRENT,
    AWSPENDING,
    MARK_CLEARED,
    MARK_TAGS,
    PUBLISHED_AT_CREATION,
    TAG_CURRENT_CREATED,
    TAG_CURRENT_KEY,
    TAG_MANAGED,
    TAG_PREVIOUS_CREATED,
    TAG_PREVIOUS_KEY,
    TAG_PUBLISHED_AT,
    TAG_USER,
    USER_TAG_ROTATION_KEYS,
    USER_TAG_ROTATION_STARTED,
    AccessKey,
    EffectivePolicy,
    NewKey,
    SecretText,
    Step,
    UserPlan,
    UserState,
    own_tag,
    version_id_for,
)
from rotator.policy import after, tag_room_problem
from rotator.ports import AccountPort

Clock = Callable[[], datetime]


def credential_document(user: str, key: NewKey) -> SecretText:
    """SPEC's secret: usable directly as AWS CLI ``credential_process`` output."""
    return SecretText(
        json.dumps(
            {
                "Version": 1,
                "AccessKeyId": key.key_id,
                "SecretAccessKey": key.secret_access_key.reveal(),
                "UserName": user,
                "CreateDate": iso(key.created),
            }
        )
    )


def iso(value: datetime) -> str:
    return value.isoformat()


class Rotation:
    """Carries out the rotation of one user's key for the ``Executor`` of one account."""

    def __init__(
        self,
        aws: AccountPort,
        settings: Settings,
        emit: Callable[[Event], None],
        clock: Clock,
        *,
        sleep: Callable[[float], None] = time.sleep,
        sweep_id: str | None = None,
        recorder: AccountPort | None = None,
    ) -> None:
        self.aws = aws
        #: Writes the ownership record of a key this run has just created, past any guard on ``aws``: that
        #: record changes no credential and lets the next leader clean the key (docs/design.md, "Fencing").
        self.recorder = recorder or aws
        #: user -> ``rotation-started`` of the intent mark this run wrote (one attempt per user at a time).
        self._marks: dict[str, str] = {}
        self.settings = settings
        self.emit = emit
        self.clock = clock
        self.sleep = sleep
        self.sweep_id = sweep_id

    def _start(self, state: UserState) -> NewKey:
        """Intent mark, CreateAccessKey, ownership record: the calls that make a key ours.

        The intent mark proves nothing (docs/design.md, "Ownership"); it only lets a key whose record
        was never written (a crash or a lost answer in between) be found again and settled from
        CloudTrail. A rotation writes the mark on the secret (one Secrets Manager call: IAM's rate is the
        scarce one) and its record is the ``AWSPENDING`` version it writes next (:meth:`_put_pending`,
        version id ``uuid5(key id)``). A bootstrap has no secret until its key validated, so it marks the
        user and records the key there (``rotator:own:<key id>``) the moment the id is known.
        """
        no_room = tag_room_problem(state)
        if no_room is not None:  # the policy says so first; this is defence in depth
            raise UserError(state.user, no_room)
        on_secret = state.secret.exists
        existing = " ".join(sorted(k.key_id for k in state.keys))
        intent = {USER_TAG_ROTATION_STARTED: iso(self.clock()), USER_TAG_ROTATION_KEYS: existing}
        self._marks[state.user] = intent[USER_TAG_ROTATION_STARTED]
        try:
            if on_secret:
                self.aws.tag_secret(state.secret.name, intent)
            else:
                self.aws.tag_user(state.user, intent)
        except LimitExceededError as exc:
            raise UserError(state.user, f"cannot write the rotation mark: {exc}") from exc
        try:
            key = self.aws.create_access_key(state.user)
        except AwsError as exc:
            if exc.maybe_acted:
                # A key may exist whose id we never learnt: the intent mark stays so that it is found,
                # reported and settled from CloudTrail (never deleted on a guess).
                raise KeyOutcomeUnknownError(
                    f"{state.user}: CreateAccessKey failed after AWS may have acted ({exc.code or type(exc).__name__});"
                    " a key it created would be unrecorded: left alone until CloudTrail proves its creator",
                    service="iam",
                    operation="CreateAccessKey",
                    maybe_acted=True,
                ) from None
            if isinstance(exc, LimitExceededError):
                # Another key took the slot since the re-read: perhaps a concurrent rotation's, whose intent mark
                # ours just overwrote and whose ownership record may never be written (it crashed in between).
                # Removing the mark would leave that key unrecorded and unmarked: foreign for ever, an orphan
                # nobody cleans (I3; found by the simulation, tests/sim/regressions.py). The mark stays: the key
                # is an ownership candidate that CloudTrail settles, and the repair removes the mark once settled.
                raise ConcurrentlyDone(
                    f"{state.user}: key limit reached: another key appeared since the re-read; not rotated"
                ) from exc
            # AWS did not act: the mark must not outlive the attempt, if it is still ours (_clear_own_mark).
            self._clear_own_mark(state)
            raise
        self.emit(KeyCreated(account=state.account, user=state.user, key_id=key.key_id, sweep_id=self.sweep_id))
        if on_secret:
            return key  # recorded by its AWSPENDING version, written next
        try:
            self.recorder.tag_user(state.user, {own_tag(key.key_id): iso(key.created)})
        except AwsError as exc:
            self._withdraw(state, key.key_id, "its ownership record could not be written")
            error = AwsError(f"{state.user}: could not record new key {key.key_id}, withdrawn: {exc}")
            error.key_id = key.key_id
            raise error from None
        return key

    def _withdraw(self, state: UserState, key_id: str, why: str) -> None:
        """Delete a new key of this run that cannot be stored (it is ours: we hold its id from IAM)."""
        try:
            self.aws.delete_access_key(state.user, key_id)
        except NotFoundError:
            pass
        except AwsError:
            return  # its record (or its mark) stays: the first sweep after the in-flight window cleans it
        self.emit(
            KeyWithdrawn(account=state.account, user=state.user, key_id=key_id, sweep_id=self.sweep_id, reason=why)
        )
        # The attempt is over: neither its record nor its intent mark (if still ours) may speak for later keys.
        if not state.secret.exists:
            self.untag(state, [own_tag(key_id)])
        self._clear_own_mark(state)

    def _clear_own_mark(self, state: UserState) -> None:
        """Remove this attempt's intent mark if it is still the one in place (best effort; one read first).

        Two runs' marks share the two tags: a concurrent attempt may have written its own over ours since, and
        removing that one would leave its key unmarked - foreign for ever should it crash before its record, an
        orphan nobody cleans (I3; found by the simulation, seed 80576: a bootstrap withdrew its key when its
        record could not be written, then removed the mark the other replica's bootstrap had just written). Tags
        have no conditional writes, so a window of one call remains; a mark left behind is the repair's, once
        older than the in-flight window.
        """
        ours = self._marks.pop(state.user, None)
        if ours is None:
            return
        try:
            if state.secret.exists:
                summary = self.aws.describe_secret(state.secret.name)
                if summary is not None and summary.tags.get(USER_TAG_ROTATION_STARTED) == ours:
                    self.aws.tag_secret(state.secret.name, MARK_CLEARED)
            elif self.aws.user(state.user).tags.get(USER_TAG_ROTATION_STARTED) == ours:
                self.aws.untag_user(state.user, list(MARK_TAGS))
        except AwsError:
            return  # a stale mark only makes a key created near it a candidate that CloudTrail settles

    def untag(self, state: UserState, tags: list[str]) -> None:
        try:
            self.aws.untag_user(state.user, tags)
        except AwsError:
            return  # a stale record of a deleted key, or a stale mark, only costs a report line

    def _stored(self, state: UserState, key: NewKey) -> bool:
        """After an ambiguous write: does the secret hold ``key`` (in any version) now?"""
        summary = self.aws.describe_secret(state.secret.name)
        return summary is not None and version_id_for(key.key_id) in summary.versions

    def rotate(self, state: UserState, plan: UserPlan, step: Step) -> str:
        """A fresh rotation (or bootstrap): returns the id of the key it published."""
        try:
            return self._rotate(state, plan, step)
        finally:
            self._marks.pop(state.user, None)

    def _rotate(self, state: UserState, plan: UserPlan, step: Step) -> str:
        policy = _resolved(plan)
        replaced = plan.roles.current if state.secret.exists else state.key(step.key_id)
        key = self._start(state)
        document = credential_document(state.user, key)
        version = version_id_for(key.key_id)
        deadline = after(key.created, policy.validation_timeout)
        try:
            if not state.secret.exists:
                try:
                    self._validate(state, key, deadline)
                except RotatorError:
                    self._withdraw(state, key.key_id, "it did not validate in time")
                    raise
                self._check_deadline(state, key, deadline)
                # A quarantined user's record goes with the secret (the first version is published at once).
                record = {}
                if step.cause == "quarantine" and plan.quarantine and plan.quarantine.record_needed:
                    record = plan.quarantine.record.tags()
                self._create_secret(state, key, document, version, replaced, record=record)
                self._published(state, key.key_id, replaced, resumed=False)
            else:
                self._check_deadline(state, key, deadline)
                self._put_pending(state, key, document, version)
                try:
                    self._validate(state, key, deadline)
                    self._check_deadline(state, key, deadline)
                except RotatorError:
                    self._abandon(state, key.key_id, version)
                    raise
                self._publish(state, version, key, replaced, resumed=False)
        except RotatorError as exc:
            exc.key_id = exc.key_id or key.key_id
            raise
        return key.key_id

    def _create_secret(
        self,
        state: UserState,
        key: NewKey,
        document: SecretText,
        version: str,
        replaced: AccessKey | None,
        *,
        record: Mapping[str, str] | None = None,
    ) -> None:
        tags = dict(self.settings.secrets.tags)
        tags.update(record or {})
        tags.update(
            {
                TAG_MANAGED: "true",
                TAG_USER: state.user,
                TAG_CURRENT_KEY: key.key_id,
                TAG_CURRENT_CREATED: iso(key.created),
                # The publication is the secret's creation: Secrets Manager keeps its time (CreatedDate),
                # so the grace period counts from there without a TagResource after it (SecretState.published_at).
                TAG_PUBLISHED_AT: PUBLISHED_AT_CREATION,
            }
        )
        if replaced is not None:
            tags.update({TAG_PREVIOUS_KEY: replaced.key_id, TAG_PREVIOUS_CREATED: iso(replaced.created)})
        try:
            self.aws.create_secret(
                state.secret.name,
                document,
                version,
                tags=tags,
                kms_key_id=self.settings.secrets.kms_key_id,
                replica_regions=list(self.settings.secrets.replica_regions),
                description=f"IAM access key of {state.user}, rotated by iam-key-rotator",
            )
        except AwsError as exc:
            if not (exc.maybe_acted or isinstance(exc, ConflictError)):
                self._withdraw(state, key.key_id, "the secret could not be created")
                raise
            # A lost answer (our secret exists) or a concurrent bootstrap (theirs does): look.
            summary = self.aws.describe_secret(state.secret.name)
            current = next((v for v, s in (summary.versions if summary else {}).items() if AWSCURRENT in s), None)
            if current == version:
                return  # our own CreateSecret went through; its answer was lost
            if summary is None and not isinstance(exc, ConflictError):
                self._withdraw(state, key.key_id, "the secret could not be created")
                raise
            self._withdraw(state, key.key_id, "another run created the secret first")
            raise ConcurrentlyDone(
                f"{state.user}: another run created secret {state.secret.name} first; new key {key.key_id} withdrawn"
            ) from None

    def _put_pending(self, state: UserState, key: NewKey, document: SecretText, version: str) -> None:
        try:
            # The new key's record, so past any guard (like a bootstrap's record on the user): AWSPENDING is
            # read by no consumer, and IAM's two-key limit leaves no other live run a pending key to displace
            # (one that already deleted our key as an orphan loses only a stray label: docs/design.md, "Fencing").
            self.recorder.put_secret_value(state.secret.name, document, version, [AWSPENDING])
        except AwsError as exc:
            # Never simply repeated: moto moves AWSCURRENT on a repeated token, and a lost answer may
            # mean it is stored. Stored -> carry on; not stored -> the key is withdrawn at once.
            if exc.maybe_acted and self._stored(state, key):
                return
            self._withdraw(state, key.key_id, "its secret version could not be written")
            raise

    def resume(self, state: UserState, plan: UserPlan, step: Step) -> None:
        """Publish a pending version another run wrote and never published (it crashed)."""
        assert step.key_id is not None
        version = version_id_for(step.key_id)
        text = self.aws.secret_value(state.secret.name, version_id=version).reveal()
        try:
            document = json.loads(text)
            pending = state.key(step.key_id)
            assert pending is not None
            key = NewKey(step.key_id, SecretText(document["SecretAccessKey"]), pending.created)
        except (ValueError, KeyError, TypeError, AssertionError) as exc:
            raise UserError(state.user, "pending secret version does not hold the rotator's document") from exc
        self._validate(state, key, after(self.clock(), _resolved(plan).validation_timeout))
        replaced = plan.roles.current
        self._publish(state, version, key, replaced, resumed=True)

    def _publish(
        self, state: UserState, version: str, key: NewKey, replaced: AccessKey | None, *, resumed: bool
    ) -> None:
        old_version = state.secret.version_with(AWSCURRENT)
        moved = self.aws.move_stage(state.secret.name, AWSCURRENT, to_version=version, from_version=old_version)
        if not moved and resumed:
            # Two runs resuming the same pending key: the other moved AWSCURRENT first. The goal
            # holds and the publication is the other's (reported once, by it).
            raise ConcurrentlyDone(f"{state.user}: a concurrent run published {key.key_id}")
        # (Not moved on a fresh rotation: our own move went through and its answer was lost - nobody
        # else publishes a key of ours within its validation_timeout - so the publication is ours.)
        # The secret holds the key now: a record on the user must not outlive that (were the secret
        # purged, a stale record would condemn the published key as an orphan). A crash right here
        # leaves it for the next sweep's repair. (A rotation of this version has none: its mark, on the
        # secret, goes with the tags below.)
        if state.in_flight_tags:
            self._finish(state, key.key_id)
        # A concurrent run's repair may remove AWSPENDING first (it saw what a crash here leaves):
        # move_stage then reports the goal as already met, and the publication is finished anyway.
        self.aws.move_stage(state.secret.name, AWSPENDING, from_version=version)
        tags = {TAG_USER: state.user, TAG_CURRENT_KEY: key.key_id, TAG_CURRENT_CREATED: iso(key.created)}
        if replaced is not None:
            tags.update({TAG_PREVIOUS_KEY: replaced.key_id, TAG_PREVIOUS_CREATED: iso(replaced.created)})
        # Publication time is written after the stage moved: a crash in between leaves no record and
        # the repair records a later time, so the grace period can only grow (I5).
        tags[TAG_PUBLISHED_AT] = iso(self.clock())
        tags.update(MARK_CLEARED)  # the intent mark has done its work
        self.emit(
            KeyPublished(
                account=state.account,
                user=state.user,
                key_id=key.key_id,
                sweep_id=self.sweep_id,
                previous_key_id=replaced.key_id if replaced else None,
                secret=state.secret.name,
                resumed=resumed,
            )
        )
        self.aws.tag_secret(state.secret.name, tags)

    def _published(self, state: UserState, key_id: str, replaced: AccessKey | None, *, resumed: bool) -> None:
        """A bootstrap's publication is over: CreateSecret recorded its time (``published-at=secret-created``)."""
        self._finish(state, key_id)  # the secret holds the key now (see _publish)
        self.emit(
            KeyPublished(
                account=state.account,
                user=state.user,
                key_id=key_id,
                sweep_id=self.sweep_id,
                previous_key_id=replaced.key_id if replaced else None,
                secret=state.secret.name,
                resumed=resumed,
            )
        )

    def _finish(self, state: UserState, key_id: str) -> None:
        # The secret now holds the key: its ownership record and the intent mark have done their work.
        self.untag(state, [own_tag(key_id), *MARK_TAGS])

    def _abandon(self, state: UserState, key_id: str, version: str) -> None:
        """A new key that never validated: unlabel its version and delete it (best effort)."""
        try:
            self.aws.move_stage(state.secret.name, AWSPENDING, from_version=version)
        except AwsError:
            return  # what is left is an orphan: the first sweep after the in-flight window cleans it
        self._withdraw(state, key_id, "it did not validate in time")

    def _check_deadline(self, state: UserState, key: NewKey, deadline: datetime) -> None:
        """Past ``validation_timeout`` another run may treat our key as an orphan: stop."""
        if self.clock() > deadline:
            if state.secret.exists:
                self._abandon(state, key.key_id, version_id_for(key.key_id))
            else:
                self._withdraw(state, key.key_id, "it overran aws.validation_timeout")
            raise ValidationTimeoutError(
                f"{state.user}: rotation of {key.key_id} overran aws.validation_timeout; key withdrawn"
            )

    def _validate(self, state: UserState, key: NewKey, deadline: datetime) -> None:
        """Poll ``sts:GetCallerIdentity`` signed with the new key until IAM has propagated it."""
        attempt = 0
        delay = 0.5
        expected_suffix = f":user{state.path}{state.user}"
        while True:
            attempt += 1
            try:
                arn = self.aws.caller_arn_with(key)
            except AwsError as exc:
                last_error = exc.code or type(exc).__name__
            else:
                if arn.endswith(expected_suffix) or arn.endswith(f"/{state.user}"):
                    return
                last_error = "key authenticates as another principal"
            self.emit(ValidationAttempt(account=state.account, user=state.user, key_id=key.key_id, attempt=attempt))
            remaining = (deadline - self.clock()).total_seconds()
            if remaining <= 0:
                raise ValidationTimeoutError(
                    f"{state.user}: new key {key.key_id} did not authenticate within "
                    f"aws.validation_timeout ({last_error})"
                )
            self.sleep(min(delay, remaining))
            delay = min(delay * 2, 2.0)  # a new key propagates within seconds: look every 2 s at most


def _resolved(plan: UserPlan) -> EffectivePolicy:
    """The plan's policy; a plan with steps to carry out always has one (else it is one problem skip)."""
    assert plan.policy is not None, plan
    return plan.policy
