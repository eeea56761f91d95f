"""virtcontainers.oci: CRI pod roles from annotations, and the VM size of a bundle's pod."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

import virtcontainers.oci.annotations as ann
from virtcontainers.errors import RuntimeSpecError
from virtcontainers.oci import PodRole, load_bundle

HEX = "0123456789abcdef" * 4
#: A pod's own namespaces, as a CRI sandbox has them (none shared with the node).
POD_NAMESPACES = [{"type": kind} for kind in ("pid", "ipc", "uts", "mount", "network")]


def bundle_with(
    tmp_path: Path, annotations: dict[str, str], linux: dict[str, Any] | None = None
) -> Path:
    spec: dict[str, Any] = {
        "ociVersion": "1.0.2",
        "root": {"path": "rootfs"},
        "process": {"args": ["/pause"], "cwd": "/"},
        "hostname": "web-0",
        "annotations": annotations,
        "linux": {"namespaces": POD_NAMESPACES, **(linux or {})},
    }
    (tmp_path / "rootfs").mkdir(exist_ok=True)
    (tmp_path / "config.json").write_text(json.dumps(spec))
    return tmp_path


@pytest.mark.parametrize(
    ("annotations", "role", "sandbox_id"),
    [
        ({}, PodRole.STANDALONE, None),
        (
            {"io.kubernetes.cri.container-type": "sandbox", "io.kubernetes.cri.sandbox-id": HEX},
            PodRole.SANDBOX,
            HEX,
        ),
        ({"io.kubernetes.cri.container-type": "sandbox"}, PodRole.SANDBOX, None),
        (
            {"io.kubernetes.cri.container-type": "container", "io.kubernetes.cri.sandbox-id": HEX},
            PodRole.CONTAINER,
            HEX,
        ),
        (
            {"io.kubernetes.cri-o.ContainerType": "sandbox", "io.kubernetes.cri-o.SandboxID": HEX},
            PodRole.SANDBOX,
            HEX,
        ),
        (
            {
                "io.kubernetes.cri-o.ContainerType": "container",
                "io.kubernetes.cri-o.SandboxID": HEX,
            },
            PodRole.CONTAINER,
            HEX,
        ),
        (
            {
                "io.kubernetes.cri.container-type": "container",
                "io.kubernetes.cri.sandbox-id": HEX,
                "io.kubernetes.cri-o.ContainerType": "container",
                "io.kubernetes.cri-o.SandboxID": HEX,
            },
            PodRole.CONTAINER,
            HEX,
        ),
    ],
    ids=["none", "containerd-sandbox", "containerd-sandbox-no-id", "containerd-container",
         "crio-sandbox", "crio-container", "both-agree"],
)  # fmt: skip
def test_roles(
    tmp_path: Path, annotations: dict[str, str], role: PodRole, sandbox_id: str | None
) -> None:
    bundle = load_bundle(bundle_with(tmp_path, annotations))
    assert bundle.role is role
    assert bundle.sandbox_id == sandbox_id
    pod = bundle.pod_config(sandbox_id or "standalone")
    assert pod.hostname == (None if role is PodRole.CONTAINER else "web-0")
    assert pod.annotations == annotations


@pytest.mark.parametrize(
    ("annotations", "message"),
    [
        (
            {"io.kubernetes.cri.container-type": "pod"},
            "config.json: annotations.io.kubernetes.cri.container-type: "
            "'pod' is not 'sandbox' or 'container'",
        ),
        (
            {"io.kubernetes.cri-o.ContainerType": "container"},
            "config.json: annotations.io.kubernetes.cri-o.SandboxID: "
            "is required for a container that joins a pod",
        ),
        (
            {
                "io.kubernetes.cri.container-type": "container",
                "io.kubernetes.cri.sandbox-id": "a/b",
            },
            "config.json: annotations.io.kubernetes.cri.sandbox-id: "
            "'a/b' is not a valid pod id (1-64 letters, digits, '_', '.', '-')",
        ),
        (
            {
                "io.kubernetes.cri.container-type": "sandbox",
                "io.kubernetes.cri.sandbox-id": "p1",
                "io.kubernetes.cri-o.ContainerType": "container",
                "io.kubernetes.cri-o.SandboxID": "p2",
            },
            "config.json: annotations: containerd (sandbox of p1) and CRI-O "
            "(container of p2) annotations disagree",
        ),
        (
            {"io.katacontainers.config.hypervisor.default_vcpus": "many"},
            "config.json: annotations.io.katacontainers.config.hypervisor.default_vcpus: "
            "'many' is not a number",
        ),
        (
            {"io.katacontainers.config.hypervisor.default_memory": "-1"},
            "config.json: annotations.io.katacontainers.config.hypervisor.default_memory: "
            "'-1' must be a positive number",
        ),
    ],
)
def test_bad_annotations(tmp_path: Path, annotations: dict[str, str], message: str) -> None:
    with pytest.raises(RuntimeSpecError) as info:
        load_bundle(bundle_with(tmp_path, annotations))
    assert str(info.value) == message


@pytest.fixture
def host(monkeypatch: pytest.MonkeyPatch) -> None:
    """A host with 4 CPUs and 8 GiB, whatever this machine has."""
    monkeypatch.setattr(ann, "host_cpus", lambda: 4)
    monkeypatch.setattr(ann, "host_memory_mib", lambda: 8192)


GIB = 1024**3
MIB = 1024**2


@pytest.mark.usefixtures("host")
@pytest.mark.parametrize(
    ("linux", "annotations", "size"),
    [
        (None, {}, (1, 512)),
        ({"resources": {"memory": {"limit": GIB}}}, {}, (1, 1280)),
        ({"resources": {"memory": {"limit": 100 * MIB}}}, {}, (1, 512)),
        ({"resources": {"memory": {"limit": 1000 * MIB + 1}}}, {}, (1, 1280)),
        ({"resources": {"memory": {"limit": -1}}}, {}, (1, 512)),
        ({"resources": {"cpu": {"quota": 150000, "period": 100000}}}, {}, (2, 512)),
        ({"resources": {"cpu": {"quota": 50000}}}, {}, (1, 512)),
        ({"resources": {"cpu": {"quota": -1, "period": 100000}}}, {}, (1, 512)),
        ({"resources": {"cpu": {"shares": 1024}}}, {}, (1, 512)),
        (
            {"resources": {"memory": {"limit": GIB}, "cpu": {"quota": 200000, "period": 100000}}},
            {
                "io.katacontainers.config.hypervisor.default_vcpus": "2.5",
                "io.katacontainers.config.hypervisor.default_memory": "2048",
            },
            (3, 2048),
        ),
        (  # containerd's pod totals count only for the sandbox
            None,
            {
                "io.kubernetes.cri.container-type": "sandbox",
                "io.kubernetes.cri.sandbox-cpu-quota": "300000",
                "io.kubernetes.cri.sandbox-cpu-period": "100000",
                "io.kubernetes.cri.sandbox-memory": str(2 * GIB),
            },
            (3, 2304),
        ),
        (
            None,
            {
                "io.kubernetes.cri.container-type": "container",
                "io.kubernetes.cri.sandbox-id": "p",
                "io.kubernetes.cri.sandbox-memory": str(2 * GIB),
            },
            (1, 512),
        ),
    ],
)
def test_vm_size(
    tmp_path: Path,
    linux: dict[str, Any] | None,
    annotations: dict[str, str],
    size: tuple[int, int],
) -> None:
    bundle = load_bundle(bundle_with(tmp_path, annotations, linux))
    resources = bundle.pod_config("p").resources
    assert (resources.vcpus, resources.memory_mib) == size
    assert bundle.warnings == ()


@pytest.mark.usefixtures("host")
def test_vm_size_capped_at_host(tmp_path: Path) -> None:
    linux = {"resources": {"memory": {"limit": 64 * GIB}, "cpu": {"quota": 1600000}}}
    bundle = load_bundle(bundle_with(tmp_path, {}, linux))
    resources = bundle.pod_config("p").resources
    assert (resources.vcpus, resources.memory_mib) == (4, 8192)
    assert bundle.warnings == (
        "config.json: VM vCPUs capped at 4 (asked for 16)",
        "config.json: VM memory capped at the host's 8192 MiB (asked for 65792 MiB)",
    )


def test_too_little_memory_is_refused_by_pod_config(tmp_path: Path) -> None:
    annotations = {"io.katacontainers.config.hypervisor.default_memory": "64"}
    bundle = load_bundle(bundle_with(tmp_path, annotations))
    with pytest.raises(RuntimeSpecError, match=r"invalid resources.memory_mib: 64 MiB"):
        bundle.pod_config("p")
