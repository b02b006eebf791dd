"""``rotator`` that dies by SIGKILL right after its k-th mutating AWS call.

Usage: ``python tests/crashing_rotator.py K ROTATOR_ARGS...``

``rotator.aws.Boundary.call`` is wrapped so that, once the K-th *mutating* call (see ``helpers.MUTATING``)
has returned successfully, the process kills itself with ``SIGKILL``: a real process death (no
``finally``, no ``atexit``, no flushing), exactly what ``kill -9`` or an OOM kill does between two AWS
calls. Before dying it writes one JSON line ``{"event": "crashing_rotator.kill", ...}`` on stderr naming
the call it died after.

``K = 0`` never kills: the run completes and, at exit, writes ``{"event":
"crashing_rotator.mutating_calls", "operations": [...]}`` on stderr - how tests learn how many
mutating calls a run makes (the range of K worth crashing at).

With ``CRASHING_ROTATOR_HOLD=PATH`` in the environment the process does not die after call K: it
writes ``{"event": "crashing_rotator.paused", ...}``, waits (the thread that made the call: a slow
process between two calls) until ``PATH`` exists, and carries on - for racing another run against a
precise step.
"""

from __future__ import annotations

import atexit
import json
import os
import signal
import sys
import threading
import time
from typing import Any

from helpers import MUTATING  # tests/ is sys.path[0] when this runs as a script

from rotator import aws as rotator_aws
from rotator import cli


def _line(payload: dict[str, Any]) -> None:
    sys.stderr.write(json.dumps(payload) + "\n")
    sys.stderr.flush()


def install(kill_after: int) -> list[str]:
    """Wrap ``Boundary.call``; returns the (growing) list of mutating operations done so far."""
    original = rotator_aws.Boundary.call
    done: list[str] = []
    lock = threading.Lock()
    hold = os.environ.get("CRASHING_ROTATOR_HOLD")

    def call(self: Any, service: str, operation: str, client: Any = None, **params: Any) -> dict[str, Any]:
        result = original(self, service, operation, client, **params)
        if operation in MUTATING:
            with lock:
                done.append(operation)
                hit = kill_after and len(done) == kill_after
                if hit and not hold:
                    _line({"event": "crashing_rotator.kill", "after": len(done), "operation": operation})
                    os.kill(os.getpid(), signal.SIGKILL)
            if hit and hold:
                _line({"event": "crashing_rotator.paused", "after": kill_after, "operation": operation})
                deadline = time.monotonic() + 300
                while not os.path.exists(hold) and time.monotonic() < deadline:
                    time.sleep(0.05)
        return result

    rotator_aws.Boundary.call = call  # type: ignore[method-assign]
    return done


def main(argv: list[str]) -> int:
    if not argv or not argv[0].isdigit():
        _line({"event": "crashing_rotator.usage", "error": "usage: crashing_rotator.py K ROTATOR_ARGS..."})
        return 2
    done = install(int(argv[0]))
    atexit.register(lambda: _line({"event": "crashing_rotator.mutating_calls", "operations": list(done)}))
    return cli.main(argv[1:])


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
