"""``rotate --all``'s progress: a bar redrawn in place on a terminal, one plain line per user otherwise."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TextIO

from rotator.render import format_age

#: Characters of the bar itself.
WIDTH = 30
#: Least time between two redraws of the bar (a redraw per user would flood a slow terminal).
REDRAW_EVERY = 0.2


def bar_line(done: int, total: int, failed: int, elapsed: float) -> str:
    """``[#######.......]  120/1000  12.3/s  ETA 1m11s  failed 2``."""
    filled = WIDTH * done // total if total else WIDTH
    rate = done / elapsed if elapsed > 0 else 0.0
    eta = format_age((total - done) / rate) if rate > 0 and done < total else "-" if done < total else "0s"
    return f"[{'#' * filled}{'.' * (WIDTH - filled)}] {done}/{total}  {rate:.1f}/s  ETA {eta}  failed {failed}"


class Progress:
    """Counts finished users (from any thread) and shows them on ``out``.

    ``bar``: redraw one line in place (``\\r``) at most every :data:`REDRAW_EVERY` seconds, and at the end;
    otherwise print each finished user's ``line`` as it comes (scripts and logs read these).
    """

    def __init__(self, total: int, out: TextIO, *, bar: bool, clock: Callable[[], float] = time.monotonic) -> None:
        self.total = total
        self.out = out
        self.bar = bar
        self.clock = clock
        self.done = 0
        self.failed = 0
        self._started = clock()
        self._drawn = -REDRAW_EVERY
        self._lock = threading.Lock()

    def finished(self, ok: bool, line: str) -> None:
        with self._lock:
            self.done += 1
            self.failed += 0 if ok else 1
            if self.bar:
                now = self.clock()
                if now - self._drawn >= REDRAW_EVERY or self.done == self.total:
                    self._draw(now)
            else:
                print(f"[{self.done}/{self.total}] {line}", file=self.out, flush=True)

    def _draw(self, now: float) -> None:
        self._drawn = now
        self.out.write("\r" + bar_line(self.done, self.total, self.failed, now - self._started))
        self.out.flush()

    def close(self) -> None:
        """The final state of the bar, and the line ended (what follows starts on a line of its own)."""
        with self._lock:
            if self.bar:
                self._draw(self.clock())
                self.out.write("\n")
                self.out.flush()
