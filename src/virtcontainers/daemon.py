"""The per-pod daemon: owns the pod's VM, agent connection and I/O relays.

Started by :func:`virtcontainers.api.start_pod` as
``python -m virtcontainers.daemon --root R --pod ID --ready-fd N``, in a new
session so it outlives its caller.  It boots the pod, writes one JSON line
to the ready fd (``{"ok": true}`` or the error), then serves RPC on the pod's
socket until the pod stops, and exits.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import signal
import socket
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from virtcontainers import hostproc, rpc
from virtcontainers.agent.base import Agent
from virtcontainers.config import Cmd, ContainerConfig
from virtcontainers.errors import ConfigError, DaemonError, VcError
from virtcontainers.hypervisor import HypervisorKind, new_hypervisor
from virtcontainers.pod import Pod
from virtcontainers.process import Stdio, wait_readable
from virtcontainers.store import Store

log = logging.getLogger("virtcontainers.daemon")
Handler = Callable[[dict[str, Any], Stdio], Awaitable[Any]]
STDIO_NAMES = ("stdin", "stdout", "stderr")
TAKES_STDIO = frozenset({"create_container", "exec", "enter_pod", "attach"})


def _stdio(params: dict[str, Any], fds: list[int]) -> Stdio:
    names = params.get("stdio") or []
    valid = isinstance(names, list) and len(names) == len(fds) == len(set(names))
    if not valid or not set(names) <= set(STDIO_NAMES):
        rpc.close_fds(fds)
        raise ConfigError("stdio", f"{names!r} does not name the {len(fds)} fds passed")
    return Stdio(**dict(zip(names, fds, strict=True)))


def _str(params: dict[str, Any], name: str, optional: bool = False) -> Any:
    value = params.get(name)
    if value is None and optional:
        return None
    if not isinstance(value, str):
        raise ConfigError(name, f"expected a string, got {value!r}")
    return value


def _int(params: dict[str, Any], name: str, default: int | None = None) -> int:
    value = params.get(name, default)
    if not isinstance(value, int) or isinstance(value, bool):
        raise ConfigError(name, f"expected an integer, got {value!r}")
    return value


def _make_agent(kind: HypervisorKind, pod_id: str) -> Agent:
    if kind is HypervisorKind.MOCK:
        from virtcontainers.agent.mock import MockAgent

        return MockAgent()
    from virtcontainers.agent.client import AgentClient

    return AgentClient(pod_id)


def _image_paths(pod_config: dict[str, Any]) -> tuple[Path, Path, Path]:
    image = pod_config.get("image")
    if image:
        return Path(image["kernel"]), Path(image["initrd"]), Path(image["rootfs"])
    from virtcontainers.image import find_image

    found = find_image()
    return found.kernel, found.initrd, found.rootfs


async def read_request(sock: socket.socket) -> tuple[dict[str, Any], list[int]]:
    """Read one RPC request and the fds that came with it (the caller owns them)."""
    buffer = bytearray()
    fds: list[int] = []
    try:
        while True:
            if len(buffer) >= rpc.LENGTH.size:
                (length,) = rpc.LENGTH.unpack_from(buffer)
                if length > rpc.MAX_MESSAGE:
                    raise DaemonError(f"RPC request of {length} bytes is too large")
                if len(buffer) >= rpc.LENGTH.size + length:
                    return rpc.decode(
                        bytes(buffer[rpc.LENGTH.size : rpc.LENGTH.size + length])
                    ), fds
            await wait_readable(sock.fileno())
            try:
                data, new_fds, _flags, _addr = socket.recv_fds(sock, 65536, rpc.MAX_FDS)
            except BlockingIOError:
                continue
            fds.extend(new_fds)
            if not data:
                raise DaemonError("client closed the connection mid-request")
            buffer += data
    except BaseException:
        rpc.close_fds(fds)
        raise


async def send_reply(sock: socket.socket, reply: dict[str, Any]) -> None:
    await asyncio.get_running_loop().sock_sendall(sock, rpc.encode(reply))


class Daemon:
    def __init__(self, store: Store, pod: Pod) -> None:
        self.store = store
        self.pod = pod
        self.handlers: dict[str, Handler] = {
            "status": self._status,
            "stop": self._stop,
            "pause": self._pause,
            "resume": self._resume,
            "create_container": self._create_container,
            "start_container": self._start_container,
            "stop_container": self._stop_container,
            "delete_container": self._delete_container,
            "pause_container": self._pause_container,
            "resume_container": self._resume_container,
            "exec": self._exec,
            "enter_pod": self._enter_pod,
            "kill": self._kill,
            "wait": self._wait,
            "resize": self._resize,
            "attach": self._attach,
            "ps": self._ps,
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
                request, fds = await read_request(conn)
            except (VcError, OSError, ValueError) as exc:
                log.warning("bad RPC request: %s", exc)
                return
            method = request.get("method")
            params = request.get("params")
            try:
                handler = self.handlers.get(method) if isinstance(method, str) else None
                if handler is None or not isinstance(params, dict):
                    rpc.close_fds(fds)
                    raise VcError(f"unknown RPC method {method!r}")
                result = await self._dispatch(handler, method, params, _stdio(params, fds))
                reply: dict[str, Any] = {"ok": True, "result": result}
            except VcError as exc:
                reply = {"ok": False, "error": rpc.error_to_dict(exc)}
            except Exception as exc:
                log.exception("RPC %s failed", method)
                reply = {"ok": False, "error": {"type": "DaemonError", "message": repr(exc)}}
            with contextlib.suppress(OSError):
                await send_reply(conn, reply)

    async def _dispatch(
        self, handler: Handler, method: object, params: dict[str, Any], stdio: Stdio
    ) -> Any:
        """Run a handler; the fds that came with the request are closed unless a
        handler that takes stdio succeeded (its process owns them from then on)."""
        succeeded = False
        try:
            result = await handler(params, stdio)
            succeeded = True
            return result
        finally:
            if not (succeeded and method in TAKES_STDIO):
                stdio.close()

    # --- handlers -----------------------------------------------------------------------

    async def _status(self, params: dict[str, Any], stdio: Stdio) -> Any:
        return self.pod.status()

    async def _stop(self, params: dict[str, Any], stdio: Stdio) -> Any:
        await self.pod.stop()
        return self.pod.status()

    async def _pause(self, params: dict[str, Any], stdio: Stdio) -> Any:
        await self.pod.pause()

    async def _resume(self, params: dict[str, Any], stdio: Stdio) -> Any:
        await self.pod.resume()

    async def _create_container(self, params: dict[str, Any], stdio: Stdio) -> Any:
        config = ContainerConfig.from_dict(params.get("config") or {})
        given = stdio.stdin is not None or stdio.stdout is not None or stdio.stderr is not None
        container = await self.pod.create_container(config, stdio if given else None)
        return container.to_record()

    async def _start_container(self, params: dict[str, Any], stdio: Stdio) -> Any:
        await self.pod.start_container(_str(params, "container_id"))

    async def _stop_container(self, params: dict[str, Any], stdio: Stdio) -> Any:
        timeout = _int(params, "timeout", 10)
        await self.pod.stop_container(_str(params, "container_id"), float(timeout))

    async def _delete_container(self, params: dict[str, Any], stdio: Stdio) -> Any:
        await self.pod.delete_container(_str(params, "container_id"))

    async def _pause_container(self, params: dict[str, Any], stdio: Stdio) -> Any:
        await self.pod.pause_container(_str(params, "container_id"))

    async def _resume_container(self, params: dict[str, Any], stdio: Stdio) -> Any:
        await self.pod.resume_container(_str(params, "container_id"))

    async def _exec(self, params: dict[str, Any], stdio: Stdio) -> Any:
        cmd = Cmd.from_dict(params.get("cmd") or {})
        container_id = _str(params, "container_id")
        exec_id = _str(params, "exec_id", optional=True)
        process = await self.pod.exec_process(container_id, cmd, stdio, exec_id)
        return {"exec_id": process.exec_id, "pid": process.pid}

    async def _enter_pod(self, params: dict[str, Any], stdio: Stdio) -> Any:
        cmd = Cmd.from_dict(params.get("cmd") or {})
        process = await self.pod.exec_guest(cmd, stdio)
        return {"exec_id": process.exec_id, "pid": process.pid}

    async def _kill(self, params: dict[str, Any], stdio: Stdio) -> Any:
        signum = _int(params, "signal", signal.SIGTERM)
        if not 0 < signum < 65:
            raise ConfigError("signal", f"{signum} is not a signal number")
        await self.pod.signal_process(
            _str(params, "container_id", optional=True),
            _str(params, "exec_id", optional=True),
            signum,
            bool(params.get("all")),
        )

    async def _wait(self, params: dict[str, Any], stdio: Stdio) -> Any:
        status = await self.pod.wait_process(
            _str(params, "container_id", optional=True), _str(params, "exec_id", optional=True)
        )
        return {"exit_code": status.exit_code, "signal": status.signal}

    async def _resize(self, params: dict[str, Any], stdio: Stdio) -> Any:
        await self.pod.resize_terminal(
            _str(params, "container_id", optional=True),
            _str(params, "exec_id", optional=True),
            _int(params, "rows"),
            _int(params, "cols"),
        )

    async def _attach(self, params: dict[str, Any], stdio: Stdio) -> Any:
        container_id = _str(params, "container_id", optional=True)
        exec_id = _str(params, "exec_id", optional=True)
        self.pod.attach(container_id, exec_id, stdio)

    async def _ps(self, params: dict[str, Any], stdio: Stdio) -> Any:
        return await self.pod.list_processes(_str(params, "container_id"))


def _listen(path: Path) -> socket.socket:
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


def _report(ready_fd: int | None, message: dict[str, Any]) -> None:
    if ready_fd is None:
        return
    with contextlib.suppress(OSError):
        os.write(ready_fd, (json.dumps(message) + "\n").encode())
        os.close(ready_fd)


async def run(store: Store, pod_id: str, ready_fd: int | None) -> int:
    """Boot the pod and serve it; a failure is reported only after cleaning up,
    so the caller may delete the pod's directory as soon as it hears of it."""
    record = store.load(pod_id)
    kind = HypervisorKind(record["config"]["hypervisor"])
    record["daemon"] = hostproc.record_of(os.getpid())
    record["error"] = None
    store.save(pod_id, record)
    paths = store.paths(pod_id)
    listener: socket.socket | None = None
    pod: Pod | None = None
    failure: dict[str, Any] | None = None
    try:
        image = _image_paths(record["config"])
        pod = Pod(store, pod_id, new_hypervisor(kind), _make_agent(kind, pod_id), image)
        listener = _listen(paths.socket)
        await pod.start()
    except BaseException as exc:
        failure = rpc.error_to_dict(exc)
    try:
        if failure is None and pod is not None and listener is not None:
            _report(ready_fd, {"ok": True})
            await _serve_until_stopped(store, pod, listener)
    finally:
        if listener is not None:
            listener.close()
        with contextlib.suppress(FileNotFoundError):
            paths.socket.unlink()
        if pod is not None:
            pod.executor.shutdown(wait=False, cancel_futures=True)
        record = store.load(pod_id)
        record["daemon"] = None
        store.save(pod_id, record)
        if failure is not None:
            _report(ready_fd, {"ok": False, "error": failure})
    return 0 if failure is None else 1


async def _serve_until_stopped(store: Store, pod: Pod, listener: socket.socket) -> None:
    """Serve RPC until the pod stops (by request, VM death, or SIGTERM/SIGINT)."""
    loop = asyncio.get_running_loop()
    stop_requested = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop_requested.set)
    serving = asyncio.ensure_future(Daemon(store, pod).serve(listener))
    stop_wait = asyncio.ensure_future(stop_requested.wait())
    await asyncio.wait({serving, stop_wait}, return_when=asyncio.FIRST_COMPLETED)
    if not serving.done():
        log.info("signal received: stopping the pod")
        with contextlib.suppress(VcError):
            await pod.stop()
        await serving
    stop_wait.cancel()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="virtcontainers.daemon")
    parser.add_argument("--root", type=Path, required=True)
    parser.add_argument("--pod", required=True)
    parser.add_argument("--ready-fd", type=int)
    parser.add_argument("--debug", action="store_true")
    parser.add_argument("--detach", action="store_true", help="fork into a new session first")
    args = parser.parse_args(argv)
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
    return asyncio.run(run(Store(args.root), args.pod, args.ready_fd))


if __name__ == "__main__":
    sys.exit(main())
