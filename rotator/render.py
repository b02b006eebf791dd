"""How people see things: tables, ages and times, shared by the CLI and the sandbox view."""

from __future__ import annotations

import sys
from datetime import datetime
from typing import TextIO


def when(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%SZ") if value else "-"


def format_table(rows: list[list[str]], header: list[str]) -> list[str]:
    """Aligned columns under an upper-case header, as people read them on a terminal."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)]
    lines = ["  ".join(h.upper().ljust(w) for h, w in zip(header, widths, strict=True)).rstrip()]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows]
    return lines


def print_table(rows: list[list[str]], header: list[str], out: TextIO | None = None) -> None:
    """A table on a terminal; tab-separated lines (for scripts) otherwise."""
    out = out or sys.stdout
    lines = format_table(rows, header) if out.isatty() else ["\t".join(row) for row in rows]
    for line in lines:
        print(line, file=out)


def format_age(seconds: float) -> str:
    """An age or a wait for people: two units at most (``3d4h``, ``2m05s``, ``42s``)."""
    whole = max(0, int(seconds))
    if whole >= 86400:
        return f"{whole // 86400}d{whole % 86400 // 3600}h"
    if whole >= 3600:
        return f"{whole // 3600}h{whole % 3600 // 60}m"
    if whole >= 60:
        return f"{whole // 60}m{whole % 60:02d}s"
    return f"{whole}s"
