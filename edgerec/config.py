"""Typed configuration helpers.

Every workflow is configured by plain dataclasses that validate themselves in
``__post_init__``. This module turns nested dicts (a JSON file, the dict saved in a
checkpoint) and ``key.sub=value`` command-line overrides into those dataclasses,
refusing unknown keys and values of the wrong type with a message that names the
full dotted key.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from pathlib import Path
from typing import Any, Mapping, TypeVar

T = TypeVar("T")

__all__ = [
    "ConfigError",
    "config_from_dict",
    "config_to_dict",
    "config_diff",
    "apply_overrides",
    "load_config_file",
    "check",
]


class ConfigError(ValueError):
    """A configuration value or key is invalid. The message names the dotted key."""


def check(condition: bool, key: str, message: str) -> None:
    """Raise :class:`ConfigError` for ``key`` unless ``condition`` holds."""
    if not condition:
        raise ConfigError(f"{key}: {message}")


def config_to_dict(cfg: Any) -> dict[str, Any]:
    """Nested dict of plain Python values (tuples become lists, JSON-ready)."""
    if not dataclasses.is_dataclass(cfg):
        raise TypeError(f"expected a dataclass instance, got {type(cfg).__name__}")
    return json.loads(json.dumps(dataclasses.asdict(cfg)))


def config_diff(a: Mapping[str, Any], b: Mapping[str, Any], prefix: str = "", *,
                common_only: bool = False) -> list[str]:
    """Where two nested config dicts differ, as ``"dotted.key: a_value -> b_value"``.

    ``common_only`` compares only the keys both record (a config saved before a setting
    existed is not reported as differing in it); otherwise a key missing on one side
    compares as None.
    """
    out = []
    keys = set(a) & set(b) if common_only else set(a) | set(b)
    for k in sorted(keys):
        if isinstance(a.get(k), dict) and isinstance(b.get(k), dict):
            out += config_diff(a[k], b[k], f"{prefix}{k}.", common_only=common_only)
        elif a.get(k) != b.get(k):
            out.append(f"{prefix}{k}: {a.get(k)!r} -> {b.get(k)!r}")
    return out


def _is_optional(tp: Any) -> tuple[bool, Any]:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) != len(typing.get_args(tp)):
            return True, args[0] if len(args) == 1 else typing.Union[tuple(args)]
    return False, tp


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Convert ``value`` (JSON value or command-line string) to type ``tp``."""
    optional, inner = _is_optional(tp)
    if value is None or (isinstance(value, str) and value.lower() in ("none", "null") and optional):
        if optional:
            return None
        raise ConfigError(f"{key}: must not be null")
    tp = inner
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, Mapping):
            raise ConfigError(f"{key}: expected a mapping of settings, got {value!r}")
        return config_from_dict(tp, value, prefix=f"{key}.")
    if origin is typing.Literal:
        choices = typing.get_args(tp)
        if value not in choices:
            raise ConfigError(f"{key}: expected one of {list(choices)}, got {value!r}")
        return value
    if origin in (tuple, list):
        args = typing.get_args(tp)
        elem = args[0] if args else Any
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                try:
                    value = json.loads(text)
                except json.JSONDecodeError as exc:
                    raise ConfigError(f"{key}: cannot parse {value!r} as a list: {exc}") from None
            else:
                value = [v for v in text.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        items = [_coerce(v, elem, f"{key}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "1", "yes", "on"):
            return True
        if isinstance(value, str) and value.lower() in ("false", "0", "no", "off"):
            return False
        raise ConfigError(f"{key}: expected true or false, got {value!r}")
    if tp is int:
        if isinstance(value, bool):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value)
            except ValueError:
                pass
        raise ConfigError(f"{key}: expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, bool):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"{key}: expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"{key}: expected a string, got {value!r}")
    if tp is Any:
        return value
    raise ConfigError(f"{key}: unsupported config type {tp!r}")


def config_from_dict(cls: type[T], data: Mapping[str, Any], *, prefix: str = "") -> T:
    """Build dataclass ``cls`` from ``data``; unknown keys are errors.

    Missing keys take the dataclass defaults, so a config saved by an older version
    still loads as long as it names no key that no longer exists.
    """
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"{cls!r} is not a dataclass")
    if not isinstance(data, Mapping):
        raise ConfigError(f"{prefix.rstrip('.') or 'config'}: expected a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(
            f"unknown config key(s) {[prefix + k for k in unknown]}; "
            f"valid keys here: {sorted(prefix + k for k in fields)}"
        )
    kwargs = {name: _coerce(value, hints[name], prefix + name) for name, value in data.items()}
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{prefix.rstrip('.') or cls.__name__}: {exc}") from None


def apply_overrides(cfg: T, overrides: list[str] | tuple[str, ...]) -> T:
    """Return a copy of ``cfg`` with ``key.sub=value`` overrides applied and re-validated."""
    data = dataclasses.asdict(cfg)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r}: expected KEY=VALUE, e.g. train.lr=0.001")
        key, value = item.split("=", 1)
        key = key.strip()
        node: dict[str, Any] = data
        parts = key.split(".")
        for depth, part in enumerate(parts[:-1]):
            if part not in node or not isinstance(node[part], dict):
                raise ConfigError(f"override {item!r}: unknown config section {'.'.join(parts[: depth + 1])!r}")
            node = node[part]
        if parts[-1] not in node:
            valid = sorted(k for k in node)
            raise ConfigError(f"override {item!r}: unknown config key {key!r}; valid keys here: {valid}")
        if isinstance(node[parts[-1]], dict):
            try:
                node[parts[-1]] = json.loads(value)
            except json.JSONDecodeError:
                raise ConfigError(f"override {item!r}: {key!r} is a section; set its keys one by one") from None
        else:
            node[parts[-1]] = value
    return config_from_dict(type(cfg), data)


def load_config_file(cls: type[T], path: str | Path) -> T:
    """Load a JSON config file into ``cls``; errors name the file."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}:{exc.lineno}: invalid JSON: {exc.msg}") from None
    try:
        return config_from_dict(cls, data)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
