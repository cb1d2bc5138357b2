"""Type checks of config dataclasses, read from their field annotations: one validator for every config.

Each config calls `check_fields(self)` first thing in `__post_init__`, so a value of the wrong type is one
`ConfigError` naming the field, the value and what the field takes, whether the config was built in Python,
by `dataclasses.replace` or from a JSON file, and the config's own range checks then see the right types.

    TrainConfig.batch_size = '8' (str): takes an integer

What each annotation accepts (JSON has no tuples, and a bool is not a number here):

    int               an integer (not a bool; numpy integers become int)
    float             a finite number, int or float (not a bool)
    bool              True or False only (not 0 / 1)
    str               a string (an os.PathLike becomes its str)
    None              None (JSON null)
    tuple[X, ...]     a list or tuple of X; tuple[X, Y] exactly two items (lists become tuples)
    A | B, Optional   either
    Literal[...]      one of the listed values
    a dataclass       an instance of it (a nested config checks itself when it is built)
    Any               anything
"""

from __future__ import annotations

import dataclasses
import functools
import math
import numbers
import os
import types
import typing
from typing import Any, Literal

from deformable_detr.errors import ConfigError


def check_fields(config: Any) -> None:
    """Check every field of the dataclass instance `config` against its annotation, in field order.

    Values are normalised in place (lists to tuples, numpy numbers to int / float, paths to str).

    Raises:
        ConfigError: one line, `<Class>.<field> = <value> (<type>): takes <what>`, for the first field
            whose value does not fit.
    """
    for name, hint in _field_hints(type(config)):
        value = getattr(config, name)
        ok, normalised = _fit(value, hint)
        if not ok:
            raise ConfigError(f"{type(config).__name__}.{name} = {_shown(value)}: takes {describe(hint)}")
        if normalised is not value:
            object.__setattr__(config, name, normalised)


def describe(hint: Any) -> str:
    """What a type annotation takes, in words ("an integer or None", "a list of 2 numbers")."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return "anything"
    if hint is type(None) or hint is None:
        return "None"
    if origin in (typing.Union, types.UnionType):
        return " or ".join(describe(arg) for arg in args)
    if origin is Literal:
        return "one of " + ", ".join(repr(arg) for arg in args)
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return f"a list of {_plural(args[0])}"
        if len(set(args)) == 1:
            return f"a list of {len(args)} {_plural(args[0])}"
        return f"a list of {len(args)} items ({', '.join(describe(arg) for arg in args)})"
    if dataclasses.is_dataclass(hint):
        return f"an object of {hint.__name__} fields"
    return _SIMPLE.get(hint, getattr(hint, "__name__", str(hint)))


_SIMPLE = {int: "an integer", float: "a finite number", bool: "true or false", str: "a string"}
_PLURAL = {int: "integers", float: "finite numbers", bool: "booleans", str: "strings"}


def _plural(hint: Any) -> str:
    return _PLURAL.get(hint, f"items that are each {describe(hint)}")


@functools.cache
def _field_hints(cls: type) -> tuple[tuple[str, Any], ...]:
    """(name, resolved annotation) of each init field of `cls`."""
    hints = typing.get_type_hints(cls)
    return tuple((field.name, hints[field.name]) for field in dataclasses.fields(cls) if field.init)


def _fit(value: Any, hint: Any) -> tuple[bool, Any]:
    """(whether `value` fits `hint`, the value normalised)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return True, value
    if hint is type(None) or hint is None:
        return value is None, value
    if origin in (typing.Union, types.UnionType):
        for arg in args:
            ok, normalised = _fit(value, arg)
            if ok:
                return True, normalised
        return False, value
    if origin is Literal:
        return any(value == arg and type(value) is type(arg) for arg in args), value
    if origin is tuple:
        return _fit_tuple(value, args)
    if hint is bool:
        return isinstance(value, bool), value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            return False, value
        return True, value if type(value) is int else int(value)
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
            return False, value
        return True, value if type(value) in (int, float) else float(value)
    if hint is str:
        if isinstance(value, os.PathLike):
            value = os.fspath(value)
        return isinstance(value, str), value
    if isinstance(hint, type):
        return isinstance(value, hint), value
    return True, value  # an annotation this module does not know: left to the config's own checks


def _fit_tuple(value: Any, args: tuple) -> tuple[bool, Any]:
    if not isinstance(value, (list, tuple)):
        return False, value
    if len(args) == 2 and args[1] is Ellipsis:
        item_hints = (args[0],) * len(value)
    elif len(args) != len(value):
        return False, value
    else:
        item_hints = args
    items = []
    for item, item_hint in zip(value, item_hints):
        ok, normalised = _fit(item, item_hint)
        if not ok:
            return False, value
        items.append(normalised)
    items = tuple(items)
    return True, value if isinstance(value, tuple) and all(a is b for a, b in zip(items, value)) else items


def _shown(value: Any) -> str:
    """The offending value, short, with its type."""
    if value is None:
        return "None (null)"
    text = repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{text} ({type(value).__name__})"
