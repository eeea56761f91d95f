"""Translation of an OCI runtime spec into what virtcontainers gives the guest's crun.

The guest runs crun, so most of the spec passes through untouched.  What is
changed is what a VM boundary changes: host paths (rootfs, bind-mount sources,
namespace paths, device nodes, cgroup paths) mean nothing inside the guest.
Every change is reported as a warning; what cannot be honoured at all is a
:class:`~virtcontainers.errors.RuntimeSpecError`.  docs/oci.md has the table.
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

from virtcontainers.agent.messages import OciUser
from virtcontainers.config import HOSTNAME_PATTERN, Cmd, Mount
from virtcontainers.errors import ConfigError
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

#: Filesystems the guest kernel makes itself: they pass through unchanged.
KERNEL_FILESYSTEMS = frozenset(
    {"proc", "sysfs", "tmpfs", "ramfs", "devpts", "mqueue", "cgroup", "cgroup2"}
)
#: Device nodes every container gets from crun anyway, identical in the guest.
STANDARD_DEVICES = frozenset(
    {"/dev/null", "/dev/zero", "/dev/full", "/dev/random", "/dev/urandom", "/dev/tty"}
)
NAMESPACE_TYPES = frozenset({"pid", "network", "mount", "ipc", "uts", "user", "cgroup", "time"})
#: Bind-mount options that a virtcontainers Mount expresses (or that mean
#: nothing across the VM boundary): dropping them changes nothing.
_PLAIN_BIND_OPTIONS = frozenset({"bind", "rbind", "ro", "rw", "private", "rprivate"})
#: Host kernel views: a bind of these is served from the guest's own.
_GUEST_KERNEL_TREES = ("/proc", "/sys")
_MAX_ID = 2**32 - 2
_OCI_VERSION = re.compile(r"^(\d+)\.(\d+)\.(\d+)(?:[-+].*)?$")


@dataclass
class Translation:
    """A spec as the guest will get it, and the parts that become config values."""

    guest: dict[str, Any]
    cmd: Cmd | None
    mounts: list[Mount]
    rootfs: Path
    read_only_rootfs: bool
    hostname: str | None
    annotations: dict[str, str]
    warnings: list[str] = field(default_factory=list)
    netns: str | None = None
    """The network namespace the spec names by path: the pod's network."""


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


def _user(user: Mapping[str, Any], loc: Loc, warnings: list[str]) -> tuple[str, OciUser]:
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
        if value > _MAX_ID:
            raise loc.key(name).error(f"{value} is not a valid id (at most {_MAX_ID})")
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
    text = f"{uid}:{gid}" + (":" + ",".join(map(str, extra)) if extra else "")
    translated: OciUser = {"uid": uid, "gid": gid}
    if extra:
        translated["additionalGids"] = extra
    return text, translated


def translate_process(
    process: Mapping[str, Any], loc: Loc, warnings: list[str]
) -> tuple[Cmd, dict[str, Any]]:
    """The Cmd of an OCI process object, and the process as the guest gets it."""
    out = copy.deepcopy(dict(process))
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
    user_text, user = _user(opt_obj(process, "user", loc), loc.key("user"), warnings)
    _drop_meaningless(
        out,
        loc,
        warnings,
        show_value=True,
        apparmorProfile="the guest kernel has no AppArmor",
        selinuxLabel="the guest kernel has no SELinux",
        commandLine="it is for Windows",
    )
    out.update({"args": args, "env": env, "cwd": cwd, "terminal": terminal, "user": user})
    try:
        cmd = Cmd(args=tuple(args), env=tuple(env), cwd=cwd, user=user_text, terminal=terminal)
    except ConfigError as error:
        raise _config_error(loc, error) from None
    return cmd, out


# --- mounts ------------------------------------------------------------------


def _is_bind(mount: Mapping[str, Any], options: list[str]) -> bool:
    return mount.get("type") == "bind" or "bind" in options or "rbind" in options


def _under(path: str, tree: str) -> bool:
    return path == tree or path.startswith(tree + "/")


def _bind_mount(
    mount: Mapping[str, Any],
    options: list[str],
    loc: Loc,
    bundle_dir: Path,
    warnings: list[str],
) -> tuple[dict[str, Any] | None, Mount | None]:
    """(guest-side mount to keep, host mount to share); either may be None."""
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
        mode = os.stat(source).st_mode
    except FileNotFoundError:
        raise loc.key("source").error(f"{source} does not exist on the host") from None
    except OSError as error:
        raise loc.key("source").error(f"{source}: {error.strerror}") from None
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        warnings.append(
            loc.note(f"bind of host device {source} on {destination} dropped: not in the VM")
        )
        return None, None
    read_only = False
    for option in options:
        if option in ("ro", "rw"):
            read_only = option == "ro"
    dropped = [o for o in options if o not in _PLAIN_BIND_OPTIONS]
    if dropped:
        warnings.append(
            loc.note(
                f"options {', '.join(dropped)} of the bind of {source} on {destination} are not "
                "applied: host paths are shared with the guest as plain rbind mounts (ro or rw)"
            )
        )
    for key in ("uidMappings", "gidMappings"):
        if mount.get(key):
            warnings.append(loc.key(key).note("dropped: id-mapped host mounts are not supported"))
    try:
        return None, Mount(source=source, destination=destination, read_only=read_only)
    except ConfigError as error:
        raise _config_error(loc, error) from None


