"""AWS that accepts connections and never answers (a black-holed endpoint, a hung proxy), with default timeouts.

The endpoint is a plain TCP socket on 127.0.0.1 that accepts every connection and never sends a byte. Neither a
command nor the daemon may hang on it: ``plan`` gives up (exit 1, saying why) within a minute; a SIGTERM
stops the daemon well inside systemd's stop timeout even while its sweep is stuck in such a call.
"""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

import pytest
from conftest import ROOT, aws_env, cli_argv, free_port, parse_events, write_config
from helpers import silent_endpoint

pytestmark = pytest.mark.timeout(180)

COMMAND_BOUND = 60.0  # SPEC: a command against an endpoint that never answers ends within a minute
STOP_BOUND = 30.0  # SIGTERM to exit, a call in flight or not (systemd's TimeoutStopSec is 90 s)


def test_plan_against_a_silent_endpoint_exits_1_within_a_minute(tmp_path: Path) -> None:
    config = write_config(tmp_path, "policy: {max_key_age: 1h}\n")  # aws: all defaults
    with silent_endpoint() as url:
        started = time.monotonic()
        try:
            done = subprocess.run(
                [*cli_argv(), "--config", str(config), "plan"],
                capture_output=True,
                text=True,
                env=aws_env(url),
                timeout=COMMAND_BOUND + 30,
                cwd=ROOT,
                check=False,
            )
        except subprocess.TimeoutExpired:
            pytest.fail(f"rotator plan still running {COMMAND_BOUND + 30:.0f} s after it started")
        took = time.monotonic() - started
    print(f"plan against a silent endpoint: exit {done.returncode} after {took:.1f} s")
    assert done.returncode == 1, done.stderr[-3000:]
    assert took < COMMAND_BOUND, f"plan took {took:.1f} s"
    assert "ReadTimeoutError" in done.stderr, "the error line says why: " + done.stderr[-3000:]
    assert "Traceback" not in done.stderr


def test_sigterm_stops_the_daemon_while_a_call_hangs_on_a_silent_endpoint(tmp_path: Path) -> None:
    port = free_port()
    config = write_config(tmp_path, f"policy: {{max_key_age: 1h}}\nmetrics: {{address: 127.0.0.1, port: {port}}}\n")
    stderr_path = tmp_path / "run.stderr"
    with silent_endpoint() as url, stderr_path.open("wb") as stderr:
        proc = subprocess.Popen(
            [*cli_argv(), "--config", str(config), "run"],
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            env=aws_env(url),
            cwd=ROOT,
        )
        try:
            deadline = time.monotonic() + 20
            while not any(e.get("event") == "sweep.started" for e in parse_events(stderr_path.read_text())):
                assert proc.poll() is None, stderr_path.read_text()[-3000:]
                assert time.monotonic() < deadline, "no sweep started:\n" + stderr_path.read_text()[-3000:]
                time.sleep(0.1)
            time.sleep(1.0)  # the sweep's first AWS call is now waiting for an answer that never comes
            started = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            try:
                code = proc.wait(timeout=STOP_BOUND + 60)
            except subprocess.TimeoutExpired:
                pytest.fail(f"the daemon still ran {STOP_BOUND + 60:.0f} s after SIGTERM")
            took = time.monotonic() - started
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)
    log = parse_events(stderr_path.read_text())
    print(f"SIGTERM to exit with a call hanging: exit {code} after {took:.1f} s")
    assert took < STOP_BOUND, f"SIGTERM took {took:.1f} s"
    stopping = [e for e in log if e.get("event") == "daemon.stopping"]
    assert stopping and stopping[0]["sweep_in_flight"] is True
    assert code == 1, "a stop that gave up on the step in flight exits 1"
    assert [e for e in log if e.get("event") == "daemon.stop_timeout"], "it says it gave up waiting"
