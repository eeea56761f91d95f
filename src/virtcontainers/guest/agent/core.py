"""The Agent: its state, SIGCHLD reaping, incoming frames and request dispatch.

The operations themselves live in the ``ops`` package, above this module: the
agent is given their table (``ops.HANDLERS``, keyed by the protocol's op
names), so that the operations can use the agent without it importing them.
"""

from __future__ import annotations

import os
import signal

from .args import AgentError, arg_id, arg_opt_id, invalid
from .log import describe_exception, log
from .loop import Loop
from .model import Container, Reply
from .runtime import RuntimeCall
from .wire import AGENT_VERSION, protocol

TYPE_CHECKING = False  # typing costs ~50 ms at every guest boot under TCG: annotations only
if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from virtcontainers.agent.messages import AgentHello

    from .channel import Channel
    from .loop import Handler
    from .model import Process
    from .streams import InStream, OutStream

UNCLAIMED_LIMIT = 4096


class Agent:
    def __init__(
        self, runtime: str, state_dir: str, pid1: bool, handlers: Mapping[str, OpHandler]
    ) -> None:
        self.runtime = runtime
        self.state_dir = state_dir
        self.bundles = os.path.join(state_dir, "bundles")
        self.runtime_root = os.path.join(state_dir, "runtime")
        self.pid1 = pid1
        self.handlers = handlers
        self.loop = Loop()
        self.channel: Channel | None = None
        self.generation = 0
        self.containers: dict[str, Container] = {}
        self.pids: dict[int, Process] = {}
        self.calls: dict[int, RuntimeCall] = {}
        self.unclaimed: dict[int, int] = {}
        self.outs: dict[int, OutStream] = {}
        self.detached: dict[int, OutStream] = {}
        """Output streams of a host that went away, kept for one that reattaches."""
        self.ins: dict[int, InStream] = {}
        self.busy_streams: set[int] = set()
        self.forwards: set[object] = set()
        """Forwarded connections (ops/ports.py), counted against their cap."""
        self.runtime_version: str | None = None
        self.console_seq = 0
        self.keepalive: object = None
        self.guest = Container("", state_dir)  # exec_guest processes: not a container
        self.guest.status = "running"
        os.makedirs(self.bundles, exist_ok=True)
        os.makedirs(self.runtime_root, exist_ok=True)
        self._setup_sigchld()

    # ---------------------------------------------------------------- plumbing

    def _setup_sigchld(self) -> None:
        rfd, wfd = os.pipe()
        os.set_blocking(rfd, False)
        os.set_blocking(wfd, False)
        self.wakeup_fd = rfd
        signal.set_wakeup_fd(wfd, warn_on_full_buffer=False)
        signal.signal(signal.SIGCHLD, lambda signum, frame: None)
        self.loop.set_reader(rfd, self.on_wakeup)

    def on_wakeup(self) -> None:
        try:
            while os.read(self.wakeup_fd, 4096):
                pass
        except BlockingIOError:
            pass
        self.reap()

    def reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            call = self.calls.pop(pid, None)
            if call is not None:
                call.exited(status)
                continue
            proc = self.pids.get(pid)
            if proc is not None and proc.status is None:
                proc.exited(status)
                continue
            self.unclaimed[pid] = status  # its pid-file may not be read yet
            while len(self.unclaimed) > UNCLAIMED_LIMIT:
                del self.unclaimed[next(iter(self.unclaimed))]

    def attach(self, channel: Channel) -> None:
        self.channel = channel

    def send(self, frame: bytes) -> None:
        if self.channel is not None:
            self.channel.send(frame)

    def run(self) -> None:
        self.reap()
        self.loop.run()

    def runtime_argv(self, *args: str, log_file: str | None = None) -> list[str]:
        argv = [self.runtime, "--root", self.runtime_root]
        if log_file:
            argv += ["--log", log_file]
        return argv + list(args)

    def run_runtime(
        self,
        reply: Reply,
        args: list[str],
        on_ok: Callable[[RuntimeCall], None],
        settle: Handler | None = None,
    ) -> None:
        """Run ``<runtime> args``; on failure answer a "runtime" error.

        settle (if any) runs first when the command has finished, either way.
        """

        def done(call: RuntimeCall) -> None:
            if settle is not None:
                settle()
            if not call.ok:
                reply.error("runtime", call.error_text())
                return
            try:
                on_ok(call)
            except AgentError as exc:
                reply.error(exc.kind, exc.message)
            except Exception as exc:
                log(describe_exception(exc))
                reply.error("internal", f"{type(exc).__name__}: {exc}")

        RuntimeCall(self, self.runtime_argv(*args), done)

    def run_busy(
        self,
        container: Container,
        reply: Reply,
        args: list[str],
        on_ok: Callable[[RuntimeCall], None],
    ) -> None:
        """A runtime call during which no other state change may start."""
        container.busy = True

        def settle() -> None:
            container.busy = False

        try:
            self.run_runtime(reply, args, on_ok, settle)
        except BaseException:
            container.busy = False
            raise

    # ---------------------------------------------------------------- frames

    def on_frame(self, frame: protocol.Frame) -> None:
        ftype = frame.type
        if ftype is protocol.FrameType.HELLO:
            self.on_hello(frame)
        elif self.generation == 0:
            log(f"ignoring {ftype.name} frame before HELLO")
        elif ftype is protocol.FrameType.REQUEST:
            self.on_request(frame)
        elif ftype is protocol.FrameType.DATA:
            stdin = self.ins.get(frame.stream)
            if stdin is not None:
                stdin.on_data(frame)
        elif ftype is protocol.FrameType.CREDIT:
            try:
                count = frame.credit()
            except protocol.ProtocolError as exc:
                log(f"bad CREDIT on stream {frame.stream}: {exc}")
                return
            out = self.outs.get(frame.stream)
            if out is not None:
                out.add_credit(count)
        else:
            log(f"ignoring unexpected {ftype.name} frame from the host")

    def on_hello(self, frame: protocol.Frame) -> None:
        try:
            message = frame.json()
        except protocol.ProtocolError as exc:
            log(f"bad HELLO: {exc}")
            return
        nonce = message.get("nonce")
        if not isinstance(nonce, str):
            log("HELLO without a string nonce ignored")
            return
        # A new connection: forget what belonged to the previous one.
        self.generation += 1
        if self.channel is not None:
            self.channel.drop_queued()
        for container in self.containers.values():
            for proc in container.processes():
                proc.waiters.clear()
        for stdin in list(self.ins.values()):
            stdin.orphan()
        self.busy_streams = set(self.detached)  # still kept for a host that reattaches
        for out in list(self.outs.values()):
            out.detach()  # the processes run on; their output waits for a host
        answer: AgentHello = {
            "version": protocol.PROTOCOL_VERSION,
            "nonce": nonce,
            "agent_version": AGENT_VERSION,
        }
        self.send(protocol.encode_json(protocol.FrameType.HELLO, 0, answer))

    def on_request(self, frame: protocol.Frame) -> None:
        reply = Reply(self, frame.stream)
        try:
            message = frame.json()
            op = message.get("op")
            args = message.get("args", {})
            if not isinstance(op, str):
                raise invalid("op must be a string")
            if not isinstance(args, dict):
                raise invalid("args must be an object")
            handler = self.handlers.get(op)
            if handler is None:
                raise invalid(f"unknown op {op!r}")
            handler(self, reply, args)
        except protocol.ProtocolError as exc:
            reply.error("invalid", str(exc))
        except AgentError as exc:
            reply.error(exc.kind, exc.message)
        except Exception as exc:
            log(describe_exception(exc))
            reply.error("internal", f"{type(exc).__name__}: {exc}")

    # ---------------------------------------------------------------- lookups

    def container(self, args: Mapping[str, object]) -> Container:
        cid = arg_id(args, "container_id")
        container = self.containers.get(cid)
        if container is None:
            raise AgentError("not_found", f"no container {cid!r}")
        return container

    def process(self, args: Mapping[str, object]) -> Process:
        exec_id = arg_opt_id(args, "exec_id")
        if args.get("container_id") is None:  # exec_guest processes
            if exec_id is None:
                raise invalid("exec_id is required when container_id is null")
            proc = self.guest.execs.get(exec_id)
            if proc is None:
                raise AgentError("not_found", f"no guest exec {exec_id!r}")
            return proc
        container = self.container(args)
        proc = container.init if exec_id is None else container.execs.get(exec_id)
        if proc is None:
            if exec_id is None:
                raise AgentError("state", f"container {container.id!r} is still being created")
            raise AgentError("not_found", f"no exec {exec_id!r} in container {container.id!r}")
        return proc

    def claim_streams(self, streams: tuple[int | None, int | None, int | None]) -> None:
        for stream_id in streams:
            if stream_id is not None and stream_id in self.busy_streams:
                raise AgentError("exists", f"stream {stream_id} is already in use")
        self.busy_streams.update(s for s in streams if s is not None)

    def release_streams(self, streams: tuple[int | None, int | None, int | None]) -> None:
        for stream_id in streams:
            if stream_id is not None:
                self.busy_streams.discard(stream_id)

    def console_path(self, bundle_dir: str) -> str:
        self.console_seq += 1
        path = os.path.join(bundle_dir, f"console-{self.console_seq}.sock")
        if len(path.encode()) >= 100:  # sun_path limit
            path = f"/tmp/vc-agent-{os.getpid()}-{self.console_seq}.sock"
        return path


if TYPE_CHECKING:
    OpHandler = Callable[[Agent, Reply, Mapping[str, object]], None]
    """An operation: it checks its arguments and answers through the reply,
    at once or later from the loop."""
