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
    ├── HypervisorError          the VM cannot be created, started or driven
    │   └── VMLaunchError        QEMU exited or failed while starting (argv, output)
    ├── AgentError               the guest agent failed a request (op, kind)
    │   └── AgentProtocolError   the guest broke the wire protocol; the pod's
    │                            agent connection is unusable
    ├── DaemonError              the pod daemon cannot be reached or failed
    └── RuntimeSpecError         an OCI bundle or config.json cannot be used
"""

from __future__ import annotations

from collections.abc import Sequence


class VcError(Exception):
    """Root of every virtcontainers error."""


class ConfigError(VcError):
    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"invalid {field}: {reason}")
        self.field = field
        self.reason = reason


class NotFoundError(VcError):
    def __init__(self, kind: str, ident: str, hint: str = "") -> None:
        message = f"{kind} {ident!r} not found"
        super().__init__(f"{message}; {hint}" if hint else message)
        self.kind = kind
        self.ident = ident


class ExistsError(VcError):
    def __init__(self, kind: str, ident: str) -> None:
        super().__init__(f"{kind} {ident!r} already exists")
        self.kind = kind
        self.ident = ident


class StateError(VcError):
    def __init__(self, what: str, operation: str, current: str, required: Sequence[str]) -> None:
        allowed = " or ".join(required)
        super().__init__(f"cannot {operation} {what}: it is {current}, must be {allowed}")
        self.what = what
        self.operation = operation
        self.current = current
        self.required = tuple(required)


class ImageError(VcError):
    """The guest image cannot be built or found."""


class HypervisorError(VcError):
    """The VM cannot be created, started or driven."""


class VMLaunchError(HypervisorError):
    def __init__(self, message: str, argv: Sequence[str] = (), output: str = "") -> None:
        detail = f"{message}\n--- VM output (last lines) ---\n{output}" if output else message
        super().__init__(detail)
        self.argv = tuple(argv)
        self.output = output


class AgentError(VcError):
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


class RuntimeSpecError(VcError):
    """An OCI bundle or config.json cannot be used."""
