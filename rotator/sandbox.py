"""``rotator sandbox``: the whole lifecycle on an embedded AWS emulator, no account needed.

Starts moto's server on 127.0.0.1 in this process, seeds a small fleet of service users with keys
of varied ages, runs the real daemon against it with durations shrunk to about one ``--phase`` per
lifecycle step, and draws a live view of users, keys, ages and the next action. Backdating key ages
is the sandbox's job (it owns the emulator), not the daemon's.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import socket
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TextIO

from rotator.errors import UsageError
from rotator.events import InventorySnapshot, KeyHeld, QuarantineResponded, SweepFinished
from rotator.model import AccessKey
from rotator.render import format_age, format_table, last_use_cell

ACCOUNT = "123456789012"
REGION = "us-east-1"
#: The embedded emulator takes any credentials: this pair is not a secret.
EMULATOR_KEY = "testing"
#: AWS's quarantine policy for a user whose key was found in public (the sandbox's "svc-exposed").
QUARANTINE_POLICY = "arn:aws:iam::aws:policy/AWSCompromisedKeyQuarantineV3"
#: Seconds between consumer calls with the key the guard should see in use.
CONSUMER_PERIOD = 2.0


@dataclass
class Fleet:
    """What the sandbox seeded, for the view and the closing summary."""

    managed: list[str] = field(default_factory=list)
    unmanaged: list[str] = field(default_factory=list)
    consumer_key: tuple[str, str] | None = None  # (key id, secret) a simulated consumer keeps using
    notes: dict[str, str] = field(default_factory=dict)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _config_text(phase: float, metrics_port: int) -> str:
    def seconds(factor: float) -> str:
        return f"{max(1, round(phase * factor))}s"

    return f"""\
# Written by `rotator sandbox`: every duration is shrunk to about one phase ({phase:g}s).
schedule: {{interval: {seconds(1 / 6)}}}
policy:
  max_key_age: {seconds(3)}
  grace_period: {seconds(1)}
  retention: {seconds(1)}
  disable_guard: hold
  quiet_period: {seconds(0.5)}
  max_hold: {seconds(3)}
