"""OCI bundles: load, validate and turn into virtcontainers configs."""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from virtcontainers.cgroupconfig import CgroupConfig
from virtcontainers.config import Cmd, ContainerConfig, PodConfig, Resources
from virtcontainers.errors import ConfigError, RuntimeSpecError
from virtcontainers.ids import validate_id
from virtcontainers.oci._json import Loc, obj, opt_obj
from virtcontainers.oci.annotations import DEFAULT_CPU_PERIOD, PodRole, pod_role, vm_size
from virtcontainers.oci.namespaces import (
    NamespacePath,
    Peer,
    refuse_node_namespaces,
    resolve,
)
from virtcontainers.oci.translate import translate_process, translate_spec
from virtcontainers.volumes import Mount

CONFIG_FILE = "config.json"
log = logging.getLogger("virtcontainers.oci")


def cgroups_path(container_id: str) -> str:
    """The container's cgroup in the guest (relative to the guest's cgroup root)."""
    return f"/vc/{container_id}"


@dataclass(frozen=True)
class Bundle:
    """A loaded, validated and translated OCI bundle.

    ``spec`` is config.json as read (hooks included: the runtime passes it to
    :func:`~virtcontainers.oci.run_hooks`).  ``guest_spec`` is what the guest's
    crun will get, less root, process (``cmd``) and cgroupsPath, which
    :meth:`container_config` and the library fill in.
    """

    path: Path
    spec: Mapping[str, Any]
    rootfs: Path
    role: PodRole
    sandbox_id: str | None
    warnings: tuple[str, ...]
    read_only_rootfs: bool = False
    hostname: str | None = None
    annotations: Mapping[str, str] = field(default_factory=dict)
    mounts: tuple[Mount, ...] = ()
    guest_spec: Mapping[str, Any] = field(default_factory=dict, repr=False)
    cmd: Cmd | None = None
    vcpus: int = 1
    memory_mib: int = 512
    netns: str | None = None
    """The network namespace the bundle names: the pod's, for a sandbox or a
    container with a pod of its own (a member container shares its pod's)."""
    namespace_paths: tuple[NamespacePath, ...] = ()
    """The namespace paths of the spec, which :meth:`resolve_namespaces` looks up."""
    joins: Mapping[str, str] | None = None
    """Namespace type -> container of the pod whose namespace this one joins in
    the guest; None until the namespace paths are resolved."""

    def process_cmd(self) -> Cmd:
        """The bundle's process as a Cmd; RuntimeSpecError when there is none."""
        if self.cmd is None:
            raise RuntimeSpecError(f"{CONFIG_FILE}: process: is required to run a container")
        return self.cmd

    def resolve_namespaces(self, find: Callable[[int], Peer | None]) -> Bundle:
        """The bundle with its namespace paths looked up, ready for :meth:`container_config`.

        ``find`` gives the container of the runtime that has a pid, if one
        has.  A container that names the namespaces of another pod's containers
        becomes a member of that pod (role CONTAINER, ``sandbox_id`` that pod).
        Raises RuntimeSpecError for a path that names no container of the
        runtime, or containers of another pod than the bundle's (see namespaces.py).
        """
        found = resolve(
            self.namespace_paths,
            find,
            self.sandbox_id if self.role is PodRole.CONTAINER else None,
            makes_pod=self.role is PodRole.SANDBOX,
        )
        if self.role is PodRole.STANDALONE and found.pod_id is not None:
            return dataclasses.replace(
                self, role=PodRole.CONTAINER, sandbox_id=found.pod_id, joins=found.joins
            )
        return dataclasses.replace(self, joins=found.joins)

    def container_config(self, container_id: str) -> ContainerConfig:
        """The container's config; its namespace paths must be resolved first,
        unless it has none (RuntimeSpecError otherwise)."""
        cmd = self.process_cmd()
        joins = self.joins
        if joins is None:
            unresolved = [ns for ns in self.namespace_paths if ns.kind != "network"]
            if unresolved:
                raise RuntimeSpecError(
                    f"{unresolved[0].where}: {unresolved[0].path}: namespace paths are "
                    "resolved by the runtime (Bundle.resolve_namespaces) before the "
                    "container is made"
                )
            joins = {}
        oci = copy.deepcopy(dict(self.guest_spec))
        linux = dict(oci.get("linux") or {})
        linux["cgroupsPath"] = cgroups_path(container_id)
        oci["linux"] = linux
        try:
            validate_id("container", container_id)
            return ContainerConfig(
                id=container_id,
                rootfs=self.rootfs,
                cmd=cmd,
                mounts=self.mounts,
                hostname=self.hostname,
                read_only_rootfs=self.read_only_rootfs,
                annotations=dict(self.annotations),
                oci=oci,
                join_namespaces=dict(joins),
            )
        except ConfigError as error:
            raise RuntimeSpecError(f"{self.path / CONFIG_FILE}: {error}") from None

    def pod_config(self, pod_id: str) -> PodConfig:
        """A pod with no containers, sized from the bundle (see annotations.py)."""
        owns_pod = self.role is not PodRole.CONTAINER
        try:
            return PodConfig(
                id=pod_id,
                resources=Resources(vcpus=self.vcpus, memory_mib=self.memory_mib),
                hostname=self.hostname if owns_pod else None,
                annotations=dict(self.annotations),
                netns=self.netns if owns_pod else None,
                cgroup=self.host_cgroup() if owns_pod else None,
            )
        except ConfigError as error:
            raise RuntimeSpecError(f"{self.path / CONFIG_FILE}: {error}") from None

    def host_cgroup(self) -> CgroupConfig | None:
        """The engine's cgroupsPath, for the pod's host processes, with the CPU
        time that the spec grants (linux.resources.cpu quota over period)."""
        linux = self.spec.get("linux")
        if not isinstance(linux, Mapping) or not linux.get("cgroupsPath"):
            return None
        path = linux["cgroupsPath"]
        if not isinstance(path, str):
            raise ConfigError("linux.cgroupsPath", f"{path!r} is not a string")
        resources = linux.get("resources")
        cpu = resources.get("cpu") if isinstance(resources, Mapping) else None
        if not isinstance(cpu, Mapping):
            cpu = {}
        quota, period = cpu.get("quota"), cpu.get("period") or DEFAULT_CPU_PERIOD
        if isinstance(quota, int) and quota > 0 and isinstance(period, int) and period > 0:
            return CgroupConfig(path, quota / period)
        return CgroupConfig(path)


