"""The guest agent, run on the host as a subprocess with real runc.

The agent speaks to the test over one end of a socketpair (``--fd``); the test
is a tiny synchronous client built on protocol.py.  Containers are busybox
rootfs directories; each test cleans up the agent, runc state and tmp dirs.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
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

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="runc needs root"),
    pytest.mark.skipif(RUNC is None, reason="runc is not installed"),
    pytest.mark.skipif(not os.path.exists(BUSYBOX), reason="busybox is not installed"),
    pytest.mark.timeout(120),
]


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


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def agent_rootfs() -> Iterator[str]:
    base = tempfile.mkdtemp(prefix="vca-rootfs-")
    rootfs = os.path.join(base, "rootfs")
    try:
        for sub in ("bin", "proc", "dev", "sys", "tmp", "etc"):
            os.makedirs(os.path.join(rootfs, sub))
        shutil.copy2(BUSYBOX, os.path.join(rootfs, "bin", "busybox"))
        for applet in APPLETS:
            os.symlink("busybox", os.path.join(rootfs, "bin", applet))
        yield rootfs
    finally:
        shutil.rmtree(base, ignore_errors=True)


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


@pytest.fixture
def agent_harness() -> Iterator[AgentHarness]:
    with spawn_agent() as harness:
        yield harness


@pytest.fixture
def agent(agent_harness: AgentHarness) -> AgentClient:
    client = agent_harness.client
    client.hello()
    return client


_stream_ids = iter(range(100, 1 << 30))


def new_streams() -> tuple[int, int, int]:
    return next(_stream_ids), next(_stream_ids), next(_stream_ids)


def new_id() -> str:
    return "t" + uuid.uuid4().hex[:12]


def make_spec(args: list[str], terminal: bool = False) -> dict[str, Any]:
    return {
        "ociVersion": "1.0.2",
        "process": {
            "terminal": terminal,
            "user": {"uid": 0, "gid": 0},
            "args": args,
            "env": ["PATH=/bin", "TERM=xterm"],
            "cwd": "/",
        },
        "root": {"path": "rootfs", "readonly": False},
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
        bundle=make_spec(args, terminal),
        rootfs=rootfs,
        stdin=stdin,
        stdout=stdout,
        stderr=stderr,
    )
    assert isinstance(result["pid"], int) and result["pid"] > 0
    if start:
        assert client.call("start_container", container_id=cid) == {}
    return cid, (stdin, stdout, stderr)


# --------------------------------------------------------------------------- tests


def test_hello_resyncs_past_garbage(agent_harness: AgentHarness) -> None:
    client = agent_harness.client
    # Stale bytes (even a fragment of a frame header) before the handshake.
    client.send(b"garbage\x00\xffVC\x09" + b"VC" + b"\x02")
    # Requests before any HELLO are stale too: ignored.
    client.send(protocol.request(99, "ping", {}))
    reply = client.hello("nonce-1")
    assert reply["version"] == protocol.PROTOCOL_VERSION
    assert reply["nonce"] == "nonce-1"
    assert isinstance(reply["agent_version"], str)
    assert client.call("ping") == {}
    assert 99 not in client.responses
    # A second HELLO (a new host connection) is answered with its own nonce.
    assert client.hello("nonce-2")["nonce"] == "nonce-2"
    assert client.call("ping") == {}


def test_guest_details(agent: AgentClient) -> None:
    details = agent.call("guest_details")
    assert details["kernel"] == os.uname().release
    assert details["cpus"] >= 1
    assert details["memory_kib"] > 0
    assert details["runtime"].startswith("runc")
    assert details["python"].count(".") == 2


def test_echo_data_then_eof_then_exit(agent: AgentClient, agent_rootfs: str) -> None:
    cid, (_, stdout, stderr) = create(agent, agent_rootfs, ["echo", "hello world"])
    assert stdout is not None and stderr is not None
    event = agent.exit_event(cid)
    assert event["exit_code"] == 0 and event["signal"] is None
    assert isinstance(event["pid"], int)
    assert agent.output(stdout) == b"hello world\n"
    assert agent.output(stderr) == b""
    # EOF of both pipes arrived before the exit event.
    order = [entry for entry in agent.log if entry[0] != "data"]
    exit_index = next(i for i, e in enumerate(order) if e[0] == "event")
    assert ("eof", stdout) in order[:exit_index]
    assert ("eof", stderr) in order[:exit_index]
    assert agent.call("wait_process", container_id=cid, exec_id=None) == {
        "exit_code": 0,
        "signal": None,
    }
    assert agent.call("container_state", container_id=cid)["status"] == "stopped"
    agent.call("remove_container", container_id=cid)


def test_exit_code_and_wait(agent: AgentClient, agent_rootfs: str) -> None:
    cid, _ = create(agent, agent_rootfs, ["sh", "-c", "sleep 0.3; exit 3"], start=False)
    state = agent.call("container_state", container_id=cid)
    assert state["status"] == "created" and state["pid"] > 0
    waits = [agent.request("wait_process", container_id=cid) for _ in range(2)]
    agent.call("start_container", container_id=cid)
    assert agent.call("container_state", container_id=cid)["status"] == "running"
    for request_id in waits:
        assert agent.result(request_id) == {"exit_code": 3, "signal": None}
    assert agent.exit_event(cid)["exit_code"] == 3
    agent.call("remove_container", container_id=cid)


def test_sigkill_is_137(agent: AgentClient, agent_rootfs: str) -> None:
    cid, _ = create(agent, agent_rootfs, ["sleep", "100"])
    agent.call("signal_process", container_id=cid, exec_id=None, signal=9, all=False)
    assert agent.call("wait_process", container_id=cid) == {"exit_code": 137, "signal": 9}
    event = agent.exit_event(cid)
    assert (event["exit_code"], event["signal"]) == (137, 9)
    with pytest.raises(AgentCallError) as info:
        agent.call("signal_process", container_id=cid, exec_id=None, signal=15, all=False)
    assert info.value.kind == "state"
    agent.call("remove_container", container_id=cid)


def test_exec_with_stdin_and_stderr(agent: AgentClient, agent_rootfs: str) -> None:
    cid, _ = create(agent, agent_rootfs, ["sleep", "100"])
    stdin, stdout, stderr = new_streams()
    result = agent.call(
        "exec_process",
        container_id=cid,
        exec_id="cat",
        process={"args": ["sh", "-c", "cat; echo oops >&2"], "env": ["PATH=/bin"]},
        stdin=stdin,
        stdout=stdout,
        stderr=stderr,
    )
    assert result["pid"] > 0
    agent.send(protocol.data(stdin, b"ping\n"))
    agent.wait_until(lambda: bytes(agent.data.get(stdout, b"")) == b"ping\n")
    assert agent.credits.get(stdin) == 5  # the agent credits what it wrote
    agent.send(protocol.data(stdin, b"pong\n", eof=True))
    assert agent.output(stdout) == b"ping\npong\n"
    assert agent.output(stderr) == b"oops\n"
    assert agent.exit_event(cid, "cat")["exit_code"] == 0
    assert agent.call("wait_process", container_id=cid, exec_id="cat")["exit_code"] == 0

    processes = agent.call("list_processes", container_id=cid)["processes"]
    assert [p["args"] for p in processes] == [["sleep", "100"]]

    agent.call("remove_container", container_id=cid)
    assert agent.exit_event(cid)["signal"] == 9  # removal killed the init
    with pytest.raises(AgentCallError) as info:
        agent.call("container_state", container_id=cid)
    assert info.value.kind == "not_found"


def test_large_output_with_flow_control(agent: AgentClient, agent_rootfs: str) -> None:
    size = 5 * 1024 * 1024
    cid, (_, stdout, _) = create(
        agent,
        agent_rootfs,
        ["sh", "-c", "yes abcdefghijklmnopqrstuvwxyz | head -c 5242880"],
        start=False,
    )
    assert stdout is not None
    agent.auto_credit = False
    agent.call("start_container", container_id=cid)
    # Grant credit only once the agent has gone quiet: it must then have sent
    # exactly one window, never more (the container is blocked meanwhile).
    stalls = 0
    while stdout not in agent.eof:
        while agent.pump(0.1):
            assert agent.outstanding.get(stdout, 0) <= protocol.STREAM_WINDOW
        held = agent.outstanding.get(stdout, 0)
        if stdout not in agent.eof:
            assert held == protocol.STREAM_WINDOW
            stalls += 1
        # Two CREDIT frames, to exercise partial grants.
        agent.grant(stdout, held // 2)
        agent.grant(stdout, held - held // 2)
    assert stalls >= size // protocol.STREAM_WINDOW - 1
    assert agent.max_outstanding == protocol.STREAM_WINDOW
    data = bytes(agent.data[stdout])
    expected = (b"abcdefghijklmnopqrstuvwxyz\n" * (size // 27 + 1))[:size]
    assert len(data) == size
    assert hashlib.sha256(data).hexdigest() == hashlib.sha256(expected).hexdigest()
    assert agent.exit_event(cid)["exit_code"] == 0
    agent.call("remove_container", container_id=cid)


def test_terminal_exec_and_resize(agent: AgentClient, agent_rootfs: str) -> None:
    cid, _ = create(agent, agent_rootfs, ["sleep", "100"])
    stdin, stdout, stderr = new_streams()
    agent.call(
        "exec_process",
        container_id=cid,
        exec_id="tty",
        process={
            "args": ["sh", "-c", "read line; echo got $line; stty size 2>/dev/null; exit 4"],
            "env": ["PATH=/bin"],
            "terminal": True,
        },
        stdin=stdin,
        stdout=stdout,
        stderr=stderr,
    )
    agent.call("resize_terminal", container_id=cid, exec_id="tty", rows=33, cols=101)
    agent.send(protocol.data(stdin, b"hi\n"))
    out = agent.output(stdout)
    assert b"got hi" in out
    assert agent.output(stderr) == b""  # a terminal has no separate stderr
    assert agent.exit_event(cid, "tty")["exit_code"] == 4
    with pytest.raises(AgentCallError) as info:
        agent.call("resize_terminal", container_id=cid, exec_id=None, rows=1, cols=1)
    assert info.value.kind == "state"  # the init has no terminal
    agent.call("remove_container", container_id=cid)


def test_terminal_container(agent: AgentClient, agent_rootfs: str) -> None:
    cid, (_, stdout, _) = create(
        agent, agent_rootfs, ["sh", "-c", "test -t 0 && echo tty-yes"], terminal=True
    )
    assert stdout is not None
    assert b"tty-yes" in agent.output(stdout)
    assert agent.exit_event(cid)["exit_code"] == 0
    agent.call("remove_container", container_id=cid)


def test_pause_resume_and_signal_all(agent: AgentClient, agent_rootfs: str) -> None:
    cid, _ = create(agent, agent_rootfs, ["sleep", "100"])
    agent.call("pause_container", container_id=cid)
    assert agent.call("container_state", container_id=cid)["status"] == "paused"
    with pytest.raises(AgentCallError) as info:
        agent.call("pause_container", container_id=cid)
    assert info.value.kind == "state"
    agent.call("resume_container", container_id=cid)
    assert agent.call("container_state", container_id=cid)["status"] == "running"
    agent.call("signal_process", container_id=cid, exec_id=None, signal=15, all=True)
    # sleep as a pid-namespace init ignores SIGTERM (no handler): use SIGKILL.
    agent.call("signal_process", container_id=cid, signal=9, all=True)
    assert agent.call("wait_process", container_id=cid)["signal"] == 9
    agent.call("remove_container", container_id=cid)


@pytest.mark.parametrize(
    ("op", "args"),
    [
        ("ping", {"extra": 1}),
        ("no_such_op", {}),
        ("container_state", {}),
        ("container_state", {"container_id": "-bad"}),
        ("container_state", {"container_id": "a" * 65}),
        ("container_state", {"container_id": 7}),
        ("create_container", {"container_id": "x", "bundle": [], "rootfs": "/"}),
        ("create_container", {"container_id": "x", "bundle": {}, "rootfs": "/"}),
        (
            "create_container",
            {"container_id": "x", "bundle": {"process": {"args": ["sh"]}}, "rootfs": "rel"},
        ),
        (
            "create_container",
            {
                "container_id": "x",
                "bundle": {"process": {"args": ["sh"]}},
                "rootfs": "/",
                "stdout": 0,
            },
        ),
        (
            "create_container",
            {
                "container_id": "x",
                "bundle": {"process": {"args": ["sh"]}},
                "rootfs": "/",
                "stdout": 5,
                "stderr": 5,
            },
        ),
        ("signal_process", {"container_id": "x", "signal": "KILL"}),
        ("signal_process", {"container_id": "x", "signal": True}),
        ("resize_terminal", {"container_id": "x", "rows": -1, "cols": 2}),
    ],
)
def test_bad_args_are_invalid(agent: AgentClient, op: str, args: dict[str, Any]) -> None:
    with pytest.raises(AgentCallError) as info:
        agent.call(op, **args)
    assert info.value.kind == "invalid", info.value.message


def test_a_cpuset_naming_cpus_the_vm_lacks_is_refused_plainly(
    agent: AgentClient, agent_rootfs: str
) -> None:
    """Not crun's "Numerical result out of range": the agent names the CPU."""
    online = Path("/sys/devices/system/cpu/online").read_text().strip()
    spec = make_spec(["true"])
    spec.setdefault("linux", {})["resources"] = {"cpu": {"cpus": "0,4095"}}
    with pytest.raises(AgentCallError) as info:
        agent.call("create_container", container_id=new_id(), bundle=spec, rootfs=agent_rootfs)
    assert (info.value.kind, info.value.message) == (
        "invalid",
        f"linux.resources.cpu.cpus names CPU 4095, which this VM does not have (its CPUs: "
        f"{online})",
    )


