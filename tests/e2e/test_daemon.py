"""``rotator run`` as a real process against a moto server over HTTP.

Each test starts the daemon as ``python -m rotator.cli --config X run`` with second-scale durations, talks
to it only the way operators and systemd do (HTTP, signals, the notify socket, stderr), and checks AWS
afterwards. Secrets seen during a run are collected so that no output may contain any of them (I7).
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError
from conftest import ROOT, AwsEnv, MotoServer, assert_no_secrets, aws_env, cli_argv, free_port, write_config
from prometheus_client.parser import text_string_to_metric_families

pytestmark = pytest.mark.timeout(120)

STOP_BOUND = 20.0  # seconds a SIGTERM may take: the step in flight, then exit


def config_text(
    port: int,
    *,
    interval: str = "2s",
    dry_run: bool = False,
    max_key_age: str = "8s",
    validation_timeout: str = "2s",
    lease_table: str | None = None,
    lease_ttl: str = "60s",
) -> str:
    return f"""\
schedule: {{interval: {interval}}}
policy:
  max_key_age: {max_key_age}
  grace_period: 3s
  retention: 3s
  disable_guard: ignore
  quiet_period: 1s
  max_hold: 1h
metrics: {{address: 127.0.0.1, port: {port}}}
safety: {{dry_run: {"true" if dry_run else "false"}}}
aws:
  validation_timeout: {validation_timeout}
  max_calls_per_second: 1000
  max_attempts: 2
  concurrency: 32  # the replica tests' bursts are timed for this many users in flight (the default was 32)
coordination: {{lease_table: {lease_table or "null"}, lease_ttl: {lease_ttl}}}
"""


class Daemon:
    """One ``rotator run`` subprocess: HTTP, signals, captured output."""

    def __init__(self, tmp_path: Path, config: Path, port: int, env: dict[str, str], name: str = "run") -> None:
        self.port = port
        self.stdout_path = tmp_path / f"{name}.stdout"
        self.stderr_path = tmp_path / f"{name}.stderr"
        self.metric_bodies: list[str] = []
        self._stdout = self.stdout_path.open("wb")
        self._stderr = self.stderr_path.open("wb")
        self.proc = subprocess.Popen(
            [*cli_argv(), "--config", str(config), "run"],
            stdout=self._stdout,
            stderr=self._stderr,
            env=env,
            cwd=ROOT,
        )

    # -- HTTP --------------------------------------------------------------------------------------

    def get(self, path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=5) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()

    def get_json(self, path: str) -> tuple[int, dict[str, Any]]:
        status, body = self.get(path)
        return status, json.loads(body)

    def metrics(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        status, body = self.get("/metrics")
        assert status == 200
        self.metric_bodies.append(body)
        samples: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
        for family in text_string_to_metric_families(body):
            for sample in family.samples:
                samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
        return samples

    def value(self, name: str, **labels: str) -> float:
        return self.metrics().get((name, tuple(sorted(labels.items()))), 0.0)

    def wait_http(self, timeout: float = 20) -> None:
        self.wait_for(self._answers, timeout, "the HTTP endpoint to answer")

    def _answers(self) -> bool:
        try:
            self.get("/healthz")
        except OSError:
            assert self.proc.poll() is None, f"daemon exited early:\n{self.stderr()}"
            return False
        return True

    # -- output ------------------------------------------------------------------------------------

    def stderr(self) -> str:
        return self.stderr_path.read_text()

    def stdout(self) -> str:
        return self.stdout_path.read_text()

    def events(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.stderr().splitlines() if line.strip()]

    def events_named(self, name: str) -> list[dict[str, Any]]:
        return [e for e in self.events() if e.get("event") == name]

    # -- life --------------------------------------------------------------------------------------

    def wait_for(self, condition: Callable[[], object], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if condition():
                return
            assert self.proc.poll() is None, f"daemon exited while waiting for {what}:\n{self.stderr()[-3000:]}"
            time.sleep(0.1)
        raise AssertionError(f"timed out waiting for {what}; stderr tail:\n{self.stderr()[-3000:]}")

    def signal(self, signum: int) -> None:
        self.proc.send_signal(signum)

    def stop(self, timeout: float = STOP_BOUND) -> tuple[int, float]:
        """SIGTERM, wait; returns (exit code, seconds it took)."""
        started = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout=timeout)
        return code, time.monotonic() - started

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self._stdout.close()
        self._stderr.close()

    def assert_clean_output(self, secrets: list[str]) -> None:
        """Every stderr line is a JSON object with timestamp, level and event; no secret anywhere."""
        for line in self.stderr().splitlines():
            record = json.loads(line)
            assert {"timestamp", "level", "event"} <= record.keys(), line
            assert record["timestamp"].endswith(("Z", "+00:00")), line
        assert_no_secrets([self.stderr(), self.stdout(), *self.metric_bodies], secrets)


@contextmanager
def daemon(tmp_path: Path, config: Path, port: int, env: dict[str, str], name: str = "run") -> Iterator[Daemon]:
    process = Daemon(tmp_path, config, port, env, name)
    try:
        yield process
    finally:
        process.close()


def collect_secrets(aws: AwsEnv, users: list[str]) -> None:
    """Read every published version we can see now, so that I7 checks cover them."""
    for user in users:
        for stage in ("AWSCURRENT", "AWSPREVIOUS"):
            try:
                aws.secret(user, stage)
            except ClientError:
                continue  # no secret yet, or no AWSPREVIOUS version yet


def assert_converged(aws: AwsEnv, users: list[str]) -> None:
    """I1, I2, I4: each secret's AWSCURRENT key exists, is Active and authenticates as its user."""
    for user in users:
        keys = aws.keys(user)
        assert len(keys) <= 2, (user, keys)
        document = aws.secret(user)
        assert document["UserName"] == user
        assert keys.get(document["AccessKeyId"]) == "Active", (user, document["AccessKeyId"], keys)
        assert aws.caller_arn(document["AccessKeyId"], document["SecretAccessKey"]).endswith(f"/{user}")


