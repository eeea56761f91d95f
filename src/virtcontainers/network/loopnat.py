"""Loopback TCP of a pod's network namespace, redirected to listeners of the daemon.

containerd's CRI port-forward enters the pod's network namespace on the host
and dials ``localhost:PORT`` there (IPv4 first, then IPv6).  The VM has taken
the namespace's interfaces over, and its servers listen in the guest, so
nothing would answer.  With this module the daemon listens on a port of its
own on ``127.0.0.1`` (and ``::1`` where the namespace has it) *inside* that
namespace, and one nftables table there redirects every other loopback TCP
connection to it::

    table inet vc_port_forward {
        chain output {
            type nat hook output priority -100; policy accept;
            ip daddr 127.0.0.1 tcp dport != 41234 redirect to :41234
            ip6 daddr ::1 tcp dport != 41235 redirect to :41235
        }
    }

The port that was dialled comes back from the connection with
``SO_ORIGINAL_DST``; :mod:`virtcontainers.pod.portforward` carries it to the
guest.  Only connections made inside this namespace reach the hook:
it is the ``output`` hook of the namespace's own loopback.

The ``nft`` command (Debian's nftables) applies the table in one atomic
transaction, run in a thread that has entered the namespace (the child
inherits it).  pyroute2's nftables support was the other candidate: it has no
redirect expression of its own, so the rule would be spelt as raw netlink
expressions that no one reads; ``nft``'s text is the rule as documented.
"""

from __future__ import annotations

import errno
import logging
import os
import shutil
import socket
import struct
import subprocess
from dataclasses import dataclass, field

from virtcontainers.errors import NetworkError
from virtcontainers.network.netns import NetnsId, open_netns, run_in_netns, run_in_the_same_netns

TABLE = "vc_port_forward"
NFT_TIMEOUT = 10.0
SO_ORIGINAL_DST = 80
"""linux/netfilter_ipv4.h; IP6T_SO_ORIGINAL_DST (linux/netfilter_ipv6/ip6_tables.h) is
the same number at the IPv6 level."""
_SOCKADDR_HEAD = struct.Struct("=H2s")
"""sa_family_t in host order, then the port in network order."""
_SOCKADDR_SIZE = {socket.AF_INET: 16, socket.AF_INET6: 28}
_NFT_PATHS = ("/usr/sbin/nft", "/sbin/nft")
BACKLOG = 128

_log = logging.getLogger(__name__)


@dataclass
class LoopbackListeners:
    """The listening sockets a namespace's loopback TCP is redirected to.

    Each is non-blocking and belongs to the namespace for good (a socket's
    namespace is fixed when it is made); the holder closes them.
    """

    netns: str
    netns_id: NetnsId
    sockets: list[socket.socket] = field(default_factory=list)

    def close(self) -> None:
        for sock in self.sockets:
            sock.close()
        self.sockets.clear()


def ruleset(v4_port: int, v6_port: int | None) -> str:
    """The nft script that (re)makes the table: every loopback TCP connection
    but those to a listener's own port goes to that listener."""
    rules = [f"\t\tip daddr 127.0.0.1 tcp dport != {v4_port} redirect to :{v4_port}\n"]
    if v6_port is not None:
        rules.append(f"\t\tip6 daddr ::1 tcp dport != {v6_port} redirect to :{v6_port}\n")
    return (
        _replace_table()
        + f"table inet {TABLE} {{\n\tchain output {{\n"
        + "\t\ttype nat hook output priority -100; policy accept;\n"
        + "".join(rules)
        + "\t}\n}\n"
    )


def _replace_table() -> str:
    # Adding the table first makes its deletion succeed when it is not there:
    # one transaction either way, with nft 1.0.6's lack of "destroy".
    return f"table inet {TABLE}\ndelete table inet {TABLE}\n"