def test_malformed_request_is_invalid(agent: AgentClient) -> None:
    agent.send(protocol.encode_frame(protocol.FrameType.REQUEST, 42, b"not json"))
    agent.send(protocol.encode_json(protocol.FrameType.REQUEST, 43, {"op": "ping", "args": []}))
    for request_id in (42, 43):
        with pytest.raises(AgentCallError) as info:
            agent.result(request_id)
        assert info.value.kind == "invalid"
    assert agent.call("ping") == {}


@pytest.mark.parametrize(
    ("op", "args"),
    [
        ("container_state", {"container_id": "nope"}),
        ("start_container", {"container_id": "nope"}),
        ("wait_process", {"container_id": "nope", "exec_id": None}),
        ("remove_container", {"container_id": "nope"}),
        ("list_processes", {"container_id": "nope"}),
    ],
)
def test_unknown_container_is_not_found(agent: AgentClient, op: str, args: dict[str, Any]) -> None:
    with pytest.raises(AgentCallError) as info:
        agent.call(op, **args)
    assert info.value.kind == "not_found"


def test_unknown_exec_exists_and_runtime_errors(agent: AgentClient, agent_rootfs: str) -> None:
    cid, _ = create(agent, agent_rootfs, ["sleep", "100"])
    with pytest.raises(AgentCallError) as info:
        agent.call("wait_process", container_id=cid, exec_id="nope")
    assert info.value.kind == "not_found"
    with pytest.raises(AgentCallError) as info:
        agent.call(
            "create_container",
            container_id=cid,
            bundle=make_spec(["true"]),
            rootfs=agent_rootfs,
        )
    assert info.value.kind == "exists"
    with pytest.raises(AgentCallError) as info:
        agent.call("start_container", container_id=cid)
    assert info.value.kind == "state"
    # A binary missing from the rootfs: the runtime fails and says why.
    with pytest.raises(AgentCallError) as info:
        agent.call(
            "exec_process",
            container_id=cid,
            exec_id="missing",
            process={"args": ["/bin/no-such-binary"]},
            stdout=None,
        )
    assert info.value.kind == "runtime"
    assert "no-such-binary" in info.value.message
    assert len(info.value.message.encode()) <= 4096
    agent.call("remove_container", container_id=cid)


