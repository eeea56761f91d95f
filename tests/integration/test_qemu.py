"""The QEMU driver against real QEMU, with Debian's kernel and a busybox initrd.

The kernel is the built guest image's; the initrds are made per session.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from virtcontainers.errors import ConfigError, HypervisorError, VMLaunchError
from virtcontainers.host import proc as hostproc
from virtcontainers.hypervisor import new_hypervisor
from virtcontainers.hypervisor.base import HypervisorKind, VMConfig, VMState
from virtcontainers.hypervisor.devices import BlockDevice, SerialPortDevice
from virtcontainers.hypervisor.qemu.driver import QemuHypervisor
from virtcontainers.image import GuestImage
from virtcontainers.image.cpio import CpioWriter, write_gzip_cpio

pytestmark = [
    pytest.mark.vm,
    pytest.mark.skipif(shutil.which("qemu-system-x86_64") is None, reason="QEMU not installed"),
]

BUSYBOX = Path("/bin/busybox")
MARKER = "VC-TEST-MARKER"


@pytest.fixture(scope="session")
def kernel(guest_image: GuestImage) -> Path:
    """The guest image's ELF vmlinux: the kernel pods boot."""
    return guest_image.kernel


def build_initrd(script: str, directory: Path) -> Path:
    """An initrd whose /init is *script* run by busybox."""
    init = "#!/bin/busybox sh\nexport PATH=/bin\n/bin/busybox --install -s /bin\n" + script
    path = directory / f"initrd-{hashlib.sha256(init.encode()).hexdigest()[:16]}.img"

    def fill(writer: CpioWriter) -> None:
        for name in ("bin", "proc", "dev"):
            writer.directory(name)
        writer.file("bin/busybox", BUSYBOX.read_bytes(), 0o755)
        writer.file("init", init.encode(), 0o755)

    write_gzip_cpio(path, fill)
    return path


@pytest.fixture(scope="session")
def initrd_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("initrds")


@pytest.fixture(scope="session")
def marker_initrd(initrd_dir: Path) -> Path:
    return build_initrd(
        f"mount -t proc proc /proc\necho {MARKER} $(cut -d' ' -f1 /proc/uptime)\npoweroff -f\n",
        initrd_dir,
    )


@pytest.fixture(scope="session")
def idle_initrd(initrd_dir: Path) -> Path:
    return build_initrd("sleep 1000\n", initrd_dir)