def key_ids(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float]) -> dict[str, float]:
    """key id -> created timestamp, from rotator_access_key_created_timestamp_seconds."""
    out = {}
    for (name, labels), value in samples.items():
        if name == "rotator_access_key_created_timestamp_seconds":
            out[dict(labels)["key_id"]] = value
    return out


# -- the lifecycle over HTTP -------------------------------------------------------------------------


def test_lifecycle_moves_on_metrics_and_health_endpoints_answer(aws: AwsEnv, tmp_path: Path) -> None:
    users = ["app-one", "app-two"]
    seeded = {user: aws.user(user)[0] for user in users}
    port = free_port()
    config = write_config(tmp_path, config_text(port))
    with daemon(tmp_path, config, port, aws.env) as run:
        run.wait_http()
        status, health = run.get_json("/healthz")
        assert status == 200
        assert health["status"] == "ok"

        run.wait_for(lambda: run.get("/readyz")[0] == 200, 20, "/readyz to turn ready")
        _, ready = run.get_json("/readyz")
        assert ready["aws_contact_at"]
        run.wait_for(lambda: run.value("rotator_last_sweep_success_timestamp_seconds") > 0, 20, "a successful sweep")
        first_keys = key_ids(run.metrics())
        assert first_keys, "per-key gauges after the first sweep"
        first_success = run.value("rotator_last_sweep_success_timestamp_seconds")

        def lifecycle_done() -> bool:
            collect_secrets(aws, users)
            actions = {
                action: run.value("rotator_actions_total", action=action, result="success")
                for action in ("rotate", "disable", "delete")
            }
            # Bootstrap (2), then disable and delete of the seeded keys, then a second rotation by age.
            return actions["rotate"] >= 4 and actions["disable"] >= 2 and actions["delete"] >= 2

        run.wait_for(lifecycle_done, 60, "rotate, disable and delete on /metrics")
        # The per-key gauges are each sweep's inventory: a key deleted by the sweep that met the counts above goes
        # with the next one.
        run.wait_for(
            lambda: not set(seeded.values()) & set(key_ids(run.metrics())), 30, "the deleted keys' gauges to go"
        )
        samples = run.metrics()
        later_keys = key_ids(samples)
        assert not set(seeded.values()) & set(later_keys), "seeded keys are deleted and their gauges removed"
        assert later_keys and set(later_keys) != set(first_keys)
        assert samples[("rotator_last_sweep_success_timestamp_seconds", ())] > first_success
        assert samples.get(("rotator_sweeps_total", (("result", "success"),)), 0) >= 3
        assert samples.get(("rotator_dry_run", ()), -1) == 0
        for user in users:
            assert ("rotator_managed_users", (("account", "123456789012"),)) in samples
            assert any(
                name == "rotator_next_action_timestamp_seconds" and dict(labels)["user"] == user
                for name, labels in samples
            )

        status, ready = run.get_json("/readyz")
        assert status == 200
        assert ready["last_sweep"]["result"] in ("success", "failure")
        assert ready["last_sweep"]["finished_at"]
        assert ready["next_sweep_at"]
        assert run.get("/nope")[0] == 404

        code, took = run.stop()
        assert code == 0
        assert took < STOP_BOUND
        collect_secrets(aws, users)
        assert_converged(aws, users)
        created = {e["key_id"] for e in run.events_named("rotation.key_created")}
        assert len(created) == len(run.events_named("rotation.key_created")), "key_created once per key"
        run.assert_clean_output(aws.created_secrets)


