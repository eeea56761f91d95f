"""Translation of an OCI runtime spec into what virtcontainers gives the guest's crun.

The guest runs crun, so most of the spec passes through untouched.  What is
changed is what a VM boundary changes: host paths (rootfs, bind-mount sources,
cgroup paths) are shared or replaced, binds of host device nodes become nodes
made in the guest, namespace paths are resolved to containers of the pod
(namespaces.py), cgroup v1 settings are translated for the guest's cgroup v2
(resources.py).  A setting is applied, or refused with a
:class:`~virtcontainers.errors.RuntimeSpecError` naming it; only what means
nothing in a VM is dropped, with a warning.  docs/oci.md has the table.
"""

from __future__ import annotations

import copy
import os
import posixpath
import re
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from virtcontainers.config import MAX_ID, PROCESS_FIELDS, Cmd, User
from virtcontainers.errors import ConfigError
from virtcontainers.ids import HOSTNAME_PATTERN
from virtcontainers.oci._json import (
    Loc,
    boolean,
    integer,
    obj,
    obj_list,
    opt_obj,
    str_list,
    string,
    type_name,
)
from virtcontainers.oci.namespaces import NamespacePath, parse_path
from virtcontainers.oci.resources import translate_resources
from virtcontainers.volumes import MOUNT_OPTIONS, Mount

#: Filesystems the guest kernel makes itself: they pass through unchanged.
KERNEL_FILESYSTEMS = frozenset(
    {"proc", "sysfs", "tmpfs", "ramfs", "devpts", "mqueue", "cgroup", "cgroup2"}
)
#: Device nodes every container gets from crun anyway, identical in the guest.
STANDARD_DEVICES = frozenset(
    {"/dev/null", "/dev/zero", "/dev/full", "/dev/random", "/dev/urandom", "/dev/tty"}
)
NAMESPACE_TYPES = frozenset({"pid", "network", "mount", "ipc", "uts", "user", "cgroup", "time"})
_READ_ONLY_OPTIONS = {"ro": True, "rro": True, "rw": False, "rrw": False}
DEVICE_TYPES = ("c", "b", "u", "p")
#: Host kernel views: a bind of these is served from the guest's own.
_GUEST_KERNEL_TREES = ("/proc", "/sys")
_OCI_VERSION = re.compile(r"^(\d+)\.(\d+)\.(\d+)(?:[-+].*)?$")


@dataclass
class Translation:
    """A spec as the guest will get it, and the parts that become config values."""

    guest: dict[str, Any]
    """Less its root (``rootfs``) and its process (``cmd``)."""
    cmd: Cmd | None
    mounts: list[Mount]
    rootfs: Path
    read_only_rootfs: bool
    hostname: str | None
    annotations: dict[str, str]
    warnings: list[str] = field(default_factory=list)
    netns: str | None = None
    """The network namespace the spec names by path: the pod's network."""
    namespace_paths: list[NamespacePath] = field(default_factory=list)
    """Namespace paths, to be resolved to containers of the runtime (namespaces.py)."""
    namespace_kinds: frozenset[str] = frozenset()
    """The types of ``linux.namespaces``: one left out is the runtime's own, the node's."""
    cpus_needed: int = 0
    """vCPUs that ``linux.resources.cpu.cpus`` needs the VM to have (0: no cpuset)."""


def _config_error(loc: Loc, error: ConfigError) -> Exception:
    return loc.error(error.reason)


# --- process -----------------------------------------------------------------


def _drop_meaningless(
    section: dict[str, Any], loc: Loc, warnings: list[str], show_value: bool = False, **why: str
) -> None:
    """Remove settings that mean nothing in a VM, with a warning for each one set."""
    for key, reason in why.items():
        value = section.pop(key, None)
        if value:
            shown = f"{value!r} " if show_value else ""
            warnings.append(loc.key(key).note(f"{shown}dropped: {reason}"))


def _user(user: Mapping[str, Any], loc: Loc, warnings: list[str]) -> User:
    uid = integer(user.get("uid", 0), loc.key("uid"), minimum=0)
    gid = integer(user.get("gid", 0), loc.key("gid"), minimum=0)
    extra_raw = user.get("additionalGids")
    extra: list[int] = []
    if extra_raw is not None:
        if not isinstance(extra_raw, list):
            raise loc.key("additionalGids").error(
                f"must be a list of integers, got {type_name(extra_raw)}"
            )
        where = loc.key("additionalGids")
        extra = [integer(g, where.index(i), minimum=0) for i, g in enumerate(extra_raw)]
    for name, value in (("uid", uid), ("gid", gid), *(("additionalGids", g) for g in extra)):
        if value > MAX_ID:
            raise loc.key(name).error(f"{value} is not a valid id (at most {MAX_ID})")
    username = user.get("username")
    if username:
        warnings.append(
            loc.key("username").note(
                f"{username!r} dropped: user names are not resolved (only numeric uid/gid)"
            )
        )
    if user.get("umask") is not None:
        warnings.append(
            loc.key("umask").note("dropped: the guest process gets the default umask (0022)")
        )
    return User(uid, gid, tuple(extra))


