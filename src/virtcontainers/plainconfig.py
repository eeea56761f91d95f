"""Configs whose JSON form is their fields: parsed strictly, in one place.

Every config type (:mod:`virtcontainers.config`, :mod:`virtcontainers.limits`,
:mod:`virtcontainers.volumes`) refuses the fields it does not know through
:func:`reject_unknown`, so a typo in a stored record or a request is an error
that names it, whichever type it is in.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, ClassVar, Self

from virtcontainers.errors import ConfigError


def reject_unknown(kind: str, cls: type, data: object) -> Mapping[str, Any]:
    """``data``, if it is an object of ``cls``'s fields only (ConfigError naming
    ``kind`` otherwise)."""
    if not isinstance(data, Mapping):
        raise ConfigError(kind, f"expected an object, got {type(data).__name__}")
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(kind, f"unknown field(s) {', '.join(map(repr, unknown))}")
    return data


class Plain:
    """A config whose JSON form is its fields, as they are."""

    KIND: ClassVar[str]

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Self:
        return cls(**reject_unknown(cls.KIND, cls, data))


def check_type(where: str, value: object, expected: type | tuple[type, ...]) -> None:
    """ConfigError naming ``where`` unless ``value`` is an ``expected`` (a bool is no number)."""
    if isinstance(value, bool) and expected in (int, float):
        raise ConfigError(where, f"expected {expected}, got a boolean")
    if not isinstance(value, expected):
        raise ConfigError(where, f"expected {expected}, got {type(value).__name__} {value!r}")


def check_str_tuple(where: str, values: object) -> tuple[str, ...]:
    """``values``, a list or tuple of strings, as a tuple (ConfigError naming ``where``)."""
    if not isinstance(values, list | tuple):
        raise ConfigError(where, f"expected a list of strings, got {type(values).__name__}")
    for item in values:
        check_type(where, item, str)
    return tuple(values)
