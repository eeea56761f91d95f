"""A pod's record and its containers': what the store keeps of them, as values.

A :class:`PodRecord` is ``state.json`` (:mod:`virtcontainers.store` writes and
reads it); it holds the pod's config, state and VM, and a
:class:`ContainerRecord` per container; its daemon and VM are each a
:class:`ProcessRef`.  ``from_json`` checks the shape of what it parses, never
the host: a record stays loadable when the host changes
(:mod:`virtcontainers.host.proc` asks the host about a process).
"""

from __future__ import annotations

import re
import signal
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, NotRequired, TypedDict

from virtcontainers.agent.results import ExitStatus, GuestDetails
from virtcontainers.config import (
    ContainerConfig,
    ContainerConfigDict,
    ImagePaths,
    ImagePathsDict,
    PodConfig,
    PodConfigDict,
)
from virtcontainers.errors import ConfigError
from virtcontainers.states import ContainerState, PodState

STATE_VERSION = 2
KILLED = ExitStatus(128 + signal.SIGKILL, signal.SIGKILL)
"""What a process that went down with its VM (or lost its agent) reports."""


def _integer(data: Mapping[str, Any], name: str) -> int | None:
    value = data.get(name)
    if value is not None and (not isinstance(value, int) or isinstance(value, bool)):
        raise ConfigError(name, f"expected an integer, got {value!r}")
    return value


def _number(data: Mapping[str, Any], name: str) -> float | None:
    value = data.get(name)
    if value is not None and (not isinstance(value, int | float) or isinstance(value, bool)):
        raise ConfigError(name, f"expected a number, got {value!r}")
    return None if value is None else float(value)


def _text(data: Mapping[str, Any], name: str) -> str | None:
    value = data.get(name)
    if value is not None and not isinstance(value, str):
        raise ConfigError(name, f"expected a string, got {value!r}")
    return value


class ProcessRecord(TypedDict):
    """A :class:`ProcessRef` as the store keeps it."""

    pid: int
    start_time: int


@dataclass(frozen=True)
class ProcessRef:
    """One process, for as long as it lives: its pid and start time.

    A pid alone names whichever process holds it now (the kernel hands the pid
    of an exited process to another); the start time (field 22 of
    ``/proc/<pid>/stat``, clock ticks after boot) tells the two apart.
    """

    pid: int
    start_time: int

    @classmethod
    def from_record(cls, data: object) -> ProcessRef | None:
        """Parse ``{"pid": int, "start_time": int}``; anything else is None."""
        if not isinstance(data, dict):
            return None
        pid, start = data.get("pid"), data.get("start_time")
        if type(pid) is not int or type(start) is not int or pid <= 0:
            return None
        return cls(pid, start)

    def to_record(self) -> ProcessRecord:
        return {"pid": self.pid, "start_time": self.start_time}


class ContainerRecordJson(TypedDict):
    config: ContainerConfigDict
    state: str
    pid: int | None
    exit_code: int | None
    signal: int | None
    oom_killed: bool
    logged: NotRequired[bool]


@dataclass
class ContainerRecord:
    """What the store keeps of a container: its config, state and last exit."""

    config: ContainerConfig
    state: ContainerState = ContainerState.CREATED
    pid: int | None = None
    exit: ExitStatus | None = None
    oom_killed: bool = False
    logged: bool = False
    """Its output goes to the pod's ``logs/<id>.log`` (it was given no fds), which
    a daemon that reattaches to the pod writes on."""

    @property
    def id(self) -> str:
        return self.config.id

    def to_json(self) -> ContainerRecordJson:
        return {
            "config": self.config.to_dict(),
            "state": self.state.value,
            "pid": self.pid,
            "exit_code": self.exit.exit_code if self.exit else None,
            "signal": self.exit.signal if self.exit else None,
            "oom_killed": self.oom_killed,
            "logged": self.logged,
        }

    @classmethod
    def from_json(cls, data: object) -> ContainerRecord:
        """Parse a record (ConfigError naming the field when it is malformed)."""
        if not isinstance(data, dict):
            raise ConfigError("container record", f"expected an object, got {data!r}")
        try:
            state = ContainerState(data.get("state"))
        except ValueError:
            raise ConfigError("container.state", f"unknown state {data.get('state')!r}") from None
        exit_code = _integer(data, "exit_code")
        return cls(
            config=ContainerConfig.from_dict(data.get("config") or {}),
            state=state,
            pid=_integer(data, "pid"),
            exit=ExitStatus(exit_code, _integer(data, "signal")) if exit_code is not None else None,
            oom_killed=bool(data.get("oom_killed")),
            logged=data.get("logged") is True,
        )