def test_unreachable_aws_is_not_ready_and_failures_show(aws: AwsEnv, tmp_path: Path) -> None:
    port = free_port()
    config = write_config(tmp_path, config_text(port))
    env = aws.env
    env["AWS_ENDPOINT_URL"] = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    with daemon(tmp_path, config, port, env) as run:
        run.wait_http()
        run.wait_for(lambda: run.value("rotator_sweeps_total", result="failure") >= 2, 30, "failed sweeps on /metrics")
        status, ready = run.get_json("/readyz")
        assert status == 503
        assert ready["aws_contact_at"] is None
        assert ready["last_sweep"]["result"] == "failure"
        assert run.get_json("/healthz")[0] == 200, "the scheduler is alive even though AWS is not"
        assert run.value("rotator_last_sweep_success_timestamp_seconds") == 0
        assert run.events_named("sweep.retry_scheduled"), "a failed sweep is retried (here: by the schedule)"
        failed = [e for e in run.events_named("sweep.finished") if e["result"] == "failure"]
        assert failed and failed[0]["level"] == "info"
        assert [e for e in run.events() if e["level"] == "error"], "failures are logged as errors"
        code, _ = run.stop()
        assert code == 0
        run.assert_clean_output(aws.created_secrets)


def test_readyz_follows_aws_503_while_unreachable_200_once_it_answers_again(tmp_path: Path) -> None:
    """SPEC: /readyz is 200 only while AWS answers: 503 after a failed contact, until the next success."""
    server = MotoServer()  # this test's own AWS, to switch off and on again
    port = free_port()
    config = write_config(tmp_path, config_text(port, interval="1s", max_key_age="1h"))
    try:
        with daemon(tmp_path, config, port, aws_env(server.url)) as run:
            run.wait_http()
            run.wait_for(lambda: run.get("/readyz")[0] == 200, 20, "/readyz 200 once AWS was reached")

            server.stop()  # AWS goes away: its port refuses connections
            run.wait_for(lambda: run.get("/readyz")[0] == 503, 20, "/readyz 503 while AWS is unreachable")
            _, body = run.get_json("/readyz")
            assert body["status"] == "AWS unreachable"
            assert body["aws_unreachable_since"]
            assert body["aws_contact_at"], "the last successful contact is still shown"
            assert run.get_json("/healthz")[0] == 200, "alive, only not ready"

            server = MotoServer(port=server.port)  # AWS is back, at the same address
            run.wait_for(lambda: run.get("/readyz")[0] == 200, 30, "/readyz 200 once AWS answers again")
            _, body = run.get_json("/readyz")
            assert body["status"] == "ready"
            assert body["aws_unreachable_since"] is None

            code, _ = run.stop()
            assert code == 0
            run.assert_clean_output([])
    finally:
        server.stop()


# -- signals ----------------------------------------------------------------------------------------


