"""What the API answers about pods, containers and processes: snapshots of their records."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from virtcontainers.agent.results import GuestDetails
from virtcontainers.states import ContainerState, PodState
from virtcontainers.store import ContainerRecord, PodRecord


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