def test_remove_container_cleans_up(agent_harness: AgentHarness, agent_rootfs: str) -> None:
    client = agent_harness.client
    client.hello()
    cid, (_, stdout, _) = create(client, agent_rootfs, ["sleep", "100"], start=False)
    bundle = os.path.join(agent_harness.state, "bundles", cid)
    assert os.path.exists(os.path.join(bundle, "config.json"))
    assert cid in runc_leftovers(agent_harness.state)
    assert client.call("remove_container", container_id=cid) == {}
    assert not os.path.exists(bundle)
    assert cid not in runc_leftovers(agent_harness.state)
    assert stdout in client.eof
    assert client.exit_event(cid)["exit_code"] == 137
    with pytest.raises(AgentCallError) as info:
        client.call("remove_container", container_id=cid)
    assert info.value.kind == "not_found"


def test_new_hello_keeps_containers_and_orphans_streams(
    agent: AgentClient, agent_rootfs: str
) -> None:
    script = "echo early; read x; echo late; sleep 100"
    cid, (stdin, stdout, _) = create(agent, agent_rootfs, ["sh", "-c", script])
    assert stdin is not None and stdout is not None
    agent.wait_until(lambda: bytes(agent.data.get(stdout, b"")) == b"early\n")
    agent.hello("again")  # a new host connection
    agent.data.clear()
    # The old stdin id is unbound: DATA on it is ignored, no CREDIT comes back.
    agent.send(protocol.data(stdin, b"go\n"))
    assert agent.call("container_state", container_id=cid)["status"] == "running"
    agent.call("signal_process", container_id=cid, signal=signal.SIGKILL, all=False)
    assert agent.call("wait_process", container_id=cid)["exit_code"] == 137
    assert agent.exit_event(cid)["signal"] == 9
    # Nothing more on the previous connection's stream ids (not even EOF).
    assert stdout not in agent.data and stdout not in agent.eof
    assert stdin not in agent.credits
    # Those ids are free for the new connection.
    cid2, _ = create(agent, agent_rootfs, ["echo", "reuse"], streams=(None, stdout, None))
    assert agent.output(stdout) == b"reuse\n"
    agent.call("remove_container", container_id=cid)
    agent.call("remove_container", container_id=cid2)