@pytest.fixture
def run_dir() -> Iterator[Path]:
    # Short path: unix socket paths are limited to 107 bytes.
    path = Path(tempfile.mkdtemp(prefix="vc-hv-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _config(kernel: Path, initrd: Path, run_dir: Path, **kw: object) -> VMConfig:
    return VMConfig(vm_id="t1", kernel=kernel, initrd=initrd, run_dir=run_dir, **kw)  # type: ignore[arg-type]


def _qemu_alive(pid: int) -> bool:
    try:
        return "qemu" in Path(f"/proc/{pid}/cmdline").read_text()
    except OSError:
        return False


def _sockets(run_dir: Path) -> list[Path]:
    return [p for p in run_dir.iterdir() if p.is_socket()]


@pytest.mark.parametrize("machine", ["microvm", "q35"])
def test_boot_shows_marker_and_wait_returns(
    kernel: Path, marker_initrd: Path, run_dir: Path, machine: str
) -> None:
    async def scenario() -> int:
        vm = new_hypervisor(HypervisorKind.QEMU)
        await vm.create(_config(kernel, marker_initrd, run_dir, machine=machine))
        await vm.start(timeout=30)
        assert vm.running and vm.pid is not None
        assert vm.agent_socket_path().is_socket()
        code = await asyncio.wait_for(vm.wait(), 120)
        assert vm.state is VMState.STOPPED and vm.pid is None
        return code

    assert asyncio.run(scenario()) == 0
    assert MARKER in (run_dir / "console.log").read_text()
    assert _sockets(run_dir) == []


def test_start_stop_idle_vm_leaves_nothing(kernel: Path, idle_initrd: Path, run_dir: Path) -> None:
    async def scenario() -> int:
        vm = QemuHypervisor()
        await vm.create(_config(kernel, idle_initrd, run_dir))
        await vm.start(timeout=30)
        pid = vm.pid
        assert pid is not None and _qemu_alive(pid)
        await vm.stop(timeout=10)
        await vm.stop()  # a second stop is a no-op
        assert vm.state is VMState.STOPPED and not vm.running
        return pid

    pid = asyncio.run(scenario())
    assert not _qemu_alive(pid)
    assert _sockets(run_dir) == []


def test_pause_resume_and_hotplug_serial(kernel: Path, idle_initrd: Path, run_dir: Path) -> None:
    async def scenario() -> None:
        vm = QemuHypervisor()
        await vm.create(_config(kernel, idle_initrd, run_dir))
        await vm.start(timeout=30)
        try:
            assert vm.vcpus_running
            await vm.pause()
            assert not vm.vcpus_running  # QEMU's STOP event came before its answer
            assert vm.state is VMState.PAUSED
            await vm.resume()
            assert vm.vcpus_running
            port = SerialPortDevice("extra", run_dir / "extra.sock", "extra")
            await vm.hotplug_device(port)
            assert port.socket_path.is_socket()
            disk = BlockDevice("disk1", kernel)
            with pytest.raises(HypervisorError, match="microvm"):
                await vm.hotplug_device(disk)
        finally:
            await vm.stop()

    asyncio.run(scenario())
    assert _sockets(run_dir) == []


def test_hotplug_block_on_q35(kernel: Path, idle_initrd: Path, run_dir: Path) -> None:
    async def scenario() -> None:
        vm = QemuHypervisor()
        await vm.create(_config(kernel, idle_initrd, run_dir, machine="q35"))
        assert vm.capabilities().hotplug_block
        await vm.start(timeout=30)
        try:
            await vm.hotplug_device(BlockDevice("disk1", kernel))
        finally:
            await vm.stop()

    asyncio.run(scenario())


def test_missing_kernel_is_config_error(idle_initrd: Path, run_dir: Path) -> None:
    async def scenario() -> None:
        vm = QemuHypervisor()
        with pytest.raises(ConfigError, match="kernel"):
            await vm.create(_config(run_dir / "no-such-kernel", idle_initrd, run_dir))
        assert vm.state is VMState.NEW

    asyncio.run(scenario())


def test_garbage_kernel_is_launch_error(idle_initrd: Path, run_dir: Path) -> None:
    garbage = run_dir / "garbage-kernel"
    garbage.write_bytes(os.urandom(64 * 1024))

    async def scenario() -> None:
        vm = QemuHypervisor()
        await vm.create(_config(garbage, idle_initrd, run_dir))
        with pytest.raises(VMLaunchError) as info:
            await vm.start(timeout=30)
        assert info.value.output, "the error carries QEMU's output"
        assert info.value.argv[0] == "qemu-system-x86_64"
        assert len(info.value.output) <= 4200
        assert vm.pid is None and vm.state is VMState.CREATED

    asyncio.run(scenario())
    assert _sockets(run_dir) == []
    leaked = subprocess.run(
        ["pgrep", "-f", f"path={run_dir}"], capture_output=True, check=False
    ).stdout
    assert leaked == b""


def test_qemu_outlives_its_parent_and_is_killed_by_its_ref(
    kernel: Path, idle_initrd: Path, run_dir: Path
) -> None:
    """A parent that dies without stop() leaves QEMU running (a new daemon can
    reattach); the ProcessRef it recorded kills exactly that QEMU."""
    program = f"""
import asyncio, os, sys
from pathlib import Path
from virtcontainers.hypervisor.qemu.driver import QemuHypervisor
from virtcontainers.hypervisor.base import VMConfig
async def main():
    vm = QemuHypervisor()
    await vm.create(VMConfig(vm_id="orphan", kernel=Path({str(kernel)!r}),
                             initrd=Path({str(idle_initrd)!r}), run_dir=Path({str(run_dir)!r})))
    await vm.start(timeout=30)
    print(vm.pid, flush=True)
    os._exit(0)
asyncio.run(main())
"""
    out = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, timeout=60, check=True
    )
    pid = int(out.stdout.split()[0])
    ref = hostproc.of(pid)
    try:
        time.sleep(1)  # long enough for a parent-death signal to have landed
        assert _qemu_alive(pid)
        assert ref is not None and hostproc.alive(ref)
    finally:
        if ref is not None:
            hostproc.kill(ref)
    for _ in range(100):
        if not _qemu_alive(pid):
            break
        time.sleep(0.05)
    assert not _qemu_alive(pid)
