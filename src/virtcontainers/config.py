"""Typed, validated configuration values.

Every config is a frozen dataclass that validates itself on construction, so
a bad config raises :class:`~virtcontainers.errors.ConfigError` before
anything is started.  ``to_dict``/``from_dict`` give the JSON form kept in the
store and sent to the pod daemon; ``from_dict`` rejects unknown fields.

What depends on the host (a rootfs or mount source that exists, memory the
host has) is checked by ``check_host()``, once, when a pod or container is
created: a stored config stays loadable when the host changes later.
"""

from __future__ import annotations

import dataclasses
import json
import os
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NotRequired, TypedDict

from virtcontainers.cgroupconfig import CgroupConfig, CgroupDict
from virtcontainers.errors import ConfigError
from virtcontainers.ids import validate_hostname, validate_id
from virtcontainers.limits import Limits, LimitsDict
from virtcontainers.plainconfig import Plain, check_str_tuple, check_type, reject_unknown
from virtcontainers.volumes import (
    MAX_VOLUMES,
    ROOTFS_FILESYSTEMS,
    BlockVolume,
    BlockVolumeDict,
    Mount,
    MountDict,
)

JOINABLE_NAMESPACES = frozenset({"ipc", "uts", "pid", "mount", "cgroup", "user", "time"})
DEFAULT_PATH_ENV = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
MIN_MEMORY_MIB = 128
MAX_SOCKET_PATH = 107
"""The longest unix socket path AF_UNIX takes (108 bytes with its NUL)."""
MAX_VCPUS = 64
MAX_ID = 2**32 - 2
"""The largest uid or gid (2^32-1 is the kernel's "no id")."""
MAX_HOTPLUG_SLOTS = 16  # empty PCIe root ports of one VM
DEFAULT_LOG_MIB = 4
MAX_CMD_BYTES = 512 * 1024
"""The most a command's args and env may take as JSON: the request that carries
them to the guest (with the rest of a container's spec) must fit one frame:
half the agent protocol's MAX_PAYLOAD, which a unit test holds it to (a
constant here, so that the vocabulary imports no backend)."""
DEFAULT_LAYERS_MIB = 1024
# Empty PCIe slots of a pod with a network namespace: interfaces it can take
# over while it runs, beyond those it found at boot.
NET_HOTPLUG_SLOTS = 4


def host_memory_mib() -> int:
    with open("/proc/meminfo") as meminfo:
        for line in meminfo:
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) // 1024
    raise OSError("MemTotal missing from /proc/meminfo")


# --- JSON forms --------------------------------------------------------------------
# What each config's to_dict gives (and from_dict takes back): the one document,
# nested, that the store keeps and the pod daemon's requests carry.


class ResourcesDict(TypedDict):
    vcpus: int
    memory_mib: int
    hotplug_slots: NotRequired[int]
    log_mib: NotRequired[int]
    layers_mib: NotRequired[int]


class UserDict(TypedDict):
    uid: int
    gid: int
    additional_gids: list[int]


class CmdDict(TypedDict):
    args: list[str]
    env: list[str]
    cwd: str
    user: UserDict
    terminal: bool
    runtime_settings: dict[str, Any] | None


class ContainerConfigDict(TypedDict):
    id: str
    rootfs: str
    cmd: CmdDict
    mounts: list[MountDict]
    hostname: str | None
    read_only_rootfs: bool
    annotations: dict[str, str]
    oci: dict[str, object] | None  # an OCI runtime-spec config, as given
    join_namespaces: dict[str, str]
    writable_layer: bool
    limits: LimitsDict
    block_volumes: list[BlockVolumeDict]
    rootfs_fstype: NotRequired[str | None]


class ImagePathsDict(TypedDict):
    kernel: str
    initrd: str
    rootfs: str


class PodConfigDict(TypedDict):
    id: str
    resources: ResourcesDict
    containers: list[ContainerConfigDict]
    hypervisor: str
    image: ImagePathsDict | None
    hostname: str | None
    kernel_params: list[str]
    annotations: dict[str, str]
    agent: str | None
    netns: str | None
    cgroup: CgroupDict | None
    boot: str
    forward_loopback: bool
    auto_template: bool


