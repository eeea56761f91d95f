"""Hypervisors: the interface (``base``), the devices a VM is given
(``devices``), the QEMU driver (``qemu``), a mock for unit tests (``mock``),
and :func:`new_hypervisor`, which picks one by kind."""

from __future__ import annotations

from virtcontainers.errors import ConfigError
from virtcontainers.hypervisor.base import Hypervisor, HypervisorKind


def new_hypervisor(kind: HypervisorKind, *, binary: str | None = None) -> Hypervisor:
    """A fresh hypervisor of *kind* for one VM.

    *binary* overrides the QEMU executable.  Raises ConfigError for an unknown
    kind or a binary given to the mock.
    """
    # Each driver is imported when chosen: a pod daemon never loads the mock.
    if kind is HypervisorKind.QEMU:
        from virtcontainers.hypervisor.qemu.command import DEFAULT_BINARY
        from virtcontainers.hypervisor.qemu.driver import QemuHypervisor

        return QemuHypervisor(binary or DEFAULT_BINARY)
    if kind is HypervisorKind.MOCK:
        if binary is not None:
            raise ConfigError("binary", "the mock hypervisor runs no binary")
        from virtcontainers.hypervisor.mock import MockHypervisor

        return MockHypervisor()
    raise ConfigError("hypervisor kind", f"{kind!r} is not supported")
