"""The daemon's pure parts and its in-process behaviour (no AWS, no subprocess)."""

from __future__ import annotations

import ast
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from helpers import modules_importing

from rotator.app import App
from rotator.config import ScheduleSettings, Settings
from rotator.daemon import Daemon, DaemonTiming, retry_delay, retry_time, trigger_for, validate_cron
from rotator.errors import ConfigError
from rotator.events import AwsCall, SweepFinished
from rotator.sdnotify import Notifier

NOW = datetime(2025, 1, 1, 12, 0, tzinfo=UTC)
S = timedelta(seconds=1)


@pytest.mark.parametrize(
    ("failures", "expected"),
    [(1, 30 * S), (2, 60 * S), (3, 120 * S), (5, 480 * S), (6, 900 * S), (60, 900 * S)],
)
def test_retry_backoff_doubles_and_is_capped(failures: int, expected: timedelta) -> None:
    assert retry_delay(failures, 30 * S, 900 * S) == expected


@pytest.mark.parametrize(
    ("delay", "next_slot", "expected"),
    [
        (30 * S, NOW + 3600 * S, NOW + 30 * S),  # well before the next slot
        (30 * S, NOW + 10 * S, None),  # the next regular sweep comes first: it is the retry
        (30 * S, NOW + 30 * S, None),  # never at (or past) the next slot
        (30 * S, None, NOW + 30 * S),  # no next slot known
    ],
)
def test_retry_never_passes_the_next_regular_slot(
    delay: timedelta, next_slot: datetime | None, expected: datetime | None
) -> None:
    assert retry_time(NOW, delay, next_slot) == expected


@pytest.mark.parametrize("expression", ["0 3 * * *", "*/5 * * * 1-5"])
def test_validate_cron_accepts_five_field_crontabs(expression: str) -> None:
    validate_cron(expression)


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("0 3 * *", "invalid cron expression '0 3 * *': Wrong number of fields"),
        ("99 3 * * *", "invalid cron expression '99 3 * * *': "),
        ("@daily", "invalid cron expression '@daily': "),
        ("x" * 500, "invalid cron expression '" + "x" * 57 + "...': "),
    ],
)
def test_validate_cron_names_the_expression_and_what_is_wrong(expression: str, message: str) -> None:
    with pytest.raises(ValueError) as raised:
        validate_cron(expression)
    assert str(raised.value).startswith(message)


def test_interval_and_cron_triggers_are_utc() -> None:
    interval = trigger_for(ScheduleSettings(interval=timedelta(hours=1)))
    first = interval.get_next_fire_time(None, NOW)
    assert interval.get_next_fire_time(first, first) - first == timedelta(hours=1)
    cron = trigger_for(ScheduleSettings(cron="0 3 * * *"))
    assert cron.get_next_fire_time(None, NOW) == datetime(2025, 1, 2, 3, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("watchdog", "expected"),
    [(None, 5 * S), (timedelta(seconds=60), 5 * S), (timedelta(seconds=2), 1 * S)],
)
def test_heartbeat_is_at_least_twice_per_watchdog_period(watchdog: timedelta | None, expected: timedelta) -> None:
    assert DaemonTiming().heartbeat_for(watchdog) == expected


# -- sd_notify ---------------------------------------------------------------------------------


