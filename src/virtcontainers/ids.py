"""The names callers give: ids of pods, containers and processes, and hostnames."""

from __future__ import annotations

import re

from virtcontainers.errors import ConfigError

ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
HOSTNAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9.-]{0,62}$")


def validate_id(kind: str, value: object) -> str:
    """``value``, if it is a valid id (ConfigError naming ``kind`` otherwise)."""
    if not isinstance(value, str) or not ID_PATTERN.match(value):
        raise ConfigError(
            f"{kind} id",
            f"{value!r} must be 1-64 characters of letters, digits, '_', '.' or '-', "
            "starting with a letter or digit",
        )
    return value


def validate_hostname(field: str, value: str | None) -> None:
    if value is not None and not (isinstance(value, str) and HOSTNAME_PATTERN.match(value)):
        raise ConfigError(field, f"{value!r} is not a valid hostname")
