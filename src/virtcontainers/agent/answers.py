"""The guest's answers checked: a field of the expected type, text cut to a
bound, and the process table a reattaching host reads (ids, stream ids and
exit statuses in range).  The guest is untrusted: anything else is an
:class:`AgentProtocolError`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TypeVar

from virtcontainers.agent.results import ExitStatus, GuestTable, KeptProcess
from virtcontainers.errors import AgentProtocolError
from virtcontainers.ids import ID_PATTERN

MAX_PROCESSES = 65536
MAX_ERROR_TEXT = 4096
MAX_CONTAINERS = 4096
MAX_STREAM_ID = 0xFFFFFFFF
T = TypeVar("T")


def field(result: Mapping[str, object], name: str, kind: type[T], op: str) -> T:
    value = result.get(name)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise AgentProtocolError(f"{op} answer has {name}={value!r}, expected {kind.__name__}")
    return value


def bounded(text: object) -> str:
    return str(text)[:MAX_ERROR_TEXT]


def guest_table(result: Mapping[str, object], op: str) -> GuestTable:
    """The process table the guest answered, checked."""
    containers = field(result, "containers", list, op)
    entries = field(result, "processes", list, op)
    if len(containers) > MAX_CONTAINERS or len(entries) > MAX_PROCESSES:
        raise AgentProtocolError(f"{op} answer lists too many containers or processes")
    table = GuestTable(
        {_table_id(c, "id", op): bounded(field(c, "status", str, op)) for c in containers},
        tuple(_kept_process(entry, op) for entry in entries),
    )
    ids = [s for process in table.processes for s in process.streams]
    if len(ids) != len(set(ids)):
        raise AgentProtocolError(f"{op} answer gives one stream to two processes")
    return table


def _table_id(entry: object, name: str, op: str) -> str:
    if not isinstance(entry, dict):
        raise AgentProtocolError(f"{op} entry is not an object")
    value = field(entry, name, str, op)
    if not ID_PATTERN.match(value):
        raise AgentProtocolError(f"{op} answer has a malformed {name}")
    return value


def _optional_id(entry: Mapping[str, object], name: str, op: str) -> str | None:
    return None if entry.get(name) is None else _table_id(entry, name, op)


def _optional(entry: Mapping[str, object], name: str, kind: type[T], op: str) -> T | None:
    return None if entry.get(name) is None else field(entry, name, kind, op)


def _stream_id(entry: Mapping[str, object], name: str, op: str) -> int | None:
    value = _optional(entry, name, int, op)
    if value is not None and not 0 < value <= MAX_STREAM_ID:
        raise AgentProtocolError(f"{op} answer has {name}={value}")
    return value


def _kept_process(entry: object, op: str) -> KeptProcess:
    if not isinstance(entry, dict):
        raise AgentProtocolError(f"{op} entry is not an object")
    container_id = (
        None if entry.get("container_id") is None else _table_id(entry, "container_id", op)
    )
    exec_id = None if entry.get("exec_id") is None else _table_id(entry, "exec_id", op)
    if container_id is None and exec_id is None:
        raise AgentProtocolError(f"{op} answer has a process with neither container nor exec")
    code = _optional(entry, "exit_code", int, op)
    signal = _optional(entry, "signal", int, op)
    if (code is not None and not 0 <= code <= 255) or (signal is not None and not 0 < signal < 128):
        raise AgentProtocolError(f"{op} answer has an exit status out of range")
    return KeptProcess(
        container_id,
        exec_id,
        _optional(entry, "pid", int, op) or 0,
        None if code is None else ExitStatus(code, signal),
        _stream_id(entry, "stdout", op),
        _stream_id(entry, "stderr", op),
    )