@pytest.fixture(params=["path", "abstract"])
def notify_socket(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    if request.param == "path":
        address = str(tmp_path / "notify")
        sock.bind(address)
    else:
        address = f"@rotator-unit-{uuid.uuid4().hex}"
        sock.bind(b"\0" + address[1:].encode())
    sock.settimeout(2)
    yield sock, address
    sock.close()


def test_notifier_sends_datagrams(notify_socket: tuple[socket.socket, str]) -> None:
    sock, address = notify_socket
    notifier = Notifier.from_environment({"NOTIFY_SOCKET": address, "WATCHDOG_USEC": "30000000"})
    assert notifier.watchdog == timedelta(seconds=30)
    assert notifier.ready(status="up")
    assert sock.recv(1024) == b"READY=1\nSTATUS=up"
    assert notifier.status("two\nlines")
    assert sock.recv(1024) == b"STATUS=two lines"
    assert notifier.watchdog_ping()
    assert sock.recv(1024) == b"WATCHDOG=1"
    assert notifier.stopping()
    assert sock.recv(1024) == b"STOPPING=1"
    notifier.close()


def test_notifier_is_silent_without_socket_and_ignores_anothers_watchdog() -> None:
    notifier = Notifier.from_environment({})
    assert not notifier.enabled
    assert not notifier.ready()
    other = Notifier.from_environment({"WATCHDOG_USEC": "1000000", "WATCHDOG_PID": "1"}, pid=2)
    assert other.watchdog is None
    gone = Notifier("/nonexistent/socket")
    assert not gone.ready(), "a vanished socket is not an error"


# -- the daemon in process ---------------------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def make_daemon(clock: FakeClock, settings: Settings | None = None, **kwargs: object) -> Daemon:
    app = App(settings or Settings(), clock=lambda: NOW, log=False)
    return Daemon(app, monotonic=clock, **kwargs)  # type: ignore[arg-type]


def test_healthz_follows_the_heartbeat(clock: FakeClock) -> None:
    daemon = make_daemon(clock)
    assert daemon.health()[0] == 503, "no heartbeat yet"
    daemon._heartbeat()
    assert daemon.health()[0] == 200
    clock.now += 15.0
    assert daemon.health()[0] == 200
    clock.now += 0.1
    status, body = daemon.health()
    assert status == 503
    assert body["status"] == "stale"


def test_a_stalled_sweep_stops_the_heartbeat(clock: FakeClock) -> None:
    daemon = make_daemon(clock, timing=DaemonTiming(stall_timeout=timedelta(seconds=60)))
    daemon.state.sweep_started()
    clock.now += 30
    daemon._heartbeat()
    assert daemon.health()[0] == 200, "a long sweep that makes progress is alive"
    daemon.app.bus.emit(AwsCall(service="iam", operation="ListUsers"))
    clock.now += 61
    daemon._heartbeat()
    assert daemon.health()[0] == 503, "no event for stall_timeout: hung"


def test_readyz_after_first_aws_contact_with_last_sweep(clock: FakeClock) -> None:
    daemon = make_daemon(clock)
    status, body = daemon.readiness()
    assert status == 503
    assert body["last_sweep"] is None
    daemon.app.bus.emit(AwsCall(service="iam", operation="ListUsers", outcome="error"))
    assert daemon.readiness()[0] == 503, "a failed call is not contact"
    daemon.app.bus.emit(AwsCall(service="sts", operation="GetCallerIdentity"))
    daemon.app.bus.emit(SweepFinished(sweep_id="abc", result="success", users=3, rotated=1))
    status, body = daemon.readiness()
    assert status == 200
    assert body["aws_contact_at"] == NOW.isoformat()
    assert body["last_sweep"] == {
        "sweep_id": "abc",
        "finished_at": NOW.isoformat(),
        "result": "success",
        "dry_run": False,
        "duration_seconds": 0.0,
        "users": 3,
        "rotated": 1,
        "disabled": 0,
        "deleted": 0,
        "cleaned": 0,
        "held": 0,
        "skipped": 0,
        "deferred": 0,
        "failed": 0,
    }


def test_readyz_is_503_after_a_call_aws_did_not_answer_until_the_next_success(clock: FakeClock) -> None:
    """SPEC: /readyz is 200 only while AWS answers (503 after a failed contact, until the next success)."""
    daemon = make_daemon(clock)
    emit = daemon.app.bus.emit
    emit(AwsCall(service="iam", operation="ListUsers"))
    assert daemon.readiness()[0] == 200
    emit(AwsCall(service="iam", operation="ListAccessKeys", outcome="error"))  # e.g. AccessDenied: AWS answered
    emit(AwsCall(service="iam", operation="ListUsers", outcome="throttled"))  # an answer too
    assert daemon.readiness()[0] == 200, "an error answer shows that AWS answers"

    emit(AwsCall(service="iam", operation="ListUsers", outcome="error", reachable=False))
    status, body = daemon.readiness()
    assert status == 503
    assert body["status"] == "AWS unreachable"
    assert body["aws_unreachable_since"] == NOW.isoformat()
    assert body["aws_contact_at"] == NOW.isoformat(), "the last success is still shown"
    emit(AwsCall(service="iam", operation="GetUser", outcome="error"))
    assert daemon.readiness()[0] == 503, "only a success ends it"

    emit(AwsCall(service="sts", operation="GetCallerIdentity"))
    status, body = daemon.readiness()
    assert status == 200
    assert body["status"] == "ready"
    assert body["aws_unreachable_since"] is None


def test_readyz_before_any_contact_says_whether_aws_failed(clock: FakeClock) -> None:
    daemon = make_daemon(clock)
    assert daemon.readiness()[1]["status"] == "waiting for AWS"
    daemon.app.bus.emit(AwsCall(service="sts", operation="GetCallerIdentity", outcome="error", reachable=False))
    status, body = daemon.readiness()
    assert (status, body["status"], body["aws_contact_at"]) == (503, "AWS unreachable", None)


def test_reload_refuses_a_broken_file_and_applies_a_valid_one(clock: FakeClock) -> None:
    results: list[Settings | Exception] = [
        ConfigError("policy.max_key_age: invalid duration 'soon'"),
        Settings.model_validate({"safety": {"dry_run": True}, "schedule": {"interval": "5m"}}),
    ]

    def load(_path: str | None) -> Settings:
        result = results.pop(0)
        if isinstance(result, Exception):
            raise result
        return result

    daemon = make_daemon(clock, load=load)
    daemon.scheduler.start_paused()
    try:
        daemon._schedule()
        old = daemon.app.settings
        assert daemon.reload() is False
        assert daemon.app.settings is old
        assert daemon.reload() is True
        assert daemon.app.settings.safety.dry_run is True
        assert daemon.app.metrics.dry_run._value.get() == 1
        job = daemon.scheduler.job("sweep")
        assert job.trigger.interval == timedelta(minutes=5)
    finally:
        daemon.scheduler.shutdown()


def test_a_signal_delivered_to_another_thread_wakes_the_main_loop(clock: FakeClock) -> None:
    """The kernel may hand a process signal to any thread; the main loop must still see it."""
    daemon = make_daemon(clock)
    previous = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)}
    daemon.install_signal_handlers()
    try:

        def other_thread() -> None:
            time.sleep(0.2)
            signal.pthread_kill(threading.get_ident(), signal.SIGHUP)

        threading.Thread(target=other_thread).start()
        started = time.monotonic()
        assert daemon._next_signal() == signal.SIGHUP
        assert time.monotonic() - started < 5
    finally:
        signal.set_wakeup_fd(-1)
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def test_the_first_sweep_and_a_retry_take_their_time_from_the_app_clock(clock: FakeClock) -> None:
    """Time is an argument: the daemon reads the App's clock, not datetime.now."""
    daemon = make_daemon(clock, settings=Settings.model_validate({"schedule": {"interval": "1h"}}))
    daemon.scheduler.start_paused()
    try:
        daemon._schedule()
        assert daemon.scheduler.job("sweep").next_run_time == NOW, "the first sweep at start-up"
        daemon.scheduler.after_sweep("failure", NOW - 600 * S)  # ten minutes before the next slot
        assert daemon.scheduler.job("sweep-retry").next_run_time == NOW - 570 * S
        daemon.scheduler.after_sweep("success", NOW - 570 * S)
        assert daemon.scheduler.job("sweep-retry") is None, "a success cancels the retry"
        daemon.scheduler.after_sweep("failure", NOW - 10 * S)
        assert daemon.scheduler.job("sweep-retry") is None, "the next slot comes first: it is the retry"
    finally:
        daemon.scheduler.shutdown()


