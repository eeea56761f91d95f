"""Annotations virtcontainers reads: CRI pod roles and VM size.

Roles
    containerd's CRI plugin marks a pod's sandbox (pause) container and the
    containers that join it with ``io.kubernetes.cri.container-type``
    (``sandbox`` | ``container``) and ``io.kubernetes.cri.sandbox-id``; CRI-O
    uses ``io.kubernetes.cri-o.ContainerType`` and ``io.kubernetes.cri-o.SandboxID``.
    Without them a bundle is a standalone container in a pod of its own.

VM size, first found wins
    1. ``io.katacontainers.config.hypervisor.default_vcpus`` (a number, rounded
       up) and ``...default_memory`` (MiB), as Kata Containers reads them;
    2. for a sandbox, containerd's pod totals ``io.kubernetes.cri.sandbox-cpu-quota``
       / ``sandbox-cpu-period`` and ``io.kubernetes.cri.sandbox-memory`` (bytes);
    3. ``linux.resources.cpu.quota/period`` and ``linux.resources.memory.limit``;
    4. 1 vCPU, 512 MiB.
    A cpuset (``linux.resources.cpu.cpus``) names the VM's vCPUs: the VM of a
    pod the bundle makes has at least enough to cover it.
    A memory limit L becomes L + 256 MiB of guest overhead, rounded up to a
    multiple of 128 MiB, at least 512 MiB.  vCPUs are ceil(quota / period).
    Both are capped at what the host has (with a warning).
"""

from __future__ import annotations

import enum
import math
import os
from collections.abc import Mapping
from typing import Any

from virtcontainers.config import MAX_VCPUS, host_memory_mib
from virtcontainers.ids import ID_PATTERN
from virtcontainers.oci._json import Loc, obj, type_name

CONTAINERD_TYPE = "io.kubernetes.cri.container-type"
CONTAINERD_SANDBOX_ID = "io.kubernetes.cri.sandbox-id"
CRIO_TYPE = "io.kubernetes.cri-o.ContainerType"
CRIO_SANDBOX_ID = "io.kubernetes.cri-o.SandboxID"
KATA_VCPUS = "io.katacontainers.config.hypervisor.default_vcpus"
KATA_MEMORY = "io.katacontainers.config.hypervisor.default_memory"
CRI_SANDBOX_CPU_QUOTA = "io.kubernetes.cri.sandbox-cpu-quota"
CRI_SANDBOX_CPU_PERIOD = "io.kubernetes.cri.sandbox-cpu-period"
CRI_SANDBOX_MEMORY = "io.kubernetes.cri.sandbox-memory"

DEFAULT_VCPUS = 1
DEFAULT_MEMORY_MIB = 512
MEMORY_OVERHEAD_MIB = 256
MEMORY_STEP_MIB = 128
MIN_DERIVED_MEMORY_MIB = 512
DEFAULT_CPU_PERIOD = 100_000
_MIB = 1024 * 1024


class PodRole(enum.Enum):
    STANDALONE = "standalone"  # no CRI annotations: a pod of its own
    SANDBOX = "sandbox"  # a CRI pod's sandbox (pause) container: creates the pod
    CONTAINER = "container"  # a CRI container joining an existing pod


def pod_role(annotations: Mapping[str, str], loc: Loc) -> tuple[PodRole, str | None]:
    """The bundle's role and sandbox id, from containerd or CRI-O annotations."""
    found: list[tuple[PodRole, str | None, str]] = []
    for type_key, id_key in (
        (CONTAINERD_TYPE, CONTAINERD_SANDBOX_ID),
        (CRIO_TYPE, CRIO_SANDBOX_ID),
    ):
        if type_key not in annotations:
            continue
        where = loc.key("annotations").key(type_key)
        kind = annotations[type_key]
        if kind not in ("sandbox", "container"):
            raise where.error(f"{kind!r} is not 'sandbox' or 'container'")
        role = PodRole.SANDBOX if kind == "sandbox" else PodRole.CONTAINER
        sandbox_id = annotations.get(id_key) or None
        id_where = loc.key("annotations").key(id_key)
        if sandbox_id is None and role is PodRole.CONTAINER:
            raise id_where.error("is required for a container that joins a pod")
        if sandbox_id is not None and not ID_PATTERN.match(sandbox_id):
            raise id_where.error(
                f"{sandbox_id!r} is not a valid pod id (1-64 letters, digits, '_', '.', '-')"
            )
        found.append((role, sandbox_id, type_key))
    if not found:
        return PodRole.STANDALONE, None
    if len(found) == 2 and found[0][:2] != found[1][:2]:
        raise loc.key("annotations").error(
            f"containerd ({found[0][0].value} of {found[0][1]}) and CRI-O "
            f"({found[1][0].value} of {found[1][1]}) annotations disagree"
        )
    return found[0][0], found[0][1]