def test_exec_guest(agent: AgentClient) -> None:
    stdin, stdout, stderr = new_streams()
    result = agent.call(
        "exec_guest",
        exec_id="g1",
        process={"args": ["sh", "-c", "echo $FOO; cat; echo e >&2; exit 5"], "env": ["FOO=bar"]},
        stdin=stdin,
        stdout=stdout,
        stderr=stderr,
    )
    assert result["pid"] > 0
    agent.send(protocol.data(stdin, b"typed\n", eof=True))
    assert agent.output(stdout) == b"bar\ntyped\n"
    assert agent.output(stderr) == b"e\n"
    assert agent.call("wait_process", container_id=None, exec_id="g1")["exit_code"] == 5
    assert agent.exit_event(None, "g1")["exit_code"] == 5

    _, tty_out, _ = new_streams()
    agent.call(
        "exec_guest",
        exec_id="g2",
        process={"args": ["sh", "-c", "test -t 0 && tty"], "terminal": True},
        stdout=tty_out,
    )
    assert b"/dev/pts/" in agent.output(tty_out)
    assert agent.call("wait_process", container_id=None, exec_id="g2")["exit_code"] == 0

    with pytest.raises(AgentCallError) as info:
        agent.call("exec_guest", exec_id="g3", process={"args": ["/no/such/binary"]})
    assert info.value.kind == "runtime"
    with pytest.raises(AgentCallError) as info:
        agent.call("wait_process", container_id=None, exec_id="g3")
    assert info.value.kind == "not_found"


