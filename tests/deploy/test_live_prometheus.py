"""Every dashboard query and every alert expression against a real Prometheus scraping a real daemon.

A ``rotator run`` daemon (2 s interval, second-scale policy) works against the moto server; a real
Prometheus (Debian package ``prometheus``; the test fails, not skips, without it) listens on 127.0.0.1 only,
scrapes it every second under ``job="rotator"`` and loads ``deploy/prometheus/alerts.yml``. moto is seeded so
that every series the queries select exists:

* ``app-due``: its pre-existing key is replaced (bootstrap rotation), disabled after the 3 s grace period and
  deleted after the 3 s retention: ``rotate``/``disable``/``delete`` successes, per-key and next-action gauges;
* ``app-held``: a consumer keeps signing ``sts:GetCallerIdentity`` with the old key (quiet period 1 h), so the
  guard holds it (``key.held``, ``rotator_actions_total{action="disable",result="held"}``);
* ``app-broken``: a malformed ``rotator:max-key-age`` tag makes its step a problem: a failed ``skip`` action,
  ``rotator_problems{kind="user"}`` 1 and a ``partial`` sweep, never a failed one (issue 15: one user's problem
  does not fail the sweep), and the last success keeps moving meanwhile; once that happened the test removes the
  tag, the user is bootstrapped and ``rotator_problems`` goes back to 0;
* ``app-unmanaged``: untagged, so it must not show up in the dashboard's ``user`` variable;
* throttling: the daemon reaches moto through a small proxy that answers every 4th first attempt of an IAM read
  with ``Throttling`` (botocore retries it), so ``rotator_aws_api_calls_total{outcome="throttled"}`` exists;
* an AWS error that is not throttling: the proxy answers the first ``GetAccessKeyLastUsed`` with ``AccessDenied``
  (one user's action fails once), so ``rotator_aws_api_calls_total{outcome="error"}`` exists for the dashboard's
  "AWS errors (not throttles)" panel.

Checks, through Prometheus' HTTP API (``/api/v1/query``):

* every dashboard target ``expr`` (``dashboard_queries.dashboard_exprs``; ``$__rate_interval`` = 30s, a window
  inside this run) parses (``status: success``) and returns a non-empty result, with the variables set to
  "All" (``.*``) and again to a concrete account and two users;
* every template variable's ``label_values(selector, label)``: the equivalent PromQL
  (``dashboard_queries.variable_exprs``) returns data, and ``/api/v1/label/<label>/values?match[]=selector``
  (what Grafana asks) lists the account and exactly the managed users;
* every alert expression parses. An alert is silent in a healthy run, so "returns data" is checked on its
  *underlying series*: ``ALERT_INNER`` says, per alert, which comparison to strip (e.g. ``" > 0"``) or which
  wrapper to unwrap (``absent(x)`` -> ``x``). Each replaced text must occur exactly once in the rule's
  ``expr`` (the table cannot silently drift from alerts.yml), every alert must have an entry, and the
  resulting expression must return data. Prometheus evaluates the rule file too; every rule must report
  ``health: ok``.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import shutil
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import psutil
import pytest
import yaml
from conftest import AwsEnv, cli_argv, free_port, write_config
from dashboard_queries import ALERTS, DASHBOARD, dashboard_exprs, raw_dashboard_exprs, substitute, variable_exprs
from prometheus_client.parser import text_string_to_metric_families

pytestmark = [pytest.mark.slow, pytest.mark.timeout(150)]

ACCOUNT = "123456789012"  # moto's default account
MANAGED = ("app-due", "app-held", "app-broken")
UNMANAGED = "app-unmanaged"
RATE_INTERVAL = "30s"
DEADLINE = 75.0  # seconds from the daemon's start until every query must have returned data

#: Per alert: (text in its expr, replacement) that leaves the series the alert compares.
ALERT_INNER: dict[str, tuple[str, str]] = {
    "RotatorDown": (" == 0", ""),
    "RotatorAbsent": ('absent(up{job="rotator"})', 'up{job="rotator"}'),
    "RotatorKeyPastMaxAge": (" < time() - 7200", ""),
    "RotatorKeyHeld": (" > 0", ""),
    "RotatorActionFailures": (" > 0", ""),
    "RotatorSweepsFailing": (" > 0", ""),
    "RotatorUnprovenKey": (" > 0", ""),
    "RotatorNoRecentSuccess": (" > 7200", ""),
    "RotatorAwsThrottling": (" > 0.1", ""),
    "RotatorNoLeader": (" < 1", ""),
    "RotatorLeaseErrors": (" > 0", ""),
    "RotatorProblems": (" > 0", ""),
    "RotatorDryRun": (" == 1", ""),
    "RotatorQuarantinedUser": (" > 0", ""),
    "RotatorNotificationFailures": (" > 0", ""),
}

CONFIG = """\
schedule: {{interval: 2s}}
policy:
  max_key_age: 1h
  grace_period: 3s
  retention: 3s
  disable_guard: hold
  quiet_period: 1h
  max_hold: 1h
