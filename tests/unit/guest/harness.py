"""Running the guest agent on the host, for its tests: a subprocess with real
runc, and a tiny synchronous client built on protocol.py.

The agent speaks to the test over one end of a socketpair (``--fd``).
Containers are busybox rootfs directories; each test cleans up the agent,
runc state and tmp dirs.  The fixtures are in conftest.py.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from virtcontainers.agent import protocol

ROOT = Path(__file__).resolve().parents[3]
AGENT = [sys.executable, "-S", "-m", "virtcontainers.guest.agent"]  # with PYTHONPATH=src
BUSYBOX = shutil.which("busybox") or "/bin/busybox"
RUNC = shutil.which("runc")
APPLETS = ["sh", "echo", "cat", "sleep", "head", "true", "false", "kill", "ps", "dd", "yes", "tr"]

NEEDS_RUNC = [
    pytest.mark.skipif(os.geteuid() != 0, reason="runc needs root"),
    pytest.mark.skipif(RUNC is None, reason="runc is not installed"),
    pytest.mark.skipif(not os.path.exists(BUSYBOX), reason="busybox is not installed"),
    pytest.mark.timeout(120),
]
"""The marks of a test that runs the agent with runc."""


class AgentCallError(Exception):
    def __init__(self, kind: str, message: str) -> None:
        super().__init__(f"{kind}: {message}")
        self.kind = kind
        self.message = message


class AgentClient:
    """A synchronous host side: sends frames, collects what comes back."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.decoder = protocol.FrameDecoder()  # strict: the agent must frame correctly
        self.next_id = 1
        self.responses: dict[int, dict[str, Any]] = {}
        self.events: list[dict[str, Any]] = []
        self.hellos: list[dict[str, Any]] = []
        self.data: dict[int, bytearray] = {}
        self.eof: set[int] = set()
        self.credits: dict[int, int] = {}
        self.log: list[tuple[str, Any]] = []  # arrival order of DATA/EOF/EVENT
        self.auto_credit = True
        self.outstanding: dict[int, int] = {}  # received but not yet credited back
        self.max_outstanding = 0

    def send(self, frame: bytes) -> None:
        self.sock.sendall(frame)

    def pump(self, timeout: float) -> bool:
        self.sock.settimeout(timeout)
        try:
            chunk = self.sock.recv(1 << 20)
        except TimeoutError:
            return False
        if not chunk:
            raise ConnectionError("agent closed the connection")
        for frame in self.decoder.feed(chunk):
            self._dispatch(frame)
        return True

    def _dispatch(self, frame: protocol.Frame) -> None:
        if frame.type is protocol.FrameType.RESPONSE:
            self.responses[frame.stream] = frame.json()
        elif frame.type is protocol.FrameType.EVENT:
            message = frame.json()
            self.events.append(message)
            self.log.append(("event", message))
        elif frame.type is protocol.FrameType.HELLO:
            self.hellos.append(frame.json())
        elif frame.type is protocol.FrameType.CREDIT:
            self.credits[frame.stream] = self.credits.get(frame.stream, 0) + frame.credit()
        elif frame.type is protocol.FrameType.DATA:
            assert len(frame.payload) <= protocol.DATA_CHUNK
            self.data.setdefault(frame.stream, bytearray()).extend(frame.payload)
            if frame.payload:
                self.log.append(("data", frame.stream))
                held = self.outstanding.get(frame.stream, 0) + len(frame.payload)
                self.outstanding[frame.stream] = held
                self.max_outstanding = max(self.max_outstanding, held)
                if self.auto_credit:
                    self.grant(frame.stream, held)
            if frame.eof:
                assert frame.stream not in self.eof, "two EOFs on one stream"
                self.eof.add(frame.stream)
                self.log.append(("eof", frame.stream))

    def grant(self, stream: int, count: int) -> None:
        while count > 0:
            step = min(count, protocol.STREAM_WINDOW)
            self.send(protocol.encode_credit(stream, step))
            self.outstanding[stream] -= step
            count -= step

    def wait_until(self, predicate: Callable[[], bool], timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("condition not reached")
            self.pump(min(left, 0.5))

    def hello(self, nonce: str | None = None) -> dict[str, Any]:
        nonce = nonce or uuid.uuid4().hex
        self.send(protocol.hello(nonce))
        self.wait_until(lambda: any(h.get("nonce") == nonce for h in self.hellos))
        return next(h for h in self.hellos if h.get("nonce") == nonce)

    def request(self, op: str, **args: Any) -> int:
        request_id = self.next_id
        self.next_id += 1
        self.send(protocol.request(request_id, op, args))
        return request_id

    def result(self, request_id: int, timeout: float = 20.0) -> dict[str, Any]:
        self.wait_until(lambda: request_id in self.responses, timeout)
        response = self.responses.pop(request_id)
        if not response["ok"]:
            raise AgentCallError(response["error"]["kind"], response["error"]["message"])
        result: dict[str, Any] = response["result"]
        return result

    def call(self, op: str, timeout: float = 20.0, **args: Any) -> dict[str, Any]:
        return self.result(self.request(op, **args), timeout)

    def exit_event(self, cid: str | None, exec_id: str | None = None) -> dict[str, Any]:
        def find() -> dict[str, Any] | None:
            for ev in self.events:
                if (ev["event"], ev["container_id"], ev["exec_id"]) == ("exit", cid, exec_id):
                    return ev
            return None

        self.wait_until(lambda: find() is not None)
        event = find()
        assert event is not None
        return event

    def output(self, stream: int) -> bytes:
        self.wait_until(lambda: stream in self.eof)
        return bytes(self.data.get(stream, b""))


class AgentHarness:
    def __init__(self, proc: subprocess.Popen[bytes], client: AgentClient, state: str) -> None:
        self.proc = proc
        self.client = client
        self.state = state


def runc_leftovers(state: str) -> list[str]:
    root = os.path.join(state, "runtime")
    out = subprocess.run(
        ["runc", "--root", root, "list", "-q"], capture_output=True, text=True, check=False
    )
    return out.stdout.split()


@contextlib.contextmanager
def spawn_agent(wrapper: Sequence[str] = (), bin_dir: Path | None = None) -> Iterator[AgentHarness]:
    """The agent as a subprocess, run by `wrapper` (e.g. ``ip netns exec NS``)
    if any, with bin_dir first on its PATH if given."""
    state = tempfile.mkdtemp(prefix="vca-", dir="/tmp")  # short: console socket paths
    ours, theirs = socket.socketpair()
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    env.pop("VC_AGENT_RUNTIME", None)
    if bin_dir is not None:
        env["PATH"] = f"{bin_dir}:{env.get('PATH', os.defpath)}"
    proc = subprocess.Popen(
        [
            *wrapper,
            *AGENT,
            "--fd",
            str(theirs.fileno()),
            "--runtime",
            "runc",
            "--state-dir",
            state,
        ],
        pass_fds=(theirs.fileno(),),
        env=env,
    )
    theirs.close()
    try:
        yield AgentHarness(proc, AgentClient(ours), state)
    finally:
        ours.close()
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)
        root = os.path.join(state, "runtime")
        for cid in runc_leftovers(state):
            subprocess.run(
                ["runc", "--root", root, "delete", "--force", cid],
                capture_output=True,
                check=False,
            )
        shutil.rmtree(state, ignore_errors=True)