def test_agent_exits_when_the_host_socket_closes(agent_harness: AgentHarness) -> None:
    agent_harness.client.hello()
    agent_harness.client.sock.shutdown(socket.SHUT_RDWR)
    assert agent_harness.proc.wait(timeout=10) == 0


def test_shutdown(agent: AgentClient) -> None:
    assert agent.call("shutdown") == {}


def test_agent_module_imports_are_lean() -> None:
    out = subprocess.run(
        [
            sys.executable,
            "-S",
            "-c",
            "import sys, json;"
            f"sys.path.insert(0, {str(ROOT / 'src')!r});"
            "import virtcontainers.guest.agent;"
            "print(json.dumps(sorted(sys.modules)))",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    modules = set(json.loads(out.stdout))
    # Importing the package loads all of it, as the guest's start stub does.
    assert "virtcontainers.guest.agent.startup" in modules
    heavy_modules = ("asyncio", "subprocess", "argparse", "ctypes", "shutil", "traceback")
    for heavy in (*heavy_modules, "typing", "dataclasses", "ipaddress"):
        assert heavy not in modules, heavy


def test_large_stdin_is_credited(agent: AgentClient, agent_rootfs: str) -> None:
    cid, _ = create(agent, agent_rootfs, ["sleep", "100"])
    stdin, stdout, stderr = new_streams()
    agent.call(
        "exec_process",
        container_id=cid,
        exec_id="cat",
        process={"args": ["cat"]},
        stdin=stdin,
        stdout=stdout,
        stderr=stderr,
    )
    payload = os.urandom(3 * 1024 * 1024 + 17)
    credit = protocol.STREAM_WINDOW
    offset = 0
    while offset < len(payload):
        granted = agent.credits.pop(stdin, 0)
        credit += granted
        assert credit <= protocol.STREAM_WINDOW  # the agent never over-grants
        step = min(protocol.DATA_CHUNK, credit, len(payload) - offset)
        if step == 0:
            agent.pump(0.5)
            continue
        agent.send(protocol.data(stdin, payload[offset : offset + step]))
        credit -= step
        offset += step
    agent.send(protocol.data(stdin, b"", eof=True))
    assert hashlib.sha256(agent.output(stdout)).digest() == hashlib.sha256(payload).digest()
    assert agent.exit_event(cid, "cat")["exit_code"] == 0
    agent.call("remove_container", container_id=cid)


def test_a_closed_output_ends_its_writer_with_sigpipe(
    agent: AgentClient, agent_rootfs: str
) -> None:
    """The host's reader went away: the process's next write gets SIGPIPE."""
    cid, _ = create(agent, agent_rootfs, ["sleep", "100"])
    _, stdout, _ = new_streams()
    agent.call(
        "exec_process", container_id=cid, exec_id="yes", process={"args": ["yes"]}, stdout=stdout
    )
    agent.wait_until(lambda: stdout in agent.data)
    agent.call("close_output", stream=stdout)
    event = agent.exit_event(cid, "yes")
    assert (event["exit_code"], event["signal"]) == (128 + signal.SIGPIPE, signal.SIGPIPE)
    assert agent.call("close_output", stream=stdout) == {}  # an ended stream: no error
    agent.call("remove_container", container_id=cid)


def test_fast_exec_exits_are_not_lost(agent: AgentClient, agent_rootfs: str) -> None:
    # The process may exit (and be reaped) before runc has written its pid file.
    cid, _ = create(agent, agent_rootfs, ["sleep", "100"])
    for n in range(5):
        _, stdout, _ = new_streams()
        exec_id = f"e{n}"
        agent.call(
            "exec_process",
            container_id=cid,
            exec_id=exec_id,
            process={"args": ["sh", "-c", f"echo {n}; exit {n}"]},
            stdout=stdout,
        )
        assert agent.output(stdout) == f"{n}\n".encode()
        assert agent.exit_event(cid, exec_id)["exit_code"] == n
        assert agent.call("wait_process", container_id=cid, exec_id=exec_id)["exit_code"] == n
    # An exec id can be reused once its process has exited.
    agent.call(
        "exec_process", container_id=cid, exec_id="e0", process={"args": ["true"]}, stdout=None
    )
    agent.call("remove_container", container_id=cid)


def test_connect_option(agent_rootfs: str) -> None:
    state = tempfile.mkdtemp(prefix="vca-", dir="/tmp")
    path = os.path.join(state, "host.sock")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    server.listen(1)
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"), VC_AGENT_RUNTIME="runc")
    argv = [*AGENT, "--connect", path, "--state-dir", state]
    proc = subprocess.Popen(argv, env=env)
    try:
        server.settimeout(10)
        conn, _ = server.accept()
        client = AgentClient(conn)
        client.hello()
        assert client.call("ping") == {}
        assert client.call("guest_details")["runtime"].startswith("runc")
        conn.close()
        assert proc.wait(timeout=10) == 0
    finally:
        server.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        shutil.rmtree(state, ignore_errors=True)


def test_oom_counter_parsing(tmp_path: Path) -> None:
    from virtcontainers.guest.agent.model import Container

    events = tmp_path / "memory.events"
    events.write_text("low 0\nhigh 0\nmax 4\noom 2\noom_kill 2\n")
    container = Container("c", str(tmp_path))
    assert container.read_oom_kills() == 0  # no cgroup known
    container.memory_events = str(events)
    assert container.read_oom_kills() == 2
    events.unlink()
    container.oom_kills = 2
    assert container.read_oom_kills() == 2  # unreadable: keep the last count


def test_port_hangup_polls_again_without_spinning(tmp_path: Path) -> None:
    # A virtio-serial port reads 0 bytes while no host is attached: the agent
    # must keep the fd and look again every 50 ms, neither exit nor spin.
    code = """
import socket, sys, time
from virtcontainers.guest.agent.channel import Channel
from virtcontainers.guest.agent.core import Agent
from virtcontainers.guest.agent.ops import HANDLERS
a = Agent("runc", sys.argv[1], pid1=False, handlers=HANDLERS)
ours, theirs = socket.socketpair()
channel = Channel(a, ours.fileno(), is_port=True)
a.attach(channel)
hangups = []
original = channel.hangup
def counting(reason):
    hangups.append(reason)
    original(reason)
channel.hangup = counting
theirs.close()
end = time.monotonic() + 0.5
loops = 0
while time.monotonic() < end:
    a.loop.run_once()
    loops += 1
print(len(hangups), loops, a.loop.stopped)
"""
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    out = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path)],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    )
    hangups, loops, stopped = out.stdout.split()
    assert stopped == "False"
    assert 4 <= int(hangups) <= 12
    assert int(loops) < 40


