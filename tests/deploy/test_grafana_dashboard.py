"""deploy/grafana/rotator-dashboard.json: portable (datasource variable) and built on SPEC's metric names."""

from __future__ import annotations

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
        "increase(rotator_actions_total[$__rate_interval])",
        'result="held"',
        "histogram_quantile",
        "rate(rotator_aws_api_calls_total[$__rate_interval])",
        "rotator_last_sweep_success_timestamp_seconds",
        "rotator_managed_users",
        "rotator_leader",
        "rotator_build_info",
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
