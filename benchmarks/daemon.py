"""Benchmark of ``rotator run``: start-up time to READY, resident memory, idle CPU.

Runs everything locally: its own moto server subprocess, and the daemon as ``python -m rotator.cli run``
with a ``NOTIFY_SOCKET`` this script binds. Prints:

- start-up time from exec to ``READY=1`` (median of a few starts);
- resident memory (VmRSS) once idle after the first sweep, with no managed users;
- CPU seconds per idle hour, extrapolated from /proc/<pid>/stat over a measuring window;
- resident memory after a sweep over 1000 managed users (and the peak, VmHWM), the sweep's
  duration and CPU seconds.

Usage: ``python benchmarks/daemon.py [--idle-seconds 60] [--users 1000] [--max-actions 100]``
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from _support import MANAGED, MotoServer, aws_env, create_users, free_port, memory_kib

TICKS = os.sysconf("SC_CLK_TCK")


def config_text(port: int, interval: str, max_actions: int) -> str:
    return f"""\
schedule: {{interval: {interval}}}
metrics: {{address: 127.0.0.1, port: {port}}}
safety: {{max_actions_per_sweep: {max_actions}}}
aws: {{validation_timeout: 60s, max_calls_per_second: 1000}}
"""


def cpu_seconds(pid: int) -> float:
    """utime + stime of ``pid`` (all its threads) from /proc/<pid>/stat."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()
    # After "pid (comm) ": state is field 3, so utime (14) and stime (15) are at indexes 11 and 12.
    return (int(fields[11]) + int(fields[12])) / TICKS


class Daemon:
    def __init__(self, workdir: Path, url: str, interval: str, max_actions: int) -> None:
        self.port = free_port()
        self.config = workdir / f"rotator-{self.port}.yaml"
        self.max_actions = max_actions
        self.config.write_text(config_text(self.port, interval, max_actions))
        self.notify_path = workdir / f"notify-{self.port}.sock"
        self.notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.notify.bind(str(self.notify_path))
        self.stderr = (workdir / f"daemon-{self.port}.stderr").open("wb")
        env = aws_env(url)
        env["NOTIFY_SOCKET"] = str(self.notify_path)
        self.started = time.monotonic()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "rotator.cli", "--config", str(self.config), "run"],
            stdout=subprocess.DEVNULL,
            stderr=self.stderr,
            env=env,
        )

    def wait_ready(self, timeout: float = 60) -> float:
        """Seconds from exec to READY=1."""
        self.notify.settimeout(timeout)
        while True:
            message = self.notify.recv(4096).decode()
            if "READY=1" in message.splitlines():
                return time.monotonic() - self.started

    def readyz(self) -> dict[str, Any]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/readyz", timeout=10) as response:
                body: dict[str, Any] = json.loads(response.read())
        except urllib.error.HTTPError as exc:
            body = json.loads(exc.read())
        return body

    def wait_sweep(self, users: int, after: str | None = None, timeout: float = 1800) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                last = self.readyz().get("last_sweep")
            except OSError:
                last = None
            if last and last["users"] >= users and (after is None or last["sweep_id"] != after):
                return dict(last)
            if self.proc.poll() is not None:
                raise SystemExit(f"daemon exited with {self.proc.returncode}")
            time.sleep(0.5)
        raise SystemExit("timed out waiting for a sweep")

    def reload(self, interval: str) -> None:
        self.config.write_text(config_text(self.port, interval, self.max_actions))
        self.proc.send_signal(signal.SIGHUP)

    def stop(self) -> int:
        try:
            self.proc.send_signal(signal.SIGTERM)
            return self.proc.wait(timeout=120)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
            self.notify.close()
            self.notify_path.unlink(missing_ok=True)
            self.stderr.close()


def seed(url: str, users: int) -> float:
    started = time.monotonic()
    create_users(url, {f"bench-{index:04d}": MANAGED for index in range(users)}, path="/bench/", keys=1)
    return time.monotonic() - started


def time_startups(workdir: Path, url: str, args: argparse.Namespace) -> None:
    """Start-up to READY (no users; each start is stopped right after READY)."""
    times = []
    for _ in range(args.starts):
        daemon = Daemon(workdir, url, "1h", args.max_actions)
        try:
            times.append(daemon.wait_ready())
        finally:
            daemon.stop()
    print(
        f"start-up to READY=1: median {statistics.median(times):.2f} s (runs: {', '.join(f'{t:.2f}' for t in times)})"
    )


def measure_idle(daemon: Daemon, idle_seconds: float) -> None:
    pid = daemon.proc.pid
    print(f"resident memory idle (after an empty sweep): {memory_kib(pid, 'VmRSS') / 1024:.1f} MiB")
    cpu_before, wall_before = cpu_seconds(pid), time.monotonic()
    time.sleep(idle_seconds)
    cpu_used, wall = cpu_seconds(pid) - cpu_before, time.monotonic() - wall_before
    per_hour = cpu_used / wall * 3600
    print(
        f"CPU idle: {cpu_used:.2f} s (ticks of {1 / TICKS:g} s) over a {wall:.1f} s window "
        f"=> {per_hour:.1f} CPU seconds per idle hour ({per_hour / 36:.3f}% of one core)"
    )


def measure_sweep(daemon: Daemon, url: str, first_sweep: str, args: argparse.Namespace) -> None:
    """A sweep over N managed users, triggered by a SIGHUP that shortens the interval."""
    pid = daemon.proc.pid
    seeded = seed(url, args.users)
    print(f"seeded {args.users} managed users (one key each) in {seeded:.1f} s")
    cpu_before = cpu_seconds(pid)
    daemon.reload("5s")
    swept = daemon.wait_sweep(args.users, after=first_sweep)
    cpu_sweep = cpu_seconds(pid) - cpu_before
    rss = memory_kib(pid, "VmRSS") / 1024
    peak = memory_kib(pid, "VmHWM") / 1024
    daemon.reload("1h")
    print(
        f"sweep over {swept['users']} users: {swept['duration_seconds']:.1f} s, "
        f"result={swept['result']}, rotated={swept['rotated']} "
        f"(safety.max_actions_per_sweep={args.max_actions}), CPU {cpu_sweep:.1f} s"
    )
    print(f"resident memory after sweeping {swept['users']} users: {rss:.1f} MiB (peak {peak:.1f} MiB)")


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--idle-seconds", type=float, default=60.0, help="idle CPU measuring window")
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument("--max-actions", type=int, default=100, help="safety.max_actions_per_sweep")
    parser.add_argument("--starts", type=int, default=3, help="start-ups to time")
    args = parser.parse_args()

    moto = MotoServer()
    url = moto.url
    try:
        with tempfile.TemporaryDirectory(prefix="rotator-bench-") as tmp:
            workdir = Path(tmp)
            print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, moto server at {url}")
            time_startups(workdir, url, args)
            daemon = Daemon(workdir, url, "1h", args.max_actions)
            try:
                daemon.wait_ready()
                first = daemon.wait_sweep(0)
                time.sleep(2)  # let the first sweep's garbage settle
                measure_idle(daemon, args.idle_seconds)
                measure_sweep(daemon, url, first["sweep_id"], args)
            finally:
                code = daemon.stop()
                print(f"daemon exit code after SIGTERM: {code}")
    finally:
        moto.stop()


if __name__ == "__main__":
    main()
