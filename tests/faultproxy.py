"""A loopback HTTP proxy between botocore and the moto server that injects the faults AWS really produces.

``FaultProxy(upstream_url)`` listens on a free port of 127.0.0.1 and serves from daemon threads of the test process;
clients (boto3 in the test, rotator subprocesses through ``AWS_ENDPOINT_URL=proxy.url``) talk to it as if it were
AWS. Every request is forwarded verbatim (method, path and query, every header including ``Host``, which SigV4
signs, and the body) to the upstream moto server with ``http.client``; the answer goes back with
``Connection: close``. All state and rules live in the test process and are guarded by one lock.

Each request is identified - service and signer access key id from the ``Authorization`` credential scope,
operation from ``X-Amz-Target`` (JSON protocols) or the form's ``Action`` (query protocols: IAM, STS), and the
decoded parameters - and recorded in :attr:`FaultProxy.calls` as a frozen :class:`Call` (its ``repr`` leaves the
parameters out: a ``PutSecretValue`` carries a secret access key).

Rules (:class:`Rule`, or the convenience methods that build one) match an operation (optionally a service and a
predicate on the :class:`Call`), skip the first ``after`` matches and fire for the next ``times`` (``None``:
always). Actions:

* before AWS acts: ``fail_before`` (an AWS-shaped error in the request's protocol), ``reset_before`` (the
  connection is reset, nothing answered), ``hang`` (read the request, never answer);
* after AWS acted, the answer is lost: ``fail_after``, ``reset_after``, ``truncate_after`` (the first part of the
  real body, with a ``Content-Length`` that matches the cut);
* hooks, which combine with the above: ``hold`` on a :class:`threading.Barrier` (:meth:`FaultProxy.lockstep`),
  ``before``/``after`` callbacks run in the proxy thread just before forwarding / just after upstream answered;
* ``random``: :meth:`FaultProxy.random_faults` - a seeded fault on a fraction of the requests.

Of the fault rules, the first one (in the order added) that fires takes the request; the later ones do not see
it, so ``fail_before(op)`` then ``fail_after(op)`` fail the first call before and the second after AWS acted.
:meth:`FaultProxy.silence` holds every request unanswered until :meth:`FaultProxy.unsilence` or ``stop()``.

Three things moto lacks are stood in for:

* IAM's credential report: moto's content is live but its ``GeneratedTime`` is fixed in 2015, so the proxy
  rewrites it to the current time. :meth:`FaultProxy.freeze_credential_report` captures the report as it is now
  and serves that copy (content and time) until :meth:`FaultProxy.thaw_credential_report` - IAM serves a cached
  report up to 4 hours old; ``GenerateCredentialReport`` then answers ``COMPLETE`` without regenerating.
* CloudTrail ``LookupEvents`` (moto does not implement it): the proxy records every ``iam:CreateAccessKey`` that
  succeeded upstream (key id, user, creation date, signer; never the secret key) and serves ``LookupEvents``
  itself, with :attr:`FaultProxy.cloudtrail_delay` (delivery lag) and :attr:`FaultProxy.cloudtrail_enabled`
  (``False``: ``AccessDeniedException``). :meth:`FaultProxy.record_key_creation` adds an event by hand.
* Atomic checks: moto looks, then acts, in one of its server threads, unlocked: two ``CreateSecret`` calls for
  one name can both succeed (AWS answers the second ``ResourceExistsException``), two ``CreateAccessKey`` calls
  for a user with one key can both succeed (AWS answers the second ``LimitExceeded``). The proxy forwards these
  (:data:`ATOMIC_OPERATIONS`) one at a time per secret name or user, as AWS decides them. A loaded run once
  saw two lock-step bootstraps both report their rotation done (``test_reliability``), which only this race
  explains.

What botocore (1.44, urllib3 2) makes of each fault, with retries off (``total_max_attempts=1``):

* ``fail_before``/``fail_after``: ``ClientError`` with the injected code (the standard and legacy retry modes
  retry 500/503 and throttling codes by themselves);
* ``reset_before``/``reset_after``: ``botocore.exceptions.ConnectionClosedError``;
* ``hang``/``silence``: ``botocore.exceptions.ReadTimeoutError`` after the client's ``read_timeout``;
* ``truncate_after`` on a query-protocol (XML) answer: ``botocore.parsers.ResponseParserError``, whose message
  quotes the body received - for ``CreateAccessKey`` that includes the secret access key as far as it came;
  with ``full_length`` the same (botocore reads with ``enforce_content_length=False``: a short read goes
  unnoticed). On a JSON-protocol answer there is NO error: botocore parses an unparsable JSON body as
  ``{"message": body}``, so the call "succeeds" and the modelled fields (``SecretString``, ``VersionId``...) are
  simply missing.

A rule's callback or predicate that raises, a barrier that times out and a failed forward are kept in
:attr:`FaultProxy.errors`. In ``tests/conftest.py``, the ``fault_proxy`` fixture starts one proxy in front of
the test's moto server (and fails the test if the proxy has errors); ``proxied_aws`` is an ``AwsEnv`` through it.

Example::

    with FaultProxy(moto.url) as proxy:
        iam = client(proxy.url, "iam")
        rule = proxy.fail_after("CreateUser", status=503, code="ServiceUnavailable")
        with pytest.raises(ClientError):  # the user exists upstream all the same
            iam.create_user(UserName="alice")
        assert rule.fired == 1 and proxy.calls[-1].fault == "fail_after"
"""

from __future__ import annotations

import base64
import contextlib
import hmac
import http.client
import json
import random
import re
import socket
import struct
import threading
import time
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal
from urllib.parse import parse_qsl, urlencode, urlsplit
from xml.sax.saxutils import escape

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

Action = Literal[
    "fail_before",
    "reset_before",
    "hang",
    "fail_after",
    "reset_after",
    "truncate_after",
    "hold",
    "before",
    "after",
    "random",
]
FAULTS = frozenset({"fail_before", "reset_before", "hang", "fail_after", "reset_after", "truncate_after"})
HOOKS = frozenset({"hold", "before", "after"})
RANDOM_KINDS = ("fail_before", "reset_before", "fail_after", "reset_after")
#: Operations whose check AWS makes atomically and moto does not: forwarded one at a time per resource, by
#: the parameter that names it.
ATOMIC_OPERATIONS = {"CreateSecret": "Name", "CreateAccessKey": "UserName"}

