"""A real Pod, in-process: the mock hypervisor, the real AgentClient, the real guest agent.

No daemon process and no VM: each test drives :class:`Pod` in its own event
loop.  The guest agent runs on the host as a subprocess with runc, started as
tests/unit/guest/harness.py starts it (``--fd``: one end of a socketpair).

The mock hypervisor boots nothing, so :class:`AgentPort` plays the two parts
of a VM that a Pod relies on:

* QEMU's agent chardev: it listens on the socket the mock hypervisor reports
  and relays the Pod's AgentClient connection to the agent's socketpair.
* The guest's mount of the pod's shared directory at /run/vc/shared: the Pod
  names a container's rootfs by its guest path (``spec.guest_rootfs``), so
  the port rewrites the ``root.path`` of each create_container bundle to the
  same place in the pod's shared directory on the host.  runc then runs the
  rootfs the Pod really mounted there (an overlay on the busybox base).
  Nothing on the host can stand in for /run/vc/shared instead: a bind mount
  copies the mount tree once, and the Pod attaches each container's rootfs
  later, on private mounts that never propagate to the copy; runc refuses a
  rootfs path through a symlink ("invalid rootfs: ... or a symlink"); and
  either would be global to the host, shared by every test run on it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import uuid
from collections.abc import AsyncIterator, Awaitable, Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import TypeVar

import pytest

from tests.conftest import short_temp_dir
from tests.unit.conftest import mock_pod
from tests.unit.guest.harness import AGENT, ROOT, RUNC, runc_leftovers
from virtcontainers import api, spec
from virtcontainers.agent import protocol
from virtcontainers.agent.client import AgentClient
from virtcontainers.agent.results import ExitStatus
from virtcontainers.config import Cmd, ContainerConfig, ImagePaths
from virtcontainers.errors import AgentProtocolError, NotFoundError, StateError
from virtcontainers.hypervisor.mock import MockHypervisor
from virtcontainers.pod.container import Container
from virtcontainers.pod.pod import Pod
from virtcontainers.pod.process import GuestProcess
from virtcontainers.records import KILLED
from virtcontainers.states import ContainerState, PodState
from virtcontainers.stdio import Stdio
from virtcontainers.storage import mounts
from virtcontainers.store import PodPaths, Store

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="runc and the pod's mounts need root"),
    pytest.mark.skipif(RUNC is None, reason="runc is not installed"),
    pytest.mark.timeout(120),
]

POD_ID = "inproc"
RUN = uuid.uuid4().hex[:8]
STARTED_THEN_SLEEP = "echo started; exec sleep 1000"
READ_SIZE = 256 * 1024
T = TypeVar("T")


async def within(awaitable: Awaitable[T], seconds: float = 20.0) -> T:
    """Await with a deadline: a hang fails the test instead of stalling the suite."""
    return await asyncio.wait_for(awaitable, seconds)


# --------------------------------------------------------------------------- the guest agent


@dataclass
class HostAgent:
    """The guest agent as a host subprocess; ``channel`` is the host's end of its socket."""

    proc: subprocess.Popen[bytes]
    channel: socket.socket
    state: Path

    def runc_status(self, container_id: str) -> str:
        """What runc itself says of a container (paused is the freezer's state)."""
        out = subprocess.run(
            ["runc", "--root", str(self.state / "runtime"), "state", container_id],
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        )
        status: str = json.loads(out.stdout)["status"]
        return status


@pytest.fixture
def host_agent(run_root: Path) -> Iterator[HostAgent]:
    """The agent, with runc (the host's crun refuses this hybrid-cgroup host).

    It depends on ``run_root`` so that it is torn down first: the agent and
    its runc containers go before the pod's mounts and directories.
    """
    state = short_temp_dir("vcp-")  # short: runc's console sockets live in it
    channel, theirs = socket.socketpair()
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    env.pop("VC_AGENT_RUNTIME", None)
    argv = [*AGENT, "--fd", str(theirs.fileno()), "--runtime", "runc", "--state-dir", str(state)]
    proc = subprocess.Popen(argv, pass_fds=(theirs.fileno(),), env=env)
    theirs.close()
    try:
        yield HostAgent(proc, channel, state)
    finally:
        channel.close()
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)
        # The agent leaves its containers behind when it goes (a VM would take them along).
        for cid in runc_leftovers(str(state)):
            subprocess.run(
                ["runc", "--root", str(state / "runtime"), "delete", "--force", cid],
                capture_output=True,
                check=False,
                timeout=30,
            )
        shutil.rmtree(state, ignore_errors=True)