# --------------------------------------------------------------------------- configure_network
# The agent runs in a network namespace each test makes (and always removes)
# with two veth NICs of known MACs, and with busybox's `ip` first on its PATH,
# as in the guest; the checks use iproute2's `ip -j`.  Nothing leaves it.

IPROUTE = shutil.which("ip")
MACS = ("02:00:0a:00:00:01", "02:00:0a:00:00:02")
NETWORK: dict[str, Any] = {
    "interfaces": [
        {"mac": MACS[0].upper(), "mtu": 1400, "addresses": ["10.1.2.3/24", "fd00::3/64"]},
        {"mac": MACS[1], "mtu": 9000, "addresses": ["10.3.0.5/16"]},
    ],
    "routes": [
        {"destination": "default", "gateway": "10.1.2.1", "mac": MACS[0]},
        {"destination": "default", "gateway": "fd00::1", "mac": MACS[0]},
        {"destination": "10.9.0.0/16", "gateway": "10.3.0.1", "mac": MACS[1]},
        {"destination": "10.8.0.0/16", "gateway": None, "mac": MACS[1]},
        {"destination": "fd01::/64", "gateway": None, "mac": MACS[1]},
    ],
}
needs_iproute = pytest.mark.skipif(IPROUTE is None, reason="iproute2 is not installed")


def ip(netns: str, *args: str) -> Any:
    """iproute2's JSON view of the namespace (or None for a command without output)."""
    assert IPROUTE is not None
    out = subprocess.run(
        [IPROUTE, "-n", netns, "-j", *args], capture_output=True, text=True, check=True
    ).stdout
    return json.loads(out) if out.strip() else None