def translate_process(process: Mapping[str, Any], loc: Loc, warnings: list[str]) -> Cmd:
    """The Cmd of an OCI process object: what is not one of its fields becomes
    its runtime settings, less what means nothing in a VM."""
    args = str_list(process.get("args"), loc.key("args"), non_empty=True)
    env: list[str] = []
    if process.get("env") is not None:
        env = str_list(process["env"], loc.key("env"))
        for i, entry in enumerate(env):
            if "=" not in entry:
                raise loc.key("env").index(i).error(f"must be NAME=VALUE, got {entry!r}")
    if "cwd" not in process:
        raise loc.key("cwd").error("is required (the absolute working directory)")
    cwd = string(process["cwd"], loc.key("cwd"))
    if not cwd.startswith("/"):
        raise loc.key("cwd").error(f"must be an absolute path, got {cwd!r}")
    terminal = boolean(process.get("terminal", False), loc.key("terminal"))
    user = _user(opt_obj(process, "user", loc), loc.key("user"), warnings)
    settings = {
        key: copy.deepcopy(value) for key, value in process.items() if key not in PROCESS_FIELDS
    }
    _drop_meaningless(
        settings,
        loc,
        warnings,
        show_value=True,
        apparmorProfile="the guest kernel has no AppArmor",
        selinuxLabel="the guest kernel has no SELinux",
        commandLine="it is for Windows",
    )
    try:
        return Cmd(
            args=tuple(args),
            env=tuple(env),
            cwd=cwd,
            user=user,
            terminal=terminal,
            runtime_settings=settings,
        )
    except ConfigError as error:
        raise _config_error(loc, error) from None


# --- mounts ------------------------------------------------------------------


def _is_bind(mount: Mapping[str, Any], options: list[str]) -> bool:
    return mount.get("type") == "bind" or "bind" in options or "rbind" in options


def _under(path: str, tree: str) -> bool:
    return path == tree or path.startswith(tree + "/")


def _bind_options(
    options: list[str], loc: Loc, source: str, destination: str
) -> tuple[bool, list[str]]:
    """Whether a bind is read-only (the last ro/rw wins), and the options crun applies."""
    read_only = False
    kept: list[str] = []
    for i, option in enumerate(options):
        if option in _READ_ONLY_OPTIONS:
            read_only = _READ_ONLY_OPTIONS[option]
        elif option in ("shared", "rshared"):
            raise (
                loc.key("options")
                .index(i)
                .error(
                    f"{option!r}: mounts made in the container cannot propagate back to the host "
                    f"across the VM boundary (the bind of {source} on {destination}; "
                    "Kubernetes' mountPropagation: Bidirectional)"
                )
            )
        elif option not in MOUNT_OPTIONS:
            raise (
                loc.key("options")
                .index(i)
                .error(
                    f"{option!r} is not an option vc-runtime can apply to a bind mount (known: "
                    f"{', '.join(sorted({*MOUNT_OPTIONS, *_READ_ONLY_OPTIONS}))})"
                )
            )
        else:
            kept.append(option)
    return read_only, kept


def _bind_mount(
    mount: Mapping[str, Any],
    options: list[str],
    loc: Loc,
    bundle_dir: Path,
    warnings: list[str],
) -> tuple[dict[str, Any] | None, Mount | dict[str, Any] | None]:
    """(guest-side mount to keep, host path to share or host device to make); either may be None."""
    destination = string(mount.get("destination"), loc.key("destination"))
    if not destination.startswith("/"):
        destination = "/" + destination  # runtime-spec 1.1: relative to the container's /
    if "source" not in mount:
        raise loc.key("source").error("is required for a bind mount")
    raw = string(mount["source"], loc.key("source"))
    if not raw:
        raise loc.key("source").error("must not be empty for a bind mount")
    source = posixpath.normpath(raw if raw.startswith("/") else str(bundle_dir / raw))
    if source in STANDARD_DEVICES:
        return dict(mount), None  # the guest has the same node: crun binds the guest's
    for tree in _GUEST_KERNEL_TREES:
        if _under(source, tree):
            warnings.append(
                loc.note(f"bind of {source} is served from the guest's {tree}, not the host's")
            )
            return dict(mount), None
    try:
        info = os.stat(source)
    except FileNotFoundError:
        raise loc.key("source").error(f"{source} does not exist on the host") from None
    except OSError as error:
        raise loc.key("source").error(f"{source}: {error.strerror}") from None
    if stat.S_ISCHR(info.st_mode) or stat.S_ISBLK(info.st_mode):
        return None, _device_of(info, source, destination, loc, warnings)
    for key in ("uidMappings", "gidMappings"):
        if mount.get(key):
            raise loc.key(key).error("id-mapped bind mounts are not supported")
    read_only, kept = _bind_options(options, loc, source, destination)
    try:
        return None, Mount(source, destination, read_only=read_only, options=tuple(kept))
    except ConfigError as error:
        raise _config_error(loc, error) from None