metrics: {{address: 127.0.0.1, port: {port}}}
aws:
  validation_timeout: 5s
  max_calls_per_second: 1000
  max_attempts: 4
"""

PROMETHEUS_CONFIG = """\
global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1s
rule_files: [{rules}]
scrape_configs:
  - job_name: rotator
    static_configs:
      - targets: ["127.0.0.1:{port}"]
"""


# -- a throttling proxy in front of moto ----------------------------------------------------------------

IAM_READS = re.compile(r"^(List|Get)\w+$")
THROTTLED_BODY = (
    b'<ErrorResponse xmlns="https://iam.amazonaws.com/doc/2010-05-08/"><Error><Type>Sender</Type>'
    b"<Code>Throttling</Code><Message>Rate exceeded</Message></Error>"
    b"<RequestId>00000000-0000-0000-0000-000000000000</RequestId></ErrorResponse>"
)
DENIED_BODY = (
    b'<ErrorResponse xmlns="https://iam.amazonaws.com/doc/2010-05-08/"><Error><Type>Sender</Type>'
    b"<Code>AccessDenied</Code><Message>denied once by the test proxy</Message></Error>"
    b"<RequestId>00000000-0000-0000-0000-000000000001</RequestId></ErrorResponse>"
)
HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "proxy-connection"}


class ThrottlingProxy(ThreadingHTTPServer):
    """Forwards every request to moto unchanged, except every ``every``-th first attempt of an IAM read."""

    daemon_threads = True

    def __init__(self, upstream: str, every: int = 4) -> None:
        parsed = urllib.parse.urlsplit(upstream)
        self.upstream = (parsed.hostname or "127.0.0.1", parsed.port or 80)
        self.every = every
        self.eligible = 0
        self.throttled = 0
        self.denied = 0
        self.lock = threading.Lock()
        super().__init__(("127.0.0.1", 0), _ProxyHandler)
        self.url = f"http://127.0.0.1:{self.server_address[1]}"
        self.thread = threading.Thread(target=self.serve_forever, name="throttling-proxy", daemon=True)
        self.thread.start()

    def should_throttle(self, headers: Any, body: bytes) -> bool:
        # botocore numbers its attempts; retries always pass, so the throttling never exhausts max_attempts.
        if re.match(r"attempt=1\b", str(headers.get("amz-sdk-request", ""))) is None:
            return False
        if "/iam/aws4_request" not in str(headers.get("Authorization", "")):
            return False
        action = urllib.parse.parse_qs(body.decode("utf-8", "replace")).get("Action", [""])[0]
        if not IAM_READS.match(action):
            return False
        with self.lock:
            self.eligible += 1
            if self.eligible % self.every:
                return False
            self.throttled += 1
            return True

    def should_deny(self, body: bytes) -> bool:
        """The first GetAccessKeyLastUsed only: an error answer that is not throttling (not retried)."""
        action = urllib.parse.parse_qs(body.decode("utf-8", "replace")).get("Action", [""])[0]
        with self.lock:
            if action != "GetAccessKeyLastUsed" or self.denied:
                return False
            self.denied += 1
            return True

    def stop(self) -> None:
        self.shutdown()
        self.server_close()


class _ProxyHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: ThrottlingProxy

    def _forward(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self.server.should_throttle(self.headers, body):
            self._reply(400, [("Content-Type", "text/xml")], THROTTLED_BODY)
            return
        if self.server.should_deny(body):
            self._reply(403, [("Content-Type", "text/xml")], DENIED_BODY)
            return
        upstream = http.client.HTTPConnection(*self.server.upstream, timeout=30)
        try:
            # The Host header is passed on as signed; http.client then adds none of its own.
            upstream.request(self.command, self.path, body=body or None, headers=dict(self.headers.items()))
            response = upstream.getresponse()
            data = response.read()
            headers = [(k, v) for k, v in response.getheaders() if k.lower() not in HOP_BY_HOP]
            status = response.status
        finally:
            upstream.close()
        self._reply(status, headers, data)

    def _reply(self, status: int, headers: list[tuple[str, str]], data: bytes) -> None:
        self.send_response_only(status)  # upstream's own Server and Date headers are passed on
        for key, value in headers:
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _forward

    def log_message(self, format: str, *args: Any) -> None:
        return


# -- processes ----------------------------------------------------------------------------------------------


class Proc:
    """A subprocess with its output in files; :meth:`stop` sends SIGTERM, then SIGKILL."""

    def __init__(self, argv: list[str], tmp_path: Path, name: str, env: dict[str, str] | None = None) -> None:
        self.name = name
        self.stdout_path = tmp_path / f"{name}.stdout"
        self.stderr_path = tmp_path / f"{name}.stderr"
        with self.stdout_path.open("wb") as out, self.stderr_path.open("wb") as err:
            self.proc = subprocess.Popen(argv, stdout=out, stderr=err, env=env, cwd=tmp_path)

    def alive(self) -> None:
        assert self.proc.poll() is None, f"{self.name} exited ({self.proc.returncode}):\n{self.tail()}"

    def tail(self, chars: int = 3000) -> str:
        return self.stderr_path.read_text(errors="replace")[-chars:]

    def stop(self) -> int | None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        return self.proc.returncode


Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def http_get(url: str, timeout: float = 5) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def daemon_samples(port: int) -> Samples:
    try:
        status, body = http_get(f"http://127.0.0.1:{port}/metrics")
    except OSError:
        return {}
    if status != 200:
        return {}
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(body.decode())
        for sample in family.samples
    }


class PromApi:
    def __init__(self, port: int) -> None:
        self.base = f"http://127.0.0.1:{port}"

    def get(self, path: str, **params: str | list[str]) -> dict[str, Any]:
        query = urllib.parse.urlencode(params, doseq=True)
        status, body = http_get(f"{self.base}{path}?{query}", timeout=10)
        document: dict[str, Any] = json.loads(body)
        document["http_status"] = status
        return document

    def query(self, expr: str) -> dict[str, Any]:
        return self.get("/api/v1/query", query=expr)

    def ready(self) -> bool:
        try:
            return http_get(f"{self.base}/-/ready", timeout=2)[0] == 200
        except OSError:
            return False


def consumer_uses(aws: AwsEnv, key_id: str, secret: str) -> None:
    """An application still configured with the old key: any signed call records the key's last use."""
    aws.caller_arn(key_id, secret)


