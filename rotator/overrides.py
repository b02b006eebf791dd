"""Environment overrides into configuration data; pydantic's errors out as one-line :class:`ConfigError` messages.

Every key can be overridden from the environment as ``ROTATOR_<SECTION>__<KEY>``: a double underscore
separates levels (``ROTATOR_SELECTION__TAG__VALUE``), names are case-insensitive and map to lower-case
keys (so ``ROTATOR_SECRETS__TAGS__TEAM`` sets the secret tag ``team``), and values are read as YAML
scalars or flow collections (``true``, ``5``, ``[a, b]``). Fields that hold text take the value verbatim
(so a cron expression or an ``arn:...`` needs no quoting), and list-of-text fields also accept
``a,b,c``. An override (a name with ``__``, or a top-level key such as ``ROTATOR_ACCOUNTS``) that names no
known key is an error; any other ``ROTATOR_*`` name (``ROTATOR_HOME``) is not ours and is ignored.

The settings model is an argument (the root of the key paths), so this module does not import
:mod:`rotator.config`, which calls it from :func:`~rotator.config.load_settings`.
"""

from __future__ import annotations

import enum
import types
import typing
from collections.abc import Collection, Mapping, Sequence
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo

from rotator.durations import _shorten
from rotator.errors import ConfigError

__all__ = ["ENV_PREFIX"]

ENV_PREFIX = "ROTATOR_"


# --------------------------------------------------------------------------------------------- model walking


def _strip_optional(annotation: Any) -> tuple[Any, bool]:
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        members = [arg for arg in typing.get_args(annotation) if arg is not type(None)]
        if len(members) == 1:
            return members[0], True
    return annotation, False


def _model_of(annotation: Any) -> type[BaseModel] | None:
    inner, _ = _strip_optional(annotation)
    if isinstance(inner, type) and issubclass(inner, BaseModel):
        return inner
    return None


# --------------------------------------------------------------------------------------------- messages


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _describe_type(value: object) -> str:
    if isinstance(value, list):
        return "a list"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    return type(value).__name__


# --------------------------------------------------------------------------------------------- overrides


class _Target(enum.Enum):
    SECTION = "section"  # a mapping (or null for optional ones): YAML
    TEXT = "text"  # verbatim
    OPTIONAL_TEXT = "optional text"  # verbatim; empty/null/~ = null
    TEXT_LIST = "text list"  # YAML flow list, or comma-separated
    VALUE = "value"  # YAML scalar


_NULL_WORDS = frozenset({"", "~", "null", "none"})


def _seed(info: FieldInfo) -> dict[str, Any]:
    """Starting value for a section an override reaches into when the file does not set it."""
    default = info.get_default(call_default_factory=True)
    # A non-null default *model* of an optional section (selection.tag) is kept, so that overriding one of
    # its keys changes only that key. Required sections start empty and get their defaults from the model.
    if isinstance(default, BaseModel) and _strip_optional(info.annotation)[1]:
        seeded: dict[str, Any] = default.model_dump()
        return seeded
    return {}


def _resolve_override(root: type[BaseModel], parts: list[str], variable: str) -> tuple[_Target, list[dict[str, Any]]]:
    """What kind of value ``parts`` names in the ``root`` model, and the seeds for each intermediate level."""
    dotted = ".".join(parts)
    unknown = ConfigError(f"{variable}: unknown key {dotted}")
    model: type[BaseModel] | None = root
    in_mapping = False
    seeds: list[dict[str, Any]] = []
    for index, part in enumerate(parts):
        last = index == len(parts) - 1
        if in_mapping:
            if not last:
                raise unknown
            return _Target.TEXT, seeds
        assert model is not None
        info = model.model_fields.get(part)
        if info is None:
            raise unknown
        inner, optional = _strip_optional(info.annotation)
        submodel = _model_of(info.annotation)
        if submodel is not None or typing.get_origin(inner) is dict:
            if last:
                return _Target.SECTION, seeds
            seeds.append(_seed(info))
            model, in_mapping = submodel, submodel is None
            continue
        if not last:
            raise unknown
        if inner is str:
            return (_Target.OPTIONAL_TEXT if optional else _Target.TEXT), seeds
        if typing.get_origin(inner) is tuple and typing.get_args(inner)[0] is str:
            return _Target.TEXT_LIST, seeds
        return _Target.VALUE, seeds
    raise unknown


def _parse_yaml_value(raw: str, variable: str) -> Any:
    try:
        return yaml.safe_load(raw)
    except yaml.YAMLError as exc:
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(_one_line(f"{variable}: invalid value {_shorten(raw)!r}: {problem}")) from None


def _override_value(target: _Target, raw: str, variable: str) -> Any:
    if target is _Target.TEXT:
        return raw
    if target is _Target.OPTIONAL_TEXT:
        return None if raw.strip().lower() in _NULL_WORDS else raw
    if target is _Target.TEXT_LIST:
        if raw.strip().startswith("["):
            return _parse_yaml_value(raw, variable)
        return [item.strip() for item in raw.split(",") if item.strip()]
    return _parse_yaml_value(raw, variable)


#: Keys of which a configuration sets exactly one: overriding one by environment drops the file's other
#: (``ROTATOR_SCHEDULE__CRON`` replaces a file's ``schedule.interval``, and the other way round).
_ONE_OF: Mapping[tuple[str, ...], tuple[str, ...]] = {
    ("schedule", "cron"): ("schedule", "interval"),
    ("schedule", "interval"): ("schedule", "cron"),
}


