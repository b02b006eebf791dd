"""AWS's clock, estimated from the ``Date`` header of AWS's answers (docs/design.md, "Time and leadership").

Every time the rotator compares against an AWS timestamp (a key's ``CreateDate``, the published-at and
disabled-at records, the in-flight window, the validation deadline, the lease expiry) it must read AWS's
clock, not the host's: a host clock 2 minutes off would otherwise cut a grace period short or take a lease
that is not free.

Each AWS answer carries an HTTP ``Date`` header (RFC 9110 section 6.6.1: the time the server generated the
answer, whole seconds). Other AWS SDKs estimate clock skew from the same header ("the difference between the
local time at which the client received the response and the Date header from the service's response",
https://docs.aws.amazon.com/AWSJavaSDK/latest/javadoc/com/amazonaws/retry/ClockSkewAdjuster.html); boto3
does not (https://github.com/boto/boto3/issues/1252), so the rotator does it at its transport. One answer
bounds ``aws_time - monotonic`` to ``[date - received, date + 1 - sent]`` (the server stamped it at a moment
between our send and our receipt, truncated to the second); :class:`AwsClock` intersects the bounds of the
last answers and reads AWS time as ``monotonic() + midpoint``, so a host clock that jumps (NTP, a
suspended VM, ``faketime``) changes nothing; a host clock inside the bounds is read as it is (it is the more
precise of the two: the bounds are a second wide). When the bounds of a new answer do not meet the others
(AWS's or the monotonic clock moved), the estimate starts again from that answer.

:meth:`AwsClock.check` refuses (raises :class:`ClockError`) when no answer is recent enough, when the
estimate is imprecise, or when the host clock is further from AWS than AWS itself accepts for a signed
request (5 minutes: https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_aws-signing.html, "a request
must reach AWS within five minutes of the time stamp in the request"): mutating steps stop, loudly, and
/readyz says why.
This module is pure: the clocks are arguments; the transport feeds it (``rotator.aws.transport``).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

from rotator.errors import MutationRefusedError
from rotator.events import ClockSkew, Event

#: Further from AWS than this and AWS rejects the host's signed requests anyway: the estimate is implausible.
MAX_SKEW_SECONDS = 300.0
#: Wider than this, the estimate cannot decide anything to the second (answers took too long).
MAX_UNCERTAINTY_SECONDS = 10.0
#: No AWS answer for this long: the estimate is stale (the daemon's lease renewals keep it fresh).
MAX_AGE_SECONDS = 600.0
#: Answers whose bounds are intersected.
SAMPLES = 32
#: The offset moved by this much: a new ``clock.skew`` event (and gauge value).
REPORT_STEP_SECONDS = 0.5


class ClockError(MutationRefusedError):
    """AWS's time is unknown, stale or implausible: no mutating step may go out."""


@dataclass(frozen=True)
class _Sample:
    low: float  # bounds of aws_time - monotonic
    high: float
    at: float  # monotonic time of the answer


@dataclass(frozen=True)
class ClockReading:
    """What :class:`AwsClock` knows now (for /readyz)."""

    offset_seconds: float | None  # AWS minus the host's wall clock; None = unknown
    uncertainty_seconds: float | None
    age_seconds: float | None
    problem: str | None  # why mutating steps are refused; None = fine

    def to_json(self) -> dict[str, object]:
        def rounded(value: float | None) -> float | None:
            return None if value is None else round(value, 3)

        return {
            "offset_seconds": rounded(self.offset_seconds),
            "uncertainty_seconds": rounded(self.uncertainty_seconds),
            "age_seconds": rounded(self.age_seconds),
            "problem": self.problem,
        }


