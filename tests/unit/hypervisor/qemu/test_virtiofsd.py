"""virtio-fs: argv rendering, virtiofsd command lines, validation, start failures."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import pytest

from virtcontainers.errors import ConfigError, VMLaunchError
from virtcontainers.hypervisor.base import Accelerator, VMConfig, VMState
from virtcontainers.hypervisor.devices import SharedFsDevice, SharedFsKind
from virtcontainers.hypervisor.qemu.command import QemuCommand, render_device
from virtcontainers.hypervisor.qemu.driver import QemuHypervisor
from virtcontainers.hypervisor.qemu.virtiofsd import virtiofs_socket, virtiofsd_argv
from virtcontainers.storage import sharedfs

VIRTIO_FS = SharedFsKind.VIRTIO_FS


def _config(tmp_path: Path, **kw: object) -> VMConfig:
    kernel = tmp_path / "vmlinux"
    initrd = tmp_path / "initrd.img"
    kernel.write_bytes(b"k")
    initrd.write_bytes(b"i")
    return VMConfig(vm_id="vm1", kernel=kernel, initrd=initrd, run_dir=tmp_path / "run", **kw)  # type: ignore[arg-type]


def _pairs(argv: list[str], flag: str) -> list[str]:
    return [argv[i + 1] for i, a in enumerate(argv) if a == flag]


def test_virtio_fs_device_renders_vhost_user() -> None:
    dev = SharedFsDevice("fs0", Path("/srv/shared"), "vcshared", VIRTIO_FS)
    assert render_device(dev, Path("/run/vm")) == [
        "-chardev", "socket,id=fs0,path=/run/vm/vfs-fs0",
        "-device", "vhost-user-fs-pci,chardev=fs0,tag=vcshared,queue-size=1024,id=fs0",
    ]  # fmt: skip
    with pytest.raises(ConfigError, match="run directory"):
        render_device(dev)


def test_the_default_kind_is_still_9p() -> None:
    dev = SharedFsDevice("fs0", Path("/srv/shared"), "vcshared")
    assert dev.kind is SharedFsKind.VIRTIO_9P
    assert render_device(dev)[0] == "-fsdev"


@pytest.mark.parametrize(
    ("machine", "expected"),
    [
        ("microvm", "microvm,pcie=on,rtc=on,memory-backend=vc-mem"),
        ("q35", "q35,memory-backend=vc-mem"),
    ],
)
def test_virtio_fs_shares_guest_memory(tmp_path: Path, machine: str, expected: str) -> None:
    dev = SharedFsDevice("fs0", tmp_path, "vcshared", VIRTIO_FS)
    cmd = QemuCommand(
        config=_config(tmp_path, memory_mib=768),
        accelerator=Accelerator.TCG,
        machine=machine,
        devices=(dev,),
    )
    argv = cmd.argv()
    assert _pairs(argv, "-M") == [expected]
    assert _pairs(argv, "-m") == ["768M"]
    assert _pairs(argv, "-object") == ["memory-backend-memfd,id=vc-mem,size=768M,share=on"]
    assert f"path={tmp_path}/run/vfs-fs0" in " ".join(argv)


def test_9p_keeps_private_memory(tmp_path: Path) -> None:
    dev = SharedFsDevice("fs0", tmp_path, "vcshared")
    cmd = QemuCommand(
        config=_config(tmp_path), accelerator=Accelerator.TCG, machine="microvm", devices=(dev,)
    )
    argv = cmd.argv()
    assert "-object" not in argv
    assert _pairs(argv, "-M") == ["microvm,pcie=on,rtc=on"]


def test_virtiofsd_argv_c_and_rust() -> None:
    dev = SharedFsDevice("fs0", Path("/p/a,b"), "vcshared", VIRTIO_FS)
    sock = Path("/run/vm/vfs-fs0")
    assert virtiofsd_argv("/usr/lib/qemu/virtiofsd", dev, sock, rust=False) == [
        "/usr/lib/qemu/virtiofsd",
        "--socket-path=/run/vm/vfs-fs0",
        "-o", "source=/p/a\\,b,cache=auto,sandbox=chroot,announce_submounts,"
        "modcaps=-mknod:-setfcap",
    ]  # fmt: skip
    assert virtiofsd_argv("/usr/libexec/virtiofsd", dev, sock, rust=True) == [
        "/usr/libexec/virtiofsd",
        "--socket-path=/run/vm/vfs-fs0",
        "--shared-dir=/p/a,b",
        "--cache=auto",
        "--sandbox=chroot",
        "--announce-submounts",
        "--modcaps=-mknod:-setfcap",
    ]


def test_virtio_fs_without_virtiofsd_is_a_config_error(tmp_path: Path) -> None:
    vm = QemuHypervisor("true", virtiofsd=str(tmp_path / "no-virtiofsd"))
    dev = SharedFsDevice("fs0", tmp_path, "vcshared", VIRTIO_FS)
    with pytest.raises(ConfigError, match="virtio-fs needs virtiofsd"):
        asyncio.run(vm.create(_config(tmp_path, accelerator=Accelerator.TCG, devices=(dev,))))


def test_virtiofs_socket_path_length_is_checked(tmp_path: Path) -> None:
    vm = QemuHypervisor("true", virtiofsd=sys.executable)
    dev = SharedFsDevice("f" * 60, tmp_path, "vcshared", VIRTIO_FS)
    assert len(str(virtiofs_socket(tmp_path / "run", dev))) > 107
    with pytest.raises(ConfigError, match=r"device f+.*AF_UNIX"):
        asyncio.run(vm.create(_config(tmp_path, accelerator=Accelerator.TCG, devices=(dev,))))


FAKE_VIRTIOFSD = """#!/bin/sh
[ "$1" = --help ] && { echo "-o source=PATH"; exit 0; }
echo "$$" > "{pidfile}"
{body}
"""
LISTEN = (
    'sock="${1#--socket-path=}"\n'
    'exec "{python}" -c "import socket, sys, time; s = socket.socket(socket.AF_UNIX); '
    's.bind(sys.argv[1]); s.listen(); time.sleep(60)" "$sock"\n'
)


def _fake_virtiofsd(tmp_path: Path, body: str) -> tuple[str, Path]:
    pidfile = tmp_path / "virtiofsd.pid"
    script = tmp_path / "fake-virtiofsd"
    script.write_text(FAKE_VIRTIOFSD.replace("{pidfile}", str(pidfile)).replace("{body}", body))
    script.chmod(0o755)
    return str(script), pidfile


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_a_virtiofsd_that_exits_fails_the_start(tmp_path: Path) -> None:
    binary, pidfile = _fake_virtiofsd(tmp_path, "echo cannot serve >&2; exit 3")
    vm = QemuHypervisor("true", virtiofsd=binary)
    dev = SharedFsDevice("fs0", tmp_path, "vcshared", VIRTIO_FS)
    asyncio.run(vm.create(_config(tmp_path, accelerator=Accelerator.TCG, devices=(dev,))))
    with pytest.raises(VMLaunchError, match="exited with code 3") as info:
        asyncio.run(vm.start(timeout=10))
    assert "cannot serve" in str(info.value.output)
    assert vm.state is VMState.CREATED
    assert not _alive(int(pidfile.read_text()))


def test_virtiofsd_is_reaped_when_qemu_fails(tmp_path: Path) -> None:
    binary, pidfile = _fake_virtiofsd(tmp_path, LISTEN.replace("{python}", sys.executable))
    vm = QemuHypervisor("false", virtiofsd=binary)
    dev = SharedFsDevice("fs0", tmp_path, "vcshared", VIRTIO_FS)
    asyncio.run(vm.create(_config(tmp_path, accelerator=Accelerator.TCG, devices=(dev,))))
    with pytest.raises(VMLaunchError, match="exited with code 1"):
        asyncio.run(vm.start(timeout=10))
    assert vm.state is VMState.CREATED
    assert not _alive(int(pidfile.read_text()))
    assert not (tmp_path / "run" / "vfs-fs0").exists()


C_VIRTIOFSD = "/usr/lib/qemu/virtiofsd"


@pytest.mark.skipif(not os.access(C_VIRTIOFSD, os.X_OK), reason="the C virtiofsd is not installed")
@pytest.mark.skipif(os.geteuid() != 0, reason="virtiofsd's chroot sandbox needs root")
def test_the_c_virtiofsd_serves_a_directory_with_a_comma_and_a_backslash(tmp_path: Path) -> None:
    shared = tmp_path / "a,b\\101"
    shared.mkdir()
    vm = QemuHypervisor("false", virtiofsd=C_VIRTIOFSD)
    dev = SharedFsDevice("fs0", shared, "vcshared", VIRTIO_FS)
    asyncio.run(vm.create(_config(tmp_path, accelerator=Accelerator.TCG, devices=(dev,))))
    # virtiofsd listened (else the start fails naming it), then the fake QEMU exited.
    with pytest.raises(VMLaunchError, match="QEMU for VM vm1 exited with code 1"):
        asyncio.run(vm.start(timeout=10))


def test_choose_shared_fs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sharedfs, "find_virtiofsd", lambda: "/usr/lib/qemu/virtiofsd")
    assert sharedfs.choose_shared_fs({"VC_SHARED_FS": "9p"}) is SharedFsKind.VIRTIO_9P
    assert sharedfs.choose_shared_fs({"VC_SHARED_FS": "virtiofs"}) is VIRTIO_FS
    assert sharedfs.choose_shared_fs({}, Accelerator.KVM) is VIRTIO_FS
    assert sharedfs.choose_shared_fs({}, Accelerator.TCG) is SharedFsKind.VIRTIO_9P
    assert sharedfs.choose_shared_fs({"VC_ACCEL": "tcg"}) is SharedFsKind.VIRTIO_9P
    # Given the pod's accelerator, it does not probe again (a probe fails on "bogus").
    assert sharedfs.choose_shared_fs({"VC_ACCEL": "bogus"}, Accelerator.KVM) is VIRTIO_FS
    with pytest.raises(ConfigError, match="VC_ACCEL"):
        sharedfs.choose_shared_fs({"VC_ACCEL": "bogus"})
    with pytest.raises(ConfigError, match="VC_SHARED_FS"):
        sharedfs.choose_shared_fs({"VC_SHARED_FS": "nfs"})

    monkeypatch.setattr(sharedfs, "find_virtiofsd", lambda: None)
    assert sharedfs.choose_shared_fs({}) is SharedFsKind.VIRTIO_9P
    with pytest.raises(ConfigError, match="needs virtiofsd"):
        sharedfs.choose_shared_fs({"VC_SHARED_FS": "virtiofs"})
