"""What the daemon says about itself: /metrics, /healthz and /readyz, and the state behind them.

``/healthz`` is liveness: 200 while the heartbeat is fresh; the heartbeat stops when a sweep stalls, so a
hung sweep fails it (and systemd's watchdog restarts the process). ``/readyz`` is readiness: 200 while AWS
answers. Both read :class:`HealthState`, which the event bus feeds; its clocks are arguments.
"""

from __future__ import annotations

import json
import socket
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import structlog
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from rotator.daemon.scheduling import iso_utc
from rotator.events import AwsCall, ClockSkew, Event, LeaderChanged, LeaseError, SweepFinished

log = structlog.get_logger("rotator.daemon")

#: An endpoint's answer: the HTTP status and a JSON body.
Answer = tuple[int, dict[str, object]]


@dataclass(frozen=True)
class SweepSummary:
    """What /readyz and systemd's STATUS= say about the last sweep: its event, and when it ended."""

    finished: SweepFinished
    finished_at: datetime

    def to_json(self) -> dict[str, object]:
        fields = self.finished.fields()
        return {"sweep_id": fields.pop("sweep_id", ""), "finished_at": iso_utc(self.finished_at), **fields}

    def status_line(self) -> str:
        event = self.finished
        mode = " (dry run)" if event.dry_run else ""
        return (
            f"last sweep {iso_utc(self.finished_at)}: {event.result}{mode}; rotated={event.rotated} "
            f"disabled={event.disabled} deleted={event.deleted} held={event.held} failed={event.failed}"
        )


class HealthState:
    """Heartbeat, sweep progress, AWS reachability and the last sweep; safe to use from any thread."""

    def __init__(
        self,
        *,
        heartbeat_period: timedelta,
        stale_after_beats: float,
        stall_timeout: timedelta,
        clock: Callable[[], datetime],
        monotonic: Callable[[], float],
    ) -> None:
        self.heartbeat_period = heartbeat_period
        self.stale_after_beats = stale_after_beats
        self.stall_timeout = stall_timeout
        self._clock = clock
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._heartbeat_at: float | None = None
        self._progress_at = monotonic()
        self._sweeping_since: float | None = None
        self._stall_reported = False
        self._aws_contact_at: datetime | None = None  # the last call AWS answered with success
        self._aws_unreachable_since: datetime | None = None  # a call AWS did not answer, since then
        self._last_sweep: SweepSummary | None = None

    # -- fed by the event bus ------------------------------------------------------------------

    def observe(self, event: Event) -> SweepSummary | None:
        """Record an event; a finished sweep comes back as its summary (for systemd's STATUS=)."""
        # Progress of a sweep, for stall detection: the lease's own calls (its job runs beside the
        # sweep) must not make a hung sweep look alive.
        if not isinstance(event, LeaseError | LeaderChanged | ClockSkew) and not (
            isinstance(event, AwsCall) and event.service == "dynamodb"
        ):
            self._progress_at = self._monotonic()
        if isinstance(event, AwsCall):
            self._observe_aws(event)
        elif isinstance(event, SweepFinished):
            summary = SweepSummary(event, self._clock())
            with self._lock:
                self._last_sweep = summary
            return summary
        return None

    def _observe_aws(self, event: AwsCall) -> None:
        """Readiness: AWS answers until a call gets no answer (or a 5xx); then not, until a call succeeds.

        An error answer (AccessDenied on one key, NoSuchEntity, throttling) changes nothing: AWS answered.
        A failed sweep needs no rule of its own: whatever AWS call failed it emitted its event here.
        """
        if event.outcome == "ok":
            now = self._clock()
            with self._lock:
                self._aws_contact_at = now
                self._aws_unreachable_since = None
        elif not event.reachable:
            now = self._clock()
            with self._lock:
                if self._aws_unreachable_since is None:
                    self._aws_unreachable_since = now

    # -- fed by the sweep and the heartbeat job --------------------------------------------------

    @property
    def sweeping(self) -> bool:
        return self._sweeping_since is not None

    def sweep_started(self) -> None:
        self._sweeping_since = self._progress_at = self._monotonic()
        self._stall_reported = False

    def sweep_ended(self) -> None:
        self._sweeping_since = None

    def beat(self) -> bool:
        """Stamp the heartbeat; False (and no stamp) while a sweep is stalled."""
        now = self._monotonic()
        since = self._sweeping_since
        stall = self.stall_timeout.total_seconds()
        if since is not None and now - max(since, self._progress_at) > stall:
            # A sweep that has done nothing for this long is hung: stop beating so /healthz fails and
            # systemd's watchdog restarts us (all state is in AWS; the restart converges).
            if not self._stall_reported:
                self._stall_reported = True
                log.error("daemon.sweep_stalled", stalled_seconds=round(now - self._progress_at, 1))
            return False
        self._heartbeat_at = now
        return True

    # -- the answers -----------------------------------------------------------------------------

    def health(self) -> Answer:
        beat = self._heartbeat_at
        limit = self.heartbeat_period.total_seconds() * self.stale_after_beats
        age = None if beat is None else self._monotonic() - beat
        fresh = age is not None and age <= limit
        body: dict[str, object] = {
            "status": "ok" if fresh else "stale",
            "heartbeat_age_seconds": None if age is None else round(age, 3),
            "stale_after_seconds": limit,
        }
        return (200 if fresh else 503), body

    def readiness(self, *, dry_run: bool, leader: bool, next_sweep_at: datetime | None) -> Answer:
        with self._lock:
            contact, down_since, last = self._aws_contact_at, self._aws_unreachable_since, self._last_sweep
        ready = contact is not None and down_since is None
        status = "ready" if ready else "AWS unreachable" if down_since is not None else "waiting for AWS"
        body: dict[str, object] = {
            "status": status,
            "aws_contact_at": iso_utc(contact),
            "aws_unreachable_since": iso_utc(down_since),
            "dry_run": dry_run,
            "leader": leader,
            "last_sweep": last.to_json() if last is not None else None,
            "next_sweep_at": iso_utc(next_sweep_at),
        }
        return (200 if ready else 503), body


