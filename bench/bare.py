"""Bare VMs: the guest image's own kernel, through the same QEMU driver and
command line as a pod's VM, to a trivial init (busybox in a tiny initrd).

- :func:`bare_boot_once`: init prints a marker and powers off; the floor of
  a cold start is launch to QEMU's exit;
- :func:`python_floor_initrd`: the guest image's own initrd and root, booted
  as for a pod, except that ``/init`` ends in ``python3 -S`` printing the
  marker instead of the agent: what the guest's language costs a cold start
  before the agent does anything (booted with :func:`bare_boot_once` too);
- :func:`bare_idle_vms`: init prints a marker and the guest's
  ``/proc/meminfo``, then sleeps: the floor of an idle pod's memory and CPU.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from common import Closing, meminfo_kib
from virtcontainers.hypervisor import new_hypervisor
from virtcontainers.hypervisor.base import Hypervisor, HypervisorKind, VMConfig
from virtcontainers.hypervisor.devices import BlockDevice, Device
from virtcontainers.image.cpio import CpioWriter, write_gzip_cpio

MARKER = "VC-BENCH-INIT"
MEMINFO_END = "VC-BENCH-MEMINFO-END"
BOOT_TIMEOUT = 120.0


def bare_initrd(path: Path, idle: bool = False) -> None:
    """A busybox initrd whose init prints the marker, then powers off, or
    (*idle*) prints the guest's meminfo and sleeps for good."""
    lines = ["#!/bin/busybox sh"]
    if idle:
        lines.append("/bin/busybox mount -t proc proc /proc")
    lines.append(f"/bin/busybox echo {MARKER}")
    if idle:
        lines += [
            "/bin/busybox cat /proc/meminfo",
            f"/bin/busybox echo {MEMINFO_END}",
            "exec /bin/busybox sleep 2147483647",
        ]
    else:
        lines.append("/bin/busybox poweroff -f")
    script = "\n".join(lines) + "\n"

    def fill(writer: CpioWriter) -> None:
        writer.directory("bin")
        writer.directory("proc")
        writer.file("bin/busybox", Path("/bin/busybox").read_bytes(), 0o755)
        writer.file("init", script.encode(), 0o755)

    write_gzip_cpio(path, fill)


AGENT_EXEC = 'exec switch_root "$NEWROOT" $AGENT\n'
# Printed, then the VM powered off at once (as busybox poweroff -f would):
# the same end as the bare floor's, from the first Python process.
PYTHON_EXEC = (
    'exec switch_root "$NEWROOT" /usr/bin/python3.11 -S -c '
    f'\'print("{MARKER}", flush=True); open("/proc/sysrq-trigger", "w").write("o")\'\n'
)


def python_floor_initrd(image_initrd: Path, dest: Path) -> None:
    """The image's initrd with its /init ending in ``python3 -S`` instead of
    the agent.  Unpacked and packed again with cpio, as root (it holds
    /dev/console)."""
    with tempfile.TemporaryDirectory(prefix="vc-bench-initrd-") as tmp:
        with image_initrd.open("rb") as packed:
            gunzip = subprocess.Popen(["gzip", "-dc"], stdin=packed, stdout=subprocess.PIPE)
            subprocess.run(["cpio", "-idm", "--quiet"], stdin=gunzip.stdout, cwd=tmp, check=True)
            if gunzip.wait() != 0:
                raise RuntimeError(f"{image_initrd}: not a gzip cpio")
        init = Path(tmp, "init")
        script = init.read_text()
        if script.count(AGENT_EXEC) != 1:
            raise RuntimeError(f"{image_initrd}: /init does not end in {AGENT_EXEC.strip()!r}")
        init.write_text(script.replace(AGENT_EXEC, PYTHON_EXEC))
        names = subprocess.run(["find", "."], cwd=tmp, check=True, capture_output=True).stdout
        cpio = subprocess.run(
            ["cpio", "-o", "-H", "newc", "--quiet"],
            input=names, cwd=tmp, check=True, capture_output=True,
        ).stdout  # fmt: skip
        with dest.open("wb") as out:
            subprocess.run(["gzip", "-1"], input=cpio, stdout=out, check=True)


