"""Consumers of a rotated key keep working: the continuity proof of the whole design, end to end.

The daemon (``rotator run``, a process) rotates one user's key every few seconds against a moto server that
checks request signatures, with the guard on (``disable_guard: hold``). Three consumers in threads of this test
sign ``sts:GetCallerIdentity`` every 100 ms:

* **(a) credential_process**: botocore's own ``credential_process`` provider runs ``rotator credential-process``.
  botocore refreshes such credentials once fewer than 15 minutes (its advisory window) remain before their
  ``Expiration``, so ``--refresh 905s`` makes it re-run the command about every 5 seconds, a rotation's pace here.
* **(b) re-read on failure**: signs with the key it read from ``AWSCURRENT``; on an authentication failure it
  reads ``AWSCURRENT`` again and retries once.
* **(c) pinned**: signs with the first key forever, as a consumer nobody updated.

Over at least 3 full rotations (published, the replaced key held while still used, disabled, deleted), (a) and
(b) see no failed call. (c) keeps its key in use, so the guard holds it (``key.held``, naming ``sts`` and the
region as the last user) until ``max_hold``; then it is disabled, and once deleted (c)'s calls fail.

moto differs from AWS in one point: an Inactive key still authenticates there. So "(c) fails once its key is
disabled" is checked as: IAM shows the key Inactive once ``max_hold`` has passed, and the calls of (c) fail
from its deletion on (a deleted key does not authenticate in moto either).
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import boto3
import botocore.session
import pytest
from botocore.exceptions import BotoCoreError, ClientError
from conftest import (
    ROOT,
    AwsEnv,
    StartSignedMoto,
    assert_no_secrets,
    cli_argv,
    free_port,
    parse_events,
    user_with_policy,
    write_config,
)

pytestmark = pytest.mark.timeout(240)

USER = "app"
SECRET_ID = f"iam-keys/{USER}"
REGION = "us-east-1"
SETUP_CALLS = 4  # unsigned: the admin user, its policy, the attachment, its key
ADMIN_POLICY = json.dumps({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]})
CALL_PERIOD = 0.1  # seconds between a consumer's calls
ROTATIONS = 3  # full rotations (published ... replaced key deleted) while the consumers run
DEADLINE = 170.0  # seconds for all of it
#: botocore starts refreshing 900 s (15 min) before ``Expiration``: 905 s gives a refresh about every 5 s.
REFRESH = "905s"
#: Errors with which AWS (and moto) refuse a request's credentials.
AUTH_ERRORS = frozenset(
    {"InvalidClientTokenId", "SignatureDoesNotMatch", "UnrecognizedClientException", "InvalidAccessKeyId"}
)

GRACE, RETENTION, MAX_HOLD = 3, 3, 6
CONFIG = f"""\
schedule: {{interval: 2s}}
policy:
  max_key_age: 10s
  grace_period: {GRACE}s
  retention: {RETENTION}s
  disable_guard: hold
  quiet_period: 2s
  max_hold: {MAX_HOLD}s
metrics: {{address: 127.0.0.1, port: {{port}}}}
aws:
  validation_timeout: 10s
  max_calls_per_second: 1000
"""


# -- consumers -----------------------------------------------------------------------------------------------


@dataclass
class Call:
    started: float
    ended: float
    key_id: str | None
    error: str | None = None


@dataclass
class Consumer:
    """One consumer thread's record: every call, and what it did to stay current."""

    name: str
    calls: list[Call] = field(default_factory=list)
    rereads: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, call: Call) -> None:
        with self.lock:
            self.calls.append(call)

    def snapshot(self) -> list[Call]:
        with self.lock:
            return list(self.calls)

    @property
    def failures(self) -> list[Call]:
        return [call for call in self.snapshot() if call.error is not None]

    def keys_used(self) -> list[str]:
        """The key ids of successful calls, in the order first used."""
        seen: dict[str, None] = {}
        for call in self.snapshot():
            if call.error is None and call.key_id:
                seen.setdefault(call.key_id)
        return list(seen)

    def summary(self) -> str:
        calls = self.snapshot()
        failed = [c for c in calls if c.error]
        codes = ", ".join(sorted({c.error for c in failed if c.error}))
        return (
            f"consumer {self.name}: {len(calls)} calls, {len(failed)} failed{f' ({codes})' if codes else ''}, "
            f"{len(self.keys_used())} keys used, {self.rereads} re-reads"
        )


