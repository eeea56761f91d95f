"""A VM's configuration checked and made into the command that will run it,
before QEMU runs: the QEMU binary, the kernel and initrd, the machine and the
accelerator, every device, the saved state to resume and the run directory.

:meth:`QemuHypervisor.create <virtcontainers.hypervisor.qemu.driver.QemuHypervisor.create>`
calls :func:`prepared_command`; devices cold- or hot-plugged later are checked
by :func:`check_device`.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable
from pathlib import Path

from virtcontainers.errors import ConfigError
from virtcontainers.hypervisor.accel import cached_host_tsc_khz, detect_accelerator
from virtcontainers.hypervisor.base import VMConfig
from virtcontainers.hypervisor.devices import (
    Device,
    SharedFsDevice,
    SharedFsKind,
    check_socket_path,
)
from virtcontainers.hypervisor.qemu.command import (
    DEFAULT_MACHINE,
    MACHINES,
    QemuCommand,
    render_device,
)
from virtcontainers.hypervisor.qemu.virtiofsd import check_virtiofs_device, virtiofs_devices


def prepared_command(
    config: VMConfig,
    binary: str,
    tcg_thread: str | None,
    virtiofsd: Callable[[], str | None],
    log: logging.Logger,
) -> QemuCommand:
    """Check *config*, resolve machine and accelerator, prepare run_dir; the
    command without its devices, which the driver adds as it renders it.

    *virtiofsd* finds the virtiofsd binary, asked only for virtio-fs devices.
    Raises ConfigError (no QEMU binary, missing kernel/initrd/device path,
    unknown machine, socket path too long).
    """
    if shutil.which(binary) is None:
        raise ConfigError("qemu binary", f"{binary} not found; install QEMU")
    for name, path in (("kernel", config.kernel), ("initrd", config.initrd)):
        if not path.is_file():
            raise ConfigError(name, f"{path} does not exist or is not a file")
    machine = config.machine or DEFAULT_MACHINE
    if machine not in MACHINES:
        raise ConfigError("machine", f"{machine!r}: must be one of {', '.join(MACHINES)}")
    if config.accelerator is None:
        accel, reason = detect_accelerator()
        log.info("accelerator %s: %s", accel.value, reason)
    else:
        accel = config.accelerator
    for device in config.devices:
        check_device(device, config.run_dir, virtiofsd)
    _check_saved_state(config)
    check_socket_path("run_dir", config.run_dir / "qmp.sock")
    check_socket_path("run_dir", config.run_dir / "agent.sock")
    config.run_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    config.run_dir.chmod(0o700)
    return QemuCommand(
        config=config,
        accelerator=accel,
        machine=machine,
        devices=(),
        tsc_khz=cached_host_tsc_khz(),
        binary=binary,
        tcg_thread=tcg_thread,
    )


def check_device(device: Device, run_dir: Path, virtiofsd: Callable[[], str | None]) -> None:
    """ConfigError unless QEMU can be given *device* (its host side exists,
    QEMU knows its type, a virtiofsd can serve it)."""
    if isinstance(device, SharedFsDevice) and device.kind is SharedFsKind.VIRTIO_FS:
        check_virtiofs_device(virtiofsd(), device, run_dir)
    device.check_host()
    render_device(device, run_dir)  # ConfigError for a device type QEMU does not know


def _check_saved_state(config: VMConfig) -> None:
    file = config.memory_file
    if file is not None:
        if not file.path.parent.is_dir():
            raise ConfigError("memory_file", f"{file.path.parent} is not a directory")
        if not file.shared and not file.path.is_file():
            raise ConfigError("memory_file", f"{file.path} does not exist or is not a file")
        if not file.shared and virtiofs_devices(config.devices):
            raise ConfigError(
                "memory_file", "virtio-fs needs shared guest RAM, not a copy-on-write file"
            )
    if config.incoming is not None and not config.incoming.is_file():
        raise ConfigError("incoming", f"{config.incoming} does not exist or is not a file")
