"""virtiofsd: the process that serves a virtio-fs :class:`SharedFsDevice`.

Which binary (:func:`find_virtiofsd`), which of its two command-line dialects
(the Rust one's ``--shared-dir`` or the C one's ``-o source=``), and the
process itself: started as this process's child before the VM (same death
signal as QEMU), on a vhost-user socket in the VM's run directory, stopped
and reaped whenever the VM is.  It knows nothing of the driver that runs the
VM: sharedfs.py asks it whether virtio-fs is possible at all.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shlex
import subprocess
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from virtcontainers.errors import ConfigError, VMLaunchError
from virtcontainers.host.logtail import tail
from virtcontainers.hypervisor.base import OUTPUT_TAIL
from virtcontainers.hypervisor.devices import (
    Device,
    SharedFsDevice,
    SharedFsKind,
    check_socket_path,
)
from virtcontainers.hypervisor.qemu.confine import (
    VIRTIOFSD_DROPPED_CAPABILITIES,
    virtiofsd_child_setup,
)

# The Rust virtiofsd (--shared-dir) first, then the C one QEMU <= 7.2 ships (-o source=).
VIRTIOFSD_PATHS = ("/usr/libexec/virtiofsd", "/usr/lib/qemu/virtiofsd")
VIRTIOFSD_START_TIMEOUT = 10.0


@cache
def find_virtiofsd() -> str | None:
    """The virtiofsd executable: ``$VC_VIRTIOFSD``, else the first of VIRTIOFSD_PATHS."""
    override = os.environ.get("VC_VIRTIOFSD")
    candidates = (override,) if override else VIRTIOFSD_PATHS
    for path in candidates:
        if path and os.access(path, os.X_OK):
            return path
    return None


@cache
def _virtiofsd_is_rust(binary: str) -> bool:
    """The Rust virtiofsd takes ``--shared-dir``; the C one only ``-o source=``."""
    try:
        done = subprocess.run(
            [binary, "--help"], capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return False
    return "--shared-dir" in done.stdout + done.stderr


def virtiofs_socket(run_dir: Path, device: SharedFsDevice) -> Path:
    """The vhost-user socket between QEMU and the virtiofsd of *device*.

    As short as ``agent.sock``: a run directory must fit both in AF_UNIX's limit.
    """
    return run_dir / f"vfs-{device.id}"


def virtiofsd_log(run_dir: Path, device: SharedFsDevice) -> Path:
    """Where the virtiofsd of *device* writes its stdout and stderr."""
    return run_dir / f"virtiofsd-{device.id}.log"


def virtiofs_devices(devices: Iterable[Device]) -> list[SharedFsDevice]:
    """The devices among *devices* that a virtiofsd serves."""
    return [
        d for d in devices if isinstance(d, SharedFsDevice) and d.kind is SharedFsKind.VIRTIO_FS
    ]


def check_virtiofs_device(binary: str | None, device: SharedFsDevice, run_dir: Path) -> None:
    """Raise ConfigError unless *binary* can serve *device* on a socket in *run_dir*."""
    if binary is None or not os.access(binary, os.X_OK):
        raise ConfigError(
            f"device {device.id}",
            f"virtio-fs needs virtiofsd ({binary or 'not found'}): "
            "apt-get install virtiofsd, or set VC_VIRTIOFSD",
        )
    check_socket_path(f"device {device.id}", virtiofs_socket(run_dir, device))


def virtiofsd_argv(binary: str, device: SharedFsDevice, socket: Path, *, rust: bool) -> list[str]:
    """The virtiofsd command line serving *device* on *socket*.

    ``sandbox=chroot``: virtiofsd stays in the host's mount namespace, so bind
    mounts made under the shared directory after it started (container root
    filesystems, volumes; they are private mounts) are visible to the guest.
    ``announce_submounts`` gives each of them its own st_dev in the guest.
    ``modcaps`` drops the capabilities to make device nodes and file capabilities.
    """
    dropped = ":".join(f"-{name}" for name in VIRTIOFSD_DROPPED_CAPABILITIES)
    if rust:
        return [
            binary,
            f"--socket-path={socket}",
            f"--shared-dir={device.host_path}",
            "--cache=auto",
            "--sandbox=chroot",
            "--announce-submounts",
            f"--modcaps={dropped}",
        ]
    return [
        binary,
        f"--socket-path={socket}",
        "-o",
        f"source={_fuse_opt(device.host_path)},cache=auto,sandbox=chroot,announce_submounts,"
        f"modcaps={dropped}",
    ]  # fmt: skip


def _fuse_opt(value: object) -> str:
    """Escape a value for the C virtiofsd's ``-o`` list (libfuse's syntax, unlike QEMU's).

    libfuse reads a backslash as "take the next character literally", so a
    comma doubled as for QEMU would end the value instead.
    """
    return str(value).replace("\\", "\\\\").replace(",", "\\,")


def virtiofsd_output_tail(run_dir: Path, devices: Sequence[SharedFsDevice], limit: int) -> str:
    """The end of each device's virtiofsd log, one ``[virtiofsd <id>]`` line each."""
    return "\n".join(
        f"[virtiofsd {device.id}] {text}"
        for device in devices
        if (text := tail(virtiofsd_log(run_dir, device), limit).strip())
    )