class AwsClock:
    """AWS's time, from the ``Date`` headers the transport reports. Thread-safe."""

    def __init__(
        self,
        *,
        emit: Callable[[Event], None] | None = None,
        wall: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        max_skew: float = MAX_SKEW_SECONDS,
        max_uncertainty: float = MAX_UNCERTAINTY_SECONDS,
        max_age: float = MAX_AGE_SECONDS,
    ) -> None:
        self._emit = emit
        self._wall = wall
        self._monotonic = monotonic
        self.max_skew = max_skew
        self.max_uncertainty = max_uncertainty
        self.max_age = max_age
        self._lock = threading.Lock()
        self._samples: deque[_Sample] = deque(maxlen=SAMPLES)
        self._low = 0.0
        self._high = 0.0
        self._anchor = 0.0
        self._reported: float | None = None

    # -- fed by the transport ----------------------------------------------------------------------

    def observe(self, date_header: object, sent: float, received: float) -> None:
        """An AWS answer's ``Date`` header, with the monotonic times the call was sent and answered."""
        if not isinstance(date_header, str):
            return
        try:
            stamped = parsedate_to_datetime(date_header)
        except (TypeError, ValueError, IndexError):
            return  # not an HTTP date: no sample (never a guess)
        if stamped.tzinfo is None:
            stamped = stamped.replace(tzinfo=UTC)
        date = stamped.timestamp()
        sample = _Sample(low=date - received, high=date + 1.0 - sent, at=received)
        with self._lock:
            self._samples.append(sample)
            low = max(s.low for s in self._samples)
            high = min(s.high for s in self._samples)
            if low > high:  # this answer contradicts the others: start again from it
                self._samples.clear()
                self._samples.append(sample)
                low, high = sample.low, sample.high
            self._low, self._high = low, high
            # AWS minus monotonic, fixed at each answer: the host's own reading when the bounds admit it (a Date
            # header has whole seconds, so the bounds are a second wide and their midpoint up to half a second off,
            # while an NTP-synchronised host is within milliseconds), else their midpoint. Fixed here, not at each
            # read, so that a host clock that jumps between answers changes nothing.
            host = self._wall() - self._monotonic()
            self._anchor = host if low <= host <= high else (low + high) / 2
            offset = self._offset_locked()
            report = self._reported is None or abs(offset - self._reported) >= REPORT_STEP_SECONDS
            if report:
                self._reported = offset
        if report and self._emit is not None:
            problem = self.reading().problem
            self._emit(
                ClockSkew(
                    offset_seconds=round(offset, 3),
                    uncertainty_seconds=round((high - low) / 2, 3),
                    plausible=problem is None,
                    problem=problem or "",
                )
            )

    # -- reading -------------------------------------------------------------------------------------

    def _offset_locked(self) -> float:
        return self._monotonic() + self._anchor - self._wall()

    def aws_timestamp(self) -> float | None:
        """AWS's time now (epoch seconds), or None before any answer."""
        with self._lock:
            if not self._samples:
                return None
            return self._monotonic() + self._anchor

    def now(self) -> datetime:
        """AWS's time now; the host's until the first answer (reads only: :meth:`check` guards changes)."""
        stamp = self.aws_timestamp()
        return datetime.fromtimestamp(self._wall() if stamp is None else stamp, UTC)

    def checked_now(self) -> datetime:
        """AWS's time now; :class:`ClockError` when it is not known well enough to act on."""
        self.check()
        return self.now()

    def reading(self) -> ClockReading:
        with self._lock:
            if not self._samples:
                return ClockReading(None, None, None, "AWS clock unknown: no AWS answer with a Date header yet")
            offset = self._offset_locked()
            uncertainty = (self._high - self._low) / 2
            age = self._monotonic() - self._samples[-1].at
        problem = None
        if age > self.max_age:
            problem = f"AWS clock stale: last AWS answer {age:.0f}s ago (more than {self.max_age:.0f}s)"
        elif uncertainty > self.max_uncertainty:
            problem = f"AWS clock imprecise: +/-{uncertainty:.1f}s (more than {self.max_uncertainty:.0f}s)"
        elif abs(offset) > self.max_skew:
            problem = (
                f"clock skew implausible: host clock {-offset:+.1f}s from AWS's "
                f"(AWS rejects signatures beyond {self.max_skew:.0f}s)"
            )
        return ClockReading(offset, uncertainty, age, problem)

    def check(self) -> None:
        """Raise :class:`ClockError` unless AWS's time is known, fresh, precise and plausible."""
        problem = self.reading().problem
        if problem is not None:
            raise ClockError(f"refusing to change anything: {problem}")
