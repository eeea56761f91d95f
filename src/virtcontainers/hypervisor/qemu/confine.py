"""How host processes that serve the guest are confined (docs/security.md).

QEMU runs the guest's devices, its 9p file server among them, so a guest
that drives them badly (or breaks QEMU) must find as little as possible
behind them.  :func:`child_setup` makes the function that runs in the child
between fork and exec; for QEMU it applies:

- no parent-death signal: QEMU (and virtiofsd) outlive a pod daemon that
  dies, so that the guest's containers are not lost with it; whoever finds
  the daemon dead kills QEMU through the pidfd of the record's
  ``ProcessRef`` (``host/orphans.py``), and ``virtc gc`` kills one that no
  record names (a daemon that died before it recorded its VM);
- a capability bounding set of only :data:`QEMU_CAPABILITIES`, which is what
  root keeps across exec: enough for the 9p server to act on container files
  of any owner, and nothing to make device nodes (no ``CAP_MKNOD``), file
  capabilities (no ``CAP_SETFCAP``), mounts or network changes with;
- ``no_new_privs``, and a seccomp filter that refuses (EPERM) to create or
  chmod a file with the setuid or setgid bit, so guest root cannot leave a
  set-id program in a host directory that it shares;
- QEMU adds its own seccomp sandbox on top (:data:`QEMU_SANDBOX`).

The filter is compiled by libseccomp (through pyseccomp) in the parent; the
child only hands the ready program to the kernel, since it must not allocate.
"""

from __future__ import annotations

import ctypes
import errno
import os
import tempfile
from collections.abc import Callable
from functools import cache

import pyseccomp as seccomp

QEMU_SANDBOX = "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny"
CAP_CHOWN = 0
CAP_DAC_OVERRIDE = 1
CAP_DAC_READ_SEARCH = 2
CAP_FOWNER = 3
QEMU_CAPABILITIES = frozenset({CAP_CHOWN, CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH, CAP_FOWNER})
# virtiofsd manages its capabilities itself (libcap-ng fails on a reduced
# bounding set): it is told to drop these, by name, on its command line.
VIRTIOFSD_DROPPED_CAPABILITIES = ("mknod", "setfcap")
PR_SET_SECCOMP = 22
PR_CAPBSET_DROP = 24
PR_SET_NO_NEW_PRIVS = 38
SECCOMP_MODE_FILTER = 2
SET_ID_BITS = (0o4000, 0o2000)  # S_ISUID, S_ISGID
O_CREAT = os.O_CREAT
O_TMPFILE_BIT = 0o20000000  # __O_TMPFILE: the mode applies as with O_CREAT
# (syscall, index of its mode argument, index of its flags argument or None)
MODE_SYSCALLS = (
    ("chmod", 1, None),
    ("fchmod", 1, None),
    ("fchmodat", 2, None),
    ("creat", 1, None),
    ("mknod", 1, None),
    ("mknodat", 2, None),
    ("open", 2, 1),
    ("openat", 3, 2),
)


class _SockFilter(ctypes.Structure):
    _fields_ = (
        ("code", ctypes.c_uint16),
        ("jt", ctypes.c_uint8),
        ("jf", ctypes.c_uint8),
        ("k", ctypes.c_uint32),
    )


class _SockFprog(ctypes.Structure):
    _fields_ = (("len", ctypes.c_ushort), ("filter", ctypes.POINTER(_SockFilter)))


def _last_capability() -> int:
    with open("/proc/sys/kernel/cap_last_cap") as last:
        return int(last.read())


@cache
def no_set_id_filter() -> bytes:
    """The BPF program (for this host's architecture) of the set-id filter."""
    rules = seccomp.SyscallFilter(defaction=seccomp.ALLOW)
    deny = seccomp.ERRNO(errno.EPERM)
    for name, mode_arg, flags_arg in MODE_SYSCALLS:
        for bit in SET_ID_BITS:
            mode = seccomp.Arg(mode_arg, seccomp.MASKED_EQ, bit, bit)
            if flags_arg is None:
                rules.add_rule(deny, name, mode)
                continue
            for creating in (O_CREAT, O_TMPFILE_BIT):
                flags = seccomp.Arg(flags_arg, seccomp.MASKED_EQ, creating, creating)
                rules.add_rule(deny, name, flags, mode)
    # openat2 carries its mode in a struct that a filter cannot read: refuse it,
    # and C libraries fall back to openat.
    rules.add_rule(seccomp.ERRNO(errno.ENOSYS), "openat2")
    with tempfile.TemporaryFile() as program:
        rules.export_bpf(program)
        program.seek(0)
        return program.read()


def child_setup(
    keep_capabilities: frozenset[int] | None = None, seccomp_program: bytes | None = None
) -> Callable[[], None]:
    """A ``preexec_fn`` that confines the child (see above).

    With ``keep_capabilities``, every other capability leaves the bounding
    set.  With either argument ``no_new_privs`` is set, and ``seccomp_program``
    is loaded.  A child that cannot be confined exits with 126 before exec.
    """
    libc = ctypes.CDLL(None, use_errno=True)
    drop: tuple[int, ...] = ()
    if keep_capabilities is not None:
        drop = tuple(c for c in range(_last_capability() + 1) if c not in keep_capabilities)
    fprog = None
    if seccomp_program is not None:
        count = len(seccomp_program) // ctypes.sizeof(_SockFilter)
        instructions = (_SockFilter * count).from_buffer_copy(seccomp_program)
        fprog = _SockFprog(count, ctypes.cast(instructions, ctypes.POINTER(_SockFilter)))

    def setup() -> None:
        if keep_capabilities is None and fprog is None:
            return
        for capability in drop:
            if libc.prctl(PR_CAPBSET_DROP, capability, 0, 0, 0) != 0:
                os._exit(126)
        if libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
            os._exit(126)
        if fprog is not None:
            loaded = libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.byref(fprog), 0, 0)
            if loaded != 0:
                os._exit(126)

    return setup


def qemu_child_setup() -> Callable[[], None]:
    """The ``preexec_fn`` that launches QEMU confined."""
    return child_setup(QEMU_CAPABILITIES, no_set_id_filter())


def virtiofsd_child_setup() -> Callable[[], None]:
    """The ``preexec_fn`` that launches virtiofsd with the set-id filter.

    virtiofsd adds its own sandbox and capability set, minus
    :data:`VIRTIOFSD_DROPPED_CAPABILITIES` (see ``virtiofsd_argv``).
    """
    return child_setup(None, no_set_id_filter())