def wait_for(condition: Callable[[], bool], deadline: float, what: str, *procs: Proc) -> None:
    while time.monotonic() < deadline:
        for proc in procs:
            proc.alive()
        if condition():
            return
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}; stderr tails:\n" + "\n".join(p.tail() for p in procs))


# -- the checks ---------------------------------------------------------------------------------------------


def alert_rules() -> list[dict[str, Any]]:
    data = yaml.safe_load(ALERTS.read_text(encoding="utf-8"))
    return [rule for group in data["groups"] for rule in group["rules"] if "alert" in rule]


def alert_inner_exprs() -> dict[str, str]:
    """Alert name -> its expression without the threshold (see ``ALERT_INNER``)."""
    rules = alert_rules()
    assert {str(rule["alert"]) for rule in rules} == set(ALERT_INNER), "ALERT_INNER must cover every alert"
    inner = {}
    for rule in rules:
        name, expr = str(rule["alert"]), str(rule["expr"]).strip()
        old, new = ALERT_INNER[name]
        assert expr.count(old) == 1, f"{name}: {old!r} must occur exactly once in {expr!r}"
        inner[name] = expr.replace(old, new)
    return inner


def variable_selectors() -> list[tuple[str, str]]:
    """(label, selector) of each ``label_values`` variable, from ``variable_exprs``' ``group by (l) (sel)``."""
    out = []
    for expr in variable_exprs(DASHBOARD):
        match = re.fullmatch(r"group by \((\w+)\) \((.+)\)", expr, re.DOTALL)
        assert match, expr
        out.append((match[1], match[2]))
    return out