@dataclass(frozen=True)
class Resources(Plain):
    """VM size.  vCPUs and memory are the guest's, not a cgroup limit."""

    KIND = "resources"

    vcpus: int = 1
    memory_mib: int = 512
    hotplug_slots: int = 0
    """Empty PCIe slots kept in the VM for devices plugged while it runs
    (block volumes, interfaces).  Slots cost boot time, so there are none
    unless asked for here or needed by the pod's config (see
    :meth:`PodConfig.hotplug_slots`)."""
    log_mib: int = DEFAULT_LOG_MIB
    """The size at which a container's log (``<pod>/logs/<id>.log``, written when
    it has no fds attached) is rotated: one rotated file is kept, so a container's
    logs take at most about twice this."""
    layers_mib: int = DEFAULT_LAYERS_MIB
    """The size of the tmpfs at ``<pod>/layers`` that holds all the pod's
    containers' writable layers: a container that fills it gets ENOSPC."""

    def __post_init__(self) -> None:
        check_type("resources.vcpus", self.vcpus, int)
        check_type("resources.memory_mib", self.memory_mib, int)
        check_type("resources.hotplug_slots", self.hotplug_slots, int)
        check_type("resources.log_mib", self.log_mib, int)
        check_type("resources.layers_mib", self.layers_mib, int)
        for name in ("log_mib", "layers_mib"):
            if getattr(self, name) < 1:
                raise ConfigError(f"resources.{name}", f"{getattr(self, name)} MiB is below 1 MiB")
        if not 1 <= self.vcpus <= MAX_VCPUS:
            raise ConfigError("resources.vcpus", f"{self.vcpus} is outside 1..{MAX_VCPUS}")
        if not 0 <= self.hotplug_slots <= MAX_HOTPLUG_SLOTS:
            raise ConfigError(
                "resources.hotplug_slots", f"{self.hotplug_slots} is outside 0..{MAX_HOTPLUG_SLOTS}"
            )
        if self.memory_mib < MIN_MEMORY_MIB:
            raise ConfigError(
                "resources.memory_mib",
                f"{self.memory_mib} MiB is below {MIN_MEMORY_MIB} MiB (the guest needs that much)",
            )

    def to_dict(self) -> ResourcesDict:
        return {
            "vcpus": self.vcpus,
            "memory_mib": self.memory_mib,
            "hotplug_slots": self.hotplug_slots,
            "log_mib": self.log_mib,
            "layers_mib": self.layers_mib,
        }

    def check_host(self) -> None:
        host = host_memory_mib()
        if self.memory_mib > host:
            raise ConfigError(
                "resources.memory_mib", f"{self.memory_mib} MiB is more than the host's {host} MiB"
            )


