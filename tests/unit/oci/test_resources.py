"""virtcontainers.oci: linux.resources for the guest's cgroup v2, and cpusets that size the VM."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

import virtcontainers.oci.annotations as ann
from virtcontainers.errors import RuntimeSpecError
from virtcontainers.limits import Limits
from virtcontainers.oci import load_bundle
from virtcontainers.oci.resources import update_limits

SANDBOX = {"io.kubernetes.cri.container-type": "sandbox", "io.kubernetes.cri.sandbox-id": "p"}
MEMBER = {"io.kubernetes.cri.container-type": "container", "io.kubernetes.cri.sandbox-id": "p"}


def bundle_dir(
    tmp_path: Path, resources: dict[str, Any], annotations: dict[str, str] | None = None
) -> Path:
    spec = {
        "ociVersion": "1.1.0",
        "root": {"path": "rootfs"},
        "process": {"args": ["true"], "cwd": "/"},
        "linux": {"resources": resources, "namespaces": [{"type": "ipc"}, {"type": "network"}]},
        "annotations": annotations or {},
    }
    (tmp_path / "rootfs").mkdir(exist_ok=True)
    (tmp_path / "config.json").write_text(json.dumps(spec))
    return tmp_path


@pytest.fixture
def host(monkeypatch: pytest.MonkeyPatch) -> None:
    """A host with 4 CPUs, whatever this machine has."""
    monkeypatch.setattr(ann, "host_cpus", lambda: 4)


def test_cgroup_v1_only_settings_are_ignored_with_a_warning(tmp_path: Path) -> None:
    """What runc ignores on cgroup v2 and crun refuses ("cannot set kernel memory
    with cgroupv2"): a spec with kernel memory runs, with a warning."""
    resources = {
        "memory": {
            "limit": 268435456,
            "kernel": 134217728,
            "kernelTCP": 67108864,
            "swappiness": 10,
            "disableOOMKiller": True,
            "useHierarchy": True,
        },
        "cpu": {"shares": 512, "realtimeRuntime": 950000, "realtimePeriod": 1000000},
        "blockIO": {
            "weight": 500,
            "leafWeight": 300,
            "weightDevice": [{"major": 8, "minor": 0, "weight": 300}],
            "throttleReadBpsDevice": [{"major": 8, "minor": 0, "rate": 1048576}],
        },
        "network": {"classID": 1048577, "priorities": [{"name": "eth0", "priority": 5}]},
        "pids": {"limit": 100},
    }
    bundle = load_bundle(bundle_dir(tmp_path, resources))
    assert bundle.guest_spec["linux"]["resources"] == {
        "memory": {"limit": 268435456},  # crun: memory.max
        "cpu": {"shares": 512},  # crun: cpu.weight
        "blockIO": {"weight": 500},  # crun: io.weight (or io.bfq.weight)
        "pids": {"limit": 100},
    }
    where = "config.json: linux.resources."
    assert bundle.warnings == (
        f"{where}memory.kernel: ignored, as runc ignores it on cgroup v2: cgroup v2 has no "
        "separate kernel memory limit",
        f"{where}memory.kernelTCP: ignored, as runc ignores it on cgroup v2: cgroup v2 has no "
        "separate kernel TCP memory limit",
        f"{where}memory.swappiness: ignored, as runc ignores it on cgroup v2: cgroup v2 has no "
        "per-cgroup swappiness",
        f"{where}memory.disableOOMKiller: ignored, as runc ignores it on cgroup v2: cgroup v2 "
        "cannot disable the OOM killer",
        f"{where}cpu.realtimeRuntime: ignored, as runc ignores it on cgroup v2: real-time group "
        "scheduling is cgroup v1 only",
        f"{where}cpu.realtimePeriod: ignored, as runc ignores it on cgroup v2: real-time group "
        "scheduling is cgroup v1 only",
        f"{where}blockIO.leafWeight: ignored, as runc ignores it on cgroup v2: cgroup v2 has no "
        "leaf weight",
        f"{where}blockIO.weightDevice: ignored: it names host block devices by number, which "
        "are not the guest's; a container's files reach the VM over the shared filesystem, "
        "not a guest block device",
        f"{where}blockIO.throttleReadBpsDevice: ignored: it names host block devices by number, "
        "which are not the guest's; a container's files reach the VM over the shared "
        "filesystem, not a guest block device",
        f"{where}network.classID: ignored, as runc ignores it on cgroup v2: net_cls is cgroup "
        "v1 only",
        f"{where}network.priorities: ignored, as runc ignores it on cgroup v2: net_prio is "
        "cgroup v1 only",
    )


def test_settings_that_lose_nothing_are_dropped_silently(tmp_path: Path) -> None:
    resources = {
        "memory": {"useHierarchy": True, "disableOOMKiller": False, "swappiness": None},
        "blockIO": {"weightDevice": []},
    }
    bundle = load_bundle(bundle_dir(tmp_path, resources))
    assert bundle.guest_spec["linux"]["resources"] == {}
    assert bundle.warnings == ()


@pytest.mark.usefixtures("host")
@pytest.mark.parametrize(
    ("annotations", "vcpus"),
    [({}, 4), (SANDBOX, 4), (MEMBER, 1)],
    ids=["standalone", "sandbox", "member"],
)
def test_a_cpuset_sizes_the_vm_of_a_pod_the_bundle_makes(
    tmp_path: Path, annotations: dict[str, str], vcpus: int
) -> None:
    """A member cannot resize its pod: the guest agent refuses CPUs the VM lacks."""
    resources = {"cpu": {"cpus": "1,3", "mems": "0"}}
    bundle = load_bundle(bundle_dir(tmp_path, resources, annotations))
    assert bundle.pod_config("p").resources.vcpus == vcpus
    assert bundle.guest_spec["linux"]["resources"] == resources
    assert bundle.warnings == ()


@pytest.mark.usefixtures("host")
@pytest.mark.parametrize(
    ("cpu", "message"),
    [
        ({"cpus": "0-7"}, "cpu.cpus: '0-7' names CPU 7, but the VM can have at most 4 vCPUs "
         "here (CPUs 0-3; one per host CPU)"),
        ({"cpus": "0-x"}, "cpu.cpus: '0-x' is not a list of numbers and ranges (such as '0-3,6')"),
        ({"cpus": "3-1"}, "cpu.cpus: '3-1' is not a list of numbers and ranges"),
        ({"cpus": 3}, "cpu.cpus: must be a string, got a number"),
        ({"cpus": "0-99999"}, "cpu.cpus: '0-99999' names CPU 99999; no VM has more than 4096"),
        ({"mems": "0-1"}, "cpu.mems: '0-1' names memory node 1, but the VM has a single "
         "memory node, 0"),
    ],
)  # fmt: skip
def test_cpusets_the_vm_cannot_have_are_refused(
    tmp_path: Path, cpu: dict[str, Any], message: str
) -> None:
    with pytest.raises(RuntimeSpecError) as caught:
        load_bundle(bundle_dir(tmp_path, {"cpu": cpu}))
    assert str(caught.value).startswith("config.json: linux.resources." + message)


def test_an_update_s_resources_become_limits_the_same_for_every_front_end() -> None:
    limits = update_limits(
        {"memory": {"limit": 64 << 20}, "cpu": {"quota": 50_000}, "pids": {"limit": -1}}, "x"
    )
    assert (limits.memory_bytes, limits.cpus, limits.pids) == (64 << 20, 0.5, None)
    assert update_limits({}, "x") == Limits()
    with pytest.raises(RuntimeSpecError, match=r"update\.json: cpu: not a JSON object"):
        update_limits({"cpu": 5}, "update.json")
