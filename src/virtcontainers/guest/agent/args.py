"""Request errors and the validation of request arguments."""

from __future__ import annotations

TYPE_CHECKING = False  # typing costs ~50 ms at every guest boot under TCG: annotations only
if TYPE_CHECKING:
    from collections.abc import Mapping

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


def check_keys(args: Mapping[str, object], allowed: set[str], required: set[str]) -> None:
    unknown = sorted(set(args) - allowed)
    if unknown:
        raise invalid(f"unknown argument(s): {', '.join(unknown)}")
    missing = sorted(required - set(args))
    if missing:
        raise invalid(f"missing argument(s): {', '.join(missing)}")


def arg_id(args: Mapping[str, object], name: str) -> str:
    value = args.get(name)
    if not valid_id(value):
        raise invalid(f"{name} must match ^[A-Za-z0-9][A-Za-z0-9_.-]{{0,63}}$")
    assert isinstance(value, str)
    return value


def arg_opt_id(args: Mapping[str, object], name: str) -> str | None:
    if args.get(name) is None:
        return None
    return arg_id(args, name)


def arg_int(args: Mapping[str, object], name: str, low: int, high: int) -> int:
    value = args.get(name)
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise invalid(f"{name} must be an integer in {low}..{high}")
    return value


def arg_bool(args: Mapping[str, object], name: str, default: bool) -> bool:
    value = args.get(name, default)
    if not isinstance(value, bool):
        raise invalid(f"{name} must be a boolean")
    return value


def arg_streams(args: Mapping[str, object]) -> tuple[int | None, int | None, int | None]:
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


class CheckedProcess:
    """The parts of an OCI process object the agent relies on, checked (with
    the defaults of the runtime spec); ``raw`` is the object as the host sent
    it, for the runtime."""

    __slots__ = ("argv", "cwd", "env", "raw", "terminal", "user")

    def __init__(self, raw: dict[str, object], what: str) -> None:
        argv = raw.get("args")
        if not isinstance(argv, list) or not argv or not all(isinstance(a, str) for a in argv):
            raise invalid(f"{what}.args must be a non-empty list of strings")
        terminal = raw.get("terminal", False)
        if not isinstance(terminal, bool):
            raise invalid(f"{what}.terminal must be a boolean")
        env = raw.get("env", [])
        if not isinstance(env, list) or not all(isinstance(e, str) for e in env):
            raise invalid(f"{what}.env must be a list of strings")
        cwd = raw.get("cwd", "/")
        if not isinstance(cwd, str) or not cwd.startswith("/"):
            raise invalid(f"{what}.cwd must be an absolute path")
        user = raw.get("user", {})
        if not isinstance(user, dict):
            raise invalid(f"{what}.user must be an object")
        self.raw = raw
        self.argv: list[str] = argv
        self.terminal = terminal
        self.env: list[str] = env
        self.cwd = cwd
        self.user: dict[str, object] = user


def check_process(process: object, what: str) -> CheckedProcess:
    """Validate the parts of an OCI process object the agent relies on."""
    if not isinstance(process, dict):
        raise invalid(f"{what} must be an object")
    return CheckedProcess(process, what)