def console_text(hypervisor: Hypervisor) -> str:
    path = hypervisor.console_path()
    return path.read_text(errors="replace") if path.exists() else ""


async def bare_boot_once(
    kernel: Path, initrd: Path, run_dir: Path, devices: Sequence[Device] = ()
) -> float:
    hypervisor = new_hypervisor(HypervisorKind.QEMU)
    await hypervisor.create(
        VMConfig(
            vm_id="bench-bare",
            kernel=kernel,
            initrd=initrd,
            run_dir=run_dir,
            devices=tuple(devices),
        )
    )
    started = time.monotonic()
    try:
        await hypervisor.start()
        code = await asyncio.wait_for(hypervisor.wait(), BOOT_TIMEOUT)
        elapsed = time.monotonic() - started
    finally:
        await hypervisor.stop()
    if MARKER not in console_text(hypervisor) and code != 0:
        raise RuntimeError(f"bare boot did not reach init (exit {code})")
    return elapsed


async def _until_idle(hypervisor: Hypervisor, vm_id: str) -> None:
    deadline = time.monotonic() + BOOT_TIMEOUT
    while MEMINFO_END not in console_text(hypervisor):
        if not hypervisor.running:
            raise RuntimeError(f"bare VM {vm_id} exited before its init ran")
        if time.monotonic() > deadline:
            raise RuntimeError(f"bare VM {vm_id} did not reach its init in {BOOT_TIMEOUT:.0f}s")
        await asyncio.sleep(0.1)


def root_disk(rootfs: Path) -> BlockDevice:
    """The image's squashfs as the guest's /dev/vda, as a pod's VM has it."""
    return BlockDevice("root", rootfs, read_only=True)


def guest_meminfo_kib(hypervisor: Hypervisor) -> dict[str, int]:
    """The guest's /proc/meminfo as its idle init printed it (kB)."""
    text = console_text(hypervisor)
    return meminfo_kib(text[text.find(MARKER) : text.find(MEMINFO_END)])


class BareVMs(Closing):
    """Idle bare VMs, added one at a time and all stopped by :meth:`close`
    (also on failure or Ctrl-C: it is a context manager).

    The VMs' driver is asynchronous; this runs it on an event loop of its own
    so that the density sweep can treat bare VMs and pods alike.
    """

    def __init__(self, kernel: Path, initrd: Path, run_root: Path, memory_mib: int) -> None:
        self.kernel = kernel
        self.initrd = initrd
        self.run_root = run_root
        self.memory_mib = memory_mib
        self.vms: list[Hypervisor] = []
        self.lost: list[str] = []
        self.loop = asyncio.new_event_loop()

    def add(self) -> float:
        """Boot one more idle bare VM; returns launch to its init's output."""
        vm_id = f"bench-idle-{len(self.vms)}"
        hypervisor = new_hypervisor(HypervisorKind.QEMU)
        self.vms.append(hypervisor)
        config = VMConfig(
            vm_id=vm_id,
            kernel=self.kernel,
            initrd=self.initrd,
            run_dir=self.run_root / vm_id,
            memory_mib=self.memory_mib,
        )

        async def boot() -> float:
            await hypervisor.create(config)
            started = time.monotonic()
            await hypervisor.start()
            await _until_idle(hypervisor, vm_id)
            return time.monotonic() - started

        return self.loop.run_until_complete(boot())

    def units(self) -> list[dict[str, list[int]]]:
        """Each VM's host processes, by role (only QEMU for a bare VM)."""
        return [{"qemu": [vm.pid]} for vm in self.vms if vm.pid is not None]

    def meminfo(self) -> dict[str, int]:
        return guest_meminfo_kib(self.vms[0]) if self.vms else {}

    def close(self) -> None:
        for vm in self.vms:
            with contextlib.suppress(Exception):
                self.loop.run_until_complete(vm.stop())
        # A VM whose start or stop was interrupted may still run: its QEMU goes too.
        for vm in self.vms:
            if vm.running and vm.pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(vm.pid, signal.SIGKILL)
        self.loop.close()
        self.vms.clear()
