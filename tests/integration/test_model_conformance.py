"""The simulation's model of AWS (``tests/sim/world.py``) and moto, through the same ports, in the same scenarios.

Each test runs twice: against the model (``Knobs.calm()``: no lag, no faults, so only the semantics are
compared) and against moto in server mode over HTTP, reached through the real boto3 adapters
(:class:`rotator.aws.Aws` over a :class:`rotator.aws.Boundary`). Where both implement a behaviour the test
asserts the same outcome for both, so the model cannot drift from what the adapters see. Where moto is unlike
AWS, the test asserts each one's own behaviour, says so, and cites the AWS documentation the model follows.

Not compared (moto does not implement them, or differs by design; ``tests/unit/test_sim_world.py`` pins the
model alone): propagation delay, ListAccessKeys/ListSecrets/tag lag, last-used lag, credential report
caching, CloudTrail events, throttling, faults, KMS failures.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest
from conftest import AwsEnv

from rotator.aws import Aws, Boundary, RateLimiter
from rotator.errors import AwsError, ConflictError, LimitExceededError, NotFoundError
from rotator.model import AWSCURRENT, AWSPENDING, AWSPREVIOUS, KeyStatus, NewKey, SecretText
from rotator.ports import AccountPort, LeaseStore, OrganizationsPort
from tests.sim.world import Knobs, World

V1 = "11111111-1111-4111-8111-111111111111"
V2 = "22222222-2222-4222-8222-222222222222"
V3 = "33333333-3333-4333-8333-333333333333"
TABLE = "rotator-lease"


@dataclass
class Backend:
    """One AWS behind the ports, and the operator's hands on it (set-up outside the ports)."""

    name: str
    port: AccountPort
    lease: LeaseStore
    orgs: OrganizationsPort
    world: World | None = None
    env: AwsEnv | None = None

    @property
    def model(self) -> bool:
        return self.world is not None

    def add_user(self, name: str, *, path: str = "/", tags: Mapping[str, str] | None = None) -> str:
        all_tags = dict({"rotator": "enabled"} if tags is None else tags)
        if self.world is not None:
            return self.world.add_user(name, path, all_tags)
        assert self.env is not None
        user = self.env.iam.create_user(
            UserName=name, Path=path, Tags=[{"Key": k, "Value": v} for k, v in all_tags.items()]
        )
        return str(user["User"]["Arn"])

    def operator_key(self, user: str) -> NewKey:
        if self.world is not None:
            key = self.world.operator_create_key(user)
            assert key is not None
            return key
        assert self.env is not None
        item = self.env.iam.create_access_key(UserName=user)["AccessKey"]
        return NewKey(item["AccessKeyId"], SecretText(item["SecretAccessKey"]), item["CreateDate"])

    def delete_user(self, name: str) -> None:
        """The operator's way: the keys first (IAM refuses to delete a user that has keys), then the user."""
        if self.world is not None:
            self.world.delete_user(name)
            return
        assert self.env is not None
        for key in self.env.iam.list_access_keys(UserName=name)["AccessKeyMetadata"]:
            self.env.iam.delete_access_key(UserName=name, AccessKeyId=key["AccessKeyId"])
        self.env.iam.delete_user(UserName=name)

    def delete_secret(self, name: str, recovery_days: int | None) -> None:
        if self.world is not None:
            assert self.world.operator_delete_secret(name, recovery_days=recovery_days)
            return
        assert self.env is not None
        if recovery_days is None:
            self.env.sm.delete_secret(SecretId=name, ForceDeleteWithoutRecovery=True)
        else:
            self.env.sm.delete_secret(SecretId=name, RecoveryWindowInDays=recovery_days)

    def restore_secret(self, name: str) -> None:
        if self.world is not None:
            assert self.world.operator_restore_secret(name)
            return
        assert self.env is not None
        self.env.sm.restore_secret(SecretId=name)

    def organization(self) -> tuple[str, str, str]:
        """An organization with one member account in one OU under the root: (root id, OU id, member id)."""
        if self.world is not None:
            self.world.add_org_account("427690381126", "member", parent="ou-sim-1")
            return "r-sim", "ou-sim-1", "427690381126"
        assert self.env is not None
        orgs = self.env.client("organizations")
        orgs.create_organization(FeatureSet="ALL")
        root = orgs.list_roots()["Roots"][0]["Id"]
        ou = orgs.create_organizational_unit(ParentId=root, Name="ou")["OrganizationalUnit"]["Id"]
        member = orgs.create_account(Email="member@example.com", AccountName="member")["CreateAccountStatus"]
        orgs.move_account(AccountId=member["AccountId"], SourceParentId=root, DestinationParentId=ou)
        return str(root), str(ou), str(member["AccountId"])

    def create_table(self) -> None:
        if self.env is not None:
            self.env.client("dynamodb").create_table(
                TableName=TABLE,
                KeySchema=[{"AttributeName": "name", "KeyType": "HASH"}],
                AttributeDefinitions=[{"AttributeName": "name", "AttributeType": "S"}],
                BillingMode="PAY_PER_REQUEST",
            )