@dataclass
class Virtiofsd:
    """A running virtiofsd: the VM depends on it, so it is reaped with the VM."""

    device_id: str
    proc: asyncio.subprocess.Process
    exited: asyncio.Future[int]


async def start_virtiofsds(
    binary: str | None,
    devices: Sequence[SharedFsDevice],
    run_dir: Path,
    deadline: float,
    *,
    owner: str,
    log: logging.Logger,
) -> list[Virtiofsd]:
    """Start one virtiofsd per device; return when all listen.

    *owner* names the VM in messages; *deadline* is a ``time.monotonic()``
    value.  Raises VMLaunchError (virtiofsd missing, exited, or no socket in
    time); nothing is left running then.
    """
    started: list[Virtiofsd] = []
    try:
        for device in devices:
            if binary is None:
                raise VMLaunchError(f"virtiofsd not found for {owner}", [])
            started.append(await _start(binary, device, run_dir, deadline, owner, log))
    except BaseException:
        await stop_virtiofsds(started)
        raise
    return started


async def _start(
    binary: str,
    device: SharedFsDevice,
    run_dir: Path,
    deadline: float,
    owner: str,
    log: logging.Logger,
) -> Virtiofsd:
    sock = virtiofs_socket(run_dir, device)
    argv = virtiofsd_argv(binary, device, sock, rust=_virtiofsd_is_rust(binary))
    log.debug("launching: %s", shlex.join(argv))
    output = virtiofsd_log(run_dir, device)
    with output.open("wb") as stderr:
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=stderr,
                stderr=stderr,
                preexec_fn=virtiofsd_child_setup(),
            )
        except OSError as exc:
            raise VMLaunchError(f"cannot execute {binary}: {exc}", argv) from exc
    daemon = Virtiofsd(device.id, proc, asyncio.ensure_future(proc.wait()))
    log.info("virtiofsd for %s started, pid %d", device.id, proc.pid)
    try:
        limit = min(deadline, time.monotonic() + VIRTIOFSD_START_TIMEOUT)
        failure = await _wait_listening(daemon, sock, limit)
        if failure is not None:
            raise VMLaunchError(f"virtiofsd for {owner} {failure}", argv, tail(output, OUTPUT_TAIL))
    except BaseException:
        await stop_virtiofsds([daemon])
        raise
    return daemon


async def _wait_listening(daemon: Virtiofsd, sock: Path, limit: float) -> str | None:
    """Wait until *daemon* listens on *sock*; else say why not (None: it listens)."""
    while not sock.exists():
        if daemon.exited.done():
            return f"exited with code {daemon.exited.result()}"
        if time.monotonic() >= limit:
            return f"did not listen on {sock} in time"
        await asyncio.wait({daemon.exited}, timeout=0.01)
    return None


async def stop_virtiofsds(daemons: Sequence[Virtiofsd]) -> None:
    """SIGTERM, after 1 s SIGKILL, and reap (they exit alone once QEMU is gone)."""
    for daemon in daemons:
        if not daemon.exited.done():
            with contextlib.suppress(ProcessLookupError):
                daemon.proc.terminate()
    pending = {d.exited for d in daemons if not d.exited.done()}
    if pending:
        await asyncio.wait(pending, timeout=1)
    for daemon in daemons:
        if not daemon.exited.done():
            with contextlib.suppress(ProcessLookupError):
                daemon.proc.kill()
        await asyncio.shield(daemon.exited)


async def watch_virtiofsd(
    daemon: Virtiofsd,
    vm: asyncio.subprocess.Process,
    vm_exited: asyncio.Future[int],
    log: logging.Logger,
) -> None:
    """A virtiofsd that dies under a running VM leaves its guest hanging: kill the VM."""
    await asyncio.shield(daemon.exited)
    # When QEMU quits, virtiofsd exits too; give QEMU time to be reaped first.
    await asyncio.wait({vm_exited}, timeout=2)
    if not vm_exited.done():
        log.error(
            "virtiofsd %s exited with code %s while the VM ran; killing QEMU",
            daemon.device_id,
            daemon.exited.result(),
        )
        with contextlib.suppress(ProcessLookupError):
            vm.kill()
