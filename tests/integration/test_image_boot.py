"""Boot the built guest image with raw QEMU and talk to the real agent.

Builds the image into the default cache (or reuses it), boots it with the
command line the host uses, and checks that the agent answers a HELLO and a
ping on the virtio-serial port named ``agent``, that a VM without a NIC loads
no networking module, and that configure_network sets up a NIC (one without a
backend: nothing leaves the VM).  QEMU is always killed.
"""

from __future__ import annotations

import contextlib
import itertools
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from virtcontainers.agent import protocol
from virtcontainers.hypervisor.accel import host_tsc_khz
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


def _qemu_argv(image: GuestImage, workdir: Path, *devices: str) -> list[str]:
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
        *devices,
    ]


@contextlib.contextmanager
def _boot(
    image: GuestImage, workdir: Path, *devices: str
) -> Iterator[tuple[subprocess.Popen[bytes], Path]]:
    (workdir / "shared").mkdir()
    proc = subprocess.Popen(
        _qemu_argv(image, workdir, *devices),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        yield proc, workdir
    finally:
        proc.kill()
        proc.wait(timeout=30)
        if proc.stderr is not None:
            proc.stderr.close()


@pytest.fixture
def vm(image: GuestImage, tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], Path]]:
    with _boot(image, tmp_path) as booted:
        yield booted


NIC_MAC = "02:00:0a:00:00:01"


@pytest.fixture
def vm_with_nic(
    image: GuestImage, tmp_path: Path
) -> Iterator[tuple[subprocess.Popen[bytes], Path]]:
    """A VM with a virtio-net NIC that has no backend: nothing leaves it."""
    with _boot(image, tmp_path, "-device", f"virtio-net-pci,mac={NIC_MAC}") as booted:
        yield booted


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


class _Session:
    """Requests to a booted agent, and the output of the processes it runs."""

    def __init__(
        self, sock: socket.socket, decoder: protocol.FrameDecoder, deadline: float
    ) -> None:
        self.sock = sock
        self.deadline = deadline
        self.decoder = decoder
        self.responses: dict[int, dict[str, Any]] = {}
        self.output: dict[int, bytearray] = {}
        self.ended: set[int] = set()
        self.ids = itertools.count(1)

    def _pump_until(self, done: Callable[[], bool]) -> None:
        while not done():
            assert time.monotonic() < self.deadline, "the agent did not answer in time"
            self.sock.settimeout(0.5)
            try:
                chunk = self.sock.recv(65536)
            except TimeoutError:
                continue
            assert chunk, "the agent closed the connection"
            for frame in self.decoder.feed(chunk):
                if frame.type is protocol.FrameType.RESPONSE:
                    self.responses[frame.stream] = frame.json()
                elif frame.type is protocol.FrameType.DATA:
                    self.output.setdefault(frame.stream, bytearray()).extend(frame.payload)
                    if frame.eof:
                        self.ended.add(frame.stream)

    def call(self, op: str, args: dict[str, Any]) -> dict[str, Any]:
        request_id = next(self.ids)
        self.sock.sendall(protocol.request(request_id, op, args))
        self._pump_until(lambda: request_id in self.responses)
        response = self.responses.pop(request_id)
        assert response["ok"], (op, response)
        result: dict[str, Any] = response["result"]
        return result

    def run(self, script: str) -> tuple[int, str]:
        """Run `sh -c script` in the guest: its exit code and stdout."""
        stream = next(self.ids)
        exec_id = f"e{stream}"
        process = {
            "terminal": False,
            "user": {"uid": 0, "gid": 0},
            "args": ["sh", "-c", script],
            "env": [],
            "cwd": "/",
        }
        args = {"exec_id": exec_id, "process": process, "stdout": stream}
        self.call("exec_guest", args)
        status = self.call("wait_process", {"container_id": None, "exec_id": exec_id})
        self._pump_until(lambda: stream in self.ended)
        return status["exit_code"], self.output.get(stream, bytearray()).decode()


def _session(sock: socket.socket, deadline: float) -> _Session:
    """Handshake with the booting agent (repeating the HELLO until it answers)."""
    nonce = uuid.uuid4().hex
    hello = protocol.hello(nonce)
    decoder = protocol.FrameDecoder(resync=True)
    _await_frame(sock, decoder, protocol.FrameType.HELLO, "nonce", nonce, deadline, hello)
    return _Session(sock, decoder, deadline)


def test_agent_answers_over_the_serial_port(
    vm: tuple[subprocess.Popen[bytes], Path],
) -> None:
    proc, workdir = vm
    deadline = time.monotonic() + BOOT_TIMEOUT
    with _connect(workdir / "agent.sock", proc, deadline) as sock:
        session = _session(sock, deadline)
        assert session.call("ping", {}) == {}
        # Without a NIC, init.sh loads none of the networking modules.
        code, out = session.run("ls /sys/module")
        modules = set(out.split())
        assert code == 0 and "virtio_pci" in modules, out
        assert not modules & {"virtio_net", "net_failover", "failover"}, out
    console = (workdir / "console.log").read_text(errors="replace")
    assert "vc-init:" not in console, console  # init.sh reported no failure
    assert proc.poll() is None, console


def test_a_nic_is_found_by_its_mac_and_configured(
    vm_with_nic: tuple[subprocess.Popen[bytes], Path],
) -> None:
    proc, workdir = vm_with_nic
    deadline = time.monotonic() + BOOT_TIMEOUT
    network = {
        "interfaces": [
            {"mac": NIC_MAC, "mtu": 1400, "addresses": ["10.1.2.3/24", "fd00::3/64"]},
        ],
        "routes": [
            {"destination": "default", "gateway": "10.1.2.1", "mac": NIC_MAC},
            {"destination": "default", "gateway": "fd00::1", "mac": NIC_MAC},
        ],
    }
    with _connect(workdir / "agent.sock", proc, deadline) as sock:
        session = _session(sock, deadline)
        assert session.call("configure_network", network) == {}
        assert session.call("configure_network", network) == {}  # again: no error
        code, out = session.run("ip addr; ip route; ip -6 route")
    assert code == 0, out
    assert f"link/ether {NIC_MAC}" in out and "mtu 1400" in out, out
    assert "inet 10.1.2.3/24" in out and "inet6 fd00::3/64" in out, out
    assert "default via 10.1.2.1" in out and "default via fd00::1" in out, out
    assert "LOOPBACK,UP" in out, out


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
