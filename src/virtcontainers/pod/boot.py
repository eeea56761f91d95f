"""Booting a pod's VM: cold, or as a clone of a template; then its agent.

The template it starts from is picked here (:func:`template_for_pod`), from
those the factory keeps (:mod:`virtcontainers.factory.templates`).  The pod joins its
host cgroup first (so QEMU starts in it), takes over its
network namespace's interfaces, starts the VM, and waits for the agent.  A
cold boot has its NICs from the start; a clone is given its identity, then
its NICs are hot-plugged into the template's spare PCIe slots.  Used by
:meth:`virtcontainers.pod.pod.Pod.start`, which hands over the parts a boot
needs and is told when the VM has started, so that it records the VM.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import KW_ONLY, dataclass
from pathlib import Path

from virtcontainers.cgroupconfig import CgroupConfig
from virtcontainers.config import ImagePaths, PodConfig
from virtcontainers.errors import (
    AgentError,
    ConfigError,
    HypervisorError,
    TemplateError,
)
from virtcontainers.factory.template import HYPERVISOR, Template, TemplateShape, pod_devices
from virtcontainers.factory.templates import (
    ENV_AUTO_TEMPLATES,
    Factory,
    auto_templates_enabled,
    factory_dir,
)
from virtcontainers.host.cgroup import HostCgroup
from virtcontainers.host.logtail import tail
from virtcontainers.hypervisor.accel import detect_accelerator
from virtcontainers.hypervisor.base import Accelerator, VMConfig
from virtcontainers.hypervisor.devices import NetDevice, SharedFsKind
from virtcontainers.pod.eventlog import EventLog
from virtcontainers.pod.nics import NIC_APPEAR_TIMEOUT, PodNics
from virtcontainers.pod.vm import PodVM
from virtcontainers.storage.shareddir import SharedDir
from virtcontainers.storage.sharedfs import choose_shared_fs
from virtcontainers.store import PodPaths, write_json_atomic

log = logging.getLogger(__name__)

AGENT_CONNECT_TIMEOUT = 120.0
VM_EXIT_GRACE = 3.0
CLONE_SEED_BYTES = 64


@contextlib.contextmanager
def template_for_pod(
    config: PodConfig,
    image: ImagePaths,
    accelerator: Accelerator,
    shared_fs: SharedFsKind,
    root: Path | None = None,
    nics: int = 0,
) -> Iterator[Template | None]:
    """The template a pod starts from, kept while its clone loads it; None: boot cold.

    *root* is the factory directory (default: :func:`factory_dir`); *nics*
    how many NICs the clone will be given (hot-plugged into its spare slots).

    ``boot="auto"`` takes a matching template if there is one, else starts
    making it in the background (unless ``$VC_AUTO_TEMPLATES`` is off);
    ``"template"`` raises TemplateError when none can be used (with what there
    is and how to make one); ``"cold"`` never looks.
    """
    if config.boot == "cold":
        yield None
        return
    shape = TemplateShape.for_pod(config, image, accelerator, shared_fs)
    reason = unsupported(config, shared_fs, nics, shape.hotplug_ports)
    key = ""
    if reason is None:
        try:
            key = shape.key
        except TemplateError as exc:
            reason = str(exc)
    if reason is not None:
        if config.boot == "template":
            raise TemplateError(f"pod {config.id!r} cannot start from a template: {reason}")
        log.debug("pod %s boots cold: %s", config.id, reason)
        yield None
        return
    factory = Factory(root)
    with factory.lease(key) as template:
        if template is None:
            if config.boot == "template":
                raise factory.missing(config.id, shape)
            log.debug(
                "pod %s boots cold: no template %s in %s; %s",
                config.id,
                key,
                factory.root,
                _build_in_background(factory, shape, config),
            )
        yield template


def _build_in_background(factory: Factory, shape: TemplateShape, config: PodConfig) -> str:
    """Start making the missing template for the next pods; says what happened."""
    if not auto_templates_enabled():
        return f"automatic templates are off (${ENV_AUTO_TEMPLATES})"
    if not config.auto_template:
        return "the pod asks for no automatic template (auto_template=False)"
    if config.hypervisor != HYPERVISOR.value:
        return f"templates are made of QEMU VMs only, not {config.hypervisor}"
    try:
        started = factory.start_auto_build(shape)
    except (OSError, subprocess.SubprocessError, TemplateError) as exc:
        log.warning("cannot start making a template in the background: %s", exc)
        return "its background build failed to start"
    return "making it in the background" if started else "a background build already runs"


def unsupported(config: PodConfig, shared_fs: SharedFsKind, nics: int, ports: int) -> str | None:
    """Why a pod cannot be a clone at all, or None."""
    spare = config.hotplug_slots()
    if nics + spare > ports:
        return (
            f"it needs {nics + spare} PCIe slots ({nics} NIC(s), {spare} spare) and "
            f"a template has {ports}"
        )
    if shared_fs is not SharedFsKind.VIRTIO_9P:
        return f"its shared directory is {shared_fs.value}, which QEMU cannot save"
    return None


@dataclass
class PodBoot:
    """One start of a pod's VM.

    ``vm_started`` is called with the key of the template the VM was cloned
    from (None: booted cold) once the VM runs, before its agent answers.
    """

    vm: PodVM
    config: PodConfig
    image: ImagePaths | None
    _: KW_ONLY
    paths: PodPaths
    shared: SharedDir
    nics: PodNics
    events: EventLog
    store_root: Path
    vm_started: Callable[[str | None], None]

    def _step(self, name: str) -> None:
        self.events.emit("boot", step=name)

    async def boot(self, standby: str | None = None) -> None:
        """Start the VM, connect its agent and give the guest its network.

        *standby*: the key of the template whose clone is already running,
        restored by a pool's standby (:mod:`virtcontainers.factory.pool`) with
        its agent connected and its shared directory mounted, now this pod's.

        What was started when this raises is the caller's to tear down.
        """
        if standby is not None:
            await self._take_standby(standby)
            return
        self._step("the daemon starts the VM")
        self.paths.vm.mkdir(mode=0o700, exist_ok=True)
        self.shared.prepare()
        # Detected once here: the shared filesystem's choice depends on it too.
        accelerator, reason = detect_accelerator()
        self.vm.log.info("accelerator %s: %s", accelerator.value, reason)
        shared_fs = choose_shared_fs(None, accelerator)
        image = self.image
        if image is None:
            raise ConfigError("pod.image", f"pod {self.vm.pod_id!r} has no guest image recorded")
        if self.config.cgroup is not None:
            self._join_host_cgroup(self.config.cgroup)
            self._step("host cgroup joined")
        try:
            nics = await self._attach_network()
            template = await self._start_vm(image, accelerator, shared_fs, nics)
            self._step("VM launched" if template is None else "VM restored from its template")
            await self._connect_agent()
            self._step("agent answered")
            if template is not None:
                await self._init_clone(shared_fs)
                # A clone has its template's devices only: its NICs come now.
                for nic in nics:
                    await self.vm.hypervisor.hotplug_device(nic)
                self._step("clone given its identity and NICs")
        finally:
            self.nics.close_fds()  # QEMU has its own copies, or failed
        await self._configure_network(nics, hotplugged=template is not None)

    async def _take_standby(self, key: str) -> None:
        """The clone runs: it joins the pod's host cgroup and is given the pod's
        identity (the shared directory is mounted already) and its NICs."""
        self._step("VM taken from the pool")
        if self.config.cgroup is not None:
            self._join_host_cgroup(self.config.cgroup)
            vm_pid = self.vm.hypervisor.pid
            if vm_pid is not None:
                HostCgroup(self.config.cgroup).enter(vm_pid)
            self._step("host cgroup joined")
        self.vm_started(key)
        try:
            nics = await self._attach_network()
            await self._init_clone(SharedFsKind.VIRTIO_9P)
            for nic in nics:
                await self.vm.hypervisor.hotplug_device(nic)
            self._step("clone given its identity and NICs")
        finally:
            self.nics.close_fds()
        await self._configure_network(nics, hotplugged=True)

    async def _configure_network(self, nics: list[NetDevice], hotplugged: bool) -> None:
        # Without NICs the guest's loopback is down, and forwarded connections need it.
        if nics or self.config.forward_loopback:
            wait = NIC_APPEAR_TIMEOUT if hotplugged and nics else 0.0
            await self.vm.agent.configure_network(*self.nics.guest_settings(), wait)
            self._step("network configured in the guest")

    async def _attach_network(self) -> list[NetDevice]:
        """The NICs for the interfaces of the pod's network namespace (none without one)."""
        netns = self.config.netns
        if netns is None:
            return []
        nics = await self.nics.attach(netns, self.vm.pod_id)
        self.vm.log.info("network: %d interface(s) from %s", len(nics), netns)
        self._step(f"{len(nics)} interface(s) tapped")
        return nics

    async def _start_vm(
        self,
        image: ImagePaths,
        accelerator: Accelerator,
        shared_fs: SharedFsKind,
        nics: list[NetDevice],
    ) -> Template | None:
        """Start the VM, cloned from a template that fits or booted cold with
        its NICs; returns the template it was cloned from."""
        root = factory_dir(self.store_root)
        config = self.config
        with template_for_pod(config, image, accelerator, shared_fs, root, len(nics)) as template:
            if template is not None:
                self.vm.log.info("starting from template %s", template.key)
                vm = template.clone_config(
                    self.vm.pod_id,
                    self.paths.vm,
                    self.paths.vm / "agent.sock",
                    self.shared.export,
                )
            else:
                vm = self._cold_vm(image, accelerator, shared_fs, nics)
            await self.vm.hypervisor.create(vm)
            await self.vm.hypervisor.start()
        self.vm_started(template.key if template is not None else None)
        return template

    def _cold_vm(
        self,
        image: ImagePaths,
        accelerator: Accelerator,
        shared_fs: SharedFsKind,
        nics: list[NetDevice],
    ) -> VMConfig:
        """The VM of a pod that boots (not cloned), with its NICs."""
        agent_socket = self.paths.vm / "agent.sock"
        hostname = self.config.hostname or self.vm.pod_id
        return VMConfig(
            vm_id=self.vm.pod_id,
            kernel=image.kernel,
            initrd=image.initrd,
            run_dir=self.paths.vm,
            vcpus=self.config.resources.vcpus,
            memory_mib=self.config.resources.memory_mib,
            kernel_params=(f"vc.hostname={hostname}", *self.config.kernel_params),
            accelerator=accelerator,
            hotplug_ports=self.config.hotplug_slots() or None,
            devices=(
                *pod_devices(image.rootfs, agent_socket, self.shared.export, shared_fs),
                *nics,
            ),
        )

    async def _connect_agent(self) -> None:
        """Handshake with the agent; a VM that dies first is a HypervisorError with its console."""
        vm_exit = asyncio.ensure_future(self.vm.hypervisor.wait())
        connect = asyncio.ensure_future(
            self.vm.agent.connect(self.vm.hypervisor.agent_socket_path(), AGENT_CONNECT_TIMEOUT)
        )
        await asyncio.wait({vm_exit, connect}, return_when=asyncio.FIRST_COMPLETED)
        if not connect.done() or connect.exception() is not None:
            # A dying VM usually resets the agent channel first: give QEMU a moment
            # to exit, so the error says why (its console) rather than "reset".
            await asyncio.wait({vm_exit}, timeout=VM_EXIT_GRACE)
        if vm_exit.done():
            connect.cancel()
            # The run directory goes with the teardown: quote the console here.
            raise HypervisorError(
                f"pod {self.vm.pod_id!r}: the VM exited (code {vm_exit.result()}) before its agent "
                f"answered; its console ended with:\n{self._console_tail()}"
            )
        vm_exit.cancel()
        try:
            connect.result()
        except OSError as exc:
            raise AgentError("connect", "channel", f"pod {self.vm.pod_id!r}: {exc}") from exc
        self.vm.log.info("agent up")

    def _console_tail(self, limit: int = 2048) -> str:
        return tail(self.vm.hypervisor.console_path(), limit) or "(no console output)"

    async def _init_clone(self, shared_fs: SharedFsKind) -> None:
        """The clone woke as its template: give it this pod's name, clock, random
        state and shared directory."""
        clone = await self.vm.agent.init_clone(
            self.config.hostname or self.vm.pod_id,
            secrets.token_bytes(CLONE_SEED_BYTES),
            time.time_ns(),
            shared_fs.value,
        )
        if not clone.reseeded:
            self.vm.log.warning("the clone's random state was mixed with a seed, not reseeded")
        # What the guest kernel made of its new VM generation id alone, before
        # our seed: for a check that sibling clones did not resume alike.
        self.events.emit("clone", resumed_random=clone.resumed_random.hex())

    def _join_host_cgroup(self, config: CgroupConfig) -> None:
        """The daemon joins the engine's cgroup, so QEMU and its helpers start in it."""
        write_json_atomic(self.paths.cgroup, config.to_dict())  # removed with the run files
        cgroup = HostCgroup(config)
        cgroup.create(self.config.resources.memory_mib)
        cgroup.enter(os.getpid())
        self.vm.log.info("in host cgroup %s", cgroup.relative)