def redirect_loopback(netns_path: str, pod_id: str) -> LoopbackListeners:
    """Listen on loopback in the namespace and redirect its loopback TCP there.

    Raises ConfigError("netns", ...) for a path that is not a pod's network
    namespace, and NetworkError if the namespace has no loopback address to
    listen on or the table cannot be made (no ``nft``, a kernel without
    nf_tables NAT); nothing is left behind then.
    """
    fd = open_netns(netns_path)
    try:
        listeners = LoopbackListeners(netns_path, NetnsId.of_fd(fd))
        try:
            run_in_netns(fd, lambda: _redirect_here(listeners, pod_id))
        except BaseException:
            listeners.close()
            raise
    finally:
        os.close(fd)
    return listeners


def _redirect_here(listeners: LoopbackListeners, pod_id: str) -> None:
    try:
        v4 = _listen(socket.AF_INET, "127.0.0.1")
    except OSError as exc:
        raise NetworkError(
            listeners.netns, f"cannot listen on 127.0.0.1: {exc.strerror}", pod_id
        ) from exc
    listeners.sockets.append(v4)
    v6_port = None
    try:
        v6 = _listen(socket.AF_INET6, "::1")
    except OSError as exc:  # IPv6 off in the namespace: IPv4 alone then
        _log.debug("%s: no IPv6 loopback listener: %s", listeners.netns, exc)
    else:
        listeners.sockets.append(v6)
        v6_port = v6.getsockname()[1]
    _nft(ruleset(v4.getsockname()[1], v6_port), listeners.netns, pod_id)


def _listen(family: socket.AddressFamily, address: str) -> socket.socket:
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind((address, 0))
        sock.listen(BACKLOG)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def remove_redirect(listeners: LoopbackListeners) -> None:
    """Close the listeners and delete the table, if the path still names that
    namespace.  Quiet when the namespace is gone; NetworkError if the table
    could not be deleted."""
    listeners.close()
    run_in_the_same_netns(
        listeners.netns,
        listeners.netns_id,
        lambda: _nft(_replace_table(), listeners.netns, ""),
        _log,
        "no table deleted",
    )


def remove_table_here(netns: str) -> list[str]:
    """Delete the table in the calling thread's namespace (a pod's clean-up
    after its daemon died); what failed, if anything.  Nothing to do on a host
    without ``nft``: no table was ever made there."""
    if _nft_binary() is None:
        return []
    try:
        _nft(_replace_table(), netns, "")
    except NetworkError as exc:
        return [f"the nftables table {TABLE}: {exc.reason}"]
    return []


def _nft_binary() -> str | None:
    found = shutil.which("nft")
    if found is not None:
        return found
    return next((path for path in _NFT_PATHS if os.access(path, os.X_OK)), None)


def _nft(script: str, netns: str, pod_id: str) -> None:
    binary = _nft_binary()
    if binary is None:
        raise NetworkError(netns, "nft is not installed (Debian package nftables)", pod_id)
    try:
        done = subprocess.run(
            [binary, "-f", "-"],
            input=script,
            capture_output=True,
            text=True,
            timeout=NFT_TIMEOUT,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise NetworkError(netns, f"nft: {exc}", pod_id) from exc
    if done.returncode != 0:
        raise NetworkError(netns, f"nft failed: {done.stderr.strip()[:1024]}", pod_id)


def original_port(sock: socket.socket) -> int:
    """The port a redirected connection was made to (``SO_ORIGINAL_DST``).

    Raises OSError (ENOENT) for a connection the kernel has no NAT record of.
    """
    level = socket.IPPROTO_IPV6 if sock.family == socket.AF_INET6 else socket.IPPROTO_IP
    raw = sock.getsockopt(level, SO_ORIGINAL_DST, _SOCKADDR_SIZE[sock.family])
    if len(raw) < _SOCKADDR_HEAD.size:
        raise OSError(errno.EINVAL, f"SO_ORIGINAL_DST gave {len(raw)} bytes")
    family, port_bytes = _SOCKADDR_HEAD.unpack_from(raw)
    port = int.from_bytes(port_bytes, "big")
    if family != sock.family or port == 0:
        raise OSError(errno.EINVAL, f"SO_ORIGINAL_DST gave family {family}, port {port}")
    return port
