"""How people see things: tables, ages and times, shared by the CLI and the sandbox view."""

from __future__ import annotations

import sys
from datetime import datetime
from typing import TextIO

from rotator.model import AccessKey


def when(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%SZ") if value else "-"


def format_table(rows: list[list[str]], header: list[str]) -> list[str]:
    """Aligned columns under an upper-case header, as people read them on a terminal."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)]
    lines = ["  ".join(h.upper().ljust(w) for h, w in zip(header, widths, strict=True)).rstrip()]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows]
    return lines


def print_table(rows: list[list[str]], header: list[str], out: TextIO | None = None) -> None:
    """A table on a terminal; tab-separated lines (for scripts) otherwise, the first of them the header."""
    out = out or sys.stdout
    lines = format_table(rows, header) if out.isatty() else ["\t".join(row) for row in [header, *rows]]
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


def last_use_where(key: AccessKey) -> str | None:
    """``s3/eu-west-1``: the service and region of the key's last use, as far as IAM says."""
    parts = [part for part in (key.last_used_service, key.last_used_region) if part]
    return "/".join(parts) or None


def last_use_cell(key: AccessKey, now: datetime) -> str:
    """A table cell: ``3h0m ago s3/eu-west-1`` (``-`` when IAM reports no use)."""
    if key.last_used is None:
        return "-"
    where = last_use_where(key)
    ago = f"{format_age((now - key.last_used).total_seconds())} ago"
    return f"{ago} {where}" if where else ago


def last_use_phrase(key: AccessKey, now: datetime) -> str:
    """A sentence's part: ``last used 3h0m ago by s3 in eu-west-1`` (or ``no recorded use``)."""
    if key.last_used is None:
        return "no recorded use"
    phrase = f"last used {format_age((now - key.last_used).total_seconds())} ago"
    if key.last_used_service:
        phrase += f" by {key.last_used_service}"
    if key.last_used_region:
        phrase += f" in {key.last_used_region}"
    return phrase
