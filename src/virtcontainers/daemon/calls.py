"""The pod daemon's methods, each declared once: its request and its answer.

The API (:mod:`virtcontainers.api`, the only client) and the daemon's
handlers use these same types, so a method's name, parameters and result
exist in one place.  A request is a frozen dataclass; its JSON form is made
and checked field by field from its annotations: an ``*_id`` field holds a
valid id, a config is parsed by its own ``from_dict``, numbers are numbers.
The fds of a process's stdio ride beside a request whose ``TAKES_STDIO`` is
set (see :mod:`virtcontainers.daemon.rpc`).
"""

from __future__ import annotations

import dataclasses
import signal as signals
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cache
from typing import Any, ClassVar, Generic, Self, TypeVar, cast, get_type_hints

from virtcontainers.agent.results import ContainerStats, ExitStatus, Parsed, ProcessInfo
from virtcontainers.config import Cmd, ContainerConfig
from virtcontainers.errors import ConfigError, DaemonError
from virtcontainers.events import Event
from virtcontainers.ids import validate_id
from virtcontainers.limits import Limits
from virtcontainers.records import ContainerRecord
from virtcontainers.status import InterfaceStatus

R = TypeVar("R")
T = TypeVar("T")
P = TypeVar("P", bound="Parsed")
MAX_TERMINAL_SIZE = 65535
MAX_STOP_TIMEOUT = 1 << 31  # seconds; beyond it asyncio's timers overflow
MAX_EVENT_NUMBER = (1 << 63) - 1
IFNAMSIZ = 16  # a Linux interface name is at most 15 bytes


@cache
def _field_types(cls: type) -> dict[str, Any]:
    return get_type_hints(cls)


def _decode_field(method: str, name: str, kind: Any, value: object) -> object:
    where = f"{method}.{name}"
    if kind == (str | None) and value is None:
        return None
    if kind in (str, str | None):
        if name.endswith("_id"):
            return validate_id(name.removesuffix("_id"), value)
        if not isinstance(value, str):
            raise ConfigError(where, f"expected a string, got {value!r}")
        return value
    if kind is bool:
        if not isinstance(value, bool):
            raise ConfigError(where, f"expected true or false, got {value!r}")
        return value
    if kind is int:
        if not isinstance(value, int) or isinstance(value, bool):
            raise ConfigError(where, f"expected an integer, got {value!r}")
        return value
    if kind in (Cmd, ContainerConfig, Limits):
        if not isinstance(value, Mapping):
            raise ConfigError(where, f"expected an object, got {value!r}")
        return kind.from_dict(value)
    raise TypeError(f"{where}: no codec for {kind!r}")


def _encode_field(value: object) -> object:
    if isinstance(value, Cmd | ContainerConfig | Limits):
        return value.to_dict()
    return value


class Request(Generic[R]):
    """A call to the pod daemon whose answer is an ``R``."""

    METHOD: ClassVar[str]
    ACTION: ClassVar[str]
    """What the request does to a pod, for messages: "cannot ACTION pod 'p'"."""
    TAKES_STDIO: ClassVar[bool] = False
    RANGES: ClassVar[tuple[tuple[str, int, int], ...]] = ()
    """Integer fields and the bounds they must be within, both included."""

    def __post_init__(self) -> None:
        for name, low, high in self.RANGES:
            value = getattr(self, name)
            if not low <= value <= high:
                raise ConfigError(f"{self.METHOD}.{name}", f"{value} is outside {low}..{high}")

    def to_params(self) -> dict[str, object]:
        return {
            field.name: _encode_field(getattr(self, field.name))
            for field in dataclasses.fields(self)  # type: ignore[arg-type]
        }

    @classmethod
    def from_params(cls, params: Mapping[str, object]) -> Self:
        """Parse and check the JSON form; raises ConfigError naming the bad field."""
        types = _field_types(cls)  # type: ignore[arg-type]
        names = {field.name for field in dataclasses.fields(cls)}  # type: ignore[arg-type]
        unknown = sorted(set(params) - names)
        if unknown:
            raise ConfigError(cls.METHOD, f"unknown parameter(s) {', '.join(unknown)}")
        values = {}
        for name in names:
            if name not in params:
                raise ConfigError(f"{cls.METHOD}.{name}", "missing")
            values[name] = _decode_field(cls.METHOD, name, types[name], params[name])
        return cls(**values)

    def encode_result(self, result: R) -> Any:
        return None

    def decode_result(self, data: object) -> R:
        raise NotImplementedError

    def answer_object(self, data: object) -> dict[str, object]:
        if not isinstance(data, dict):
            raise DaemonError(f"{self.METHOD}: malformed answer {data!r}")
        return data

    def parse_answer(self, parse: Callable[[dict[str, object]], T], data: object) -> T:
        """*data*, an object, read by *parse*, whose ValueError means a malformed answer."""
        try:
            return parse(self.answer_object(data))
        except ValueError as exc:
            raise DaemonError(f"{self.METHOD}: malformed answer: {exc}") from None

    def answer_list(self, data: object) -> list[object]:
        if not isinstance(data, list):
            raise DaemonError(f"{self.METHOD}: malformed answer {data!r}")
        return data


