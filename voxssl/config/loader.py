"""Typed recipes: defaults (dataclass fields), then the YAML recipe, then ``--set`` overrides.

Every key is validated against the dataclass schema: an unknown key, a wrong type or a bad
override gives one :class:`~voxssl.errors.ConfigError` that names the key (as a dotted path)
and the recipe file.
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from pathlib import Path
from typing import (
    TYPE_CHECKING,
    Any,
    Literal,
    TypeVar,
    Union,
    get_args,
    get_origin,
    get_type_hints,
)

import yaml

from voxssl.errors import ConfigError

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

T = TypeVar("T", bound="DataclassInstance")

_NONE_TYPE = type(None)

#: ``1.5,1.5,2``: comma-separated numbers, read as a list in ``--set`` values.
_NUMBER_LIST = re.compile(
    r"[-+]?\d*\.?\d+(?:[eE][-+]?\d+)?(?:\s*,\s*[-+]?\d*\.?\d+(?:[eE][-+]?\d+)?)+"
)


def read_yaml(path: Path) -> dict[str, Any]:
    """Read a YAML mapping, with errors that name the file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"recipe not found: {path}")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"{path}: the recipe must be a mapping of keys, got {type(data).__name__}"
        )
    return data


def parse_override(text: str) -> tuple[list[str], Any]:
    """Parse ``a.b.c=value``; the value is read as YAML (``3``, ``true``, ``[1, 2]``, ``null``)."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like key.path=value")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"override {text!r} has an empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    if isinstance(value, str) and _NUMBER_LIST.fullmatch(value.strip()):
        # X,Y,Z as on the command line (--shape 160,128,48): a list, like the YAML [160, 128, 48]
        value = [_number(v) for v in value.split(",")]
    return key.split("."), value


def _number(text: str) -> int | float:
    text = text.strip()
    try:
        return int(text)
    except ValueError:
        return float(text)


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Return a copy of ``data`` with every ``key.path=value`` override applied.

    List items are addressed by index (``data.sources.0.root=/x``).
    """
    import copy

    data = copy.deepcopy(data)
    for text in overrides:
        keys, value = parse_override(text)
        node: Any = data
        for depth, key in enumerate(keys[:-1]):
            if isinstance(node, list):
                node = node[_list_index(node, key, keys[: depth + 1], text)]
                continue
            if node.get(key) is None:
                node[key] = {}
            node = node[key]
            if not isinstance(node, (dict, list)):
                raise ConfigError(
                    f"override {text!r}: {'.'.join(keys[: depth + 1])} is not a section"
                )
        last = keys[-1]
        if isinstance(node, list):
            node[_list_index(node, last, keys, text)] = value
        else:
            node[last] = value
    return data


def _list_index(node: list, key: str, keys: list[str], text: str) -> int:
    if not key.isdigit() or int(key) >= len(node):
        raise ConfigError(
            f"override {text!r}: {'.'.join(keys)} is not an index of a list of {len(node)}"
        )
    return int(key)


def from_dict(cls: type[T], data: Any, *, where: str = "", source: str = "<recipe>") -> T:
    """Build dataclass ``cls`` from plain data, validating every key and type."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: {where or 'recipe'} must be a mapping, got {_describe(data)}")
    hints = get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        key = _join(where, unknown[0])
        raise ConfigError(
            f"{source}: unknown key '{key}' (allowed in {where or 'the recipe top level'}: "
            f"{', '.join(sorted(fields))})"
        )
    kwargs = {}
    for name, value in data.items():
        kwargs[name] = _convert(hints[name], value, _join(where, name), source)
    missing = [
        name
        for name, f in fields.items()
        if name not in kwargs
        and f.default is dataclasses.MISSING
        and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        raise ConfigError(f"{source}: missing required key '{_join(where, missing[0])}'")
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except (ValueError, TypeError) as err:
        raise ConfigError(f"{source}: {where or 'recipe'}: {err}") from None


def to_dict(obj: Any) -> Any:
    """Plain YAML-able data from a (nested) config dataclass."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    if isinstance(obj, Path):
        return str(obj)
    return obj


def _join(where: str, key: str) -> str:
    return f"{where}.{key}" if where else str(key)


def _describe(value: Any) -> str:
    return (
        f"{type(value).__name__} {value!r}"
        if not isinstance(value, (dict, list))
        else type(value).__name__
    )


def _convert(tp: Any, value: Any, key: str, source: str) -> Any:
    origin = get_origin(tp)
    args = get_args(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        if value is None and _NONE_TYPE in args:
            return None
        errors = []
        for arg in args:
            if arg is _NONE_TYPE:
                continue
            try:
                return _convert(arg, value, key, source)
            except ConfigError as err:
                errors.append(err)
        if len(errors) == 1:
            raise errors[0]
        raise ConfigError(f"{source}: '{key}' must be {_type_name(tp)}, got {_describe(value)}")
    if origin is Literal:
        if value not in args:
            raise ConfigError(
                f"{source}: '{key}' must be one of {', '.join(map(repr, args))}, got {value!r}"
            )
        return value
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return from_dict(tp, {} if value is None else value, where=key, source=source)
    if origin in (list, tuple) or tp in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{source}: '{key}' must be a list, got {_describe(value)}")
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                raise ConfigError(
                    f"{source}: '{key}' must have {len(args)} items, got {len(value)}"
                )
            return tuple(
                _convert(a, v, f"{key}.{i}", source)
                for i, (a, v) in enumerate(zip(args, value, strict=True))
            )
        item = args[0] if args else Any
        items = [_convert(item, v, f"{key}.{i}", source) for i, v in enumerate(value)]
        return tuple(items) if (origin is tuple or tp is tuple) else items
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{source}: '{key}' must be a mapping, got {_describe(value)}")
        kt, vt = args if args else (Any, Any)
        return {
            _convert(kt, k, f"{key}.{k}", source): _convert(vt, v, f"{key}.{k}", source)
            for k, v in value.items()
        }
    if tp is Path:
        if not isinstance(value, (str, Path)):
            raise ConfigError(f"{source}: '{key}' must be a path, got {_describe(value)}")
        return Path(value).expanduser()
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{source}: '{key}' must be true or false, got {_describe(value)}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{source}: '{key}' must be an integer, got {_describe(value)}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{source}: '{key}' must be a number, got {_describe(value)}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{source}: '{key}' must be a string, got {_describe(value)}")
        return value
    raise TypeError(f"config schema: unsupported type {tp!r} for {key}")


def _type_name(tp: Any) -> str:
    names = [getattr(a, "__name__", str(a)) for a in get_args(tp) if a is not _NONE_TYPE]
    return " or ".join(names)


__all__ = ["apply_overrides", "from_dict", "parse_override", "read_yaml", "to_dict"]
_ = typing  # keep the typing import for forward references resolved by get_type_hints