class FakeLeadership:
    """A lease that is held or not, counting the attempts to take or renew it."""

    def __init__(self, held: bool) -> None:
        self.held = held
        self.attempts = 0
        self.renew_interval = timedelta(seconds=1)

    def try_acquire(self) -> bool:
        self.attempts += 1
        return self.held


def test_a_stopping_daemon_starts_no_sweep_but_renews_the_lease_it_holds(clock: FakeClock) -> None:
    daemon = make_daemon(clock, settings=Settings.model_validate({"schedule": {"interval": "1h"}}))
    daemon.scheduler.start_paused()
    try:
        daemon._schedule()
        daemon.scheduler.reschedule(daemon.app.settings.schedule)  # the next regular sweep an hour away
        daemon.scheduler.after_sweep("failure", NOW - 600 * S)  # a retry pending
        assert daemon.scheduler.sweep_once(timedelta(0), "takeover") is not None  # and a takeover sweep
        assert all(daemon.scheduler.job(job_id) for job_id in ("sweep", "sweep-retry", "sweep-takeover"))
        daemon.stop_event.set()
        daemon.scheduler.stop_sweeps()
        gone = {job_id: daemon.scheduler.job(job_id) for job_id in ("sweep", "sweep-retry", "sweep-takeover")}
        assert gone == dict.fromkeys(gone), "no sweep of any kind after a stop"
        assert daemon.scheduler.job("lease") is not None and daemon.scheduler.job("heartbeat") is not None
        for held in (True, False):
            daemon.leadership = FakeLeadership(held)  # type: ignore[assignment]
            daemon._leading = held
            daemon._lease_job()
            # The step in flight keeps the lease it holds; a standby that is stopping takes none.
            assert daemon.leadership.attempts == (1 if held else 0), held  # type: ignore[attr-defined]
    finally:
        daemon.scheduler.shutdown()


