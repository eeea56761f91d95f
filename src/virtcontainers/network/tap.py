"""Tap devices: the VM's end of each interface.

A tap is made by opening /dev/net/tun and TUNSETIFF, in the pod's namespace (a
tun device belongs to the namespace of the thread that makes it).  It is not
made persistent: it lives exactly as long as an open descriptor of it (the
one QEMU is given), so a pod whose daemon and VM are both gone leaves no tap
behind.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import re
import struct

TUN_DEVICE = "/dev/net/tun"
TUNSETIFF = 0x400454CA  # _IOW('T', 202, int)
TUNGETIFF = 0x800454D2  # _IOR('T', 210, unsigned int)
IFF_TAP = 0x0002
IFF_NO_PI = 0x1000
IFF_VNET_HDR = 0x4000
IFF_TUN_EXCL = 0x8000  # fail if the name is taken, never attach to someone else's device
TAP_FLAGS = IFF_TAP | IFF_NO_PI | IFF_VNET_HDR
VNET_HDR_LEN = 10  # sizeof(struct virtio_net_hdr): the kernel's default for a tap

IFNAMSIZ = 16
_IFREQ = struct.Struct("16sH22x")  # struct ifreq: a name and ifr_flags, 40 bytes in all
_PREFIX = "vc"
_HASH_CHARS = 10
_NAME = re.compile(rf"{_PREFIX}[0-9a-f]{{{_HASH_CHARS}}}[0-9]+")


def tap_name(pod_id: str, n: int) -> str:
    """The name of pod ``pod_id``'s ``n``-th tap: ``vc`` + 10 hex digits of a hash + ``n``.

    Deterministic (a later process can find it again) and distinct between pods
    (40 bits of SHA-256 of the pod id).  Raises ValueError past IFNAMSIZ.
    """
    digest = hashlib.sha256(pod_id.encode()).hexdigest()[:_HASH_CHARS]
    name = f"{_PREFIX}{digest}{n}"
    if n < 0 or len(name) >= IFNAMSIZ:
        raise ValueError(f"no tap name for interface number {n}: at most 999 interfaces")
    return name


def is_tap_name(name: str) -> bool:
    """True for a name :func:`tap_name` could have made."""
    return _NAME.fullmatch(name) is not None


def open_tap(name: str) -> int:
    """Make tap ``name`` in the current thread's namespace; return its queue fd.

    The fd is close-on-exec (pass it on with ``pass_fds``).  Raises OSError:
    EBUSY if a device of that name already exists.
    """
    fd = os.open(TUN_DEVICE, os.O_RDWR | os.O_CLOEXEC)
    try:
        fcntl.ioctl(fd, TUNSETIFF, _IFREQ.pack(name.encode(), TAP_FLAGS | IFF_TUN_EXCL))
    except BaseException:
        os.close(fd)
        raise
    return fd


def tap_of(fd: int) -> tuple[str, int]:
    """The name and flags of the tap a queue fd is attached to (TUNGETIFF)."""
    raw = fcntl.ioctl(fd, TUNGETIFF, bytes(_IFREQ.size))
    name, flags = _IFREQ.unpack(raw)
    return name.rstrip(b"\0").decode(), flags