class AnswersWith(Request[P]):
    """A request answered with one of the agent's results, sent as its fields."""

    RESULT: ClassVar[type[Parsed]]

    def encode_result(self, result: P) -> Any:
        return dataclasses.asdict(result)

    def decode_result(self, data: object) -> P:
        # RESULT is P's class: a ClassVar cannot name a type variable.
        return cast(P, self.parse_answer(self.RESULT.parse, data))


class Answerless(Request[None]):
    def decode_result(self, data: object) -> None:
        return None

    @classmethod
    def named(cls, method: str, action: str) -> type[Self]:
        """This request shape under the wire name ``method``, as a class of its own."""
        title = "".join(part.title() for part in method.split("_"))
        return type(title, (cls,), {"METHOD": method, "ACTION": action, "__module__": __name__})


@dataclass(frozen=True)
class OnPod(Answerless):
    """A request about the pod itself, answered with nothing."""


@dataclass(frozen=True)
class ContainerTarget:
    """The container a request is about (its first field)."""

    container_id: str


@dataclass(frozen=True)
class OnContainer(ContainerTarget, Answerless):
    """A request about one container, answered with nothing."""


@dataclass(frozen=True)
class ProcessStarted:
    exec_id: str
    pid: int


class StartsProcess(Request[ProcessStarted]):
    TAKES_STDIO = True

    def encode_result(self, result: ProcessStarted) -> Any:
        return {"exec_id": result.exec_id, "pid": result.pid}

    def decode_result(self, data: object) -> ProcessStarted:
        data = self.answer_object(data)
        exec_id, pid = data.get("exec_id"), data.get("pid")
        if not isinstance(pid, int) or isinstance(pid, bool):
            raise DaemonError(f"{self.METHOD}: malformed pid {pid!r}")
        return ProcessStarted(validate_id("exec", exec_id), pid)


# --- the methods -----------------------------------------------------------------------------

StopPod = OnPod.named("stop", "stop")
PausePod = OnPod.named("pause", "pause")
ResumePod = OnPod.named("resume", "resume")
StartContainer = OnContainer.named("start_container", "start a container in")
DeleteContainer = OnContainer.named("delete_container", "delete a container in")
PauseContainer = OnContainer.named("pause_container", "pause a container in")
ResumeContainer = OnContainer.named("resume_container", "resume a container in")


@dataclass(frozen=True)
class CreateContainer(Request[ContainerRecord]):
    METHOD = "create_container"
    ACTION = "create a container in"
    TAKES_STDIO = True
    config: ContainerConfig

    def encode_result(self, result: ContainerRecord) -> Any:
        return result.to_json()

    def decode_result(self, data: object) -> ContainerRecord:
        try:
            return ContainerRecord.from_json(data)
        except ConfigError as exc:
            raise DaemonError(f"{self.METHOD}: malformed answer: {exc}") from exc


@dataclass(frozen=True)
class StopContainer(OnContainer):
    METHOD = "stop_container"
    ACTION = "stop a container in"
    RANGES = (("timeout", 0, MAX_STOP_TIMEOUT),)
    timeout: int


@dataclass(frozen=True)
class ExecProcess(ContainerTarget, StartsProcess):
    METHOD = "exec"
    ACTION = "exec in"
    cmd: Cmd
    exec_id: str | None


@dataclass(frozen=True)
class EnterPod(StartsProcess):
    METHOD = "enter_pod"
    ACTION = "enter"
    cmd: Cmd


@dataclass(frozen=True)
class ProcessTarget:
    """The process a request is about: a container's (exec_id None: its init), or
    one in the VM outside containers (container_id None)."""

    container_id: str | None
    exec_id: str | None


@dataclass(frozen=True)
class SignalProcess(ProcessTarget, Answerless):
    METHOD = "kill"
    ACTION = "signal a process in"
    RANGES = (("signal", 1, signals.SIGRTMAX),)
    signal: int
    all: bool


@dataclass(frozen=True)
class WaitProcess(ProcessTarget, AnswersWith[ExitStatus]):
    METHOD = "wait"
    ACTION = "wait for a process in"
    RESULT = ExitStatus


