"""The OCI runtime spec the guest's crun receives for a container."""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from typing import Any, NotRequired, TypedDict

from virtcontainers import volumes
from virtcontainers.agent.messages import OciProcess, OciUser
from virtcontainers.config import Cmd, ContainerConfig, User
from virtcontainers.volumes import RECURSIVE_MOUNT_FLAGS, Mount

GUEST_SHARED_DIR = "/run/vc/shared"
OCI_VERSION = "1.1.0"
"""The runtime-spec version of the specs we write (crun 1.8 in the guest takes it)."""
DEFAULT_CAPABILITIES = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
]


_PROC_NS_NAMES = {"mount": "mnt", "network": "net"}
"""Namespace types whose name under /proc/<pid>/ns differs."""


def guest_rootfs(container_id: str) -> str:
    return f"{GUEST_SHARED_DIR}/{container_id}/rootfs"


def guest_mount_source(container_id: str, index: int) -> str:
    return f"{GUEST_SHARED_DIR}/{container_id}/mounts/{index}"


# destination, type, source, options: what a container engine mounts by default.
_DEFAULT_MOUNTS: tuple[tuple[str, str, str, tuple[str, ...]], ...] = (
    ("/proc", "proc", "proc", ()),
    ("/dev", "tmpfs", "tmpfs", ("nosuid", "strictatime", "mode=755", "size=65536k")),
    (
        "/dev/pts",
        "devpts",
        "devpts",
        ("nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"),
    ),
    ("/dev/shm", "tmpfs", "shm", ("nosuid", "noexec", "nodev", "mode=1777", "size=65536k")),
    ("/dev/mqueue", "mqueue", "mqueue", ("nosuid", "noexec", "nodev")),
    ("/sys", "sysfs", "sysfs", ("nosuid", "noexec", "nodev", "ro")),
    ("/sys/fs/cgroup", "cgroup", "cgroup", ("nosuid", "noexec", "nodev", "relatime", "ro")),
)


class OciMount(TypedDict):
    """A runtime-spec mount, with the keys the specs made here use."""

    destination: str
    type: str
    source: str
    options: NotRequired[list[str]]


def default_mounts() -> list[OciMount]:
    mounts: list[OciMount] = []
    for destination, kind, source, options in _DEFAULT_MOUNTS:
        mount: OciMount = {"destination": destination, "type": kind, "source": source}
        if options:
            mount["options"] = list(options)
        mounts.append(mount)
    return mounts


def default_runtime_settings() -> dict[str, Any]:
    """The process settings a container gets when its Cmd has none: what a
    container engine gives (Docker's capability set, 1024 open files, no new
    privileges)."""
    caps = list(DEFAULT_CAPABILITIES)
    return {
        "capabilities": {"bounding": caps, "effective": caps, "permitted": caps},
        "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
        "noNewPrivileges": True,
    }


def default_spec(hostname: str) -> dict[str, Any]:
    """The one default container spec, less its process: what a container
    engine gives a container that asks for nothing (masked and read-only paths)."""
    return {
        "ociVersion": OCI_VERSION,
        "hostname": hostname,
        "mounts": default_mounts(),
        "linux": {
            "namespaces": [{"type": t} for t in ("pid", "ipc", "uts", "mount", "cgroup")],
            "maskedPaths": [
                "/proc/acpi",
                "/proc/asound",
                "/proc/kcore",
                "/proc/keys",
                "/proc/latency_stats",
                "/proc/timer_list",
                "/proc/timer_stats",
                "/proc/sched_debug",
                "/proc/scsi",
                "/sys/firmware",
            ],
            "readonlyPaths": [
                "/proc/bus",
                "/proc/fs",
                "/proc/irq",
                "/proc/sys",
                "/proc/sysrq-trigger",
            ],
        },
    }