selection: {{path_prefix: /service/, tag: {{key: rotator, value: enabled}}}}
metrics: {{address: 127.0.0.1, port: {metrics_port}}}
aws: {{validation_timeout: 10s, max_calls_per_second: 50}}
"""


def _backdate(user: str, key_id: str, age: timedelta) -> datetime:
    """Make a key look ``age`` old inside the embedded emulator."""
    from moto.iam.models import iam_backends  # noqa: PLC0415 - moto is the optional sandbox extra

    created = datetime.now(UTC) - age
    for key in iam_backends[ACCOUNT]["global"].users[user].access_keys:
        if key.access_key_id == key_id:
            key.create_date = created.replace(tzinfo=None)
    return created.replace(microsecond=0)


def seed(url: str, phase: float) -> Fleet:
    """Seed the fleet; returns what was made. Users already rotated before are adopted secrets."""
    from rotator.aws import static_client  # noqa: PLC0415 - only the sandbox seeds (its own emulator)
    from rotator.executor import credential_document  # noqa: PLC0415
    from rotator.model import (  # noqa: PLC0415
        TAG_CURRENT_CREATED,
        TAG_CURRENT_KEY,
        TAG_MANAGED,
        TAG_PUBLISHED_AT,
        NewKey,
        SecretText,
        version_id_for,
    )

    creds: dict[str, str] = {"endpoint_url": url, "region": REGION, "key_id": EMULATOR_KEY, "secret": EMULATOR_KEY}
    iam = static_client("iam", **creds)
    secrets = static_client("secretsmanager", **creds)
    fleet = Fleet()
    p = timedelta(seconds=phase)

    def user(name: str, *, managed: bool = True, path: str = "/service/") -> None:
        tags: list[Any] = [{"Key": "rotator", "Value": "enabled"}] if managed else []
        iam.create_user(UserName=name, Path=path, Tags=tags)
        (fleet.managed if managed else fleet.unmanaged).append(name)

    def key(name: str, age: timedelta) -> NewKey:
        item = iam.create_access_key(UserName=name)["AccessKey"]
        created = _backdate(name, item["AccessKeyId"], age)
        return NewKey(item["AccessKeyId"], SecretText(item["SecretAccessKey"]), created)

    def adopt(name: str, current: NewKey) -> None:
        """A user the rotator already manages: its secret holds ``current``, published long ago."""
        published = current.created.isoformat()
        secrets.create_secret(
            Name=f"iam-keys/{name}",
            SecretString=credential_document(name, current).reveal(),
            ClientRequestToken=version_id_for(current.key_id),
            Tags=[
                {"Key": TAG_MANAGED, "Value": "true"},
                {"Key": TAG_CURRENT_KEY, "Value": current.key_id},
                {"Key": TAG_CURRENT_CREATED, "Value": current.created.isoformat()},
                {"Key": TAG_PUBLISHED_AT, "Value": published},
            ],
        )

    user("svc-billing")
    key("svc-billing", 10 * p)
    fleet.notes["svc-billing"] = "legacy key, overdue, no secret: bootstrapped at once"

    user("svc-batch")
    key("svc-batch", 6 * p)
    spare = key("svc-batch", 4 * p)
    iam.update_access_key(UserName="svc-batch", AccessKeyId=spare.key_id, Status="Inactive")
    fleet.notes["svc-batch"] = "inactive spare key: deleted to free the slot, then bootstrapped"

    user("svc-payments")
    payments = key("svc-payments", 3.2 * p)
    adopt("svc-payments", payments)
    fleet.consumer_key = (payments.key_id, payments.secret_access_key.reveal())
    fleet.notes["svc-payments"] = "overdue; a consumer keeps using the old key: the guard holds it"

    user("svc-reports")
    adopt("svc-reports", key("svc-reports", 2 * p))
    fleet.notes["svc-reports"] = "managed, rotates after about one phase"

    user("svc-search")
    adopt("svc-search", key("svc-search", 0.5 * p))
    fleet.notes["svc-search"] = "managed, young key"

    user("svc-shared")
    adopt("svc-shared", key("svc-shared", 1.5 * p))
    key("svc-shared", 1 * p)
    fleet.notes["svc-shared"] = "a foreign active key: reported, never touched; rotation waits for a slot"

    user("svc-exposed")
    adopt("svc-exposed", key("svc-exposed", 0.5 * p))
    # What AWS does when it finds a user's key in public (the emulator loads AWS's managed policies).
    iam.attach_user_policy(UserName="svc-exposed", PolicyArn=QUARANTINE_POLICY)
    fleet.notes["svc-exposed"] = (
        "AWS quarantined it (its young key was found in public): rotated at once, the exposed key disabled "
        "without grace; the policy stays for a person to detach"
    )

    user("alice", managed=False, path="/people/")
    key("alice", 20 * p)
    fleet.notes["alice"] = "a person, not managed: never touched"
    return fleet


class Consumer(threading.Thread):
    """A workload that keeps signing requests with one key, as a slow-to-update consumer would."""

    def __init__(self, url: str, key: tuple[str, str], until: float) -> None:
        super().__init__(name="sandbox-consumer", daemon=True)
        self.url, self.key, self.until = url, key, until
        self.stopped = threading.Event()

    def run(self) -> None:
        from rotator.aws import static_client  # noqa: PLC0415

        sts = static_client("sts", endpoint_url=self.url, region=REGION, key_id=self.key[0], secret=self.key[1])
        while time.monotonic() < self.until and not self.stopped.wait(CONSUMER_PERIOD):
            with contextlib.suppress(Exception):  # the key may be disabled: that is the point
                sts.get_caller_identity()


#: Events the view lists, by their stable name: (counter, what happened).
_SHOWN = {
    "rotation.published": ("rotated", "new key {key} published"),
    "key.disabled": ("disabled", "previous key {key} disabled"),
    "key.held": ("held", "{key} held by the guard (still in use)"),
    "key.deleted": ("deleted", "key {key} deleted"),
    "key.orphan_deleted": ("cleaned", "orphan {key} cleaned up"),
}


class View:
    """The live terminal view, redrawn from the daemon's inventory snapshots and events."""

    def __init__(self, out: TextIO, fleet: Fleet) -> None:
        self.out = out
        self.fleet = fleet
        self.tty = out.isatty()
        self.lock = threading.Lock()
        self.snapshot: Any = None
        self.recent: list[str] = []
        self.counts = {
            "rotated": 0,
            "disabled": 0,
            "held": 0,
            "deleted": 0,
            "cleaned": 0,
            "sweeps": 0,
            "quarantine_responses": 0,
        }
        self.header = ""
        self._last_printed = ""
        #: key id -> (service, region) of its last use, from ``key.held``.
        self.used_by: dict[str | None, tuple[str | None, str | None]] = {}

    def observe(self, event: Any) -> None:
        with self.lock:
            if isinstance(event, InventorySnapshot):
                self.snapshot = event
                return
            if isinstance(event, SweepFinished):
                self.counts["sweeps"] += 1
                return
            if isinstance(event, QuarantineResponded):
                self._quarantine(event)
                return
            shown = _SHOWN.get(event.name)
            if shown is None:
                return
            counter, template = shown
            self.counts[counter] += 1
            what = template.format(key=event.key_id)
            if isinstance(event, KeyHeld):
                # Who used it: GetAccessKeyLastUsed's service and region (the emulator's credential report,
                # which the snapshot reads, has none).
                self.used_by[event.key_id] = (event.last_used_service, event.last_used_region)
                what = f"{event.key_id} held by the guard: {event.summary}" if event.summary else what
            line = f"{datetime.now(UTC).strftime('%H:%M:%S')}  {event.user}: {what}"
            self.recent = [*self.recent, line][-8:]
            if not self.tty:
                print(line, file=self.out, flush=True)

    def _quarantine(self, event: QuarantineResponded) -> None:
        if event.phase == "revoked":
            self.counts["quarantine_responses"] += 1
            what = (
                f"AWS quarantine ({', '.join(event.policies)}): exposed key {event.key_id} disabled, "
                f"new key {event.new_key_id} published; the policy stays for a person to detach"
            )
        elif event.phase == "started":
            what = f"AWS quarantine ({', '.join(event.policies)}): replacing exposed {' '.join(event.exposed_key_ids)}"
        else:
            what = f"AWS quarantine: {event.reason}"
        line = f"{datetime.now(UTC).strftime('%H:%M:%S')}  {event.user}: {what}"
        self.recent = [*self.recent, line][-8:]
        if not self.tty:
            print(line, file=self.out, flush=True)

    def table(self) -> str:
        """Users, keys, ages and the next action, from the latest snapshot."""
        now = datetime.now(UTC)
        rows: list[list[str]] = []
        with self.lock:
            snapshot = self.snapshot
            used_by = dict(self.used_by)
        if snapshot is None:
            return "(waiting for the first sweep)"
        for state, plan in zip(snapshot.states, snapshot.plans, strict=True):
            upcoming = sorted(plan.upcoming, key=lambda u: u.due_at)
            acting = [s for s in plan.steps if s.action.value != "skip"]
            waiting = [s for s in plan.steps if s.action.value == "skip" and s.due_at is not None]
            if acting:
                nxt = f"{acting[0].action.value} now"
            elif waiting:
                nxt = f"waits: {waiting[0].reason[:48]}"
            elif upcoming:
                nxt = f"{upcoming[0].action.value} in {format_age((upcoming[0].due_at - now).total_seconds())}"
            else:
                nxt = "-"
            for index, key in enumerate(sorted(state.keys, key=lambda k: k.created)):
                role = plan.roles.role_of(key.key_id)  # the plan's roles: the same as plan and inventory
                role = "-" if role == "other" else role
                first = index == 0
                rows.append(
                    [
                        state.user if first else "",
                        key.key_id,
                        key.status.value,
                        role,
                        format_age((now - key.created).total_seconds()),
                        last_use_cell(_with_user(key, used_by), now),
                        nxt if first else "",
                    ]
                )
            if not state.keys:
                rows.append([state.user, "-", "-", "-", "-", "-", nxt])
        return "\n".join(format_table(rows, ["user", "key", "status", "role", "age", "last used", "next"]))

    def draw(self) -> None:
        with self.lock:
            snapshot = self.snapshot
            recent = list(self.recent)
        if self.tty:
            screen = [self.header, "", self.table(), "", "Recent:", *(recent or ["(nothing yet)"])]
            self.out.write("\033[H\033[2J" + "\n".join(screen) + "\n")
            self.out.flush()
            return
        if snapshot is None:
            return
        # Without a terminal (a log, a CI job) print the table only when a key changed.
        signature = str([(s.user, [(k.key_id, k.status) for k in s.keys]) for s in snapshot.states])
        if signature != self._last_printed:
            self._last_printed = signature
            print(self.table() + "\n", file=self.out, flush=True)