def error_code(exc: Exception) -> str:
    if isinstance(exc, ClientError):
        return str(exc.response.get("Error", {}).get("Code", "ClientError"))
    return type(exc).__name__


def run_calls(consumer: Consumer, stop: threading.Event, call: Callable[[], str | None]) -> None:
    """Call every CALL_PERIOD until ``stop``; ``call`` returns the key id it signed with, or raises."""
    while not stop.is_set():
        started = time.time()
        try:
            key_id = call()
            consumer.record(Call(started, time.time(), key_id))
        except (ClientError, BotoCoreError) as exc:
            consumer.record(Call(started, time.time(), None, error_code(exc)))
        stop.wait(CALL_PERIOD)


def credential_process_consumer(
    consumer: Consumer, stop: threading.Event, url: str, config_file: Path, credentials_file: Path
) -> None:
    """(a): botocore's credential_process provider, as a profile in the consumer's AWS config file."""
    session = botocore.session.Session(profile="consumer")
    session.set_config_variable("config_file", str(config_file))
    session.set_config_variable("credentials_file", str(credentials_file.with_suffix(".none")))
    client = session.create_client("sts", region_name=REGION, endpoint_url=url)
    credentials = session.get_credentials()
    assert credentials is not None and credentials.method == "custom-process"

    def call() -> str | None:
        key_id = credentials.get_frozen_credentials().access_key  # refreshes like the signer does
        client.get_caller_identity()
        return key_id

    run_calls(consumer, stop, call)


def rereading_consumer(consumer: Consumer, stop: threading.Event, url: str, reader: AwsEnv, seen: list[str]) -> None:
    """(b): a static key from AWSCURRENT; on an authentication failure, AWSCURRENT again and one retry."""
    session = boto3.session.Session()
    secrets = session.client(
        "secretsmanager",
        endpoint_url=url,
        region_name=REGION,
        aws_access_key_id=reader.access_key,
        aws_secret_access_key=reader.secret_key,
    )

    def current() -> tuple[str, Any]:
        document = json.loads(secrets.get_secret_value(SecretId=SECRET_ID, VersionStage="AWSCURRENT")["SecretString"])
        seen.append(document["SecretAccessKey"])
        sts = session.client(
            "sts",
            endpoint_url=url,
            region_name=REGION,
            aws_access_key_id=document["AccessKeyId"],
            aws_secret_access_key=document["SecretAccessKey"],
        )
        return str(document["AccessKeyId"]), sts

    state = list(current())

    def call() -> str | None:
        key_id, sts = state
        try:
            sts.get_caller_identity()
            return str(key_id)
        except ClientError as exc:
            if error_code(exc) not in AUTH_ERRORS:
                raise
        consumer.rereads += 1
        state[:] = current()
        state[1].get_caller_identity()  # the one retry: a failure here counts
        return str(state[0])

    run_calls(consumer, stop, call)


def pinned_consumer(consumer: Consumer, stop: threading.Event, url: str, key_id: str, secret: str) -> None:
    """(c): the first key, forever."""
    sts = boto3.session.Session().client(
        "sts", endpoint_url=url, region_name=REGION, aws_access_key_id=key_id, aws_secret_access_key=secret
    )

    def call() -> str | None:
        sts.get_caller_identity()
        return key_id

    run_calls(consumer, stop, call)


# -- the daemon --------------------------------------------------------------------------------------------------


class DaemonProcess:
    def __init__(self, tmp_path: Path, config: Path, env: dict[str, str]) -> None:
        self.stderr_path = tmp_path / "run.stderr"
        self.stdout_path = tmp_path / "run.stdout"
        self._stderr = self.stderr_path.open("wb")
        self._stdout = self.stdout_path.open("wb")
        self.proc = subprocess.Popen(
            [*cli_argv(), "--config", str(config), "run"], stdout=self._stdout, stderr=self._stderr, env=env, cwd=ROOT
        )

    def events(self, name: str | None = None) -> list[dict[str, Any]]:
        events = parse_events(self.stderr_path.read_text())
        return [e for e in events if name is None or e.get("event") == name]

    def alive(self) -> None:
        assert self.proc.poll() is None, f"the daemon exited:\n{self.stderr_path.read_text()[-3000:]}"

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=25)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._stderr.close()
        self._stdout.close()