def translate_mounts(
    mounts: object, loc: Loc, bundle_dir: Path, warnings: list[str]
) -> tuple[list[dict[str, Any]], list[Mount]]:
    """Split mounts into those the guest makes itself and host paths to share."""
    guest: list[dict[str, Any]] = []
    host: list[Mount] = []
    for i, mount in enumerate(obj_list(mounts, loc)):
        where = loc.index(i)
        string(mount.get("destination"), where.key("destination"))
        options = str_list(mount.get("options") or [], where.key("options"))
        if _is_bind(mount, options):
            kept, shared = _bind_mount(mount, options, where, bundle_dir, warnings)
            if kept is not None:
                guest.append(kept)
            if shared is not None:
                host.append(shared)
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
    return guest, host


# --- linux -------------------------------------------------------------------


GUEST_POD_NETNS = "/proc/1/ns/net"
"""The guest's network namespace, which holds the pod's interfaces (see network.md)."""


def _namespaces(value: object, loc: Loc, warnings: list[str]) -> list[dict[str, Any]]:
    kept: list[dict[str, Any]] = []
    for i, ns in enumerate(obj_list(value, loc)):
        where = loc.index(i)
        kind = string(ns.get("type"), where.key("type"))
        if kind not in NAMESPACE_TYPES:
            raise where.key("type").error(
                f"unknown namespace {kind!r} (known: {', '.join(sorted(NAMESPACE_TYPES))})"
            )
        if kind == "network" and ns.get("path"):
            # The caller's network namespace: the pod's VM is put on it, and the
            # container joins the guest's, which holds it.  Joined by path rather
            # than left out, so that crun accepts the spec's net.* sysctls.
            kept.append({"type": "network", "path": GUEST_POD_NETNS})
            continue
        entry = dict(ns)
        if entry.get("path"):
            warnings.append(
                where.note(
                    f"path {entry['path']} of the {kind} namespace dropped: host namespaces "
                    "are not in the VM; the container gets a new one, or its CRI "
                    "sandbox's (ipc, uts, pid)"
                )
            )
        entry.pop("path", None)
        kept.append(entry)
    return kept


def _devices(value: object, loc: Loc, warnings: list[str]) -> list[dict[str, Any]]:
    kept: list[dict[str, Any]] = []
    for i, device in enumerate(obj_list(value, loc)):
        path = string(device.get("path"), loc.index(i).key("path"))
        if path in STANDARD_DEVICES:
            kept.append(dict(device))
        else:
            warnings.append(
                loc.index(i).note(f"device {path} dropped: host device nodes are not in the VM")
            )
    return kept


def translate_linux(linux: Mapping[str, Any], loc: Loc, warnings: list[str]) -> dict[str, Any]:
    out = copy.deepcopy(dict(linux))
    if out.get("namespaces") is not None:
        out["namespaces"] = _namespaces(out["namespaces"], loc.key("namespaces"), warnings)
    if out.get("devices") is not None:
        out["devices"] = _devices(out["devices"], loc.key("devices"), warnings)
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
    for key in ("resources", "sysctl", "seccomp"):
        if out.get(key) is not None:
            obj(out[key], loc.key(key))
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
    return out


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
    rootfs = Path(os.path.normpath(bundle_dir / raw))  # an absolute raw path replaces bundle_dir
    if not rootfs.exists():
        raise where.error(f"{rootfs} does not exist")
    if not rootfs.is_dir():
        raise where.error(f"{rootfs} is not a directory")
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
    guest.pop("root", None)
    guest.pop("hooks", None)
    cmd = None
    if spec.get("process") is not None:
        process = obj(spec["process"], loc.key("process"))
        cmd, guest["process"] = translate_process(process, loc.key("process"), warnings)
    else:
        guest.pop("process", None)
    mounts: list[Mount] = []
    if spec.get("mounts") is not None:
        guest["mounts"], mounts = translate_mounts(
            spec["mounts"], loc.key("mounts"), bundle_dir, warnings
        )
    if spec.get("linux") is not None:
        linux = obj(spec["linux"], loc.key("linux"))
        guest["linux"] = translate_linux(linux, loc.key("linux"), warnings)
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
