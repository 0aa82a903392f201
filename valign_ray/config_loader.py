"""Strict YAML -> frozen pydantic dataclasses: unknown keys, wrong types, values out of range.

A config file is the difference from the defaults in ``valign_ray/config.py``. Every dotted key
can be overridden on the command line with ``--set a.b=value`` (the value is parsed as YAML).

The config classes are ``pydantic.dataclasses.dataclass(frozen=True, config=STRICT)``: real
dataclasses (``dataclasses.replace``, ``fields`` and pickling work) that validate on every
construction, so a range such as ``Field(gt=0)`` is declared once, next to its field. Pydantic's
own strict mode cannot be switched on for a whole class (it refuses a mapping for a nested
config and a YAML list for a tuple), and its lax mode takes ``True`` for ``1`` and ``"yes"`` for
``true``; so scalar fields use the strict aliases below. This module turns pydantic's errors
into one line that names the dotted key, the value and what is allowed.
"""

from __future__ import annotations

import dataclasses
import functools
import re
import types
import typing
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar, get_args, get_origin

import annotated_types as at
import yaml
from pydantic import BeforeValidator, ConfigDict, Strict, TypeAdapter, ValidationError
from pydantic.fields import FieldInfo

T = TypeVar("T")
_FLOAT_RE = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")

STRICT = ConfigDict(extra="forbid")  # every config class: unknown keys are errors


def _yaml_float(value: Any) -> Any:
    if isinstance(value, str) and _FLOAT_RE.fullmatch(value.strip()):
        return float(value)  # PyYAML reads "3e-4" (no dot) as a string
    return value


def _exact_int(value: Any) -> Any:
    if type(value) is not int:  # Literal[0, 1] alone would take True for 1 and 1.0 for 1
        raise ValueError("not an integer")
    return value


Int = Annotated[int, Strict()]  # not a bool, not 1.0
Float = Annotated[float, Strict(), BeforeValidator(_yaml_float)]  # an int is fine, a bool is not
Bool = Annotated[bool, Strict()]  # only true or false, not 1 or "yes"
Str = Annotated[str, Strict()]
ZeroStage = Annotated[Literal[0, 1, 2, 3], BeforeValidator(_exact_int)]


class ConfigError(ValueError):
    """A config key or value is wrong; the message names the key and the valid choices."""


@functools.cache
def _adapter(cls: type) -> TypeAdapter:
    return TypeAdapter(cls)


def from_dict(cls: type[T], data: Any) -> T:
    """Build config dataclass ``cls`` from a mapping, checking every key, type and range."""
    try:
        return _adapter(cls).validate_python({} if data is None else data)
    except ValidationError as exc:
        raise ConfigError(_message(cls, exc)) from None


_TYPE_MESSAGES = {
    "float_type": "expected a number",
    "float_parsing": "expected a number",
    "int_type": "expected an integer",
    "bool_type": "expected true or false",
    "string_type": "expected a string",
    "tuple_type": "expected a list",
    "list_type": "expected a list",
    "dict_type": "expected a mapping",
    "dataclass_type": "expected a mapping",
    "dataclass_args_type": "expected a mapping",
}
_RANGE_ERRORS = {"greater_than", "greater_than_equal", "less_than", "less_than_equal"}


def _message(cls: type, exc: ValidationError) -> str:
    errors = exc.errors()
    key, info, tp, parent = _locate(cls, errors[0]["loc"])
    # A union (``float | Literal["auto"]``) fails once per member, all at the same key.
    same = [e for e in errors if _locate(cls, e["loc"])[0] == key]
    kinds, value = {e["type"] for e in same}, errors[0]["input"]
    name = key or "config"
    if "unexpected_keyword_argument" in kinds:
        valid = ", ".join(sorted(f.name for f in dataclasses.fields(parent)))
        return f"unknown config key '{key}'; valid keys: {valid}"
    if kinds & _RANGE_ERRORS:
        return f"{name}: {value!r} is out of range; allowed: {_allowed(tp, info)}"
    if get_origin(_bare(tp)) is Literal:
        return f"{name}: {value!r} is not allowed; valid values: {_allowed(tp, info)}"
    if len(same) > 1:
        return f"{name}: {value!r} is not allowed; allowed: {_allowed(tp, info)}"
    kind = errors[0]["type"]
    if kind in _TYPE_MESSAGES:
        return f"{name}: {_TYPE_MESSAGES[kind]}, got {value!r}"
    return f"{name}: {errors[0]['msg']} (got {value!r})"