_stream_ids = iter(range(100, 1 << 30))


def new_streams() -> tuple[int, int, int]:
    return next(_stream_ids), next(_stream_ids), next(_stream_ids)


def new_id() -> str:
    return "t" + uuid.uuid4().hex[:12]


def make_spec(args: list[str], rootfs: str, terminal: bool = False) -> dict[str, Any]:
    return {
        "ociVersion": "1.0.2",
        "process": {
            "terminal": terminal,
            "user": {"uid": 0, "gid": 0},
            "args": args,
            "env": ["PATH=/bin", "TERM=xterm"],
            "cwd": "/",
        },
        "root": {"path": rootfs, "readonly": False},
        "hostname": "agent-test",
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {
                "destination": "/dev",
                "type": "tmpfs",
                "source": "tmpfs",
                "options": ["nosuid", "strictatime", "mode=755", "size=65536k"],
            },
            {
                "destination": "/dev/pts",
                "type": "devpts",
                "source": "devpts",
                "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"],
            },
            {
                "destination": "/sys",
                "type": "sysfs",
                "source": "sysfs",
                "options": ["nosuid", "noexec", "nodev", "ro"],
            },
        ],
        "linux": {
            "namespaces": [{"type": t} for t in ("pid", "mount", "ipc", "uts")],
        },
    }


def create(
    client: AgentClient,
    rootfs: str,
    args: list[str],
    *,
    terminal: bool = False,
    streams: tuple[int | None, int | None, int | None] | None = None,
    start: bool = True,
) -> tuple[str, tuple[int | None, int | None, int | None]]:
    cid = new_id()
    stdin, stdout, stderr = streams if streams is not None else new_streams()
    result = client.call(
        "create_container",
        container_id=cid,
        bundle=make_spec(args, rootfs, terminal),
        stdin=stdin,
        stdout=stdout,
        stderr=stderr,
    )
    assert isinstance(result["pid"], int) and result["pid"] > 0
    if start:
        assert client.call("start_container", container_id=cid) == {}
    return cid, (stdin, stdout, stderr)
