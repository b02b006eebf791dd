"""Run the rotator CLI and record every AWS API call it sends (tests only; production code never sees this).

Usage: ``python tests/record_calls.py ARGS...`` behaves exactly like ``python -m rotator.cli ARGS...``. When
``$RECORD_AWS_CALLS_FILE`` names a file, every botocore client the process creates gets an ``after-call``
hook (fired once per API call, after AWS answered, retries included) that appends one JSON line per call::

    {"service": "iam", "operation": "UntagUser", "status": 200, "params": {"UserName": "app", "TagKeys": [...]}}

``service`` is botocore's service name, which for iam/secretsmanager/sts/kms is also the IAM action prefix.
``params`` keeps only what names the resource of the call or feeds a policy condition (user, access key id,
secret, role, request tags and tag keys), and for ``CreateAccessKey`` the new key's id; never a secret value.
Calls that were sent but never answered (connection errors) are recorded with ``"status": null``.

Nothing in ``rotator/`` knows about this: the wrapper is how the tests start the CLI (``conftest.cli_argv``).

The hook is installed by wrapping ``botocore.session.Session.create_client``: the rotator builds its own
``boto3.session.Session`` objects (one per account, one per new key under validation), so a hook on the
default session would miss them.
"""

from __future__ import annotations

import json
import os
import re
import sys
import threading
from pathlib import Path
from typing import Any

RECORD_ENV = "RECORD_AWS_CALLS_FILE"
ROOT = Path(__file__).resolve().parent.parent

_lock = threading.Lock()


def _identifying(params: dict[str, Any]) -> dict[str, Any]:
    """What names the resource of a call or feeds a policy condition; never a secret value."""
    keep: dict[str, Any] = {}
    for name in ("UserName", "AccessKeyId", "SecretId", "Name", "RoleArn", "KmsKeyId", "TopicArn"):
        if isinstance(params.get(name), str):
            keep[name] = params[name]
    tags = params.get("Tags")
    if isinstance(tags, list):  # tag values are key ids, timestamps and labels
        keep["Tags"] = {t["Key"]: t.get("Value") for t in tags if isinstance(t, dict) and "Key" in t}
    if isinstance(params.get("TagKeys"), list):
        keep["TagKeys"] = list(params["TagKeys"])
    if isinstance(params.get("AddReplicaRegions"), list):
        keep["AddReplicaRegions"] = [r.get("Region") for r in params["AddReplicaRegions"] if isinstance(r, dict)]
    return keep


def read_calls(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The recorded calls in ``path`` (none when it is empty or does not exist)."""
    if not str(path):
        return []
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def operations(calls: list[dict[str, Any]]) -> set[str]:
    """``service:Operation`` of each call (botocore's service names are the IAM action prefixes here)."""
    return {f"{call['service']}:{call['operation']}" for call in calls}


def policy_actions(document: dict[str, Any]) -> set[str]:
    """Every action an identity policy document allows (the rotator's policy has no wildcards)."""
    statements = document["Statement"]
    actions: set[str] = set()
    for statement in [statements] if isinstance(statements, dict) else statements:
        if statement.get("Effect") == "Allow":
            action = statement.get("Action", [])
            actions.update([action] if isinstance(action, str) else action)
    return actions


def documented_actions(markdown: str) -> set[str]:
    """Every ``service:Action`` a Markdown text names in backticks (deploy/iam/README.md's optional actions)."""
    return set(re.findall(r"`([a-z0-9-]+:[A-Z][A-Za-z0-9]+)`", markdown))


def install(path: str) -> None:
    """Record every call of every botocore client created from now on into ``path``."""
    import botocore.session  # noqa: PLC0415 - only when recording

    def write(record: dict[str, Any]) -> None:
        line = json.dumps(record, sort_keys=True) + "\n"
        with _lock, open(path, "a", encoding="utf-8") as out:
            out.write(line)

    def stash(params: dict[str, Any], context: dict[str, Any], **_: Any) -> None:
        context["recorded_params"] = _identifying(params)

    def record(model: Any, context: dict[str, Any], http_response: Any = None, parsed: Any = None, **_: Any) -> None:
        params = dict(context.get("recorded_params", {}))
        created = (parsed or {}).get("AccessKey", {}).get("AccessKeyId") if model.name == "CreateAccessKey" else None
        if created:
            params["CreatedAccessKeyId"] = created  # the id only, to map later calls to the user
        write(
            {
                "service": model.service_model.service_name,
                "operation": model.name,
                "status": getattr(http_response, "status_code", None),
                "params": params,
            }
        )

    original = botocore.session.Session.create_client

    def create_client(self: Any, *args: Any, **kwargs: Any) -> Any:
        client = original(self, *args, **kwargs)
        service = client.meta.service_model.service_name

        def unanswered(event_name: str, context: dict[str, Any], **_: Any) -> None:
            # Sent, but no answer (endpoint unreachable): event names end with the operation name.
            operation = event_name.rsplit(".", 1)[-1]
            write(
                {
                    "service": service,
                    "operation": operation,
                    "status": None,
                    "params": context.get("recorded_params", {}),
                }
            )

        client.meta.events.register("before-parameter-build", stash)
        client.meta.events.register("after-call", record)
        client.meta.events.register("after-call-error", unanswered)
        return client

    botocore.session.Session.create_client = create_client  # type: ignore[method-assign]


def main() -> int:
    # Same import path as ``python -m rotator.cli`` run from the repository root (not tests/).
    sys.path[0] = str(ROOT)
    path = os.environ.get(RECORD_ENV)
    if path:
        install(path)
    from rotator.cli import main as cli_main  # noqa: PLC0415 - after the hook is in place

    return cli_main(sys.argv[1:])


if __name__ == "__main__":
    raise SystemExit(main())
