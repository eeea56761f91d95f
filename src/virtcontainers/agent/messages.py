"""What the host and the guest agent say to each other, declared once.

docs/protocol.md lists the operations; here each one's arguments and result
are declared as a TypedDict (a JSON object on the wire), with the HELLO
messages and the events; ``contract.py`` pairs each op with its two.  The
host's client builds its requests from these types, and the guest agent
builds its results and events from them.  Neither end trusts what it
receives: each checks the other's messages field by field (the guest in
``guest/agent/args.py``, the host in ``client.py``), so a received message is
a ``Mapping[str, object]`` until it has been checked.

The guest agent imports this module only under ``TYPE_CHECKING``: typing
costs it start-up time under emulation, and the module is not in the guest
image.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import NotRequired, TypedDict

# --- the handshake -------------------------------------------------------------------


class HostHello(TypedDict):
    version: int
    nonce: str  # fresh for each connection: the guest echoes it


class AgentHello(HostHello):
    agent_version: str


# --- OCI process objects -------------------------------------------------------------


class OciUser(TypedDict):
    uid: int
    gid: int
    additionalGids: NotRequired[list[int]]


class OciProcess(TypedDict):
    """The runtime-spec process fields that are a :class:`~virtcontainers.config.Cmd`'s.

    ``exec_guest`` takes just these; a container's process object, and an
    exec's in a container, has the container's runtime settings beside them
    (capabilities, rlimits, ...: ``Cmd.runtime_settings``).
    """

    terminal: bool
    user: OciUser
    args: list[str]
    env: list[str]
    cwd: str


# --- arguments, as the host sends them -----------------------------------------------


class Empty(TypedDict):
    """The arguments of ping, guest_details and shutdown; the result of an op that
    answers nothing but its success."""


class StdioArgs(TypedDict):
    """Stream ids of a new process's stdio; None means /dev/null."""

    stdin: int | None
    stdout: int | None
    stderr: int | None


class ContainerArgs(TypedDict):
    """start, pause, resume, remove, state of, and list the processes of a container."""

    container_id: str


class CreateContainerArgs(ContainerArgs, StdioArgs):
    # An OCI runtime-spec config.json object; its root.path is the guest path
    # of the container's root filesystem.
    bundle: Mapping[str, object]


class ExecProcessArgs(ContainerArgs, StdioArgs):
    exec_id: str
    process: Mapping[str, object]  # an OciProcess with its container's runtime settings


class ExecGuestArgs(StdioArgs):
    exec_id: str
    process: OciProcess


class ProcessArgs(TypedDict):
    """Which process: a container's (exec_id None: its init), or one that
    exec_guest started (container_id None)."""

    container_id: str | None
    exec_id: str | None


class SignalProcessArgs(ProcessArgs):
    signal: int
    all: bool  # every process of the container, through the runtime


class ResizeTerminalArgs(ProcessArgs):
    rows: int
    cols: int


class CloseOutputArgs(TypedDict):
    """A process's output stream whose reader on the host went away."""

    stream: int


class NetInterface(TypedDict):
    """A NIC of the VM, found by its MAC: the host gives each NIC the MAC of the
    network-namespace interface it stands for."""

    mac: str  # "02:00:0a:01:02:03"
    mtu: int  # 68..65535; at least 1280 with an IPv6 address
    addresses: list[str]  # in CIDR form: "10.1.2.3/24", "fd00::3/64"


class NetRoute(TypedDict):
    destination: str  # "default" (needs a gateway) or a network: "10.2.0.0/16", "::/0"
    gateway: str | None  # None: the destination is on the link
    mac: str  # the MAC of the route's interface, one of the NetInterfaces


class ConfigureNetworkArgs(TypedDict):
    interfaces: list[NetInterface]
    routes: list[NetRoute]  # added in this order, after every interface's addresses
    wait: NotRequired[float]  # seconds to wait for NICs not there yet (hot-plugged); 0..120