@pytest.fixture(params=["model", "moto"])
def backend(request: pytest.FixtureRequest) -> Iterator[Backend]:
    if request.param == "model":
        world = World(0, knobs=Knobs.calm())
        yield Backend(
            "model", world.account("rotator"), world.lease_store("rotator"), world.organizations("rotator"), world=world
        )
        return
    env: AwsEnv = request.getfixturevalue("aws")
    request.getfixturevalue("moto_environ")
    session = boto3.session.Session(
        aws_access_key_id=env.access_key, aws_secret_access_key=env.secret_key, region_name="us-east-1"
    )
    aws = Aws(Boundary(session, lambda _event: None, limiter=RateLimiter(1000.0), max_attempts=1))
    yield Backend("moto", aws, aws.lease_store, aws.organizations, env=env)


def create(backend: Backend, name: str = "s", value: str = "v1", token: str = V1) -> str:
    return backend.port.create_secret(
        name, SecretText(value), token, tags={"owner": "test"}, kms_key_id=None, replica_regions=[], description=""
    )


def labels(backend: Backend, name: str = "s") -> dict[str, tuple[str, ...]]:
    summary = backend.port.describe_secret(name)
    assert summary is not None
    return {version: tuple(sorted(stages)) for version, stages in summary.versions.items()}


def refused(call: Any, kind: type[AwsError] = AwsError) -> AwsError:
    with pytest.raises(kind) as caught:
        call()
    return caught.value


# -- IAM ----------------------------------------------------------------------------------------


def test_two_access_keys_per_user(backend: Backend) -> None:
    """https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_iam-quotas.html (access keys per user: 2)."""
    backend.add_user("u")
    first = backend.port.create_access_key("u")
    second = backend.operator_key("u")
    error = refused(lambda: backend.port.create_access_key("u"), LimitExceededError)
    assert error.code == "LimitExceeded" and not error.maybe_acted
    assert {k.key_id for k in backend.port.access_keys("u")} == {first.key_id, second.key_id}
    assert first.created.tzinfo is not None
    # IAM answers CreateDate in whole seconds ("2015-03-09T18:39:23Z", API_AccessKey.html's example); moto
    # keeps microseconds.
    assert (first.created.microsecond == 0) is backend.model


def test_key_status_and_deletion(backend: Backend) -> None:
    backend.add_user("u")
    key = backend.port.create_access_key("u")
    backend.port.set_key_status("u", key.key_id, KeyStatus.INACTIVE)
    assert [(k.key_id, k.status) for k in backend.port.access_keys("u")] == [(key.key_id, KeyStatus.INACTIVE)]
    backend.port.delete_access_key("u", key.key_id)
    assert backend.port.access_keys("u") == []
    assert refused(lambda: backend.port.delete_access_key("u", key.key_id), NotFoundError).code == "NoSuchEntity"
    missing = refused(lambda: backend.port.set_key_status("u", key.key_id, KeyStatus.ACTIVE), NotFoundError)
    assert missing.code == "NoSuchEntity"
    assert backend.port.create_access_key("u").key_id != key.key_id  # the slot is free again


def test_users_paths_and_tags(backend: Backend) -> None:
    arn = backend.add_user("app", path="/svc/", tags={"rotator": "enabled", "team": "a"})
    assert arn == "arn:aws:iam::123456789012:user/svc/app"
    detail = backend.port.user("app")
    assert (detail.name, detail.path, detail.arn, dict(detail.tags)) == (
        "app",
        "/svc/",
        arn,
        {"rotator": "enabled", "team": "a"},
    )
    backend.port.tag_user("app", {"team": "b", "rotator:own:AKIA": "2025-01-01T00:00:00+00:00"})
    backend.port.untag_user("app", ["rotator", "absent"])
    listed = {d.name: dict(d.tags) for d in backend.port.user_details()}
    assert listed == {"app": {"team": "b", "rotator:own:AKIA": "2025-01-01T00:00:00+00:00"}}


