"""`rotator sandbox` as a user runs it: seeded, rotating, serving metrics, and ending cleanly."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def start(*args: str, script: bool = False) -> subprocess.Popen[str]:
    # ``script``: the README's own first command (it reuses the .venv that scripts/test made).
    argv = [str(ROOT / "scripts" / "sandbox")] if script else [sys.executable, "-m", "rotator.cli", "sandbox"]
    return subprocess.Popen(
        [*argv, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )


def read_lines(proc: subprocess.Popen[str], into: list[str]) -> threading.Thread:
    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            into.append(line)

    thread = threading.Thread(target=pump, daemon=True)
    thread.start()
    return thread


def wait_for(lines: list[str], pattern: str, timeout: float) -> re.Match[str]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for line in list(lines):
            match = re.search(pattern, line)
            if match:
                return match
        time.sleep(0.2)
    raise AssertionError(f"{pattern!r} not seen in:\n{''.join(lines)}")


def test_sandbox_runs_the_whole_lifecycle_and_stops_after_its_duration() -> None:
    proc = start("--phase", "3", "--duration", "30", script=True)
    lines: list[str] = []
    try:
        pump = read_lines(proc, lines)
        metrics_url = wait_for(lines, r"metrics\s+(http://127\.0\.0\.1:\d+/metrics)", 180).group(1)
        wait_for(lines, r"AWS_ENDPOINT_URL=http://127\.0\.0\.1:\d+", 5)
        wait_for(lines, r"seeded\s+7 managed users, 1 unmanaged", 5)
        wait_for(lines, r"new key AKIA\w+ published", 30)
        with urllib.request.urlopen(metrics_url, timeout=5) as response:
            body = response.read().decode()
        assert 'rotator_actions_total{action="rotate",result="success"}' in body
        assert "rotator_access_key_created_timestamp_seconds{" in body
        assert proc.wait(timeout=60) == 0
        pump.join(timeout=5)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    output = "".join(lines)
    assert re.search(r"previous key AKIA\w+ disabled", output)
    assert re.search(r"key AKIA\w+ deleted", output)
    assert "held by the guard" in output
    # The quarantined user: answered in the first sweep, and only once.
    assert re.search(
        r"svc-exposed: AWS quarantine \(AWSCompromisedKeyQuarantineV3\): exposed key AKIA\w+ disabled", output
    )
    assert re.search(r"quarantine_responses=1\b", output)
    summary = wait_for(lines, r"sandbox stopped: rotated=(\d+), disabled=(\d+), held=(\d+), deleted=(\d+)", 1)
    rotated, disabled, _held, deleted = (int(n) for n in summary.groups())
    assert rotated >= 5 and disabled >= 3 and deleted >= 3
    assert "alice" not in output.split("Ctrl-C ends the sandbox.")[1]  # unmanaged: never shown or touched


def test_ctrl_c_ends_the_sandbox_cleanly() -> None:
    proc = start("--phase", "3")
    lines: list[str] = []
    try:
        read_lines(proc, lines)
        wait_for(lines, r"new key AKIA\w+ published", 40)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    wait_for(lines, r"sandbox stopped:", 5)
    assert proc.stderr is not None
    assert "Traceback" not in proc.stderr.read()
