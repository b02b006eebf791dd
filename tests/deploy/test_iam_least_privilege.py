"""deploy/iam/rotator-policy.json against the AWS calls the rotator really sends.

1. ``test_policy_allows_every_call_sent_and_nothing_unused``: a representative workload (plan, inventory, a dry-run
   sweep, bootstrap, forced rotation with ``--revoke``, disable, delete, age rotation, a secret version written by
   hand, and a second account through ``sts:AssumeRole``) runs through ``tests/record_calls.py`` against moto.
   Every (service, operation) it sent must be an action of the policy, every action of the policy must have been
   sent (optional KMS excepted), and every recorded request must be allowed by a statement whose Resource and
   Condition match it (moto checks neither, so a small evaluator here does, on the real request parameters).
2. ``test_lifecycle_with_only_the_policy_actions``: moto with signature checking on, so it enforces the actions of
   the caller's IAM policies; the rotator's credentials hold nothing but the policy's actions, and the whole
   lifecycle (bootstrap -> disable -> delete -> age rotation) plus an inventory through ``sts:AssumeRole`` completes
   without a single denied call, while calls outside the policy are denied.
3. ``test_optional_features_send_only_what_the_readme_documents``: AWS Organizations discovery and secret replicas
   need actions beyond the policy; they must be exactly the ones deploy/iam/README.md tells operators to add.
4. ``test_evaluator_*``: the conditions (issue 15). moto evaluates no IAM condition, so they are proven statically:
   the evaluator below applies the policy document's Resource and Condition (``aws:ResourceTag``,
   ``aws:RequestTag``, ``aws:TagKeys``, the ``${aws:PrincipalAccount}`` variable) to the very requests the rotator
   sends (recorded in test 1) and to the requests it must be refused: a key for a user without the selection tag,
   a write to a secret without the rotator's tag.

The assertions do not depend on which other tests ran (the session-wide recording is checked in conftest).
"""

from __future__ import annotations

import copy
import json
import re
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError
from conftest import (
    IAM_POLICY,
    IAM_README,
    REGION,
    AwsEnv,
    StartSignedMoto,
    client,
    run_cli,
    through_proxy,
    user_with_policy,
    wait_until,
    write_config,
)
from helpers import MotoServer
from iam_operations import OPTIONAL_KMS_ACTIONS, ROTATOR_OPERATIONS
from record_calls import RECORD_ENV, documented_actions, operations, policy_actions, read_calls

pytestmark = pytest.mark.timeout(180)

ACCOUNT = "123456789012"  # moto's default account
REMOTE_ROLE = "arn:aws:iam::111111111111:role/iam-key-rotator"
#: Why an action of the policy may go unused by the workload (the README says the same).
UNUSED_ALLOWED = {
    action: "called by Secrets Manager on the rotator's behalf, only with secrets.kms_key_id (a customer key)"
    for action in OPTIONAL_KMS_ACTIONS
}
#: Actions AWS also checks for a request ("Required permissions" of each operation in the API reference):
#: operation -> (request parameter that calls for it, extra action).
IMPLIED: dict[str, list[tuple[str, str]]] = {
    "secretsmanager:CreateSecret": [
        ("Tags", "secretsmanager:TagResource"),
        ("AddReplicaRegions", "secretsmanager:ReplicateSecretToRegions"),
    ],
}

CONFIG = """\
selection:
  path_prefix: /service/
policy:
  max_key_age: {max_key_age}
  grace_period: 2s
  retention: 2s
  disable_guard: hold
  quiet_period: 1s
  max_hold: 1h
aws:
  validation_timeout: 10s
  max_calls_per_second: 1000
"""

#: Seconds past a policy duration before the next sweep: the rotator decides on AWS's time, which it reads from
#: whole-second ``Date`` headers (rotator/awsclock.py), so a duration can look up to a second shorter to it.
AWS_TIME_MARGIN = 1.2


def as_list(value: Any) -> list[Any]:
    return [value] if isinstance(value, str) else list(value)


#: Opt-in statements the workloads below need besides the base policy (deploy/iam/optional/).
OPTIONAL_IN_WORKLOAD = ("assume-role", "kms", "sns-notifications")
#: The notification topic of the workload (optional/sns-notifications.json scopes sns:Publish to this name).
TOPIC = f"arn:aws:sns:{REGION}:{ACCOUNT}:iam-key-rotator"