def _read_spec(config: Path) -> Mapping[str, Any]:
    try:
        text = config.read_text()
    except FileNotFoundError:
        raise RuntimeSpecError(f"{CONFIG_FILE}: {config} does not exist") from None
    except (OSError, UnicodeDecodeError) as error:
        raise RuntimeSpecError(f"{CONFIG_FILE}: cannot read {config}: {error}") from None
    try:
        spec = json.loads(text)
    except json.JSONDecodeError as error:
        raise RuntimeSpecError(
            f"{CONFIG_FILE}: malformed JSON at line {error.lineno} column {error.colno}: "
            f"{error.msg}"
        ) from None
    except RecursionError:
        raise RuntimeSpecError(f"{CONFIG_FILE}: {config} is nested too deeply to read") from None
    return obj(spec, Loc(CONFIG_FILE))


def load_bundle(bundle_dir: Path) -> Bundle:
    """Read, validate and translate ``bundle_dir/config.json``.

    Raises RuntimeSpecError naming the file and JSON path of what is wrong.
    """
    bundle = Path(bundle_dir).absolute()
    if not bundle.is_dir():
        raise RuntimeSpecError(f"bundle {bundle} is not a directory")
    spec = _read_spec(bundle / CONFIG_FILE)
    loc = Loc(CONFIG_FILE)
    translation = translate_spec(spec, loc, bundle)
    role, sandbox_id = pod_role(translation.annotations, loc)
    if role is PodRole.SANDBOX:
        refuse_node_namespaces(translation.namespace_kinds, loc.key("linux").key("namespaces"))
    warnings = translation.warnings
    vcpus, memory = vm_size(
        spec, translation.annotations, role, loc, warnings, translation.cpus_needed
    )
    return Bundle(
        path=bundle,
        spec=spec,
        rootfs=translation.rootfs,
        role=role,
        sandbox_id=sandbox_id,
        warnings=tuple(warnings),
        read_only_rootfs=translation.read_only_rootfs,
        hostname=translation.hostname,
        annotations=translation.annotations,
        mounts=tuple(translation.mounts),
        guest_spec=translation.guest,
        cmd=translation.cmd,
        vcpus=vcpus,
        memory_mib=memory,
        netns=translation.netns,
        namespace_paths=tuple(translation.namespace_paths),
    )


def read_role(bundle_dir: Path) -> tuple[PodRole, str | None]:
    """The bundle's CRI role and sandbox id, from its annotations alone.

    What a containerd shim's ``start`` and ``delete`` need: they must not
    refuse a spec, so that Create refuses it as the task's own error.
    Raises RuntimeSpecError if config.json or its annotations cannot be read.
    """
    loc = Loc(CONFIG_FILE)
    spec = _read_spec(Path(bundle_dir).absolute() / CONFIG_FILE)
    return pod_role(opt_obj(spec, "annotations", loc), loc)


def process_from_json(process: Mapping[str, Any], where: str) -> Cmd:
    """A process object (``exec --process FILE``) as a Cmd.

    ``where`` labels errors, e.g. the file name: ``"process.json: args: ..."``.
    Dropped fields are logged as warnings (logger ``virtcontainers.oci``).
    """
    loc = Loc(where)
    warnings: list[str] = []
    cmd = translate_process(obj(process, loc), loc, warnings)
    for warning in warnings:
        log.warning("%s", warning)
    return cmd