def host_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except OSError:  # pragma: no cover - always available on Linux
        return os.cpu_count() or 1


def _number(annotations: Mapping[str, str], key: str, loc: Loc) -> float | None:
    if key not in annotations:
        return None
    where = loc.key("annotations").key(key)
    try:
        value = float(annotations[key])
    except ValueError:
        raise where.error(f"{annotations[key]!r} is not a number") from None
    if not math.isfinite(value) or value <= 0:
        raise where.error(f"{annotations[key]!r} must be a positive number")
    return value


def _int_field(value: object, loc: Loc) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise loc.error(f"must be an integer, got {type_name(value)}")
    return value


def _memory_from_limit(limit_bytes: int) -> int:
    mib = math.ceil(limit_bytes / _MIB) + MEMORY_OVERHEAD_MIB
    mib = math.ceil(mib / MEMORY_STEP_MIB) * MEMORY_STEP_MIB
    return max(mib, MIN_DERIVED_MEMORY_MIB)


def _resources(spec: Mapping[str, Any], loc: Loc) -> tuple[int | None, int | None, int | None]:
    """(cpu quota, cpu period, memory limit) from linux.resources."""
    linux = spec.get("linux") or {}
    resources = obj(linux.get("resources") or {}, loc.key("linux").key("resources"))
    where = loc.key("linux").key("resources")
    cpu = obj(resources.get("cpu") or {}, where.key("cpu"))
    memory = obj(resources.get("memory") or {}, where.key("memory"))
    quota = _int_field(cpu.get("quota"), where.key("cpu").key("quota"))
    period = _int_field(cpu.get("period"), where.key("cpu").key("period"))
    limit = _int_field(memory.get("limit"), where.key("memory").key("limit"))
    return quota, period, limit


def vm_size(
    spec: Mapping[str, Any],
    annotations: Mapping[str, str],
    role: PodRole,
    loc: Loc,
    warnings: list[str],
    cpus_needed: int = 0,
) -> tuple[int, int]:
    """(vCPUs, memory MiB) of the pod's VM; see the module docstring for the rules.

    ``cpus_needed``: the vCPUs the container's cpuset names; a pod the bundle
    makes gets at least that many, and a cpuset beyond what a VM here can have
    is refused.
    """
    quota, period, limit = _resources(spec, loc)
    if role is PodRole.SANDBOX:
        sandbox_quota = _number(annotations, CRI_SANDBOX_CPU_QUOTA, loc)
        sandbox_period = _number(annotations, CRI_SANDBOX_CPU_PERIOD, loc)
        sandbox_memory = _number(annotations, CRI_SANDBOX_MEMORY, loc)
        if sandbox_quota is not None:
            quota, period = int(sandbox_quota), int(sandbox_period or DEFAULT_CPU_PERIOD)
        if sandbox_memory is not None:
            limit = int(sandbox_memory)
    vcpus = DEFAULT_VCPUS
    if quota is not None and quota > 0:
        vcpus = math.ceil(quota / (period if period and period > 0 else DEFAULT_CPU_PERIOD))
    kata_vcpus = _number(annotations, KATA_VCPUS, loc)
    if kata_vcpus is not None:
        vcpus = math.ceil(kata_vcpus)
    memory = DEFAULT_MEMORY_MIB
    if limit is not None and limit > 0:
        memory = _memory_from_limit(limit)
    kata_memory = _number(annotations, KATA_MEMORY, loc)
    if kata_memory is not None:
        memory = math.ceil(kata_memory)
    cap = min(host_cpus(), MAX_VCPUS)
    if role is not PodRole.CONTAINER and cpus_needed > vcpus:
        if cpus_needed > cap:
            cpus = (spec.get("linux") or {})["resources"]["cpu"]["cpus"]
            raise (
                loc.key("linux")
                .key("resources")
                .key("cpu")
                .key("cpus")
                .error(
                    f"{cpus!r} names CPU {cpus_needed - 1}, but the VM can have at most {cap} "
                    f"vCPUs here (CPUs 0-{cap - 1}; one per host CPU)"
                )
            )
        vcpus = cpus_needed
    if vcpus > cap:
        warnings.append(loc.note(f"VM vCPUs capped at {cap} (asked for {vcpus})"))
        vcpus = cap
    host_memory = host_memory_mib()
    if memory > host_memory:
        warnings.append(
            loc.note(f"VM memory capped at the host's {host_memory} MiB (asked for {memory} MiB)")
        )
        memory = host_memory
    return vcpus, memory