def end_with_vm(containers: Iterable[ContainerRecord]) -> None:
    """Containers whose VM went away: the running ones stopped, killed."""
    for container in containers:
        if container.state in (ContainerState.RUNNING, ContainerState.PAUSED):
            container.state = container.state.moved_to(container.id, ContainerState.STOPPED)
            container.exit = container.exit or KILLED


MAX_NICS = 64
"""More NICs than a VM has root ports for: a longer list is not one we wrote."""
_DEVICE_ID = re.compile(r"net[0-9]{1,9}")
_IFNAMSIZ = 15


class NicRecordJson(TypedDict):
    interface: str
    device: str
    hotplugged: bool


@dataclass(frozen=True)
class NicRecord:
    """A NIC of the pod's VM: the interface of the pod's namespace it carries,
    and its device id in the VM, kept for a daemon that reattaches."""

    interface: str
    device_id: str
    hotplugged: bool

    def to_json(self) -> NicRecordJson:
        return {
            "interface": self.interface,
            "device": self.device_id,
            "hotplugged": self.hotplugged,
        }

    @classmethod
    def from_json(cls, data: object) -> NicRecord:
        """Parse one NIC (ConfigError("nics", ...) when it is malformed)."""
        if not isinstance(data, dict):
            raise ConfigError("nics", f"expected an object, got {data!r:.100}")
        interface, device = data.get("interface"), data.get("device")
        if not isinstance(interface, str) or not 0 < len(interface) <= _IFNAMSIZ:
            raise ConfigError("nics", f"{interface!r:.100} is not an interface name")
        if not isinstance(device, str) or not _DEVICE_ID.fullmatch(device):
            raise ConfigError("nics", f"{device!r:.100} is not a NIC's device id (netN)")
        return cls(interface, device, data.get("hotplugged") is True)


def _nics(data: object) -> list[NicRecord]:
    if data is None:
        return []
    if not isinstance(data, list) or len(data) > MAX_NICS:
        raise ConfigError("nics", f"expected a list of at most {MAX_NICS} NICs, got {data!r:.100}")
    nics = [NicRecord.from_json(item) for item in data]
    if len({n.interface for n in nics}) < len(nics) or len({n.device_id for n in nics}) < len(nics):
        raise ConfigError("nics", "an interface or a device id is named twice")
    return nics


class PodRecordJson(TypedDict):
    """``state.json``."""

    version: int
    config: PodConfigDict
    state: str
    containers: dict[str, ContainerRecordJson]
    image: ImagePathsDict | None
    created_at: float
    started_at: float | None
    daemon: ProcessRecord | None
    daemon_hosted: NotRequired[bool]
    owner: NotRequired[ProcessRecord | None]
    vm: ProcessRecord | None
    error: str | None
    guest: dict[str, object] | None  # the fields of GuestDetails
    template: str | None
    nics: NotRequired[list[NicRecordJson]]
    next_nic: NotRequired[int]


@dataclass
class PodRecord:
    """What the store keeps of a pod (``state.json``)."""

    config: PodConfig
    state: PodState = PodState.CREATED
    containers: dict[str, ContainerRecord] = field(default_factory=dict)
    image: ImagePaths | None = None
    created_at: float = 0.0
    started_at: float | None = None
    daemon: ProcessRef | None = None
    daemon_hosted: bool = False
    """The daemon runs on a longer-lived process's loop (containerd's shim): when
    that process dies, its owner's semantics apply, and no new daemon reattaches."""
    owner: ProcessRef | None = None
    """The process whose exit stops and deletes the running pod (``virtc run
    --rm``), kept for a daemon that reattaches."""
    vm: ProcessRef | None = None
    error: str | None = None
    guest: GuestDetails | None = None
    template: str | None = None
    """The key of the VM template that the pod's last VM was cloned from (None: booted cold)."""
    nics: list[NicRecord] = field(default_factory=list)
    """The VM's NICs, which a daemon that reattaches serves and unplugs again."""
    next_nic: int = 0
    """The number of the next NIC's device id: ids are not reused in one VM's life."""

    @property
    def id(self) -> str:
        return self.config.id

    def mark_stopped(self, error: str | None) -> None:
        """The pod's VM is gone, and with it every process of its containers."""
        if self.state is not PodState.STOPPED:
            self.state = self.state.moved_to(self.id, PodState.STOPPED)
        end_with_vm(self.containers.values())
        self.daemon = self.vm = None
        self.nics, self.next_nic = [], 0
        self.error = self.error or error

    def to_json(self) -> PodRecordJson:
        return {
            "version": STATE_VERSION,
            "config": self.config.to_dict(),
            "state": self.state.value,
            "containers": {cid: c.to_json() for cid, c in self.containers.items()},
            "image": self.image.to_dict() if self.image else None,
            "created_at": self.created_at,
            "started_at": self.started_at,
            "daemon": self.daemon.to_record() if self.daemon else None,
            "daemon_hosted": self.daemon_hosted,
            "owner": self.owner.to_record() if self.owner else None,
            "vm": self.vm.to_record() if self.vm else None,
            "error": self.error,
            "guest": self.guest.__dict__ if self.guest else None,
            "template": self.template,
            "nics": [nic.to_json() for nic in self.nics],
            "next_nic": self.next_nic,
        }

    @classmethod
    def from_json(cls, data: object) -> PodRecord:
        """Parse a record (ConfigError naming the field when it is malformed)."""
        if not isinstance(data, dict) or data.get("version") != STATE_VERSION:
            raise ConfigError("version", f"expected a version {STATE_VERSION} record")
        try:
            state = PodState(data.get("state"))
        except ValueError:
            raise ConfigError("state", f"unknown state {data.get('state')!r}") from None
        containers = data.get("containers")
        if not isinstance(containers, dict):
            raise ConfigError("containers", f"expected an object, got {containers!r}")
        image = data.get("image")
        return cls(
            config=PodConfig.from_dict(data.get("config") or {}),
            state=state,
            containers={cid: ContainerRecord.from_json(c) for cid, c in containers.items()},
            image=ImagePaths.from_dict(image) if isinstance(image, dict) else None,
            created_at=_number(data, "created_at") or 0.0,
            started_at=_number(data, "started_at"),
            daemon=ProcessRef.from_record(data.get("daemon")),
            daemon_hosted=data.get("daemon_hosted") is True,
            owner=ProcessRef.from_record(data.get("owner")),
            vm=ProcessRef.from_record(data.get("vm")),
            error=_text(data, "error"),
            guest=_guest_details(data.get("guest")),
            template=_text(data, "template"),
            nics=_nics(data.get("nics")),
            next_nic=max(_integer(data, "next_nic") or 0, 0),
        )


def _guest_details(data: object) -> GuestDetails | None:
    if not isinstance(data, dict):
        return None
    try:
        return GuestDetails(**data)
    except TypeError:
        raise ConfigError("guest", f"malformed guest details {data!r}") from None
