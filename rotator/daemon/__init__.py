"""``rotator run``: scheduled sweeps, the HTTP endpoint, systemd notify and signals.

Threads and who owns what::

    main thread      signals (SIGTERM/SIGINT stop, SIGHUP reload) -> queue -> Daemon.run loop   loop.py
    scheduler        APScheduler BackgroundScheduler, UTC                                       scheduling.py
      "sweeps"       executor of 1 thread: the regular sweep job and its retries (one sweep at a time)
      "heartbeat"    executor of 1 thread: stamps a monotonic time, pings systemd's watchdog
      "lease"        executor of 1 thread: renews the leader lease (coordination.lease_table)
    http             ThreadingHTTPServer: /metrics, /healthz, /readyz                           health.py

Shutdown is cooperative: the stop event tells the App to start no new step; the step in flight (a
whole rotation: create, validate, publish) finishes, then the process exits 0 — or 1 if the step
overran ``DaemonTiming.stop_timeout`` (every step is crash-safe, so even that loses nothing).

:mod:`rotator.daemon.scheduling` is the only module that imports APScheduler. The names below load on
first use, so that the configuration can validate a cron with :func:`~rotator.daemon.scheduling.validate_cron`
without importing the App, boto3 and the rest of the daemon.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rotator.daemon.health import HealthState, SweepSummary
    from rotator.daemon.loop import EXIT_FAILED, EXIT_OK, Daemon, DaemonTiming, run_daemon
    from rotator.daemon.scheduling import SweepScheduler, retry_delay, retry_time, trigger_for, validate_cron

__all__ = [
    "EXIT_FAILED",
    "EXIT_OK",
    "Daemon",
    "DaemonTiming",
    "HealthState",
    "SweepScheduler",
    "SweepSummary",
    "retry_delay",
    "retry_time",
    "run_daemon",
    "trigger_for",
    "validate_cron",
]

_HOME = {
    "EXIT_FAILED": "loop",
    "EXIT_OK": "loop",
    "Daemon": "loop",
    "DaemonTiming": "loop",
    "run_daemon": "loop",
    "HealthState": "health",
    "SweepSummary": "health",
    "SweepScheduler": "scheduling",
    "retry_delay": "scheduling",
    "retry_time": "scheduling",
    "trigger_for": "scheduling",
    "validate_cron": "scheduling",
}


def __getattr__(name: str) -> object:
    home = _HOME.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{home}"), name)
    globals()[name] = value  # once loaded, a plain attribute (and what monkeypatch.setattr replaces)
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