# --------------------------------------------------------------------------- the VM's side


class AgentPort:
    """The VM's end of the agent channel, with the guest's view of the shared directory.

    Host to agent, frames are decoded and re-encoded (create_container's root.path
    translated, see the module docstring); agent to host, bytes pass untouched.
    Either side ending (or failing) ends the other, as when the VM or the host goes away.
    """

    def __init__(self, channel: socket.socket, shared_dir: Path) -> None:
        self.channel = channel
        self.shared_dir = shared_dir
        self.rootfs_requested: list[str] = []
        self._listener: socket.socket | None = None
        self._task: asyncio.Task[None] | None = None

    def listen(self, path: Path) -> None:
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(str(path))
        listener.listen(1)
        listener.setblocking(False)
        self._listener = listener
        self._task = asyncio.ensure_future(self._serve(listener))

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._listener is not None:
            self._listener.close()

    async def _serve(self, listener: socket.socket) -> None:
        conn, _ = await asyncio.get_running_loop().sock_accept(listener)
        host_reader, host_writer = await asyncio.open_connection(sock=conn)
        agent_reader, agent_writer = await asyncio.open_connection(sock=self.channel)
        relays = {
            asyncio.ensure_future(self._to_agent(host_reader, agent_writer)),
            asyncio.ensure_future(self._to_host(agent_reader, host_writer)),
        }
        try:
            await asyncio.wait(relays, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for relay in relays:
                relay.cancel()
            await asyncio.gather(*relays, return_exceptions=True)
            for writer in (agent_writer, host_writer):
                writer.close()

    async def _to_agent(self, source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        decoder = protocol.FrameDecoder()
        while data := await source.read(READ_SIZE):
            for frame in decoder.feed(data):
                sink.write(self._as_guest_sees_it(frame))
            await sink.drain()

    async def _to_host(self, source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        while data := await source.read(READ_SIZE):
            sink.write(data)
            await sink.drain()

    def _as_guest_sees_it(self, frame: protocol.Frame) -> bytes:
        if frame.type is not protocol.FrameType.REQUEST:
            return frame.encode()
        message = frame.json()
        args = message["args"]
        if message["op"] != "create_container" or not isinstance(args, dict):
            return frame.encode()
        root = args["bundle"]["root"]
        guest_path = PurePosixPath(root["path"])
        self.rootfs_requested.append(str(guest_path))
        # A path outside the shared mount is passed on as is, for the agent to refuse.
        if guest_path.is_relative_to(spec.GUEST_SHARED_DIR):
            root["path"] = str(self.shared_dir / guest_path.relative_to(spec.GUEST_SHARED_DIR))
        return protocol.request(frame.stream, str(message["op"]), args)


# --------------------------------------------------------------------------- the pod


@dataclass
class PodSession:
    """A started Pod and what the test needs around it."""

    pod: Pod
    hypervisor: MockHypervisor
    port: AgentPort
    paths: PodPaths
    _outputs: list[asyncio.BaseTransport] = field(default_factory=list)

    async def output_pipe(self) -> tuple[int, asyncio.StreamReader]:
        """A pipe: its write end for a Stdio (the Pod then owns and closes it), and
        a reader of what arrives (closed with the session)."""
        read_end, write_end = os.pipe()
        reader = asyncio.StreamReader()
        transport, _ = await asyncio.get_running_loop().connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(read_end, "rb", buffering=0)
        )
        self._outputs.append(transport)
        return write_end, reader

    async def exec(
        self, container_id: str, script: str, *, stdin: bytes | None = None
    ) -> tuple[GuestProcess, asyncio.StreamReader, asyncio.StreamReader]:
        """``sh -c script`` in a container; returns the process, its stdout and stderr."""
        out_fd, out = await self.output_pipe()
        err_fd, err = await self.output_pipe()
        stdin_fd = None if stdin is None else input_pipe(stdin)
        stdio = Stdio(stdin=stdin_fd, stdout=out_fd, stderr=err_fd)
        process = await self._handing_over(
            stdio, self.pod.exec_process(container_id, sh(script), stdio)
        )
        return process, out, err

    async def create_container(
        self, config: ContainerConfig
    ) -> tuple[Container, asyncio.StreamReader, asyncio.StreamReader]:
        """Create (not start) a container; returns it, its stdout and its stderr."""
        out_fd, out = await self.output_pipe()
        err_fd, err = await self.output_pipe()
        stdio = Stdio(stdout=out_fd, stderr=err_fd)
        created = await self._handing_over(stdio, self.pod.create_container(config, stdio))
        return created, out, err

    @staticmethod
    async def _handing_over(stdio: Stdio, call: Awaitable[T]) -> T:
        """``call``, which takes ``stdio`` over; if it fails, ``stdio`` is closed here
        (a no-op when the Pod had taken and closed it already)."""
        try:
            return await within(call)
        except BaseException:
            stdio.close()
            raise

    def close(self) -> None:
        for transport in self._outputs:
            transport.close()


def input_pipe(data: bytes) -> int:
    """A pipe's read end that yields ``data``, then EOF (``data`` fits in the pipe)."""
    read_end, write_end = os.pipe()
    try:
        os.write(write_end, data)
    finally:
        os.close(write_end)
    return read_end


def sh(script: str) -> Cmd:
    return Cmd(("sh", "-c", script))


def container(name: str, rootfs: Path, script: str) -> ContainerConfig:
    """A container running ``sh -c script``, its id ``name`` made unique to this run:
    runc on the host names each container's cgroups after its id, so runs at
    the same time (or leftovers of a crashed one) must not share ids.
    """
    # A layer of its own: the cached busybox base is shared and stays read-only.
    return ContainerConfig(f"{name}-{RUN}", rootfs, sh(script), writable_layer=True)


async def start_sleeper(session: PodSession, config: ContainerConfig) -> asyncio.StreamReader:
    """Create and start a STARTED_THEN_SLEEP container; wait for "started", return
    its stdout.

    This is how a test keeps a process running past the agent's end (killed, or
    gone with the pod): an exec'd process would be orphaned outside the
    container's pid namespace, and the container's init could not finish dying
    (nor runc delete it) until the host's pid 1 reaps that orphan, which here
    takes over a second.
    """
    _, out, _ = await session.create_container(config)
    await within(session.pod.start_container(config.id))
    assert await within(out.readline()) == b"started\n"
    return out


async def read_all(reader: asyncio.StreamReader) -> bytes:
    return await within(reader.read())


def stored_pod_state() -> PodState:
    return Store().load(POD_ID).state


def stored_container(cid: str) -> tuple[ContainerState, ExitStatus | None]:
    record = Store().load(POD_ID).containers[cid]
    return record.state, record.exit


@contextlib.asynccontextmanager
async def started_pod(
    agent: HostAgent, image: ImagePaths, *containers: ContainerConfig
) -> AsyncIterator[PodSession]:
    """Create the pod's record as the API does, then build and start a Pod on it.

    Whatever the test does, the Pod is stopped on the way out (which closes its
    relays and detaches its mounts), then the port and the pipes are closed.
    """
    store = Store()
    paths = store.paths(POD_ID)
    api.create_pod(mock_pod(POD_ID, image, *containers))
    # The socket the mock hypervisor will report for the agent (the Pod's vm dir).
    paths.vm.mkdir(mode=0o700)
    port = AgentPort(agent.channel, paths.shared)
    hypervisor = MockHypervisor()
    record = store.load(POD_ID)
    record.state = PodState.STARTING  # as start_pod records it before its daemon boots the pod
    store.save(record)
    pod = Pod(store, record, hypervisor, AgentClient(POD_ID))
    session = PodSession(pod, hypervisor, port, paths)
    try:
        port.listen(paths.vm / "agent.sock")
        await within(pod.start())
        assert hypervisor.agent_socket_path() == paths.vm / "agent.sock"
        yield session
    finally:
        try:
            if pod.state in (PodState.RUNNING, PodState.PAUSED):
                await within(pod.stop())
        finally:
            session.close()
            await port.close()
            pod.executor.shutdown(wait=False, cancel_futures=True)


# --------------------------------------------------------------------------- tests


def test_start_exec_and_container_output(
    host_agent: HostAgent, image: ImagePaths, busybox_rootfs: Path
) -> None:
    first = container("first", busybox_rootfs, "echo first up; exec sleep 1000")
    second = container("second", busybox_rootfs, "echo out; echo err >&2; exit 7")
    log = Store().paths(POD_ID).root / "logs" / f"{first.id}.log"

    async def scenario() -> None:
        async with started_pod(host_agent, image, first) as session:
            pod = session.pod
            assert pod.state is PodState.RUNNING
            assert stored_pod_state() is PodState.RUNNING
            assert stored_container(first.id) == (ContainerState.RUNNING, None)
            assert session.port.rootfs_requested == [spec.guest_rootfs(first.id)]
            assert host_agent.runc_status(first.id) == "running"

            # An exec with all three streams: stdin ends, stdout and stderr come back apart.
            process, out, err = await session.exec(
                first.id, "cat; echo to-stderr >&2; exit 5", stdin=b"line one\nline two\n"
            )
            assert await read_all(out) == b"line one\nline two\n"
            assert await read_all(err) == b"to-stderr\n"
            assert await within(process.wait()) == ExitStatus(5, None)
            assert await within(pod.wait_process(first.id, process.exec_id)) == ExitStatus(5)

            # A container created in the running pod, its output on the pipes given.
            _, out, err = await session.create_container(second)
            assert stored_container(second.id) == (ContainerState.CREATED, None)
            await within(pod.start_container(second.id))
            assert await read_all(out) == b"out\n"
            assert await read_all(err) == b"err\n"
            assert await within(pod.wait_process(second.id, None)) == ExitStatus(7)
            assert stored_container(second.id) == (ContainerState.STOPPED, ExitStatus(7))

            await within(pod.delete_container(second.id))
            assert second.id not in Store().load(POD_ID).containers
            assert second.id not in runc_leftovers(str(host_agent.state))
            assert not mounts.mounts_under(session.paths.shared / second.id)

    asyncio.run(scenario())
    # The pod's first container had no stdio given: its output went to its log.
    assert log.read_bytes() == b"first up\n"


def test_signal_pause_resume_and_stop_container(
    host_agent: HostAgent, image: ImagePaths, busybox_rootfs: Path
) -> None:
    # sleep as a pid namespace's init has no SIGTERM handler: the signal is ignored.
    deaf = container("deaf", busybox_rootfs, "exec sleep 1000")
    trapped = 'trap "exit 3" TERM; echo ready; sleep 1000 & wait'
    polite = container("polite", busybox_rootfs, trapped)

    async def scenario() -> None:
        async with started_pod(host_agent, image, deaf) as session:
            pod = session.pod

            process, _, _ = await session.exec(deaf.id, "exec sleep 1000")
            await within(pod.signal_process(deaf.id, process.exec_id, signal.SIGKILL, False))
            assert await within(process.wait()) == ExitStatus(137, signal.SIGKILL)

            await within(pod.pause_container(deaf.id))
            assert stored_container(deaf.id) == (ContainerState.PAUSED, None)
            assert host_agent.runc_status(deaf.id) == "paused"
            with pytest.raises(StateError, match="paused"):
                await session.exec(deaf.id, "true")
            await within(pod.resume_container(deaf.id))
            assert stored_container(deaf.id) == (ContainerState.RUNNING, None)
            assert host_agent.runc_status(deaf.id) == "running"
            process, _, _ = await session.exec(deaf.id, "true")  # thawed: it runs
            assert await within(process.wait()) == ExitStatus(0)

            # A container that handles SIGTERM stops with its own exit code...
            _, out, _ = await session.create_container(polite)
            await within(pod.start_container(polite.id))
            assert await within(out.readline()) == b"ready\n"  # its trap is set
            await within(pod.stop_container(polite.id, timeout=10))
            assert stored_container(polite.id) == (ContainerState.STOPPED, ExitStatus(3))

            # ... one that ignores it is killed when the timeout runs out.
            await within(pod.stop_container(deaf.id, timeout=0.5))
            killed = ExitStatus(137, signal.SIGKILL)
            assert stored_container(deaf.id) == (ContainerState.STOPPED, killed)
            assert host_agent.runc_status(deaf.id) == "stopped"

    asyncio.run(scenario())


def test_pod_stop_ends_everything_and_persists(
    host_agent: HostAgent, image: ImagePaths, busybox_rootfs: Path
) -> None:
    quitter = container("quitter", busybox_rootfs, "exit 7")
    sleeper = container("sleeper", busybox_rootfs, STARTED_THEN_SLEEP)
    paths = Store().paths(POD_ID)

    async def scenario() -> None:
        async with started_pod(host_agent, image, quitter) as session:
            pod = session.pod
            assert await within(pod.wait_process(quitter.id, None)) == ExitStatus(7)
            out = await start_sleeper(session, sleeper)

            await within(pod.stop())

            assert pod.state is PodState.STOPPED
            assert pod.stopped.is_set()
            assert ("stop", 10) in session.hypervisor.calls
            # Waiters are released and relays closed: the process went down with the VM.
            ended = await within(pod.wait_process(sleeper.id, None))
            assert (ended.exit_code, ended.signal, ended.error) == (137, 9, "the pod was stopped")
            assert await read_all(out) == b""

    asyncio.run(scenario())
    record = Store().load(POD_ID)
    assert record.state is PodState.STOPPED
    assert record.vm is None and record.started_at is not None
    assert {cid: (c.state, c.exit) for cid, c in record.containers.items()} == {
        quitter.id: (ContainerState.STOPPED, ExitStatus(7)),
        sleeper.id: (ContainerState.STOPPED, KILLED),
    }
    # Only the layers' tmpfs stays, with the layers, until the pod is deleted.
    assert mounts.mounts_under(paths.root) == [Path(os.path.realpath(paths.layers))]
    assert not paths.vm.exists()
    # The Pod closed the agent's channel: the agent saw the host go and exited.
    assert host_agent.proc.wait(timeout=10) == 0


def test_exec_in_a_missing_container_is_not_found(
    host_agent: HostAgent, image: ImagePaths, busybox_rootfs: Path
) -> None:
    only = container("only", busybox_rootfs, "exec sleep 1000")

    async def scenario() -> None:
        async with started_pod(host_agent, image, only) as session:
            with pytest.raises(NotFoundError, match="container 'ghost' not found"):
                await session.exec("ghost", "true")
            with pytest.raises(NotFoundError, match=f"{only.id}/nope"):
                await within(session.pod.signal_process(only.id, "nope", signal.SIGKILL, False))
            # Nothing was spoiled: the pod and its agent still serve.
            process, out, _ = await session.exec(only.id, "echo still here")
            assert await read_all(out) == b"still here\n"
            assert await within(process.wait()) == ExitStatus(0)

    asyncio.run(scenario())


def test_agent_killed_mid_pod(
    host_agent: HostAgent, image: ImagePaths, busybox_rootfs: Path
) -> None:
    logged = container("logged", busybox_rootfs, "exec sleep 1000")
    piped = container("piped", busybox_rootfs, STARTED_THEN_SLEEP)
    late = container("late", busybox_rootfs, "true")

    async def scenario() -> None:
        async with started_pod(host_agent, image, logged) as session:
            pod = session.pod
            out = await start_sleeper(session, piped)

            host_agent.proc.kill()

            # Every waiter learns its process is lost, and no relay hangs.
            for lost in (piped, logged):
                ended = await within(pod.wait_process(lost.id, None))
                assert (ended.exit_code, ended.signal) == (KILLED.exit_code, KILLED.signal)
                assert ended.error is not None and "the agent was lost" in ended.error
            assert await read_all(out) == b""
            assert stored_container(logged.id) == (ContainerState.STOPPED, KILLED)
            assert stored_container(piped.id) == (ContainerState.STOPPED, KILLED)
            # Calls to the agent fail at once; the container left no trace in the pod.
            with pytest.raises(AgentProtocolError, match="closed"):
                await within(pod.create_container(late, None))
            assert late.id not in pod.containers
            assert not mounts.mounts_under(session.paths.shared / late.id)

            await within(pod.stop())
            assert stored_pod_state() is PodState.STOPPED

    asyncio.run(scenario())