def test_sigterm_during_sweep_finishes_the_step_and_restart_converges(aws: AwsEnv, tmp_path: Path) -> None:
    users = [f"svc-{i:02d}" for i in range(40)]
    for user in users:
        aws.user(user)
    port = free_port()
    # 40 bootstraps, 8 at a time, load moto enough that 2 s of validation can be too short here.
    config = write_config(tmp_path, config_text(port, interval="1h", max_key_age="1h", validation_timeout="15s"))
    with daemon(tmp_path, config, port, aws.env, name="first") as run:
        run.wait_for(lambda: run.events_named("rotation.key_created"), 30, "the first rotation to start")
        code, took = run.stop()
        assert code == 0
        assert took < STOP_BOUND
        stopping = run.events_named("daemon.stopping")
        assert stopping and stopping[0]["sweep_in_flight"] is True
        # Never half a step: every key this run created was validated and published before it exited.
        created = {e["key_id"] for e in run.events_named("rotation.key_created")}
        published = {e["key_id"] for e in run.events_named("rotation.published")}
        assert created == published
        finished = run.events_named("sweep.finished")
        assert finished and finished[-1]["result"] == "interrupted"
        assert len(created) < len(users), "the sweep was cut short, not run to its end"
        assert run.events_named("daemon.stopped")
        first_run = run

    with daemon(tmp_path, config, port, aws.env, name="second") as run:
        run.wait_for(lambda: run.events_named("sweep.finished"), 60, "the first sweep after restart")
        assert run.events_named("sweep.finished")[0]["result"] == "success"
        code, _ = run.stop()
        assert code == 0
        collect_secrets(aws, users)
        assert_converged(aws, users)
        run.assert_clean_output(aws.created_secrets)
    first_run.assert_clean_output(aws.created_secrets)


def test_sighup_applies_a_valid_file_and_refuses_a_broken_one(aws: AwsEnv, tmp_path: Path) -> None:
    users = ["reload-me"]
    aws.user(users[0])
    port = free_port()
    config = write_config(tmp_path, config_text(port, dry_run=True))
    with daemon(tmp_path, config, port, aws.env) as run:
        run.wait_http()
        run.wait_for(lambda: run.events_named("sweep.planned"), 20, "a dry-run sweep that reports its plan")
        before = aws.snapshot()
        assert run.value("rotator_dry_run") == 1
        planned = run.events_named("sweep.planned")[0]
        assert planned["action"] == "rotate" and planned["user"] == "reload-me"
        assert run.get_json("/readyz")[1]["dry_run"] is True

        # A broken file is refused; the daemon keeps sweeping on the old configuration.
        config.write_text(config_text(port).replace("max_key_age: 8s", "max_key_age: soon"))
        run.signal(signal.SIGHUP)
        run.wait_for(lambda: run.events_named("config.reload_failed"), 10, "the reload to be refused")
        assert "policy.max_key_age" in run.events_named("config.reload_failed")[0]["error"]
        sweeps = run.value("rotator_sweeps_total", result="success")
        run.wait_for(lambda: run.value("rotator_sweeps_total", result="success") >= sweeps + 2, 15, "more sweeps")
        assert run.get_json("/healthz")[0] == 200
        assert run.value("rotator_dry_run") == 1
        assert aws.snapshot() == before, "dry run changed nothing in AWS"

        # A valid file takes effect: dry run off, so the due user is rotated.
        config.write_text(config_text(port, interval="1s", max_key_age="1h"))
        run.signal(signal.SIGHUP)
        run.wait_for(lambda: run.events_named("config.reloaded"), 10, "the reload to be applied")
        reloaded = run.events_named("config.reloaded")[-1]
        assert {"safety", "schedule", "policy"} <= set(reloaded["changed"])
        run.wait_for(
            lambda: run.value("rotator_actions_total", action="rotate", result="success") >= 1,
            20,
            "the rotation once dry run is off",
        )
        assert run.value("rotator_dry_run") == 0
        assert run.get_json("/readyz")[1]["dry_run"] is False
        code, _ = run.stop()
        assert code == 0
        collect_secrets(aws, users)
        assert_converged(aws, users)
        run.assert_clean_output(aws.created_secrets)


# -- systemd notify ---------------------------------------------------------------------------------


