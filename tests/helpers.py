"""The moto server the tests and the benchmarks run against, and how to talk to it.

No pytest here: ``benchmarks/_support.py`` imports this module too (tests reach it through ``conftest``).
"""

from __future__ import annotations

import ast
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import boto3

REGION = "us-east-1"
MOTO_KEY = "testing"  # moto accepts any credentials
#: AWS operations that change state (every other call the rotator makes only reads).
MUTATING = frozenset(
    {
        "TagUser",
        "UntagUser",
        "CreateAccessKey",
        "UpdateAccessKey",
        "DeleteAccessKey",
        "CreateSecret",
        "PutSecretValue",
        "UpdateSecretVersionStage",
        "TagResource",
    }
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class MotoServer:
    """A ``moto_server`` subprocess on 127.0.0.1; stopped by :meth:`stop`."""

    def __init__(self, extra_env: dict[str, str] | None = None, *, port: int | None = None) -> None:
        """``port``: a given one (a restart on the port of a stopped server); a free one by default."""
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env={**os.environ, **(extra_env or {})},
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"{self.url}/moto-api/data.json", timeout=1):
                    return
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError("moto_server did not start")

    def reset(self) -> None:
        request = urllib.request.Request(f"{self.url}/moto-api/reset", method="POST")
        with urllib.request.urlopen(request, timeout=30):
            pass

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@contextmanager
def silent_endpoint() -> Iterator[str]:
    """The URL of a TCP server on 127.0.0.1 that accepts every connection and never sends a byte.

    What a black-holed AWS endpoint or a hung proxy looks like to a client: connecting works, answers never come.
    """
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.2)
    held: list[socket.socket] = []
    done = threading.Event()

    def accept() -> None:
        while not done.is_set():
            try:
                connection, _ = server.accept()
            except TimeoutError:
                continue
            held.append(connection)  # kept open, never read, never answered

    thread = threading.Thread(target=accept, name="silent-endpoint", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.getsockname()[1]}"
    finally:
        done.set()
        thread.join(timeout=5)
        server.close()
        for connection in held:
            connection.close()


def aws_env(url: str, access_key: str = MOTO_KEY, secret_key: str = MOTO_KEY) -> dict[str, str]:
    """This process's environment with every ``AWS_*``/``ROTATOR_*`` variable replaced: AWS is the server at ``url``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "ROTATOR_"))}
    env.update(
        {
            "AWS_ENDPOINT_URL": url,
            "AWS_REGION": REGION,
            "AWS_DEFAULT_REGION": REGION,
            "AWS_ACCESS_KEY_ID": access_key,
            "AWS_SECRET_ACCESS_KEY": secret_key,
            "AWS_EC2_METADATA_DISABLED": "true",
            "NO_PROXY": "127.0.0.1,localhost",
        }
    )
    return env


def client(
    url: str, service: str, access_key: str = MOTO_KEY, secret_key: str = MOTO_KEY, session_token: str | None = None
) -> Any:
    """A boto3 client for ``service`` at the server at ``url``, signing with the given credentials."""
    # The service is a runtime string, not one of the stubs' literals.
    return boto3.client(  # type: ignore[call-overload]
        service,
        endpoint_url=url,
        region_name=REGION,
        aws_access_key_id=access_key,
        aws_secret_access_key=secret_key,
        aws_session_token=session_token,
    )


ROTATOR_SOURCES = Path(__file__).resolve().parent.parent / "rotator"


def imported_modules(path: Path) -> set[str]:
    """The absolute module names a source file imports (anywhere in it, lazy imports included)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
    return names


def modules_importing(*top_level: str) -> set[str]:
    """The ``rotator/`` source files (as ``rotator/...`` paths) that import any of these top-level modules."""
    return {
        path.relative_to(ROTATOR_SOURCES.parent).as_posix()
        for path in ROTATOR_SOURCES.rglob("*.py")
        if any(name.split(".")[0] in top_level for name in imported_modules(path))
    }