@pytest.fixture
def signed_aws(signed_moto: StartSignedMoto) -> AwsEnv:
    env, _ = user_with_policy(signed_moto(SETUP_CALLS), "rotator-admin", ADMIN_POLICY)
    return env


@pytest.fixture
def no_aws_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Consumer (a) must get its key from credential_process, not from this process's environment."""
    for name in list(os.environ):
        if name.startswith(("AWS_", "ROTATOR_")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


@pytest.fixture
def threads() -> Iterator[tuple[threading.Event, list[threading.Thread]]]:
    stop = threading.Event()
    started: list[threading.Thread] = []
    yield stop, started
    stop.set()
    for thread in started:
        thread.join(timeout=30)


def at(event: dict[str, Any]) -> float:
    return datetime.fromisoformat(str(event["timestamp"]).replace("Z", "+00:00")).timestamp()


def consumer_profile(tmp_path: Path, aws: AwsEnv) -> tuple[Path, Path]:
    """The consumer's AWS config file (profile ``consumer``) and the reader's credentials file.

    botocore starts the credential process with this process's environment (no AWS_* here): the command line
    gives the endpoint, the region and the reader's profile (the rotator's admin key reads the secret).
    """
    credentials = tmp_path / "reader-credentials"
    credentials.write_text(
        f"[reader]\naws_access_key_id = {aws.access_key}\naws_secret_access_key = {aws.secret_key}\n"
    )
    credentials.chmod(0o600)
    command = [
        "/usr/bin/env",
        f"AWS_ENDPOINT_URL={aws.url}",
        f"AWS_REGION={REGION}",
        f"AWS_SHARED_CREDENTIALS_FILE={credentials}",
        f"AWS_CONFIG_FILE={tmp_path / 'no-config'}",
        *[sys.executable, "-m", "rotator", "credential-process"],
        *["--secret-id", SECRET_ID, "--refresh", REFRESH, "--profile", "reader"],
    ]
    config = tmp_path / "consumer-config"
    config.write_text(f"[profile consumer]\ncredential_process = {shlex.join(command)}\n")
    return config, credentials


def test_consumers_survive_rotations_and_a_pinned_key_is_held_then_disabled_then_fails(
    signed_aws: AwsEnv,
    tmp_path: Path,
    no_aws_environment: None,
    threads: tuple[threading.Event, list[threading.Thread]],
) -> None:
    aws = signed_aws
    stop, started = threads
    aws.user(USER)  # one pre-existing key, no secret: the daemon bootstraps at once
    config = write_config(tmp_path, CONFIG.replace("{port}", str(free_port())))
    daemon = DaemonProcess(tmp_path, config, aws.env)
    deadline = time.monotonic() + DEADLINE
    try:

        def wait_for(condition: Callable[[], object], what: str) -> None:
            while not condition():
                daemon.alive()
                assert time.monotonic() < deadline, f"timed out waiting for {what}:\n{summaries()}\n{tail()}"
                time.sleep(0.25)

        consumers = {name: Consumer(name) for name in ("a", "b", "c")}

        def summaries() -> str:
            return "\n".join(consumer.summary() for consumer in consumers.values())

        def tail() -> str:
            return daemon.stderr_path.read_text()[-4000:]

        wait_for(lambda: daemon.events("rotation.published"), "the bootstrap")
        first = aws.secret(USER)
        pinned = str(first["AccessKeyId"])
        secrets_seen: list[str] = []
        config_file, credentials_file = consumer_profile(tmp_path, aws)
        targets: dict[str, Callable[[], None]] = {
            "a": lambda: credential_process_consumer(consumers["a"], stop, aws.url, config_file, credentials_file),
            "b": lambda: rereading_consumer(consumers["b"], stop, aws.url, aws, secrets_seen),
            "c": lambda: pinned_consumer(consumers["c"], stop, aws.url, pinned, first["SecretAccessKey"]),
        }
        for name, target in targets.items():
            thread = threading.Thread(target=target, name=f"consumer-{name}", daemon=True)
            thread.start()
            started.append(thread)
        consumers_started = time.time()

        # Watch the pinned key in IAM while the daemon rotates: Active (held), Inactive, gone.
        statuses: list[tuple[float, str]] = []
        iam = aws.iam

        def rotations_done() -> bool:
            keys = iam.list_access_keys(UserName=USER)["AccessKeyMetadata"]
            status = next((key["Status"] for key in keys if key["AccessKeyId"] == pinned), "gone")
            if not statuses or statuses[-1][1] != status:
                statuses.append((time.time(), status))
            replaced = [e["previous_key_id"] for e in daemon.events("rotation.published") if at(e) > consumers_started]
            deleted = {e["key_id"] for e in daemon.events("key.deleted")}
            return len(replaced) >= ROTATIONS and set(replaced[:ROTATIONS]) <= deleted

        wait_for(rotations_done, f"{ROTATIONS} full rotations")
        time.sleep(1.0)  # (c) calls a few more times with its deleted key
        stop.set()
        for thread in started:
            thread.join(timeout=30)
            assert not thread.is_alive(), f"{thread.name} did not stop"

        report = summaries()
        print(f"\n{report}")
        published = daemon.events("rotation.published")
        print(
            f"rotation.published: {len(published)} (the bootstrap and {len(published) - 1} rotations); "
            f"key.held: {len(daemon.events('key.held'))}; key.deleted: {len(daemon.events('key.deleted'))}"
        )

        # (a) and (b) never failed. (a) followed every rotation by itself. (b) moved on only when its key was
        # deleted under it (moto still accepts an Inactive key), each time by one re-read; a rotation runs in the
        # sweep that deletes the key it waited for, so (b) may skip a key that was current only meanwhile.
        a, b, c = consumers["a"], consumers["b"], consumers["c"]
        for consumer in (a, b):
            assert consumer.snapshot(), report
            assert consumer.failures == [], report
        assert len(a.keys_used()) >= ROTATIONS + 1, report
        deleted_keys = {e["key_id"] for e in daemon.events("key.deleted")}
        assert b.rereads >= 2 and b.rereads == len(b.keys_used()) - 1, report
        assert set(b.keys_used()[:-1]) <= deleted_keys, report

        # (c): held while it used the key, until max_hold; then disabled (IAM says Inactive), then deleted.
        (rotated_away,) = [e for e in published if e.get("previous_key_id") == pinned]
        held = [e for e in daemon.events("key.held") if e["key_id"] == pinned]
        (disabled,) = [e for e in daemon.events("key.disabled") if e["key_id"] == pinned]
        (deleted,) = [e for e in daemon.events("key.deleted") if e["key_id"] == pinned]
        assert held, tail()
        assert all((e["last_used_service"], e["last_used_region"]) == ("sts", REGION) for e in held), held
        assert all(
            e["summary"].startswith("last used ")
            and " by sts in us-east-1; disabled once unused for 2s" in e["summary"]
            for e in held
        )
        assert max(at(e) for e in held) < at(disabled)
        assert disabled["loud"] is True and "max_hold" in disabled["reason"], disabled
        # Not before max_hold past its due time (grace after publication); tags keep whole seconds.
        assert at(disabled) - at(rotated_away) >= GRACE + MAX_HOLD - 1, (rotated_away, disabled)
        assert [status for _, status in statuses] == ["Active", "Inactive", "gone"], statuses
        assert at(deleted) - at(disabled) >= RETENTION - 1

        calls = c.snapshot()
        before_disable = [call for call in calls if call.ended < at(disabled)]
        after_delete = [call for call in calls if call.started > at(deleted)]
        assert before_disable and all(call.error is None for call in before_disable), report
        assert after_delete and all(call.error in AUTH_ERRORS for call in after_delete), report

        assert_no_secrets(
            [daemon.stderr_path.read_text(), daemon.stdout_path.read_text()],
            [*aws.created_secrets, *secrets_seen],
        )
    finally:
        daemon.close()
