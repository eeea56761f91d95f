"""The per-pod daemon: owns the pod's VM, agent connection and I/O relays.

Started by :func:`virtcontainers.daemon.launcher.spawn` (the command line and the
readiness report are that module's), in a new session so it outlives its
caller; or hosted as a task on the event loop of a longer-lived process
(:mod:`virtcontainers.daemon.hosted`: containerd's shim).  It boots the pod,
reports ready or the error, then serves the requests of
:mod:`virtcontainers.daemon.calls` on the pod's socket until the pod stops,
and exits (or, hosted, ends its task).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from virtcontainers.agent import AgentKind, new_agent
from virtcontainers.agent.base import Agent
from virtcontainers.daemon import calls, launcher, rpc
from virtcontainers.errors import (
    ConfigError,
    DaemonError,
    ErrorDict,
    NotFoundError,
    VcError,
    error_to_dict,
)
from virtcontainers.factory import pool
from virtcontainers.host import proc as hostproc
from virtcontainers.host.cleanup import release_run_files, remove_pod_files
from virtcontainers.host.fdwait import wait_readable
from virtcontainers.hypervisor import new_hypervisor
from virtcontainers.hypervisor.base import Hypervisor, HypervisorKind
from virtcontainers.pod.pod import Pod
from virtcontainers.records import PodRecord, ProcessRef
from virtcontainers.states import PodState
from virtcontainers.status import InterfaceStatus
from virtcontainers.stdio import NAMES as STDIO_NAMES
from virtcontainers.stdio import Stdio
from virtcontainers.store import Store

log = logging.getLogger("virtcontainers.daemon")
OWNER_REMOVE_TIMEOUT = 30.0
Handler = Callable[[Any, Stdio], Awaitable[Any]]


def _stdio(params: dict[str, object], fds: list[int]) -> Stdio:
    names = params.pop("stdio", None) or []
    if not (
        isinstance(names, list)
        and len(names) == len(fds) == len(set(names))
        and set(names) <= set(STDIO_NAMES)
    ):
        rpc.close_fds(fds)
        raise ConfigError("stdio", f"{names!r} does not name the {len(fds)} fds passed")
    return Stdio(**dict(zip(names, fds, strict=True)))


async def read_request(sock: socket.socket) -> tuple[dict[str, object], list[int]]:
    """Read one RPC request and the fds that came with it (the caller owns them)."""
    reader = rpc.FrameReader("request")
    fds: list[int] = []
    try:
        while True:
            await wait_readable(sock.fileno())
            try:
                data, new_fds, _flags, _addr = socket.recv_fds(sock, 65536, rpc.MAX_FDS)
            except BlockingIOError:
                continue
            fds.extend(new_fds)
            if not data:
                raise DaemonError("client closed the connection mid-request")
            message = reader.feed(data)
            if message is not None:
                return message, fds
    except BaseException:
        rpc.close_fds(fds)
        raise


async def send_reply(sock: socket.socket, reply: rpc.Answered | rpc.Failed) -> None:
    await asyncio.get_running_loop().sock_sendall(sock, rpc.encode(reply))


class Daemon:
    """Serves one pod's RPC: each request of :mod:`virtcontainers.daemon.calls` to its handler."""

    def __init__(self, store: Store, pod: Pod) -> None:
        self.store = store
        self.pod = pod
        self.handlers: dict[type[calls.Request[Any]], Handler] = {
            calls.StopPod: self._stop,
            calls.PausePod: lambda _r, _s: pod.pause(),
            calls.ResumePod: lambda _r, _s: pod.resume(),
            calls.CreateContainer: self._create_container,
            calls.StartContainer: lambda r, _s: pod.start_container(r.container_id),
            calls.StopContainer: lambda r, _s: pod.stop_container(r.container_id, r.timeout),
            calls.DeleteContainer: lambda r, _s: pod.delete_container(r.container_id),
            calls.PauseContainer: lambda r, _s: pod.pause_container(r.container_id),
            calls.ResumeContainer: lambda r, _s: pod.resume_container(r.container_id),
            calls.ExecProcess: self._exec,
            calls.EnterPod: self._enter_pod,
            calls.SignalProcess: lambda r, _s: pod.signal_process(
                r.container_id, r.exec_id, r.signal, r.all
            ),
            calls.WaitProcess: lambda r, _s: pod.wait_process(r.container_id, r.exec_id),
            calls.ResizeTerminal: lambda r, _s: pod.resize_terminal(
                r.container_id, r.exec_id, r.rows, r.cols
            ),
            calls.AttachProcess: self._attach,
            calls.ListProcesses: lambda r, _s: pod.list_processes(r.container_id),
            calls.UpdateContainer: lambda r, _s: pod.update_container(r.container_id, r.limits),
            calls.GetContainerStats: lambda r, _s: pod.container_stats(r.container_id),
            calls.WatchEvents: lambda r, _s: pod.events.after(r.after, r.timeout),
            calls.AddInterface: lambda r, _s: pod.add_interface(r.name),
            calls.RemoveInterface: lambda r, _s: pod.remove_interface(r.name),
            calls.ListInterfaces: self._list_interfaces,
        }

    async def serve(self, listener: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        clients: set[asyncio.Task[None]] = set()
        accept = asyncio.ensure_future(loop.sock_accept(listener))
        stopped = asyncio.ensure_future(self.pod.stopped.wait())
        try:
            while True:
                done, _ = await asyncio.wait({accept, stopped}, return_when=asyncio.FIRST_COMPLETED)
                if stopped in done:
                    break
                conn, _addr = accept.result()
                task = asyncio.ensure_future(self._client(conn))
                clients.add(task)
                task.add_done_callback(clients.discard)
                accept = asyncio.ensure_future(loop.sock_accept(listener))
            # Let replies already decided (waits answered by the stop) reach their callers.
            if clients:
                await asyncio.wait(clients, timeout=2.0)
        finally:
            accept.cancel()
            for task in clients:
                task.cancel()

    async def _client(self, conn: socket.socket) -> None:
        conn.setblocking(False)
        with conn:
            try:
                message, fds = await read_request(conn)
            except (VcError, OSError) as exc:
                log.warning("bad RPC request: %s", exc)
                return
            method = message.get("method")
            reply: rpc.Answered | rpc.Failed
            try:
                result = await self._answer(method, message.get("params"), fds)
                reply = {"ok": True, "result": result}
            except VcError as exc:
                reply = {"ok": False, "error": error_to_dict(exc)}
            except Exception as exc:
                log.exception("RPC %s failed", method)
                error = DaemonError(
                    f"pod {self.pod.id!r}: {method} failed unexpectedly: "
                    f"{type(exc).__name__}: {exc}; see {self.pod.paths.log}"
                )
                reply = {"ok": False, "error": error_to_dict(error)}
            with contextlib.suppress(OSError):
                await send_reply(conn, reply)

    async def _answer(self, method: object, params: object, fds: list[int]) -> Any:
        """Parse, dispatch, encode.  The request's fds are closed unless a handler
        that takes stdio succeeded (the process owns them from then on)."""
        request_type = calls.REQUESTS.get(method) if isinstance(method, str) else None
        if request_type is None or not isinstance(params, dict):
            rpc.close_fds(fds)
            raise ConfigError("method", f"unknown RPC method {method!r}")
        stdio = _stdio(params, fds)
        succeeded = False
        try:
            request = request_type.from_params(params)
            if stdio.given and not request.TAKES_STDIO:
                raise ConfigError("stdio", f"{method} takes no stdio")
            result = await self.handlers[request_type](request, stdio)
            succeeded = True
            return request.encode_result(result)
        finally:
            if not (succeeded and request_type.TAKES_STDIO):
                stdio.close()

    # --- handlers that need more than one call ------------------------------------------

    async def _stop(self, request: calls.OnPod, stdio: Stdio) -> None:
        await self.pod.stop()

    async def _create_container(self, request: calls.CreateContainer, stdio: Stdio) -> Any:
        container = await self.pod.create_container(request.config, stdio if stdio.given else None)
        return container.to_record()

    async def _exec(self, request: calls.ExecProcess, stdio: Stdio) -> calls.ProcessStarted:
        process = await self.pod.exec_process(
            request.container_id, request.cmd, stdio, request.exec_id
        )
        return calls.ProcessStarted(str(process.exec_id), process.pid or 0)

    async def _enter_pod(self, request: calls.EnterPod, stdio: Stdio) -> calls.ProcessStarted:
        process = await self.pod.exec_guest(request.cmd, stdio)
        return calls.ProcessStarted(str(process.exec_id), process.pid or 0)

    async def _attach(self, request: calls.AttachProcess, stdio: Stdio) -> None:
        self.pod.attach(request.container_id, request.exec_id, stdio)

    async def _list_interfaces(
        self, request: calls.ListInterfaces, stdio: Stdio
    ) -> list[InterfaceStatus]:
        return self.pod.list_interfaces()


def listen(path: Path) -> socket.socket:
    """A non-blocking unix socket listening at *path*, for its owner only (0600)."""
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old_umask = os.umask(0o177)
    try:
        listener.bind(str(path))
    finally:
        os.umask(old_umask)
    listener.listen(64)
    listener.setblocking(False)
    return listener


@dataclass(frozen=True)
class RunningClone:
    """A pool's clone, running with its agent connected, that a pod takes over."""

    key: str
    hypervisor: Hypervisor
    agent: Agent


async def run(
    store: Store,
    args: launcher.DaemonArgs,
    stop: asyncio.Event | None = None,
    clone: RunningClone | None = None,
) -> int:
    """Boot the pod and serve it; a failure is reported only after cleaning up,
    so the caller may delete the pod's directory as soon as it hears of it.

    ``stop``: set by the process that hosts this daemon when the pod must stop
    (its own shutdown); SIGTERM and SIGINT are then that process's to handle.
    Without it, they stop the pod.  ``clone``: the pod's VM, already running.
    """
    paths = store.paths(args.pod_id)
    listener: socket.socket | None = None
    pod: Pod | None = None
    failure: ErrorDict | None = None
    booting = False
    try:
        record = _claim(store, args, hosted=stop is not None)
        if clone is not None:
            pod = Pod(store, record, clone.hypervisor, clone.agent)
        else:
            pod = Pod(store, record, _hypervisor_of(record), _agent_of(record))
        listener = listen(paths.socket)
        booting = True  # from here on, a failed boot tears down what it made
        if args.reattach:
            await pod.reattach()
        else:
            await pod.start(clone.key if clone is not None else None)
    except BaseException as exc:
        failure = error_to_dict(exc)
        if clone is not None and not booting:
            await _discard(clone, store, args.pod_id)
        if args.reattach:
            _record_failed_reattach(store, args.pod_id, str(exc))
        else:
            _record_failed_start(store, args.pod_id, str(exc))
    finally:
        # The boot is over and its outcome recorded: calls may hold the pod again.
        if args.lock_fd is not None:
            os.close(args.lock_fd)
    try:
        if failure is None and pod is not None and listener is not None:
            # A reattached pod runs on whether or not its caller heard of it.
            heard = launcher.report_ready(args.ready_fd, {"ok": True}) or args.reattach
            if not args.reattach and stop is None:  # a shim's pods take no waiting clone
                _refill_pool(store, pod)
            await _serve_until_stopped(store, pod, listener, heard, pod.record.owner, stop)
    finally:
        if listener is not None:
            listener.close()
        paths.socket.unlink(missing_ok=True)
        if pod is not None:
            pod.executor.shutdown(wait=False, cancel_futures=True)
        _record_exit(store, args.pod_id)
        if failure is not None:
            launcher.report_ready(args.ready_fd, {"ok": False, "error": failure})
    return 0 if failure is None else 1


def _refill_pool(store: Store, pod: Pod) -> None:
    """A pod that started from a template finds the pool of that template
    short (a waiting clone's VM died, or the pool was just sized): start the
    missing ones.  One file read when there is no pool."""
    key = pod.record.template
    if key is None:
        return
    try:
        pool.fill(store.root, pool.factory_root(store.root), key)
    except (OSError, VcError) as exc:
        log.warning("cannot refill the pool of template %s: %s", key, exc)


async def _discard(clone: RunningClone, store: Store, pod_id: str) -> None:
    """A pool's clone that its pod could not take: its VM and mounts go."""
    with contextlib.suppress(VcError):
        await clone.hypervisor.stop()
    release_run_files(store.paths(pod_id))


def _claim(store: Store, args: launcher.DaemonArgs, hosted: bool) -> PodRecord:
    """The record of the pod this daemon boots (or reattaches to, keeping its
    owner), now naming this process."""
    pod_id = args.pod_id
    record = store.load(pod_id)
    if args.reattach:
        record.state.require(pod_id, "reattach to", PodState.RUNNING, PodState.PAUSED)
    else:
        record.state.require(pod_id, "boot", PodState.STARTING)
        record.error = None
        record.owner = args.owner
    record.daemon = hostproc.current()
    record.daemon_hosted = hosted
    store.save(record)
    return record


def _hypervisor_of(record: PodRecord) -> Hypervisor:
    return new_hypervisor(HypervisorKind(record.config.hypervisor))


def _agent_of(record: PodRecord) -> Agent:
    return new_agent(AgentKind(record.config.agent), record.id)


def _record_failed_start(store: Store, pod_id: str, error: str) -> None:
    with contextlib.suppress(VcError):
        record = store.load(pod_id)
        if record.state is PodState.STARTING:
            record.mark_stopped(f"the pod failed to start: {error}")
            store.save(record)


def _record_failed_reattach(store: Store, pod_id: str, error: str) -> None:
    """The VM could not be taken over: it is killed, and the pod stopped as a
    pod whose daemon died always was, saying why."""
    with contextlib.suppress(VcError):
        record = store.load(pod_id)
        if record.vm is not None:
            hostproc.kill(record.vm)
        release_run_files(store.paths(pod_id))
        record.mark_stopped(f"the pod daemon died, and a new one could not reattach: {error}")
        store.save(record)


def _record_exit(store: Store, pod_id: str) -> None:
    """The daemon's last word; nothing to say if the pod was deleted already."""
    try:
        record = store.load(pod_id)
    except NotFoundError:
        return
    record.daemon = None
    store.save(record)


async def _serve_until_stopped(
    store: Store,
    pod: Pod,
    listener: socket.socket,
    heard: bool,
    owner: ProcessRef | None,
    stop: asyncio.Event | None,
) -> None:
    """Serve RPC until the pod stops: by request, VM death, SIGTERM/SIGINT (or the
    host's ``stop``), the starter gone before it heard the pod run, or the owner's exit."""
    stop_requested = _signalled() if stop is None else stop
    starter_gone = asyncio.Event()
    owner_gone = _watch_owner(owner)
    if not heard and owner is None:
        pod.record.error = "the caller that started the pod went away before it was running"
        starter_gone.set()
    serving = asyncio.ensure_future(Daemon(store, pod).serve(listener))
    waits = {asyncio.ensure_future(event.wait()) for event in (stop_requested, starter_gone)}
    waits.add(asyncio.ensure_future(owner_gone.wait()))
    await asyncio.wait({serving, *waits}, return_when=asyncio.FIRST_COMPLETED)
    if not serving.done():
        log.info("stopping the pod: %s", "its owner exited" if owner_gone.is_set() else "asked to")
        with contextlib.suppress(VcError):
            await pod.stop()
        await serving
    for wait in waits:
        wait.cancel()
    if owner_gone.is_set():
        _remove_for_owner(store, pod.id)


def _signalled() -> asyncio.Event:
    """An event set by SIGTERM or SIGINT, for a daemon that is a process of its own."""
    loop = asyncio.get_running_loop()
    signalled = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, signalled.set)
    return signalled