def test_fifty_tags_per_user(backend: Backend) -> None:
    """IAM allows 50 tags per user and refuses characters outside ``[\\p{L}\\p{Z}\\p{N}_.:/=+\\-@]``.

    https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_iam-quotas.html
    https://docs.aws.amazon.com/IAM/latest/APIReference/API_Tag.html
    """
    backend.add_user("u", tags={})
    backend.port.tag_user("u", {f"k{n}": "v" for n in range(50)})
    if backend.model:
        assert (
            refused(lambda: backend.port.tag_user("u", {"one-more": "v"}), LimitExceededError).code == "LimitExceeded"
        )
        assert refused(lambda: backend.port.tag_user("u", {"k1": "a,b"})).code == "InvalidInput"
        assert len(backend.port.user("u").tags) == 50
    else:
        # moto 5 enforces neither the quota nor the character set: a 51st tag and a comma are accepted.
        backend.port.tag_user("u", {"one-more": "v"})
        backend.port.tag_user("u", {"k1": "a,b"})
        assert len(backend.port.user("u").tags) == 51


def test_a_deleted_user_is_no_such_entity(backend: Backend) -> None:
    """https://docs.aws.amazon.com/IAM/latest/APIReference/API_GetUser.html (NoSuchEntity)."""
    backend.add_user("u")
    key = backend.port.create_access_key("u")
    backend.add_user("other")
    backend.delete_user("u")
    for call in (
        lambda: backend.port.user("u"),
        lambda: backend.port.access_keys("u"),
        lambda: backend.port.create_access_key("u"),
        lambda: backend.port.delete_access_key("u", key.key_id),
    ):
        assert refused(call, NotFoundError).code == "NoSuchEntity"
    assert [d.name for d in backend.port.user_details()] == ["other"]
    assert refused(lambda: backend.port.key_last_used(key.key_id), NotFoundError).code == "NoSuchEntity"


def test_a_new_key_authenticates_as_its_user_and_an_inactive_one(backend: Backend) -> None:
    """GetCallerIdentity signed with a key names its user; an Inactive key does not authenticate.

    https://docs.aws.amazon.com/STS/latest/APIReference/API_GetCallerIdentity.html
    https://docs.aws.amazon.com/IAM/latest/APIReference/API_UpdateAccessKey.html ("Inactive ... cannot be used")
    """
    arn = backend.add_user("u", path="/svc/")
    key = backend.port.create_access_key("u")
    assert backend.port.caller_arn_with(key) == arn
    backend.port.set_key_status("u", key.key_id, KeyStatus.INACTIVE)
    if backend.model:
        assert refused(lambda: backend.port.caller_arn_with(key)).code == "InvalidClientTokenId"
    else:
        assert backend.port.caller_arn_with(key) == arn  # moto: an Inactive key still authenticates
    assert backend.port.account_id() == "123456789012"


def test_the_credential_report(backend: Backend) -> None:
    """Rows of access-key slots per user; GeneratedTime is when IAM generated the report.

    https://docs.aws.amazon.com/IAM/latest/APIReference/API_GetCredentialReport.html
    """
    backend.add_user("u")
    backend.add_user("none")
    key = backend.port.create_access_key("u")
    backend.port.set_key_status("u", key.key_id, KeyStatus.INACTIVE)
    report = backend.port.credential_report()
    assert [(slot.active, slot.last_used) for slot in report.users["u"]] == [(False, None)]
    assert abs(report.users["u"][0].created - key.created) <= timedelta(seconds=1)
    assert report.users["none"] == []
    assert report.generated is not None
    if backend.model:
        assert report.generated == backend.world.clock()  # type: ignore[union-attr]
    else:
        assert report.generated.year == 2015  # moto: a fixed GeneratedTime, never the report's age
    # A key created after the report: IAM serves the same report until it is 4 hours old
    # (https://docs.aws.amazon.com/IAM/latest/UserGuide/id_credentials_getting-report.html); moto's is always new.
    backend.operator_key("none")
    again = backend.port.credential_report()
    assert len(again.users["none"]) == (0 if backend.model else 1)
    assert again.generated == report.generated


