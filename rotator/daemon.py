"""``rotator run``: scheduled sweeps, the HTTP endpoint, systemd notify and signals.

The only module that imports APScheduler. Threads and who owns what::

    main thread      signals (SIGTERM/SIGINT stop, SIGHUP reload) -> queue -> Daemon.run loop
    scheduler        APScheduler BackgroundScheduler, UTC
      "sweeps"       executor of 1 thread: the regular sweep job and its retries (one sweep at a time)
      "heartbeat"    executor of 1 thread: stamps a monotonic time, pings systemd's watchdog
      "lease"        executor of 1 thread: renews the leader lease (coordination.lease_table)
    http             ThreadingHTTPServer: /metrics, /healthz, /readyz

Shutdown is cooperative: the stop event tells the App to start no new step; the step in flight (a
whole rotation: create, validate, publish) finishes, then the process exits 0 — or 1 if the step
overran ``DaemonTiming.stop_timeout`` (every step is crash-safe, so even that loses nothing).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import queue
import select
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import FrameType
from typing import Any

import structlog
from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.date import DateTrigger
from apscheduler.triggers.interval import IntervalTrigger
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from rotator.app import App, SweepReport
from rotator.config import ScheduleSettings, Settings, load_settings
from rotator.errors import RotatorError
from rotator.events import AwsCall, Event, LeaderChanged, LeaseError, SweepFinished
from rotator.lease import Leadership, lease_for
from rotator.model import Action
from rotator.sdnotify import Notifier

log = structlog.get_logger("rotator.daemon")

EXIT_OK = 0
EXIT_FAILED = 1

SWEEP_JOB = "sweep"
RETRY_JOB = "sweep-retry"
HEARTBEAT_JOB = "heartbeat"
LEASE_JOB = "lease"


@dataclass(frozen=True)
class DaemonTiming:
    """The daemon's own clockwork (not configuration: operators tune the schedule, not these)."""

    heartbeat: timedelta = timedelta(seconds=5)
    #: /healthz turns 503 when the heartbeat is older than this many heartbeat periods.
    stale_after_beats: float = 3.0
    retry_initial: timedelta = timedelta(seconds=30)
    retry_max: timedelta = timedelta(minutes=15)
    #: How long SIGTERM waits for the step in flight before the process exits anyway (code 1). Well inside
    #: systemd's TimeoutStopSec (90 s) and shorter than a call that gets no answer (2 x aws.read_timeout):
    #: a hung AWS call never holds up a stop (every step is crash-safe; the next start completes it).
    stop_timeout: timedelta = timedelta(seconds=25)
    #: A sweep that emits no event (not even an AWS call) for this long is hung: heartbeat stops.
    stall_timeout: timedelta = timedelta(minutes=10)

    def heartbeat_for(self, watchdog: timedelta | None) -> timedelta:
        """systemd wants a ping every ``WATCHDOG_USEC / 2``; never beat slower than that."""
        if watchdog is None:
            return self.heartbeat
        return max(min(self.heartbeat, watchdog / 2), timedelta(milliseconds=100))


# -- pure helpers (time is an argument) -------------------------------------------------------------


def trigger_for(schedule: ScheduleSettings) -> IntervalTrigger | CronTrigger:
    if schedule.cron is not None:
        return CronTrigger.from_crontab(schedule.cron, timezone=UTC)
    assert schedule.interval is not None
    return IntervalTrigger(seconds=schedule.interval.total_seconds(), timezone=UTC)


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


def _iso(value: datetime | None) -> str | None:
    return value.astimezone(UTC).isoformat() if value is not None else None


@dataclass(frozen=True)
class SweepSummary:
    """What /readyz and systemd's STATUS= say about the last sweep: its event, and when it ended."""

    finished: SweepFinished
    finished_at: datetime

    def to_json(self) -> dict[str, object]:
        fields = self.finished.fields()
        return {"sweep_id": fields.pop("sweep_id", ""), "finished_at": _iso(self.finished_at), **fields}

    def status_line(self) -> str:
        event = self.finished
        mode = " (dry run)" if event.dry_run else ""
        return (
            f"last sweep {_iso(self.finished_at)}: {event.result}{mode}; rotated={event.rotated} "
            f"disabled={event.disabled} deleted={event.deleted} held={event.held} failed={event.failed}"
        )


