"""The daemon itself: signals, the main loop, reload (SIGHUP), stop with its bounded wait, sd_notify.

The main thread installs the signal handlers and then waits in :meth:`Daemon.run` for a signal; the jobs
(:mod:`rotator.daemon.scheduling`) and the HTTP endpoint (:mod:`rotator.daemon.health`) run on their own
threads. :func:`run_daemon` composes App, Daemon, HTTP server and systemd notifier for ``rotator run``.
"""

from __future__ import annotations

import contextlib
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
from datetime import timedelta
from http.server import ThreadingHTTPServer
from types import FrameType

import structlog

from rotator.app import App, SweepReport
from rotator.config import Settings, load_settings
from rotator.daemon.health import Answer, HealthState, serve
from rotator.daemon.scheduling import SweepScheduler, describe, iso_utc, sweep_due
from rotator.errors import RotatorError
from rotator.events import Event, LeaseError, SettingsApplied, SweepFinished
from rotator.lease import Leadership, fence, lease_for
from rotator.model import Action
from rotator.sdnotify import Notifier

log = structlog.get_logger("rotator.daemon")

EXIT_OK = 0
EXIT_FAILED = 1


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
        # The lease's expiry is AWS's time, refused while that is unknown; its hold is monotonic (fencing).
        aws_time = app.clock == app.aws_clock.now
        lease_clock = app.aws_clock.checked_now if aws_time else app.clock
        self.leadership: Leadership = leadership or lease_for(
            app.settings, app.base_aws(), app.bus.emit, lease_clock, monotonic=monotonic
        )
        # Fencing: before every mutating AWS call, the lease must still be ours by monotonic time.
        app.guards.append(lambda operation: fence(self.leadership, operation))
        #: Whether the lease job found us leading last time (a change to True is a takeover).
        self._leading = False
        self._load = load
        self.stop_event = threading.Event()
        self._sweep_lock = threading.Lock()
        self._pending_lock = threading.Lock()
        self._monotonic = monotonic
        #: When (monotonic) the lease last failed with an AWS error: "not leader" is then no standby's calm.
        self._lease_failed_at: float | None = None
        self._signals: queue.SimpleQueue[int] = queue.SimpleQueue()
        # The kernel may deliver a signal to any thread; the C-level handler then writes to this
        # socket, which wakes the main thread (a main thread blocked on a lock would sleep through).
        self._wake_reader, self._wake_writer = socket.socketpair()
        self._wake_reader.setblocking(False)
        self._wake_writer.setblocking(False)
        self._pending: Settings | None = None
        self._server: ThreadingHTTPServer | None = None
        self.state = HealthState(
            heartbeat_period=self.heartbeat_period,
            stale_after_beats=self.timing.stale_after_beats,
            stall_timeout=self.timing.stall_timeout,
            clock=app.clock,
            monotonic=monotonic,
        )
        self.scheduler = SweepScheduler(retry_initial=self.timing.retry_initial, retry_max=self.timing.retry_max)
        app.bus.subscribe(self._observe)
        app.bus.emit(SettingsApplied(dry_run=app.settings.safety.dry_run))

    def _observe(self, event: Event) -> None:
        if isinstance(event, LeaseError):
            self._lease_failed_at = self._monotonic()
        summary = self.state.observe(event)
        if summary is not None:
            self.notifier.status(summary.status_line())

    # -- jobs ------------------------------------------------------------------------------------

    def _schedule(self) -> None:
        self.scheduler.add_jobs(
            now=self.app.clock(),
            schedule=self.app.settings.schedule,
            sweep=self._sweep_job,
            heartbeat=self._heartbeat,
            heartbeat_period=self.heartbeat_period,
            lease=self._lease_job,
            renew_interval=self.leadership.renew_interval,
        )

    def _lease_job(self) -> None:
        """Renew (or try to take) the lease; on taking it, sweep when the dead leader's schedule says so.

        A stopping daemon only renews a lease it holds (for the step in flight); it takes none.
        """
        if self.stop_event.is_set() and not self.leadership.held:
            return
        leading = self.leadership.try_acquire()
        was, self._leading = self._leading, leading
        if leading and not was and not self.state.sweeping and not self.stop_event.is_set():
            self._took_lease()

    def _took_lease(self) -> None:
        """A takeover: the lease item's last sweep (AWS time) against the schedule decides the next sweep."""
        last = self.leadership.last_sweep
        due = sweep_due(self.app.settings.schedule, last)
        now = self.app.clock()
        delay = timedelta(0) if due is None else max(due - now, timedelta(0))  # both AWS time
        at = self.scheduler.sweep_once(delay, "takeover") if self.scheduler.running else None
        log.info(
            "leader.takeover",
            last_sweep=iso_utc(last),
            overdue=delay <= timedelta(0),
            next_sweep_at=iso_utc(at or self.scheduler.next_sweep_at()),
        )

    def _heartbeat(self) -> None:
        if self.state.beat() and self.notifier.watchdog is not None:
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
                self._log_not_leader(trigger)
                return
            self.state.sweep_started()
            result = self._sweep_once(trigger)
            if result in ("success", "partial") and not self.app.dry_run():
                # Carried to the next leader in the lease item (written now, not a renewal later).
                self.leadership.record_sweep(self.app.clock())
                if self.leadership.held:
                    self.leadership.try_acquire()
        finally:
            self.state.sweep_ended()
            self._sweep_lock.release()
        if not (self.stop_event.is_set() or result == "interrupted"):
            self.scheduler.after_sweep(result, self.app.clock())

    def _log_not_leader(self, trigger: str) -> None:
        """A standby says so at info; a replica whose lease calls fail says so at warning (RotatorLeaseErrors)."""
        failed_at = self._lease_failed_at
        recent = 2 * self.leadership.renew_interval.total_seconds()
        if failed_at is not None and self._monotonic() - failed_at <= recent:
            log.warning("sweep.skipped", reason="lease unavailable (see lease.error)", trigger=trigger)
        else:
            log.info("sweep.skipped", reason="another replica holds the lease", trigger=trigger)

    def _sweep_once(self, trigger: str) -> str:
        try:
            report = self.app.sweep(stop=self.stop_event)
        except Exception as exc:  # the scheduler must survive any bug in one sweep
            log.exception("sweep.crashed", trigger=trigger, error_type=type(exc).__name__)
            self.app.bus.emit(SweepFinished(result="failure", dry_run=self.app.settings.safety.dry_run))
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
                        due_at=iso_utc(step.due_at),
                        dry_run=True,
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
            self.scheduler.reschedule(new.schedule)
        if self._sweep_lock.acquire(blocking=False):
            try:
                self._pending = new
                self._apply_pending()
            finally:
                self._sweep_lock.release()
            applied = "now"
        else:
            with self._pending_lock:
                self._pending = new
            applied = "after the running sweep"
        log.info(
            "config.reloaded",
            changed=changed,
            applied=applied,
            dry_run=new.safety.dry_run,
            next_sweep_at=iso_utc(self.scheduler.next_sweep_at()),
        )
        return True

    def _apply_pending(self) -> None:
        """Swap settings in between sweeps (called with the sweep lock held)."""
        with self._pending_lock:
            pending, self._pending = self._pending, None
        if pending is not None:
            self.app.reconfigure(pending)
            self.app.bus.emit(SettingsApplied(dry_run=pending.safety.dry_run))

    # -- health and HTTP -------------------------------------------------------------------------

    def health(self) -> Answer:
        return self.state.health()

    def readiness(self) -> Answer:
        status, body = self.state.readiness(
            dry_run=self.app.settings.safety.dry_run,
            leader=self.leadership.held,
            next_sweep_at=self.scheduler.next_sweep_at(),
        )
        # AWS's clock decides every time comparison: not known well enough, nothing may change (say why).
        reading = self.app.aws_clock.reading()
        body["aws_clock"] = reading.to_json()
        if status == 200 and reading.problem is not None and self.app.clock == self.app.aws_clock.now:
            status, body["status"] = 503, reading.problem
        return status, body

    def serve(self, address: str, port: int) -> ThreadingHTTPServer:
        """Bind /metrics, /healthz, /readyz and serve them from a background thread."""
        registry = self.app.registry
        if registry is None:
            raise RuntimeError("the daemon's App was built with metrics=False: /metrics would have nothing to serve")
        self._server = serve(address, port, registry=registry, health=self.health, readiness=self.readiness)
        return self._server

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
        self.scheduler.start_paused()
        self._schedule()
        self.scheduler.resume()
        self.notifier.ready(status="scheduler running; first sweep started")
        log.info(
            "daemon.started",
            schedule=describe(self.app.settings.schedule),
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
        log.info("daemon.stopping", signal=reason, sweep_in_flight=self.state.sweeping)
        self.stop_event.set()
        self.scheduler.stop_sweeps()  # the lease is still renewed while the step in flight ends
        finished = self._sweep_lock.acquire(timeout=self.timing.stop_timeout.total_seconds())
        self.scheduler.shutdown()
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