def test_a_keys_last_use(backend: Backend) -> None:
    """N/A when never used; after a signed call, when, by which service, in which region (the model's lag is
    0 here: AWS's lags, as moto has none).

    https://docs.aws.amazon.com/IAM/latest/APIReference/API_AccessKeyLastUsed.html
    """
    backend.add_user("u")
    key = backend.operator_key("u")
    used = backend.port.key_last_used(key.key_id)
    assert (used.at, used.service, used.region) == (None, None, None)
    backend.port.caller_arn_with(key)
    used = backend.port.key_last_used(key.key_id)
    assert used.at is not None and used.service == "sts" and used.region


# -- Secrets Manager ------------------------------------------------------------------------------


def test_versions_and_staging_labels(backend: Backend) -> None:
    """The first version gets AWSCURRENT; a moved AWSCURRENT leaves AWSPREVIOUS behind.

    https://docs.aws.amazon.com/secretsmanager/latest/apireference/API_PutSecretValue.html
    https://docs.aws.amazon.com/secretsmanager/latest/apireference/API_UpdateSecretVersionStage.html
    """
    arn = create(backend)
    assert arn.startswith("arn:aws:secretsmanager:") and ":secret:s-" in arn
    assert labels(backend) == {V1: (AWSCURRENT,)}
    backend.port.put_secret_value("s", SecretText("v2"), V2, [AWSPENDING])
    assert labels(backend) == {V1: (AWSCURRENT,), V2: (AWSPENDING,)}
    assert backend.port.secret_value("s").reveal() == "v1"
    assert backend.port.secret_value("s", stage=AWSPENDING).reveal() == "v2"
    assert backend.port.secret_value("s", version_id=V2).reveal() == "v2"
    assert backend.port.move_stage("s", AWSCURRENT, to_version=V2, from_version=V1) is True
    assert labels(backend) == {V1: (AWSPREVIOUS,), V2: (AWSCURRENT, AWSPENDING)}
    assert backend.port.move_stage("s", AWSCURRENT, to_version=V2, from_version=V1) is False  # already there
    assert backend.port.move_stage("s", AWSPENDING, from_version=V2) is True
    assert backend.port.move_stage("s", AWSPENDING, from_version=V2) is False
    refused(lambda: backend.port.move_stage("s", AWSCURRENT, to_version=V3, from_version=V2))
    backend.port.put_secret_value("s", SecretText("v3"), V3, [AWSCURRENT])
    if backend.model:
        assert labels(backend) == {V2: (AWSPREVIOUS,), V3: (AWSCURRENT,)}
    else:
        # moto leaves AWSPREVIOUS where it was when the version losing AWSCURRENT got it by
        # UpdateSecretVersionStage; AWS moves AWSPREVIOUS to the version AWSCURRENT left (PutSecretValue's page).
        assert labels(backend) == {V1: (AWSPREVIOUS,), V3: (AWSCURRENT,)}
    assert refused(lambda: backend.port.secret_value("s", stage="NOPE"), NotFoundError).code == (
        "ResourceNotFoundException"
    )


def test_created_date_is_the_secret_s_creation_and_stays(backend: Backend) -> None:
    """``CreatedDate`` (DescribeSecret, ListSecrets) is when the secret and its first version were created, and
    later versions, label moves and tags leave it: a bootstrap's publication time (``published-at=secret-created``).

    https://docs.aws.amazon.com/secretsmanager/latest/apireference/API_DescribeSecret.html
    """
    before = backend.world.clock() if backend.world is not None else datetime.now(UTC)
    create(backend, name="iam-keys/s")
    described = backend.port.describe_secret("iam-keys/s")
    assert described is not None and described.created is not None
    created = described.created
    assert before - timedelta(seconds=1) <= created <= before + timedelta(seconds=5), (before, created)
    backend.port.put_secret_value("iam-keys/s", SecretText("v2"), V2, [AWSPENDING])
    backend.port.move_stage("iam-keys/s", AWSCURRENT, to_version=V2, from_version=V1)
    backend.port.tag_secret("iam-keys/s", {"rotator:published-at": "2030-01-01T00:00:00+00:00"})
    again = backend.port.describe_secret("iam-keys/s")
    assert again is not None and again.created == created
    (listed,) = backend.port.secrets("iam-keys/")
    assert listed.created == created


