"""Typed configuration: dataclasses filled from YAML files plus ``key=value`` overrides.

``load_config(TrainConfig, "configs/resgcn28_synthetic.yaml", ["optim.lr=5e-4", "epochs=2"])``
returns a ``TrainConfig``; nested dataclasses are addressed with dots. Values are parsed with
YAML rules and checked against the field's type, so a typo is an error naming the key, never a
silently ignored setting.
"""
from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, Sequence, TypeVar

import yaml

T = TypeVar("T")


def _coerce(tp: Any, value: Any, key: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(a, value, key)
            except ValueError as e:
                errors.append(str(e))
        raise ValueError(f"{key}: {value!r} does not fit {tp}")
    if origin is typing.Literal:
        if value not in args:
            raise ValueError(f"{key}: {value!r} is not one of {list(args)}")
        return value
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ValueError(f"{key}: expected a mapping, got {value!r}")
        return from_dict(tp, value, prefix=key + ".")
    if origin in (list, tuple, Sequence) or tp in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"{key}: expected a list, got {value!r}")
        inner = args[0] if args else Any
        items = [_coerce(inner, v, f"{key}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if (origin is tuple or tp is tuple) else items
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise ValueError(f"{key}: expected a mapping, got {value!r}")
        return dict(value)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ValueError(f"{key}: expected true/false, got {value!r}")
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise ValueError(f"{key}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            # YAML 1.1 reads '1e-3' as a string; accept it.
            try:
                return float(value)
            except (TypeError, ValueError):
                raise ValueError(f"{key}: expected a number, got {value!r}") from None
        return float(value)
    if tp is str:
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise ValueError(f"{key}: expected a string, got {value!r}")
        return str(value)
    return value


def check_choices(obj: Any, prefix: str = "") -> None:
    """Refuse, naming the key, any ``Literal`` field of dataclass ``obj`` (nested ones included) that
    holds a value outside its choices: the one check of enum-like settings, for configs built in
    code as well as from YAML (:func:`from_dict` checks those as it builds them)."""
    hints = typing.get_type_hints(type(obj))
    for f in dataclasses.fields(obj):
        value, tp = getattr(obj, f.name), hints.get(f.name)
        if typing.get_origin(tp) is typing.Literal and value not in typing.get_args(tp):
            raise ValueError(f"config {prefix}{f.name}={value!r}: must be one of {list(typing.get_args(tp))}")
        if dataclasses.is_dataclass(value):
            check_choices(value, f"{prefix}{f.name}.")


def from_dict(cls: type[T], d: dict[str, Any], prefix: str = "", what: str = "config key") -> T:
    """Build dataclass ``cls`` from a mapping, rejecting unknown keys (named as ``what``s)."""
    if not isinstance(d, dict):
        raise ValueError(f"expected a mapping of {what}s, got {d!r}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(d) - names)
    if unknown:
        raise ValueError(f"unknown {what}(s) {[prefix + u for u in unknown]}; "
                         f"known under '{prefix or '.'}': {sorted(names)}")
    kwargs = {k: _coerce(hints[k], v, prefix + k) for k, v in d.items()}
    return cls(**kwargs)


def to_dict(cfg: Any) -> dict[str, Any]:
    """Plain-data (YAML/JSON-safe) view of a config dataclass."""
    def conv(v: Any) -> Any:
        if dataclasses.is_dataclass(v):
            return {f.name: conv(getattr(v, f.name)) for f in dataclasses.fields(v)}
        if isinstance(v, (list, tuple)):
            return [conv(x) for x in v]
        if isinstance(v, dict):
            return {k: conv(x) for k, x in v.items()}
        return v
    return conv(cfg)


def apply_overrides(d: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """Apply ``a.b=value`` strings to a nested mapping (values parsed as YAML)."""
    d = dict(d)
    for item in overrides:
        if "=" not in item:
            raise ValueError(f"override {item!r} is not of the form key=value")
        key, raw = item.split("=", 1)
        key = key.strip()
        if not key:
            raise ValueError(f"override {item!r} has an empty key")
        value = yaml.safe_load(raw) if raw.strip() else ""
        node = d
        parts = key.split(".")
        for p in parts[:-1]:
            child = node.get(p)
            child = dict(child) if isinstance(child, dict) else {}
            node[p] = child
            node = child
        node[parts[-1]] = value
    return d


def load_config(cls: type[T], source: str | Path | dict[str, Any] | None = None,
                overrides: Sequence[str] = (), what: str = "config key") -> T:
    """Load ``cls`` from a YAML path or mapping (or its defaults) and apply overrides; unknown keys
    are refused by name, as ``what``s."""
    if source is None:
        base: dict[str, Any] = to_dict(cls())
    elif isinstance(source, dict):
        base = source
    else:
        path = Path(source)
        try:
            base = yaml.safe_load(path.read_text()) or {}
        except OSError as e:
            raise ValueError(f"{path}: cannot read config: {e.strerror}") from None
        except UnicodeDecodeError as e:
            raise ValueError(f"{path}: not UTF-8 text (byte {e.object[e.start]:#04x} at offset {e.start})") from None
        except yaml.YAMLError as e:
            raise ValueError(f"{path}: invalid YAML: {e}") from None
        if not isinstance(base, dict):
            raise ValueError(f"{path}: a config file must hold a mapping at top level")
        base = _fill_defaults(cls, base)
    try:
        return from_dict(cls, apply_overrides(base, overrides), what=what)
    except ValueError as e:
        where = f"{source}: " if isinstance(source, (str, Path)) else ""
        raise ValueError(f"{where}{e}") from None


def _fill_defaults(cls: type, d: dict[str, Any]) -> dict[str, Any]:
    """Nested dataclass fields missing from a file keep their defaults when overridden."""
    out = dict(d)
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp) and isinstance(out.get(f.name), dict):
            out[f.name] = _fill_defaults(tp, out[f.name])
    return out


def save_config(cfg: Any, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))
