"""Hot-plug for the QEMU driver: devices added to and removed from a running VM.

NICs go into empty PCIe root ports (``VMConfig.hotplug_ports``), their tap fd
passed over QMP; disks go into root ports as well; serial ports plug
anywhere.  Unplugging waits for the guest to let the device go.  The driver
(:class:`~virtcontainers.hypervisor.qemu.driver.QemuHypervisor`) hands it the
VM's QMP session, command and :class:`PluggedDevices`.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import Callable
from typing import Any

from qemu.qmp import ExecuteError
from qemu.qmp.message import Message

from virtcontainers.errors import ConfigError, HypervisorError, NotFoundError
from virtcontainers.hypervisor.base import UNPLUG_TIMEOUT
from virtcontainers.hypervisor.devices import (
    BlockDevice,
    Device,
    NetDevice,
    SerialPortDevice,
    check_socket_path,
)
from virtcontainers.hypervisor.qemu.command import (
    HOTPLUG_PORT_PREFIX,
    VIRTIO_SERIAL_ID,
    QemuCommand,
    blockdev_node,
    hotplug_port_id,
)
from virtcontainers.hypervisor.qemu.session import QmpSession


@dataclasses.dataclass
class PluggedDevices:
    """How a running VM's devices differ from its command line, and which
    PCIe root port each device in one holds."""

    hotplugged: dict[str, Device] = dataclasses.field(default_factory=dict)
    unplugged: set[str] = dataclasses.field(default_factory=set)  # cold-plugged, since removed
    ports: dict[str, str] = dataclasses.field(default_factory=dict)  # device id -> its root port


@dataclasses.dataclass(frozen=True)
class RootPorts:
    """A running VM's PCIe root ports as QEMU reports them: how many, and the
    device each occupied one holds (device id -> port id)."""

    count: int
    occupied: dict[str, str]


MAX_ROOT_PORTS = 256
"""More than any VM of ours renders: a larger answer is refused, not trusted."""


async def query_root_ports(session: QmpSession) -> RootPorts:
    """Ask QEMU (``query-pci``) which root ports the VM has and what is in them,
    for a daemon that adopts a VM another daemon launched.

    Our ports are numbered from 0 without gaps (:func:`hotplug_port_id`);
    anything else in the answer raises HypervisorError.
    """
    reply = await session.execute("query-pci")
    occupied: dict[str, str] = {}
    ports: set[str] = set()
    for bus in _objects(reply, "query-pci"):
        for device in _objects(bus.get("devices"), "query-pci devices"):
            port = device.get("qdev_id")
            if not isinstance(port, str) or not port.startswith(HOTPLUG_PORT_PREFIX):
                continue
            ports.add(port)
            bridge = device.get("pci_bridge")
            children = bridge.get("devices", []) if isinstance(bridge, dict) else []
            for child in _objects(children, f"root port {port}"):
                ident = child.get("qdev_id")
                if isinstance(ident, str) and ident:
                    occupied[ident] = port
    expected = {hotplug_port_id(n) for n in range(len(ports))}
    if ports != expected or len(ports) > MAX_ROOT_PORTS:
        raise HypervisorError(
            f"{session.what}: QEMU reports root ports {sorted(ports)}, not ours "
            f"({HOTPLUG_PORT_PREFIX}0 to {HOTPLUG_PORT_PREFIX}N without gaps)"
        )
    return RootPorts(len(ports), occupied)


def _objects(value: object, what: str) -> list[dict[str, Any]]:
    if not isinstance(value, list) or not all(isinstance(item, dict) for item in value):
        raise HypervisorError(f"malformed {what} answer from QEMU: {value!r:.200}")
    return value


class QemuHotplug:
    """Hot-plug and unplug on one running QEMU VM.

    *command* is what the VM was launched with (its cold-plugged devices, its
    root ports); *check_device* raises ConfigError for a device this VM
    cannot be given.  The caller checks that the VM runs.
    """

    def __init__(
        self,
        session: QmpSession,
        command: QemuCommand,
        plugged: PluggedDevices,
        check_device: Callable[[Device], None],
    ) -> None:
        self.session = session
        self.command = command
        self.plugged = plugged
        self.check_device = check_device

    async def plug(self, device: Device) -> None:
        """Attach *device* to the running VM.

        Supported: SerialPortDevice (any machine), NetDevice (into a free
        PCIe root port: a VM created with ``hotplug_ports``, or q35) and
        BlockDevice (likewise).  A NetDevice's ``tap_fd`` is
        passed to QEMU over QMP (SCM_RIGHTS); the caller keeps its own.
        Raises HypervisorError for anything else, when no root port is free,
        or when QEMU refuses; ConfigError for an invalid device or an id in
        use.
        """
        self.check_device(device)
        if device.id in self._present():
            raise ConfigError("device id", f"{device.id!r} is already used in {self.session.what}")
        command = self.command
        match device:
            case SerialPortDevice():
                check_socket_path("socket_path", device.socket_path)
                await self._hotplug_serial(device)
            case NetDevice() if command.port_ids():
                await self._hotplug_net(device)
            case BlockDevice() if command.port_ids():
                await self._hotplug_block(device)
            case _:
                raise HypervisorError(
                    f"hot-plug of {type(device).__name__} {device.id!r} is not supported on "
                    f"{command.machine} ({self.session.what}) without hot-plug ports; cold-plug "
                    "it with add_device before start"
                )
        self.plugged.hotplugged[device.id] = device
        self.plugged.unplugged.discard(device.id)

    def _present(self) -> dict[str, Device]:
        """Every device the VM has now, by id."""
        cold = {d.id: d for d in self.command.devices if d.id not in self.plugged.unplugged}
        return cold | self.plugged.hotplugged

    def _free_port(self) -> str:
        ports = self.command.port_ids()
        used = set(self.plugged.ports.values())
        for port in ports:
            if port not in used:
                return port
        raise HypervisorError(
            f"{self.session.what} has no free hot-plug slot (all {len(ports)} PCIe root ports "
            "in use); unplug a device first"
        )

    async def _hotplug_net(self, device: NetDevice) -> None:
        port = self._free_port()
        backend: dict[str, object] = {"type": "tap", "id": device.id, "vhost": False}
        fd_name = f"{device.id}-tap"
        if device.tap_fd is not None:
            await self.session.pass_fd(device.tap_fd, fd_name)
            backend["fd"] = fd_name
        else:
            backend |= {"ifname": device.tap_name, "script": "no", "downscript": "no"}
        try:
            await self.session.execute("netdev_add", backend)
        except HypervisorError:
            if device.tap_fd is not None:
                with contextlib.suppress(HypervisorError):
                    await self.session.execute("closefd", {"fdname": fd_name})
            raise
        nic = {"driver": "virtio-net-pci", "netdev": device.id, "mac": device.mac}
        try:
            await self.session.execute("device_add", {**nic, "id": device.id, "bus": port})
        except HypervisorError:
            with contextlib.suppress(HypervisorError):
                await self.session.execute("netdev_del", {"id": device.id})
            raise
        self.plugged.ports[device.id] = port

    async def unplug(self, device_id: str, timeout: float = UNPLUG_TIMEOUT) -> None:
        """Unplug a NIC or disk in a root port (hot-plugged, or a NIC
        cold-plugged into a VM with hot-plug ports), wait for the guest to
        release it, then free its backend (netdev or block node).

        Raises NotFoundError, HypervisorError (not a NIC in a root port, QEMU
        refused, or no release within *timeout* seconds: the device stays).
        The caller checks that the VM runs.
        """
        device = self._present().get(device_id)
        if device is None:
            raise NotFoundError("device", device_id, f"in {self.session.what}")
        if not isinstance(device, NetDevice | BlockDevice) or device_id not in self.plugged.ports:
            raise HypervisorError(
                f"{type(device).__name__} {device_id!r} of {self.session.what} cannot be "
                "unplugged: only NICs and disks in a PCIe root port can (create the VM with "
                "hotplug_ports)"
            )
        await self._device_del(device_id, timeout)
        self.plugged.hotplugged.pop(device_id, None)
        self.plugged.unplugged.add(device_id)
        del self.plugged.ports[device_id]
        if isinstance(device, NetDevice):
            await self._free_backend("netdev_del", {"id": device_id}, device_id)
        else:
            await self._free_backend("blockdev-del", {"node-name": device_id}, device_id)

    async def _free_backend(self, command: str, args: dict[str, object], device_id: str) -> None:
        try:
            await self.session.execute(command, args)
        except HypervisorError as exc:
            if _error_class(exc) != "DeviceNotFound":
                # The device is gone, which is what was asked; its backend keeps
                # the tap or image open until QEMU exits.
                self.session.log.warning(
                    "device %s unplugged, but its backend stays: %s", device_id, exc
                )

    async def _device_del(self, device_id: str, timeout: float) -> None:
        """device_del, then wait for its DEVICE_DELETED (the guest let go of it)."""

        def this_device(event: Message) -> bool:
            data = event.get("data")
            return isinstance(data, dict) and data.get("device") == device_id

        exited = self.session.exited
        with self.session.listener("DEVICE_DELETED", this_device) as listener:
            try:
                await self.session.execute("device_del", {"id": device_id})
            except HypervisorError as exc:
                if _error_class(exc) == "DeviceNotFound":
                    return  # released meanwhile (an earlier unplug that timed out)
                if "process of unplug" not in str(exc):
                    raise
                # Asked already, and the guest's 5 s grace is not over: keep waiting.
            deleted = asyncio.ensure_future(listener.get())
            waits: set[asyncio.Future[Any]] = {deleted, exited}
            try:
                done, _ = await asyncio.wait(
                    waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
                )
            finally:
                deleted.cancel()
            if deleted in done:
                return
            if exited.done():
                raise HypervisorError(f"{self.session.what} exited while unplugging {device_id}")
            raise HypervisorError(
                f"the guest of {self.session.what} did not release device {device_id} within "
                f"{timeout:g}s; it is still plugged: try again, or stop the pod"
            )

    async def _hotplug_serial(self, device: SerialPortDevice) -> None:
        if not any(isinstance(d, SerialPortDevice) for d in self.command.devices):
            raise HypervisorError(f"{self.session.what} has no virtio-serial bus")
        backend = {
            "type": "socket",
            "data": {
                "addr": {"type": "unix", "data": {"path": str(device.socket_path)}},
                "server": True,
                "wait": False,
            },
        }
        await self.session.execute("chardev-add", {"id": device.id, "backend": backend})
        try:
            await self.session.execute(
                "device_add",
                {
                    "driver": "virtserialport",
                    "bus": f"{VIRTIO_SERIAL_ID}.0",
                    "chardev": device.id,
                    "name": device.name,
                    "id": device.id,
                },
            )
        except HypervisorError:
            with contextlib.suppress(HypervisorError):
                await self.session.execute("chardev-remove", {"id": device.id})
            raise

    async def _hotplug_block(self, device: BlockDevice) -> None:
        port = self._free_port()
        await self.session.execute("blockdev-add", blockdev_node(device))
        disk = {"driver": "virtio-blk-pci", "drive": device.id, "id": device.id, "bus": port}
        if device.serial:
            disk["serial"] = device.serial
        try:
            await self.session.execute("device_add", disk)
        except HypervisorError:
            with contextlib.suppress(HypervisorError):
                await self.session.execute("blockdev-del", {"node-name": device.id})
            raise
        self.plugged.ports[device.id] = port


def _error_class(exc: HypervisorError) -> str | None:
    """The QMP error class behind a failed command ("DeviceNotFound", ...)."""
    cause = exc.__cause__
    return cause.error_class if isinstance(cause, ExecuteError) else None
