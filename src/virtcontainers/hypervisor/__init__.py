"""Hypervisors: the protocol, the QEMU driver, a mock, and the factory."""

from __future__ import annotations

from virtcontainers.errors import ConfigError
from virtcontainers.hypervisor.accel import detect_accelerator, host_tsc_khz
from virtcontainers.hypervisor.base import (
    Accelerator,
    BlockDevice,
    Capabilities,
    Device,
    Hypervisor,
    HypervisorKind,
    NetDevice,
    SerialPortDevice,
    SharedFsDevice,
    SharedFsKind,
    VMConfig,
    VMState,
)
from virtcontainers.hypervisor.mock import MockHypervisor
from virtcontainers.hypervisor.qemu import QemuHypervisor
from virtcontainers.hypervisor.qemu_command import DEFAULT_BINARY, QemuCommand

__all__ = [
    "Accelerator",
    "BlockDevice",
    "Capabilities",
    "Device",
    "Hypervisor",
    "HypervisorKind",
    "MockHypervisor",
    "NetDevice",
    "QemuCommand",
    "QemuHypervisor",
    "SerialPortDevice",
    "SharedFsDevice",
    "SharedFsKind",
    "VMConfig",
    "VMState",
    "detect_accelerator",
    "host_tsc_khz",
    "new_hypervisor",
]


def new_hypervisor(kind: HypervisorKind, *, binary: str | None = None) -> Hypervisor:
    """A fresh hypervisor of *kind* for one VM.

    *binary* overrides the QEMU executable.  Raises ConfigError for an unknown
    kind or a binary given to the mock.
    """
    if kind is HypervisorKind.QEMU:
        return QemuHypervisor(binary or DEFAULT_BINARY)
    if kind is HypervisorKind.MOCK:
        if binary is not None:
            raise ConfigError("binary", "the mock hypervisor runs no binary")
        return MockHypervisor()
    raise ConfigError("hypervisor kind", f"{kind!r} is not supported")
