"""deploy/prometheus: alert rules are valid, tested with promtool, and use SPEC's metric names.

Needs `promtool` (Debian package `prometheus`); the tests fail, not skip, without it.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from dashboard_queries import ALERTS, ALLOWED_SERIES, alert_exprs, metric_names

ALERT_TESTS = ALERTS.with_name("alerts.test.yml")
EXPECTED_ALERTS = {
    "RotatorKeyPastMaxAge",
    "RotatorKeyHeld",
    "RotatorSweepsFailing",
    "RotatorNoRecentSuccess",
    "RotatorDown",
    "RotatorAbsent",
    "RotatorAwsThrottling",
    "RotatorActionFailures",
    "RotatorUnprovenKey",
}


def promtool(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    path = shutil.which("promtool")
    if path is None:
        pytest.fail("promtool not found: install the Debian package 'prometheus'")
    return subprocess.run([path, *args], capture_output=True, text=True, timeout=120, cwd=cwd, check=False)


def alert_rules() -> list[dict[str, object]]:
    data = yaml.safe_load(ALERTS.read_text(encoding="utf-8"))
    return [rule for group in data["groups"] for rule in group["rules"] if "alert" in rule]


def test_promtool_check_rules() -> None:
    result = promtool("check", "rules", ALERTS.name, cwd=ALERTS.parent)
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_test_rules() -> None:
    result = promtool("test", "rules", ALERT_TESTS.name, cwd=ALERT_TESTS.parent)
    assert result.returncode == 0, result.stdout + result.stderr


def test_expected_alerts_with_labels_and_annotations() -> None:
    rules = alert_rules()
    assert {rule["alert"] for rule in rules} == EXPECTED_ALERTS
    for rule in rules:
        name = str(rule["alert"])
        labels = rule.get("labels") or {}
        annotations = rule.get("annotations") or {}
        assert isinstance(labels, dict)
        assert isinstance(annotations, dict)
        assert labels.get("severity") in {"critical", "warning", "info"}, name
        assert annotations.get("summary"), name
        assert annotations.get("description"), name
        assert annotations.get("runbook_url") == f"docs/operations.md#{name.lower()}", name


def test_every_alert_has_a_firing_and_a_quiet_case() -> None:
    data = yaml.safe_load(ALERT_TESTS.read_text(encoding="utf-8"))
    firing: set[str] = set()
    quiet: set[str] = set()
    for case in data["tests"]:
        for check in case.get("alert_rule_test", []):
            (firing if check.get("exp_alerts") else quiet).add(check["alertname"])
    assert firing >= EXPECTED_ALERTS, EXPECTED_ALERTS - firing
    assert quiet >= EXPECTED_ALERTS, EXPECTED_ALERTS - quiet


def test_alerts_use_only_spec_metrics() -> None:
    exprs = alert_exprs()
    assert exprs
    for expr in exprs:
        names = metric_names(expr)
        assert names, expr
        assert names <= ALLOWED_SERIES, f"{expr}: {names - ALLOWED_SERIES}"