class OciResources(TypedDict, total=False):
    """The linux.resources fields update_container may set (crun update)."""

    memory: dict[str, int]  # limit, swap, reservation (bytes; -1: no limit)
    cpu: dict[str, int]  # quota, period (µs), shares
    pids: dict[str, int]  # limit


class UpdateContainerArgs(ContainerArgs):
    resources: OciResources


class MountBlockArgs(TypedDict):
    volume_id: str  # the volume is mounted at /run/vc/volumes/<volume_id>
    serial: str  # the virtio-blk serial of the disk the host plugged
    fstype: str  # ext4, ext3, ext2, xfs, btrfs, vfat or squashfs
    read_only: bool


class VolumeArgs(TypedDict):
    volume_id: str


class InitCloneArgs(TypedDict):
    """What makes a VM cloned from a template a pod of its own."""

    hostname: str
    seed: str  # 32 to 512 random bytes, in lowercase hex
    time_ns: int  # the host's CLOCK_REALTIME when it sent this
    shared_fs: str | None  # "virtio-9p" or "virtio-fs": mount the pod's shared directory


class ConnectPortArgs(TypedDict):
    """A TCP connection the guest opens to its own loopback, carried on a stream."""

    stream: int  # the I/O stream that carries it, both ways, from now on
    port: int  # 1..65535
    family: int  # 4 (127.0.0.1) or 6 (::1): tried first, the other if refused


# --- results, as the guest sends them ------------------------------------------------


class GuestDetailsResult(TypedDict):
    kernel: str  # the uname release
    agent_version: str
    python: str
    cpus: int
    memory_kib: int  # MemTotal
    runtime: str  # the first line of `<runtime> --version`; "" if it cannot run


class PidResult(TypedDict):
    """What create_container, exec_process and exec_guest answer."""

    pid: int


class ExitResult(TypedDict):
    """What wait_process answers: exit_code is 128+N when killed by signal N."""

    exit_code: int
    signal: int | None


class ProcessEntry(TypedDict):
    pid: int
    args: list[str]


class ProcessListResult(TypedDict):
    processes: list[ProcessEntry]


ContainerStatsResult = dict[str, int]
"""A container's usage, from its cgroup in the guest: one integer per field of
:class:`virtcontainers.agent.results.ContainerStats`, which lists them once and
parses the answer (0 where not limited)."""


class ContainerStateResult(TypedDict):
    status: str  # created, running, paused or stopped
    pid: int | None


class InitCloneResult(TypedDict):
    reseeded: bool  # False: the seed was mixed into the pool, the CRNG not reseeded
    resumed_random: str  # 32 bytes of /dev/urandom read before the seed, lowercase hex


class TableContainer(TypedDict):
    id: str
    status: str  # creating, created, running, paused or stopped


class TableProcess(TypedDict):
    """A process the guest keeps, for a host that reattaches."""

    container_id: str | None  # None: a process of exec_guest
    exec_id: str | None  # None: the container's init
    pid: int | None
    exit_code: int | None  # None: still running
    signal: int | None
    stdout: int | None  # the id of a detached output stream, to resume
    stderr: int | None


class ProcessTableResult(TypedDict):
    """What process_table answers: the guest's containers and processes, and the
    output streams a previous host left (detached: not read until resumed)."""

    containers: list[TableContainer]
    processes: list[TableProcess]


class ResumeOutputArgs(TypedDict):
    """Detached output streams the reattached host takes again."""

    streams: list[int]


Result = (
    Empty
    | GuestDetailsResult
    | PidResult
    | ExitResult
    | ProcessListResult
    | ContainerStateResult
    | ContainerStatsResult
    | InitCloneResult
    | ProcessTableResult
)
"""The result of any operation."""


# --- events, as the guest sends them (the event name rides beside the fields) --------


class ExitEvent(ExitResult):
    container_id: str | None  # None: a process of exec_guest
    exec_id: str | None  # None: the container's init
    pid: int | None


class OomEvent(TypedDict):
    container_id: str