def load_policy(*optional: str) -> dict[str, Any]:
    """The base policy plus the statements of ``optional`` files (``deploy/iam/optional/<name>.json``)."""
    document: dict[str, Any] = json.loads(IAM_POLICY.read_text(encoding="utf-8"))
    for name in optional:
        extra = json.loads((IAM_POLICY.parent / "optional" / f"{name}.json").read_text(encoding="utf-8"))
        document["Statement"] = as_list(document["Statement"]) + as_list(extra["Statement"])
    return document


#: Tags of the resources the requests address, for ``aws:ResourceTag`` (the request does not carry them).
ResourceTags = dict[str, dict[str, str]]


def needed_actions(call: dict[str, Any]) -> list[str]:
    """The IAM actions AWS checks for one recorded request."""
    action = f"{call['service']}:{call['operation']}"
    return [action] + [extra for param, extra in IMPLIED.get(action, []) if call["params"].get(param)]


def cli(aws: AwsEnv, config: Path, record: Path, *args: str) -> str:
    result = run_cli(list(args), aws, config, env={RECORD_ENV: str(record)})
    assert result.returncode == 0, f"rotator {' '.join(args)}: {result.stderr}"
    return result.stdout


# -- a small evaluator of identity policies: Action, Resource, the Condition operators the policy uses --------


def _wildcard(pattern: str) -> re.Pattern[str]:
    return re.compile("".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern))


def matches(pattern: str, value: str) -> bool:
    return _wildcard(pattern).fullmatch(value) is not None


def expand(pattern: str) -> str:
    """Policy variables as AWS resolves them for the rotator's role in ``ACCOUNT``."""
    return pattern.replace("${aws:PrincipalAccount}", ACCOUNT)


def tags_of(call: dict[str, Any], users: ResourceTags, secrets: ResourceTags) -> dict[str, str]:
    """The tags of the resource ``call`` addresses (none for a secret it creates: it does not exist yet)."""
    params = call["params"]
    if call["service"] == "iam" and params.get("UserName"):
        return users.get(params["UserName"], {})
    if call["service"] == "secretsmanager" and call["operation"] != "CreateSecret":
        return secrets.get(params.get("SecretId") or params.get("Name") or "", {})
    return {}


def resource_of(call: dict[str, Any], paths: dict[str, str], key_owners: dict[str, str]) -> str:
    """The ARN AWS authorizes ``call`` against ("*" for operations without a resource type)."""
    params = call["params"]
    if call["service"] == "iam":
        user = params.get("UserName") or key_owners.get(params.get("AccessKeyId", ""))
        if user is None:
            assert "AccessKeyId" not in params, f"cannot tell whose key {params['AccessKeyId']} is"
            return "*"
        return f"arn:aws:iam::{ACCOUNT}:user{paths[user]}{user}"
    if call["service"] == "secretsmanager":
        name = params.get("SecretId") or params.get("Name")
        if name is None:
            return "*"
        # Secrets Manager appends "-" and 6 random characters to every secret's ARN.
        return name if name.startswith("arn:") else f"arn:aws:secretsmanager:{REGION}:{ACCOUNT}:secret:{name}-AbC123"
    # sts:AssumeRole is authorized against the role, sns:Publish against the topic.
    return str(params.get("RoleArn") or params.get("TopicArn") or "*")


def condition_values(call: dict[str, Any], key: str) -> list[str]:
    params = call["params"]
    if key.startswith("aws:ResourceTag/"):
        value = call.get("resource_tags", {}).get(key.split("/", 1)[1])
        return [] if value is None else [value]
    if key == "aws:TagKeys":
        return list(params.get("Tags", {})) or list(params.get("TagKeys", []))
    if key.startswith("aws:RequestTag/"):
        value = params.get("Tags", {}).get(key.split("/", 1)[1])
        return [] if value is None else [value]
    raise AssertionError(f"the policy uses condition key {key}: teach this evaluator about it")


def condition_holds(condition: dict[str, dict[str, Any]], call: dict[str, Any]) -> bool:
    for operator, entries in condition.items():
        for key, expected in entries.items():
            patterns, values = as_list(expected), condition_values(call, key)
            if operator == "StringEquals":
                ok = bool(values) and all(v in patterns for v in values)
            elif operator == "StringLike":
                ok = bool(values) and all(any(matches(p, v) for p in patterns) for v in values)
            elif operator == "ForAllValues:StringLike":
                ok = all(any(matches(p, v) for p in patterns) for v in values)
            else:
                raise AssertionError(f"the policy uses condition operator {operator}: teach this evaluator about it")
            if not ok:
                return False
    return True


