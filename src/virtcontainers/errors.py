"""Errors raised by virtcontainers.

Every error derives from :class:`VcError`.  Messages say what happened, to
which pod or container, and what to do about it.  The hierarchy::

    VcError
    ├── ConfigError              a config or argument is invalid (field, reason)
    ├── NotFoundError            no such pod, container or process
    ├── ExistsError              an id is already taken
    ├── StateError               operation not allowed in the current state
    │                            (current, required)
    ├── ImageError               the guest image cannot be built or found
    ├── TemplateError            a VM template cannot be made, found or used
    ├── HypervisorError          the VM cannot be created, started or driven
    │   └── VMLaunchError        QEMU exited or failed while starting (argv, output)
    ├── AgentError               the guest agent failed a request (op, kind)
    │   └── AgentProtocolError   the guest broke the wire protocol; the pod's
    │                            agent connection is unusable
    ├── DaemonError              the pod daemon cannot be reached or failed
    ├── NetworkError             the pod's network cannot be set up or removed
    │                            (pod_id, netns, reason)
    ├── BusyError                another call holds the pod (pod_id, operation)
    ├── CorruptRecordError       a pod's state file cannot be read (pod_id, path)
    └── RuntimeSpecError         an OCI bundle or config.json cannot be used

An error crosses to another process (the pod daemon's answer, vc-runtime's
shim's report) as a dict, :func:`error_to_dict`, and arrives as the class it was
raised as, with its fields, through :func:`error_from_dict`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import ClassVar, Self, TypedDict


class VcError(Exception):
    """Root of every virtcontainers error.

    ``FIELDS`` names a subclass's structured attributes: they cross from the
    pod daemon to its caller with the message (see :func:`error_to_dict`).
    """

    FIELDS: ClassVar[tuple[str, ...]] = ()

    def fields(self) -> dict[str, object]:
        return {name: getattr(self, name) for name in self.FIELDS}

    @classmethod
    def rebuild(cls, message: str, fields: Mapping[str, object]) -> Self:
        """The error as it was raised elsewhere: same message, same fields."""
        error = cls.__new__(cls)
        Exception.__init__(error, message)
        for name in cls.FIELDS:
            value = fields.get(name)
            setattr(error, name, tuple(value) if isinstance(value, list) else value)
        return error


class ConfigError(VcError):
    FIELDS = ("field", "reason")

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"invalid {field}: {reason}")
        self.field = field
        self.reason = reason


class _ObjectError(VcError):
    """Something about one object, by kind and id ("container 'c' ...")."""

    FIELDS = ("kind", "ident")
    STATE: ClassVar[str]
    SEPARATOR: ClassVar[str]

    def __init__(self, kind: str, ident: str, detail: str = "") -> None:
        message = f"{kind} {ident!r} {self.STATE}"
        super().__init__(f"{message}{self.SEPARATOR}{detail}" if detail else message)
        self.kind = kind
        self.ident = ident


class NotFoundError(_ObjectError):
    """``detail`` is a hint: where it was looked for, or what to do."""

    STATE, SEPARATOR = "not found", "; "


class ExistsError(_ObjectError):
    """``detail`` says where: "in pod 'p'"."""

    STATE, SEPARATOR = "already exists", " "


class StateError(VcError):
    FIELDS = ("what", "operation", "current", "required")

    def __init__(self, what: str, operation: str, current: str, required: Sequence[str]) -> None:
        allowed = " or ".join(required)
        super().__init__(f"cannot {operation} {what}: it is {current}, must be {allowed}")
        self.what = what
        self.operation = operation
        self.current = current
        self.required = tuple(required)


class ImageError(VcError):
    """The guest image cannot be built or found."""


class TemplateError(VcError):
    """A VM template cannot be made, found or used (factory.py)."""


class HypervisorError(VcError):
    """The VM cannot be created, started or driven."""


class VMLaunchError(HypervisorError):
    FIELDS = ("argv", "output")

    def __init__(self, message: str, argv: Sequence[str] = (), output: str = "") -> None:
        detail = f"{message}\n--- VM output (last lines) ---\n{output}" if output else message
        super().__init__(detail)
        self.argv = tuple(argv)
        self.output = output


class AgentError(VcError):
    FIELDS = ("op", "kind", "message")

    def __init__(self, op: str, kind: str, message: str) -> None:
        super().__init__(f"agent {op} failed ({kind}): {message}")
        self.op = op
        self.kind = kind
        self.message = message


class AgentProtocolError(AgentError):
    def __init__(self, message: str) -> None:
        super().__init__("protocol", "protocol", message)


class DaemonError(VcError):
    """The pod daemon cannot be reached or failed."""


class NetworkError(VcError):
    FIELDS = ("pod_id", "netns", "reason")

    def __init__(self, netns: str, reason: str, pod_id: str = "") -> None:
        where = f"pod {pod_id!r}, " if pod_id else ""
        super().__init__(f"{where}network namespace {netns}: {reason}")
        self.pod_id = pod_id
        self.netns = netns
        self.reason = reason


class BusyError(VcError):
    FIELDS = ("pod_id", "operation")

    def __init__(self, pod_id: str, operation: str, waited: float) -> None:
        super().__init__(
            f"cannot {operation} pod {pod_id!r}: another call has held it for {waited:.0f}s "
            "(a start or a stop under way); try again, or force it"
        )
        self.pod_id = pod_id
        self.operation = operation


class CorruptRecordError(VcError):
    FIELDS = ("pod_id", "path", "reason")

    def __init__(self, pod_id: str, path: object, reason: str) -> None:
        super().__init__(
            f"pod {pod_id!r}: state file {path} is corrupt ({reason}); "
            f"`virtc pod delete {pod_id}` removes the pod"
        )
        self.pod_id = pod_id
        self.path = str(path)
        self.reason = reason


class RuntimeSpecError(VcError):
    """An OCI bundle or config.json cannot be used."""


class ErrorDict(TypedDict):
    """An error as it crosses to another process (:func:`error_to_dict`)."""

    type: str  # the name of its VcError subclass
    message: str
    fields: dict[str, object]  # its FIELDS


def error_to_dict(exc: BaseException) -> ErrorDict:
    if not isinstance(exc, VcError):
        return {"type": "VcError", "message": str(exc), "fields": {}}
    return {"type": type(exc).__name__, "message": str(exc), "fields": exc.fields()}


def error_from_dict(error: object) -> VcError:
    """The error :func:`error_to_dict` wrote, as its own class (VcError for a name
    this module does not define)."""
    if not isinstance(error, dict):
        return DaemonError(f"malformed error from the pod daemon: {error!r}")
    cls = globals().get(str(error.get("type")), VcError)
    if not (isinstance(cls, type) and issubclass(cls, VcError)):
        cls = VcError
    fields = error.get("fields")
    return cls.rebuild(str(error.get("message")), fields if isinstance(fields, dict) else {})
