"""The composition root: builds the AWS boundary, the clock, the event bus and the metrics.

Nothing below this module reads the environment or the clock on its own.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from prometheus_client import CollectorRegistry

from rotator.aws import Aws, Boundary, RateLimiter, now_utc, session_from_environment, static_session
from rotator.config import Settings
from rotator.errors import AwsError, DryRunRefusedError, NotManagedError, RotatorError
from rotator.events import ActionFailed, EventBus, InventorySnapshot, SweepFinished, SweepStarted
from rotator.executor import Budget, Executor, UserOutcome, record_skip, run_users
from rotator.inventory import Inventory
from rotator.logs import log_subscriber
from rotator.metrics import Metrics
from rotator.model import Action, UserPlan, UserState
from rotator.policy import plan_user

Clock = Callable[[], datetime]


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
    error: AwsError
    #: What was being done, for people ("cannot assume arn:...").
    doing: str = ""

    @property
    def message(self) -> str:
        text = f"{self.doing}: {self.error}" if self.doing else str(self.error)
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
    def result(self) -> str:
        if self.failed:
            return "failure"
        return "interrupted" if self.interrupted else "success"


class App:
    def __init__(
        self,
        settings: Settings,
        *,
        registry: CollectorRegistry | None = None,
        clock: Clock = now_utc,
        bus: EventBus | None = None,
        aws: Aws | None = None,
        endpoint: AwsEndpoint | None = None,
        sleep: Callable[[float], None] = time.sleep,
        log: bool = True,
    ) -> None:
        self.settings = settings
        self.registry = registry or CollectorRegistry()
        self.metrics = Metrics(self.registry)
        self.bus = bus or EventBus()
        self.bus.subscribe(self.metrics)
        if log:
            self.bus.subscribe(log_subscriber)
        self.clock = clock
        self.sleep = sleep
        self._aws = aws
        self._aws_injected = aws is not None
        self.endpoint = endpoint
        self._accounts: list[Account] | None = None
        #: Accounts the last :meth:`accounts` call could not reach (one line each); see ``sweep``.
        self.account_errors: list[AccountFailure] = []
        #: Accounts the last :meth:`plan` could not read (the CLI reports them and exits 1).
        self.plan_errors: list[AccountFailure] = []

    # -- wiring ----------------------------------------------------------------------------------

    def base_aws(self) -> Aws:
        if self._aws is None:
            limiter = RateLimiter(self.settings.aws.max_calls_per_second)
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
            except AwsError as exc:
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
        )

    def dry_run(self, requested: bool | None = None) -> bool:
        """The one place dry-run is decided: ``--dry-run`` (when given) over ``safety.dry_run``."""
        return self.settings.safety.dry_run if requested is None else requested

    def reconfigure(self, settings: Settings) -> None:
        """Apply new settings (the daemon's SIGHUP) between sweeps; the AWS wiring is rebuilt lazily."""
        self.settings = settings
        self._accounts = None
        if not self._aws_injected:
            self._aws = None

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
            except AwsError as exc:
                if len(accounts) == 1:
                    raise
                self.plan_errors.append(AccountFailure(account.account_id, exc))
        return views

    # -- sweeping -------------------------------------------------------------------------------

    def sweep(self, *, dry_run: bool | None = None, stop: threading.Event | None = None) -> SweepReport:
        """One pass over every account. ``stop`` ends it early, at a step boundary (daemon shutdown)."""
        dry = self.dry_run(dry_run)
        report = SweepReport(sweep_id=uuid.uuid4().hex[:12], dry_run=dry)
        started = time.monotonic()
        self.bus.emit(SweepStarted(sweep_id=report.sweep_id, dry_run=dry))
        budget = Budget(self.settings.safety.max_actions_per_sweep)
        try:
            accounts = self.accounts()
            report.errors.extend(self.account_errors)  # an unreachable account fails the sweep
            for account in accounts:
                if stop is not None and stop.is_set():
                    report.interrupted = True
                    break
                try:
                    self._sweep_account(account, report, budget, dry, stop)
                except AwsError as exc:
                    # One unreadable account fails the sweep but never keeps the others from theirs.
                    report.errors.append(AccountFailure(account.account_id, exc))
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
            return
        to_run: list[str] = []
        for plan in view.plans:
            if plan.wants_executor:
                to_run.append(plan.user)
            else:
                report.outcomes.append(self._report_only(plan, report.sweep_id))

        def make() -> Executor:
            return self.executor(account, report.sweep_id, stop)

        outcomes = run_users(make, to_run, budget)
        report.outcomes.extend(outcomes)
        report.interrupted = report.interrupted or any(o.interrupted for o in outcomes)
        if any(o.done for o in outcomes):
            try:
                self.view(account)  # refresh gauges after changes (cheap in steady state)
            except AwsError as exc:
                report.errors.append(AccountFailure(None, exc))

    def _report_only(self, plan: UserPlan, sweep_id: str) -> UserOutcome:
        """A user with nothing to act on: its skips are reported, its problems are failures."""
        outcome = UserOutcome(user=plan.user, account=plan.account)
        for step in plan.steps:
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
                    results.append(RotateResult(account.account_id, user, None, str(exc)))
                except Exception as exc:  # a defect costs this user in this account, never the others
                    logging.getLogger(__name__).error("rotate.unexpected_error", exc_info=True)
                    results.append(
                        RotateResult(account.account_id, user, None, f"{user}: unexpected {type(exc).__name__}")
                    )
                else:
                    error = "; ".join(failure.message for failure in outcome.failed) or None
                    results.append(RotateResult(account.account_id, user, outcome, error))
                tried = True
            if not tried:
                where = f"account {', '.join(account_ids)}" if account_ids else "any account"
                results.append(RotateResult(None, user, None, f"{user}: not a managed user in {where}"))
        return results


@dataclass(frozen=True)
class RotateResult:
    """What ``rotator rotate`` did for one user in one account."""

    account: str | None
    user: str
    outcome: UserOutcome | None
    error: str | None