def _device_of(
    info: os.stat_result, source: str, destination: str, loc: Loc, warnings: list[str]
) -> dict[str, Any]:
    """A bind of a host device node, as the node crun makes in the guest (linux.devices)."""
    kind = "c" if stat.S_ISCHR(info.st_mode) else "b"
    major, minor = os.major(info.st_rdev), os.minor(info.st_rdev)
    warnings.append(
        loc.note(
            f"bind of host device {source} on {destination} made as a device node "
            f"({kind} {major}:{minor}) in the guest: it reaches the guest's device of "
            "that number, if the VM has one"
        )
    )
    return {
        "path": destination,
        "type": kind,
        "major": major,
        "minor": minor,
        "fileMode": stat.S_IMODE(info.st_mode),
        "uid": info.st_uid,
        "gid": info.st_gid,
    }


def translate_mounts(
    mounts: object, loc: Loc, bundle_dir: Path, warnings: list[str]
) -> tuple[list[dict[str, Any]], list[Mount], list[dict[str, Any]]]:
    """Split mounts into those the guest makes itself, host paths to share and
    host device nodes to make in the guest."""
    guest: list[dict[str, Any]] = []
    host: list[Mount] = []
    devices: list[dict[str, Any]] = []
    for i, mount in enumerate(obj_list(mounts, loc)):
        where = loc.index(i)
        _warn_if_relative(
            string(mount.get("destination"), where.key("destination")), where, warnings
        )
        options = str_list(mount.get("options") or [], where.key("options"))
        if _is_bind(mount, options):
            kept, shared = _bind_mount(mount, options, where, bundle_dir, warnings)
            if kept is not None:
                guest.append(kept)
            if isinstance(shared, Mount):
                host.append(shared)
            elif shared is not None:
                devices.append(shared)
            continue
        if "type" not in mount:
            raise where.key("type").error("is required unless the mount is a bind mount")
        fstype = string(mount["type"], where.key("type"))
        if fstype not in KERNEL_FILESYSTEMS:
            raise where.key("type").error(
                f"{fstype!r} cannot be mounted in a VM: only bind mounts of host paths and "
                f"kernel filesystems ({', '.join(sorted(KERNEL_FILESYSTEMS))}) are supported"
            )
        guest.append(copy.deepcopy(dict(mount)))
    return guest, host, devices


def _warn_if_relative(destination: str, loc: Loc, warnings: list[str]) -> None:
    """runc takes a relative destination as relative to the container's / and warns
    that support will go; so does this runtime, with the same warning."""
    if not destination.startswith("/"):
        warnings.append(
            loc.key("destination").note(
                f"{destination!r} is not absolute: taken as /{destination}; support for "
                "relative mount destinations will be removed (runc warns the same)"
            )
        )


# --- linux -------------------------------------------------------------------


GUEST_POD_NETNS = "/proc/1/ns/net"
"""The guest's network namespace, which holds the pod's interfaces (see network.md)."""


def _namespaces(value: object, loc: Loc, paths: list[NamespacePath]) -> list[dict[str, Any]]:
    """The guest's namespace entries; their paths go to ``paths``, to be resolved."""
    kept: list[dict[str, Any]] = []
    for i, ns in enumerate(obj_list(value, loc)):
        where = loc.index(i)
        kind = string(ns.get("type"), where.key("type"))
        if kind not in NAMESPACE_TYPES:
            raise where.key("type").error(
                f"unknown namespace {kind!r} (known: {', '.join(sorted(NAMESPACE_TYPES))})"
            )
        entry = dict(ns)
        path = entry.pop("path", None)
        if path:
            paths.append(parse_path(kind, string(path, where.key("path")), where.key("path")))
        if kind == "network" and path:
            # The caller's network namespace: the pod's VM is put on it, and the
            # container joins the guest's, which holds it.  Joined by path rather
            # than left out, so that crun accepts the spec's net.* sysctls.
            entry["path"] = GUEST_POD_NETNS
        kept.append(entry)
    return kept