@dataclass(frozen=True)
class ResizeTerminal(ProcessTarget, Answerless):
    METHOD = "resize"
    ACTION = "resize a terminal in"
    RANGES = (("rows", 0, MAX_TERMINAL_SIZE), ("cols", 0, MAX_TERMINAL_SIZE))
    rows: int
    cols: int


@dataclass(frozen=True)
class AttachProcess(ProcessTarget, Answerless):
    METHOD = "attach"
    ACTION = "attach to a process in"
    TAKES_STDIO = True


@dataclass(frozen=True)
class ListProcesses(ContainerTarget, Request[list[ProcessInfo]]):
    METHOD = "ps"
    ACTION = "list the processes of a container in"

    def encode_result(self, result: list[ProcessInfo]) -> Any:
        return [{"pid": p.pid, "args": list(p.args)} for p in result]

    def decode_result(self, data: object) -> list[ProcessInfo]:
        processes = []
        for item in self.answer_list(data):
            if not isinstance(item, dict) or not isinstance(item.get("pid"), int):
                raise DaemonError(f"{self.METHOD}: malformed process {item!r}")
            processes.append(ProcessInfo(item["pid"], tuple(map(str, item.get("args") or ()))))
        return processes


@dataclass(frozen=True)
class UpdateContainer(OnContainer):
    METHOD = "update_container"
    ACTION = "update a container in"
    limits: Limits


@dataclass(frozen=True)
class GetContainerStats(ContainerTarget, AnswersWith[ContainerStats]):
    METHOD = "container_stats"
    ACTION = "read the usage of a container in"
    RESULT = ContainerStats


MAX_EVENT_WAIT = 300


@dataclass(frozen=True)
class WatchEvents(Request[list[Event]]):
    """The pod's events numbered above ``after``, waiting up to ``timeout`` s for one."""

    METHOD = "events"
    ACTION = "read the events of"
    RANGES = (("after", 0, MAX_EVENT_NUMBER), ("timeout", 0, MAX_EVENT_WAIT))
    after: int
    timeout: int

    def encode_result(self, result: list[Event]) -> Any:
        return [event.to_dict() for event in result]

    def decode_result(self, data: object) -> list[Event]:
        try:
            return [Event.from_dict(item) for item in self.answer_list(data)]
        except ValueError as exc:
            raise DaemonError(f"{self.METHOD}: {exc}") from exc


def check_interface_name(where: str, name: str) -> str:
    """``name`` if Linux could name an interface so; ConfigError otherwise."""
    try:
        size = len(name.encode())
    except UnicodeEncodeError:
        size = 0
    if (
        not 0 < size < IFNAMSIZ
        or name in (".", "..")
        or not name.isprintable()
        or any(c in name for c in "/:")
        or any(c.isspace() for c in name)
    ):
        raise ConfigError(
            where, f"{name!r} is not an interface name (1 to 15 bytes, no '/', ':' or space)"
        )
    return name


@dataclass(frozen=True)
class InterfaceTarget:
    """The interface of the pod's network namespace a request is about."""

    METHOD: ClassVar[str]
    name: str

    def __post_init__(self) -> None:
        check_interface_name(f"{self.METHOD}.name", self.name)


@dataclass(frozen=True)
class AddInterface(InterfaceTarget, Request[InterfaceStatus]):
    METHOD = "add_interface"
    ACTION = "add an interface to"

    def encode_result(self, result: InterfaceStatus) -> Any:
        return result.to_dict()

    def decode_result(self, data: object) -> InterfaceStatus:
        return InterfaceStatus.from_dict(self.METHOD, data)


@dataclass(frozen=True)
class RemoveInterface(InterfaceTarget, Answerless):
    METHOD = "remove_interface"
    ACTION = "remove an interface from"


@dataclass(frozen=True)
class ListInterfaces(Request[list[InterfaceStatus]]):
    METHOD = "list_interfaces"
    ACTION = "list the interfaces of"

    def encode_result(self, result: list[InterfaceStatus]) -> Any:
        return [interface.to_dict() for interface in result]

    def decode_result(self, data: object) -> list[InterfaceStatus]:
        return [InterfaceStatus.from_dict(self.METHOD, item) for item in self.answer_list(data)]


REQUESTS: dict[str, type[Request[Any]]] = {
    cls.METHOD: cls
    for cls in (
        StopPod,
        PausePod,
        ResumePod,
        CreateContainer,
        StartContainer,
        StopContainer,
        DeleteContainer,
        PauseContainer,
        ResumeContainer,
        ExecProcess,
        EnterPod,
        SignalProcess,
        WaitProcess,
        ResizeTerminal,
        AttachProcess,
        ListProcesses,
        UpdateContainer,
        GetContainerStats,
        WatchEvents,
        AddInterface,
        RemoveInterface,
        ListInterfaces,
    )
}
"""Every method the daemon serves, by its wire name."""
