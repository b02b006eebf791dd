"""deploy/prometheus: alert rules are valid, tested with promtool, and use SPEC's metric names.

Needs `promtool` (Debian package `prometheus`); the tests fail, not skip, without it.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
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
    # Issue 15: no leader, lease errors, per-user/per-account problems, a dry run left on.
    "RotatorNoLeader",
    "RotatorLeaseErrors",
    "RotatorProblems",
    "RotatorDryRun",
    # Issue 14: AWS quarantined a managed user (an exposed key); notifications not delivered.
    "RotatorQuarantinedUser",
    "RotatorNotificationFailures",
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


# -- issue 15: runbook URLs an Alertmanager can open, and the PrometheusRule from the same file -----------------

RENDER = ALERTS.parents[2] / "scripts" / "render-alerts"
BASE = "https://git.example.com/ops/iam-key-rotator/blob/main/docs"


def render(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(RENDER), *args], capture_output=True, text=True, timeout=60, check=False)


def test_rendered_rules_have_absolute_runbook_urls_and_pass_promtool(tmp_path: Path) -> None:
    result = render("--runbook-base", BASE + "/")
    assert result.returncode == 0, result.stderr
    rendered = tmp_path / "rotator-rules.yml"
    rendered.write_text(result.stdout, encoding="utf-8")
    checked = promtool("check", "rules", rendered.name, cwd=tmp_path)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    source = {str(rule["alert"]): rule for rule in alert_rules()}
    rules = [r for g in yaml.safe_load(result.stdout)["groups"] for r in g["rules"]]
    assert {r["alert"] for r in rules} == set(source)
    for rule in rules:
        name = rule["alert"]
        assert rule["annotations"]["runbook_url"] == f"{BASE}/operations.md#{name.lower()}", name
        assert rule["expr"] == source[name]["expr"], name  # only the runbook URLs change


def test_render_refuses_a_relative_base() -> None:
    result = render("--runbook-base", "docs")
    assert result.returncode == 2
    assert "absolute http(s) URL" in result.stderr


def test_the_prometheus_rule_holds_the_same_groups() -> None:
    plain = render("--runbook-base", BASE)
    wrapped = render("--runbook-base", BASE, "--kubernetes", "--namespace", "monitoring")
    assert plain.returncode == wrapped.returncode == 0, plain.stderr + wrapped.stderr
    document = yaml.safe_load(wrapped.stdout)
    assert (document["apiVersion"], document["kind"]) == ("monitoring.coreos.com/v1", "PrometheusRule")
    assert document["metadata"]["namespace"] == "monitoring"
    assert document["spec"]["groups"] == yaml.safe_load(plain.stdout)["groups"]
