"""Durations as operators write them (``45s``, ``15m``, ``12h``, ``90d``, ``2w``). Pure: no pydantic, no YAML.

:func:`parse_duration` reads one (from the configuration or a user's ``rotator:*`` tags) and
:func:`format_duration` writes one back in its most compact exact spelling. No duration exceeds
:data:`MAX_DURATION`. The pure core (:mod:`rotator.policy`) imports this module, not :mod:`rotator.config`.
"""

from __future__ import annotations

import re
from datetime import timedelta

__all__ = ["MAX_DURATION", "format_duration", "parse_duration"]

_DURATION_UNITS: tuple[tuple[str, int], ...] = (
    ("w", 604_800),
    ("d", 86_400),
    ("h", 3_600),
    ("m", 60),
    ("s", 1),
)
_UNIT_SECONDS = dict(_DURATION_UNITS)
_DURATION_RE = re.compile(r"([0-9]+)([smhdw])")
_DURATION_HINT = "use e.g. 45s, 15m, 12h, 90d, 2w"
#: The longest duration anywhere (configuration, tags): far beyond any sensible policy, and small enough that
#: every due time built from a few of them stays a representable ``datetime``.
MAX_DURATION = timedelta(days=36_500)
_TOO_LARGE = "too large (at most 36500d, about 100 years)"


def _shorten(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def parse_duration(text: str) -> timedelta:
    """``45s``, ``15m``, ``12h``, ``90d`` or ``2w`` as a :class:`~datetime.timedelta`.

    The unit is required (a bare ``30`` in a tag would be ambiguous) and lower-case (``m`` is minutes); at
    most :data:`MAX_DURATION` (100 years), so that adding it to a timestamp cannot overflow.
    Raises :class:`ValueError` with an operator-readable, single-line message.
    """
    match = _DURATION_RE.fullmatch(text.strip())
    if match is None:
        raise ValueError(f"invalid duration {_shorten(text)!r} ({_DURATION_HINT})")
    amount, unit = int(match.group(1)), match.group(2)
    if amount == 0:
        raise ValueError(f"invalid duration {_shorten(text)!r}: must be positive ({_DURATION_HINT})")
    if amount * _UNIT_SECONDS[unit] > MAX_DURATION.total_seconds():
        raise ValueError(f"invalid duration {_shorten(text)!r}: {_TOO_LARGE}")
    return timedelta(seconds=amount * _UNIT_SECONDS[unit])


def format_duration(duration: timedelta) -> str:
    """The most compact exact spelling of ``duration`` (``2w``, ``7d``, ``90s``): parse_duration's inverse.

    The shortest exact spelling wins, the smaller unit on a tie (``7d``, ``2w``, ``90s``, ``2m``). Sub-second
    durations (never produced by parse_duration) are spelled as decimal seconds, ``0.5s``.
    """
    if duration < timedelta(0):
        return "-" + format_duration(-duration)
    if duration.microseconds:
        return f"{duration.total_seconds()}s"
    seconds = duration // timedelta(seconds=1)
    if seconds == 0:
        return "0s"
    # Shortest spelling; on a tie the smaller unit, so 7 days reads "7d" as in the docs, not "1w".
    spellings = [f"{seconds // size}{unit}" for unit, size in _DURATION_UNITS if seconds % size == 0]
    return min(reversed(spellings), key=len)


def _validate_duration(value: object) -> timedelta:
    # bool is an int subclass: ``true`` is not one second.
    if isinstance(value, bool):
        raise ValueError(f"must be a duration, got {value!r} ({_DURATION_HINT})")
    if isinstance(value, timedelta):
        if value <= timedelta(0):
            raise ValueError(f"invalid duration {format_duration(value)!r}: must be positive")
        if value > MAX_DURATION:
            raise ValueError(f"invalid duration {format_duration(value)!r}: {_TOO_LARGE}")
        return value
    if isinstance(value, int):
        # A bare YAML integer counts seconds; tests use this.
        if value <= 0:
            raise ValueError(f"invalid duration {value!r}: must be positive ({_DURATION_HINT})")
        if value > MAX_DURATION.total_seconds():
            raise ValueError(f"invalid duration {value!r}: {_TOO_LARGE}")
        return timedelta(seconds=value)
    if isinstance(value, str):
        return parse_duration(value)
    raise ValueError(f"must be a duration, got {_shorten(repr(value))} ({_DURATION_HINT})")
