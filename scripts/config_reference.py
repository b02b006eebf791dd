"""The README's configuration reference: a Markdown table rendered from the settings model.

``scripts/update-readme`` writes it into README.md and ``tests/unit/test_readme.py`` checks that it is there;
only the docs need it, so it lives beside them rather than in the package. Importable as ``config_reference``
with ``scripts/`` on ``sys.path``.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

from pydantic import BaseModel

from rotator.config import Settings
from rotator.durations import format_duration
from rotator.overrides import _model_of, _strip_optional

__all__ = ["render_reference_markdown"]


def _render_value(value: Any) -> str:
    """A default as it would be written in the YAML file (flow style)."""
    if isinstance(value, timedelta):
        value = format_duration(value)
    elif isinstance(value, BaseModel):
        value = value.model_dump(mode="json")
    elif isinstance(value, enum.Enum):
        value = value.value
    if isinstance(value, Mapping):
        text = "{" + ", ".join(f"{key}: {_render_value(item)}" for key, item in value.items()) + "}"
    elif isinstance(value, list | tuple):
        text = "[" + ", ".join(_render_value(item) for item in value) + "]"
    elif isinstance(value, str):
        text = value or '""'
    elif isinstance(value, float) and value.is_integer():
        text = str(int(value))
    else:
        text = json.dumps(value)  # null, true/false, numbers
    return text


def _reference_rows(model: type[BaseModel], prefix: str, defaults: Any) -> list[tuple[str, str, str]]:
    rows: list[tuple[str, str, str]] = []
    for name, info in model.model_fields.items():
        key = f"{prefix}{name}"
        if isinstance(defaults, Mapping) and name in defaults:
            default = _render_value(defaults[name])
            child_defaults = defaults[name]
        elif info.is_required():
            default, child_defaults = "(required)", None
        else:
            default_value = info.get_default(call_default_factory=True)
            default, child_defaults = _render_value(default_value), None
        submodel = _model_of(info.annotation)
        optional = _strip_optional(info.annotation)[1]
        if submodel is None or optional:
            rows.append((key, default, info.description or ""))
        if submodel is not None:
            rows.extend(_reference_rows(submodel, f"{key}.", child_defaults))
    return rows


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def render_reference_markdown() -> str:
    """The configuration reference as a Markdown table (key path, default, description); deterministic."""
    lines = ["| Key | Default | Description |", "|---|---|---|"]
    for key, default, description in _reference_rows(Settings, "", Settings().effective()):
        lines.append(f"| `{key}` | `{_cell(default)}` | {_cell(description)} |")
    return "\n".join(lines) + "\n"
