"""``vc-runtime spec`` and ``vc-runtime features`` documents."""

from __future__ import annotations

import os
from importlib import metadata
from typing import Any

from virtcontainers import spec
from virtcontainers.config import DEFAULT_PATH_ENV, Cmd
from virtcontainers.oci.hooks import STAGES
from virtcontainers.oci.translate import NAMESPACE_TYPES

OCI_VERSION = spec.OCI_VERSION
OCI_VERSION_MIN = "1.0.0"

#: Every capability of the guest's kernel (Linux 6.1), in number order.
ALL_CAPABILITIES = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
]

MOUNT_OPTIONS = sorted(
    {
        "async", "atime", "bind", "defaults", "dev", "diratime", "dirsync", "exec",
        "lazytime", "mand", "noatime", "nodev", "nodiratime", "noexec", "nolazytime",
        "nomand", "norelatime", "nostrictatime", "nosuid", "private", "rbind", "rdev",
        "relatime", "rexec", "rnodev", "rnoexec", "rnosuid", "ro", "rprivate", "rro", "rrw",
        "rshared", "rslave", "rsuid", "runbindable", "rw", "shared", "slave", "strictatime",
        "suid", "sync", "tmpcopyup", "unbindable",
    }
)  # fmt: skip
"""Options the guest's crun 1.8 applies (tried one by one on a tmpfs in the guest;
it fails on ``iversion``, ``nosymfollow``, ``remount``, ``silent`` and the recursive
atime forms).  ``shared`` and ``rshared`` apply to the guest's own filesystems;
a bind of a host path refuses them (translate.py)."""


def default_spec(rootless: bool = False) -> dict[str, Any]:
    """A starting config.json, as ``runc spec`` writes one: the library's default
    container spec (:func:`virtcontainers.spec.default_spec`) with a shell as its
    process, with the default settings, and ``rootfs`` as its root.

    Unlike runc's there is no network namespace: the VM is the network boundary
    (a new network namespace would leave the container with loopback only).
    ``rootless`` adds a user namespace mapping the caller's uid/gid to root.
    """
    document = spec.default_spec("vc")
    shell = Cmd(("sh",), env=(DEFAULT_PATH_ENV, "TERM=xterm"), terminal=True)
    document["process"] = spec.container_process(shell)
    document["root"] = {"path": "rootfs", "readonly": True}
    linux = document["linux"]
    if rootless:
        linux["namespaces"].append({"type": "user"})
        linux["uidMappings"] = [{"containerID": 0, "hostID": os.geteuid(), "size": 1}]
        linux["gidMappings"] = [{"containerID": 0, "hostID": os.getegid(), "size": 1}]
    else:
        linux["resources"] = {"devices": [{"allow": False, "access": "rwm"}]}
        for mount in document["mounts"]:
            if mount["type"] == "devpts":
                mount["options"].append("gid=5")
    return document


def _version() -> str:
    try:
        return metadata.version("virtcontainers")
    except metadata.PackageNotFoundError:  # pragma: no cover - running from a source tree
        return "unknown"


def features() -> dict[str, Any]:
    """The OCI features document (runtime-spec features.md) of virtcontainers.

    It describes what the guest's crun implements, less what the VM boundary
    takes away: no AppArmor, SELinux or Intel RDT in the guest, cgroup v2 only,
    no seccomp notify (a listener on the host cannot reach the guest), no
    id-mapped host mounts.
    """
    return {
        "ociVersionMin": OCI_VERSION_MIN,
        "ociVersionMax": OCI_VERSION,
        "hooks": list(STAGES),
        "mountOptions": MOUNT_OPTIONS,
        "linux": {
            "namespaces": sorted(NAMESPACE_TYPES),
            "capabilities": list(ALL_CAPABILITIES),
            "cgroup": {"v1": False, "v2": True, "systemd": False, "systemdUser": False},
            "seccomp": {
                "enabled": True,
                "actions": [
                    "SCMP_ACT_ALLOW",
                    "SCMP_ACT_ERRNO",
                    "SCMP_ACT_KILL",
                    "SCMP_ACT_KILL_PROCESS",
                    "SCMP_ACT_KILL_THREAD",
                    "SCMP_ACT_LOG",
                    "SCMP_ACT_TRACE",
                    "SCMP_ACT_TRAP",
                ],
                "operators": [
                    "SCMP_CMP_EQ",
                    "SCMP_CMP_GE",
                    "SCMP_CMP_GT",
                    "SCMP_CMP_LE",
                    "SCMP_CMP_LT",
                    "SCMP_CMP_MASKED_EQ",
                    "SCMP_CMP_NE",
                ],
                "archs": ["SCMP_ARCH_X86", "SCMP_ARCH_X86_64", "SCMP_ARCH_X32"],
            },
            "apparmor": {"enabled": False},
            "selinux": {"enabled": False},
            "intelRdt": {"enabled": False},
            "mountExtensions": {"idmap": {"enabled": False}},
        },
        "annotations": {
            "org.virtcontainers.version": _version(),
            "org.virtcontainers.isolation": "vm",
            "org.virtcontainers.hypervisor": "qemu",
            "org.virtcontainers.guest.runtime": "crun",
            "org.virtcontainers.vm.vcpus.annotation": (
                "io.katacontainers.config.hypervisor.default_vcpus"
            ),
            "org.virtcontainers.vm.memory.annotation": (
                "io.katacontainers.config.hypervisor.default_memory"
            ),
        },
    }