def _devices(value: object, loc: Loc) -> list[dict[str, Any]]:
    """``linux.devices``, checked: crun in the guest makes each node as it is given."""
    kept: list[dict[str, Any]] = []
    for i, device in enumerate(obj_list(value, loc)):
        where = loc.index(i)
        path = string(device.get("path"), where.key("path"))
        if not path.startswith("/"):
            raise where.key("path").error(f"must be an absolute path, got {path!r}")
        kind = string(device.get("type"), where.key("type"))
        if kind not in DEVICE_TYPES:
            raise where.key("type").error(
                f"{kind!r} is not a device type (c, u: character; b: block; p: fifo)"
            )
        for key in ("major", "minor"):
            if device.get(key) is None:
                if kind != "p":
                    raise where.key(key).error(f"is required for a device of type {kind!r}")
                continue
            integer(device[key], where.key(key), minimum=0)
        if device.get("fileMode") is not None:
            mode = integer(device["fileMode"], where.key("fileMode"), minimum=0)
            if mode > 0o7777:
                raise where.key("fileMode").error(
                    f"{mode:#o} is not a file mode (permission bits, at most 0o7777)"
                )
        for key in ("uid", "gid"):
            if device.get(key) is not None:
                value_ = integer(device[key], where.key(key), minimum=0)
                if value_ > MAX_ID:
                    raise where.key(key).error(f"{value_} is not a valid id (at most {MAX_ID})")
        kept.append(dict(device))
    return kept


@dataclass
class LinuxSection:
    """``linux`` as the guest gets it, and what the runtime must still act on."""

    guest: dict[str, Any]
    namespace_paths: list[NamespacePath] = field(default_factory=list)
    namespace_kinds: frozenset[str] = frozenset()
    cpus_needed: int = 0


def translate_linux(
    linux: Mapping[str, Any], loc: Loc, warnings: list[str], host_devices: list[dict[str, Any]]
) -> LinuxSection:
    """``host_devices``: device nodes that binds of host devices become."""
    out = copy.deepcopy(dict(linux))
    section = LinuxSection(out)
    if out.get("namespaces") is not None:
        out["namespaces"] = _namespaces(
            out["namespaces"], loc.key("namespaces"), section.namespace_paths
        )
        section.namespace_kinds = frozenset(ns["type"] for ns in out["namespaces"])
    listed = out.get("devices")
    devices = _devices(listed, loc.key("devices")) if listed is not None else []
    paths = {device["path"] for device in devices}
    devices += [device for device in host_devices if device["path"] not in paths]
    if listed is not None or devices:
        out["devices"] = devices
    cgroups_path = out.pop("cgroupsPath", None)
    if cgroups_path:
        warnings.append(
            loc.key("cgroupsPath").note(
                f"{cgroups_path!r} replaced by /vc/<container id> in the guest's cgroup tree"
            )
        )
    _drop_meaningless(
        out,
        loc,
        warnings,
        mountLabel="the guest kernel has no SELinux",
        intelRdt="the VM has no Intel RDT",
        netDevices="host network devices cannot be moved into the VM",
    )
    for key in ("sysctl", "seccomp"):
        if out.get(key) is not None:
            obj(out[key], loc.key(key))
    if out.get("resources") is not None:
        out["resources"], section.cpus_needed = translate_resources(
            out["resources"], loc.key("resources"), warnings
        )
    seccomp = out.get("seccomp") or {}
    if seccomp.get("listenerPath"):
        raise (
            loc.key("seccomp")
            .key("listenerPath")
            .error(
                f"{seccomp['listenerPath']}: a seccomp notify listener on the host cannot "
                "receive notifications from a container in a VM"
            )
        )
    return section


# --- the whole spec ----------------------------------------------------------


def _oci_version(spec: Mapping[str, Any], loc: Loc) -> None:
    where = loc.key("ociVersion")
    if "ociVersion" not in spec:
        raise where.error("is required")
    version = string(spec["ociVersion"], where)
    match = _OCI_VERSION.match(version)
    if not match:
        raise where.error(f"{version!r} is not a SemVer version")
    if match.group(1) != "1":
        raise where.error(f"{version!r} is not supported (only 1.x)")