def container_spec(
    config: ContainerConfig,
    pod_hostname: str,
    guest_pid: Callable[[str], int] | None = None,
) -> dict[str, Any]:
    """The container's spec as the guest sees it: host paths become guest paths.

    ``guest_pid`` maps a container id of the pod to its init's pid in the guest,
    for the namespaces this container joins.
    """
    spec = copy.deepcopy(dict(config.oci)) if config.oci is not None else default_spec(pod_hostname)
    spec["process"] = container_process(config.cmd)
    root = volumes.guest_rootfs_disk(config.id) if config.block_rootfs else guest_rootfs(config.id)
    spec["root"] = {"path": root, "readonly": config.read_only_rootfs}
    if config.hostname is not None:
        spec["hostname"] = config.hostname
    mounts = list(spec.get("mounts") or [])
    for index, mount in enumerate(config.mounts):
        mounts.append(
            {
                "destination": mount.destination,
                "type": "bind",
                "source": guest_mount_source(config.id, index),
                "options": guest_bind_options(mount),
            }
        )
    for index, volume in enumerate(config.block_volumes):
        mounts.append(
            {
                "destination": volume.destination,
                "type": "bind",
                "source": volumes.guest_path(config.id, index),
                "options": ["rbind", "ro" if volume.read_only else "rw"],
            }
        )
    spec["mounts"] = mounts
    if config.annotations:
        spec["annotations"] = {**(spec.get("annotations") or {}), **config.annotations}
    if config.join_namespaces and guest_pid is not None:
        _join_namespaces(spec, config, guest_pid)
    if not config.limits.empty:
        linux = dict(spec.get("linux") or {})
        resources = dict(linux.get("resources") or {})
        config.limits.apply_to(resources)
        linux["resources"] = resources
        spec["linux"] = linux
    return spec


def guest_bind_options(mount: Mount) -> list[str]:
    """crun's options for a container's bind of a shared host path.

    The host made the share (recursive or not, see shareddir.py); in the guest
    it is a single mount of the shared filesystem, with no submounts, so the
    recursive forms of flags (``rnosuid``) are the plain ones there: given to
    crun as those, which it applies reliably (its ``rnoatime`` and kin fail).
    """
    options = ["rbind", "ro" if mount.read_only else "rw"]
    for option in mount.options:
        plain = option[1:] if option in RECURSIVE_MOUNT_FLAGS else option
        if plain not in ("bind", "rbind", "defaults") and plain not in options:
            options.append(plain)
    return options


def _join_namespaces(
    spec: dict[str, Any], config: ContainerConfig, guest_pid: Callable[[str], int]
) -> None:
    linux = dict(spec.get("linux") or {})
    namespaces = [dict(ns) for ns in linux.get("namespaces") or []]
    for kind, other in config.join_namespaces.items():
        path = f"/proc/{guest_pid(other)}/ns/{_PROC_NS_NAMES.get(kind, kind)}"
        entry = next((ns for ns in namespaces if ns.get("type") == kind), None)
        if entry is None:
            namespaces.append({"type": kind, "path": path})
        else:
            entry["path"] = path
    linux["namespaces"] = namespaces
    spec["linux"] = linux
    if "uts" in config.join_namespaces:
        # The hostname belongs to the joined namespace; setting it again is refused.
        spec.pop("hostname", None)


def oci_process(cmd: Cmd) -> OciProcess:
    """The process object of ``cmd``, as exec_guest takes it."""
    return {
        "terminal": cmd.terminal,
        "user": _oci_user(cmd.user),
        "args": list(cmd.args),
        "env": list(cmd.env),
        "cwd": cmd.cwd,
    }


def _oci_user(user: User) -> OciUser:
    oci: OciUser = {"uid": user.uid, "gid": user.gid}
    if user.additional_gids:
        oci["additionalGids"] = list(user.additional_gids)
    return oci


def container_process(cmd: Cmd) -> dict[str, object]:
    """The process object of a container whose process is ``cmd``."""
    return _process(cmd.runtime_settings, cmd)


def _process(settings: Mapping[str, Any] | None, cmd: Cmd) -> dict[str, object]:
    """``cmd`` as a container's process object, with ``settings`` for the runtime."""
    base = default_runtime_settings() if settings is None else copy.deepcopy(dict(settings))
    return {**base, **oci_process(cmd)}


def process_spec(config: ContainerConfig, cmd: Cmd) -> dict[str, object]:
    """An exec's process: ``cmd`` with its container's runtime settings."""
    return _process(config.cmd.runtime_settings, cmd)
