"""Typed, validated configuration values: the library's inputs.

Every config is a frozen dataclass that validates itself on construction, so
a bad config raises :class:`~virtcontainers.errors.ConfigError` before
anything is started.  ``to_dict``/``from_dict`` give the JSON form kept in the
store and sent to the pod daemon (each config's ``...Dict``: one document,
nested); ``from_dict`` rejects unknown fields.

What depends on the host (a rootfs or mount source that exists, memory the
host has) is checked by ``check_host()``, once, when a pod or container is
created: a stored config stays loadable when the host changes later.

A module per config, each importing only those before it: ``cmd`` (``Cmd``,
``User``), ``container`` (``ContainerConfig``), ``resources`` (``Resources``)
and ``pod`` (``PodConfig``, ``ImagePaths``).  Import them from here, the
public surface, which also gives the values a container config holds
(``Mount``, ``BlockVolume``, ``Limits``, ``CgroupConfig``).

Part of the vocabulary: may import only the vocabulary at the root.
"""

from __future__ import annotations

from virtcontainers.cgroupconfig import CgroupConfig, CgroupDict
from virtcontainers.config.cmd import (
    DEFAULT_PATH_ENV,
    MAX_CMD_BYTES,
    MAX_ID,
    PROCESS_FIELDS,
    Cmd,
    CmdDict,
    User,
    UserDict,
)
from virtcontainers.config.container import (
    JOINABLE_NAMESPACES,
    ContainerConfig,
    ContainerConfigDict,
)
from virtcontainers.config.pod import (
    AGENTS,
    BOOT_MODES,
    HYPERVISORS,
    MAX_SOCKET_PATH,
    NET_HOTPLUG_SLOTS,
    ImagePaths,
    ImagePathsDict,
    PodConfig,
    PodConfigDict,
)
from virtcontainers.config.resources import (
    DEFAULT_LAYERS_MIB,
    DEFAULT_LOG_MIB,
    MAX_HOTPLUG_SLOTS,
    MAX_VCPUS,
    MIN_MEMORY_MIB,
    Resources,
    ResourcesDict,
    host_memory_mib,
)
from virtcontainers.errors import ConfigError
from virtcontainers.limits import Limits, LimitsDict
from virtcontainers.volumes import (
    MAX_VOLUMES,
    ROOTFS_FILESYSTEMS,
    BlockVolume,
    BlockVolumeDict,
    Mount,
    MountDict,
)

__all__ = [
    "AGENTS",
    "BOOT_MODES",
    "DEFAULT_LAYERS_MIB",
    "DEFAULT_LOG_MIB",
    "DEFAULT_PATH_ENV",
    "HYPERVISORS",
    "JOINABLE_NAMESPACES",
    "MAX_CMD_BYTES",
    "MAX_HOTPLUG_SLOTS",
    "MAX_ID",
    "MAX_SOCKET_PATH",
    "MAX_VCPUS",
    "MAX_VOLUMES",
    "MIN_MEMORY_MIB",
    "NET_HOTPLUG_SLOTS",
    "PROCESS_FIELDS",
    "ROOTFS_FILESYSTEMS",
    "BlockVolume",
    "BlockVolumeDict",
    "CgroupConfig",
    "CgroupDict",
    "Cmd",
    "CmdDict",
    "ConfigError",
    "ContainerConfig",
    "ContainerConfigDict",
    "ImagePaths",
    "ImagePathsDict",
    "Limits",
    "LimitsDict",
    "Mount",
    "MountDict",
    "PodConfig",
    "PodConfigDict",
    "Resources",
    "ResourcesDict",
    "User",
    "UserDict",
    "host_memory_mib",
]
