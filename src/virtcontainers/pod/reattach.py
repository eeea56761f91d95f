"""Reattaching: a new daemon takes over a pod whose VM outlived the daemon that
started it.

The VM is adopted (known by the record's ``ProcessRef`` through a pidfd, its
QMP socket connected again), the agent's port is connected again (QEMU keeps
listening on it; the handshake's fresh nonce drops what was meant for the
previous daemon), and the guest says which containers and processes it kept,
with their exit statuses and their detached output streams.  The pod then
rebuilds its state from its record and that table (:meth:`Pod.reattach
<virtcontainers.pod.pod.Pod.reattach>`).  Used by the daemon started in
reattach mode (:mod:`virtcontainers.daemon.server`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from virtcontainers.agent.results import GuestTable, KeptProcess
from virtcontainers.config import ImagePaths
from virtcontainers.errors import AgentError, ConfigError
from virtcontainers.hypervisor.base import VMConfig, VMState
from virtcontainers.hypervisor.devices import Device
from virtcontainers.pod.eventlog import EventLog
from virtcontainers.pod.vm import PodVM
from virtcontainers.records import ProcessRef
from virtcontainers.states import ContainerState
from virtcontainers.store import PodPaths

ADOPT_TIMEOUT = 30.0
AGENT_RECONNECT_TIMEOUT = 30.0
GUEST_STATES = {
    "created": ContainerState.CREATED,
    "running": ContainerState.RUNNING,
    "paused": ContainerState.PAUSED,
    "stopped": ContainerState.STOPPED,
}
"""A container's status in the guest, as the host's state; any other (a create
under way when the daemon died) means the host cannot take it over."""


@dataclass
class PodReattach:
    """One reattach to a running VM: the VM as recorded, its agent, the guest's table.
    ``devices`` are the NICs and disks the pod's record says the VM may hold."""

    vm: PodVM
    image: ImagePaths | None
    paths: PodPaths
    process: ProcessRef
    events: EventLog
    devices: list[Device] = field(default_factory=list)

    async def reattach(self) -> GuestTable:
        """Adopt the VM, reconnect its agent and read what the guest kept.  A
        paused VM is resumed for that (the pod pauses it again when it has
        taken its processes over).

        Raises HypervisorError (the VM is gone or silent), AgentError (the
        agent does not answer).  What was taken over when this raises is the
        caller's to tear down.
        """
        image = self.image
        if image is None:
            raise ConfigError("pod.image", f"pod {self.vm.pod_id!r} has no guest image recorded")
        config = VMConfig(
            vm_id=self.vm.pod_id,
            kernel=image.kernel,
            initrd=image.initrd,
            run_dir=self.paths.vm,
            devices=tuple(self.devices),
        )
        await self.vm.hypervisor.adopt(config, self.process, ADOPT_TIMEOUT)
        self.events.emit("reattach", step="VM adopted")
        if self.vm.hypervisor.state is VMState.PAUSED:
            await (
                self.vm.hypervisor.resume()
            )  # a frozen guest cannot answer: the pod pauses it again
        socket = self.vm.hypervisor.agent_socket_path()
        try:
            await self.vm.agent.connect(socket, AGENT_RECONNECT_TIMEOUT)
        except OSError as exc:
            raise AgentError("connect", "channel", f"pod {self.vm.pod_id!r}: {exc}") from exc
        table = await self.vm.agent.process_table()
        self.events.emit("reattach", step="agent answered")
        self.vm.log.info(
            "reattached: the guest kept %d container(s), %d process(es)",
            len(table.containers),
            len(table.processes),
        )
        return table


def kept_processes(table: GuestTable, known: set[str]) -> list[KeptProcess]:
    """The processes of the table that this pod takes over: those of containers
    its record knows (with a status the host has a state for), and the guest's
    own execs.  Anything else stays in the guest, untouched."""
    return [
        process
        for process in table.processes
        if process.container_id is None
        or (
            process.container_id in known
            and table.containers.get(process.container_id) in GUEST_STATES
        )
    ]
