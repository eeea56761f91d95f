"""containerd-shim-vc-v2: the command containerd runs for ``io.containerd.vc.v2`` tasks.

containerd calls it with Go-style flags (``-namespace``, ``-address``,
``-publish-binary``, ``-id``, ``-bundle``, ``-debug``), in the bundle's
directory, and TTRPC_ADDRESS in its environment:

- ``start`` answers the address of the shim that will serve the task, on
  stdout: a new shim, detached, for a sandbox or a standalone container; the
  sandbox's own shim for a container that names its sandbox
  (``io.kubernetes.cri.sandbox-id``).  The address also goes in the bundle's
  ``address`` file, where containerd finds it again after a restart.
- ``delete`` cleans up after a shim that died: the pod (or the container in
  its pod) through the api; it prints a DeleteResponse.
- with no action, the shim serves the task service over ttrpc on the
  listening socket ``start`` handed it (``-listen-fd``), until containerd's
  Shutdown once it has no task left.  It is its pod's daemon too: the pod
  boots and is served on the same event loop.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import contextlib
import hashlib
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from virtcontainers import api, oci
from virtcontainers.errors import NotFoundError, StateError, VcError
from virtcontainers.shim.events import Publisher
from virtcontainers.shim.protos import TASK_SERVICE, task
from virtcontainers.shim.rootfs import unmount_rootfs
from virtcontainers.shim.service import TaskService, timestamp
from virtcontainers.shim.stats import host_is_cgroup_v2
from virtcontainers.shim.ttrpc import Server

SOCKET_DIR = Path("/run/vc-shim")
"""Where shims listen: short paths (a socket's must fit in 107 bytes), one per pod."""
ADDRESS_FILE = "address"
LOG_FIFO = "log"
"""The fifo in the bundle that containerd copies into its own log."""
KILLED_EXIT = 128 + signal.SIGKILL
THREADS = 32
"""Blocking api calls at once: a pod's Waits have threads of their own besides."""
log = logging.getLogger("virtcontainers.shim")


@dataclass(frozen=True)
class Flags:
    namespace: str
    address: str
    id: str
    bundle: Path
    debug: bool
    action: str
    listen_fd: int | None


def parse_flags(argv: list[str]) -> Flags:
    """containerd's flags, as Go's flag package spells them (one dash)."""
    parser = argparse.ArgumentParser(prog="containerd-shim-vc-v2", allow_abbrev=False)
    parser.add_argument("-namespace", default="")
    parser.add_argument("-address", default="")
    parser.add_argument("-publish-binary", default="containerd")
    parser.add_argument("-id", default="")
    parser.add_argument("-bundle", default="")
    parser.add_argument("-socket", default="", help="accepted; the socket is the shim's own")
    parser.add_argument("-debug", action="store_true")
    parser.add_argument("-v", action="store_true", help="print the version and exit")
    parser.add_argument("-listen-fd", type=int, help=argparse.SUPPRESS)
    parser.add_argument("action", nargs="?", default="", choices=["", "start", "delete"])
    args = parser.parse_args(argv)
    if args.v:
        print("containerd-shim-vc-v2 (virtcontainers) version 0.1.0")
        sys.exit(0)
    if not args.namespace:
        parser.error("-namespace is required (the shim's containerd namespace)")
    if not args.id:
        parser.error("-id is required (the task's id)")
    return Flags(
        namespace=args.namespace,
        address=args.address,
        id=args.id,
        bundle=Path(args.bundle or os.getcwd()).absolute(),
        debug=args.debug,
        action=args.action,
        listen_fd=args.listen_fd,
    )


def socket_path(containerd_address: str, namespace: str, pod_id: str) -> Path:
    """The socket of the shim that serves a pod, for one containerd and namespace."""
    key = f"{containerd_address}\0{namespace}\0{pod_id}".encode()
    return SOCKET_DIR / f"{hashlib.sha256(key).hexdigest()[:32]}.sock"


def _listening(path: Path) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        try:
            probe.connect(str(path))
        except OSError:
            return False
    return True


def _write_address(bundle: Path, address: str) -> None:
    tmp = bundle / f".{ADDRESS_FILE}"
    tmp.write_text(address)
    os.replace(tmp, bundle / ADDRESS_FILE)


# --- start ---------------------------------------------------------------------------------


def start(flags: Flags) -> str:
    """The address of the shim for this task, spawning one if the task owns its pod."""
    role, sandbox_id = oci.read_role(flags.bundle)
    owns_pod = role is not oci.PodRole.CONTAINER
    pod_id = flags.id if sandbox_id is None else sandbox_id
    path = socket_path(flags.address, flags.namespace, pod_id)
    if not owns_pod:
        if not _listening(path):
            raise NotFoundError(
                "shim of sandbox",
                pod_id,
                f"container {flags.id} joins that pod, but nothing serves {path}: "
                "was the sandbox created with this runtime?",
            )
    elif not _listening(path):
        _spawn_server(flags, path)
    address = f"unix://{path}"
    _write_address(flags.bundle, address)
    return address


def _spawn_server(flags: Flags, path: Path) -> None:
    """The shim's server, detached from containerd's call: its own session, no
    stdio of containerd's, serving the socket made here (so it is listening
    before containerd connects)."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    with contextlib.suppress(FileNotFoundError):
        path.unlink()  # a dead shim's
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        listener.bind(str(path))
        listener.listen(64)
        argv = [sys.executable, "-m", "virtcontainers.shim", "-namespace", flags.namespace]
        argv += ["-address", flags.address, "-id", flags.id, "-bundle", str(flags.bundle)]
        argv += ["-listen-fd", str(listener.fileno())] + (["-debug"] if flags.debug else [])
        subprocess.Popen(
            argv,
            cwd=flags.bundle,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            pass_fds=[listener.fileno()],
            start_new_session=True,
        )
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    finally:
        listener.close()


# --- delete --------------------------------------------------------------------------------


def delete(flags: Flags) -> bytes:
    """Clean up what the task's dead shim left; the DeleteResponse containerd reads."""
    try:
        role, sandbox_id = oci.read_role(flags.bundle)
    except VcError as exc:
        log.warning("%s: cannot read the bundle to clean up after it: %s", flags.id, exc)
    else:
        _remove_from_pod(flags.id, role, sandbox_id)
        if role is not oci.PodRole.CONTAINER:
            _remove_dead_socket(socket_path(flags.address, flags.namespace, flags.id))
    unmount_rootfs(flags.bundle)
    response = task.DeleteResponse(exit_status=KILLED_EXIT, exited_at=timestamp(time.time_ns()))
    return response.SerializeToString()


def _remove_dead_socket(path: Path) -> None:
    """The socket a killed shim could not remove (a live shim's stays)."""
    if not _listening(path):
        path.unlink(missing_ok=True)


def _remove_from_pod(container_id: str, role: oci.PodRole, pod_id: str | None) -> None:
    if role is not oci.PodRole.CONTAINER:
        with contextlib.suppress(NotFoundError):
            api.delete_pod(pod_id or container_id, force=True)
        return
    assert pod_id is not None
    with contextlib.suppress(NotFoundError, StateError):
        api.kill_container(pod_id, container_id, signal.SIGKILL, all_processes=True)
        api.wait_container(pod_id, container_id, timeout=30)
    with contextlib.suppress(NotFoundError, StateError):
        api.delete_container(pod_id, container_id)


# --- serve ---------------------------------------------------------------------------------


def _log_to_containerd(bundle: Path, debug: bool) -> None:
    """Log into the bundle's ``log`` fifo, which containerd copies into its own log."""
    level = logging.DEBUG if debug else logging.INFO
    logging.raiseExceptions = False  # containerd gone: its fifo has no reader
    try:
        fd = os.open(bundle / LOG_FIFO, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        logging.basicConfig(level=level, stream=sys.stderr)
        return
    os.set_blocking(fd, True)
    stream = os.fdopen(fd, "w", buffering=1)
    logging.basicConfig(
        level=level, stream=stream, format="shim %(name)s %(levelname)s: %(message)s"
    )


async def serve(flags: Flags) -> None:
    assert flags.listen_fd is not None
    loop = asyncio.get_running_loop()
    loop.set_default_executor(concurrent.futures.ThreadPoolExecutor(THREADS))
    shutdown = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, shutdown.set)
    publisher = Publisher(os.environ.get("TTRPC_ADDRESS", ""), flags.namespace)
    service = TaskService(publisher.publish, shutdown, host_is_cgroup_v2())
    server = Server()
    server.register(TASK_SERVICE, service.methods())
    listener = socket.socket(fileno=flags.listen_fd)
    path = listener.getsockname()
    await server.serve(listener)
    log.info("serving %s on %s", flags.id, path)
    await shutdown.wait()
    # Shutdown's own answer goes out before the connections close.
    await asyncio.sleep(0.1)
    await service.daemons.wait()
    await server.close()
    with contextlib.suppress(OSError):
        os.unlink(path)
    await publisher.close()
    log.info("shim of %s ends", flags.id)


def main() -> None:
    flags = parse_flags(sys.argv[1:])
    try:
        if flags.action == "start":
            sys.stdout.write(start(flags))
        elif flags.action == "delete":
            sys.stdout.buffer.write(delete(flags))
        else:
            _log_to_containerd(flags.bundle, flags.debug)
            asyncio.run(serve(flags))
    except VcError as exc:
        print(f"containerd-shim-vc-v2: {flags.id}: {exc}", file=sys.stderr)
        sys.exit(1)
