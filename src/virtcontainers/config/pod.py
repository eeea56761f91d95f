"""A pod: :class:`PodConfig`, its containers, VM and backends, and the guest
image it boots (:class:`ImagePaths`)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypedDict

from virtcontainers.cgroupconfig import CgroupConfig, CgroupDict
from virtcontainers.config.container import ContainerConfig, ContainerConfigDict
from virtcontainers.config.resources import Resources, ResourcesDict
from virtcontainers.errors import ConfigError
from virtcontainers.ids import validate_hostname, validate_id
from virtcontainers.plainconfig import Plain, check_str_tuple, check_type, reject_unknown

MAX_SOCKET_PATH = 107
"""The longest unix socket path AF_UNIX takes (108 bytes with its NUL)."""
# Empty PCIe slots of a pod with a network namespace: interfaces it can take
# over while it runs, beyond those it found at boot.
NET_HOTPLUG_SLOTS = 4


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
