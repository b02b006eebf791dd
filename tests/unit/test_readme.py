"""README.md stays in step with the code: configuration reference, metrics, commands."""

from __future__ import annotations

import re
import sys
from pathlib import Path

from prometheus_client import CollectorRegistry

from rotator.cli import build_parser
from rotator.metrics import Metrics

# scripts/ is not a package: its modules import by name once it is on the path, as in scripts/update-readme.
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
from config_reference import render_reference_markdown

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()


def test_configuration_reference_is_generated_from_the_model() -> None:
    section = README.split("<!-- config-reference:start -->")[1].split("<!-- config-reference:end -->")[0]
    assert section.strip() == render_reference_markdown().strip(), "run scripts/update-readme"


def test_metrics_table_names_every_exported_metric_and_nothing_else() -> None:
    registry = CollectorRegistry()
    Metrics(registry)
    exported = {metric.name for metric in registry.collect()}
    # prometheus_client strips the _total suffix from counter family names.
    documented = {name.removesuffix("_total") for name in re.findall(r"^\| `(rotator_[a-z_]+)`", README, re.M)}
    assert documented == exported


def test_every_documented_command_exists() -> None:
    usage = README.split("## Command line")[1].split("```text")[1].split("```")[0]
    documented = set(re.findall(r"^  ([a-z-]+)\b", usage, re.M))
    parser = build_parser()
    commands = next(a for a in parser._actions if a.dest == "command").choices
    assert commands is not None
    assert documented == set(commands)


def test_the_first_screen_gives_the_two_commands() -> None:
    first_screen = "\n".join(README.splitlines()[:20])
    assert "scripts/sandbox" in first_screen and "scripts/test" in first_screen
    for script in ("scripts/sandbox", "scripts/test"):
        assert (Path(__file__).resolve().parents[2] / script).stat().st_mode & 0o111
