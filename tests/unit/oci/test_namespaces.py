"""virtcontainers.oci: namespace paths join containers of the pod, or are refused."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from virtcontainers.errors import RuntimeSpecError
from virtcontainers.oci import Bundle, PodRole, load_bundle
from virtcontainers.oci.namespaces import Peer

CONTAINERS = {
    100: Peer("sb", "sb"),  # a CRI sandbox: pod sb
    101: Peer("app", "sb"),  # a container of pod sb
    200: Peer("other", "other"),  # a container with a pod of its own
}
SANDBOX = {"io.kubernetes.cri.container-type": "sandbox", "io.kubernetes.cri.sandbox-id": "sb"}
MEMBER = {"io.kubernetes.cri.container-type": "container", "io.kubernetes.cri.sandbox-id": "sb"}


def load(
    tmp_path: Path, namespaces: list[dict[str, str]], annotations: dict[str, str] | None = None
) -> Bundle:
    spec: dict[str, Any] = {
        "ociVersion": "1.1.0",
        "root": {"path": "rootfs"},
        "process": {"args": ["true"], "cwd": "/"},
        "linux": {"namespaces": namespaces},
        "annotations": annotations or {},
    }
    (tmp_path / "rootfs").mkdir(exist_ok=True)
    (tmp_path / "config.json").write_text(json.dumps(spec))
    return load_bundle(tmp_path)


def error(tmp_path: Path, namespaces: list[dict[str, str]], **annotations: str) -> str:
    with pytest.raises(RuntimeSpecError) as caught:
        load(tmp_path, namespaces, annotations).resolve_namespaces(CONTAINERS.get)
    return str(caught.value)


def test_a_cri_container_joins_its_sandbox_containers_namespaces(tmp_path: Path) -> None:
    """As containerd writes it: ipc, uts and pid of the sandbox's pid (vc-runtime's shim)."""
    bundle = load(
        tmp_path,
        [
            {"type": "pid", "path": "/proc/100/ns/pid"},
            {"type": "ipc", "path": "/proc/100/ns/ipc"},
            {"type": "uts", "path": "/proc/100/ns/uts"},
            {"type": "mount"},
            {"type": "network", "path": "/proc/100/ns/net"},
        ],
        MEMBER,
    ).resolve_namespaces(CONTAINERS.get)
    config = bundle.container_config("web")
    assert dict(config.join_namespaces) == {"pid": "sb", "ipc": "sb", "uts": "sb"}
    assert config.oci is not None
    assert config.oci["linux"]["namespaces"] == [  # paths set in the guest (spec.py)
        {"type": "pid"},
        {"type": "ipc"},
        {"type": "uts"},
        {"type": "mount"},
        {"type": "network", "path": "/proc/1/ns/net"},
    ]
    assert bundle.warnings == ()


def test_a_container_naming_another_containers_namespace_joins_its_pod(tmp_path: Path) -> None:
    """podman's --ipc container:X, or a podman pod's infra container."""
    bundle = load(tmp_path, [{"type": "ipc", "path": "/proc/101/ns/ipc"}, {"type": "network"}])
    assert bundle.role is PodRole.STANDALONE
    joined = bundle.resolve_namespaces(CONTAINERS.get)
    assert (joined.role, joined.sandbox_id) == (PodRole.CONTAINER, "sb")
    assert dict(joined.container_config("c").join_namespaces) == {"ipc": "app"}


def test_a_network_path_of_a_container_joins_its_pod(tmp_path: Path) -> None:
    bundle = load(tmp_path, [{"type": "network", "path": "/proc/200/ns/net"}])
    joined = bundle.resolve_namespaces(CONTAINERS.get)
    assert (joined.role, joined.sandbox_id) == (PodRole.CONTAINER, "other")
    assert not joined.container_config("c").join_namespaces


def test_a_host_network_namespace_stays_the_pods(tmp_path: Path) -> None:
    bundle = load(tmp_path, [{"type": "network", "path": "/proc/4242/ns/net"}])
    resolved = bundle.resolve_namespaces(CONTAINERS.get)
    assert resolved.role is PodRole.STANDALONE
    assert resolved.pod_config("p").netns == "/proc/4242/ns/net"


@pytest.mark.parametrize(
    ("namespaces", "annotations", "message"),
    [
        ([{"type": "ipc", "path": "/var/run/ipcns/1f2e"}], {},
         "linux.namespaces[0].path: /var/run/ipcns/1f2e is not a namespace a container in a VM "
         "can join: only the namespaces of containers of its own pod can be joined, named as "
         "/proc/<pid>/ns/ipc with the pid the runtime reports for that container"),
        ([{"type": "mount", "path": "/proc/100/ns/mount"}], {},
         "linux.namespaces[0].path: /proc/100/ns/mount: /proc/<pid>/ns has no 'mount' (the "
         "mount namespace is 'mnt' there)"),
        ([{"type": "ipc"}, {"type": "uts", "path": "/proc/100/ns/ipc"}], {},
         "linux.namespaces[1].path: /proc/100/ns/ipc is a namespace of type 'ipc', but this "
         "entry is 'uts'"),
        ([{"type": "uts", "path": "/proc/self/ns/uts"}], {},
         "linux.namespaces[0].path: /proc/self/ns/uts is not a namespace a container in a VM "
         "can join"),
        ([{"type": "ipc", "path": "/proc/4242/ns/ipc"}], {},
         "linux.namespaces[0].path: /proc/4242/ns/ipc: pid 4242 is not a container of this "
         "runtime, and a container in a VM can only join namespaces of containers of its own "
         "pod"),
        ([{"type": "ipc", "path": "/proc/200/ns/ipc"}], MEMBER,
         "linux.namespaces[0].path: /proc/200/ns/ipc is the ipc namespace of container other, "
         "which runs in pod other, not in pod sb with this container: containers in different "
         "VMs cannot share namespaces"),
        ([{"type": "ipc", "path": "/proc/100/ns/ipc"}, {"type": "uts", "path": "/proc/200/ns/uts"}],
         {}, "linux.namespaces[1].path: /proc/200/ns/uts is the uts namespace of container "
         "other, which runs in pod other, not in pod sb"),
        ([{"type": "ipc", "path": "/proc/101/ns/ipc"}], SANDBOX,
         "linux.namespaces[0].path: /proc/101/ns/ipc is the ipc namespace of container app "
         "(pod sb), but this bundle is a sandbox, which makes a new pod: it cannot join another "
         "pod's namespaces"),
        ([{"type": "ipc", "path": "/proc/101/ns/ipc"},
          {"type": "network", "path": "/run/netns/cni-1"}], {},
         "linux.namespaces[1].path: /run/netns/cni-1: this container joins pod sb (it shares "
         "namespaces with container app), whose network is its VM's, not this network namespace"),
    ],
    ids=["foreign-path", "proc-name-of-mount", "wrong-type", "self", "not-a-container",
         "other-pod", "two-pods", "sandbox", "other-network"],
)  # fmt: skip
def test_namespaces_a_vm_cannot_join_are_refused(
    tmp_path: Path, namespaces: list[dict[str, str]], annotations: dict[str, str], message: str
) -> None:
    assert error(tmp_path, namespaces, **annotations).startswith("config.json: " + message)


def test_unresolved_paths_are_not_made_into_a_container(tmp_path: Path) -> None:
    bundle = load(tmp_path, [{"type": "ipc", "path": "/proc/100/ns/ipc"}])
    with pytest.raises(RuntimeSpecError, match=r"namespace paths are resolved by the runtime"):
        bundle.container_config("c")


def test_a_time_namespace_can_be_joined(tmp_path: Path) -> None:
    bundle = load(tmp_path, [{"type": "time", "path": "/proc/101/ns/time"}], MEMBER)
    config = bundle.resolve_namespaces(CONTAINERS.get).container_config("c")
    assert dict(config.join_namespaces) == {"time": "app"}
