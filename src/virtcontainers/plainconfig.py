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
