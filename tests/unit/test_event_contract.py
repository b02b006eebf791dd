"""The log and metric names dashboards, runbooks and black-box tests read: a whole key lifecycle.

The contract (the README's "Logs" and "Metrics"): ``rotation.key_created`` exactly once per key the
rotator creates, ``rotation.published``, ``key.held``, ``key.disabled``, ``key.deleted`` and
``key.orphan_deleted``, each with ``user`` and ``key_id``; and ``rotator_actions_total`` with
``result="held"`` for a hold. The names are written out here, not read from :mod:`rotator.events`, so a
renamed event or label fails this test (it once survived the whole suite but for the slow live-Prometheus
test).
"""

from __future__ import annotations

from datetime import timedelta

from fakes import FakeAccount
from prometheus_client import CollectorRegistry
from structlog.testing import capture_logs

from rotator.config import Settings
from rotator.events import Event
from rotator.executor import Budget, Executor
from rotator.inventory import Inventory
from rotator.logs import log_subscriber
from rotator.metrics import Metrics
from rotator.model import own_tag

USER = "app"
DAY = timedelta(days=1)


def test_a_key_lifecycle_logs_and_counts_under_the_contract_names() -> None:
    fake = FakeAccount()
    settings = Settings()
    policy = settings.policy
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    events: list[Event] = []

    def emit(event: Event) -> None:
        events.append(event)
        metrics(event)
        log_subscriber(event)

    def sweep() -> None:
        inventory = Inventory(fake.ports, settings, fake.account)
        executor = Executor(fake.ports, inventory, settings, emit, fake.clock, sleep=fake.clock.sleep, sweep_id="s")
        executor.run_user(USER, Budget(None))

    fake.iam.add_user(USER)
    with capture_logs() as logs:
        sweep()  # bootstrap: key 1 published
        fake.clock.advance(policy.max_key_age + DAY)
        sweep()  # rotation: key 2 published, key 1 previous
        first = next(k for k, _ in sorted(fake.iam.keys(USER).items()))
        fake.clock.advance(policy.grace_period + DAY)
        fake.iam.use_key(first, ago=timedelta(minutes=5))
        sweep()  # grace over, but used within quiet_period: held
        fake.clock.advance(policy.quiet_period + DAY)
        sweep()  # quiet now: disabled
        fake.clock.advance(policy.retention + DAY)
        sweep()  # deleted
        stray = fake.iam.add_key(USER)  # a key the rotator created, its record written, never stored
        fake.iam.users[USER].tags[own_tag(stray.key_id)] = "x"
        fake.clock.advance(2 * settings.aws.validation_timeout + timedelta(seconds=1))
        sweep()  # orphan cleaned

    contract = [
        "rotation.key_created",
        "rotation.published",
        "key.held",
        "key.disabled",
        "key.deleted",
        "key.orphan_deleted",
    ]
    logged = [line for line in logs if line["event"] in contract]
    assert [line["event"] for line in logged] == [
        "rotation.key_created",
        "rotation.published",
        "rotation.key_created",
        "rotation.published",
        "key.held",
        "key.disabled",
        "key.deleted",
        "key.orphan_deleted",
    ]
    assert all(line["user"] == USER and str(line["key_id"]).startswith("AKIA") for line in logged), logged
    assert {line["key_id"] for line in logged if line["event"] in ("key.held", "key.disabled", "key.deleted")} == {
        first
    }
    assert [line["key_id"] for line in logged if line["event"] == "key.orphan_deleted"] == [stray.key_id]

    def actions(action: str, result: str) -> float | None:
        return registry.get_sample_value("rotator_actions_total", {"action": action, "result": result})

    assert actions("rotate", "success") == 2
    assert actions("disable", "held") == 1
    assert actions("disable", "success") == 1
    assert actions("delete", "success") == 1
    assert actions("cleanup", "success") == 1