ACCOUNT = "123456789012"  # moto's default account
LOOKUP_ATTRIBUTES = frozenset(
    {"EventId", "EventName", "ReadOnly", "Username", "ResourceType", "ResourceName", "EventSource", "AccessKeyId"}
)
#: the key id the proxy's own upstream calls are "signed" with (moto checks no signature unless told to)
PROXY_KEY_ID = "FAULTPROXYINTERNAL"

_CREDENTIAL = re.compile(r"Credential=([^/,\s]+)/(\d{8})/([^/]+)/([^/]+)/aws4_request")
_GENERATED_TIME = re.compile(rb"<GeneratedTime>[^<]*</GeneratedTime>")
_REQUEST_ID = re.compile(rb"<RequestId>[^<]*</RequestId>")
_AUTHORIZATION = re.compile(
    r"Credential=([^/,\s]+)/\d{8}/([^/]+)/([^/]+)/aws4_request,\s*SignedHeaders=([^,\s]+),\s*Signature=([0-9a-f]+)"
)
_HOP_BY_HOP = frozenset({"connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade", "te"})


def _now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _local_name(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _xml_fields(body: bytes, parent: str) -> dict[str, str]:
    """The text children of the first ``parent`` element of ``body`` (namespaces ignored)."""
    root = ET.fromstring(body)  # noqa: S314 - the test's own moto server on 127.0.0.1
    for element in root.iter():
        if _local_name(element.tag) == parent:
            return {_local_name(child.tag): child.text or "" for child in element}
    return {}


@dataclass(frozen=True)
class Call:
    """One request the proxy received; ``status``/``fault``/``upstream_status`` are ``None`` while it is in flight.

    ``fault`` is the fault's kind (an action name, or ``"silence"``), ``None`` when the request went through.
    ``status`` is what the client was answered (``None``: nothing - reset, hang, silence); ``upstream_status`` is
    what AWS answered (``None``: it never saw the request; for the calls the proxy serves itself - ``LookupEvents``,
    the frozen credential report - the status it served). ``time`` is the arrival time (``time.time()``).
    """

    seq: int
    time: float
    method: str
    path: str
    service: str
    operation: str
    protocol: Literal["query", "json"]
    signer_key_id: str | None
    region: str | None
    params: Mapping[str, Any] = field(repr=False, compare=False)  # may hold secrets: kept out of assertion output
    status: int | None = None
    fault: str | None = None
    upstream_status: int | None = None

    @property
    def acted(self) -> bool:
        """AWS (moto, or the proxy's stand-in) processed the request."""
        return self.upstream_status is not None


@dataclass(eq=False)
class Rule:
    """What to do with matching requests; ``matched``/``fired`` count what it saw and did. See the module doc."""

    action: Action
    operation: str | Collection[str] | None = None  # None: every operation
    service: str | None = None
    when: Callable[[Call], bool] | None = None
    times: int | None = 1  # None: always
    after: int = 0
    status: int = 500
    code: str = "InternalFailure"
    message: str | None = None
    fraction: float = 0.5  # truncate_after: how much of the body is sent
    at: str | None = None  # truncate_after: cut just before this text instead (when the body holds it)
    full_length: bool = False  # truncate_after: announce AWS's Content-Length, then close after the cut
    barrier: threading.Barrier | None = None  # hold
    timeout: float = 30.0  # hold: how long to wait on the barrier
    callback: Callable[[Call], object] | None = None  # before/after
    rate: float = 0.2  # random
    seed: int | None = 0  # random
    kinds: tuple[str, ...] = RANDOM_KINDS  # random
    matched: int = field(default=0, init=False)
    fired: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        if self.action not in FAULTS | HOOKS | {"random"}:
            raise ValueError(f"unknown action {self.action!r}")
        if self.action == "hold" and self.barrier is None:
            raise ValueError("hold needs a barrier")
        if self.action in ("before", "after") and self.callback is None:
            raise ValueError(f"{self.action} needs a callback")
        if not 0 <= self.fraction < 1:
            raise ValueError("fraction must be in [0, 1)")
        if not set(self.kinds) <= set(RANDOM_KINDS) | {"hang", "truncate_after"} or not self.kinds:
            raise ValueError(f"random kinds must be among {RANDOM_KINDS} (or hang, truncate_after)")
        self._rng = random.Random(self.seed)  # noqa: S311 - reproducible fault injection, not cryptography
        self._released = threading.Event()  # hang: set when the rule is removed or the proxy stops
        self._proxy: FaultProxy | None = None

    def matches(self, call: Call) -> bool:
        if self.service is not None and call.service != self.service:
            return False
        if isinstance(self.operation, str):
            if call.operation != self.operation:
                return False
        elif self.operation is not None and call.operation not in self.operation:
            return False
        return self.when is None or bool(self.when(call))

    def _take(self) -> bool:
        """Count a match; whether it falls in the firing window."""
        index = self.matched
        self.matched += 1
        return index >= self.after and (self.times is None or index < self.after + self.times)

    def remove(self) -> None:
        if self._proxy is not None:
            self._proxy.remove(self)


@dataclass(frozen=True)
class KeyCreation:
    """A ``CreateAccessKey`` CloudTrail saw. ``signer_arn`` ``None``: resolved from ``signer_key_id`` on lookup."""

    key_id: str
    user: str
    create_date: datetime
    time: float
    signer_key_id: str | None
    signer_arn: str | None
    region: str
    event_id: str
    request_id: str
    request_user: str | None  # the request's UserName parameter (None: the signer's own key)


@dataclass(frozen=True)
class CredentialReport:
    """A captured credential report: the CSV and the time IAM says it was generated."""

    content: bytes
    generated_time: datetime


@dataclass
class _Exchange:
    """A request in flight: what will be recorded about it."""

    call: Call
    outcome: dict[str, Any] = field(default_factory=dict)
    recorded: bool = False


@dataclass
class _Response:
    status: int
    reason: str
    headers: list[tuple[str, str]]
    body: bytes


class _Dropped(Exception):
    """A held request is let go unanswered (silence lifted, hang rule removed, proxy stopped)."""


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    proxy: FaultProxy

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # client connection errors; the proxy's own errors are kept in FaultProxy.errors


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def setup(self) -> None:
        super().setup()
        self.server.proxy._track(self.connection, True)

    def finish(self) -> None:
        with contextlib.suppress(OSError):
            super().finish()
        self.server.proxy._track(self.connection, False)

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _dispatch(self) -> None:
        self.close_connection = True
        self.server.proxy._handle(self)

    do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = do_PATCH = _dispatch


class FaultProxy:
    """See the module docstring. ``start()``/``stop()``, or use it as a context manager."""

    def __init__(
        self,
        upstream: str,
        *,
        resolve_signers: bool = True,
        upstream_timeout: float = 60.0,
        verify_signatures: bool = False,
    ) -> None:
        parts = urlsplit(upstream)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"upstream must be an http:// URL, not {upstream!r}")
        self.upstream = upstream.rstrip("/")
        self._upstream_host = parts.hostname
        self._upstream_port = parts.port or 80
        self.upstream_timeout = upstream_timeout
        #: look a signer's ARN up upstream when LookupEvents needs it and no GetCallerIdentity answer showed it
        self.resolve_signers = resolve_signers
        #: seconds before a CloudTrail event shows in LookupEvents (CloudTrail's delivery lag)
        self.cloudtrail_delay = 0.0
        #: False: LookupEvents answers AccessDeniedException, as if the caller lacked cloudtrail:LookupEvents
        self.cloudtrail_enabled = True
        #: refuse (403 SignatureDoesNotMatch, before AWS acts) a request signed by a key created through the proxy
        #: whose SigV4 signature its secret does not reproduce: moto without INITIAL_NO_AUTH_ACTION_COUNT takes
        #: any secret, so without this a stored wrong SecretAccessKey would still "sign"
        self.verify_signatures = verify_signatures
        self.errors: list[BaseException] = []
        self._lock = threading.RLock()
        #: One lock per ATOMIC_OPERATIONS resource, held while its call is upstream (never with ``_lock``).
        self._atomic: dict[tuple[str, str], threading.Lock] = {}
        self._key_secrets: dict[str, str] = {}  # never printed: only compared, in _signature_matches
        self._rules: list[Rule] = []
        self._calls: list[Call] = []
        self._seq = 0
        self._trail: list[KeyCreation] = []
        self._signer_arns: dict[str, str] = {}
        self._frozen: bytes | None = None  # the captured GetCredentialReport XML
        self._silence: threading.Event | None = None
        self._sockets: set[socket.socket] = set()
        self._stopped = threading.Event()
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.proxy = self
        self.port = int(self._server.server_address[1])
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread: threading.Thread | None = None

    # -- lifecycle ------------------------------------------------------------------------------------------------

    def start(self) -> FaultProxy:
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name="faultproxy", daemon=True
            )
            self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, release held requests and close every connection; returns promptly."""
        if self._stopped.is_set():
            return
        self._stopped.set()
        with self._lock:
            rules = list(self._rules)
            silence, self._silence = self._silence, None
            sockets = list(self._sockets)
        if silence is not None:
            silence.set()
        for rule in rules:
            rule._released.set()
            if rule.barrier is not None:
                rule.barrier.abort()
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join(timeout=5)
        self._server.server_close()
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _track(self, sock: socket.socket, add: bool) -> None:
        with self._lock:
            if add:
                self._sockets.add(sock)
            else:
                self._sockets.discard(sock)
        if add and self._stopped.is_set():
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    # -- records --------------------------------------------------------------------------------------------------

    @property
    def calls(self) -> list[Call]:
        """Every finished request, in the order they finished (``seq`` is the arrival order)."""
        with self._lock:
            return list(self._calls)

    def operations(self, service: str | None = None) -> list[str]:
        """The operations of :attr:`calls` (of one service), in order."""
        return [c.operation for c in self.calls if service is None or c.service == service]

    @property
    def faults(self) -> list[Call]:
        """The calls a fault was applied to."""
        return [c for c in self.calls if c.fault is not None]

    def clear_calls(self) -> None:
        with self._lock:
            self._calls.clear()

    # -- rules ----------------------------------------------------------------------------------------------------

    def add(self, rule: Rule) -> Rule:
        with self._lock:
            rule._proxy = self
            self._rules.append(rule)
        return rule

    def remove(self, rule: Rule) -> None:
        """Drop a rule (a request it holds unanswered - ``hang`` - is dropped too)."""
        with self._lock:
            if rule in self._rules:
                self._rules.remove(rule)
        rule._released.set()

    def clear(self) -> None:
        """Drop every rule."""
        with self._lock:
            rules = list(self._rules)
        for rule in rules:
            self.remove(rule)

    def fail_before(
        self, operation: str | Collection[str] | None, status: int = 500, code: str = "InternalFailure", **how: Any
    ) -> Rule:
        """Answer an AWS error without forwarding (AWS never acted)."""
        return self.add(Rule("fail_before", operation, status=status, code=code, **how))

    def reset_before(self, operation: str | Collection[str] | None, **how: Any) -> Rule:
        """Reset the connection without forwarding (AWS never acted)."""
        return self.add(Rule("reset_before", operation, **how))

    def hang(self, operation: str | Collection[str] | None, **how: Any) -> Rule:
        """Read the request and never answer, until the rule is removed or the proxy stops (AWS never acted)."""
        return self.add(Rule("hang", operation, **how))

    def fail_after(
        self, operation: str | Collection[str] | None, status: int = 500, code: str = "InternalFailure", **how: Any
    ) -> Rule:
        """Forward (AWS acts), then answer an AWS error instead of AWS's answer."""
        return self.add(Rule("fail_after", operation, status=status, code=code, **how))

    def reset_after(self, operation: str | Collection[str] | None, **how: Any) -> Rule:
        """Forward (AWS acts), then reset the connection instead of answering."""
        return self.add(Rule("reset_after", operation, **how))

    def truncate_after(
        self,
        operation: str | Collection[str] | None,
        fraction: float = 0.5,
        *,
        at: str | None = None,
        full_length: bool = False,
        **how: Any,
    ) -> Rule:
        """Forward (AWS acts), then answer only the first part of AWS's body.

        The cut is at ``fraction`` of the body, or just before the text ``at`` when the body holds it (e.g.
        ``at="</SecretAccessKey>"``). The ``Content-Length`` matches the cut - a complete HTTP answer whose body is
        cut short - unless ``full_length``: then it is AWS's, and the connection closes after the cut (a short read).
        """
        return self.add(Rule("truncate_after", operation, fraction=fraction, at=at, full_length=full_length, **how))

    def hold(
        self, operation: str | Collection[str] | None, barrier: threading.Barrier, timeout: float = 30.0, **how: Any
    ) -> Rule:
        """Each matching request waits on ``barrier`` before it is forwarded (``times`` defaults to its parties)."""
        how.setdefault("times", barrier.parties)
        return self.add(Rule("hold", operation, barrier=barrier, timeout=timeout, **how))

    def lockstep(
        self, operation: str | Collection[str] | None, parties: int = 2, timeout: float = 30.0, **how: Any
    ) -> Rule:
        """The next ``parties`` matching requests are forwarded together, once all of them have arrived."""
        return self.hold(operation, threading.Barrier(parties), timeout, **how)

    def before(self, operation: str | Collection[str] | None, callback: Callable[[Call], object], **how: Any) -> Rule:
        """Run ``callback(call)`` in the proxy thread just before the request is forwarded."""
        return self.add(Rule("before", operation, callback=callback, **how))

    def after(self, operation: str | Collection[str] | None, callback: Callable[[Call], object], **how: Any) -> Rule:
        """Run ``callback(call)`` in the proxy thread once AWS answered, before the client is answered."""
        return self.add(Rule("after", operation, callback=callback, **how))

    def random_faults(
        self,
        rate: float = 0.2,
        seed: int | None = 0,
        operations: Collection[str] | None = None,
        kinds: tuple[str, ...] = RANDOM_KINDS,
        **how: Any,
    ) -> Rule:
        """Each matching request gets a fault of one of ``kinds`` with probability ``rate`` (``random.Random(seed)``).

        The draws follow the order requests arrive in, so a single-threaded client sees the same faults for a seed.
        ``Call.fault`` records which kind each request got.
        """
        how.setdefault("times", None)
        return self.add(Rule("random", operations, rate=rate, seed=seed, kinds=tuple(kinds), **how))

    def silence(self) -> None:
        """From now on read every request and never answer it, until :meth:`unsilence` or :meth:`stop`."""
        with self._lock:
            if self._silence is None:
                self._silence = threading.Event()

    def unsilence(self) -> None:
        """Lift :meth:`silence`; the requests it held are dropped unanswered (AWS never saw them)."""
        with self._lock:
            silence, self._silence = self._silence, None
        if silence is not None:
            silence.set()

    @property
    def silenced(self) -> bool:
        return self._silence is not None

    # -- credential report ----------------------------------------------------------------------------------------

    def freeze_credential_report(self, generated_at: datetime | None = None) -> CredentialReport:
        """Capture IAM's credential report now and serve that copy until :meth:`thaw_credential_report`.

        ``generated_at`` backdates the captured report's ``GeneratedTime`` (default: now). The capture is made by
        the proxy itself (``GenerateCredentialReport`` + ``GetCredentialReport``, signed with a made-up key id, in
        moto's default account).
        """
        body = b""
        for _ in range(50):
            status, body = self._upstream_query("iam", "GenerateCredentialReport", {"Version": "2010-05-08"})
            if status != 200:
                raise RuntimeError(f"GenerateCredentialReport answered {status}: {body[:300]!r}")
            status, body = self._upstream_query("iam", "GetCredentialReport", {"Version": "2010-05-08"})
            if status == 200:
                break
            time.sleep(0.05)  # ReportInProgress
        else:
            raise RuntimeError(f"GetCredentialReport answered {status}: {body[:300]!r}")
        when = (generated_at or datetime.now(UTC)).astimezone(UTC)
        stamp = when.strftime("%Y-%m-%dT%H:%M:%SZ").encode()
        body = _GENERATED_TIME.sub(b"<GeneratedTime>" + stamp + b"</GeneratedTime>", body, count=1)
        with self._lock:
            self._frozen = body
        content = base64.b64decode(_xml_fields(body, "GetCredentialReportResult").get("Content", ""))
        return CredentialReport(content, when.replace(microsecond=0))

    def thaw_credential_report(self) -> None:
        """Serve the live report again (``GeneratedTime`` rewritten to the current time)."""
        with self._lock:
            self._frozen = None

    @property
    def credential_report_frozen(self) -> bool:
        return self._frozen is not None

    # -- CloudTrail -----------------------------------------------------------------------------------------------

    def record_key_creation(
        self,
        key_id: str,
        user: str,
        signer_arn: str | None,
        when: datetime | float | None = None,
        *,
        signer_key_id: str | None = None,
        region: str = "us-east-1",
    ) -> KeyCreation:
        """Add a ``CreateAccessKey`` CloudTrail event by hand (a key created outside the proxy)."""
        at = time.time() if when is None else when.timestamp() if isinstance(when, datetime) else float(when)
        event = KeyCreation(
            key_id=key_id,
            user=user,
            create_date=datetime.fromtimestamp(at, UTC),
            time=at,
            signer_key_id=signer_key_id,
            signer_arn=signer_arn,
            region=region,
            event_id=str(uuid.uuid4()),
            request_id=str(uuid.uuid4()),
            request_user=user,
        )
        with self._lock:
            self._trail.append(event)
        return event

    @property
    def key_creations(self) -> list[KeyCreation]:
        """Every ``CreateAccessKey`` event recorded (visible in LookupEvents or not yet)."""
        with self._lock:
            return list(self._trail)

    # -- serving --------------------------------------------------------------------------------------------------

    def _handle(self, h: _Handler) -> None:
        try:
            body = self._read_body(h)
        except (OSError, ValueError):
            return
        headers = [(k, v) for k, v in h.headers.items() if k.lower() != "transfer-encoding"]
        if "chunked" in h.headers.get("Transfer-Encoding", "").lower():
            headers.append(("Content-Length", str(len(body))))
        call = self._identify(h.command, h.path, headers, body)
        result = _Exchange(call)
        try:
            self._serve(h, call, headers, body, result)
        except _Dropped:
            pass
        except OSError:
            pass  # the client went away (timed out, or the proxy stopped)
        except Exception as exc:
            self.errors.append(exc)
            if not result.recorded:
                with contextlib.suppress(OSError):
                    self._send(h, self._error(call, 502, "BadGateway", f"fault proxy: {exc!r}"), result)
        finally:
            self._commit(result)

    def _commit(self, exchange: _Exchange) -> None:
        """Record the call once, before the client can see its answer (a test reads ``calls`` right after)."""
        with self._lock:
            if not exchange.recorded:
                exchange.recorded = True
                self._calls.append(replace(exchange.call, **exchange.outcome))

    @staticmethod
    def _read_body(h: _Handler) -> bytes:
        if "chunked" in h.headers.get("Transfer-Encoding", "").lower():
            chunks: list[bytes] = []
            while True:
                size = int(h.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while h.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                chunks.append(h.rfile.read(size))
                h.rfile.readline()
        return h.rfile.read(int(h.headers.get("Content-Length") or 0))

    def _identify(self, method: str, path: str, headers: list[tuple[str, str]], body: bytes) -> Call:
        lower = {k.lower(): v for k, v in headers}
        scope = _CREDENTIAL.search(lower.get("authorization", "")) or _CREDENTIAL.search(
            "Credential=" + dict(parse_qsl(urlsplit(path).query)).get("X-Amz-Credential", "")
        )
        target = lower.get("x-amz-target")
        params: dict[str, Any]
        if target:
            protocol: Literal["query", "json"] = "json"
            operation = target.rsplit(".", 1)[-1]
            try:
                decoded = json.loads(body) if body.strip() else {}
            except ValueError:
                decoded = {}
            params = decoded if isinstance(decoded, dict) else {"": decoded}
        else:
            protocol = "query"
            text = body.decode("utf-8", "replace") if body else urlsplit(path).query
            params = dict(parse_qsl(text, keep_blank_values=True))
            operation = str(params.get("Action", ""))
        with self._lock:
            self._seq += 1
            seq = self._seq
        return Call(
            seq=seq,
            time=time.time(),
            method=method,
            path=path,
            service=scope.group(4) if scope else "",
            operation=operation,
            protocol=protocol,
            signer_key_id=scope.group(1) if scope else None,
            region=scope.group(3) if scope else None,
            params=params,
        )

    def _select(self, call: Call) -> tuple[list[Rule], Rule | None, str | None]:
        """The hooks that fire for ``call``, and the fault rule that takes it with the fault's kind.

        Every hook sees every request; fault rules are asked in order until one fires (later ones do not see it).
        """
        hooks: list[Rule] = []
        taken: Rule | None = None
        kind: str | None = None
        with self._lock:
            for rule in self._rules:
                if taken is not None and rule.action not in HOOKS:
                    continue
                try:
                    matched = rule.matches(call)
                except Exception as exc:
                    self.errors.append(exc)
                    matched = False
                if not matched or not rule._take():
                    continue
                if rule.action in HOOKS:
                    hooks.append(rule)
                elif rule.action == "random":
                    if rule._rng.random() >= rule.rate:
                        continue
                    taken, kind = rule, rule._rng.choice(rule.kinds)
                else:
                    taken, kind = rule, rule.action
                rule.fired += 1
        return hooks, taken, kind

    def _serve(self, h: _Handler, call: Call, headers: list[tuple[str, str]], body: bytes, result: _Exchange) -> None:
        with self._lock:
            silence = self._silence
        if silence is not None:
            result.outcome["fault"] = "silence"
            self._wait(silence)
        hooks, rule, kind = self._select(call)
        result.outcome["fault"] = kind
        if rule is not None and kind == "hang":
            self._wait(rule._released)
        for hook in hooks:
            if hook.action == "hold":
                self._hold(hook, call)
        for hook in hooks:
            if hook.action == "before":
                self._run(hook, call)
        if rule is not None and kind == "fail_before":
            self._send(h, self._error(call, rule.status, rule.code, rule.message), result)
        elif not self._signature_matches(call, headers, body):
            result.outcome["fault"] = "bad_signature"
            message = "The request signature we calculated does not match the signature you provided."
            self._send(h, self._error(call, 403, "SignatureDoesNotMatch", message), result)
        elif kind == "reset_before":
            self._reset(h, result)
        else:
            response = self._act(call, headers, body)
            result.outcome["upstream_status"] = response.status
            response = self._observe(call, response)
            acted = replace(call, upstream_status=response.status)
            self._answer(h, acted, response, result, hooks=hooks, rule=rule, kind=kind)

    def _answer(
        self,
        h: _Handler,
        call: Call,
        response: _Response,
        result: _Exchange,
        *,
        hooks: list[Rule],
        rule: Rule | None,
        kind: str | None,
    ) -> None:
        """AWS acted and answered ``response``: the after hooks, then the answer or the fault that replaces it."""
        for hook in hooks:
            if hook.action == "after":
                self._run(hook, call)
        if rule is not None and kind == "fail_after":
            self._send(h, self._error(call, rule.status, rule.code, rule.message), result)
        elif kind == "reset_after":
            self._reset(h, result)
        elif rule is not None and kind == "truncate_after":
            position = response.body.find(rule.at.encode()) if rule.at else -1
            if position < 0:
                position = int(len(response.body) * rule.fraction)
            cut = replace(response, body=response.body[:position])
            self._send(h, cut, result, length=len(response.body) if rule.full_length else None)
        else:
            self._send(h, response, result)

    def _wait(self, event: threading.Event) -> None:
        while not event.wait(0.05):
            if self._stopped.is_set():
                break
        raise _Dropped

    def _hold(self, rule: Rule, call: Call) -> None:
        assert rule.barrier is not None
        try:
            rule.barrier.wait(rule.timeout)
        except threading.BrokenBarrierError:
            if self._stopped.is_set():
                raise _Dropped from None
            self.errors.append(RuntimeError(f"hold on {call.operation} #{call.seq}: barrier broken or timed out"))

    def _run(self, rule: Rule, call: Call) -> None:
        assert rule.callback is not None
        try:
            rule.callback(call)
        except Exception as exc:
            self.errors.append(exc)

    def _send(self, h: _Handler, response: _Response, result: _Exchange, length: int | None = None) -> None:
        """Answer ``response`` (``length``: the Content-Length to announce, if not the body's)."""
        result.outcome["status"] = response.status
        self._commit(result)
        h.send_response_only(response.status, response.reason or None)
        for name, value in response.headers:
            if name.lower() not in _HOP_BY_HOP and name.lower() != "content-length":
                h.send_header(name, value)
        h.send_header("Content-Length", str(len(response.body) if length is None else length))
        h.send_header("Connection", "close")
        h.end_headers()
        if h.command != "HEAD":
            h.wfile.write(response.body)
        h.wfile.flush()

    def _reset(self, h: _Handler, result: _Exchange) -> None:
        """Close the connection with a TCP reset, without a byte of answer."""
        self._commit(result)
        h.close_connection = True
        with contextlib.suppress(OSError):
            h.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            h.wfile.close()
            h.rfile.close()
            h.connection.close()

    @staticmethod
    def _error(call: Call, status: int, code: str, message: str | None) -> _Response:
        """An AWS-shaped error answer in the protocol of ``call``."""
        request_id = str(uuid.uuid4())
        text = message or f"{code} (injected by the fault proxy)"
        reason = http.client.responses.get(status, "Error")
        if call.protocol == "json":
            body = json.dumps({"__type": code, "message": text}).encode()
            content_type = "application/x-amz-json-1.1"
            headers = [("Content-Type", content_type), ("x-amzn-RequestId", request_id), ("x-amzn-ErrorType", code)]
            return _Response(status, reason, headers, body)
        version = call.params.get("Version")
        xmlns = f' xmlns="https://{call.service}.amazonaws.com/doc/{version}/"' if version and call.service else ""
        kind = "Receiver" if status >= 500 else "Sender"
        xml = (
            f"<ErrorResponse{xmlns}><Error><Type>{kind}</Type><Code>{escape(code)}</Code>"
            f"<Message>{escape(text)}</Message></Error><RequestId>{request_id}</RequestId></ErrorResponse>"
        )
        headers = [("Content-Type", "text/xml"), ("x-amzn-RequestId", request_id)]
        return _Response(status, reason, headers, xml.encode())

    def _act(self, call: Call, headers: list[tuple[str, str]], body: bytes) -> _Response:
        """AWS acts on the request: the proxy's stand-ins, or moto."""
        if call.service == "cloudtrail" and call.operation == "LookupEvents":
            return self._lookup_events(call)
        with self._lock:
            frozen = self._frozen
        if frozen is not None and call.service == "iam":
            if call.operation == "GetCredentialReport":
                fresh = _REQUEST_ID.sub(f"<RequestId>{uuid.uuid4()}</RequestId>".encode(), frozen, count=1)
                return self._xml(fresh)
            if call.operation == "GenerateCredentialReport":
                return self._xml(
                    b'<GenerateCredentialReportResponse xmlns="https://iam.amazonaws.com/doc/2010-05-08/">'
                    b"<GenerateCredentialReportResult><State>COMPLETE</State></GenerateCredentialReportResult>"
                    b"<ResponseMetadata><RequestId>"
                    + str(uuid.uuid4()).encode()
                    + b"</RequestId></ResponseMetadata></GenerateCredentialReportResponse>"
                )
        if call.operation in ATOMIC_OPERATIONS:
            resource = (call.operation, str(call.params.get(ATOMIC_OPERATIONS[call.operation], "")))
            with self._lock:
                atomic = self._atomic.setdefault(resource, threading.Lock())
            with atomic:
                return self._forward(call.method, call.path, headers, body)
        return self._forward(call.method, call.path, headers, body)

    @staticmethod
    def _xml(body: bytes) -> _Response:
        return _Response(200, "OK", [("Content-Type", "text/xml")], body)

    def _forward(self, method: str, path: str, headers: list[tuple[str, str]], body: bytes) -> _Response:
        conn = http.client.HTTPConnection(self._upstream_host, self._upstream_port, timeout=self.upstream_timeout)
        try:
            conn.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
            for name, value in headers:
                if name.lower() not in _HOP_BY_HOP:
                    conn.putheader(name, value)
            conn.putheader("Connection", "close")
            conn.endheaders(body or None)
            answer = conn.getresponse()
            data = answer.read()
            return _Response(answer.status, answer.reason, answer.getheaders(), data)
        finally:
            conn.close()

    def _upstream_query(
        self, service: str, action: str, params: dict[str, str], key_id: str = PROXY_KEY_ID
    ) -> tuple[int, bytes]:
        """A query-protocol call of the proxy's own to moto, "signed" by ``key_id`` (moto reads only the scope)."""
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        body = urlencode({"Action": action, **params}).encode()
        headers = [
            ("Host", f"{self._upstream_host}:{self._upstream_port}"),
            ("Content-Type", "application/x-www-form-urlencoded; charset=utf-8"),
            ("Content-Length", str(len(body))),
            ("X-Amz-Date", stamp),
            (
                "Authorization",
                f"AWS4-HMAC-SHA256 Credential={key_id}/{stamp[:8]}/us-east-1/{service}/aws4_request, "
                f"SignedHeaders=content-type;host;x-amz-date, Signature={'0' * 64}",
            ),
        ]
        response = self._forward("POST", "/", headers, body)
        return response.status, response.body

    def _observe(self, call: Call, response: _Response) -> _Response:
        """What the proxy learns from AWS's answer; the live credential report gets a current GeneratedTime."""
        if response.status != 200 or call.service not in ("iam", "sts"):
            return response
        try:
            return self._learn(call, response)
        except (ET.ParseError, ValueError) as exc:
            self.errors.append(exc)
            return response

    def _learn(self, call: Call, response: _Response) -> _Response:
        if call.operation == "GetCredentialReport" and not self.credential_report_frozen:
            stamp = f"<GeneratedTime>{_now_iso()}</GeneratedTime>".encode()
            return replace(response, body=_GENERATED_TIME.sub(stamp, response.body, count=1))
        if call.operation == "CreateAccessKey":
            self._record_created(call, response.body)
        elif call.operation == "GetCallerIdentity" and call.signer_key_id:
            arn = _xml_fields(response.body, "GetCallerIdentityResult").get("Arn")
            if arn:
                with self._lock:
                    self._signer_arns[call.signer_key_id] = arn
        return response

    def _signature_matches(self, call: Call, headers: list[tuple[str, str]], body: bytes) -> bool:
        """False when a key created through the proxy signed ``call`` and its secret gives another signature."""
        if not self.verify_signatures or call.signer_key_id is None:
            return True
        with self._lock:
            secret = self._key_secrets.get(call.signer_key_id)
        if secret is None:
            return True  # the test's own credentials, or a key made before the proxy: moto's rules
        lower = {name.lower(): value for name, value in headers}
        found = _AUTHORIZATION.search(lower.get("authorization", ""))
        if found is None or "x-amz-date" not in lower:
            return False
        key_id, region, service, signed_names, signature = found.groups()
        signed = {name: lower.get(name, "") for name in signed_names.split(";")}
        request = AWSRequest(method=call.method, url=f"http://{lower.get('host', '')}{call.path}", data=body)
        for name, value in signed.items():
            request.headers[name] = value
        request.context["timestamp"] = lower["x-amz-date"]
        signer = SigV4Auth(Credentials(key_id, secret), service, region)
        expected = signer.signature(signer.string_to_sign(request, signer.canonical_request(request)), request)
        return hmac.compare_digest(expected, signature)

    def _record_created(self, call: Call, body: bytes) -> None:
        key = _xml_fields(body, "AccessKey")  # holds the secret: only the fields below are kept
        try:
            created = datetime.fromisoformat(key["CreateDate"]).astimezone(UTC)
        except (KeyError, ValueError):
            created = datetime.fromtimestamp(call.time, UTC)
        request_id = _xml_fields(body, "ResponseMetadata").get("RequestId") or str(uuid.uuid4())
        event = KeyCreation(
            key_id=key.get("AccessKeyId", ""),
            user=key.get("UserName", ""),
            create_date=created,
            time=call.time,
            signer_key_id=call.signer_key_id,
            signer_arn=None,
            region=call.region or "us-east-1",
            event_id=str(uuid.uuid4()),
            request_id=request_id,
            request_user=call.params.get("UserName"),
        )
        with self._lock:
            self._trail.append(event)
            if key.get("AccessKeyId") and key.get("SecretAccessKey"):
                self._key_secrets[key["AccessKeyId"]] = key["SecretAccessKey"]

    # -- CloudTrail LookupEvents ----------------------------------------------------------------------------------

    def signer_arn(self, key_id: str | None) -> str | None:
        """The ARN owning ``key_id``: seen in a GetCallerIdentity answer, else asked of moto (then cached).

        Asking is side-effect free for an IAM user's key: ``GetAccessKeyLastUsed`` + ``GetUser`` signed by a made-up
        key (a call signed *with* the key would overwrite its last-used date and service in moto). Keys IAM does not
        know (``testing``, assumed roles) go to ``sts:GetCallerIdentity`` - ``arn:aws:sts::123456789012:user/moto``
        for unknown keys. ``None`` when that fails (e.g. moto verifies signatures). Each lookup is a request moto
        counts (``INITIAL_NO_AUTH_ACTION_COUNT``); ``FaultProxy(..., resolve_signers=False)`` makes none.
        """
        if not key_id:
            return None
        with self._lock:
            known = self._signer_arns.get(key_id)
        if known is not None or not self.resolve_signers:
            return known
        arn: str | None = None
        try:
            query = {"AccessKeyId": key_id, "Version": "2010-05-08"}
            status, body = self._upstream_query("iam", "GetAccessKeyLastUsed", query)
            user = _xml_fields(body, "GetAccessKeyLastUsedResult").get("UserName") if status == 200 else None
            if user:
                status, body = self._upstream_query("iam", "GetUser", {"UserName": user, "Version": "2010-05-08"})
                arn = _xml_fields(body, "User").get("Arn") if status == 200 else None
            else:
                status, body = self._upstream_query("sts", "GetCallerIdentity", {"Version": "2011-06-15"}, key_id)
                arn = _xml_fields(body, "GetCallerIdentityResult").get("Arn") if status == 200 else None
        except (OSError, ET.ParseError, http.client.HTTPException):
            arn = None
        if arn:
            with self._lock:
                self._signer_arns[key_id] = arn
        return arn

    def _lookup_events(self, call: Call) -> _Response:
        try:
            if not self.cloudtrail_enabled:
                with self._lock:
                    known = self._signer_arns.get(call.signer_key_id or "")
                raise _ApiError(
                    "AccessDeniedException",
                    f"User: {known or f'arn:aws:iam::{ACCOUNT}:user/unknown'} is not authorized to perform: "
                    "cloudtrail:LookupEvents because no identity-based policy allows the "
                    "cloudtrail:LookupEvents action",
                )
            lookup = _Lookup.parse(call.params)
        except _ApiError as exc:
            return self._error(call, 400, exc.code, exc.message)
        now = time.time()
        with self._lock:
            delay = self.cloudtrail_delay
            trail = list(enumerate(self._trail))
        # newest first, as CloudTrail answers; the cursor (time, index) keeps pages stable while events arrive
        trail.sort(key=lambda item: (item[1].time, item[0]), reverse=True)
        page: list[dict[str, Any]] = []
        last: tuple[float, int] | None = None
        next_token = None
        for index, event in trail:
            if event.time + delay > now or not lookup.in_range(event.time, index):
                continue
            shaped = self._shape(event)
            if not lookup.selects(shaped):
                continue
            if len(page) == lookup.limit:
                next_token = base64.urlsafe_b64encode(json.dumps(last).encode()).decode()
                break
            page.append(shaped)
            last = (event.time, index)
        answer: dict[str, Any] = {"Events": page}
        if next_token is not None:
            answer["NextToken"] = next_token
        return _Response(200, "OK", [("Content-Type", "application/x-amz-json-1.1")], json.dumps(answer).encode())

    def _shape(self, event: KeyCreation) -> dict[str, Any]:
        """``event`` as an element of LookupEvents' ``Events``, with its ``CloudTrailEvent`` JSON document."""
        arn = event.signer_arn or self.signer_arn(event.signer_key_id)
        username = arn.rsplit("/", 1)[-1] if arn and "/" in arn else "moto"
        identity_type = (
            "AssumedRole" if arn and ":assumed-role/" in arn else "Root" if arn and arn.endswith(":root") else "IAMUser"
        )
        created = event.create_date
        iso_time = datetime.fromtimestamp(event.time, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        document = {
            "eventVersion": "1.09",
            "userIdentity": {
                "type": identity_type,
                "principalId": event.signer_key_id,
                "arn": arn,
                "accountId": ACCOUNT,
                "accessKeyId": event.signer_key_id,
                "userName": username,
            },
            "eventTime": iso_time,
            "eventSource": "iam.amazonaws.com",
            "eventName": "CreateAccessKey",
            "awsRegion": event.region,
            "sourceIPAddress": "127.0.0.1",
            "userAgent": "faultproxy",
            "requestParameters": {"userName": event.request_user} if event.request_user else None,
            "responseElements": {
                "accessKey": {
                    "accessKeyId": event.key_id,
                    "userName": event.user,
                    "status": "Active",
                    # CloudTrail writes IAM dates the way Java prints them: "Dec 1, 2026, 8:43:09 PM"
                    "createDate": f"{created:%b} {created.day}, {created.year}, "
                    f"{created.hour % 12 or 12}:{created:%M:%S} {created:%p}",
                }
            },
            "requestID": event.request_id,
            "eventID": event.event_id,
            "readOnly": False,
            "eventType": "AwsApiCall",
            "managementEvent": True,
            "recipientAccountId": ACCOUNT,
            "eventCategory": "Management",
        }
        return {
            "EventId": event.event_id,
            "EventName": "CreateAccessKey",
            "ReadOnly": "false",
            "AccessKeyId": event.signer_key_id,
            "EventTime": event.time,
            "EventSource": "iam.amazonaws.com",
            "Username": username,
            "Resources": [
                {"ResourceType": "AWS::IAM::AccessKey", "ResourceName": event.key_id},
                {"ResourceType": "AWS::IAM::User", "ResourceName": event.user},
            ],
            "CloudTrailEvent": json.dumps(document),
        }


class _ApiError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(code, message)
        self.code, self.message = code, message


@dataclass(frozen=True)
class _Lookup:
    """A LookupEvents request, validated as CloudTrail does."""

    attribute: tuple[str, str] | None
    start: float | None
    end: float | None
    limit: int
    cursor: tuple[float, int] | None

    @classmethod
    def parse(cls, params: Mapping[str, Any]) -> _Lookup:
        attributes = params.get("LookupAttributes") or []
        if not isinstance(attributes, list) or len(attributes) > 1:
            raise _ApiError("InvalidLookupAttributesException", "You cannot specify more than one lookup attribute.")
        attribute = None
        if attributes:
            key, value = attributes[0].get("AttributeKey"), attributes[0].get("AttributeValue")
            if key not in LOOKUP_ATTRIBUTES or not isinstance(value, str):
                raise _ApiError("InvalidLookupAttributesException", f"Invalid lookup attribute {key!r}.")
            attribute = (key, value)
        try:
            start, end = _epoch(params.get("StartTime")), _epoch(params.get("EndTime"))
        except ValueError:
            raise _ApiError("InvalidTimeRangeException", "Invalid StartTime or EndTime.") from None
        if start is not None and end is not None and start > end:
            raise _ApiError("InvalidTimeRangeException", "StartTime must be before EndTime.")
        limit = params.get("MaxResults", 50)
        if not isinstance(limit, int) or not 1 <= limit <= 50:
            raise _ApiError("InvalidMaxResultsException", "MaxResults must be between 1 and 50.")
        cursor = None
        if params.get("NextToken") is not None:
            try:
                decoded = json.loads(base64.urlsafe_b64decode(str(params["NextToken"]).encode()))
                cursor = (float(decoded[0]), int(decoded[1]))
            except (ValueError, TypeError, IndexError, KeyError):
                raise _ApiError("InvalidNextTokenException", "Invalid NextToken.") from None
        return cls(attribute, start, end, limit, cursor)

    def in_range(self, when: float, index: int) -> bool:
        if (self.start is not None and when < self.start) or (self.end is not None and when > self.end):
            return False
        return self.cursor is None or (when, index) < self.cursor

    def selects(self, event: Mapping[str, Any]) -> bool:
        if self.attribute is None:
            return True
        key, value = self.attribute
        if key in ("ResourceName", "ResourceType"):
            return any(r[key] == value for r in event["Resources"])
        return bool(event.get(key) == value)


def _epoch(value: Any) -> float | None:
    """A timestamp as botocore sends it in a JSON body (epoch seconds; ISO 8601 accepted too)."""
    if value is None:
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return datetime.fromisoformat(value).timestamp()
    raise ValueError(value)
