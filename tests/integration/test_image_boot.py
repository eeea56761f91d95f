"""Boot the built guest image with raw QEMU and talk to the real agent.

Builds the image into the default cache (or reuses it), boots it with the
command line the host uses, and checks that the agent answers a HELLO and a
ping on the virtio-serial port named ``agent``.  QEMU is always killed.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from virtcontainers.agent import protocol
from virtcontainers.hypervisor import host_tsc_khz
from virtcontainers.image import GuestImage, build_image

pytestmark = [
    pytest.mark.vm,
    pytest.mark.timeout(300),
    pytest.mark.skipif(shutil.which("qemu-system-x86_64") is None, reason="QEMU not installed"),
]

BOOT_TIMEOUT = 120.0
CMDLINE = (
    "console=ttyS0 quiet panic=-1 tsc=reliable no_timer_check rcupdate.rcu_expedited=1 "
    "i8042.noaux=1 8250.nr_uarts=1 cryptomgr.notests vc.hostname=imagetest"
)


@pytest.fixture(scope="module")
def image() -> GuestImage:
    return build_image()


def _qemu_argv(image: GuestImage, workdir: Path) -> list[str]:
    khz = host_tsc_khz()
    append = f"{CMDLINE} tsc_early_khz={khz}" if khz else CMDLINE
    return [
        "qemu-system-x86_64",
        "-M",
        "microvm,pcie=on,rtc=on",
        "-accel",
        "tcg",
        "-cpu",
        "max",
        "-m",
        "512M",
        "-smp",
        "1",
        "-nodefaults",
        "-no-user-config",
        "-nographic",
        "-no-reboot",
        "-serial",
        f"file:{workdir / 'console.log'}",
        "-kernel",
        str(image.kernel),
        "-initrd",
        str(image.initrd),
        "-append",
        append,
        "-drive",
        f"id=root,file={image.rootfs},format=raw,if=none,read-only=on",
        "-device",
        "virtio-blk-pci,drive=root",
        "-device",
        "virtio-serial-pci",
        "-chardev",
        f"socket,id=agent,path={workdir / 'agent.sock'},server=on,wait=off",
        "-device",
        "virtserialport,chardev=agent,name=agent",
        "-fsdev",
        f"local,id=shared,path={workdir / 'shared'},security_model=none",
        "-device",
        "virtio-9p-pci,fsdev=shared,mount_tag=vcshared",
    ]


@pytest.fixture
def vm(image: GuestImage, tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], Path]]:
    (tmp_path / "shared").mkdir()
    proc = subprocess.Popen(
        _qemu_argv(image, tmp_path),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        yield proc, tmp_path
    finally:
        proc.kill()
        proc.wait(timeout=30)
        if proc.stderr is not None:
            proc.stderr.close()


def _connect(path: Path, proc: subprocess.Popen[bytes], deadline: float) -> socket.socket:
    while time.monotonic() < deadline:
        assert proc.poll() is None, "QEMU exited before its agent socket appeared"
        if path.exists():
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.connect(str(path))
                return sock
            except OSError:
                sock.close()
        time.sleep(0.05)
    raise AssertionError("the agent socket never appeared")


def _await_frame(
    sock: socket.socket,
    decoder: protocol.FrameDecoder,
    ftype: protocol.FrameType,
    key: str,
    value: object,
    deadline: float,
    resend: bytes = b"",
) -> protocol.Frame:
    """Read frames until one of `ftype` whose JSON has key == value; resend `resend` each second."""
    next_send = 0.0
    while time.monotonic() < deadline:
        if resend and time.monotonic() >= next_send:
            sock.sendall(resend)  # the guest may open its port later: repeat the HELLO
            next_send = time.monotonic() + 1.0
        sock.settimeout(0.5)
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            continue
        assert chunk, "the agent closed the connection"
        for frame in decoder.feed(chunk):
            if frame.type is ftype and frame.json().get(key) == value:
                return frame
    raise AssertionError(f"no {ftype.name} frame from the agent")


def test_image_files_exist(image: GuestImage) -> None:
    assert image.kernel.read_bytes()[:4] == b"\x7fELF"
    assert image.initrd.read_bytes()[:2] == b"\x1f\x8b"
    assert image.rootfs.read_bytes()[:4] == b"hsqs"


def test_second_build_is_cached(image: GuestImage) -> None:
    files = (image.kernel, image.initrd, image.rootfs)
    before = [(f.stat().st_ino, f.stat().st_mtime_ns) for f in files]
    steps: list[str] = []
    assert build_image(progress=steps.append) == image
    assert [(f.stat().st_ino, f.stat().st_mtime_ns) for f in files] == before
    assert not [step for step in steps if "building" in step or "download" in step], steps


def test_agent_answers_over_the_serial_port(
    vm: tuple[subprocess.Popen[bytes], Path],
) -> None:
    proc, workdir = vm
    deadline = time.monotonic() + BOOT_TIMEOUT
    with _connect(workdir / "agent.sock", proc, deadline) as sock:
        decoder = protocol.FrameDecoder(resync=True)
        nonce = uuid.uuid4().hex
        _await_frame(
            sock,
            decoder,
            protocol.FrameType.HELLO,
            "nonce",
            nonce,
            deadline,
            resend=protocol.hello(nonce),
        )
        sock.sendall(protocol.request(1, "ping", {}))
        reply = _await_frame(sock, decoder, protocol.FrameType.RESPONSE, "ok", True, deadline)
        assert reply.stream == 1
    console = (workdir / "console.log").read_text(errors="replace")
    assert "vc-init:" not in console, console  # init.sh reported no failure
    assert proc.poll() is None, console


def test_disk_missing_powers_off(image: GuestImage, tmp_path: Path) -> None:
    """init.sh must report a broken boot on the console and power off, never hang."""
    argv = _qemu_argv(image, tmp_path)
    drive = argv.index("-drive")
    del argv[drive : drive + 4]  # no root disk
    (tmp_path / "shared").mkdir()
    done = subprocess.run(
        argv, stdin=subprocess.DEVNULL, capture_output=True, timeout=BOOT_TIMEOUT, check=False
    )
    console = (tmp_path / "console.log").read_text(errors="replace")
    assert "vc-init: no root disk /dev/vda" in console, (console, done.stderr)