# -- who imports APScheduler -------------------------------------------------------------------


def test_only_the_scheduling_module_imports_apscheduler() -> None:
    assert modules_importing("apscheduler") == {"rotator/daemon/scheduling.py"}


def test_loading_the_config_imports_apscheduler_only_to_validate_a_cron(tmp_path: Path) -> None:
    """Loading the configuration loads no daemon; a cron loads the scheduling module, not the App."""
    (tmp_path / "interval.yaml").write_text("schedule: {interval: 1h}\n", encoding="utf-8")
    (tmp_path / "cron.yaml").write_text('schedule: {cron: "0 3 * * *"}\n', encoding="utf-8")
    script = textwrap.dedent(
        """
        import sys

        def loaded():
            return sorted(m for m in sys.modules if m.split(".")[0] == "apscheduler" or m.startswith("rotator."))

        def load(name):
            return load_settings(sys.argv[1] + "/" + name, env={}, default_path=sys.argv[1] + "/absent.yaml")

        from rotator.config import load_settings
        at_import = loaded()
        assert load("interval.yaml").schedule.cron is None
        after_interval = loaded()
        assert load("cron.yaml").schedule.cron == "0 3 * * *"
        after_cron = loaded()
        print(repr((at_import, after_interval, after_cron)))
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path)], capture_output=True, text=True, check=True, timeout=60
    )
    at_import, after_interval, after_cron = ast.literal_eval(result.stdout.strip())

    def daemon_or_apscheduler(modules: list[str]) -> set[str]:
        return {m for m in modules if m.split(".")[0] == "apscheduler" or m.startswith("rotator.daemon")}

    assert daemon_or_apscheduler(at_import) == set()
    assert daemon_or_apscheduler(after_interval) == set()
    assert "apscheduler.triggers.cron" in after_cron
    assert {"rotator.daemon", "rotator.daemon.scheduling"} <= set(after_cron)
    assert not {"rotator.daemon.loop", "rotator.daemon.health", "rotator.app"} & set(after_cron), (
        "validating a cron loads the scheduling module only"
    )