@pytest.fixture
def netns_agent(tmp_path: Path) -> Iterator[tuple[AgentClient, str]]:
    assert IPROUTE is not None
    netns = "vct-" + uuid.uuid4().hex[:12]
    subprocess.run([IPROUTE, "netns", "add", netns], check=True)
    try:
        for index, mac in enumerate(MACS):
            nic = f"vc{index}"
            ip(netns, "link", "add", nic, "address", mac, "type", "veth", "peer", f"{nic}p")
            ip(netns, "link", "set", f"{nic}p", "up")
        bin_dir = tmp_path / "bin"
        bin_dir.mkdir()
        (bin_dir / "ip").symlink_to(BUSYBOX)
        with spawn_agent([IPROUTE, "netns", "exec", netns], bin_dir) as harness:
            harness.client.hello()
            yield harness.client, netns
    finally:
        subprocess.run([IPROUTE, "netns", "delete", netns], check=False)


def global_addresses(link: dict[str, Any]) -> set[tuple[str, int]]:
    return {(a["local"], a["prefixlen"]) for a in link["addr_info"] if a["scope"] == "global"}


def routes(netns: str, family: str) -> set[tuple[str, str | None, str]]:
    return {(r["dst"], r.get("gateway"), r["dev"]) for r in ip(netns, family, "route", "show")}


def check_network(netns: str) -> None:
    links = {link["ifname"]: link for link in ip(netns, "addr", "show")}
    assert "UP" in links["lo"]["flags"]
    vc0, vc1 = links["vc0"], links["vc1"]
    assert (vc0["mtu"], vc1["mtu"]) == (1400, 9000)
    assert "UP" in vc0["flags"] and "UP" in vc1["flags"]
    assert global_addresses(vc0) == {("10.1.2.3", 24), ("fd00::3", 64)}
    assert global_addresses(vc1) == {("10.3.0.5", 16)}
    assert not [a for a in vc0["addr_info"] if a.get("tentative")]  # no DAD: usable at once
    assert {
        ("default", "10.1.2.1", "vc0"),
        ("10.9.0.0/16", "10.3.0.1", "vc1"),
        ("10.8.0.0/16", None, "vc1"),
    } <= routes(netns, "-4")
    assert {("default", "fd00::1", "vc0"), ("fd01::/64", None, "vc1")} <= routes(netns, "-6")


@needs_iproute
def test_configure_network_sets_up_nics_by_mac_and_adds_routes(
    netns_agent: tuple[AgentClient, str],
) -> None:
    client, netns = netns_agent
    assert "UP" not in ip(netns, "link", "show", "lo")[0]["flags"]
    assert client.call("configure_network", **NETWORK) == {}
    check_network(netns)
    assert client.call("configure_network", **NETWORK) == {}  # again: no error, no change
    check_network(netns)


@needs_iproute
def test_configure_network_unknown_mac_is_not_found(
    netns_agent: tuple[AgentClient, str],
) -> None:
    client, _ = netns_agent
    nic = {"mac": "02:00:0a:00:00:99", "mtu": 1500, "addresses": []}
    with pytest.raises(AgentCallError) as info:
        client.call("configure_network", interfaces=[nic], routes=[])
    assert info.value.kind == "not_found"
    assert "02:00:0a:00:00:99" in info.value.message


@needs_iproute
def test_configure_network_waits_for_a_nic_that_appears_later(
    netns_agent: tuple[AgentClient, str],
) -> None:
    """As for a hot-plugged NIC: the guest's kernel shows it a moment after the host adds it."""
    client, netns = netns_agent
    late = "02:00:0a:00:00:03"
    nic = {"mac": late, "mtu": 1400, "addresses": ["10.7.0.2/24"]}
    route = {"destination": "10.70.0.0/16", "gateway": "10.7.0.1", "mac": late}

    def plug() -> None:
        time.sleep(0.5)
        ip(netns, "link", "add", "vc2", "address", late, "type", "veth", "peer", "vc2p")
        ip(netns, "link", "set", "vc2p", "up")

    plugger = threading.Thread(target=plug)
    plugger.start()
    try:
        assert client.call("configure_network", interfaces=[nic], routes=[route], wait=30) == {}
    finally:
        plugger.join()
    assert global_addresses(ip(netns, "addr", "show", "dev", "vc2")[0]) == {("10.7.0.2", 24)}
    assert ("10.70.0.0/16", "10.7.0.1", "vc2") in routes(netns, "-4")


@needs_iproute
def test_configure_network_gives_up_waiting_and_says_so(
    netns_agent: tuple[AgentClient, str],
) -> None:
    client, _ = netns_agent
    nic = {"mac": "02:00:0a:00:00:99", "mtu": 1500, "addresses": []}
    waiting = client.request("configure_network", interfaces=[nic], routes=[], wait=1.5)
    assert client.call("ping") == {}  # answered meanwhile: the wait does not block the agent
    assert waiting not in client.responses
    with pytest.raises(AgentCallError) as info:
        client.result(waiting)
    assert info.value.kind == "not_found"
    assert "02:00:0a:00:00:99" in info.value.message and "after waiting 1.5s" in info.value.message


