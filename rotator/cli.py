"""Command line: commands -> exit codes, in one place.

Exit codes: 0 success; 1 at least one action failed, or AWS unreachable; 2 usage or configuration
error (one line on stderr naming what is wrong).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, NoReturn

from rotator import __version__, credential_process
from rotator.errors import AwsError, ConfigError, RotatorError, UsageError
from rotator.model import Action
from rotator.render import format_age, last_use_cell, print_table, when

if TYPE_CHECKING:  # the App (and boto3) load only for commands that talk to AWS
    from rotator.app import AccountView, App, RotateResult
    from rotator.config import Settings
    from rotator.executor import UserOutcome


def configure_logs(fmt: str, level: str) -> None:
    """:func:`rotator.logs.configure`; structlog (and the settings' pydantic) load once a command runs, so
    ``--help``, ``--version`` and usage errors answer without them."""
    from rotator.logs import configure  # noqa: PLC0415 - see above

    configure(fmt, level)


def redact_text(text: str) -> str:
    """:func:`rotator.logs.redact_text` (loaded when first needed, see :func:`configure_logs`)."""
    from rotator.logs import redact_text as redact  # noqa: PLC0415 - see configure_logs

    return redact(text)


EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
#: Ctrl-C (128 + SIGINT), as shells report it.
EXIT_INTERRUPTED = 130


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # One line on stderr, as for configuration errors; `--help` still prints the full usage.
        self.exit(EXIT_USAGE, f"rotator: error: {message} (see rotator --help)\n")


#: What IAM allows in a user name (``\w`` in ASCII only, as IAM means it).
_IAM_USER_NAME = re.compile(r"[\w+=,.@-]{1,64}", re.ASCII)


def _iam_user_name(value: str) -> str:
    """A ``USER`` argument: refused (exit 2) when IAM could not have such a user, before any AWS call."""
    if _IAM_USER_NAME.fullmatch(value) is None:
        shown = value if len(value) <= 70 else value[:67] + "..."
        raise argparse.ArgumentTypeError(f"{shown!r} is not an IAM user name (1 to 64 of A-Z a-z 0-9 _+=,.@-)")
    return value


def _tag_filter(value: str) -> tuple[str, str]:
    """``--tag KEY=VALUE``."""
    key, sep, tag_value = value.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"{value!r} is not KEY=VALUE")
    return key, tag_value


def build_parser() -> argparse.ArgumentParser:
    common = _Parser(add_help=False)
    common.add_argument("--config", metavar="PATH", default=argparse.SUPPRESS, help="configuration file")
    common.add_argument("--log-format", choices=["json", "console"], default=argparse.SUPPRESS)
    common.add_argument("--log-level", metavar="LEVEL", default=argparse.SUPPRESS)
    parser = _Parser(prog="rotator", description="Keeps AWS IAM access keys young.", parents=[common])
    parser.add_argument("--version", action="version", version=f"rotator {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    commands.add_parser("run", parents=[common], help="daemon: sweeps on schedule; serves /metrics, /healthz, /readyz")
    sweep = commands.add_parser("sweep", parents=[common], help="one pass now, then exit")
    sweep.add_argument("--dry-run", action="store_true", help="report like plan; change nothing")
    plan = commands.add_parser("plan", parents=[common], help="what a sweep would do now; changes nothing")
    plan.add_argument(
        "--json", action="store_true", help="a JSON array of steps (account, user, action, key_id, reason, due_at)"
    )
    inventory = commands.add_parser("inventory", parents=[common], help="managed users, keys, ages, status, last use")
    inventory.add_argument("--json", action="store_true", help="a JSON array of users with their keys and secret")
    rotate = commands.add_parser("rotate", parents=[common], help="forced rotation now, whatever the age")
    rotate.add_argument("users", nargs="*", metavar="USER", type=_iam_user_name)
    rotate.add_argument(
        "--all", action="store_true", help="every managed key now (incident response); narrowed by --path/--tag"
    )
    rotate.add_argument("--path", metavar="PREFIX", default=None, help="with --all: only users under this IAM path")
    rotate.add_argument(
        "--tag", metavar="KEY=VALUE", type=_tag_filter, default=None, help="with --all: only users with this tag"
    )
    rotate.add_argument("--yes", action="store_true", help="with --all: do not ask for confirmation")
    rotate.add_argument(
        "--account",
        action="append",
        default=[],
        metavar="ID",
        help="only in this account (repeatable); default: every account where the user is managed",
    )
    rotate.add_argument(
        "--revoke",
        action="store_true",
        help="compromise response: disable the key that was current until now as soon as the new one is "
        "published (an older replaced key still there is deleted first)",
    )
    credential = commands.add_parser(
        credential_process.COMMAND, help="the secret's AWSCURRENT as AWS credential_process JSON with an Expiration"
    )
    credential_process.add_arguments(credential)
    commands.add_parser("check-config", parents=[common], help="validate; print the effective configuration")
    sandbox = commands.add_parser("sandbox", parents=[common], help="self-contained demo on an embedded AWS emulator")
    sandbox.add_argument("--duration", type=float, default=None, help="stop after this many seconds")
    sandbox.add_argument("--phase", type=float, default=60.0, help="seconds per lifecycle phase (default 60)")
    sandbox.add_argument("--port", type=int, default=None, help="emulator port (default: a free one)")
    sandbox.add_argument("--metrics-port", type=int, default=None, help="metrics port (default: a free one)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    # credential-process runs on every SDK credential refresh: no full parser, no settings, no logging.
    fast = credential_process.command_args(sys.argv[1:] if argv is None else argv)
    if fast is not None:
        return credential_process.main(fast)
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.command:
        print("rotator: error: a COMMAND is required (see rotator --help)", file=sys.stderr)
        return EXIT_USAGE
    if args.command == credential_process.COMMAND:  # e.g. after an abbreviated global option
        return credential_process.run(args)
    try:
        return dispatch(args)
    except RotatorError as exc:
        code, prefix = exit_for(exc)
        print(f"{prefix}{_one_line(exc)}", file=sys.stderr)
        return code
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED


#: The one table from error class to exit code and the start of its line on stderr (first match wins).
EXIT_CODES: tuple[tuple[type[RotatorError], int, str], ...] = (
    (ConfigError, EXIT_USAGE, "rotator: error: "),
    (UsageError, EXIT_USAGE, "rotator: error: "),
    (AwsError, EXIT_FAILED, "rotator: AWS error: "),
    (RotatorError, EXIT_FAILED, "rotator: error: "),
)


def exit_for(error: RotatorError) -> tuple[int, str]:
    """Exit code and line prefix of ``error``, from :data:`EXIT_CODES`."""
    return next((code, prefix) for cls, code, prefix in EXIT_CODES if isinstance(error, cls))


def _one_line(error: BaseException | str) -> str:
    """The error as one line: AWS may put a whole (multi-line) response body in its message."""
    return " ".join(redact_text(str(error)).split())


def _settings(args: argparse.Namespace) -> Settings:
    from rotator.config import load_settings  # noqa: PLC0415 - see configure_logs

    settings = load_settings(getattr(args, "config", None))
    fmt = getattr(args, "log_format", None) or settings.logging.format
    level = getattr(args, "log_level", None) or settings.logging.level
    if level.lower() not in ("debug", "info", "warning", "error"):
        raise UsageError(f"--log-level: unknown level {level!r} (debug, info, warning, error)")
    configure_logs(fmt, level)
    return settings


def dispatch(args: argparse.Namespace) -> int:  # noqa: PLR0911 - one return per command
    settings = _settings(args)
    command = args.command
    if command == "check-config":
        for warning in settings.warnings():
            print(f"rotator: warning: {warning}", file=sys.stderr)
        import yaml  # noqa: PLC0415 - only this command writes YAML

        print(yaml.safe_dump(settings.effective(), sort_keys=False), end="")
        return EXIT_OK
    if command == "run":
        from rotator.daemon import run_daemon  # noqa: PLC0415 - APScheduler loads only for `run`

        return run_daemon(settings, config_path=getattr(args, "config", None))
    if command == "sandbox":
        from rotator.sandbox import run_sandbox  # noqa: PLC0415 - moto is an optional extra

        return int(run_sandbox(args))
    if command == "rotate":
        _check_rotate_args(args)
    from rotator.app import App  # noqa: PLC0415 - keeps `--version`/`check-config` free of boto3

    # One command, then exit: no Prometheus endpoint would ever read metrics (per-key series of every user).
    app = App(settings, metrics=False)
    if command == "plan":
        return _plan(app, as_json=args.json)
    if command == "inventory":
        return _inventory(app, as_json=args.json)
    if command == "sweep":
        return _sweep(app, dry_run=True if args.dry_run else None)
    if command == "rotate":
        if args.all:
            if sys.stderr.isatty() and not getattr(args, "log_level", None):
                # The bar and the table say what the info events would; they would scroll the bar away.
                configure_logs(getattr(args, "log_format", None) or settings.logging.format, "warning")
            return _rotate_all(
                app, revoke=args.revoke, path=args.path, tag=args.tag, yes=args.yes, account_ids=args.account
            )
        return _rotate(app, args.users, revoke=args.revoke, account_ids=args.account)
    raise UsageError(f"unknown command {command!r}")


# -- output ----------------------------------------------------------------------------------------


def _report_ages(app: App, views: list[AccountView]) -> None:
    """On stderr: how old each account's credential report is (IAM serves one up to 4 h old)."""
    now = app.clock()
    for view in views:
        generated = view.report_generated
        if generated is not None:
            age = format_age((now - generated).total_seconds())
            print(
                f"rotator: account {view.account}: credential report generated {when(generated)} ({age} ago); "
                "users changed since are read from IAM directly",
                file=sys.stderr,
            )


def _plan(app: App, *, as_json: bool) -> int:
    views = app.plan()
    _report_ages(app, views)
    steps = [step for view in views for plan in view.plans for step in plan.steps]
    if as_json:
        print(json.dumps([step.to_json() for step in steps], indent=2))
        return _account_errors(app)
    rows = [[s.user, s.action.value, s.key_id or "-", when(s.due_at), s.reason] for s in steps]
    if not rows and sys.stdout.isatty():
        print("nothing to do")
    else:
        print_table(rows, ["user", "action", "key_id", "due_at", "reason"])
    return _account_errors(app)


def _account_errors(app: App) -> int:
    """Accounts that could not be read: one line each on stderr, and exit 1."""
    for failure in app.plan_errors:
        print(f"rotator: AWS error: {_one_line(failure.message)}", file=sys.stderr)
    return EXIT_FAILED if app.plan_errors else EXIT_OK


def _inventory(app: App, *, as_json: bool) -> int:
    views = app.plan()
    _report_ages(app, views)
    now = app.clock()
    records: list[dict[str, Any]] = []
    #: The last_used cell of each key's table row: when, and by which service in which region.
    last_use: dict[tuple[str, str, str], str] = {}
    for view in views:
        for state, plan in zip(view.states, view.plans, strict=True):
            secret = state.secret
            current = plan.roles.current.key_id if plan.roles.current else None
            previous = plan.roles.previous_id
            upcoming = sorted(plan.upcoming, key=lambda u: u.due_at)
            last_use.update({(state.account, state.user, k.key_id): last_use_cell(k, now) for k in state.keys})
            records.append(
                {
                    "account": state.account,
                    "user": state.user,
                    "path": state.path,
                    "secret": {
                        "name": secret.name,
                        "exists": secret.exists,
                        "managed": secret.managed,
                        "versions": {v: list(s) for v, s in secret.versions.items()},
                        "version_keys": dict(secret.version_keys),
                        "error": state.secret_name_error,
                    },
                    "keys": [
                        {
                            "key_id": key.key_id,
                            "status": key.status.value,
                            "created": key.created.isoformat(),
                            "age_seconds": int((now - key.created).total_seconds()),
                            "last_used": key.last_used.isoformat() if key.last_used else None,
                            "last_used_service": key.last_used_service,
                            "last_used_region": key.last_used_region,
                            "role": "current"
                            if key.key_id == current
                            else "previous"
                            if key.key_id == previous
                            else "other",
                        }
                        for key in state.keys
                    ],
                    "credential_report_generated": (
                        view.report_generated.isoformat() if view.report_generated else None
                    ),
                    "next_action": (
                        {"action": upcoming[0].action.value, "due_at": upcoming[0].due_at.isoformat()}
                        if upcoming
                        else None
                    ),
                    "now": [s.to_json() for s in plan.steps],
                }
            )
    if as_json:
        print(json.dumps(records, indent=2))
        return _account_errors(app)
    rows: list[list[str]] = []
    for record in records:
        keys = record["keys"] or [{"key_id": "-", "status": "-", "age_seconds": 0, "last_used": None, "role": "-"}]
        nxt = record["next_action"]
        for key in keys:
            rows.append(
                [
                    record["user"],
                    key["key_id"],
                    key["status"],
                    key["role"],
                    format_age(key["age_seconds"]) if key["key_id"] != "-" else "-",
                    last_use.get((record["account"], record["user"], key["key_id"]), "-"),
                    "yes" if record["secret"]["exists"] else "no",
                    f"{nxt['action']} {nxt['due_at']}" if nxt else "-",
                ]
            )
    print_table(rows, ["user", "key_id", "status", "role", "age", "last_used", "secret", "next"])
    return _account_errors(app)


def _sweep(app: App, *, dry_run: bool | None) -> int:
    report = app.sweep(dry_run=dry_run)
    if report.dry_run:
        steps = [step for view in report.views for plan in view.plans for step in plan.steps]
        rows = [[s.user, s.action.value, s.key_id or "-", when(s.due_at), s.reason] for s in steps]
        print_table(rows, ["user", "action", "key_id", "due_at", "reason"])
    else:
        done = {a: report.count(a) for a in (Action.ROTATE, Action.DISABLE, Action.DELETE, Action.CLEANUP)}
        held = sum(len(o.held) for o in report.outcomes)
        deferred = sum(len(o.deferred) for o in report.outcomes)
        summary = ", ".join(f"{a.value}d={n}" if a.value.endswith("e") else f"{a.value}={n}" for a, n in done.items())
        print(f"sweep {report.sweep_id}: {summary}, held={held}, deferred={deferred}, failed={report.failed}")
        for outcome in report.outcomes:
            for failure in outcome.failed:
                action = failure.step.action.value if failure.step else "user"
                print(f"FAILED {outcome.user} {action}: {redact_text(failure.reason(outcome.user))}", file=sys.stderr)
    for account_failure in report.errors:
        print(f"rotator: AWS error: {redact_text(account_failure.message)}", file=sys.stderr)
    return EXIT_FAILED if report.failed else EXIT_OK


def _rotate(app: App, users: list[str], *, revoke: bool, account_ids: Sequence[str] = ()) -> int:
    status = EXIT_OK
    results = app.rotate(users, revoke=revoke, account_ids=account_ids)
    accounts = {r.account for r in results if r.account}
    for result in results:
        who = f"{result.user} (account {result.account})" if len(accounts) > 1 and result.account else result.user
        line, ok = rotate_summary(result.outcome, result.error)
        if ok:
            print(f"{who}: {line}")
        else:
            print(f"rotator: {who}: {redact_text(line)}", file=sys.stderr)
            status = EXIT_FAILED
    for failure in app.account_errors:  # a user there may be the one asked for
        print(f"rotator: AWS error: {_one_line(failure.message)}", file=sys.stderr)
        status = EXIT_FAILED
    return status


def _check_rotate_args(args: argparse.Namespace) -> None:
    """``rotate USER...`` or ``rotate --all [--path P] [--tag K=V] [--yes]``, never both (exit 2)."""
    if args.all and args.users:
        raise UsageError("rotate: give USER names or --all, not both")
    if not args.all and not args.users:
        raise UsageError("rotate: give USER names, or --all for every managed key")
    if not args.all:
        given = [name for name, value in (("--path", args.path), ("--tag", args.tag), ("--yes", args.yes)) if value]
        if given:
            raise UsageError(f"rotate: {', '.join(given)} only go with --all")


def _rotate_all(
    app: App,
    *,
    revoke: bool,
    path: str | None,
    tag: tuple[str, str] | None,
    yes: bool,
    account_ids: Sequence[str] = (),
) -> int:
    """``rotate --all``: confirm (on a terminal), rotate with progress, summarize; Ctrl-C stops between steps."""
    from rotator.progress import Progress  # noqa: PLC0415 - only this command draws progress

    app.refuse_dry_run("--all")
    targets = app.rotation_targets(path=path, tag=tag, account_ids=account_ids)
    for failure in app.plan_errors:
        print(f"rotator: AWS error: {_one_line(failure.message)}", file=sys.stderr)
    unreadable = EXIT_FAILED if app.plan_errors else EXIT_OK
    if not targets:
        print("rotator: no managed user matches: nothing rotated", file=sys.stderr)
        return unreadable
    accounts = sorted({t.account.account_id for t in targets})
    what = (
        f"{len(targets)} managed user{'s' * (len(targets) != 1)} in {len(accounts)} account{'s' * (len(accounts) != 1)}"
    )
    if not yes:
        if not (sys.stdin.isatty() and sys.stderr.isatty()):
            raise UsageError("rotate --all changes every managed key: confirm with --yes when not on a terminal")
        revoking = " and disable each previous key at once (--revoke)" if revoke else ""
        sys.stderr.write(f"Rotate the access keys of {what}{revoking}? [y/N] ")
        sys.stderr.flush()
        if sys.stdin.readline().strip().lower() not in ("y", "yes"):
            print("rotator: aborted: nothing rotated", file=sys.stderr)
            return EXIT_FAILED
    on_terminal = sys.stderr.isatty()
    progress = Progress(len(targets), sys.stderr if on_terminal else sys.stdout, bar=on_terminal)
    several = len(accounts) > 1

    def show(result: RotateResult) -> None:
        if result.interrupted and result.outcome is None:
            return  # never started: listed at the end
        line, ok = rotate_summary(result.outcome, result.error)
        progress.finished(ok, f"{_who(result, several)}: {redact_text(line)}")

    stop = threading.Event()
    box: list[list[RotateResult] | BaseException] = []

    finished = threading.Event()

    def work() -> None:
        try:
            box.append(app.rotate_targets(targets, revoke=revoke, stop=stop, on_result=show))
        except BaseException as exc:  # handed to the main thread, raised there
            box.append(exc)
        finally:
            finished.set()

    worker = threading.Thread(target=work, name="rotate-all", daemon=True)
    worker.start()
    try:
        _wait(finished)
    except KeyboardInterrupt:
        stop.set()
        print(
            "\nrotator: interrupted: finishing the steps in flight, starting no others (Ctrl-C again quits at once)",
            file=sys.stderr,
            flush=True,
        )
        try:
            _wait(finished)
        except KeyboardInterrupt:
            print(
                "rotator: quit: users in flight may be left mid-rotation; the next sweep settles them", file=sys.stderr
            )
            return EXIT_INTERRUPTED
    progress.close()
    if isinstance(box[0], BaseException):
        raise box[0]
    return _rotate_all_summary(box[0], several, interrupted=stop.is_set()) or unreadable


def _wait(finished: threading.Event) -> None:
    # Not Thread.join: a KeyboardInterrupt inside join() can leave the thread looking finished (CPython
    # gh-90882); an Event's wait can be interrupted and simply waited on again.
    while not finished.wait(0.1):
        pass


def _who(result: RotateResult, several: bool) -> str:
    return f"{result.user} (account {result.account})" if several and result.account else result.user


def _rotate_all_summary(results: list[RotateResult], several: bool, *, interrupted: bool) -> int:
    """The table of every user's result; what an interruption left; the exit code."""
    rows, left, failed = [], [], 0
    for result in results:
        if result.interrupted and not (result.outcome and result.outcome.done):
            rows.append([result.account or "-", result.user, "left: not started (interrupted)"])
            left.append(_who(result, several))
            continue
        line, ok = rotate_summary(result.outcome, result.error)
        failed += 0 if ok else 1
        rows.append([result.account or "-", result.user, redact_text(line)])
    print_table(rows, ["account", "user", "result"])
    rotated = len(results) - failed - len(left)
    print(f"rotate --all: {rotated} rotated, {failed} failed, {len(left)} left of {len(results)}", file=sys.stderr)
    if interrupted:
        if left:
            print(f"rotator: interrupted: not rotated yet: {' '.join(left)}", file=sys.stderr)
        return EXIT_INTERRUPTED
    return EXIT_FAILED if failed else EXIT_OK


def rotate_summary(outcome: UserOutcome | None, error: str | None) -> tuple[str, bool]:
    """One line for a forced rotation's outcome, and whether it fully succeeded."""
    rotated = outcome is not None and any(s.action is Action.ROTATE for s in outcome.done)
    disabled = [s.key_id for s in (outcome.done if outcome else []) if s.action is Action.DISABLE]
    failed_disable = [f.step for f in (outcome.failed if outcome else []) if f.step and f.step.action is Action.DISABLE]
    if not rotated:
        reason = error or "; ".join(s.reason for s in (outcome.skipped if outcome else [])) or "no reason given"
        return f"not rotated: {reason}", False
    if failed_disable:
        return f"rotated, but disabling previous key {failed_disable[0].key_id} failed: {error}", False
    if error:
        return f"rotated, with errors: {error}", False
    if disabled:
        return f"rotated; previous key {', '.join(k for k in disabled if k)} disabled", True
    return "rotated", True


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