@pytest.mark.parametrize("namespace", ["path", "abstract"])
def test_systemd_notify_ready_watchdog_status_stopping(aws: AwsEnv, tmp_path: Path, namespace: str) -> None:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    if namespace == "path":
        address = str(tmp_path / "notify.sock")
        sock.bind(address)
    else:
        address = f"@rotator-test-{uuid.uuid4().hex}"
        sock.bind(b"\0" + address[1:].encode())
    sock.settimeout(0.2)
    port = free_port()
    config = write_config(tmp_path, config_text(port))
    env = aws.env
    env.update({"NOTIFY_SOCKET": address, "WATCHDOG_USEC": "2000000"})
    messages: list[tuple[float, str]] = []

    def receive_until(condition: Callable[[], bool], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not condition():
            try:
                messages.append((time.monotonic(), sock.recv(4096).decode()))
            except TimeoutError:
                continue
        assert condition(), messages

    def lines() -> list[str]:
        return [line for _, message in messages for line in message.splitlines()]

    try:
        with daemon(tmp_path, config, port, env) as run:
            receive_until(lambda: "READY=1" in lines(), 20)
            receive_until(lambda: lines().count("WATCHDOG=1") >= 4, 10)
            receive_until(lambda: any(line.startswith("STATUS=last sweep") for line in lines()), 10)
            pings = [at for at, message in messages if "WATCHDOG=1" in message.splitlines()]
            gaps = [b - a for a, b in itertools.pairwise(pings)]
            assert max(gaps) < 2.0, f"pings every WATCHDOG_USEC/2 (1 s), got gaps {gaps}"
            code, _ = run.stop()
            assert code == 0
            receive_until(lambda: "STOPPING=1" in lines(), 5)
            run.assert_clean_output(aws.created_secrets)
    finally:
        sock.close()
        if namespace == "path":
            os.unlink(address)


def test_no_notify_socket_is_silent(aws: AwsEnv, tmp_path: Path) -> None:
    port = free_port()
    config = write_config(tmp_path, config_text(port))
    env = aws.env
    env.pop("NOTIFY_SOCKET", None)
    with daemon(tmp_path, config, port, env) as run:
        run.wait_for(lambda: run.events_named("sweep.finished"), 20, "a sweep")
        started = run.events_named("daemon.started")[0]
        assert started["watchdog"] is False
        code, _ = run.stop()
        assert code == 0
        run.assert_clean_output(aws.created_secrets)


# -- two replicas ------------------------------------------------------------------------------------


def test_two_replicas_sweep_only_on_the_lease_holder_and_hand_over_on_stop(aws: AwsEnv, tmp_path: Path) -> None:
    table = "rotator-leases"
    aws.client("dynamodb").create_table(
        TableName=table,
        KeySchema=[{"AttributeName": "name", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "name", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    users = ["shared"]
    aws.user(users[0])
    port_a, port_b = free_port(), free_port()
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    config_a = write_config(tmp_path / "a", config_text(port_a, max_key_age="1h", lease_table=table))
    config_b = write_config(tmp_path / "b", config_text(port_b, max_key_age="1h", lease_table=table))
    with daemon(tmp_path, config_a, port_a, aws.env, name="a") as first:
        first.wait_http()
        first.wait_for(lambda: first.value("rotator_leader") == 1, 20, "the first replica to lead")
        with daemon(tmp_path, config_b, port_b, aws.env, name="b") as second:
            second.wait_http()
            second.wait_for(lambda: len(second.events_named("sweep.skipped")) >= 2, 20, "the standby to skip sweeps")
            assert second.value("rotator_leader") == 0
            assert not second.events_named("sweep.started"), "the standby never sweeps"
            status, ready = second.get_json("/readyz")
            assert status == 200, "a standby that reached AWS is ready"
            assert ready["leader"] is False
            assert first.get_json("/readyz")[1]["leader"] is True

            code, _ = first.stop()
            assert code == 0
            second.wait_for(lambda: second.value("rotator_leader") == 1, 20, "the standby to take over")
            second.wait_for(lambda: second.events_named("sweep.finished"), 20, "a sweep on the new leader")
            code, _ = second.stop()
            assert code == 0
            collect_secrets(aws, users)
            assert_converged(aws, users)
            assert len(aws.keys(users[0])) == 2, "one rotation in all, by whichever replica led"
            second.assert_clean_output(aws.created_secrets)
        first.assert_clean_output(aws.created_secrets)
