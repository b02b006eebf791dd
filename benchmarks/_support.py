"""What the benchmarks share: the moto server, seeding it, and measuring a sweep or a process.

A benchmark runs as ``python benchmarks/NAME.py``, so ``benchmarks/`` is on ``sys.path`` and it imports this
module as ``_support``. The moto server and the environment pointing at it are the tests' own
(``tests/helpers.py``, which needs no pytest). Nothing here imports the rotator at module level: the
inventory benchmark's naive baseline runs in a child process whose memory must not include it.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from helpers import MUTATING, MotoServer, aws_env, client, free_port

__all__ = [
    "MANAGED",
    "MUTATING",
    "MotoServer",
    "api_calls",
    "aws_env",
    "client",
    "create_users",
    "free_port",
    "memory_kib",
    "moto_environ",
    "timed_sweep",
]

#: The tags of a managed user (the rotator's default selection).
MANAGED = {"rotator": "enabled"}


@contextmanager
def moto_environ(url: str) -> Iterator[None]:
    """Within the block, this process's AWS environment is the moto server at ``url`` and nothing else."""
    saved = dict(os.environ)
    os.environ.clear()
    os.environ.update(aws_env(url))
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def create_users(url: str, users: Mapping[str, Mapping[str, str]], *, path: str, keys: int) -> None:
    """Create IAM users (name -> tags) under ``path``, each with ``keys`` access keys; 8 at a time."""
    iam = client(url, "iam")

    def one(name: str) -> None:
        tags = [{"Key": k, "Value": v} for k, v in users[name].items()]
        iam.create_user(UserName=name, Path=path, Tags=tags)
        for _ in range(keys):
            iam.create_access_key(UserName=name)

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(one, users))


def timed_sweep(config: Path) -> tuple[Any, Any, float]:
    """One in-process sweep with ``config`` and a fresh Prometheus registry: (report, registry, wall seconds)."""
    from prometheus_client import CollectorRegistry  # noqa: PLC0415 - see the module docstring

    from rotator.app import App  # noqa: PLC0415
    from rotator.config import load_settings  # noqa: PLC0415

    registry = CollectorRegistry()
    app = App(load_settings(str(config)), registry=registry, log=False)
    started = time.perf_counter()
    report = app.sweep()
    return report, registry, time.perf_counter() - started


def api_calls(registry: Any) -> Iterator[tuple[dict[str, str], int]]:
    """(labels, count) of every ``rotator_aws_api_calls_total`` sample: service, operation and outcome."""
    for metric in registry.collect():
        for sample in metric.samples:
            if sample.name == "rotator_aws_api_calls_total":
                yield sample.labels, int(sample.value)


def memory_kib(pid: int | str, field: str) -> int:
    """A memory figure of process ``pid`` ("self" for this one) from /proc/PID/status, e.g. VmRSS or VmHWM."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)
