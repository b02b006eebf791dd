"""The configuration file: which one to read, and its YAML as plain data (no validation here).

Where the file comes from: ``--config PATH``, else ``$ROTATOR_CONFIG``, else ``/etc/rotator/config.yaml``.
Only the last one may be missing (the defaults then apply). Every problem is one
:class:`~rotator.errors.ConfigError` line naming the file; :mod:`rotator.config` validates the data.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from rotator.errors import ConfigError
from rotator.overrides import _describe_type, _one_line

__all__ = ["CONFIG_PATH_ENV", "DEFAULT_CONFIG_PATH", "NON_OVERRIDE_ENV", "resolve_config_path"]

DEFAULT_CONFIG_PATH = "/etc/rotator/config.yaml"
CONFIG_PATH_ENV = "ROTATOR_CONFIG"
#: ``ROTATOR_*`` variables that are not configuration overrides.
NON_OVERRIDE_ENV = frozenset({CONFIG_PATH_ENV})


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys: in a security config, last-one-wins is a trap."""


def _construct_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    seen: set[object] = set()
    for key_node, _ in node.value:
        if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == "tag:yaml.org,2002:merge":
            continue
        key = loader.construct_scalar(key_node)
        if key in seen:
            raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
        seen.add(key)
    return loader.construct_mapping(node)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def resolve_config_path(
    path: str | None = None,
    env: Mapping[str, str] | None = None,
    *,
    default_path: str = DEFAULT_CONFIG_PATH,
) -> tuple[Path, bool]:
    """Which file to read, and whether it was named explicitly (``--config`` or ``$ROTATOR_CONFIG``)."""
    environ = os.environ if env is None else env
    if path is not None:
        return Path(path), True
    from_env = environ.get(CONFIG_PATH_ENV, "")
    if from_env:
        return Path(from_env), True
    return Path(default_path), False


def _read_config_file(path: Path, *, explicit: bool) -> dict[str, Any]:
    where = f"config file {path}"
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        if not explicit:
            return {}
        raise ConfigError(f"{where}: not found") from None
    except IsADirectoryError:
        raise ConfigError(f"{where}: is a directory") from None
    except PermissionError:
        raise ConfigError(f"{where}: permission denied") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{where}: not UTF-8 text") from None
    except OSError as exc:
        raise ConfigError(f"{where}: cannot read ({exc.strerror or exc})") from None
    try:
        # The loader class is ours: a SafeLoader with one extra check.
        data = yaml.load(text, Loader=_StrictLoader)  # noqa: S506
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        position = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = exc.problem or exc.context or "syntax error"
        raise ConfigError(_one_line(f"{where}: invalid YAML{position}: {problem}")) from None
    except yaml.YAMLError as exc:
        raise ConfigError(_one_line(f"{where}: invalid YAML: {exc}")) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: the top level must be a mapping of sections, not {_describe_type(data)}")
    return data
