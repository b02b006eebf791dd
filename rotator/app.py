"""The composition root: builds the AWS boundary, the clock, the event bus and the metrics.

Nothing below this module reads the environment or the clock on its own.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar

from rotator.aws import Aws, Boundary, ServiceLimits, session_from_environment, static_session
from rotator.awsclock import AwsClock, ClockError
from rotator.config import Settings
from rotator.errors import AwsError, DryRunRefusedError, NotManagedError, RotatorError
from rotator.events import (
    AccountSwept,
    ActionFailed,
    Event,
    EventBus,
    InventorySnapshot,
    SweepFinished,
    SweepStarted,
)
from rotator.guard import Guard
from rotator.inventory import Inventory
from rotator.logs import log_subscriber
from rotator.model import Action, UserPlan, UserState
from rotator.policy import plan_user

if TYPE_CHECKING:  # loaded where they are used: `plan` and `inventory` need none of them
    from prometheus_client import CollectorRegistry

    from rotator.executor import Budget, Executor, UserOutcome
    from rotator.metrics import Metrics
    from rotator.notify import Notifier

Clock = Callable[[], datetime]
_T = TypeVar("_T")
_R = TypeVar("_R")
#: Runs ``work`` over items with at most ``workers`` at once, results in input order (see :func:`run_each`).
Runner = Callable[[Sequence[Any], Callable[[Any], Any], int], list[Any]]


@dataclass(frozen=True)
class AwsEndpoint:
    """An explicit AWS to talk to (the sandbox's embedded emulator); without it, boto3's standard chain."""

    url: str
    region: str
    key_id: str
    secret: str


@dataclass(frozen=True)
class Account:
    account_id: str
    aws: Aws
    inventory: Inventory


@dataclass
class AccountView:
    """One account's inventory and plan at one moment."""

    account: str
    states: list[UserState]
    plans: list[UserPlan]
    #: When IAM generated the credential report this view read (it may be up to 4 h old).
    report_generated: datetime | None = None


@dataclass(frozen=True)
class AccountFailure:
    """An account (or the account discovery, ``account`` None) that could not be read or entered."""

    account: str | None
    #: An AwsError, or (a defect) any exception: it costs this account only.
    error: Exception
    #: What was being done, for people ("cannot assume arn:...").
    doing: str = ""

    @property
    def message(self) -> str:
        # A defect's text may hold anything (a response body): its name only; the log has the traceback.
        error = str(self.error) if isinstance(self.error, RotatorError) else f"unexpected {type(self.error).__name__}"
        text = f"{self.doing}: {error}" if self.doing else error
        return f"account {self.account}: {text}" if self.account else text


@dataclass
class SweepReport:
    sweep_id: str
    dry_run: bool
    views: list[AccountView] = field(default_factory=list)
    outcomes: list[UserOutcome] = field(default_factory=list)
    errors: list[AccountFailure] = field(default_factory=list)
    duration_seconds: float = 0.0
    #: A stop request (daemon shutdown) cut the sweep short at a step boundary.
    interrupted: bool = False

    @property
    def failed(self) -> int:
        return sum(len(o.failed) for o in self.outcomes) + len(self.errors)

    def count(self, action: Action) -> int:
        return sum(1 for o in self.outcomes for s in o.done if s.action is action)

    @property
    def broken(self) -> bool:
        """The rotator itself could not do its job: no account list, or not one account could be read.

        Everything narrower (one user's problem, one failed action, one member account that cannot be
        entered) is reported for that user or account (events, ``rotator_problems``, exit code 1) and
        makes the sweep ``partial``, never ``failure``: the others were swept.
        """
        if any(failure.account is None for failure in self.errors):
            return True
        return bool(self.errors) and not self.views

    @property
    def result(self) -> str:
        """``failure`` (see :attr:`broken`), ``interrupted``, ``partial`` (per-user/account problems), ``success``."""
        if self.broken:
            return "failure"
        if self.interrupted:
            return "interrupted"
        return "partial" if self.failed else "success"


class App:
    def __init__(
        self,
        settings: Settings,
        *,
        registry: CollectorRegistry | None = None,
        clock: Clock | None = None,
        bus: EventBus | None = None,
        aws: Aws | None = None,
        endpoint: AwsEndpoint | None = None,
        sleep: Callable[[float], None] = time.sleep,
        log: bool = True,
        runner: Runner | None = None,
        aws_clock: AwsClock | None = None,
        notify: bool = True,
        metrics: bool = True,
    ) -> None:
        self.settings = settings
        self.bus = bus or EventBus()
        #: The Prometheus metrics follow the events. ``metrics=False`` (a one-shot command: nothing would
        #: expose them) spares their cost - series for every key of every user - and prometheus_client's import.
        self.registry: CollectorRegistry | None = registry
        self.metrics: Metrics | None = None
        if metrics:
            from prometheus_client import CollectorRegistry  # noqa: PLC0415 - see above

            from rotator.metrics import Metrics  # noqa: PLC0415

            self.registry = registry or CollectorRegistry()
            self.metrics = Metrics(self.registry)
            self.bus.subscribe(self.metrics)
        if log:
            self.bus.subscribe(log_subscriber)
        #: AWS's clock, from the Date header of every answer (rotator_clock_skew_seconds, /readyz).
        self.aws_clock = aws_clock or AwsClock(emit=self.bus.emit)
        #: Every decision against an AWS timestamp reads AWS's time; a given clock (tests, a simulation)
        #: owns time itself.
        self.clock: Clock = clock if clock is not None else self.aws_clock.now
        #: Asked before every mutating AWS call (rotator.guard): AWS's clock must be known when it is the
        #: one deciding; the daemon adds its fencing check.
        self.guards: list[Guard] = [self._clock_guard] if clock is None and aws is None else []
        self.sleep = sleep
        self._aws = aws
        self._aws_injected = aws is not None
        self.endpoint = endpoint
        #: How work runs concurrently (``aws.concurrency`` per account, ``aws.parallel_accounts``); a
        #: simulation injects one that runs everything in order on its own thread.
        self.runner = runner
        self._accounts: list[Account] | None = None
        #: Accounts the last :meth:`accounts` call could not reach (one line each); see ``sweep``.
        self.account_errors: list[AccountFailure] = []
        #: Accounts the last :meth:`plan` could not read (the CLI reports them and exits 1).
        self.plan_errors: list[AccountFailure] = []
        #: Notifications to owners (rotator.notify), a bus subscriber like metrics and logs; None without a
        #: channel configured (or ``notify=False``). Rebuilt by :meth:`reconfigure`.
        self._notify = notify
        self.notifier: Notifier | None = self._build_notifier()
        self.bus.subscribe(self._to_notifier)

    def _build_notifier(self) -> Notifier | None:
        config = self.settings.notifications
        if not self._notify or (config.sns_topic_arn is None and config.webhook_url is None):
            return None
        from rotator.notify import Notifier  # noqa: PLC0415 - only with a channel configured

        return Notifier(config, clock=self.clock, emit=self.bus.emit, sns=_OwnAccountSns(self))

    def _to_notifier(self, event: Event) -> None:
        notifier = self.notifier
        if notifier is not None:
            notifier(event)

    # -- wiring ----------------------------------------------------------------------------------

    def base_aws(self) -> Aws:
        if self._aws is None:
            rates, other = self.settings.aws.ceilings()
            limiter = ServiceLimits(rates, other=other)
            endpoint = self.endpoint
            session = (
                static_session(region=endpoint.region, key_id=endpoint.key_id, secret=endpoint.secret)
                if endpoint
                else session_from_environment()
            )
            boundary = Boundary(
                session,
                self.bus.emit,
                endpoint_url=endpoint.url if endpoint else None,
                max_attempts=self.settings.aws.max_attempts,
                limiter=limiter,
                connect_timeout=self.settings.aws.connect_timeout.total_seconds(),
                read_timeout=self.settings.aws.read_timeout.total_seconds(),
                max_pool_connections=max(10, self.settings.aws.concurrency + 2),
                clock_sample=self.aws_clock.observe,
            )
            self._aws = Aws(boundary, sleep=self.sleep)
        return self._aws

    def accounts(self) -> list[Account]:
        """One :class:`Account` per managed account (cached until :meth:`reconfigure`).

        The explicit ``accounts`` role ARNs, then (with ``organization``) every ACTIVE account that
        AWS Organizations lists (all of it, or under ``include_ous`` and their nested OUs), minus
        ``exclude_accounts`` (which wins over explicit ARNs too), each account once. Without either,
        the caller's own account. A failing listing raises (never "no accounts"); an account whose
        role cannot be assumed is left out and named in :attr:`account_errors`; the others proceed,
        and the set is not cached, so the next call tries that account again.
        """
        if self._accounts is not None:
            return self._accounts
        base = self.base_aws()
        org = self.settings.organization
        excluded = set(org.exclude_accounts) if org else set()
        roles: dict[str, str] = {}  # account id -> role ARN, first wins
        for role_arn in self.settings.accounts:
            roles.setdefault(role_arn.split(":")[4], role_arn)
        if org is not None:
            members = base.org_accounts_under(org.include_ous) if org.include_ous else base.org_accounts()
            for member in sorted(members, key=lambda m: m.account_id):
                if member.state == "ACTIVE":
                    roles.setdefault(
                        member.account_id, f"arn:{member.partition}:iam::{member.account_id}:role/{org.role_name}"
                    )
        accounts: list[Account] = []
        errors: list[AccountFailure] = []
        if not self.settings.accounts and org is None:
            account_id = base.account_id()
            base.boundary.account = account_id
            accounts.append(Account(account_id, base, Inventory(base, self.settings, account_id)))
        for account_id, role_arn in roles.items():
            if account_id in excluded:
                continue
            try:
                aws = base.assume(role_arn)
            except Exception as exc:  # any failure (a defect too) costs this account only
                _log_defect(exc, account_id)
                errors.append(AccountFailure(account_id, exc, doing=f"cannot assume {role_arn}"))
                continue
            accounts.append(Account(account_id, aws, Inventory(aws, self.settings, account_id)))
        self.account_errors = errors
        if not errors:
            self._accounts = accounts
        return accounts

    def executor(
        self,
        account: Account,
        sweep_id: str | None = None,
        stop: threading.Event | None = None,
        *,
        dry_run: bool = False,
    ) -> Executor:
        from rotator.executor import Executor  # noqa: PLC0415 - `plan` and `inventory` act on nothing

        return Executor(
            account.aws,
            account.inventory,
            self.settings,
            self.bus.emit,
            self.clock,
            sleep=self.sleep,
            sweep_id=sweep_id,
            stop=stop,
            dry_run=dry_run,
            guard=self.guard if self.guards else None,
        )

    def guard(self, operation: str) -> None:
        """Ask every guard whether ``operation`` may go out (MutationRefusedError when not)."""
        for guard in list(self.guards):
            guard(operation)

    def _clock_guard(self, operation: str) -> None:
        problem = self.aws_clock.reading().problem
        if problem is not None:
            raise ClockError(f"{operation} refused: {problem}")

    def dry_run(self, requested: bool | None = None) -> bool:
        """The one place dry-run is decided: ``--dry-run`` (when given) over ``safety.dry_run``."""
        return self.settings.safety.dry_run if requested is None else requested

    def reconfigure(self, settings: Settings) -> None:
        """Apply new settings (the daemon's SIGHUP) between sweeps; the AWS wiring is rebuilt lazily."""
        self.settings = settings
        self._accounts = None
        if not self._aws_injected:
            self._aws = None
        # The old notifier's threads finish what they hold; new events go to the new channels.
        self.notifier = self._build_notifier()

    # -- read-only ------------------------------------------------------------------------------

    def view(self, account: Account) -> AccountView:
        states = account.inventory.gather()
        now = self.clock()
        defaults = self.settings.policy_defaults()
        plans = [plan_user(state, defaults, now) for state in states]
        self.bus.emit(InventorySnapshot(account=account.account_id, states=states, plans=plans))
        return AccountView(account.account_id, states, plans, account.inventory.report_generated)

    def plan(self) -> list[AccountView]:
        """Every account's view; accounts that cannot be read are in :attr:`account_errors`."""
        views = []
        accounts = self.accounts()
        self.plan_errors = list(self.account_errors)
        for account in accounts:
            try:
                views.append(self.view(account))
            except Exception as exc:  # a defect too: it costs this account only
                if len(accounts) == 1 and isinstance(exc, AwsError):
                    raise
                _log_defect(exc, account.account_id)
                self.plan_errors.append(AccountFailure(account.account_id, exc))
        return views

    # -- sweeping -------------------------------------------------------------------------------

    def sweep(self, *, dry_run: bool | None = None, stop: threading.Event | None = None) -> SweepReport:
        """One pass over every account. ``stop`` ends it early, at a step boundary (daemon shutdown)."""
        dry = self.dry_run(dry_run)
        report = SweepReport(sweep_id=uuid.uuid4().hex[:12], dry_run=dry)
        started = time.monotonic()
        self.bus.emit(SweepStarted(sweep_id=report.sweep_id, dry_run=dry))
        from rotator.executor import Budget  # noqa: PLC0415 - see executor()

        budget = Budget(self.settings.safety.max_actions_per_sweep)
        try:
            accounts = self.accounts()
            report.errors.extend(self.account_errors)  # reported per account (partial); all of them: failure

            def one(account: Account) -> SweepReport:
                """One account's part, in a report of its own (merged in account order below)."""
                part = SweepReport(sweep_id=report.sweep_id, dry_run=dry)
                if stop is not None and stop.is_set():
                    part.interrupted = True
                    return part
                try:
                    self._sweep_account(account, part, budget, dry, stop)
                except Exception as exc:  # a defect too: it costs this account only, never the others
                    # One unreadable account is reported for that account, never keeps the others from theirs.
                    _log_defect(exc, account.account_id)
                    part.errors.append(AccountFailure(account.account_id, exc))
                if not dry:
                    self._account_finished(part, account.account_id)
                return part

            # ``aws.parallel_accounts`` accounts at once, each under its own rate limits (as ``rotate --all``).
            for part in run_each(accounts, one, self.settings.aws.parallel_accounts, runner=self.runner):
                report.views.extend(part.views)
                report.outcomes.extend(part.outcomes)
                report.errors.extend(part.errors)
                report.interrupted = report.interrupted or part.interrupted
        except AwsError as exc:
            report.errors.append(AccountFailure(None, exc))
        report.duration_seconds = time.monotonic() - started
        self._finish(report)
        return report

    def _sweep_account(
        self,
        account: Account,
        report: SweepReport,
        budget: Budget,
        dry: bool,
        stop: threading.Event | None = None,
    ) -> None:
        view = self.view(account)
        report.views.append(view)
        if dry:
            # Counted like a real sweep would count them: skips and problems as such, holds as held,
            # the changes as deferred (nothing is changed).
            report.outcomes.extend(self._report_only(plan, report.sweep_id, dry=True) for plan in view.plans)
            return
        to_run: list[str] = []
        for plan in view.plans:
            if plan.wants_executor:
                to_run.append(plan.user)
            else:
                report.outcomes.append(self._report_only(plan, report.sweep_id))

        def make() -> Executor:
            return self.executor(account, report.sweep_id, stop)

        from rotator.executor import run_users  # noqa: PLC0415 - see executor()

        outcomes = run_users(make, to_run, budget, workers=self.settings.aws.concurrency)
        report.outcomes.extend(outcomes)
        report.interrupted = report.interrupted or any(o.interrupted for o in outcomes)
        if any(o.done for o in outcomes):
            try:
                self.view(account)  # refresh gauges after changes (cheap in steady state)
            except AwsError as exc:
                report.errors.append(AccountFailure(account.account_id, exc))

    def _account_finished(self, report: SweepReport, account: str) -> None:
        """``sweep.account_finished``: the per-account truth (rotator_account_last_success_timestamp_seconds)."""
        failed = any(f.account == account for f in report.errors) or any(
            o.failed for o in report.outcomes if o.account == account
        )
        interrupted = any(o.interrupted for o in report.outcomes if o.account == account)
        result = "failure" if failed else "interrupted" if interrupted else "success"
        self.bus.emit(AccountSwept(account=account, sweep_id=report.sweep_id, result=result, finished_at=self.clock()))

    def _report_only(self, plan: UserPlan, sweep_id: str, *, dry: bool = False) -> UserOutcome:
        """A user with nothing to act on (or a dry run): skips reported, problems failures, the rest deferred."""
        from rotator.executor import UserOutcome, record_skip  # noqa: PLC0415 - see executor()

        outcome = UserOutcome(user=plan.user, account=plan.account)
        for step in plan.steps:
            if step.action is Action.HOLD:
                outcome.held.append(step)
            elif step.action is not Action.SKIP:
                outcome.deferred.append(step)  # only reached in a dry run: a plan with changes is executed
            else:
                record_skip(step, outcome, self.bus.emit, sweep_id)
        return outcome

    def _finish(self, report: SweepReport) -> None:
        for failure in report.errors:
            self.bus.emit(
                ActionFailed(
                    account=failure.account or "",
                    user="",
                    sweep_id=report.sweep_id,
                    error=failure.message,
                    error_type=type(failure.error).__name__,
                )
            )
        self.bus.emit(
            SweepFinished(
                sweep_id=report.sweep_id,
                result=report.result,
                dry_run=report.dry_run,
                duration_seconds=round(report.duration_seconds, 3),
                users=sum(len(v.states) for v in report.views),
                rotated=report.count(Action.ROTATE),
                disabled=report.count(Action.DISABLE),
                deleted=report.count(Action.DELETE),
                cleaned=report.count(Action.CLEANUP),
                held=sum(len(o.held) for o in report.outcomes),
                skipped=sum(len(o.skipped) for o in report.outcomes),
                deferred=sum(len(o.deferred) for o in report.outcomes),
                failed=report.failed,
                finished_at=self.clock(),
            )
        )

    # -- forced rotation ---------------------------------------------------------------------

    def rotate(self, users: list[str], *, revoke: bool, account_ids: Sequence[str] = ()) -> list[RotateResult]:
        """Rotate ``users`` now in every account where each is managed (narrowed to ``account_ids``).

        One result per (account, user) that was tried, plus one per user managed nowhere: a refusal in
        one account is never hidden by a success in another. Other users still proceed after a failure.
        """
        if self.dry_run():
            raise DryRunRefusedError(
                "safety.dry_run is on: nothing rotated "
                "(for this command only: ROTATOR_SAFETY__DRY_RUN=false rotator rotate ...)"
            )
        results: list[RotateResult] = []
        sweep_id = "rotate-" + uuid.uuid4().hex[:8]
        accounts = [a for a in self.accounts() if not account_ids or a.account_id in account_ids]
        for user in users:
            tried = False
            for account in accounts:
                try:
                    outcome = self.executor(account, sweep_id, dry_run=False).rotate_forced(user, revoke=revoke)
                except NotManagedError:
                    continue
                except RotatorError as exc:
                    # The line names the user already: its error does not again.
                    results.append(RotateResult(account.account_id, user, None, str(exc).removeprefix(f"{user}: ")))
                except Exception as exc:  # a defect costs this user in this account, never the others
                    logging.getLogger(__name__).error("rotate.unexpected_error", exc_info=True)
                    results.append(RotateResult(account.account_id, user, None, f"unexpected {type(exc).__name__}"))
                else:
                    error = "; ".join(failure.reason(user) for failure in outcome.failed) or None
                    results.append(RotateResult(account.account_id, user, outcome, error))
                tried = True
            if not tried:
                where = f"account {', '.join(account_ids)}" if account_ids else "any account"
                results.append(RotateResult(None, user, None, f"not a managed user in {where}"))
        return results

    def refuse_dry_run(self, args: str) -> None:
        """``rotate`` changes AWS: refused (before anything is read or asked) while ``safety.dry_run`` is on."""
        if self.dry_run():
            raise DryRunRefusedError(
                "safety.dry_run is on: nothing rotated "
                f"(for this command only: ROTATOR_SAFETY__DRY_RUN=false rotator rotate {args})"
            )

    def rotation_targets(
        self, *, path: str | None = None, tag: tuple[str, str] | None = None, account_ids: Sequence[str] = ()
    ) -> list[RotateTarget]:
        """``rotate --all``: every managed user (of ``account_ids``), narrowed to a path prefix and a tag.

        Read from one inventory per account; each user is re-read before it is acted on. An account that
        cannot be read raises (single account) or is named in :attr:`plan_errors`.
        """
        accounts = {a.account_id: a for a in self.accounts() if not account_ids or a.account_id in account_ids}
        targets = []
        for view in self.plan():
            account = accounts.get(view.account)
            if account is None:
                continue
            for state in view.states:
                if path is not None and not state.path.startswith(path):
                    continue
                if tag is not None and state.tags.get(tag[0]) != tag[1]:
                    continue
                targets.append(RotateTarget(account, state.user))
        return targets

    def rotate_targets(
        self,
        targets: Sequence[RotateTarget],
        *,
        revoke: bool,
        stop: threading.Event | None = None,
        on_result: Callable[[RotateResult], None] | None = None,
    ) -> list[RotateResult]:
        """Rotate every target now: ``aws.parallel_accounts`` accounts at once, ``aws.concurrency`` users at
        once in each (while one new key propagates, the others proceed), each account within its own rate
        limits. ``stop`` (Ctrl-C) lets the steps in flight finish and starts no other: the users it kept
        from starting, or from finishing, come back ``interrupted``.
        """
        self.refuse_dry_run("--all")
        sweep_id = "rotate-" + uuid.uuid4().hex[:8]
        by_account: dict[str, list[RotateTarget]] = {}
        for target in targets:
            by_account.setdefault(target.account.account_id, []).append(target)

        def one(target: RotateTarget) -> RotateResult:
            account, user = target.account, target.user
            if stop is not None and stop.is_set():
                result = RotateResult(account.account_id, user, None, None, interrupted=True)
            else:
                result = self._rotate_one(account, user, sweep_id, revoke=revoke, stop=stop)
            if on_result is not None:
                on_result(result)
            return result

        def account_work(group: list[RotateTarget]) -> list[RotateResult]:
            return run_each(group, one, self.settings.aws.concurrency, runner=self.runner)

        groups = list(by_account.values())
        done = run_each(groups, account_work, self.settings.aws.parallel_accounts, runner=self.runner)
        return [result for group in done for result in group]

    def _rotate_one(
        self, account: Account, user: str, sweep_id: str, *, revoke: bool, stop: threading.Event | None
    ) -> RotateResult:
        try:
            executor = self.executor(account, sweep_id, stop, dry_run=False)
            outcome = executor.rotate_forced(user, revoke=revoke)
        except RotatorError as exc:  # the result's line names the user already: its error does not again
            return RotateResult(account.account_id, user, None, str(exc).removeprefix(f"{user}: "))
        except Exception as exc:  # a defect costs this user, never the others
            logging.getLogger(__name__).error("rotate.unexpected_error", exc_info=True)
            return RotateResult(account.account_id, user, None, f"unexpected {type(exc).__name__}")
        error = "; ".join(failure.reason(user) for failure in outcome.failed) or None
        return RotateResult(account.account_id, user, outcome, error, interrupted=outcome.interrupted)


@dataclass(frozen=True)
class RotateResult:
    """What ``rotator rotate`` did for one user in one account."""

    account: str | None
    user: str
    outcome: UserOutcome | None
    error: str | None
    #: A stop request (Ctrl-C) came first: nothing was done for this user, or only its earlier steps.
    interrupted: bool = False


@dataclass(frozen=True)
class RotateTarget:
    """One managed user of ``rotate --all``, in its account."""

    account: Account
    user: str


def run_each(items: Sequence[_T], work: Callable[[_T], _R], workers: int, *, runner: Runner | None = None) -> list[_R]:
    """``work`` on every item, at most ``workers`` at once; results in input order. One worker: inline, in
    order, on the calling thread (what a deterministic simulation needs); ``runner`` replaces the pool.
    """
    if runner is not None:
        return runner(items, work, workers)
    if workers <= 1 or len(items) <= 1:
        return [work(item) for item in items]
    with ThreadPoolExecutor(max_workers=min(workers, len(items))) as pool:
        return list(pool.map(work, items))


def _log_defect(exc: Exception, account: str) -> None:
    """An exception outside the error tree (a defect, or a library's own): logged with its traceback."""
    if not isinstance(exc, RotatorError):
        logging.getLogger(__name__).error("sweep.account_unexpected_error", exc_info=True, extra={"account": account})


class _OwnAccountSns:
    """SNS of the rotator's own account (the topic lives there), built when the first message goes out."""

    def __init__(self, app: App) -> None:
        self._app = app
        self._lock = threading.Lock()

    def publish(self, topic_arn: str, subject: str, message: str, attributes: Mapping[str, str]) -> None:
        with self._lock:  # base_aws() builds the boundary once; the notifier's thread may be first
            aws = self._app.base_aws()
        aws.sns.publish(topic_arn, subject, message, attributes)