def allowing_statements(document: dict[str, Any], action: str, resource: str, call: dict[str, Any]) -> list[str]:
    """Sids of the Allow statements that grant ``action`` on ``resource`` for this request."""
    sids = []
    for statement in as_list(document["Statement"]):
        if statement["Effect"] != "Allow" or not any(matches(a, action) for a in as_list(statement["Action"])):
            continue
        if not any(matches(expand(r), resource) for r in as_list(statement["Resource"])):
            continue
        if condition_holds(statement.get("Condition", {}), call):
            sids.append(statement.get("Sid", "?"))
    return sids


def test_evaluator_denies_what_the_policy_does_not_grant() -> None:
    """The evaluator itself: scoping and conditions do deny (else test 1 would prove nothing)."""
    document = load_policy(*OPTIONAL_IN_WORKLOAD)
    paths = {"app": "/service/", "human": "/", "admin": "/"}
    users: ResourceTags = {"app": {"rotator": "enabled"}, "human": {"team": "x"}, "admin": {}}
    secrets: ResourceTags = {"iam-keys/app": {"rotator:managed": "true", "rotator:user": "app"}, "iam-keys/hand": {}}

    def allowed(service: str, operation: str, **params: Any) -> bool:
        call: dict[str, Any] = {"service": service, "operation": operation, "params": params}
        call["resource_tags"] = tags_of(call, users, secrets)
        return bool(allowing_statements(document, f"{service}:{operation}", resource_of(call, paths, {}), call))

    assert allowed("iam", "CreateAccessKey", UserName="app")
    assert not allowed("iam", "CreateAccessKey", UserName="human")  # no selection tag: refused, whatever its path
    assert not allowed("iam", "CreateAccessKey", UserName="admin")  # the issue: an admin at path "/"
    assert not allowed("iam", "UpdateAccessKey", UserName="admin", AccessKeyId="AKIA")
    assert not allowed("iam", "DeleteAccessKey", UserName="admin", AccessKeyId="AKIA")
    assert not allowed("iam", "CreateAccessKey")  # no user: the caller itself, on "*"
    assert allowed("iam", "ListAccessKeys", UserName="admin")  # reads answer for any user (see the README)
    assert allowed("iam", "TagUser", UserName="app", Tags={"rotator:rotation-started": "x"})
    assert not allowed("iam", "TagUser", UserName="admin", Tags={"rotator:rotation-started": "x"})
    assert not allowed("iam", "TagUser", UserName="app", Tags={"team": "x"})  # only rotator:* tags
    assert not allowed("iam", "TagUser", UserName="human", Tags={"rotator": "enabled"})  # cannot select a user
    assert not allowed("iam", "UntagUser", UserName="app", TagKeys=["rotator:x", "owner"])
    assert allowed("secretsmanager", "CreateSecret", Name="iam-keys/app", Tags={"rotator:managed": "true"})
    assert not allowed("secretsmanager", "CreateSecret", Name="iam-keys/app", Tags={})  # the tag is required
    assert not allowed("secretsmanager", "CreateSecret", Name="prod/app", Tags={"rotator:managed": "true"})
    assert allowed("secretsmanager", "PutSecretValue", SecretId="iam-keys/app")
    assert not allowed("secretsmanager", "PutSecretValue", SecretId="iam-keys/hand")  # a secret the rotator did not tag
    assert not allowed("secretsmanager", "UpdateSecretVersionStage", SecretId="iam-keys/hand")
    assert not allowed("secretsmanager", "TagResource", SecretId="iam-keys/hand", Tags={"rotator:x": "y"})
    assert allowed("secretsmanager", "DescribeSecret", SecretId="iam-keys/hand")  # read: "not ours", not denied
    assert not allowed("secretsmanager", "PutSecretValue", SecretId="other/app")
    assert allowed("sts", "AssumeRole", RoleArn=REMOTE_ROLE)
    assert not allowed("sts", "AssumeRole", RoleArn="arn:aws:iam::111111111111:role/admin")
    assert not allowed("iam", "ListRoles")
    # Opt-in: without optional/assume-role.json the base policy cannot leave its account.
    base = load_policy()
    call = {"service": "sts", "operation": "AssumeRole", "params": {"RoleArn": REMOTE_ROLE}}
    assert not allowing_statements(base, "sts:AssumeRole", REMOTE_ROLE, call)
    # A request can need more than its own action: CreateSecret with tags also needs TagResource (granted), with
    # replicas also ReplicateSecretToRegions (an optional addition the README describes, not in the policy).
    create = {
        "service": "secretsmanager",
        "operation": "CreateSecret",
        "params": {"Name": "iam-keys/app", "Tags": {"rotator:managed": "true"}, "AddReplicaRegions": ["eu-west-1"]},
    }
    assert needed_actions(create) == [
        "secretsmanager:CreateSecret",
        "secretsmanager:TagResource",
        "secretsmanager:ReplicateSecretToRegions",
    ]
    create["resource_tags"] = tags_of(create, users, secrets)
    resource = resource_of(create, paths, {})
    granted = [bool(allowing_statements(document, a, resource, create)) for a in needed_actions(create)]
    assert granted == [True, True, False]


