"""Path-aware checks of JSON values: every error names the file and the JSON path."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from virtcontainers.errors import RuntimeSpecError


@dataclass(frozen=True)
class Loc:
    """Where a value sits: a file label (``config.json``) and a JSON path (``process.args``)."""

    file: str
    path: str = ""

    def key(self, name: str) -> Loc:
        return Loc(self.file, f"{self.path}.{name}" if self.path else name)

    def index(self, i: int) -> Loc:
        return Loc(self.file, f"{self.path}[{i}]")

    def __str__(self) -> str:
        return f"{self.file}: {self.path}" if self.path else self.file

    def error(self, message: str) -> RuntimeSpecError:
        return RuntimeSpecError(f"{self}: {message}")

    def note(self, message: str) -> str:
        """A warning's text, in the same form as an error's."""
        return f"{self}: {message}"


def type_name(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, Mapping):
        return "an object"
    return type(value).__name__


def obj(value: object, loc: Loc) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise loc.error(f"must be an object, got {type_name(value)}")
    return value


def opt_obj(parent: Mapping[str, Any], name: str, loc: Loc) -> Mapping[str, Any]:
    """``parent[name]`` as an object; absent or null is an empty object."""
    value = parent.get(name)
    if value is None:
        return {}
    return obj(value, loc.key(name))


def string(value: object, loc: Loc) -> str:
    if not isinstance(value, str):
        raise loc.error(f"must be a string, got {type_name(value)}")
    return value


def boolean(value: object, loc: Loc) -> bool:
    if not isinstance(value, bool):
        raise loc.error(f"must be a boolean, got {type_name(value)}")
    return value


def integer(value: object, loc: Loc, minimum: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise loc.error(f"must be an integer, got {type_name(value)}")
    if minimum is not None and value < minimum:
        raise loc.error(f"must be at least {minimum}, got {value}")
    return value


def str_list(value: object, loc: Loc, non_empty: bool = False) -> list[str]:
    what = "a non-empty list of strings" if non_empty else "a list of strings"
    if not isinstance(value, list) or (non_empty and not value):
        raise loc.error(f"must be {what}")
    for i, item in enumerate(value):
        if not isinstance(item, str):
            raise loc.index(i).error(f"must be a string, got {type_name(item)}")
    return list(value)


def obj_list(value: object, loc: Loc) -> list[Mapping[str, Any]]:
    if not isinstance(value, list):
        raise loc.error(f"must be a list of objects, got {type_name(value)}")
    return [obj(item, loc.index(i)) for i, item in enumerate(value)]
