"""Usage as the cgroup metrics containerd decodes: a container's, or its pod's VM's.

containerd (``ctr task metrics``, the CRI's ContainerStats) decodes what a
shim's Stats answers by its type URL: cgroups' v1 Metrics or v2 Metrics.  It
gets the kind the host's own cgroups are, as runc's shim would give.  A
container's figures come from its cgroup in the guest; a CRI sandbox's are
its pod's VM as the host pays for it (:func:`vm_usage`), not its pause
process's.
"""

from __future__ import annotations

from pathlib import Path

from google.protobuf import any_pb2

from virtcontainers.api import ContainerStats, PodStatus
from virtcontainers.host.proc import process_usage
from virtcontainers.shim.protos import cgroups_v1, cgroups_v2, pack

CGROUP_ROOT = Path("/sys/fs/cgroup")


def host_is_cgroup_v2(root: Path = CGROUP_ROOT) -> bool:
    """Whether the host's cgroups are unified (v2 only), as runc's shim decides it."""
    return (root / "cgroup.controllers").exists()


def vm_usage(pod: PodStatus, guest: ContainerStats) -> ContainerStats:
    """What a pod's VM costs the host, in a container's figures: the PSS and CPU
    time of its QEMU and pod daemon, as ``virtc top`` and the metrics count
    them; the pod's network traffic from ``guest``, a container's figures (the
    guest's interfaces are the pod's).  No limit: the VM's memory is its size."""
    processes = [
        usage for usage in map(process_usage, (pod.vm_pid, pod.daemon_pid)) if usage is not None
    ]
    user_ns = round(sum(p.user_seconds for p in processes) * 1e9)
    system_ns = round(sum(p.system_seconds for p in processes) * 1e9)
    return ContainerStats(
        cpu_usage_ns=user_ns + system_ns,
        cpu_user_ns=user_ns,
        cpu_system_ns=system_ns,
        memory_bytes=sum(p.pss_bytes for p in processes),
        memory_limit_bytes=0,
        memory_cache_bytes=0,
        pids=len(processes),
        pids_limit=0,
        io_read_bytes=0,
        io_write_bytes=0,
        network_rx_bytes=guest.network_rx_bytes,
        network_tx_bytes=guest.network_tx_bytes,
    )


def metrics(stats: ContainerStats, v2: bool) -> any_pb2.Any:
    return pack(v2_metrics(stats) if v2 else v1_metrics(stats))


def v1_metrics(stats: ContainerStats) -> cgroups_v1.Metrics:
    memory = cgroups_v1.MemoryStat(
        cache=stats.memory_cache_bytes,
        total_cache=stats.memory_cache_bytes,
        usage=cgroups_v1.MemoryEntry(usage=stats.memory_bytes, limit=stats.memory_limit_bytes),
    )
    return cgroups_v1.Metrics(
        cpu=cgroups_v1.CPUStat(
            usage=cgroups_v1.CPUUsage(
                total=stats.cpu_usage_ns, user=stats.cpu_user_ns, kernel=stats.cpu_system_ns
            )
        ),
        memory=memory,
        pids=cgroups_v1.PidsStat(current=stats.pids, limit=stats.pids_limit),
        blkio=cgroups_v1.BlkIOStat(
            io_service_bytes_recursive=[
                cgroups_v1.BlkIOEntry(op="Read", value=stats.io_read_bytes),
                cgroups_v1.BlkIOEntry(op="Write", value=stats.io_write_bytes),
            ]
        ),
        network=[_v1_network(stats)],
    )


def _v1_network(stats: ContainerStats) -> cgroups_v1.NetworkStat:
    """The pod's traffic, which all its containers share."""
    return cgroups_v1.NetworkStat(
        name="pod", rx_bytes=stats.network_rx_bytes, tx_bytes=stats.network_tx_bytes
    )


def v2_metrics(stats: ContainerStats) -> cgroups_v2.Metrics:
    return cgroups_v2.Metrics(
        cpu=cgroups_v2.CPUStat(
            usage_usec=stats.cpu_usage_ns // 1000,
            user_usec=stats.cpu_user_ns // 1000,
            system_usec=stats.cpu_system_ns // 1000,
        ),
        memory=cgroups_v2.MemoryStat(
            usage=stats.memory_bytes,
            usage_limit=stats.memory_limit_bytes,
            file=stats.memory_cache_bytes,
        ),
        pids=cgroups_v2.PidsStat(current=stats.pids, limit=stats.pids_limit),
        io=cgroups_v2.IOStat(
            usage=[cgroups_v2.IOEntry(rbytes=stats.io_read_bytes, wbytes=stats.io_write_bytes)]
        ),
    )