def _locate(cls: type, loc: tuple) -> tuple[str, FieldInfo | None, Any, type]:
    """The dotted key a pydantic error location names, its field, its type and its class."""
    parts: list[str] = []
    tp, info, parent = cls, None, cls
    for part in loc:
        tp = _bare(tp)
        if dataclasses.is_dataclass(tp) and isinstance(tp, type):
            parent, parts = tp, parts + [str(part)]
            info = tp.__pydantic_fields__.get(part)
            if info is None:  # an unknown key
                break
            tp = info.annotation
        elif get_origin(tp) is dict:
            if part != "[key]":
                parts.append(str(part))
            tp, info = get_args(tp)[1], None
        elif get_origin(tp) is tuple and isinstance(part, int) and parts:
            parts[-1] += f"[{part}]"
            tp, info = get_args(tp)[0 if get_args(tp)[-1] is Ellipsis else part], None
        else:  # the tag pydantic gives each member of a union
            break
    return ".".join(parts), info, tp, parent


def _bare(tp: Any) -> Any:
    """``tp`` without ``Annotated`` metadata, and ``X`` for ``X | None``."""
    while get_origin(tp) is Annotated:
        tp = get_args(tp)[0]
    if get_origin(tp) in (typing.Union, types.UnionType):
        members = [a for a in get_args(tp) if a is not type(None)]
        if len(members) == 1:
            return _bare(members[0])
    return tp


def _allowed(tp: Any, info: FieldInfo | None = None) -> str:
    """What a field takes, for an error message: ``0, 1, 2, 3``, ``[0, 1)``, ``> 0 or auto``."""
    metadata = list(info.metadata) if info is not None else []
    while get_origin(tp) is Annotated:
        metadata += list(tp.__metadata__)
        tp = get_args(tp)[0]
    if get_origin(tp) in (typing.Union, types.UnionType):
        return " or ".join(_allowed(a) for a in get_args(tp) if a is not type(None))
    if get_origin(tp) is Literal:
        return ", ".join(map(str, get_args(tp)))
    bounds = {}
    for m in metadata:
        for item in m.metadata if isinstance(m, FieldInfo) else [m]:
            if isinstance(item, at.Gt | at.Ge | at.Lt | at.Le):
                name = type(item).__name__.lower()
                bounds[name] = getattr(item, name)
    low = ("(", bounds["gt"]) if "gt" in bounds else ("[", bounds.get("ge"))
    high = (")", bounds["lt"]) if "lt" in bounds else ("]", bounds.get("le"))
    if low[1] is not None and high[1] is not None:
        return f"{low[0]}{low[1]}, {high[1]}{high[0]}"
    if low[1] is not None:
        return f"{'>' if low[0] == '(' else '>='} {low[1]}"
    if high[1] is not None:
        return f"{'<' if high[0] == ')' else '<='} {high[1]}"
    return getattr(tp, "__name__", str(tp))


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """Apply ``a.b=value`` overrides to a raw mapping (validated later with the rest)."""
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. train.lr=1e-4")
        dotted, raw = item.split("=", 1)
        node = data
        parts = dotted.strip().split(".")
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"--set {dotted}: '{part}' is not a section")
            node = child
        try:
            node[parts[-1]] = yaml.safe_load(raw)
        except yaml.YAMLError as exc:
            raise ConfigError(f"--set {item!r}: the value is not valid YAML ({exc})") from None
    return data


def load_yaml(path: str | Path) -> dict:
    """Read a YAML mapping, naming the file in any error."""
    from valign_ray.errors import InputError, read_utf8

    path = Path(path)
    if not path.exists():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(read_utf8(path, "config file"))
    except InputError as exc:
        raise ConfigError(str(exc)) from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {' '.join(str(exc).split())}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping")
    return data


def to_dict(obj: Any) -> Any:
    """A plain, YAML/JSON-serialisable copy of a config (for snapshots and W&B)."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, tuple | list):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj
