"""What the API answers about pods, containers, processes and interfaces: snapshots
of their records."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from virtcontainers.agent.results import GuestDetails
from virtcontainers.errors import DaemonError
from virtcontainers.records import ContainerRecord, PodRecord
from virtcontainers.states import ContainerState, PodState


@dataclass(frozen=True)
class ContainerStatus:
    id: str
    state: ContainerState
    pid: int | None
    exit_code: int | None
    signal: int | None
    oom_killed: bool
    rootfs: Path

    @classmethod
    def from_record(cls, record: ContainerRecord) -> ContainerStatus:
        return cls(
            id=record.id,
            state=record.state,
            pid=record.pid,
            exit_code=record.exit.exit_code if record.exit else None,
            signal=record.exit.signal if record.exit else None,
            oom_killed=record.oom_killed,
            rootfs=record.config.rootfs,
        )

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "state": self.state.value, "rootfs": str(self.rootfs)}


@dataclass(frozen=True)
class PodStatus:
    id: str
    state: PodState
    containers: tuple[ContainerStatus, ...]
    hypervisor: str
    vm_pid: int | None
    daemon_pid: int | None
    error: str | None
    guest: GuestDetails | None
    created_at: float
    template: str | None = None
    """The VM template the pod's VM was cloned from (None: it booted cold)."""

    @classmethod
    def from_record(cls, record: PodRecord) -> PodStatus:
        return cls(
            id=record.id,
            state=record.state,
            containers=tuple(ContainerStatus.from_record(c) for c in record.containers.values()),
            hypervisor=record.config.hypervisor,
            vm_pid=record.vm.pid if record.vm else None,
            daemon_pid=record.daemon.pid if record.daemon else None,
            error=record.error,
            guest=record.guest,
            created_at=record.created_at,
            template=record.template,
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            **asdict(self),
            "state": self.state.value,
            "containers": [c.to_dict() for c in self.containers],
        }


@dataclass(frozen=True)
class ProcessHandle:
    pod_id: str
    container_id: str | None  # None: a process in the VM, outside containers
    exec_id: str
    pid: int


@dataclass(frozen=True)
class InterfaceStatus:
    """An interface of the pod's namespace that its VM carries, as it was attached."""

    name: str
    mac: str
    mtu: int
    addresses: tuple[str, ...]  # CIDR, IPv4 first
    hotplugged: bool  # added to the running pod, not found at boot

    def to_dict(self) -> dict[str, object]:
        return {**asdict(self), "addresses": list(self.addresses)}

    @classmethod
    def from_dict(cls, method: str, data: object) -> InterfaceStatus:
        """Raises DaemonError for an answer that is not an interface."""
        if isinstance(data, dict):
            name, mac, mtu = data.get("name"), data.get("mac"), data.get("mtu")
            addresses, hotplugged = data.get("addresses"), data.get("hotplugged")
            if (
                isinstance(name, str)
                and isinstance(mac, str)
                and isinstance(mtu, int)
                and isinstance(addresses, list)
                and all(isinstance(a, str) for a in addresses)
                and isinstance(hotplugged, bool)
            ):
                return cls(name, mac, mtu, tuple(addresses), hotplugged)
        raise DaemonError(f"{method}: malformed interface {data!r}")