def _with_user(key: AccessKey, used_by: dict[str | None, tuple[str | None, str | None]]) -> AccessKey:
    """``key`` with the service and region of its last use from ``key.held``, where the snapshot has none."""
    if key.last_used_service is not None or key.key_id not in used_by:
        return key
    service, region = used_by[key.key_id]
    return replace(key, last_used_service=service, last_used_region=region)


def _banner(*, url: str, phase: float, metrics_port: int, log_path: Path, env: dict[str, str], config: Path) -> str:
    # AWS_DEFAULT_REGION too: the AWS CLI v1 reads only that one (v2 and boto3 read AWS_REGION as well).
    shown = dict(env)
    if "AWS_REGION" in shown:
        shown.setdefault("AWS_DEFAULT_REGION", shown["AWS_REGION"])
    exports = " ".join(f"{k}={v}" for k, v in shown.items()) + f" ROTATOR_CONFIG={config}"
    return (
        f"rotator sandbox: emulator {url}, phase {phase:g}s "
        f"(max_key_age {3 * phase:g}s, grace {phase:g}s, retention {phase:g}s)\n"
        f"metrics   http://127.0.0.1:{metrics_port}/metrics\n"
        f"logs      {log_path}\n"
        f"try       export {exports}\n"
        f"          rotator plan; rotator inventory; rotator rotate svc-search; aws iam list-users"
    )


