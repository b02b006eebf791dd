"""When sweeps run: the only module that imports APScheduler.

Three jobs on one ``BackgroundScheduler`` (UTC), each on its own single-thread executor::

    "default"    the regular sweep and its retries (one sweep at a time)
    "heartbeat"  stamps a monotonic time, pings systemd's watchdog
    "lease"      renews the leader lease (coordination.lease_table)

The scheduler reads the wall clock itself; every time this module decides (the first run, a retry) is
an argument. :func:`validate_cron` is what the configuration validates ``schedule.cron`` with, so a
cron the file accepts is one the daemon can schedule.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import structlog
from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.jobstores.base import JobLookupError
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.date import DateTrigger
from apscheduler.triggers.interval import IntervalTrigger

if TYPE_CHECKING:  # the configuration imports this module (lazily): no import back at run time
    from rotator.config import ScheduleSettings

log = structlog.get_logger("rotator.daemon")

SWEEP_JOB = "sweep"
RETRY_JOB = "sweep-retry"
TAKEOVER_JOB = "sweep-takeover"
HEARTBEAT_JOB = "heartbeat"
LEASE_JOB = "lease"

_SHOWN_CHARS = 60  # a garbage value is quoted in the error, but not at any length


# -- pure helpers (time is an argument) -------------------------------------------------------------


def validate_cron(expression: str) -> None:
    """Raise ValueError, naming the expression and what is wrong, unless it is a five-field UTC crontab."""
    try:
        CronTrigger.from_crontab(expression, timezone=UTC)
    except ValueError as exc:
        shown = expression if len(expression) <= _SHOWN_CHARS else expression[: _SHOWN_CHARS - 3] + "..."
        raise ValueError(f"invalid cron expression {shown!r}: {exc}") from None


def trigger_for(schedule: ScheduleSettings) -> IntervalTrigger | CronTrigger:
    if schedule.cron is not None:
        return CronTrigger.from_crontab(schedule.cron, timezone=UTC)
    assert schedule.interval is not None
    return IntervalTrigger(seconds=schedule.interval.total_seconds(), timezone=UTC)


def describe(schedule: ScheduleSettings) -> str:
    """The schedule in one phrase, for ``daemon.started``."""
    if schedule.cron is not None:
        return f"cron {schedule.cron} UTC"
    assert schedule.interval is not None
    return f"every {schedule.interval.total_seconds():g}s"


def sweep_due(schedule: ScheduleSettings, last_sweep: datetime | None) -> datetime | None:
    """When the sweep after ``last_sweep`` falls due by the schedule; None: at once (no sweep recorded).

    A new leader compares this with AWS's time (the lease item records ``last_sweep`` in it): a dead
    leader's schedule carries on, the new leader neither waits for its own next slot nor sweeps twice.
    """
    if last_sweep is None:
        return None
    if schedule.cron is not None:
        due: datetime | None = CronTrigger.from_crontab(schedule.cron, timezone=UTC).get_next_fire_time(
            None, last_sweep + timedelta(microseconds=1)
        )
        return due
    assert schedule.interval is not None
    return last_sweep + schedule.interval


def retry_delay(failures: int, initial: timedelta, maximum: timedelta) -> timedelta:
    """Backoff after ``failures`` consecutive failed sweeps: initial, doubling, capped."""
    exponent = min(max(failures - 1, 0), 32)
    return min(initial * (1 << exponent), maximum)


def retry_time(now: datetime, delay: timedelta, next_slot: datetime | None) -> datetime | None:
    """When to retry, or None when the next regular sweep comes first (it is the retry then)."""
    at = now + delay
    if next_slot is not None and at >= next_slot:
        return None
    return at


def iso_utc(value: datetime | None) -> str | None:
    """How the daemon writes a time (logs, /readyz, systemd's STATUS=)."""
    return value.astimezone(UTC).isoformat() if value is not None else None


# -- the scheduler ----------------------------------------------------------------------------------


class SweepScheduler:
    """The sweep, heartbeat and lease jobs, and the retry of failed sweeps (backoff, never past the next slot)."""

    def __init__(self, *, retry_initial: timedelta, retry_max: timedelta) -> None:
        self.retry_initial = retry_initial
        self.retry_max = retry_max
        #: Consecutive failed sweeps (touched only from the sweep executor's one thread).
        self.failures = 0
        self._sweep: Callable[[str], None] | None = None
        self._scheduler = BackgroundScheduler(
            timezone=UTC,
            executors={
                "default": ThreadPoolExecutor(1),
                "heartbeat": ThreadPoolExecutor(1),
                "lease": ThreadPoolExecutor(1),
            },
        )
        # The heartbeat and the lease run every few seconds: their "Running job" lines would drown
        # the sweep's.
        for executor in ("heartbeat", "lease"):
            logging.getLogger(f"apscheduler.executors.{executor}").setLevel(logging.WARNING)

    # -- lifecycle -------------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return bool(self._scheduler.running)

    def start_paused(self) -> None:
        # Started paused so jobs are added to a running scheduler (no "tentative" job lines).
        self._scheduler.start(paused=True)

    def resume(self) -> None:
        self._scheduler.resume()

    def stop_sweeps(self) -> None:
        """Start no sweep any more (regular, retry or takeover); the heartbeat and the lease go on.

        A stopping daemon keeps renewing its lease while the step in flight ends: without renewals the
        lease would lapse under that step (after 3/4 of ``coordination.lease_ttl``) and fence its next call.
        """
        if not self._scheduler.running:
            return
        for job_id in (SWEEP_JOB, RETRY_JOB, TAKEOVER_JOB):
            with contextlib.suppress(JobLookupError):  # none pending, or a one-off that already ran
                self._scheduler.remove_job(job_id)

    def shutdown(self) -> None:
        """Run no job any more; a job in flight is not waited for (the daemon bounds that wait)."""
        if self._scheduler.running:
            self._scheduler.shutdown(wait=False)

    # -- jobs ------------------------------------------------------------------------------------

    def add_jobs(
        self,
        *,
        now: datetime,
        schedule: ScheduleSettings,
        sweep: Callable[[str], None],
        heartbeat: Callable[[], None],
        heartbeat_period: timedelta,
        lease: Callable[[], object],
        renew_interval: timedelta,
    ) -> None:
        """Add the regular sweep, the heartbeat and the lease job; each runs first at ``now``.

        ``sweep`` is called with what triggered it: "schedule", or "retry" (see :meth:`after_sweep`).
        """
        self._sweep = sweep
        self._scheduler.add_job(
            sweep,
            trigger_for(schedule),
            args=["schedule"],
            id=SWEEP_JOB,
            name="sweep",
            max_instances=1,
            coalesce=True,
            # A sweep missed while the host slept (or a sweep overran) runs once, late: keeping keys
            # young never gets worse by sweeping late, only by not sweeping.
            misfire_grace_time=None,
            next_run_time=now,  # the first sweep at start-up
        )
        # Each housekeeping job has its own executor, so a long sweep never delays a heartbeat or a renewal.
        for job, period, job_id, name in (
            (heartbeat, heartbeat_period, HEARTBEAT_JOB, "heartbeat"),
            (lease, renew_interval, LEASE_JOB, "lease"),
        ):
            seconds = period.total_seconds()
            self._scheduler.add_job(
                job,
                IntervalTrigger(seconds=seconds, timezone=UTC),
                id=job_id,
                name=name,
                executor=name,
                max_instances=1,
                coalesce=True,
                misfire_grace_time=max(1, int(seconds)),
                next_run_time=now,
            )

    def sweep_once(self, delay: timedelta, trigger: str) -> datetime | None:
        """One extra sweep ``delay`` from now (host clock), e.g. a new leader's ("takeover"); returns when.

        None (nothing added) when the regular sweep comes no later.
        """
        assert self._sweep is not None, "add_jobs comes first"
        at = datetime.now(UTC) + max(delay, timedelta(0))
        job = self._scheduler.get_job(SWEEP_JOB)
        if job is not None and job.next_run_time is not None and job.next_run_time <= at:
            return None
        self._scheduler.add_job(
            self._sweep,
            DateTrigger(run_date=at, timezone=UTC),
            args=[trigger],
            id=TAKEOVER_JOB,
            name=f"sweep-{trigger}",
            replace_existing=True,
            misfire_grace_time=None,
        )
        return at

    def reschedule(self, schedule: ScheduleSettings) -> None:
        self._scheduler.reschedule_job(SWEEP_JOB, trigger=trigger_for(schedule))

    def job(self, job_id: str) -> Any:
        """The APScheduler job (or None), to inspect its trigger and next run time."""
        return self._scheduler.get_job(job_id)

    def next_sweep_at(self) -> datetime | None:
        """The next regular sweep; None before the scheduler runs (or after it stopped)."""
        job = self._scheduler.get_job(SWEEP_JOB) if self._scheduler.running else None
        return job.next_run_time if job is not None else None

    # -- retry of failed sweeps ------------------------------------------------------------------

    def after_sweep(self, result: str, now: datetime) -> None:
        """A success cancels a pending retry; a failure schedules one (backoff) unless the next slot is sooner.

        A ``partial`` sweep (per-user or per-account problems only) counts as a success: retrying at once
        would meet the same problems, and the next scheduled sweep reports them again.
        """
        if result in ("success", "partial"):
            self.failures = 0
            if self._scheduler.get_job(RETRY_JOB) is not None:
                self._scheduler.remove_job(RETRY_JOB)
            return
        self.failures += 1
        delay = retry_delay(self.failures, self.retry_initial, self.retry_max)
        job = self._scheduler.get_job(SWEEP_JOB)
        next_slot: datetime | None = job.next_run_time if job is not None else None
        at = retry_time(now, delay, next_slot)
        if at is None:
            log.warning(
                "sweep.retry_scheduled",
                attempt=self.failures,
                retry_at=iso_utc(next_slot),
                by="schedule",
            )
            return
        assert self._sweep is not None, "add_jobs comes first"
        self._scheduler.add_job(
            self._sweep,
            DateTrigger(run_date=at, timezone=UTC),
            args=["retry"],
            id=RETRY_JOB,
            name="sweep-retry",
            replace_existing=True,
            misfire_grace_time=None,
        )
        log.warning(
            "sweep.retry_scheduled",
            attempt=self.failures,
            retry_at=iso_utc(at),
            delay_seconds=delay.total_seconds(),
            by="backoff",
        )