def _root(spec: Mapping[str, Any], loc: Loc, bundle_dir: Path) -> tuple[Path, bool]:
    if "root" not in spec:
        raise loc.key("root").error("is required (root.path names the container's rootfs)")
    root = obj(spec["root"], loc.key("root"))
    where = loc.key("root").key("path")
    if "path" not in root:
        raise where.error("is required")
    raw = string(root["path"], where)
    if not raw:
        raise where.error("must not be empty")
    read_only = boolean(root.get("readonly", False), loc.key("root").key("readonly"))
    # As runc: a relative path starts from the bundle's real directory (runc's
    # working directory), and the result must be its own real path.
    rootfs = Path(os.path.normpath(bundle_dir.resolve() / raw))  # an absolute raw replaces it
    if not rootfs.exists():
        raise where.error(f"{rootfs} does not exist")
    if not rootfs.is_dir():
        raise where.error(f"{rootfs} is not a directory")
    real = Path(os.path.realpath(rootfs))
    if real != rootfs:
        raise where.error(
            f"{rootfs} in bundle {bundle_dir} is a symlink or passes through one (to "
            f"{real}); as runc, the rootfs is refused unless named by its real path"
        )
    return rootfs, read_only


def _annotations(spec: Mapping[str, Any], loc: Loc) -> dict[str, str]:
    where = loc.key("annotations")
    annotations = dict(opt_obj(spec, "annotations", loc))
    for key, value in annotations.items():
        if not isinstance(value, str):
            raise where.key(key).error(f"must be a string, got {type_name(value)}")
    return annotations


def _hostname(spec: Mapping[str, Any], loc: Loc) -> str | None:
    if spec.get("hostname") is None:
        return None
    hostname = string(spec["hostname"], loc.key("hostname"))
    if not hostname:
        return None
    if not HOSTNAME_PATTERN.match(hostname):
        raise loc.key("hostname").error(
            f"{hostname!r} is not a valid hostname (1-63 letters, digits, '.' or '-')"
        )
    return hostname


def translate_spec(spec: Mapping[str, Any], loc: Loc, bundle_dir: Path) -> Translation:
    """Validate ``spec`` and translate it; ``bundle_dir`` must be absolute."""
    from virtcontainers.oci.hooks import validate_hooks

    warnings: list[str] = []
    _oci_version(spec, loc)
    rootfs, read_only = _root(spec, loc, bundle_dir)
    annotations = _annotations(spec, loc)
    hostname = _hostname(spec, loc)
    validate_hooks(spec, loc)
    guest = copy.deepcopy(dict(spec))
    for key in ("root", "hooks", "process"):
        guest.pop(key, None)
    cmd = None
    if spec.get("process") is not None:
        process = obj(spec["process"], loc.key("process"))
        cmd = translate_process(process, loc.key("process"), warnings)
    mounts: list[Mount] = []
    devices: list[dict[str, Any]] = []
    if spec.get("mounts") is not None:
        guest["mounts"], mounts, devices = translate_mounts(
            spec["mounts"], loc.key("mounts"), bundle_dir, warnings
        )
    linux = LinuxSection({})
    if spec.get("linux") is not None or devices:
        raw = spec.get("linux")
        raw_linux = obj(raw if raw is not None else {}, loc.key("linux"))
        linux = translate_linux(raw_linux, loc.key("linux"), warnings, devices)
        guest["linux"] = linux.guest
    for key in ("windows", "solaris", "vm", "zos"):
        if key in guest:
            guest.pop(key)
            warnings.append(loc.key(key).note("dropped: the guest is Linux run by crun"))
    return Translation(
        guest=guest,
        cmd=cmd,
        mounts=mounts,
        rootfs=rootfs,
        read_only_rootfs=read_only,
        hostname=hostname,
        annotations=annotations,
        warnings=warnings,
        netns=_network_path(spec, loc),
        namespace_paths=linux.namespace_paths,
        namespace_kinds=linux.namespace_kinds,
        cpus_needed=linux.cpus_needed,
    )


def _network_path(spec: Mapping[str, Any], loc: Loc) -> str | None:
    """The path of the spec's network namespace entry, if it names one."""
    linux = spec.get("linux")
    if not isinstance(linux, Mapping):
        return None
    for i, ns in enumerate(linux.get("namespaces") or []):
        if isinstance(ns, Mapping) and ns.get("type") == "network" and ns.get("path"):
            where = loc.key("linux").key("namespaces").index(i).key("path")
            path = string(ns["path"], where)
            if not path.startswith("/"):
                raise where.error(f"{path!r} is not an absolute path")
            return path
    return None