def _apply_env_overrides(
    data: dict[str, Any],
    env: Mapping[str, str],
    root: type[BaseModel],
    *,
    reserved: Collection[str] = frozenset(),
) -> dict[tuple[str, ...], str]:
    """Write every ``ROTATOR_*`` override of a ``root`` key into ``data``; returns key path -> variable name.

    ``reserved`` names (upper case) are ``ROTATOR_*`` variables that are not overrides, such as ``ROTATOR_CONFIG``.
    """
    overrides: dict[tuple[str, ...], str] = {}
    for variable in sorted(env):
        # Names are case-insensitive, prefix included: a lower-case override must not be silently ignored.
        if not variable.upper().startswith(ENV_PREFIX) or variable.upper() in reserved:
            continue
        parts = variable[len(ENV_PREFIX) :].lower().split("__")
        if len(parts) == 1 and parts[0] not in root.model_fields:
            # Not ROTATOR_<SECTION>__<KEY> nor a top-level key (ROTATOR_ACCOUNTS): some wrapper's own
            # variable (ROTATOR_HOME, ROTATOR_VERSION), which must not make every command fail.
            continue
        if any(not part for part in parts):
            raise ConfigError(f"{variable}: malformed override name (use ROTATOR_<SECTION>__<KEY>)")
        path = tuple(parts)
        for other_path, other in overrides.items():
            shorter = min(len(path), len(other_path))
            if path[:shorter] == other_path[:shorter]:
                raise ConfigError(f"{variable}: conflicts with {other} (both set {'.'.join(path[:shorter])})")
        overrides[path] = variable

    for path, variable in overrides.items():
        target, seeds = _resolve_override(root, list(path), variable)
        node = data
        for depth, (part, seed) in enumerate(zip(path[:-1], seeds, strict=True)):
            child = node.get(part)
            if child is None:
                child = node[part] = seed
            elif not isinstance(child, dict):
                where = ".".join(path[: depth + 1])
                raise ConfigError(f"{variable}: cannot override inside {where}: the file sets it to a non-mapping")
            node = child
        node[path[-1]] = _override_value(target, env[variable], variable)
        exclusive = _ONE_OF.get(path)
        if exclusive is not None and exclusive not in overrides:
            node.pop(exclusive[-1], None)
    return overrides


# --------------------------------------------------------------------------------------------- errors


def _format_loc(loc: Sequence[int | str]) -> str:
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else part
    return text or "config"


#: One-line problems for pydantic error types; ``{got}`` is the offending value, the rest come from its ctx.
_PROBLEMS: Mapping[str, str] = {
    "extra_forbidden": "unknown key",
    "missing": "required key is missing",
    "model_type": "must be a mapping",
    "model_attributes_type": "must be a mapping",
    "dict_type": "must be a mapping",
    "string_type": "must be a string{got}",
    "int_type": "must be an integer{got}",
    "int_parsing": "must be an integer{got}",
    "int_from_float": "must be an integer{got}",
    "float_type": "must be a number{got}",
    "float_parsing": "must be a number{got}",
    "finite_number": "must be a finite number{got}",
    "bool_type": "must be true or false{got}",
    "bool_parsing": "must be true or false{got}",
    "list_type": "must be a list{got}",
    "tuple_type": "must be a list{got}",
    "literal_error": "must be one of {expected}{got}",
    "enum": "must be one of {expected}{got}",
    "greater_than": "must be greater than {gt}{got}",
    "greater_than_equal": "must be at least {ge}{got}",
    "less_than": "must be less than {lt}{got}",
    "less_than_equal": "must be at most {le}{got}",
    "string_too_short": "must be at least {min_length} character(s) long{got}",
    "string_too_long": "must be at most {max_length} characters long",
}


def _describe_error(error: Mapping[str, Any]) -> tuple[tuple[int | str, ...], str]:
    """Key path and a one-line problem for one pydantic error."""
    loc: tuple[int | str, ...] = tuple(error.get("loc", ()))
    kind = str(error.get("type", ""))
    ctx: dict[str, Any] = dict(error.get("ctx") or {})
    if loc and loc[-1] == "[key]":
        # A mapping key of the wrong type: pydantic reports it as (..., key, "[key]").
        return loc[:-2], f"key {_shorten(repr(loc[-2]))} must be a string"
    if kind == "value_error" and "error" in ctx:
        return loc, str(ctx["error"])
    if kind == "invalid_key" and loc:
        return loc[:-1], f"key {_shorten(repr(loc[-1]))} must be a string"
    # Bounds of float fields arrive as 0.0; operators wrote 0.
    ctx = {key: int(bound) if isinstance(bound, float) and bound.is_integer() else bound for key, bound in ctx.items()}
    value = error.get("input")
    scalar = value is None or isinstance(value, str | int | float | bool)
    ctx["got"] = f", got {_shorten(repr(value))}" if scalar else f", got {_describe_type(value)}"
    template = _PROBLEMS.get(kind)
    if template is None:
        return loc, str(error.get("msg", "invalid value"))
    try:
        return loc, template.format_map(ctx)
    except (KeyError, ValueError):
        return loc, str(error.get("msg", "invalid value"))


def _translate(exc: ValidationError, overrides: Mapping[tuple[str, ...], str]) -> ConfigError:
    loc, problem = _describe_error(exc.errors(include_url=False)[0])
    names = tuple(str(part) for part in loc)
    # Name the variable when the offending value came from (or was reached by) an override.
    sources = [
        variable
        for path, variable in sorted(overrides.items())
        if names[: len(path)] == path or path[: len(names)] == names
    ]
    suffix = f" (from {sources[0]})" if sources else ""
    return ConfigError(_one_line(f"{_format_loc(loc)}: {problem}{suffix}"))
