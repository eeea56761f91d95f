"""What a process runs as and what it runs: :class:`User` and :class:`Cmd`."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypedDict

from virtcontainers.errors import ConfigError
from virtcontainers.plainconfig import Plain, check_str_tuple, check_type, reject_unknown

DEFAULT_PATH_ENV = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
MAX_ID = 2**32 - 2
"""The largest uid or gid (2^32-1 is the kernel's "no id")."""
MAX_CMD_BYTES = 512 * 1024
"""The most a command's args and env may take as JSON: the request that carries
them to the guest (with the rest of a container's spec) must fit one frame:
half the agent protocol's MAX_PAYLOAD, which a unit test holds it to (a
constant here, so that the vocabulary imports no backend)."""


class UserDict(TypedDict):
    uid: int
    gid: int
    additional_gids: list[int]


class CmdDict(TypedDict):
    args: list[str]
    env: list[str]
    cwd: str
    user: UserDict
    terminal: bool
    runtime_settings: dict[str, Any] | None


def _check_id(where: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_ID:
        raise ConfigError(where, f"{value!r} is not a valid id (an integer 0..{MAX_ID})")
    return value


@dataclass(frozen=True)
class User(Plain):
    """Who a process runs as, by numeric ids: names are not resolved in the guest."""

    KIND = "cmd.user"

    uid: int = 0
    gid: int = 0
    additional_gids: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        _check_id("cmd.user.uid", self.uid)
        _check_id("cmd.user.gid", self.gid)
        gids = self.additional_gids
        if not isinstance(gids, list | tuple):
            raise ConfigError("cmd.user.additional_gids", f"expected a list, got {gids!r}")
        object.__setattr__(
            self, "additional_gids", tuple(_check_id("cmd.user.additional_gids", g) for g in gids)
        )

    @classmethod
    def parse(cls, text: str) -> User:
        """A user as one is typed: ``UID[:GID[:GID,GID...]]`` (GID defaults to UID)."""
        parts = text.split(":")
        try:
            uid = int(parts[0])
            gid = int(parts[1]) if len(parts) > 1 and parts[1] else uid
            extra = tuple(int(g) for g in parts[2].split(",")) if len(parts) > 2 else ()
        except ValueError:
            raise ConfigError("cmd.user", f"{text!r} is not UID[:GID[:GIDS]]") from None
        if len(parts) > 3:
            raise ConfigError("cmd.user", f"{text!r} is not UID[:GID[:GIDS]]")
        return cls(uid, gid, extra)

    def to_dict(self) -> UserDict:
        return {"uid": self.uid, "gid": self.gid, "additional_gids": list(self.additional_gids)}


PROCESS_FIELDS = frozenset({"args", "env", "cwd", "user", "terminal"})
"""The keys of an OCI process object that are fields of :class:`Cmd`."""


@dataclass(frozen=True)
class Cmd:
    """A process to run: in a container, or in the VM outside containers."""

    args: tuple[str, ...]
    env: tuple[str, ...] = (DEFAULT_PATH_ENV,)
    cwd: str = "/"
    user: User = User()
    terminal: bool = False
    runtime_settings: Mapping[str, Any] | None = None
    """The rest of a container's OCI process object, for the guest's runtime:
    capabilities, rlimits, noNewPrivileges, oomScoreAdj, ...; never one of
    :data:`PROCESS_FIELDS`, which are the fields above.  None: the library's
    defaults (:func:`virtcontainers.spec.default_runtime_settings`).  Only a
    container's own process has them: an exec in a container runs with its
    container's, and a process in the VM outside containers with none."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "args", check_str_tuple("cmd.args", self.args))
        object.__setattr__(self, "env", check_str_tuple("cmd.env", self.env))
        if not self.args:
            raise ConfigError("cmd.args", "a command needs at least the program name")
        for entry in self.env:
            if "=" not in entry:
                raise ConfigError("cmd.env", f"{entry[:64]!r} is not NAME=VALUE")
        self._check_size()
        check_type("cmd.cwd", self.cwd, str)
        if not os.path.isabs(self.cwd):
            raise ConfigError("cmd.cwd", f"{self.cwd!r} is not absolute")
        check_type("cmd.user", self.user, User)
        check_type("cmd.terminal", self.terminal, bool)
        if self.runtime_settings is not None:
            check_type("cmd.runtime_settings", self.runtime_settings, Mapping)
            for key in self.runtime_settings:
                check_type("cmd.runtime_settings", key, str)
                if key in PROCESS_FIELDS:
                    raise ConfigError(
                        "cmd.runtime_settings", f"{key!r} is a field of the Cmd, not a setting"
                    )

    def _check_size(self) -> None:
        size = len(json.dumps([self.args, self.env], separators=(",", ":")))
        if size > MAX_CMD_BYTES:
            raise ConfigError(
                "cmd",
                f"args and env take {size} bytes as JSON, more than the {MAX_CMD_BYTES} a "
                "request to the guest can carry; pass large data in a file or a volume",
            )

    def to_dict(self) -> CmdDict:
        """The JSON form (lists for tuples), as ``from_dict`` takes it back."""
        settings = self.runtime_settings
        return {
            "args": list(self.args),
            "env": list(self.env),
            "cwd": self.cwd,
            "user": self.user.to_dict(),
            "terminal": self.terminal,
            "runtime_settings": dict(settings) if settings is not None else None,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Cmd:
        values = dict(reject_unknown("cmd", cls, data))
        user = values.get("user")
        if isinstance(user, str):
            # Records stored before User existed hold "UID:GID:G1,G2"; read
            # once here, so that the pods of a host survive the upgrade.
            values["user"] = User.parse(user)
        elif user is not None:
            values["user"] = User.from_dict(user)
        return cls(**values)
