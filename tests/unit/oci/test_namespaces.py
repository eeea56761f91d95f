"""virtcontainers.oci: namespace paths join containers of the pod, or are refused."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from virtcontainers.errors import RuntimeSpecError
from virtcontainers.oci import Bundle, PodRole, load_bundle, read_role
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
        ([{"type": "ipc", "path": "/proc/101/ns/ipc"},
          {"type": "network", "path": "/run/netns/cni-1"}], SANDBOX,
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


CRIO_SANDBOX = {
    "io.kubernetes.cri-o.ContainerType": "sandbox",
    "io.kubernetes.cri-o.SandboxID": "sb",
}
POD_NETWORK = {"type": "network", "path": "/run/netns/cni-1"}


@pytest.mark.parametrize(
    ("namespaces", "annotations", "setting"),
    [
        ([{"type": "pid"}, {"type": "ipc"}, {"type": "mount"}], SANDBOX, "hostNetwork"),
        ([{"type": "ipc"}], CRIO_SANDBOX, "hostNetwork"),
        ([{"type": "pid"}, {"type": "uts"}, POD_NETWORK], SANDBOX, "hostIPC"),
        ([], SANDBOX, "hostNetwork"),
    ],
    ids=["containerd-host-network", "crio-host-network", "host-ipc", "none"],
)
def test_a_cri_sandbox_sharing_the_nodes_namespaces_is_refused_naming_the_setting(
    tmp_path: Path, namespaces: list[dict[str, str]], annotations: dict[str, str], setting: str
) -> None:
    """The CRI leaves out of a sandbox the namespaces its pod shares with the node."""
    with pytest.raises(RuntimeSpecError) as caught:
        load(tmp_path, namespaces, annotations)
    kind = "network" if setting == "hostNetwork" else "ipc"
    assert str(caught.value).startswith(
        f"config.json: linux.namespaces: this CRI sandbox has no {kind} namespace: its pod "
        f"shares the node's ({setting}: true), which a pod in a VM cannot do: "
    )
    assert str(caught.value).endswith(
        f"Run the pod without {setting}, or with a runtime handler that does not make a VM (runc)"
    )


def test_a_cri_sandbox_with_its_own_network_and_ipc_is_accepted(tmp_path: Path) -> None:
    bundle = load(tmp_path, [{"type": "ipc"}, {"type": "uts"}, POD_NETWORK], SANDBOX)
    assert bundle.role is PodRole.SANDBOX
    assert bundle.pod_config("sb").netns == "/run/netns/cni-1"


def test_a_bundle_outside_the_cri_without_a_network_namespace_has_a_pod_of_its_own(
    tmp_path: Path,
) -> None:
    """vc-runtime's own spec leaves the network out (the VM is the boundary), as podman's
    --network host does: nothing tells them apart, and the VM gets loopback only."""
    bundle = load(tmp_path, [{"type": "ipc"}, {"type": "mount"}])
    assert bundle.role is PodRole.STANDALONE
    assert bundle.pod_config("p").netns is None


def test_a_refused_sandboxs_role_can_still_be_read(tmp_path: Path) -> None:
    """A containerd shim's start and delete need the role alone: Create refuses."""
    with pytest.raises(RuntimeSpecError, match="hostNetwork"):
        load(tmp_path, [], SANDBOX)
    assert read_role(tmp_path) == (PodRole.SANDBOX, "sb")
    load(tmp_path, [], MEMBER)  # a CRI container's namespaces are its sandbox's
    assert read_role(tmp_path) == (PodRole.CONTAINER, "sb")
