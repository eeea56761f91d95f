"""Network namespaces named by a path: checking one, and running code inside one.

The caller (a CNI plugin, netavark, a CRI) hands us a path such as
``/run/netns/NAME`` or ``/proc/PID/ns/net``.  Work inside it happens in a
short-lived thread that ``setns()``s into it: a namespace switch applies to the
calling thread only, so the caller's threads (and the pod daemon's event loop)
never leave their own namespace, and the switched thread dies with its switch.
pyroute2's own ``netns=`` support is not used: it forks a child per socket (bad
in a threaded daemon) and, by default, *creates* a namespace that is missing.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import logging
import os
import socket
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from virtcontainers.errors import ConfigError

CLONE_NEWNET = 0x40000000
NS_GET_NSTYPE = 0xB703  # _IO(0xb7, 0x3): the CLONE_NEW* type of an nsfs file

# Namespaces a pod must never take over: tc redirects there would cut the host off.
_HOST_NAMESPACES = ("/proc/1/ns/net", "/proc/thread-self/ns/net")

T = TypeVar("T")

_libc = ctypes.CDLL(None, use_errno=True)
_libc.setns.argtypes = [ctypes.c_int, ctypes.c_int]
_libc.setns.restype = ctypes.c_int


SO_NETNS_COOKIE = 71
"""Linux 5.14's socket option: the cookie of the socket's network namespace."""


@dataclass(frozen=True)
class NetnsId:
    """Which namespace a path names: the nsfs file's device and inode, and the
    namespace's cookie.

    Recorded with what a pod made, so that a later clean-up never acts on a
    different namespace that has since appeared at the same path (a reused PID
    in ``/proc/PID/ns/net``, a re-created ``/run/netns/NAME``).  Device and
    inode tell apart namespaces that exist together, but the kernel hands a
    freed namespace's inode number to the next one it makes; the cookie is
    never reused while the host runs.  ``cookie`` is None in a record written
    before cookies were kept, or on a kernel without them.
    """

    dev: int
    ino: int
    cookie: int | None = None

    @classmethod
    def of_fd(cls, fd: int) -> NetnsId:
        st = os.fstat(fd)
        return cls(st.st_dev, st.st_ino, run_in_netns(fd, _cookie_here))

    def same_namespace(self, other: NetnsId) -> bool:
        """Whether both name one namespace (by cookie where both have one)."""
        if self.cookie is None or other.cookie is None:
            return (self.dev, self.ino) == (other.dev, other.ino)
        return self == other


def _cookie_here() -> int | None:
    """The cookie of the calling thread's network namespace (None: the kernel has none)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as probe:
        try:
            raw = probe.getsockopt(socket.SOL_SOCKET, SO_NETNS_COOKIE, 8)
        except OSError:
            return None
    return int.from_bytes(raw, sys.byteorder)


def open_netns(path: str) -> int:
    """Open a network namespace file; the caller closes the descriptor.

    Raises ConfigError("netns", ...) if the path does not exist, is not a
    network namespace, or is the host's own network namespace.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise ConfigError(
            "netns", f"{path} does not exist; give the path of the pod's network namespace"
        ) from None
    except OSError as exc:
        raise ConfigError("netns", f"{path} cannot be opened: {exc.strerror}") from exc
    try:
        _require_network_namespace(path, fd)
        _refuse_host_namespace(path, fd)
    except BaseException:
        os.close(fd)
        raise
    return fd


def check_netns(path: str) -> None:
    """Raise ConfigError("netns", ...) unless ``path`` names a pod's network namespace."""
    os.close(open_netns(path))


def netns_id(path: str) -> NetnsId | None:
    """The identity of the namespace at ``path``, or None if there is none now."""
    try:
        fd = open_netns(path)
    except ConfigError:
        return None
    try:
        return NetnsId.of_fd(fd)
    finally:
        os.close(fd)


def run_in_netns(netns_fd: int, work: Callable[[], T]) -> T:
    """Run ``work`` in a fresh thread inside the namespace; return its result.

    Exceptions raised by ``work`` are raised here.  The calling thread never
    changes namespace.  Sockets and devices ``work`` opens belong to the namespace
    for good (a socket's namespace is fixed when it is made), so they may be used
    from any thread afterwards.
    """
    result: list[T] = []
    failure: list[BaseException] = []

    def inside() -> None:
        try:
            _setns(netns_fd)
            result.append(work())
        except BaseException as exc:
            failure.append(exc)

    thread = threading.Thread(target=inside, name=f"netns-fd{netns_fd}", daemon=True)
    thread.start()
    thread.join()
    if failure:
        raise failure[0]
    return result[0]


def run_in_the_same_netns(
    path: str, expected: NetnsId, work: Callable[[], T], log: logging.Logger, nothing: str
) -> T | None:
    """Run ``work`` inside the namespace at ``path`` if it is still ``expected``;
    None when it is gone or is now another namespace (said at debug or warning
    level, after ``nothing``: what is then left undone)."""
    try:
        fd = open_netns(path)
    except ConfigError as exc:
        log.debug("%s: %s", nothing, exc)
        return None
    try:
        if not expected.same_namespace(NetnsId.of_fd(fd)):
            log.warning("%s: %s is now another namespace", nothing, path)
            return None
        return run_in_netns(fd, work)
    finally:
        os.close(fd)


def _setns(fd: int) -> None:
    # Python 3.11 has no os.setns.  Only this thread moves, and it ends after its work.
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        code = ctypes.get_errno()
        raise OSError(code, f"setns: {os.strerror(code)}")


def _require_network_namespace(path: str, fd: int) -> None:
    try:
        nstype = fcntl.ioctl(fd, NS_GET_NSTYPE)
    except OSError as exc:
        if exc.errno not in (errno.ENOTTY, errno.EINVAL):
            raise ConfigError("netns", f"{path}: {exc.strerror}") from exc
        raise ConfigError("netns", f"{path} is not a namespace file") from None
    if nstype != CLONE_NEWNET:
        raise ConfigError(
            "netns", f"{path} is a namespace, but not a network namespace (type {nstype:#x})"
        )


def _refuse_host_namespace(path: str, fd: int) -> None:
    this = NetnsId.of_fd(fd)
    for host in _HOST_NAMESPACES:
        try:
            st = os.stat(host)
        except OSError:
            continue  # e.g. PID 1 not visible here: then it is not ours to protect
        if (st.st_dev, st.st_ino) == (this.dev, this.ino):
            raise ConfigError(
                "netns",
                f"{path} is the host's network namespace ({host}); a pod would take over "
                "its interfaces: give the pod a network namespace of its own",
            )
