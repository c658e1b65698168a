"""The one place where a config value meets its type: every field of the config dataclasses is
converted and checked against its annotation (int, finite float, bool, str, Literal choices,
lists, mappings, Optional), whether it came from a file, the command line or Python.

A value that does not fit gives one line naming the field, what it must be and how to write it.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import types
import typing
from functools import cache
from typing import Any, Literal, Union, get_args, get_origin

INT_LIMIT = 2**63  # counters, sizes and seeds end up in 64-bit integers (torch, numpy)
_NO = object()  # "does not fit this type"


class ConfigError(ValueError):
    """An impossible or inconsistent configuration value."""


@cache
def field_types(cls: type) -> dict[str, Any]:
    """{field name: resolved annotation} of a config dataclass."""
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _alternatives(annotation: Any) -> tuple[Any, ...]:
    if get_origin(annotation) in (Union, types.UnionType):
        return get_args(annotation)
    return (annotation,)


def describe(annotation: Any) -> str:
    """What a value of `annotation` is, in words: 'an integer or null', 'one of: rope, learned'."""
    words = {bool: "true or false", int: "an integer", float: "a finite number", str: "a string",
             dict: "a mapping", type(None): "null"}
    parts = []
    for option in _alternatives(annotation):
        if get_origin(option) is Literal:
            parts.append("one of: " + ", ".join(map(str, get_args(option))))
        elif get_origin(option) is list:
            parts.append(f"a list (each item {describe(get_args(option)[0])})")
        else:
            parts.append(words[option])
    return " or ".join(parts)


def _as_int(value: Any) -> Any:
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        value = int(value)  # 1e3 in a file means 1000
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        return _NO
    return int(value) if -INT_LIMIT < value < INT_LIMIT else _NO


def _as_float(value: Any) -> Any:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return _NO
    try:
        number = float(value)
    except OverflowError:  # an integer beyond a float's range
        return _NO
    return number if math.isfinite(number) else _NO


def _convert(option: Any, value: Any) -> Any:
    """`value` as a value of `option` (one alternative of an annotation), or _NO."""
    if get_origin(option) is Literal:
        return value if isinstance(value, str) and value in get_args(option) else _NO
    if get_origin(option) is list:
        if not isinstance(value, list):
            return _NO
        items = [convert(get_args(option)[0], item) for item in value]
        return _NO if any(item is _NO for item in items) else items
    if option is int:
        return _as_int(value)
    if option is float:
        return _as_float(value)
    if option is type(None):
        return None if value is None else _NO
    if option in (bool, str, dict):
        return value if isinstance(value, option) else _NO
    raise TypeError(f"config annotation {option!r} has no converter")  # a new field type: add it above


def convert(annotation: Any, value: Any) -> Any:
    """`value` converted to `annotation` (the first alternative that takes it), or _NO."""
    for option in _alternatives(annotation):
        result = _convert(option, value)
        if result is not _NO:
            return result
    return _NO


def _fix(annotation: Any, value: Any) -> str:
    options = _alternatives(annotation)
    literal = next((o for o in options if get_origin(o) is Literal), None)
    if literal is not None:
        return f"write one of {', '.join(map(str, get_args(literal)))}"
    if bool in options:
        return "write true or false, unquoted"
    if int in options:
        if isinstance(value, int) and not isinstance(value, bool):
            return "use a value that fits in 64 bits"
        return "write a whole number such as 100"
    if float in options:
        return "write a finite number such as 3e-4"
    if str in options and isinstance(value, (int, float, bool)):
        return f"quote it to mean the text: '{value}'"
    return "see `smt train --help`"


def _short_repr(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def checked_value(field: str, annotation: Any, value: Any) -> Any:
    """`value` converted to `annotation`; a ConfigError naming `field` when it does not fit."""
    result = convert(annotation, value)
    if result is _NO:
        kind = "null" if value is None else type(value).__name__
        raise ConfigError(f"{field}={_short_repr(value)}: must be {describe(annotation)}, got {kind}; "
                          f"{_fix(annotation, value)}")
    return result


def check_fields(config: Any, section: str) -> None:
    """Convert every field of a config dataclass instance in place (section: 'model', 'training', 'run')."""
    for name, annotation in field_types(type(config)).items():
        setattr(config, name, checked_value(f"{section}.{name}", annotation, getattr(config, name)))
