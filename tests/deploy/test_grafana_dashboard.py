"""deploy/grafana/rotator-dashboard.json: portable (datasource variable) and built on SPEC's metric names."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from dashboard_queries import (
    ALLOWED_SERIES,
    DASHBOARD,
    dashboard_exprs,
    iter_panels,
    load_dashboard,
    metric_names,
    raw_dashboard_exprs,
    variable_exprs,
)

from rotator.config import Settings

DATASOURCE = "${datasource}"


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    return load_dashboard(DASHBOARD)


def variables(dashboard: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {v["name"]: v for v in dashboard["templating"]["list"]}


def test_portable_dashboard(dashboard: dict[str, Any]) -> None:
    assert "__inputs" not in dashboard
    assert "__requires" not in dashboard
    assert dashboard["uid"]
    assert dashboard["title"]
    assert 36 <= dashboard["schemaVersion"] <= 41
    assert dashboard.get("id") is None


def test_datasource_variable(dashboard: dict[str, Any]) -> None:
    ds = variables(dashboard)["datasource"]
    assert ds["type"] == "datasource"
    assert ds["query"] == "prometheus"


def test_account_and_user_variables(dashboard: dict[str, Any]) -> None:
    vs = variables(dashboard)
    for name in ("account", "user"):
        v = vs[name]
        assert v["type"] == "query"
        assert v["datasource"] == {"type": "prometheus", "uid": DATASOURCE}
        query = v["query"]["query"] if isinstance(v["query"], dict) else v["query"]
        assert query.startswith("label_values(rotator_access_key_created_timestamp_seconds")
        assert query.rstrip().endswith(f"{name})")
        assert v.get("includeAll") is True
        assert v.get("multi") is True


def test_every_panel_and_target_uses_the_datasource_variable(dashboard: dict[str, Any]) -> None:
    panels = list(iter_panels(dashboard["panels"]))
    queried = [p for p in panels if p.get("type") != "row"]
    assert len(queried) >= 10
    for panel in queried:
        assert panel.get("datasource") == {"type": "prometheus", "uid": DATASOURCE}, panel["title"]
        assert panel.get("targets"), panel["title"]
        for target in panel["targets"]:
            assert target.get("datasource") == {"type": "prometheus", "uid": DATASOURCE}, panel["title"]
            assert target.get("expr"), panel["title"]


def test_panel_ids_unique(dashboard: dict[str, Any]) -> None:
    ids = [p["id"] for p in iter_panels(dashboard["panels"])]
    assert len(ids) == len(set(ids))


def test_exprs_use_only_spec_metrics() -> None:
    for expr in dashboard_exprs() + variable_exprs():
        names = metric_names(expr)
        assert names, expr
        assert names <= ALLOWED_SERIES, f"{expr}: {names - ALLOWED_SERIES}"


def test_required_panels_are_present() -> None:
    exprs = "\n".join(raw_dashboard_exprs())
    for needle in (
        "time() - rotator_access_key_created_timestamp_seconds",
        "rotator_next_action_timestamp_seconds",
        "increase(rotator_actions_total",
        "histogram_quantile",
        'rate(rotator_aws_api_calls_total{instance=~"$instance"}[$__rate_interval])',
        "rotator_last_sweep_success_timestamp_seconds",
        "rotator_managed_users",
        "rotator_leader",
        "rotator_build_info",
        # Issue 15: held keys with their last use (keys, not hold events), dry run, no leader, lease errors,
        # problems, AWS errors apart from throttles, day-long sweep quantiles, ages against max_key_age.
        "rotator_held_keys",
        "* 1000 and on (account, user, key_id) rotator_key_held",
        "max(rotator_dry_run",
        "sum(rotator_leader",
        "rotator_lease_errors_total",
        'rotator_problems{instance=~"$instance", account=~"$account", kind="user"}',
        'outcome="error"',
        "increase(rotator_sweep_duration_seconds_bucket",
        "$max_key_age_days * 86400",
        "rotator_quarantined_users",  # issue 14: exposed keys
        "rotator_notifications_total",
    ):
        assert needle in exprs, needle


def test_substituted_exprs_are_valid_promql(tmp_path: Path) -> None:
    # promtool parses every recording rule's expr: a cheap PromQL syntax check without a server.
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("promtool not found: install the Debian package 'prometheus'")
    exprs = dashboard_exprs() + variable_exprs()
    rules = [{"record": f"dashboard:query_{i}", "expr": expr} for i, expr in enumerate(exprs)]
    path = tmp_path / "dashboard-rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}), encoding="utf-8")
    result = subprocess.run(
        [promtool, "check", "rules", str(path)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


# -- issue 15: variables that filter every panel; thresholds that follow max_key_age; no hold-event counts -------

#: Label sets of the metrics the dashboard selects (what a variable can filter them by).
ACCOUNT_LABELLED = {
    "rotator_access_key_created_timestamp_seconds",
    "rotator_access_key_last_used_timestamp_seconds",
    "rotator_next_action_timestamp_seconds",
    "rotator_managed_users",
    "rotator_held_keys",
    "rotator_key_held",
    "rotator_problems",
    "rotator_unproven_keys",
    "rotator_quarantined_users",
}
USER_LABELLED = {
    "rotator_access_key_created_timestamp_seconds",
    "rotator_access_key_last_used_timestamp_seconds",
    "rotator_next_action_timestamp_seconds",
    "rotator_key_held",
}
_SELECTOR = re.compile(r"\b(rotator_[a-z_]+|up)\b(?!\s*\()(\{[^}]*\})?")


def test_every_selector_is_filtered_by_the_variables_its_labels_allow() -> None:
    seen = 0
    for expr in raw_dashboard_exprs():
        for match in _SELECTOR.finditer(expr):
            name, matchers = match.group(1), match.group(2) or ""
            base = re.sub(r"_(bucket|sum|count)$", "", name)
            seen += 1
            assert 'instance=~"$instance"' in matchers, f"{expr}: {name} ignores $instance"
            if base in ACCOUNT_LABELLED:
                assert 'account=~"$account"' in matchers, f"{expr}: {name} ignores $account"
            if base in USER_LABELLED and "kind=" not in matchers:
                assert 'user=~"$user"' in matchers, f"{expr}: {name} ignores $user"
    assert seen > 30


def test_age_thresholds_follow_max_key_age(dashboard: dict[str, Any]) -> None:
    """Ages are shown as a share of max_key_age (a variable defaulting to the configuration's default)."""
    variable = variables(dashboard)["max_key_age_days"]
    assert variable["type"] == "textbox"
    assert float(variable["query"]) * 86400 == Settings().policy.max_key_age.total_seconds()
    age_panels = [
        p
        for p in iter_panels(dashboard["panels"])
        for t in p.get("targets", [])
        if "time() - rotator_access_key_created_timestamp_seconds" in t.get("expr", "")
    ]
    assert age_panels
    for panel in age_panels:
        assert all("/ ($max_key_age_days * 86400)" in t["expr"] for t in panel["targets"]), panel["title"]
        steps = panel.get("fieldConfig", {}).get("defaults", {}).get("thresholds", {}).get("steps")
        if steps:
            assert [s["value"] for s in steps][-1] == 100, panel["title"]  # red past 100% of max_key_age


def test_held_keys_are_counted_as_keys_not_hold_events() -> None:
    for expr in raw_dashboard_exprs():
        assert 'result="held"' not in expr, expr  # one hold event per key per sweep: not a count of keys


def test_sweep_quantiles_span_a_day_of_hourly_sweeps() -> None:
    quantiles = [e for e in raw_dashboard_exprs() if "rotator_sweep_duration_seconds" in e]
    assert quantiles
    for expr in quantiles:
        assert "[1d]" in expr and "$__rate_interval" not in expr, expr