# -- 1. what the rotator sends == what the policy allows ------------------------------------------------------


def remote_account(aws: AwsEnv, role: str = REMOTE_ROLE) -> Any:
    """IAM of the account behind ``role`` (moto keeps one backend per account)."""
    creds = aws.client("sts").assume_role(RoleArn=role, RoleSessionName="seed")["Credentials"]
    return client(aws.url, "iam", creds["AccessKeyId"], creds["SecretAccessKey"], creds["SessionToken"])


@pytest.fixture
def aws(moto_server: MotoServer) -> Iterator[AwsEnv]:
    """Through the fault proxy, whose CloudTrail stand-in answers ``cloudtrail:LookupEvents`` (moto has none)."""
    yield from through_proxy(moto_server)


def test_policy_allows_every_call_sent_and_nothing_unused(aws: AwsEnv, tmp_path: Path) -> None:
    record = tmp_path / "calls.jsonl"
    aws.client("sns").create_topic(Name="iam-key-rotator")
    config = write_config(tmp_path, CONFIG.format(max_key_age="6s") + f"notifications: {{sns_topic_arn: '{TOPIC}'}}\n")
    remote_config = tmp_path / "remote.yaml"
    remote_config.write_text(config.read_text() + f"accounts: ['{REMOTE_ROLE}']\n")
    paths = {"app": "/service/", "leaky": "/service/", "remote": "/service/", "human": "/"}
    key_owners: dict[str, str] = {}
    for user in ("app", "leaky"):
        key_owners[aws.user(user, path="/service/")[0]] = user
    aws.user("human", path="/", managed=False)  # outside the managed path: the rotator must not touch it
    remote_iam = remote_account(aws)
    remote_iam.create_user(UserName="remote", Path="/service/", Tags=[{"Key": "rotator", "Value": "enabled"}])
    key_owners[remote_iam.create_access_key(UserName="remote")["AccessKey"]["AccessKeyId"]] = "remote"

    # Read-only commands, and the other account through sts:AssumeRole, side by side.
    jobs = [
        (config, ["plan", "--json"]),
        (config, ["inventory", "--json"]),
        (config, ["sweep", "--dry-run"]),
        (remote_config, ["sweep"]),  # bootstrap in the other account
    ]
    with ThreadPoolExecutor(len(jobs)) as pool:
        outputs = list(pool.map(lambda job: cli(aws, job[0], record, *job[1]), jobs))
    assert {(s["user"], s["action"]) for s in json.loads(outputs[0])} == {("app", "rotate"), ("leaky", "rotate")}
    assert len(remote_iam.list_access_keys(UserName="remote")["AccessKeyMetadata"]) == 2, "no bootstrap there"

    cli(aws, config, record, "sweep")  # bootstrap: new keys, secrets, user and secret tags
    t_bootstrap = time.time()
    (k0,) = [k for k, o in key_owners.items() if o == "app"]
    k1 = aws.secret("app")["AccessKeyId"]
    k1_created = time.time()
    cli(aws, config, record, "rotate", "leaky", "--revoke")  # forced: PutSecretValue, stages, disable at once
    wait_until(t_bootstrap + 2 + AWS_TIME_MARGIN)
    cli(aws, config, record, "sweep")  # grace over: app's old key disabled (the guard reads its last use)
    t_disabled = time.time()
    assert aws.keys("app") == {k0: "Inactive", k1: "Active"}
    wait_until(max(t_disabled + 2, k1_created + 6) + AWS_TIME_MARGIN)
    cli(aws, config, record, "sweep")  # retention over: deleted; k1 past max_key_age: AWSPENDING -> AWSCURRENT
    assert k0 not in aws.keys("app")
    assert aws.secret("app")["AccessKeyId"] not in (k0, k1)
    assert aws.secret("app", "AWSPREVIOUS")["AccessKeyId"] == k1
    # Someone writes a version by hand: its id is not the rotator's, so it reads the value to learn the key.
    by_hand = aws.secret("leaky")
    aws.sm.put_secret_value(SecretId="iam-keys/leaky", SecretString=json.dumps(by_hand), VersionStages=["AWSCURRENT"])
    (leaky,) = [r for r in json.loads(cli(aws, config, record, "inventory", "--json")) if r["user"] == "leaky"]
    assert by_hand["AccessKeyId"] in leaky["secret"]["version_keys"].values()
    # A quarantine response whose policy a person has since detached: the sweep reads the user's attached
    # policies fresh (iam:ListAttachedUserPolicies) and forgets the record.
    aws.sm.tag_resource(
        SecretId="iam-keys/app",
        Tags=[
            {"Key": "rotator:quarantine-answered-at", "Value": datetime.now(UTC).isoformat()},
            {"Key": "rotator:quarantine-keys", "Value": k0},
            {"Key": "rotator:quarantine-policies", "Value": "AWSCompromisedKeyQuarantineV3"},
        ],
    )
    cli(aws, config, record, "sweep")
    assert {t["Key"]: t["Value"] for t in aws.sm.describe_secret(SecretId="iam-keys/app")["Tags"]}[
        "rotator:quarantine-answered-at"
    ] == ""

    # A crash between CreateAccessKey and its ownership record leaves an unrecorded key near the intent mark:
    # the plan asks CloudTrail (the proxy's stand-in) who created it.
    now = datetime.now(UTC).isoformat()
    aws.iam.create_user(UserName="crashed", Path="/service/", Tags=[{"Key": "rotator", "Value": "enabled"}])
    aws.iam.tag_user(UserName="crashed", Tags=[{"Key": "rotator:rotation-started", "Value": now}])
    key_owners[aws.iam.create_access_key(UserName="crashed")["AccessKey"]["AccessKeyId"]] = "crashed"
    paths["crashed"] = "/service/"
    cli(aws, config, record, "plan", "--json")

    calls = read_calls(record)
    for call in calls:
        if call["operation"] == "CreateAccessKey" and "CreatedAccessKeyId" in call["params"]:
            key_owners[call["params"]["CreatedAccessKeyId"]] = call["params"]["UserName"]
    sent = operations(calls)
    policy = load_policy(*OPTIONAL_IN_WORKLOAD)
    allowed = policy_actions(policy)
    # The resources' tags as AWS would see them: every managed user carries the selection tag (the unmanaged
    # "human" none), every secret the rotator wrote was created by it with its tag (recorded CreateSecret calls).
    user_tags: ResourceTags = {user: {"rotator": "enabled"} for user in paths if user != "human"}
    secret_tags: ResourceTags = {
        c["params"]["Name"]: dict(c["params"].get("Tags") or {}) for c in calls if c["operation"] == "CreateSecret"
    }
    assert secret_tags and all(t.get("rotator:managed") == "true" for t in secret_tags.values())
    print("operations sent:", " ".join(sorted(sent)))

    # (a) every operation sent is an action of the policy ...
    assert sent <= allowed, f"sent but not in the policy: {sorted(sent - allowed)}"
    # (b) ... and the policy allows nothing the rotator does not send.
    unused = allowed - sent
    assert unused <= UNUSED_ALLOWED.keys(), f"allowed but never sent: {sorted(unused - UNUSED_ALLOWED.keys())}"
    # The hand-written list (tests/deploy/iam_operations.py, what test_iam_policy.py checks) is the real one.
    assert sent == ROTATOR_OPERATIONS, (
        f"iam_operations.py lacks {sorted(sent - ROTATOR_OPERATIONS)}, lists unsent {sorted(ROTATOR_OPERATIONS - sent)}"
    )
    # (c) every request is allowed with its resource and conditions, including the actions it implies.
    denied = []
    for call in calls:
        resource = resource_of(call, paths, key_owners)
        owner = call["params"].get("UserName") or key_owners.get(call["params"].get("AccessKeyId", ""))
        call["resource_tags"] = tags_of(
            {**call, "params": {**call["params"], "UserName": owner}}, user_tags, secret_tags
        )
        for action in needed_actions(call):
            if not allowing_statements(policy, action, resource, call):
                denied.append((action, resource, call["params"]))
    assert not denied, "requests the policy would deny:\n" + "\n".join(map(str, denied))
    # Nothing was sent about the unmanaged user, nothing failed except "no such secret" lookups.
    assert not [c for c in calls if c["params"].get("UserName") == "human"]
    failures = {(f"{c['service']}:{c['operation']}", c["status"]) for c in calls if (c["status"] or 500) >= 400}
    assert {op for op, _ in failures} <= {"secretsmanager:DescribeSecret"}, failures