# -- the daemon --------------------------------------------------------------------------------------


class Daemon:
    def __init__(
        self,
        app: App,
        *,
        config_path: str | None = None,
        notifier: Notifier | None = None,
        leadership: Leadership | None = None,
        timing: DaemonTiming | None = None,
        load: Callable[[str | None], Settings] = load_settings,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.app = app
        self.config_path = config_path
        self.notifier = notifier or Notifier(None)
        self.timing = timing or DaemonTiming()
        self.heartbeat_period = self.timing.heartbeat_for(self.notifier.watchdog)
        # Only the replica holding the lease sweeps; without a lease table every replica leads.
        self.leadership: Leadership = leadership or lease_for(app.settings, app.base_aws(), app.bus.emit, app.clock)
        self._load = load
        self._monotonic = monotonic
        self.stop_event = threading.Event()
        self._sweep_lock = threading.Lock()
        self._state_lock = threading.Lock()
        self._signals: queue.SimpleQueue[int] = queue.SimpleQueue()
        # The kernel may deliver a signal to any thread; the C-level handler then writes to this
        # socket, which wakes the main thread (a main thread blocked on a lock would sleep through).
        self._wake_reader, self._wake_writer = socket.socketpair()
        self._wake_reader.setblocking(False)
        self._wake_writer.setblocking(False)
        self._heartbeat_at: float | None = None
        self._progress_at = monotonic()
        self._sweeping_since: float | None = None
        self._stall_reported = False
        self._aws_contact_at: datetime | None = None  # the last call AWS answered with success
        self._aws_unreachable_since: datetime | None = None  # a call AWS did not answer, since then
        self._last_sweep: SweepSummary | None = None
        self._failures = 0
        self._pending: Settings | None = None
        self._server: ThreadingHTTPServer | None = None
        self.scheduler = BackgroundScheduler(
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
        app.bus.subscribe(self._observe)
        app.metrics.dry_run.set(1 if app.settings.safety.dry_run else 0)

    # -- events ----------------------------------------------------------------------------------

    def _observe(self, event: Event) -> None:
        # Progress of a sweep, for stall detection: the lease's own calls (its job runs beside the
        # sweep) must not make a hung sweep look alive.
        if not isinstance(event, LeaseError | LeaderChanged) and not (
            isinstance(event, AwsCall) and event.service == "dynamodb"
        ):
            self._progress_at = self._monotonic()
        if isinstance(event, AwsCall):
            self._observe_aws(event)
        elif isinstance(event, SweepFinished):
            summary = SweepSummary(event, self.app.clock())
            with self._state_lock:
                self._last_sweep = summary
            self.notifier.status(summary.status_line())

    def _observe_aws(self, event: AwsCall) -> None:
        """Readiness: AWS answers until a call gets no answer (or a 5xx); then not, until a call succeeds.

        An error answer (AccessDenied on one key, NoSuchEntity, throttling) changes nothing: AWS answered.
        A failed sweep needs no rule of its own: whatever AWS call failed it emitted its event here.
        """
        if event.outcome == "ok":
            now = self.app.clock()
            with self._state_lock:
                self._aws_contact_at = now
                self._aws_unreachable_since = None
        elif not event.reachable:
            now = self.app.clock()
            with self._state_lock:
                if self._aws_unreachable_since is None:
                    self._aws_unreachable_since = now

    # -- jobs ------------------------------------------------------------------------------------

    def _schedule(self) -> None:
        settings = self.app.settings
        self.scheduler.add_job(
            self._sweep_job,
            trigger_for(settings.schedule),
            args=["schedule"],
            id=SWEEP_JOB,
            name="sweep",
            max_instances=1,
            coalesce=True,
            # A sweep missed while the host slept (or a sweep overran) runs once, late: keeping keys
            # young never gets worse by sweeping late, only by not sweeping.
            misfire_grace_time=None,
            next_run_time=datetime.now(UTC),  # the first sweep at start-up
        )
        self.scheduler.add_job(
            self._heartbeat,
            IntervalTrigger(seconds=self.heartbeat_period.total_seconds(), timezone=UTC),
            id=HEARTBEAT_JOB,
            name="heartbeat",
            executor="heartbeat",
            max_instances=1,
            coalesce=True,
            misfire_grace_time=max(1, int(self.heartbeat_period.total_seconds())),
            next_run_time=datetime.now(UTC),
        )
        renew = self.leadership.renew_interval.total_seconds()
        self.scheduler.add_job(
            self.leadership.try_acquire,
            IntervalTrigger(seconds=renew, timezone=UTC),
            id=LEASE_JOB,
            name="lease",
            executor="lease",
            max_instances=1,
            coalesce=True,
            misfire_grace_time=max(1, int(renew)),
            next_run_time=datetime.now(UTC),
        )

    def _heartbeat(self) -> None:
        now = self._monotonic()
        since = self._sweeping_since
        stall = self.timing.stall_timeout.total_seconds()
        if since is not None and now - max(since, self._progress_at) > stall:
            # A sweep that has done nothing for this long is hung: stop beating so /healthz fails and
            # systemd's watchdog restarts us (all state is in AWS; the restart converges).
            if not self._stall_reported:
                self._stall_reported = True
                log.error("daemon.sweep_stalled", stalled_seconds=round(now - self._progress_at, 1))
            return
        self._heartbeat_at = now
        if self.notifier.watchdog is not None:
            self.notifier.watchdog_ping()

    def _sweep_job(self, trigger: str) -> None:
        if self.stop_event.is_set():
            return
        if not self._sweep_lock.acquire(blocking=False):
            log.warning("sweep.skipped", reason="another sweep is still running", trigger=trigger)
            return
        try:
            self._apply_pending()
            if not self.leadership.held and not self.leadership.try_acquire():
                log.info("sweep.skipped", reason="another replica holds the lease", trigger=trigger)
                return
            self._sweeping_since = self._progress_at = self._monotonic()
            self._stall_reported = False
            result = self._sweep_once(trigger)
        finally:
            self._sweeping_since = None
            self._sweep_lock.release()
        self._after_sweep(result)

    def _sweep_once(self, trigger: str) -> str:
        try:
            report = self.app.sweep(stop=self.stop_event)
        except Exception as exc:  # the scheduler must survive any bug in one sweep
            log.exception("sweep.crashed", trigger=trigger, error_type=type(exc).__name__)
            self.app.metrics.sweeps.labels("failure").inc()
            return "failure"
        if report.dry_run:
            self._report_plan(report)
        return report.result

    def _report_plan(self, report: SweepReport) -> None:
        """Dry run: say what the sweep would have done (the plan), one line per step."""
        for view in report.views:
            for plan in view.plans:
                for step in plan.steps:
                    if not (step.mutating or step.action is Action.HOLD):
                        continue
                    log.info(
                        "sweep.planned",
                        sweep_id=report.sweep_id,
                        account=step.account,
                        user=step.user,
                        key_id=step.key_id,
                        action=step.action.value,
                        reason=step.reason,
                        due_at=_iso(step.due_at),
                        dry_run=True,
                    )

    def _after_sweep(self, result: str) -> None:
        if self.stop_event.is_set() or result == "interrupted":
            return
        if result == "success":
            self._failures = 0
            if self.scheduler.get_job(RETRY_JOB) is not None:
                self.scheduler.remove_job(RETRY_JOB)
            return
        self._failures += 1
        delay = retry_delay(self._failures, self.timing.retry_initial, self.timing.retry_max)
        job = self.scheduler.get_job(SWEEP_JOB)
        next_slot: datetime | None = job.next_run_time if job is not None else None
        at = retry_time(datetime.now(UTC), delay, next_slot)
        if at is None:
            log.warning(
                "sweep.retry_scheduled",
                attempt=self._failures,
                retry_at=_iso(next_slot),
                by="schedule",
            )
            return
        self.scheduler.add_job(
            self._sweep_job,
            DateTrigger(run_date=at, timezone=UTC),
            args=["retry"],
            id=RETRY_JOB,
            name="sweep-retry",
            replace_existing=True,
            misfire_grace_time=None,
        )
        log.warning(
            "sweep.retry_scheduled",
            attempt=self._failures,
            retry_at=_iso(at),
            delay_seconds=delay.total_seconds(),
            by="backoff",
        )

    # -- configuration reload (SIGHUP) -----------------------------------------------------------

    def reload(self) -> bool:
        """Re-read the configuration; a broken file is refused and the running one stays."""
        try:
            new = self._load(self.config_path)
        except RotatorError as exc:
            log.error("config.reload_failed", error=str(exc), kept="previous configuration")
            return False
        old = self.app.settings
        changed = [name for name in Settings.model_fields if getattr(old, name) != getattr(new, name)]
        if not changed:
            log.info("config.reloaded", changed=[])
            return True
        restart = [name for name in ("metrics", "logging", "coordination") if name in changed]
        if restart:
            log.warning("config.restart_required", sections=restart, reason="applies at the next start")
        if new.schedule != old.schedule:
            self.scheduler.reschedule_job(SWEEP_JOB, trigger=trigger_for(new.schedule))
        if self._sweep_lock.acquire(blocking=False):
            try:
                self._pending = new
                self._apply_pending()
            finally:
                self._sweep_lock.release()
            applied = "now"
        else:
            with self._state_lock:
                self._pending = new
            applied = "after the running sweep"
        job = self.scheduler.get_job(SWEEP_JOB)
        log.info(
            "config.reloaded",
            changed=changed,
            applied=applied,
            dry_run=new.safety.dry_run,
            next_sweep_at=_iso(job.next_run_time) if job is not None else None,
        )
        return True

    def _apply_pending(self) -> None:
        """Swap settings in between sweeps (called with the sweep lock held)."""
        with self._state_lock:
            pending, self._pending = self._pending, None
        if pending is not None:
            self.app.reconfigure(pending)
            self.app.metrics.dry_run.set(1 if pending.safety.dry_run else 0)

    # -- health ----------------------------------------------------------------------------------

    def health(self) -> tuple[int, dict[str, object]]:
        beat = self._heartbeat_at
        limit = self.heartbeat_period.total_seconds() * self.timing.stale_after_beats
        age = None if beat is None else self._monotonic() - beat
        fresh = age is not None and age <= limit
        body: dict[str, object] = {
            "status": "ok" if fresh else "stale",
            "heartbeat_age_seconds": None if age is None else round(age, 3),
            "stale_after_seconds": limit,
        }
        return (200 if fresh else 503), body

    def readiness(self) -> tuple[int, dict[str, object]]:
        with self._state_lock:
            contact, down_since, last = self._aws_contact_at, self._aws_unreachable_since, self._last_sweep
        ready = contact is not None and down_since is None
        job = self.scheduler.get_job(SWEEP_JOB) if self.scheduler.running else None
        status = "ready" if ready else "AWS unreachable" if down_since is not None else "waiting for AWS"
        body: dict[str, object] = {
            "status": status,
            "aws_contact_at": _iso(contact),
            "aws_unreachable_since": _iso(down_since),
            "dry_run": self.app.settings.safety.dry_run,
            "leader": self.leadership.held,
            "last_sweep": last.to_json() if last is not None else None,
            "next_sweep_at": _iso(job.next_run_time) if job is not None else None,
        }
        return (200 if ready else 503), body

    # -- HTTP ------------------------------------------------------------------------------------

    def serve(self, address: str, port: int) -> ThreadingHTTPServer:
        """Bind /metrics, /healthz, /readyz and serve them from a background thread."""
        server = _server_for(address, port, self)
        thread = threading.Thread(target=server.serve_forever, name="http", daemon=True)
        thread.start()
        self._server = server
        host, bound_port = server.server_address[:2]
        log.info("daemon.listening", address=str(host), port=int(bound_port))
        return server

    # -- signals and the main loop ---------------------------------------------------------------

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        # Runs in the main thread. SimpleQueue.put is reentrant: safe in a signal handler.
        self._signals.put(signum)

    def install_signal_handlers(self) -> None:
        """Call from the main thread, before any other thread starts."""
        signal.set_wakeup_fd(self._wake_writer.fileno())
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(signum, self._on_signal)

    def _next_signal(self) -> int:
        """Block until a signal (or request_stop) arrives; no polling."""
        while True:
            try:
                return self._signals.get_nowait()
            except queue.Empty:
                pass
            # Returning to Python after select runs any pending handler before the next get_nowait.
            select.select([self._wake_reader], [], [])
            with contextlib.suppress(BlockingIOError):
                while self._wake_reader.recv(512):
                    pass

    def run(self) -> int:
        """Start the scheduler, wait for signals, stop cleanly. Returns the exit code."""
        # Started paused so jobs are added to a running scheduler (no "tentative" job lines), then go.
        self.scheduler.start(paused=True)
        self._schedule()
        self.scheduler.resume()
        self.notifier.ready(status="scheduler running; first sweep started")
        log.info(
            "daemon.started",
            schedule=self._describe_schedule(),
            dry_run=self.app.settings.safety.dry_run,
            heartbeat_seconds=self.heartbeat_period.total_seconds(),
            watchdog=self.notifier.watchdog is not None,
            pid=os.getpid(),
        )
        reason = "signal"
        while True:
            signum = self._next_signal()
            if signum == signal.SIGHUP:
                log.info("daemon.reload_requested", signal="SIGHUP")
                self.reload()
                continue
            reason = signal.Signals(signum).name
            break
        return self.shutdown(reason)

    def shutdown(self, reason: str) -> int:
        self.notifier.stopping(status=f"stopping ({reason})")
        log.info("daemon.stopping", signal=reason, sweep_in_flight=self._sweeping_since is not None)
        self.stop_event.set()
        if self.scheduler.running:
            self.scheduler.shutdown(wait=False)
        finished = self._sweep_lock.acquire(timeout=self.timing.stop_timeout.total_seconds())
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if finished:
            # Hand the lease over at once; with a sweep still running it is left to expire instead.
            self.leadership.release()
        self.notifier.close()
        self._close_wakeup()
        if not finished:
            log.error(
                "daemon.stop_timeout",
                waited_seconds=self.timing.stop_timeout.total_seconds(),
                note="the step in flight is crash-safe; the next start completes or cleans it",
            )
            return EXIT_FAILED
        log.info("daemon.stopped", signal=reason)
        return EXIT_OK

    def request_stop(self, signum: int = signal.SIGTERM) -> None:
        """What a SIGTERM does, for embedders and tests (any thread)."""
        self._signals.put(signum)
        with contextlib.suppress(OSError):  # already closed: the daemon is stopping anyway
            self._wake_writer.send(b"\0")

    def _close_wakeup(self) -> None:
        if threading.current_thread() is threading.main_thread():
            signal.set_wakeup_fd(-1)
        self._wake_reader.close()
        self._wake_writer.close()

    def _describe_schedule(self) -> str:
        schedule = self.app.settings.schedule
        if schedule.cron is not None:
            return f"cron {schedule.cron} UTC"
        assert schedule.interval is not None
        return f"every {schedule.interval.total_seconds():g}s"


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False


def _server_for(address: str, port: int, daemon: Daemon) -> ThreadingHTTPServer:
    handler = _handler_for(daemon)
    server_class: type[ThreadingHTTPServer] = _Server
    if ":" in address:

        class _Server6(_Server):
            address_family = socket.AF_INET6

        server_class = _Server6
    return server_class((address, port), handler)


def _handler_for(daemon: Daemon) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "rotator"
        sys_version = ""

        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                self._reply(200, generate_latest(daemon.app.registry), CONTENT_TYPE_LATEST)
            elif path == "/healthz":
                self._json(*daemon.health())
            elif path == "/readyz":
                self._json(*daemon.readiness())
            else:
                self._json(404, {"error": "not found", "paths": ["/metrics", "/healthz", "/readyz"]})

        def _json(self, status: int, body: dict[str, object]) -> None:
            self._reply(status, json.dumps(body).encode(), "application/json")

        def _reply(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            # The stdlib writes plain text to stderr; every stderr line must be JSON.
            log.debug("http.request", client=self.client_address[0], request=format % args)

    return Handler


def run_daemon(settings: Settings, *, config_path: str | None = None) -> int:
    """``rotator run``: the composition of App, Daemon, HTTP server and systemd notifier."""
    app = App(settings)
    for warning in settings.warnings():
        log.warning("config.warning", warning=warning)
    notifier = Notifier.from_environment()
    daemon = Daemon(app, config_path=config_path, notifier=notifier)
    daemon.install_signal_handlers()
    try:
        daemon.serve(settings.metrics.address, settings.metrics.port)
    except OSError as exc:
        log.error(
            "daemon.listen_failed",
            address=settings.metrics.address,
            port=settings.metrics.port,
            error=exc.strerror or str(exc),
        )
        return EXIT_FAILED
    code = daemon.run()
    if code != EXIT_OK:
        # A worker thread still inside an AWS step would keep the interpreter alive: leave now.
        sys.stderr.flush()
        os._exit(code)
    return code
