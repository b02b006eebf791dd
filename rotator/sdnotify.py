"""systemd's notify protocol without a C dependency: one datagram per message to ``$NOTIFY_SOCKET``.

``READY=1``, ``WATCHDOG=1``, ``STATUS=...`` and ``STOPPING=1`` are plain ``KEY=VALUE`` lines sent to a
unix datagram socket; an address starting with ``@`` is in the abstract namespace. When
``NOTIFY_SOCKET`` is unset (not under systemd) every call is a silent no-op.
"""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Mapping
from datetime import timedelta


class Notifier:
    """Sends notify messages to one socket address (or nowhere when ``address`` is None)."""

    def __init__(self, address: str | None, *, watchdog: timedelta | None = None) -> None:
        self.address = address or None
        #: The watchdog timeout systemd enforces (``WATCHDOG_USEC``) or None when it does not watch us.
        self.watchdog = watchdog
        self._socket: socket.socket | None = None
        self._lock = threading.Lock()

    @classmethod
    def from_environment(cls, env: Mapping[str, str] | None = None, pid: int | None = None) -> Notifier:
        environ = os.environ if env is None else env
        address = environ.get("NOTIFY_SOCKET") or None
        watchdog: timedelta | None = None
        usec = environ.get("WATCHDOG_USEC", "")
        watchdog_pid = environ.get("WATCHDOG_PID", "")
        # WATCHDOG_PID names the process systemd watches; a child that inherited it must not ping.
        mine = not watchdog_pid or watchdog_pid == str(os.getpid() if pid is None else pid)
        if usec.isdigit() and int(usec) > 0 and mine:
            watchdog = timedelta(microseconds=int(usec))
        return cls(address, watchdog=watchdog)

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def _target(self) -> str | bytes:
        assert self.address is not None
        if self.address.startswith("@"):
            return b"\0" + self.address[1:].encode()
        return self.address

    def send(self, **fields: str) -> bool:
        """Send ``KEY=value`` lines in one datagram; False (never an exception) when it could not."""
        if self.address is None or not fields:
            return False
        lines = []
        for key, value in fields.items():
            # A newline would start another assignment: STATUS= text must stay one line.
            lines.append(f"{key}={value.replace(chr(10), ' ')}")
        message = "\n".join(lines).encode()
        with self._lock:
            try:
                if self._socket is None:
                    self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                self._socket.sendto(message, self._target())
            except OSError:
                return False
        return True

    def ready(self, status: str | None = None) -> bool:
        return self.send(READY="1", **({"STATUS": status} if status else {}))

    def watchdog_ping(self) -> bool:
        return self.send(WATCHDOG="1")

    def status(self, text: str) -> bool:
        return self.send(STATUS=text)

    def stopping(self, status: str | None = None) -> bool:
        return self.send(STOPPING="1", **({"STATUS": status} if status else {}))

    def close(self) -> None:
        with self._lock:
            if self._socket is not None:
                self._socket.close()
                self._socket = None