# -- 2. the lifecycle with credentials that hold only the policy's actions -----------------------------------

# Unsigned calls before moto starts checking signatures: the rotator user, its policy, the attachment, its key;
# the role for the multi-account inventory and its policy; the managed user and its key.
SETUP_CALLS = 8
ROLE = f"arn:aws:iam::{ACCOUNT}:role/iam-key-rotator"
TRUST_ANYONE = json.dumps(
    {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Principal": {"AWS": "*"}, "Action": "sts:AssumeRole"}]}
)


def for_moto(document: dict[str, Any]) -> dict[str, Any]:
    """The policy with the same statements, actions and conditions; Resource widened where moto needs it.

    moto checks Action but authorizes IAM user and Secrets Manager requests against the resource "*", so a scoped
    Resource would deny them all. Only for sts:AssumeRole does it pass the real resource (the role ARN): that
    statement keeps its scope, and moto enforces it. Conditions are not evaluated by moto; they stay as written.
    """
    widened = copy.deepcopy(document)
    for statement in as_list(widened["Statement"]):
        if set(as_list(statement["Action"])) != {"sts:AssumeRole"}:
            statement["Resource"] = "*"
    assert policy_actions(widened) == policy_actions(document)
    return widened


@pytest.fixture
def least_privilege(signed_moto: StartSignedMoto) -> AwsEnv:
    """The rotator's credentials: an IAM user whose only permissions are the policy's actions."""
    anonymous = signed_moto(SETUP_CALLS)
    env, arn = user_with_policy(anonymous, "iam-key-rotator", json.dumps(for_moto(load_policy(*OPTIONAL_IN_WORKLOAD))))
    iam = anonymous.iam
    iam.create_role(RoleName="iam-key-rotator", AssumeRolePolicyDocument=TRUST_ANYONE)
    iam.attach_role_policy(RoleName="iam-key-rotator", PolicyArn=arn)
    anonymous.user("app", path="/service/")  # create_user + create_access_key: the 8th unsigned call
    env.created_secrets += anonymous.created_secrets
    return env


def denied(call: Any) -> bool:
    try:
        call()
    except ClientError as exc:
        return exc.response["Error"]["Code"] in ("AccessDenied", "AccessDeniedException")
    return False


def test_lifecycle_with_only_the_policy_actions(least_privilege: AwsEnv, tmp_path: Path) -> None:
    aws = least_privilege  # the assertions below read AWS with the same restricted credentials
    record = tmp_path / "calls.jsonl"
    config = write_config(tmp_path, CONFIG.format(max_key_age="20s"))
    (k0,) = aws.keys("app")

    # Enforcement is on: outside the policy's actions, or outside its AssumeRole scope, the key is refused.
    assert denied(aws.iam.list_roles)
    assert denied(lambda: aws.iam.create_user(UserName="intruder"))
    assert denied(lambda: aws.client("s3").list_buckets())
    other_role = f"arn:aws:iam::{ACCOUNT}:role/admin"
    assert denied(lambda: aws.client("sts").assume_role(RoleArn=other_role, RoleSessionName="rotator"))

    cli(aws, config, record, "sweep")  # bootstrap
    t_published = time.time()
    keys = aws.keys("app")
    (k1,) = set(keys) - {k0}
    assert keys == {k0: "Active", k1: "Active"}
    assert aws.secret("app")["AccessKeyId"] == k1

    wait_until(t_published + 2 + AWS_TIME_MARGIN)
    cli(aws, config, record, "sweep")  # grace over: disabled
    t_disabled = time.time()
    assert aws.keys("app") == {k0: "Inactive", k1: "Active"}

    wait_until(t_disabled + 2 + AWS_TIME_MARGIN)
    cli(aws, config, record, "sweep")  # retention over: deleted
    assert aws.keys("app") == {k1: "Active"}

    created = aws.iam.list_access_keys(UserName="app")["AccessKeyMetadata"][0]["CreateDate"].timestamp()
    wait_until(created + 20.5)
    cli(aws, config, record, "sweep")  # age rotation by the protocol
    keys = aws.keys("app")
    (k2,) = set(keys) - {k1}
    assert keys == {k1: "Active", k2: "Active"}
    assert aws.secret("app")["AccessKeyId"] == k2 and aws.secret("app", "AWSPREVIOUS")["AccessKeyId"] == k1

    # Multi-account: the same account through the role (which holds the same policy), by sts:AssumeRole.
    through_role = tmp_path / "role.yaml"
    through_role.write_text(config.read_text() + f"accounts: ['{ROLE}']\n")
    (seen,) = json.loads(cli(aws, through_role, record, "inventory", "--json"))
    assert seen["user"] == "app" and {k["key_id"]: k["role"] for k in seen["keys"]} == {k1: "previous", k2: "current"}

    calls = read_calls(record)
    sent = operations(calls)
    assert "sts:AssumeRole" in sent
    assert sent <= policy_actions(load_policy(*OPTIONAL_IN_WORKLOAD))
    refused = [c for c in calls if c["status"] in (401, 403)]
    assert not refused, f"denied with only the policy's actions: {refused}"


# -- 3. optional features: what they need beyond the policy is what the README tells operators to add --------


def test_optional_features_send_only_what_the_readme_documents(aws: AwsEnv, tmp_path: Path) -> None:
    """AWS Organizations discovery and secret replicas: their extra actions are exactly those README.md names."""
    org = aws.client("organizations")
    org.create_organization(FeatureSet="ALL")
    root = org.list_roots()["Roots"][0]["Id"]
    prod = org.create_organizational_unit(ParentId=root, Name="prod")["OrganizationalUnit"]["Id"]
    nested = org.create_organizational_unit(ParentId=prod, Name="nested")["OrganizationalUnit"]["Id"]
    member = org.create_account(Email="member@example.com", AccountName="member")["CreateAccountStatus"]["AccountId"]
    org.move_account(AccountId=member, SourceParentId=root, DestinationParentId=nested)
    member_iam = remote_account(aws, f"arn:aws:iam::{member}:role/iam-key-rotator")
    member_iam.create_user(UserName="member", Path="/service/", Tags=[{"Key": "rotator", "Value": "enabled"}])
    member_iam.create_access_key(UserName="member")

    record = tmp_path / "calls.jsonl"
    base = CONFIG.format(max_key_age="1h")
    in_ous = write_config(tmp_path, base + f"organization: {{role_name: iam-key-rotator, include_ous: ['{prod}']}}\n")
    everywhere = tmp_path / "everywhere.yaml"
    everywhere.write_text(
        base + "organization: {role_name: iam-key-rotator}\nsecrets: {replica_regions: [eu-west-1]}\n"
    )
    with ThreadPoolExecutor(2) as pool:
        inventory, _ = pool.map(
            lambda job: cli(aws, job[0], record, *job[1]), [(in_ous, ["inventory", "--json"]), (everywhere, ["sweep"])]
        )
    assert [(r["account"], r["user"]) for r in json.loads(inventory)] == [(member, "member")]  # nested OU, only
    assert len(member_iam.list_access_keys(UserName="member")["AccessKeyMetadata"]) == 2  # bootstrapped

    needed = {action for call in read_calls(record) for action in needed_actions(call)}
    optional = needed - policy_actions(load_policy("assume-role"))
    readme = documented_actions(IAM_README.read_text(encoding="utf-8"))
    assert optional <= readme, f"needed, but neither in the policy nor in the README: {sorted(optional - readme)}"
    for prefix in ("organizations:", "secretsmanager:ReplicateSecretToRegions"):
        documented = {a for a in readme if a.startswith(prefix)}
        used = {a for a in optional if a.startswith(prefix)}
        assert documented == used, f"README names {sorted(documented - used)}, never needed"
    # ... and the opt-in files written out for them grant exactly that.
    written = policy_actions(load_policy("organizations", "secret-replicas")) - policy_actions(load_policy())
    assert optional == written, f"needed {sorted(optional)}, optional/*.json grant {sorted(written)}"