def query_problems(api: PromApi, exprs: list[str], *, need_data: bool) -> list[str]:
    problems = []
    for expr in exprs:
        answer = api.query(expr)
        if answer.get("status") != "success":
            problems.append(f"{expr}: {answer.get('errorType')}: {answer.get('error')}")
        elif need_data and not answer["data"]["result"]:
            problems.append(f"{expr}: no data")
    return problems


def all_problems(api: PromApi) -> list[str]:
    """Everything that is not (yet) as it must be; empty when all checks pass."""
    every = {"__rate_interval": RATE_INTERVAL}
    concrete = {**every, "account": ACCOUNT, "user": "app-due|app-held"}
    problems = query_problems(api, dashboard_exprs(DASHBOARD, every), need_data=True)
    with_variables = [
        substitute(e, concrete) for e in raw_dashboard_exprs(DASHBOARD) if "$account" in e or "$user" in e
    ]
    problems += [f"(account/user set) {p}" for p in query_problems(api, with_variables, need_data=True)]
    problems += query_problems(api, variable_exprs(DASHBOARD), need_data=True)
    for label, selector in variable_selectors():
        answer = api.get(f"/api/v1/label/{label}/values", **{"match[]": selector})
        if answer.get("status") != "success" or not answer["data"]:
            problems.append(f"label_values({selector}, {label}): {answer}")
    problems += query_problems(api, [str(rule["expr"]) for rule in alert_rules()], need_data=False)
    problems += [f"(alert inner) {p}" for p in query_problems(api, list(alert_inner_exprs().values()), need_data=True)]
    loaded = [rule for group in api.get("/api/v1/rules")["data"]["groups"] for rule in group["rules"]]
    if sorted(rule["name"] for rule in loaded) != sorted(str(rule["alert"]) for rule in alert_rules()):
        problems.append(f"Prometheus loaded the rules {sorted(rule['name'] for rule in loaded)}")
    problems += [
        f"rule {rule['name']}: health {rule.get('health')} {rule.get('lastError', '')}"
        for rule in loaded
        if rule.get("health") != "ok"
    ]
    return problems


# -- the test -----------------------------------------------------------------------------------------------