def _watch_owner(owner: ProcessRef | None) -> asyncio.Event:
    """An event set when ``owner`` exits (never set without an owner)."""
    gone = asyncio.Event()
    if owner is None:
        return gone
    pidfd = hostproc.pidfd(owner)
    if pidfd is None:
        gone.set()
        return gone
    loop = asyncio.get_running_loop()

    def exited() -> None:
        loop.remove_reader(pidfd)
        os.close(pidfd)
        gone.set()

    loop.add_reader(pidfd, exited)
    return gone


def _remove_for_owner(store: Store, pod_id: str) -> None:
    """The owner of the pod exited: the pod goes with it (``virtc run --rm``)."""
    try:
        with store.locked(pod_id, "remove", OWNER_REMOVE_TIMEOUT) as lock:
            remove_pod_files(lock.paths)
        log.info("pod removed: its owner exited")
    except VcError as exc:
        log.error("pod left stopped, not removed after its owner exited: %s", exc)


def main(argv: list[str] | None = None) -> int:
    args = launcher.parse_daemon_argv(argv)
    if args.detach:
        # Double fork: the caller reaps the first child at once, so a
        # long-lived caller never collects zombie daemons.
        if os.fork() != 0:
            os._exit(0)
        os.setsid()
    logging.basicConfig(
        level=logging.DEBUG if args.debug else logging.INFO,
        format="%(asctime)s %(process)d %(name)s %(levelname)s %(message)s",
        stream=sys.stderr,
    )
    if args.lock_fd is not None:
        os.set_inheritable(args.lock_fd, False)  # QEMU and virtiofsd must not hold the pod
    return asyncio.run(run(Store(args.root), args))


if __name__ == "__main__":
    sys.exit(main())
