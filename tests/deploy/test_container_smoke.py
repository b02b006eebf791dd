"""The container image, built and run for real: ``scripts/container-smoke`` must exit 0.

The script needs a Docker engine, or root to start a private dockerd (it installs Debian's docker.io and
debootstrap when they are missing). From a fresh machine it takes about 6 minutes on 2 cores, most of it
debootstrap; with the day's base root file system cached (~/.cache/iam-key-rotator) about 1.5 minutes.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "container-smoke"
BUDGET = 900  # seconds for the script; the pytest timeout leaves room to stop it and collect its output

pytestmark = [pytest.mark.slow, pytest.mark.timeout(BUDGET + 180)]


def engine_reachable() -> bool:
    docker = shutil.which("docker")
    if docker is None:
        return False
    result = subprocess.run([docker, "info"], capture_output=True, timeout=60, check=False)
    return result.returncode == 0


def test_container_smoke(tmp_path: Path) -> None:
    if os.geteuid() != 0 and not engine_reachable():
        pytest.skip("needs root (to start a private dockerd) or a reachable Docker engine")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "ROTATOR_", "DOCKER_"))}
    env["PYTHON"] = sys.executable  # the interpreter running the tests has boto3 and moto[server]
    output = tmp_path / "container-smoke.log"
    with output.open("wb") as sink:
        proc = subprocess.Popen(
            [str(SCRIPT)], stdout=sink, stderr=subprocess.STDOUT, env=env, cwd=REPO, start_new_session=True
        )
        try:
            status = proc.wait(timeout=BUDGET)
        except subprocess.TimeoutExpired:
            # SIGTERM to the whole group: the script's trap stops its container, moto and dockerd.
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=120)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            status = None
    text = output.read_text(encoding="utf-8", errors="replace")
    print(text)  # the figures (image size, build and start-up times) land in the test's captured output
    tail = "\n".join(text.splitlines()[-80:])
    assert status is not None, f"scripts/container-smoke took longer than {BUDGET} s:\n{tail}"
    assert status == 0, f"scripts/container-smoke exited {status}:\n{tail}"
    assert "container-smoke: PASS" in text, tail
