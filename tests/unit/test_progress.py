"""rotate --all's progress: the bar's figures, redraw throttling, plain lines off a terminal; run_each's order."""

from __future__ import annotations

import io
import threading

from rotator.app import run_each
from rotator.progress import REDRAW_EVERY, Progress, bar_line


def test_the_bar_shows_done_total_rate_eta_and_failures() -> None:
    assert bar_line(25, 100, 2, 5.0) == "[" + "#" * 7 + "." * 23 + "] 25/100  5.0/s  ETA 15s  failed 2"
    assert bar_line(0, 10, 0, 0.0).endswith("0/10  0.0/s  ETA -  failed 0")
    assert bar_line(10, 10, 0, 4.0).startswith("[" + "#" * 30 + "] 10/10  2.5/s  ETA 0s")


def test_the_bar_is_redrawn_in_place_at_most_every_redraw_interval() -> None:
    now = [0.0]
    out = io.StringIO()
    progress = Progress(3, out, bar=True, clock=lambda: now[0])
    progress.finished(True, "a: rotated")
    progress.finished(False, "b: failed")  # same instant: not redrawn
    assert out.getvalue().count("\r") == 1
    now[0] += REDRAW_EVERY
    progress.finished(True, "c: rotated")
    progress.close()
    text = out.getvalue()
    assert text.count("\r") == 3 and text.endswith("3/3  15.0/s  ETA 0s  failed 1\n")
    assert "a: rotated" not in text  # per-user lines only off a terminal


def test_off_a_terminal_each_user_is_one_plain_line() -> None:
    out = io.StringIO()
    progress = Progress(2, out, bar=False)
    progress.finished(True, "a: rotated")
    progress.finished(False, "b: not rotated: why")
    progress.close()
    assert out.getvalue() == "[1/2] a: rotated\n[2/2] b: not rotated: why\n"


def test_run_each_with_one_worker_runs_in_order_on_the_calling_thread() -> None:
    seen: list[tuple[int, str]] = []
    results = run_each([1, 2, 3], lambda n: seen.append((n, threading.current_thread().name)) or n * 10, 1)
    assert results == [10, 20, 30]
    assert seen == [(n, threading.current_thread().name) for n in (1, 2, 3)]


def test_run_each_keeps_input_order_with_workers_and_takes_an_injected_runner() -> None:
    assert run_each(list(range(20)), lambda n: n * n, 8) == [n * n for n in range(20)]
    calls: list[int] = []

    def runner(items, work, workers):  # type: ignore[no-untyped-def]
        calls.append(workers)
        return [work(item) for item in reversed(items)]

    assert run_each([1, 2], lambda n: n + 1, 5, runner=runner) == [3, 2]
    assert calls == [5]