def _check_id(where: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_ID:
        raise ConfigError(where, f"{value!r} is not a valid id (an integer 0..{MAX_ID})")
    return value


@dataclass(frozen=True)
class User(Plain):
    """Who a process runs as, by numeric ids: names are not resolved in the guest."""

    KIND = "cmd.user"

    uid: int = 0
    gid: int = 0
    additional_gids: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        _check_id("cmd.user.uid", self.uid)
        _check_id("cmd.user.gid", self.gid)
        gids = self.additional_gids
        if not isinstance(gids, list | tuple):
            raise ConfigError("cmd.user.additional_gids", f"expected a list, got {gids!r}")
        object.__setattr__(
            self, "additional_gids", tuple(_check_id("cmd.user.additional_gids", g) for g in gids)
        )

    @classmethod
    def parse(cls, text: str) -> User:
        """A user as one is typed: ``UID[:GID[:GID,GID...]]`` (GID defaults to UID)."""
        parts = text.split(":")
        try:
            uid = int(parts[0])
            gid = int(parts[1]) if len(parts) > 1 and parts[1] else uid
            extra = tuple(int(g) for g in parts[2].split(",")) if len(parts) > 2 else ()
        except ValueError:
            raise ConfigError("cmd.user", f"{text!r} is not UID[:GID[:GIDS]]") from None
        if len(parts) > 3:
            raise ConfigError("cmd.user", f"{text!r} is not UID[:GID[:GIDS]]")
        return cls(uid, gid, extra)

    def to_dict(self) -> UserDict:
        return {"uid": self.uid, "gid": self.gid, "additional_gids": list(self.additional_gids)}


PROCESS_FIELDS = frozenset({"args", "env", "cwd", "user", "terminal"})
"""The keys of an OCI process object that are fields of :class:`Cmd`."""


@dataclass(frozen=True)
class Cmd:
    """A process to run: in a container, or in the VM outside containers."""

    args: tuple[str, ...]
    env: tuple[str, ...] = (DEFAULT_PATH_ENV,)
    cwd: str = "/"
    user: User = User()
    terminal: bool = False
    runtime_settings: Mapping[str, Any] | None = None
    """The rest of a container's OCI process object, for the guest's runtime:
    capabilities, rlimits, noNewPrivileges, oomScoreAdj, ...; never one of
    :data:`PROCESS_FIELDS`, which are the fields above.  None: the library's
    defaults (:func:`virtcontainers.spec.default_runtime_settings`).  Only a
    container's own process has them: an exec in a container runs with its
    container's, and a process in the VM outside containers with none."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "args", check_str_tuple("cmd.args", self.args))
        object.__setattr__(self, "env", check_str_tuple("cmd.env", self.env))
        if not self.args:
            raise ConfigError("cmd.args", "a command needs at least the program name")
        for entry in self.env:
            if "=" not in entry:
                raise ConfigError("cmd.env", f"{entry[:64]!r} is not NAME=VALUE")
        self._check_size()
        check_type("cmd.cwd", self.cwd, str)
        if not os.path.isabs(self.cwd):
            raise ConfigError("cmd.cwd", f"{self.cwd!r} is not absolute")
        check_type("cmd.user", self.user, User)
        check_type("cmd.terminal", self.terminal, bool)
        if self.runtime_settings is not None:
            check_type("cmd.runtime_settings", self.runtime_settings, Mapping)
            for key in self.runtime_settings:
                check_type("cmd.runtime_settings", key, str)
                if key in PROCESS_FIELDS:
                    raise ConfigError(
                        "cmd.runtime_settings", f"{key!r} is a field of the Cmd, not a setting"
                    )

    def _check_size(self) -> None:
        size = len(json.dumps([self.args, self.env], separators=(",", ":")))
        if size > MAX_CMD_BYTES:
            raise ConfigError(
                "cmd",
                f"args and env take {size} bytes as JSON, more than the {MAX_CMD_BYTES} a "
                "request to the guest can carry; pass large data in a file or a volume",
            )

    def to_dict(self) -> CmdDict:
        """The JSON form (lists for tuples), as ``from_dict`` takes it back."""
        settings = self.runtime_settings
        return {
            "args": list(self.args),
            "env": list(self.env),
            "cwd": self.cwd,
            "user": self.user.to_dict(),
            "terminal": self.terminal,
            "runtime_settings": dict(settings) if settings is not None else None,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Cmd:
        values = dict(reject_unknown("cmd", cls, data))
        user = values.get("user")
        if isinstance(user, str):
            # Records stored before User existed hold "UID:GID:G1,G2"; read
            # once here, so that the pods of a host survive the upgrade.
            values["user"] = User.parse(user)
        elif user is not None:
            values["user"] = User.from_dict(user)
        return cls(**values)


@dataclass(frozen=True)
class ContainerConfig:
    """A container: a host rootfs directory and the process to run in it.

    ``oci`` is an optional OCI runtime-spec config used as the base of the
    container's spec in the guest (what a runtime such as vc-runtime
    translated), without a ``process``: ``cmd`` is the container's process;
    its ``root`` is replaced by the rootfs.  Without it the library makes a
    default spec.

    ``writable_layer``: the rootfs is a base that other containers share, so
    it is kept read-only and this container writes to a layer of its own
    (overlayfs on the host), which lives until the container is deleted.
    Without it the container writes to the rootfs directory itself, as runc's
    bundle rootfs is written.

    ``rootfs_fstype``: the rootfs is not a directory but a block device (a
    loop device, a device-mapper volume) holding a filesystem of this type
    (one of :data:`~virtcontainers.volumes.ROOTFS_FILESYSTEMS`).  The pod
    hot-plugs it and the guest mounts it as the container's root; nothing of
    it is shared over 9p.  While the container exists the pod holds the device
    open exclusively, so the host cannot mount it (see docs/block-rootfs.md).
    """

    id: str
    rootfs: Path
    cmd: Cmd
    mounts: tuple[Mount, ...] = ()
    hostname: str | None = None
    read_only_rootfs: bool = False
    annotations: Mapping[str, str] = field(default_factory=dict)
    oci: Mapping[str, Any] | None = None
    join_namespaces: Mapping[str, str] = field(default_factory=dict)
    """Namespace type -> id of a container in the same pod whose namespace this
    one joins (a CRI pod's containers share the sandbox's ipc and uts)."""
    writable_layer: bool = False
    limits: Limits = field(default_factory=Limits)
    """Memory, pids and CPU limits, applied in the guest (see limits.py)."""
    block_volumes: tuple[BlockVolume, ...] = ()
    """Disk images hot-plugged into the VM and mounted in the container (volumes.py)."""
    rootfs_fstype: str | None = None

    def __post_init__(self) -> None:
        validate_id("container", self.id)
        for kind, other in dict(self.join_namespaces).items():
            if kind not in JOINABLE_NAMESPACES:
                raise ConfigError("container.join_namespaces", f"{kind!r} cannot be joined")
            validate_id("container", other)
            if other == self.id:
                raise ConfigError("container.join_namespaces", "a container cannot join itself")
        object.__setattr__(self, "rootfs", Path(self.rootfs))
        if not self.rootfs.is_absolute():
            raise ConfigError("container.rootfs", f"{str(self.rootfs)!r} is not absolute")
        check_type("container.cmd", self.cmd, Cmd)
        object.__setattr__(self, "mounts", tuple(self.mounts))
        for mount in self.mounts:
            check_type("container.mounts", mount, Mount)
        validate_hostname("container.hostname", self.hostname)
        check_type("container.read_only_rootfs", self.read_only_rootfs, bool)
        check_type("container.writable_layer", self.writable_layer, bool)
        if self.writable_layer and any(c in str(self.rootfs) for c in ",:\\"):
            raise ConfigError(
                "container.rootfs",
                f"{self.rootfs}: a rootfs with a writable layer cannot hold ',', ':' or '\\' "
                "(overlayfs separators)",
            )
        for key, value in dict(self.annotations).items():
            check_type("container.annotations", key, str)
            check_type("container.annotations", value, str)
        if self.oci is not None:
            check_type("container.oci", self.oci, Mapping)
            if "process" in self.oci:
                raise ConfigError(
                    "container.oci", "holds a 'process': the container's process is its cmd"
                )
        check_type("container.limits", self.limits, Limits)
        object.__setattr__(self, "block_volumes", tuple(self.block_volumes))
        for volume in self.block_volumes:
            check_type("container.block_volumes", volume, BlockVolume)
        if len(self.block_volumes) > MAX_VOLUMES:
            raise ConfigError("container.block_volumes", f"at most {MAX_VOLUMES} per container")
        self._check_rootfs_fstype()

    def _check_rootfs_fstype(self) -> None:
        if self.rootfs_fstype is None:
            return
        if self.rootfs_fstype not in ROOTFS_FILESYSTEMS:
            raise ConfigError(
                "container.rootfs_fstype",
                f"{self.rootfs_fstype!r} is not one of {', '.join(ROOTFS_FILESYSTEMS)} "
                f"(container {self.id!r})",
            )
        if self.writable_layer:
            raise ConfigError(
                "container.writable_layer",
                f"container {self.id!r}: a block-device rootfs has no writable layer "
                "(it is the container's own disk)",
            )

    @property
    def block_rootfs(self) -> bool:
        """Whether the rootfs is a block device hot-plugged into the VM."""
        return self.rootfs_fstype is not None

    def check_host(self) -> None:
        if self.block_rootfs:
            if not stat.S_ISBLK(_mode(self.rootfs)):
                raise ConfigError(
                    "container.rootfs",
                    f"{self.rootfs} is not a block device (container {self.id!r}, "
                    f"rootfs_fstype {self.rootfs_fstype!r})",
                )
        elif not self.rootfs.is_dir():
            raise ConfigError(
                "container.rootfs", f"{self.rootfs} is not a directory (container {self.id!r})"
            )
        for mount in self.mounts:
            mount.check_host()
        for volume in self.block_volumes:
            volume.check_host()

    def to_dict(self) -> ContainerConfigDict:
        return {
            "id": self.id,
            "rootfs": str(self.rootfs),
            "cmd": self.cmd.to_dict(),
            "mounts": [m.to_dict() for m in self.mounts],
            "hostname": self.hostname,
            "read_only_rootfs": self.read_only_rootfs,
            "annotations": dict(self.annotations),
            "oci": dict(self.oci) if self.oci is not None else None,
            "join_namespaces": dict(self.join_namespaces),
            "writable_layer": self.writable_layer,
            "limits": self.limits.to_dict(),
            "block_volumes": [v.to_dict() for v in self.block_volumes],
            "rootfs_fstype": self.rootfs_fstype,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ContainerConfig:
        reject_unknown("container", cls, data)
        values = dict(data)
        if "cmd" not in values or "id" not in values or "rootfs" not in values:
            raise ConfigError("container", "'id', 'rootfs' and 'cmd' are required")
        values["cmd"], values["oci"] = _cmd_and_oci(values["cmd"], values.get("oci"))
        values["mounts"] = tuple(Mount.from_dict(m) for m in values.get("mounts") or ())
        values["rootfs"] = Path(values["rootfs"])
        values["annotations"] = dict(values.get("annotations") or {})
        values["join_namespaces"] = dict(values.get("join_namespaces") or {})
        values["limits"] = Limits.from_dict(values.get("limits") or {})
        values["block_volumes"] = tuple(
            BlockVolume.from_dict(v) for v in values.get("block_volumes") or ()
        )
        return cls(**values)


def _mode(path: Path) -> int:
    try:
        return path.stat().st_mode
    except OSError:
        return 0


def _cmd_and_oci(cmd: object, oci: object) -> tuple[Cmd, object]:
    """A stored container's Cmd and OCI spec.  Records stored before the Cmd
    carried its runtime settings (they have no ``runtime_settings``) kept
    them in the spec's process, read once here so that the pods of a host
    survive the upgrade; such a record with a spec had no default settings."""
    if not isinstance(cmd, Mapping):
        raise ConfigError("container.cmd", f"expected an object, got {type(cmd).__name__}")
    if "runtime_settings" in cmd or not isinstance(oci, Mapping):
        return Cmd.from_dict(cmd), oci
    rest = dict(oci)
    process = rest.pop("process", None) or {}
    if not isinstance(process, Mapping):
        raise ConfigError("container.oci", f"its process is not an object: {process!r}")
    settings = {key: value for key, value in process.items() if key not in PROCESS_FIELDS}
    return dataclasses.replace(Cmd.from_dict(cmd), runtime_settings=settings), rest


@dataclass(frozen=True)
class ImagePaths(Plain):
    """A guest image to boot instead of the default built one."""

    KIND = "image"

    kernel: Path
    initrd: Path
    rootfs: Path

    def __post_init__(self) -> None:
        for name in ("kernel", "initrd", "rootfs"):
            object.__setattr__(self, name, Path(getattr(self, name)))

    def check_host(self) -> None:
        for name in ("kernel", "initrd", "rootfs"):
            path = getattr(self, name)
            if not path.is_file():
                raise ConfigError(f"image.{name}", f"{path} is not a file")

    def to_dict(self) -> ImagePathsDict:
        return {"kernel": str(self.kernel), "initrd": str(self.initrd), "rootfs": str(self.rootfs)}


HYPERVISORS = ("qemu", "mock")
AGENTS = ("vc", "mock")
BOOT_MODES = ("auto", "template", "cold")


@dataclass(frozen=True)
class PodConfig:
    """A pod: one VM and the containers it starts with.

    ``hypervisor`` and ``agent`` pick the backends (``qemu`` and our guest
    agent ``vc``; ``mock`` for both in unit tests).  ``agent`` defaults to
    the one that goes with the hypervisor.  ``image`` defaults to the built
    guest image, found when the pod is created.
    """

    id: str
    resources: Resources = field(default_factory=Resources)
    containers: tuple[ContainerConfig, ...] = ()
    hypervisor: str = "qemu"
    image: ImagePaths | None = None
    hostname: str | None = None
    kernel_params: tuple[str, ...] = ()
    annotations: Mapping[str, str] = field(default_factory=dict)
    agent: str | None = None
    netns: str | None = None
    """A network namespace (by path) that the caller set up: the pod's VM gets
    its interfaces, addresses and routes.  None: loopback only."""
    cgroup: CgroupConfig | None = None
    """The host cgroup the pod's QEMU, helpers and daemon run in (host/cgroup.py)."""
    boot: str = "auto"
    """How the VM starts: ``cold`` boots it; ``template`` clones the VM
    template that matches the pod (factory.py) and fails without one;
    ``auto`` clones one when it exists and boots cold otherwise."""
    forward_loopback: bool = False
    """TCP connections made to loopback in ``netns`` on the host go to the same
    port on the VM's loopback (containerd's CRI port-forward dials there;
    docs/network.md)."""
    auto_template: bool = True
    """With ``boot="auto"`` and no template for the pod's shape: have one made
    in the background for the next pods (docs/factory.md), unless
    ``$VC_AUTO_TEMPLATES`` turns that off for every pod."""

    def __post_init__(self) -> None:
        validate_id("pod", self.id)
        check_type("pod.resources", self.resources, Resources)
        object.__setattr__(self, "containers", tuple(self.containers))
        seen: set[str] = set()
        for container in self.containers:
            check_type("pod.containers", container, ContainerConfig)
            if container.id in seen:
                raise ConfigError("pod.containers", f"container id {container.id!r} appears twice")
            seen.add(container.id)
            container.limits.check_fits(
                container.id, self.resources.vcpus, self.resources.memory_mib
            )
        if self.hypervisor not in HYPERVISORS:
            raise ConfigError("pod.hypervisor", f"{self.hypervisor!r} is not 'qemu' or 'mock'")
        if self.agent is None:
            object.__setattr__(self, "agent", "mock" if self.hypervisor == "mock" else "vc")
        if self.agent not in AGENTS:
            raise ConfigError("pod.agent", f"{self.agent!r} is not 'vc' or 'mock'")
        if self.cgroup is not None:
            check_type("pod.cgroup", self.cgroup, CgroupConfig)
        if self.netns is not None and not os.path.isabs(self.netns):
            raise ConfigError("pod.netns", f"{self.netns!r} is not an absolute path")
        check_type("pod.forward_loopback", self.forward_loopback, bool)
        if self.forward_loopback and self.netns is None:
            raise ConfigError("pod.forward_loopback", "needs the pod's network namespace (netns)")
        if self.boot not in BOOT_MODES:
            raise ConfigError("pod.boot", f"{self.boot!r} is not one of {', '.join(BOOT_MODES)}")
        check_type("pod.auto_template", self.auto_template, bool)
        object.__setattr__(
            self, "kernel_params", check_str_tuple("pod.kernel_params", self.kernel_params)
        )
        validate_hostname("pod.hostname", self.hostname)
        for key, value in dict(self.annotations).items():
            check_type("pod.annotations", key, str)
            check_type("pod.annotations", value, str)

    def to_dict(self) -> PodConfigDict:
        return {
            "id": self.id,
            "resources": self.resources.to_dict(),
            "containers": [c.to_dict() for c in self.containers],
            "hypervisor": self.hypervisor,
            "image": self.image.to_dict() if self.image else None,
            "hostname": self.hostname,
            "kernel_params": list(self.kernel_params),
            "annotations": dict(self.annotations),
            "agent": self.agent,
            "netns": self.netns,
            "cgroup": self.cgroup.to_dict() if self.cgroup is not None else None,
            "boot": self.boot,
            "forward_loopback": self.forward_loopback,
            "auto_template": self.auto_template,
        }

    def hotplug_slots(self) -> int:
        """The empty PCIe slots the pod's VM is booted with: those asked for,
        or as many as its first containers' block volumes and its network
        namespace need, whichever is more."""
        volumes = sum(len(c.block_volumes) + c.block_rootfs for c in self.containers)
        network = NET_HOTPLUG_SLOTS if self.netns is not None else 0
        return max(self.resources.hotplug_slots, volumes, network)

    def check_host(self) -> None:
        """Raise ConfigError for what this host cannot give the pod."""
        self.resources.check_host()
        if self.image is not None:
            self.image.check_host()
        for container in self.containers:
            container.check_host()

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PodConfig:
        reject_unknown("pod", cls, data)
        values = dict(data)
        if "id" not in values:
            raise ConfigError("pod", "'id' is required")
        values["resources"] = Resources.from_dict(values.get("resources") or {})
        values["containers"] = tuple(
            ContainerConfig.from_dict(c) for c in values.get("containers") or ()
        )
        values["image"] = ImagePaths.from_dict(values["image"]) if values.get("image") else None
        values["kernel_params"] = tuple(values.get("kernel_params") or ())
        values["annotations"] = dict(values.get("annotations") or {})
        cgroup = values.get("cgroup")
        values["cgroup"] = CgroupConfig.from_dict(cgroup) if cgroup is not None else None
        return cls(**values)
