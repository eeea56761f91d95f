"""init_clone: a VM restored from a template becomes a pod of its own.

Every clone of a template wakes with the template's hostname, clock and
random state, and without the pod's shared directory (a guest that has
mounted a 9p share cannot be saved).  The host sends what this clone must
have, and the agent sets it, in this order:

* the hostname (``sethostname``);
* the clock: ``CLOCK_REALTIME`` set to the host's time (the clone's clock
  resumes where the template's stopped, minutes or days ago);
* the random state: the host's fresh seed is added to the input pool with
  ``RNDADDENTROPY`` (credited) and the CRNG reseeded from it at once
  (``RNDRESEEDCRNG``), so two clones never hand out the same random bytes;
  where the ioctls are refused, the seed is written to /dev/urandom (mixed
  in, not credited) and the answer says so;
* a machine id of its own (/run/machine-id, where /etc/machine-id links);
* the shared directory, mounted at /run/vc/shared (unless it already is),
  by busybox's ``mount`` with the options that init.sh uses at boot.

Before any of that it reads 32 bytes of /dev/urandom and answers them
(``resumed_random``): what the clone's kernel hands out on its own as it
resumes.  Only the VM generation id (a new one per clone, which makes the
kernel reseed at resume) makes these differ between sibling clones; the host
checks that they do in its tests.  The boot id
(/proc/sys/kernel/random/boot_id) is made by the kernel at its first read,
which nothing does before a template is saved: each clone makes its own.
"""

from __future__ import annotations

import os
import socket
import struct
import time

from ..args import AgentError, check_keys, invalid
from ..osutil import read_text, write_machine_id
from ..runtime import RuntimeCall

TYPE_CHECKING = False  # typing costs ~50 ms at every guest boot under TCG: annotations only
if TYPE_CHECKING:
    from collections.abc import Mapping

    from virtcontainers.agent.messages import InitCloneResult

    from ..core import Agent
    from ..model import Reply

SHARED_DIR = "/run/vc/shared"
SHARED_TAG = "vcshared"
MOUNT_9P = ["-t", "9p", "-o", "trans=virtio,version=9p2000.L,msize=262144,cache=none"]
MOUNT_VIRTIOFS = ["-t", "virtiofs"]
SHARED_FS = {"virtio-9p": MOUNT_9P, "virtio-fs": MOUNT_VIRTIOFS}
RESUMED_RANDOM_BYTES = 32
SEED_MIN = 32
SEED_MAX = 512
"""Bytes of seed the host may send."""
RNDADDENTROPY = 0x40085203  # _IOW('R', 0x03, int[2])
RNDRESEEDCRNG = 0x5207  # _IO('R', 0x07)
HOSTNAME_MAX = 63
_HOSTNAME_FIRST = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789")
_HOSTNAME_REST = _HOSTNAME_FIRST | frozenset(".-")
_HEX = frozenset("0123456789abcdef")


def init_clone(agent: Agent, reply: Reply, args: Mapping[str, object]) -> None:
    """Check every argument, then set hostname, clock and seed, then mount.

    Answers ``{"reseeded": bool, "resumed_random": hex}`` (reseeded False:
    the seed was mixed in without a reseed).  Raises AgentError: "invalid",
    "state" (not PID 1: this would change the host that runs the agent),
    "clone" (a step failed).
    """
    allowed = {"hostname", "seed", "time_ns", "shared_fs"}
    check_keys(args, allowed, allowed)
    hostname = _hostname(args["hostname"])
    seed = _seed(args["seed"])
    time_ns = args["time_ns"]
    if not isinstance(time_ns, int) or isinstance(time_ns, bool) or not 0 < time_ns < 1 << 63:
        raise invalid("time_ns must be an integer in 1..2^63-1 (ns since the epoch)")
    shared_fs = args["shared_fs"]
    if shared_fs is not None and shared_fs not in SHARED_FS:
        raise invalid(f"shared_fs must be null or one of {', '.join(sorted(SHARED_FS))}")
    if not agent.pid1:
        raise AgentError("state", "init_clone changes the whole machine: only as PID 1 in a VM")
    try:
        with open("/dev/urandom", "rb", buffering=0) as urandom:
            resumed_random = urandom.read(RESUMED_RANDOM_BYTES).hex()
        socket.sethostname(hostname)
        time.clock_settime_ns(time.CLOCK_REALTIME, time_ns)
    except OSError as exc:
        raise AgentError("clone", f"cannot set the hostname or the clock: {exc}") from None
    try:
        reseeded = _reseed(seed)
    except OSError as exc:
        raise AgentError("clone", f"cannot seed the random number generator: {exc}") from None
    try:
        write_machine_id()  # after the reseed: drawn from this clone's own pool
    except OSError as exc:
        raise AgentError("clone", f"cannot write the machine id: {exc}") from None
    answer: InitCloneResult = {"reseeded": reseeded, "resumed_random": resumed_random}
    if shared_fs is None or _mounted(SHARED_DIR):
        reply.ok(answer)
        return

    def mounted(call: RuntimeCall) -> None:
        if call.ok:
            reply.ok(answer)
        else:
            reply.error("clone", f"cannot mount the shared directory: {call.error_text()}")

    argv = ["mount", *SHARED_FS[shared_fs], SHARED_TAG, SHARED_DIR]
    try:
        RuntimeCall(agent, argv, mounted)
    except AgentError as exc:  # mount cannot be started at all
        raise AgentError("clone", exc.message) from None


def _hostname(value: object) -> str:
    if (
        not isinstance(value, str)
        or not 1 <= len(value) <= HOSTNAME_MAX
        or value[0] not in _HOSTNAME_FIRST
        or not all(c in _HOSTNAME_REST for c in value)
    ):
        raise invalid("hostname must match ^[A-Za-z0-9][A-Za-z0-9.-]{0,62}$")
    return value


def _seed(value: object) -> bytes:
    if (
        not isinstance(value, str)
        or not SEED_MIN * 2 <= len(value) <= SEED_MAX * 2
        or len(value) % 2
        or not all(c in _HEX for c in value)
    ):
        raise invalid(f"seed must be {SEED_MIN} to {SEED_MAX} bytes in lowercase hex")
    return bytes.fromhex(value)


def _reseed(seed: bytes) -> bool:
    """Credit *seed* to the input pool and reseed the CRNG from it; else mix it in."""
    import fcntl  # only here and for terminals: not a start-up import

    fd = os.open("/dev/urandom", os.O_WRONLY | os.O_CLOEXEC)
    try:
        try:
            info = struct.pack("ii", len(seed) * 8, len(seed)) + seed
            fcntl.ioctl(fd, RNDADDENTROPY, info)
            fcntl.ioctl(fd, RNDRESEEDCRNG)
        except OSError:
            os.write(fd, seed)
            return False
        return True
    finally:
        os.close(fd)


def _mounted(path: str) -> bool:
    try:
        mounts = read_text("/proc/self/mounts")
    except OSError:
        return False
    return any(line.split(" ")[1:2] == [path] for line in mounts.splitlines())
