"""Hypervisors: the interface (``base``), the devices a VM is given
(``devices``), the QEMU driver (``qemu``), a mock for unit tests (``mock``),
:func:`new_hypervisor`, which picks one by kind, and what a VM of each kind
boots with on this host beyond its config (:func:`default_machine`,
:func:`guest_kernel_cmdline`, :func:`hypervisor_binary`), for those that must
tell whether a saved VM still fits (VM templates).

May import the vocabulary at the root and host/; qemu/ only inside the
functions that pick it.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from virtcontainers.errors import ConfigError
from virtcontainers.hypervisor.base import Accelerator, Hypervisor, HypervisorKind


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


def default_machine(kind: HypervisorKind) -> str:
    """The machine type of a VM of *kind* whose config names none."""
    if kind is HypervisorKind.QEMU:
        from virtcontainers.hypervisor.qemu.command import DEFAULT_MACHINE

        return DEFAULT_MACHINE
    if kind is HypervisorKind.MOCK:
        from virtcontainers.hypervisor.mock import MOCK_MACHINE

        return MOCK_MACHINE
    raise ConfigError("hypervisor kind", f"{kind!r} is not supported")


def generation_id_machine(kind: HypervisorKind) -> str:
    """The machine type of a VM of *kind* that is told when it is restored as a
    copy: QEMU 7.2 gives the VM generation id device its ACPI table and its
    change notification on q35, not in microvm's ACPI tables."""
    if kind is HypervisorKind.QEMU:
        from virtcontainers.hypervisor.qemu.command import Q35

        return Q35
    return default_machine(kind)


def guest_kernel_cmdline(
    kind: HypervisorKind, accelerator: Accelerator, kernel_params: tuple[str, ...]
) -> str:
    """The kernel command line that a VM of *kind* with *kernel_params* boots
    with on this host (the host's TSC frequency, what *accelerator* calls for)."""
    if kind is HypervisorKind.QEMU:
        from virtcontainers.hypervisor.accel import cached_host_tsc_khz
        from virtcontainers.hypervisor.qemu.command import kernel_cmdline

        return kernel_cmdline(accelerator, cached_host_tsc_khz(), kernel_params)
    if kind is HypervisorKind.MOCK:
        return " ".join(kernel_params)
    raise ConfigError("hypervisor kind", f"{kind!r} is not supported")


def hypervisor_binary(kind: HypervisorKind) -> Path:
    """The executable that runs a VM of *kind*, symbolic links resolved.

    Raises ConfigError when it is not installed, or *kind* runs none (mock).
    """
    if kind is HypervisorKind.QEMU:
        from virtcontainers.hypervisor.qemu.command import DEFAULT_BINARY

        found = shutil.which(DEFAULT_BINARY)
        if found is None:
            raise ConfigError("qemu binary", f"{DEFAULT_BINARY} not found; install QEMU")
        return Path(found).resolve()
    if kind is HypervisorKind.MOCK:
        raise ConfigError("binary", "the mock hypervisor runs no binary")
    raise ConfigError("hypervisor kind", f"{kind!r} is not supported")