@needs_iproute
def test_configure_network_failure_says_which_command(
    netns_agent: tuple[AgentClient, str],
) -> None:
    client, _ = netns_agent
    nic = {"mac": MACS[0], "mtu": 1500, "addresses": ["10.1.2.3/24"]}
    unreachable = {"destination": "10.6.0.0/16", "gateway": "10.5.0.1", "mac": MACS[0]}
    with pytest.raises(AgentCallError) as info:
        client.call("configure_network", interfaces=[nic], routes=[unreachable])
    assert info.value.kind == "network"
    assert "route replace 10.6.0.0/16 via 10.5.0.1 dev vc0" in info.value.message
    assert "unreachable" in info.value.message


def _nic(**fields: Any) -> dict[str, Any]:
    return {"mac": MACS[0], "mtu": 1500, "addresses": ["10.1.2.3/24"], **fields}


def _route(**fields: Any) -> dict[str, Any]:
    return {"destination": "10.9.0.0/16", "gateway": "10.1.2.1", "mac": MACS[0], **fields}


@needs_iproute
@pytest.mark.parametrize(
    ("args", "says"),
    [
        ({"interfaces": []}, "routes"),
        ({"interfaces": [], "routes": [], "dns": []}, "dns"),
        ({"interfaces": {}, "routes": []}, "interfaces"),
        ({"interfaces": [_nic()] * 17, "routes": []}, "at most 16"),
        ({"interfaces": [_nic(mac="02:00:0a:00:00")], "routes": []}, "mac"),
        ({"interfaces": [_nic(mac="02:00:0a:00:00:0g")], "routes": []}, "mac"),
        ({"interfaces": [_nic(mac="01:00:5e:00:00:01")], "routes": []}, "multicast"),
        ({"interfaces": [_nic(), _nic()], "routes": []}, "distinct"),
        ({"interfaces": [_nic(mtu=67)], "routes": []}, "mtu"),
        ({"interfaces": [_nic(mtu=True)], "routes": []}, "mtu"),
        ({"interfaces": [_nic(mtu=1000, addresses=["fd00::3/64"])], "routes": []}, "1280"),
        ({"interfaces": [_nic(addresses=["10.1.2.3"])], "routes": []}, "CIDR"),
        ({"interfaces": [_nic(addresses=["10.1.2.3/33"])], "routes": []}, "addresses[0]"),
        ({"interfaces": [_nic(addresses=["10.1.2.3/255.0.0.0"])], "routes": []}, "CIDR"),
        ({"interfaces": [_nic(addresses=["fe80::1%vc0/64"])], "routes": []}, "CIDR"),
        ({"interfaces": [_nic(addresses=["224.0.0.1/4"])], "routes": []}, "cannot be"),
        ({"interfaces": [_nic(addresses=[7])], "routes": []}, "addresses[0]"),
        ({"interfaces": [_nic()], "routes": [_route(destination="10.9.0.1/16")]}, "host bits"),
        ({"interfaces": [_nic()], "routes": [_route(destination="anywhere")]}, "destination"),
        ({"interfaces": [_nic()], "routes": [_route(gateway="10.1.2.1/24")]}, "gateway"),
        ({"interfaces": [_nic()], "routes": [_route(gateway="fd00::1")]}, "IP version"),
        ({"interfaces": [_nic()], "routes": [_route(destination="default", gateway=None)]}, "::/0"),
        ({"interfaces": [_nic()], "routes": [_route(mac=MACS[1])]}, "not the MAC of one"),
        ({"interfaces": [_nic()], "routes": [_route()] * 257}, "at most 256"),
        ({"interfaces": [_nic()], "routes": [], "wait": -1}, "wait"),
        ({"interfaces": [_nic()], "routes": [], "wait": 121}, "0..120"),
        ({"interfaces": [_nic()], "routes": [], "wait": "5"}, "wait"),
        ({"interfaces": [_nic()], "routes": [], "wait": True}, "wait"),
    ],
)
def test_configure_network_checks_every_field(
    netns_agent: tuple[AgentClient, str], args: dict[str, Any], says: str
) -> None:
    client, netns = netns_agent
    with pytest.raises(AgentCallError) as info:
        client.call("configure_network", **args)
    assert info.value.kind == "invalid"
    assert says in info.value.message
    vc0 = ip(netns, "addr", "show", "dev", "vc0")[0]
    assert not global_addresses(vc0) and "UP" not in vc0["flags"]  # nothing was applied