def test_every_dashboard_query_and_alert_expression_returns_data(aws: AwsEnv, tmp_path: Path) -> None:
    prometheus = shutil.which("prometheus")
    if prometheus is None:
        pytest.fail("prometheus not found: install the Debian package 'prometheus'")
    started = time.monotonic()
    deadline = started + DEADLINE

    aws.user("app-due")
    (held_key,) = aws.user("app-held")
    held_secret = aws.created_secrets[-1]
    aws.user("app-broken", tags={"rotator:max-key-age": "soon"})
    aws.user(UNMANAGED, managed=False)
    consumer_uses(aws, held_key, held_secret)

    metrics_port, prometheus_port = free_port(), free_port()
    config = write_config(tmp_path, CONFIG.format(port=metrics_port))
    prometheus_yml = tmp_path / "prometheus.yml"
    prometheus_yml.write_text(PROMETHEUS_CONFIG.format(rules=json.dumps(str(ALERTS)), port=metrics_port))
    proxy = ThrottlingProxy(aws.url)
    env = aws.env
    env["AWS_ENDPOINT_URL"] = proxy.url
    daemon: Proc | None = None
    prom: Proc | None = None
    try:
        daemon = Proc([*cli_argv(), "--config", str(config), "run"], tmp_path, "rotator", env)
        prom = Proc(
            [
                prometheus,
                f"--config.file={prometheus_yml}",
                f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{prometheus_port}",
            ],
            tmp_path,
            "prometheus",
            {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp_path)},
        )
        api = PromApi(prometheus_port)
        wait_for(api.ready, deadline, "Prometheus to be ready", prom)
        process = psutil.Process(prom.proc.pid)
        # psutil >= 6 names it net_connections; pyproject allows 5.9, where it is connections.
        connections = getattr(process, "net_connections", None) or process.connections
        listening = {c.laddr.ip for c in connections("inet") if c.status == psutil.CONN_LISTEN}
        assert listening == {"127.0.0.1"}, f"Prometheus must listen on 127.0.0.1 only, not {listening}"

        wait_for(lambda: partial(daemon_samples(metrics_port)), deadline, "a partial sweep", daemon)
        # The operator fixes the tag: the user is bootstrapped and the sweeps succeed from now on.
        aws.iam.untag_user(UserName="app-broken", TagKeys=["rotator:max-key-age"])

        missing: list[str] = []

        def lifecycle_seen() -> bool:
            consumer_uses(aws, held_key, held_secret)  # the consumer keeps using the old key
            missing[:] = lifecycle_missing(daemon_samples(metrics_port))
            return not missing

        try:
            wait_for(lifecycle_seen, deadline, "the lifecycle on /metrics", daemon)
        except AssertionError as exc:
            raise AssertionError(f"missing on /metrics: {missing}\n\n{exc}") from None

        problems: list[str] = []

        def all_good() -> bool:
            consumer_uses(aws, held_key, held_secret)
            problems[:] = all_problems(api)
            return not problems

        try:
            wait_for(all_good, deadline, "every query to return data", daemon, prom)
        except AssertionError as exc:
            raise AssertionError("still failing:\n" + "\n".join(problems) + f"\n\n{exc}") from None

        # The variables list the account and exactly the managed users (the unmanaged one is never exported).
        expected = {"account": {ACCOUNT}, "user": set(MANAGED), "instance": {f"127.0.0.1:{metrics_port}"}}
        for label, selector in variable_selectors():
            values = set(api.get(f"/api/v1/label/{label}/values", **{"match[]": selector})["data"])
            assert values == expected[label], (label, values)
        # The bad tag and the one denied GetAccessKeyLastUsed were per-user problems: no sweep failed, and the
        # problems are gone once a sweep after them ends (on a loaded machine that sweep may still be running).
        user_problems = ("rotator_problems", (("account", ACCOUNT), ("kind", "user")))
        wait_for(lambda: daemon_samples(metrics_port)[user_problems] == 0, deadline, "no user problem", daemon)
        samples = daemon_samples(metrics_port)
        assert samples.get(("rotator_sweeps_total", (("result", "failure"),)), 0) == 0
        assert samples[user_problems] == 0
        # The target is up, so the two alerts about it are silent (the others may fire here: failures, throttling).
        for name in ("RotatorDown", "RotatorAbsent"):
            (expr,) = [str(rule["expr"]) for rule in alert_rules() if rule["alert"] == name]
            assert api.query(expr)["data"]["result"] == [], name
        assert proxy.throttled >= 1 and proxy.denied == 1
        assert "key.held" in daemon.stderr_path.read_text()
        prom.alive()
        daemon.alive()
    finally:
        prom_code = prom.stop() if prom else None
        daemon_code = daemon.stop() if daemon else None
        proxy.stop()
    assert daemon_code == 0, daemon.tail() if daemon else ""
    assert prom_code == 0, prom.tail() if prom else ""
    assert time.monotonic() - started < 90


def partial(samples: Samples) -> bool:
    """app-broken's malformed tag: a partial sweep (not a failed one), a failed skip, one user with a problem."""
    return (
        samples.get(("rotator_sweeps_total", (("result", "partial"),)), 0) >= 1
        and samples.get(("rotator_actions_total", (("action", "skip"), ("result", "failure"))), 0) >= 1
        and samples.get(("rotator_problems", (("account", ACCOUNT), ("kind", "user"))), 0) >= 1
        and samples.get(("rotator_last_sweep_success_timestamp_seconds", ()), 0) > 0
        and samples.get(("rotator_sweeps_total", (("result", "failure"),)), 0) == 0
    )


def lifecycle_missing(samples: Samples) -> list[str]:
    """Which of rotate, disable, delete, a held key, a throttled call, a successful sweep /metrics lacks."""
    missing = [
        f"rotator_actions_total{{action={a},result={r}}}"
        for a, r in [("rotate", "success"), ("disable", "success"), ("delete", "success"), ("disable", "held")]
        if samples.get(("rotator_actions_total", (("action", a), ("result", r))), 0) < 1
    ]
    if samples.get(("rotator_last_sweep_success_timestamp_seconds", ()), 0) <= 0:
        missing.append("rotator_last_sweep_success_timestamp_seconds")
    if not any(
        name == "rotator_aws_api_calls_total" and ("outcome", "throttled") in labels for name, labels in samples
    ):
        missing.append('rotator_aws_api_calls_total{outcome="throttled"}')
    return missing
