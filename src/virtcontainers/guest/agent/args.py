"""Request errors and the validation of request arguments."""

from __future__ import annotations

TYPE_CHECKING = False  # typing costs ~50 ms at every guest boot under TCG: annotations only
if TYPE_CHECKING:
    from typing import Any

_ID_FIRST = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789")
_ID_REST = _ID_FIRST | frozenset("_.-")


class AgentError(Exception):
    """Answered to the host as ``{"ok": false, "error": {"kind", "message"}}``."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message


def invalid(message: str) -> AgentError:
    return AgentError("invalid", message)


def valid_id(value: object) -> bool:
    return (
        isinstance(value, str)
        and 1 <= len(value) <= 64
        and value[0] in _ID_FIRST
        and all(c in _ID_REST for c in value)
    )


def check_keys(args: dict[str, Any], allowed: set[str], required: set[str]) -> None:
    unknown = sorted(set(args) - allowed)
    if unknown:
        raise invalid(f"unknown argument(s): {', '.join(unknown)}")
    missing = sorted(required - set(args))
    if missing:
        raise invalid(f"missing argument(s): {', '.join(missing)}")


def arg_id(args: dict[str, Any], name: str) -> str:
    value = args.get(name)
    if not valid_id(value):
        raise invalid(f"{name} must match ^[A-Za-z0-9][A-Za-z0-9_.-]{{0,63}}$")
    assert isinstance(value, str)
    return value


def arg_opt_id(args: dict[str, Any], name: str) -> str | None:
    if args.get(name) is None:
        return None
    return arg_id(args, name)


def arg_int(args: dict[str, Any], name: str, low: int, high: int) -> int:
    value = args.get(name)
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise invalid(f"{name} must be an integer in {low}..{high}")
    return value


def arg_bool(args: dict[str, Any], name: str, default: bool) -> bool:
    value = args.get(name, default)
    if not isinstance(value, bool):
        raise invalid(f"{name} must be a boolean")
    return value


def arg_streams(args: dict[str, Any]) -> tuple[int | None, int | None, int | None]:
    ids: list[int | None] = []
    for name in ("stdin", "stdout", "stderr"):
        value = args.get(name)
        if value is None:
            ids.append(None)
            continue
        ids.append(arg_int(args, name, 1, 0xFFFFFFFF))
    present = [i for i in ids if i is not None]
    if len(present) != len(set(present)):
        raise invalid("stdin, stdout and stderr must be distinct stream ids")
    return ids[0], ids[1], ids[2]


def check_process(process: object, what: str) -> dict[str, Any]:
    """Validate the parts of an OCI process object the agent relies on."""
    if not isinstance(process, dict):
        raise invalid(f"{what} must be an object")
    argv = process.get("args")
    if not isinstance(argv, list) or not argv or not all(isinstance(a, str) for a in argv):
        raise invalid(f"{what}.args must be a non-empty list of strings")
    if not isinstance(process.get("terminal", False), bool):
        raise invalid(f"{what}.terminal must be a boolean")
    env = process.get("env", [])
    if not isinstance(env, list) or not all(isinstance(e, str) for e in env):
        raise invalid(f"{what}.env must be a list of strings")
    cwd = process.get("cwd", "/")
    if not isinstance(cwd, str) or not cwd.startswith("/"):
        raise invalid(f"{what}.cwd must be an absolute path")
    user = process.get("user", {})
    if not isinstance(user, dict):
        raise invalid(f"{what}.user must be an object")
    return process
