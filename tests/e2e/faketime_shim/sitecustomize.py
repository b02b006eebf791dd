"""Loaded (``PYTHONPATH``) only by the daemons that ``tests/e2e/test_replicas.py`` runs under libfaketime.

Debian's libfaketime 0.9.10 fails ``clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME)`` with EINVAL when the
monotonic clock is left real (``FAKETIME_DONT_FAKE_MONOTONIC=1``), and CPython's ``time.sleep`` sleeps exactly
that way. Faking the monotonic clock as well is no way out: libfaketime then hands CPython's lock timeouts
(``sem_clockwait``, which it does not wrap) deadlines decades away, and every timed wait hangs. So the wall
clock alone is faked - a host whose clock is off still has a monotonic clock that cannot be set - and a sleep
that fails this way waits on an event instead (``sem_clockwait`` on the real monotonic clock). Nothing of the
rotator is changed.
"""

from __future__ import annotations

import threading
import time

_sleep = time.sleep


def _sleep_despite_libfaketime(seconds: float) -> None:
    try:
        _sleep(seconds)
    except OSError:
        threading.Event().wait(seconds)


time.sleep = _sleep_despite_libfaketime