# -- HTTP ------------------------------------------------------------------------------------------


def serve(
    address: str,
    port: int,
    *,
    registry: CollectorRegistry,
    health: Callable[[], Answer],
    readiness: Callable[[], Answer],
) -> ThreadingHTTPServer:
    """Bind /metrics, /healthz, /readyz and serve them from a background thread."""
    server = _server_for(address, port, _handler_for(registry, health, readiness))
    thread = threading.Thread(target=server.serve_forever, name="http", daemon=True)
    thread.start()
    host, bound_port = server.server_address[:2]
    log.info("daemon.listening", address=str(host), port=int(bound_port))
    return server


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False

    def handle_error(self, request: Any, client_address: Any) -> None:
        """The stdlib prints a traceback to stderr here; every stderr line must be one JSON object.

        A client that went away (a scraper's timeout, a probe that closes at once) is routine: one debug
        line. Anything else is logged as an error with its traceback, through the log pipeline.
        """
        error = sys.exc_info()[1]
        client = str(client_address[0]) if isinstance(client_address, tuple) and client_address else ""
        if isinstance(error, ConnectionError | TimeoutError):
            log.debug("http.client_gone", client=client, error_type=type(error).__name__)
        else:
            log.error("http.handler_failed", client=client, exc_info=True)


def _server_for(address: str, port: int, handler: type[BaseHTTPRequestHandler]) -> ThreadingHTTPServer:
    server_class: type[ThreadingHTTPServer] = _Server
    if ":" in address:

        class _Server6(_Server):
            address_family = socket.AF_INET6

        server_class = _Server6
    return server_class((address, port), handler)


def _handler_for(
    registry: CollectorRegistry, health: Callable[[], Answer], readiness: Callable[[], Answer]
) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "rotator"
        sys_version = ""

        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                self._reply(200, generate_latest(registry), CONTENT_TYPE_LATEST)
            elif path == "/healthz":
                self._json(*health())
            elif path == "/readyz":
                self._json(*readiness())
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