def test_a_repeated_client_request_token(backend: Backend) -> None:
    """The same ClientRequestToken and value again: AWS ignores the request (no label moves, whatever labels it
    names); the same token with another value fails (ResourceExistsException).

    https://docs.aws.amazon.com/secretsmanager/latest/apireference/API_PutSecretValue.html (ClientRequestToken)
    """
    create(backend)
    # A version that holds AWSPREVIOUS: moto agrees with AWS.
    backend.port.put_secret_value("s", SecretText("v2"), V2, [AWSCURRENT])
    backend.port.move_stage("s", AWSCURRENT, to_version=V1, from_version=V2)
    assert labels(backend) == {V1: (AWSCURRENT,), V2: (AWSPREVIOUS,)}
    backend.port.put_secret_value("s", SecretText("v2"), V2, [AWSCURRENT])
    assert labels(backend) == {V1: (AWSCURRENT,), V2: (AWSPREVIOUS,)}
    error = refused(lambda: backend.port.put_secret_value("s", SecretText("other"), V2, [AWSCURRENT]), ConflictError)
    assert error.code == "ResourceExistsException"
    # A version that holds AWSPENDING (the rotator's own retry after a lost answer): moto differs.
    backend.port.put_secret_value("s", SecretText("v3"), V3, [AWSPENDING])
    backend.port.put_secret_value("s", SecretText("v3"), V3, [AWSPENDING])
    assert labels(backend) == {V1: (AWSCURRENT,), V2: (AWSPREVIOUS,), V3: (AWSPENDING,)}
    backend.port.put_secret_value("s", SecretText("v3"), V3, [AWSCURRENT])
    if backend.model:
        assert labels(backend) == {V1: (AWSCURRENT,), V2: (AWSPREVIOUS,), V3: (AWSPENDING,)}
        error = refused(lambda: backend.port.put_secret_value("s", SecretText("x"), V3, [AWSPENDING]), ConflictError)
        assert error.code == "ResourceExistsException"
        assert backend.port.secret_value("s", version_id=V3).reveal() == "v3"
    else:
        # moto 5.2 puts AWSCURRENT on a repeated version that holds AWSPENDING (taking AWSPENDING off it) and
        # leaves it on the current one too: two versions hold AWSCURRENT, which AWS never allows ("a staging
        # label can be attached to only one version at a time", UpdateSecretVersionStage's page).
        assert labels(backend) == {V1: (AWSCURRENT,), V2: (AWSPREVIOUS,), V3: (AWSCURRENT,)}


def test_create_secret_of_an_existing_name(backend: Backend) -> None:
    """CreateSecret of a name in use: ResourceExistsException; the same request (token and value) again is
    ignored, as the ClientRequestToken's documentation says (moto agrees; the model makes it a knob).

    https://docs.aws.amazon.com/secretsmanager/latest/apireference/API_CreateSecret.html
    """
    arn = create(backend)
    assert refused(lambda: create(backend, token=V2), ConflictError).code == "ResourceExistsException"
    assert create(backend) == arn
    assert labels(backend) == {V1: (AWSCURRENT,)}
    summary = backend.port.describe_secret("s")
    assert summary is not None and dict(summary.tags) == {"owner": "test"} and not summary.deleted
    assert backend.port.describe_secret("absent") is None


def test_a_secret_scheduled_for_deletion(backend: Backend) -> None:
    """Reads fail (InvalidRequestException) during the recovery window, ListSecrets shows it with
    IncludePlannedDeletion, RestoreSecret brings it back; AWS also refuses writes and CreateSecret of the name.

    https://docs.aws.amazon.com/secretsmanager/latest/apireference/API_DeleteSecret.html
    https://docs.aws.amazon.com/secretsmanager/latest/apireference/API_GetSecretValue.html (InvalidRequestException)
    https://docs.aws.amazon.com/secretsmanager/latest/apireference/API_CreateSecret.html (InvalidRequestException:
    "a secret with this name is already scheduled for deletion")
    """
    create(backend)
    backend.delete_secret("s", recovery_days=7)
    summary = backend.port.describe_secret("s")
    assert summary is not None and summary.deleted
    assert [s.name for s in backend.port.secrets("")] == ["s"]
    assert refused(lambda: backend.port.secret_value("s")).code == "InvalidRequestException"
    if backend.model:
        assert refused(lambda: create(backend, token=V2)).code == "InvalidRequestException"
        put = refused(lambda: backend.port.put_secret_value("s", SecretText("v2"), V2, [AWSCURRENT]))
        assert put.code == "InvalidRequestException"
    else:
        # moto answers ResourceExistsException for the name, and lets a value be put into a deleted secret.
        assert refused(lambda: create(backend, token=V2), ConflictError).code == "ResourceExistsException"
        backend.port.put_secret_value("s", SecretText("v2"), V2, [AWSCURRENT])
    backend.restore_secret("s")
    summary = backend.port.describe_secret("s")
    assert summary is not None and not summary.deleted
    assert backend.port.secret_value("s").reveal() == ("v1" if backend.model else "v2")