def _run(daemon: Any, view: View, duration: float | None) -> int:
    """Run the daemon in the main thread (signals), redrawing the view until it stops."""
    daemon.install_signal_handlers()
    stop_view = threading.Event()

    def refresh() -> None:
        while not stop_view.wait(1.0):
            view.draw()

    threading.Thread(target=refresh, name="sandbox-view", daemon=True).start()
    if duration:
        timer = threading.Timer(float(duration), daemon.request_stop, args=(signal.SIGTERM,))
        timer.daemon = True
        timer.start()
    try:
        return int(daemon.run())
    finally:
        stop_view.set()
        view.draw()


def run_sandbox(args: argparse.Namespace) -> int:
    """The ``sandbox`` command. Returns the exit code."""
    try:
        from moto.moto_server.threaded_moto_server import ThreadedMotoServer  # noqa: PLC0415
    except ImportError as exc:
        raise UsageError("the sandbox needs the emulator: pip install 'iam-key-rotator[sandbox]'") from exc

    from rotator.app import App, AwsEndpoint  # noqa: PLC0415
    from rotator.config import load_settings  # noqa: PLC0415
    from rotator.daemon import Daemon  # noqa: PLC0415
    from rotator.logs import configure  # noqa: PLC0415
    from rotator.sdnotify import Notifier  # noqa: PLC0415

    phase = float(args.phase)
    if phase < 2:
        raise UsageError("--phase: at least 2 seconds")
    out = sys.stdout
    port = args.port or _free_port()
    metrics_port = args.metrics_port or _free_port()
    workdir = Path(tempfile.mkdtemp(prefix="rotator-sandbox-"))
    config_path = workdir / "rotator.yaml"
    config_path.write_text(_config_text(phase, metrics_port))
    log_path = workdir / "rotator.log"

    # AWS's managed policies, AWSCompromisedKeyQuarantineV3 among them (moto reads this when IAM is first used).
    os.environ["MOTO_IAM_LOAD_MANAGED_POLICIES"] = "true"
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    url = f"http://127.0.0.1:{port}"
    env = {
        "AWS_ENDPOINT_URL": url,
        "AWS_REGION": REGION,
        "AWS_DEFAULT_REGION": REGION,
        "AWS_ACCESS_KEY_ID": EMULATOR_KEY,
        "AWS_SECRET_ACCESS_KEY": EMULATOR_KEY,
    }
    log_file = log_path.open("a", encoding="utf-8")
    try:
        configure(getattr(args, "log_format", None) or "json", getattr(args, "log_level", None) or "info", log_file)
        fleet = seed(url, phase)
        settings = load_settings(str(config_path))
        # The emulator is handed to the App as its AWS; the process environment is left alone.
        app = App(settings, endpoint=AwsEndpoint(url=url, region=REGION, key_id=EMULATOR_KEY, secret=EMULATOR_KEY))
        view = View(out, fleet)
        app.bus.subscribe(view.observe)
        daemon = Daemon(app, config_path=str(config_path), notifier=Notifier(None))
        view.header = _banner(
            url=url, phase=phase, metrics_port=metrics_port, log_path=log_path, env=env, config=config_path
        )
        print(view.header, file=out)
        print(f"seeded    {len(fleet.managed)} managed users, {len(fleet.unmanaged)} unmanaged", file=out)
        for name, note in fleet.notes.items():
            print(f"          {name}: {note}", file=out)
        print("Ctrl-C ends the sandbox.\n", file=out, flush=True)
        if fleet.consumer_key:
            Consumer(url, fleet.consumer_key, time.monotonic() + 2 * phase).start()
        daemon.serve(settings.metrics.address, settings.metrics.port)
        code = _run(daemon, view, args.duration)
        print(
            "\nsandbox stopped: "
            + ", ".join(f"{name}={value}" for name, value in view.counts.items())
            + f"; logs in {log_path}",
            file=out,
            flush=True,
        )
        return code
    finally:
        server.stop()
        log_file.close()
