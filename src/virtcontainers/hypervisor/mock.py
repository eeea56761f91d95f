"""A hypervisor without a VM, for unit tests of the layers above.

It keeps the same lifecycle rules as the QEMU driver, records every call in
:attr:`MockHypervisor.calls`, and lets a test make the VM fail to start
(:attr:`fail_start`) or exit (:meth:`exit`).  ``pid`` is always None.  Like
QEMU, it holds a duplicate of each NIC's tap fd while the NIC is plugged, so
a tap lives exactly as long as it would beside a real VM.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Mapping
from pathlib import Path

from virtcontainers.errors import ConfigError, HypervisorError, NotFoundError, VMLaunchError
from virtcontainers.hypervisor.base import (
    UNPLUG_TIMEOUT,
    Capabilities,
    Lifecycle,
    VMConfig,
    VMState,
)
from virtcontainers.hypervisor.devices import (
    BlockDevice,
    Device,
    NetDevice,
    SerialPortDevice,
    moved_device,
)
from virtcontainers.records import ProcessRef

MOCK_MACHINE = "mock"


class MockHypervisor:
    """A :class:`~virtcontainers.hypervisor.base.Hypervisor` that records calls."""

    def __init__(self, *, hotplug: bool = True) -> None:
        self.calls: list[tuple[str, object]] = []
        self.devices: list[Device] = []
        self.hotplugged: list[Device] = []
        self.unplugged: list[str] = []
        self.tap_fds: dict[str, int] = {}
        self.fail_start: str | None = None
        self.frozen = False
        """Paused by another monitor client, as QMP ``stop`` would, behind the pod's back."""
        self._hotplug = hotplug
        self._life = Lifecycle()
        self._config: VMConfig | None = None
        self._exit_code: int | None = None
        self._exited: asyncio.Event | None = None

    @property
    def state(self) -> VMState:
        return self._life.state

    @property
    def config(self) -> VMConfig:
        assert self._config is not None, "create() first"
        return self._config

    async def create(self, config: VMConfig) -> None:
        self._life.vm_id = config.vm_id
        self._life.require("create", VMState.NEW, VMState.CREATED, VMState.STOPPED)
        self.calls.append(("create", config))
        for name, path in (("kernel", config.kernel), ("initrd", config.initrd)):
            if not path.is_file():
                raise ConfigError(name, f"{path} does not exist or is not a file")
        self._config = config
        self.devices = list(config.devices)
        self._exit_code = None
        self._life.move(VMState.CREATED)

    def relocate(self, moves: Mapping[Path, Path], vm_id: str) -> None:
        self.calls.append(("relocate", vm_id))
        self._config = self.config.relocated(moves, vm_id)
        self.devices = [moved_device(d, moves) for d in self.devices]
        self._life.vm_id = vm_id

    def add_device(self, device: Device) -> None:
        self._life.require("add a device to", VMState.CREATED)
        self.calls.append(("add_device", device))
        if any(d.id == device.id for d in self.devices):
            raise ConfigError("device id", f"{device.id!r} is already used in {self._life.what}")
        self.devices.append(device)

    async def start(self, timeout: float = 60) -> None:
        self._life.require("start", VMState.CREATED)
        self.calls.append(("start", timeout))
        if self.fail_start is not None:
            raise VMLaunchError(f"{self._life.what} failed to start", ["mock"], self.fail_start)
        self._exited = asyncio.Event()
        self.hotplugged, self.unplugged = [], []
        for device in self.devices:
            self._hold_tap(device)
        self._life.move(VMState.RUNNING)

    def _hold_tap(self, device: Device) -> None:
        if isinstance(device, NetDevice) and device.tap_fd is not None:
            self.tap_fds[device.id] = os.dup(device.tap_fd)

    def exit(self, code: int = 0) -> None:
        """Simulate the VM process exiting with *code*."""
        self._life.require("exit", VMState.RUNNING, VMState.PAUSED)
        self.calls.append(("exit", code))
        self._exit_code = code
        while self.tap_fds:
            os.close(self.tap_fds.popitem()[1])
        self._life.move(VMState.STOPPED)
        assert self._exited is not None
        self._exited.set()

    async def adopt(self, config: VMConfig, process: ProcessRef, timeout: float = 60) -> None:
        """A mock VM lives in the daemon that made it: none is left to adopt."""
        self._life.require("adopt", VMState.NEW)
        raise HypervisorError(f"{self._life.what}: a mock VM does not outlive its daemon")

    async def stop(self, timeout: float = 10) -> None:
        if self._life.state is VMState.STOPPED:
            return
        self._life.require("stop", VMState.RUNNING, VMState.PAUSED)
        self.calls.append(("stop", timeout))
        self.exit(0)

    async def pause(self) -> None:
        self._life.require("pause", VMState.RUNNING)
        self.calls.append(("pause", None))
        self._life.move(VMState.PAUSED)

    async def resume(self) -> None:
        self._life.require("resume", VMState.PAUSED)
        self.calls.append(("resume", None))
        self.frozen = False  # as QMP cont continues a VM, whoever stopped it
        self._life.move(VMState.RUNNING)

    async def hotplug_device(self, device: Device) -> None:
        self._life.require("hot-plug a device into", VMState.RUNNING, VMState.PAUSED)
        self.calls.append(("hotplug_device", device))
        if not self._hotplug:
            raise HypervisorError(f"hot-plug is not supported on mock ({self._life.what})")
        if device.id in self.plugged():
            raise ConfigError("device id", f"{device.id!r} is already used in {self._life.what}")
        self.hotplugged.append(device)
        self._hold_tap(device)

    async def unplug_device(self, device_id: str, timeout: float = UNPLUG_TIMEOUT) -> None:
        self._life.require("unplug a device from", VMState.RUNNING)
        self.calls.append(("unplug_device", device_id))
        device = self.plugged().get(device_id)
        if device is None:
            raise NotFoundError("device", device_id, f"in {self._life.what}")
        if not self._hotplug or not isinstance(device, NetDevice | BlockDevice):
            raise HypervisorError(
                f"{type(device).__name__} {device_id!r} of mock ({self._life.what}) "
                "cannot be unplugged"
            )
        self.hotplugged = [d for d in self.hotplugged if d.id != device_id]
        self.unplugged.append(device_id)
        fd = self.tap_fds.pop(device_id, None)
        if fd is not None:
            os.close(fd)

    def plugged(self) -> dict[str, Device]:
        """Every device the VM has now, by id."""
        cold = {d.id: d for d in self.devices if d.id not in self.unplugged}
        return cold | {d.id: d for d in self.hotplugged}

    async def wait(self) -> int:
        if self._life.state is VMState.STOPPED and self._exit_code is not None:
            return self._exit_code
        self._life.require("wait for", VMState.RUNNING, VMState.PAUSED)
        assert self._exited is not None
        await self._exited.wait()
        assert self._exit_code is not None
        return self._exit_code

    async def save_state(self, path: Path, timeout: float = 60) -> None:
        """Pause, and write a placeholder state file (there is no VM to save)."""
        self._life.require("save the state of", VMState.RUNNING, VMState.PAUSED)
        self.calls.append(("save_state", path))
        if self._life.state is VMState.RUNNING:
            await self.pause()
        path.write_bytes(b"mock saved state\n")

    def console_path(self) -> Path:
        return self.config.run_dir / "console.log"

    def agent_socket_path(self) -> Path:
        for d in self.devices:
            if isinstance(d, SerialPortDevice) and d.name == "agent":
                return d.socket_path
        return self.config.run_dir / "agent.sock"

    def capabilities(self) -> Capabilities:
        return Capabilities(
            machine=MOCK_MACHINE,
            accelerator=None,
            hotplug_block=self._hotplug,
            hotplug_cpu=False,
            hotplug_memory=False,
            hotplug_net=self._hotplug,
            hotplug_serial_port=self._hotplug,
            shared_fs="none",
            pause=True,
        )

    @property
    def pid(self) -> int | None:
        return None

    @property
    def running(self) -> bool:
        return self._life.state in (VMState.RUNNING, VMState.PAUSED)

    @property
    def vcpus_running(self) -> bool:
        return self._life.state is VMState.RUNNING and not self.frozen
