"""Extract runnable PromQL from the Grafana dashboard and the Prometheus alert rules.

Used by the structural tests here and by tests that run every query against a live Prometheus:
``dashboard_exprs(path)`` / ``alert_exprs(path)`` return plain PromQL with Grafana's variables substituted.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
DASHBOARD = REPO / "deploy" / "grafana" / "rotator-dashboard.json"
ALERTS = REPO / "deploy" / "prometheus" / "alerts.yml"

#: SPEC.md "Metrics": the metric names the rotator exports.
SPEC_METRICS: frozenset[str] = frozenset(
    {
        "rotator_access_key_created_timestamp_seconds",
        "rotator_access_key_last_used_timestamp_seconds",
        "rotator_next_action_timestamp_seconds",
        "rotator_actions_total",
        "rotator_sweeps_total",
        "rotator_sweep_duration_seconds",
        "rotator_last_sweep_success_timestamp_seconds",
        "rotator_managed_users",
        "rotator_aws_api_calls_total",
        "rotator_leader",
        "rotator_build_info",
        # Added with the response to unprovable key ownership (issue 9); README's metrics table lists it.
        "rotator_unproven_keys",
        # Added with "who still uses a held key" (issue 13): keys the guard holds now, per account.
        "rotator_held_keys",
        # Added with operator trust (issue 15): dry-run state, per-user/per-account problems, lease errors.
        "rotator_dry_run",
        "rotator_problems",
        "rotator_lease_errors_total",
        "rotator_key_held",
        # Added with the response to exposed keys and notifications (issue 14).
        "rotator_quarantined_users",
        "rotator_notifications_total",
        # Added with replicas you can trust (issue 16): AWS's clock against the host's, per-account truth.
        "rotator_clock_skew_seconds",
        "rotator_account_last_success_timestamp_seconds",
    }
)
SPEC_HISTOGRAMS: frozenset[str] = frozenset({"rotator_sweep_duration_seconds"})

#: Series names a query may select: SPEC's metrics, the series of its histograms, and Prometheus' own ``up``.
ALLOWED_SERIES: frozenset[str] = (
    SPEC_METRICS | {f"{h}{suffix}" for h in SPEC_HISTOGRAMS for suffix in ("_bucket", "_sum", "_count")} | {"up"}
)

#: Values for Grafana's built-in and the dashboard's variables. ``$account``/``$user`` are used with ``=~``.
DEFAULT_SUBSTITUTIONS: Mapping[str, str] = {
    "__rate_interval": "1m",
    "__interval": "30s",
    "__interval_ms": "30000",
    "__range": "1h",
    "__range_s": "3600",
    "__range_ms": "3600000",
    "account": ".*",
    "user": ".*",
    "instance": ".*",
    "max_key_age_days": "90",
}

_VARIABLE = re.compile(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)|\[\[(\w+)\]\]")


def substitute(expr: str, substitutions: Mapping[str, str] | None = None) -> str:
    """Replace ``$var``, ``${var}``, ``${var:fmt}`` and ``[[var]]``; an unknown variable raises KeyError."""
    values = {**DEFAULT_SUBSTITUTIONS, **(substitutions or {})}

    def replace(match: re.Match[str]) -> str:
        name = next(group for group in match.groups() if group)
        if name not in values:
            raise KeyError(f"no substitution for Grafana variable ${name} in {expr!r}")
        return values[name]

    return _VARIABLE.sub(replace, expr)


def iter_panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """Every panel, including the ones nested in (collapsed) rows."""
    for panel in panels:
        yield panel
        yield from iter_panels(panel.get("panels", []))


def load_dashboard(path: Path = DASHBOARD) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(Path(path).read_text(encoding="utf-8"))
    return data


def raw_dashboard_exprs(path: Path = DASHBOARD) -> list[str]:
    """Every panel target's ``expr``, as written (with Grafana variables)."""
    return [
        target["expr"]
        for panel in iter_panels(load_dashboard(path).get("panels", []))
        for target in panel.get("targets", [])
        if target.get("expr")
    ]


def dashboard_exprs(path: Path = DASHBOARD, substitutions: Mapping[str, str] | None = None) -> list[str]:
    """Every panel target's ``expr`` as runnable PromQL."""
    return [substitute(expr, substitutions) for expr in raw_dashboard_exprs(path)]


_LABEL_VALUES = re.compile(r"^\s*label_values\(\s*(?:(?P<selector>.+),\s*)?(?P<label>\w+)\s*\)\s*$", re.DOTALL)


def variable_exprs(path: Path = DASHBOARD, substitutions: Mapping[str, str] | None = None) -> list[str]:
    """The ``label_values(...)`` queries of the query variables, rewritten as equivalent runnable PromQL."""
    exprs = []
    for variable in load_dashboard(path).get("templating", {}).get("list", []):
        if variable.get("type") != "query":
            continue
        query = variable.get("query")
        text = query.get("query", "") if isinstance(query, dict) else str(query or "")
        match = _LABEL_VALUES.match(text)
        if match is None:
            raise ValueError(f"variable {variable.get('name')!r}: unsupported query {text!r}")
        label = match["label"]
        selector = match["selector"] or f'{{{label}!=""}}'
        exprs.append(substitute(f"group by ({label}) ({selector})", substitutions))
    return exprs


def alert_exprs(path: Path = ALERTS) -> list[str]:
    """Every rule's ``expr`` (alerting and recording rules) from a Prometheus rule file."""
    data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    return [str(rule["expr"]) for group in data.get("groups", []) for rule in group.get("rules", [])]


_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_IDENTIFIER = re.compile(r"(?<![\w.:])([A-Za-z_:][\w:]*)(\s*\()?")
_KEYWORDS = frozenset(
    {"and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring", "group_left", "group_right"}
    | {"inf", "nan", "start", "end"}
)


def metric_names(expr: str) -> set[str]:
    """Metric (series) names a PromQL expression selects: a small lexer for hand-written queries."""
    text = _STRING.sub(" ", expr)  # label values, regexes
    text = re.sub(r"\{[^}]*\}", " ", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", " ", text)  # range/subquery durations
    text = _GROUPING.sub(" ", text)  # label lists of by/without/on/ignoring/group_*
    names = set()
    for match in _IDENTIFIER.finditer(text):
        name, call = match.groups()
        if call or name.lower() in _KEYWORDS:
            continue  # a function or aggregation, or a keyword
        names.add(name)
    return names