def test_a_forced_deletion(backend: Backend) -> None:
    """ForceDeleteWithoutRecovery: gone (the model's knob ``force_delete_delay`` is 0 here, as moto)."""
    create(backend)
    backend.delete_secret("s", recovery_days=None)
    assert backend.port.describe_secret("s") is None
    assert refused(lambda: backend.port.secret_value("s"), NotFoundError).code == "ResourceNotFoundException"
    create(backend, value="again", token=V2)
    assert backend.port.secret_value("s").reveal() == "again"


def test_listing_secrets_by_prefix(backend: Backend) -> None:
    for name in ("iam-keys/a", "iam-keys/b", "other/iam-keys/c"):
        create(backend, name=name)
    backend.port.tag_secret("iam-keys/a", {"rotator:managed": "true"})
    listed = {s.name: s for s in backend.port.secrets("iam-keys/")}
    assert sorted(listed) == ["iam-keys/a", "iam-keys/b"]
    assert listed["iam-keys/a"].tags["rotator:managed"] == "true"
    assert listed["iam-keys/b"].versions == {V1: (AWSCURRENT,)}


# -- the lease (DynamoDB) -------------------------------------------------------------------------


def test_lease_conditional_writes(backend: Backend) -> None:
    """PutItem on ``attribute_not_exists(#name) OR #owner = :me OR #expires < :now``; DeleteItem on the owner.

    https://docs.aws.amazon.com/amazondynamodb/latest/developerguide/Expressions.ConditionExpressions.html
    """
    backend.create_table()
    lease = backend.lease
    assert lease.get_lease(TABLE, "l") is None
    lease.put_lease(TABLE, "l", "A", 1000.0, 900.0)
    lease.put_lease(TABLE, "l", "A", 1060.0, 1000.0, last_sweep=990.5)  # the owner renews
    record = lease.get_lease(TABLE, "l")
    assert record is not None and (record.owner, record.expires, record.last_sweep) == ("A", 1060.0, 990.5)
    lost = refused(lambda: lease.put_lease(TABLE, "l", "B", 2000.0, 1060.0), ConflictError)
    assert lost.code == "ConditionalCheckFailedException"  # not expired at its own expiry instant
    lease.put_lease(TABLE, "l", "B", 2000.0, 1060.001)  # expired
    record = lease.get_lease(TABLE, "l")
    assert record is not None and (record.owner, record.last_sweep) == ("B", None)
    assert refused(lambda: lease.delete_lease(TABLE, "l", "A"), ConflictError).code == (
        "ConditionalCheckFailedException"
    )
    lease.delete_lease(TABLE, "l", "B")
    assert lease.get_lease(TABLE, "l") is None
    refused(lambda: lease.delete_lease(TABLE, "l", "B"), ConflictError)  # a missing item fails the condition


# -- Organizations --------------------------------------------------------------------------------


def test_organization_accounts_by_parent(backend: Backend) -> None:
    """ListAccounts lists every account; ListAccountsForParent and ListChildren walk OUs; an unknown parent
    is ParentNotFoundException.

    https://docs.aws.amazon.com/organizations/latest/APIReference/API_ListAccountsForParent.html
    """
    root, ou, member = backend.organization()
    everyone = {a.account_id: a for a in backend.orgs.org_accounts()}
    assert set(everyone) == {"123456789012", member}
    assert everyone[member].state == "ACTIVE" and everyone[member].arn.endswith(f"/{member}")
    assert [a.account_id for a in backend.orgs.org_accounts_under([ou])] == [member]
    assert {a.account_id for a in backend.orgs.org_accounts_under([root])} == {"123456789012", member}
    missing = refused(lambda: backend.orgs.org_accounts_under(["ou-zzzz-zzzzzzzz"]))
    assert missing.code == "ParentNotFoundException"
