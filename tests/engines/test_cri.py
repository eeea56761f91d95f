"""containerd's CRI plugin (Debian's containerd 1.6) driving a whole pod through vc-runtime.

The test is the kubelet: a gRPC client of the CRI (stubs generated from the
CRI's api.proto) over a private containerd's socket. containerd has a runtime
handler ``vc`` whose runc shim calls vc-runtime, CNI from Debian's
containernetworking-plugins (bridge, host-local, loopback), and runs inside a
network namespace the test made: the CNI bridge and the host ends of the
pods' veths live there, never in the host's namespace. The pod has a host
cgroup parent, as the kubelet gives one, so the CRI plugin hands out
cgroupsPath as it does under Kubernetes. Both images are made here from the
busybox rootfs and imported; nothing is pulled.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from tests.conftest import remove_all_pods, short_temp_dir
from tests.cri.client import Cri, generate_stubs
from tests.engines.conftest import VC_RUNTIME
from tests.engines.containerd import Containerd, running_containerd, unmount_under
from tests.engines.images import oci_layout_tar
from tests.netlab import Lab, inside, ip, tun_links
from virtcontainers import api
from virtcontainers.network.netns import run_in_netns
from virtcontainers.storage import mounts

pytestmark = [pytest.mark.engine, pytest.mark.vm, pytest.mark.usefixtures("guest_image")]

HANDLER = "vc"
PAUSE_IMAGE = "localhost/vc-pause:latest"
BUSYBOX_IMAGE = "localhost/vc-busybox:latest"
POD_SUBNET = "198.51.100.0/24"
"""TEST-NET-2: the pods' addresses, on a bridge inside the test's namespace."""
CNI_PLUGINS = Path("/usr/lib/cni")
HTTP_PORT = 8080
PAGE = "hello from a pod in a VM"


def cni_conflist(ipam_dir: Path) -> str:
    return json.dumps(
        {
            "cniVersion": "0.4.0",
            "name": "vc-cri-test",
            "plugins": [
                {
                    "type": "bridge",
                    "bridge": "vccri0",
                    "isGateway": True,
                    "ipMasq": False,
                    "ipam": {
                        "type": "host-local",
                        "ranges": [[{"subnet": POD_SUBNET}]],
                        "dataDir": str(ipam_dir),
                    },
                }
            ],
        }
    )


def cri_plugin_toml(cni_conf: Path, runtime_root: Path) -> str:
    """The CRI plugin's settings (what docs/vc-runtime.md shows, plus test-only paths)."""
    cri = 'plugins."io.containerd.grpc.v1.cri"'
    return f"""\
    sandbox_image = "{PAUSE_IMAGE}"
    disable_apparmor = true
    stream_server_address = "127.0.0.1"
    stream_server_port = "0"
  [{cri}.containerd.runtimes.runc]
    runtime_type = "io.containerd.runc.v2"
  [{cri}.containerd.runtimes.{HANDLER}]
    runtime_type = "io.containerd.runc.v2"
  [{cri}.containerd.runtimes.{HANDLER}.options]
    BinaryName = "{VC_RUNTIME}"
    Root = "{runtime_root}"
  [{cri}.cni]
    bin_dir = "{CNI_PLUGINS}"
    conf_dir = "{cni_conf}"
"""


@dataclass
class CriEnv:
    cri: Cri
    containerd: Containerd
    netns: str
    """The path of the test's namespace that containerd (and the CNI bridge) is in."""
    logs: Path
    cgroup_parent: str
    """The pod's host cgroup, as the kubelet names one (cgroupfs style)."""
    pod_netns: list[str] = field(default_factory=list)
    """Network namespaces CNI made for the pods (bind mounts under /var/run/netns)."""


@pytest.fixture(scope="session")
def cri_stubs(tmp_path_factory: pytest.TempPathFactory) -> tuple[ModuleType, ModuleType]:
    return generate_stubs(tmp_path_factory.mktemp("cri-stubs"))


def _missing() -> str | None:
    for binary in ("containerd", "ctr", "containerd-shim-runc-v2", "nsenter"):
        if shutil.which(binary) is None:
            return f"{binary} is not installed (apt-get install containerd)"
    for plugin in ("bridge", "host-local", "loopback"):
        if not (CNI_PLUGINS / plugin).exists():
            return (
                f"CNI plugin {CNI_PLUGINS / plugin} is missing "
                "(apt-get install containernetworking-plugins)"
            )
    return None


@contextlib.contextmanager
def cri_environment(
    prefix: str,
    env: dict[str, str],
    plugins: Callable[[Path], str],
    busybox_rootfs: Path,
    lab: Lab,
    cri_stubs: tuple[ModuleType, ModuleType],
) -> Iterator[CriEnv]:
    """A private containerd with the CRI plugin (``plugins`` of the work dir),
    CNI in a namespace of the lab, the pause and busybox images imported;
    whatever the test did, its pods, cgroup, namespaces and mounts go after."""
    missing = _missing()
    if missing:
        pytest.skip(missing)
    work = short_temp_dir(prefix)
    cgroup_parent = f"/{work.name}"
    netns_name, netns = lab.netns()
    ip("-n", netns_name, "link", "set", "lo", "up")  # the CRI's streaming server listens there
    (work / "cni").mkdir()
    (work / "cni" / "10-vc-cri-test.conflist").write_text(cni_conflist(work / "ipam"))
    holder: list[CriEnv] = []

    def remove_sandboxes(_: Containerd) -> None:
        if holder:
            _remove_sandboxes(holder[0])

    try:
        with running_containerd(
            env,
            plugins(work),
            netns=netns,
            namespace="k8s.io",
            before_stop=remove_sandboxes,
            cgroups=True,
        ) as containerd:
            for ref, cmd in (
                (PAUSE_IMAGE, ("sleep", "1000000000")),
                (BUSYBOX_IMAGE, ("sh",)),
            ):
                tar = oci_layout_tar(busybox_rootfs, work / "image.tar", ref, cmd)
                imported = containerd.ctr("images", "import", "--digests=false", str(tar))
                assert imported.returncode == 0, imported.stderr
            cri = Cri(containerd.address, cri_stubs)
            holder.append(CriEnv(cri, containerd, netns, work / "logs", cgroup_parent))
            yield holder[0]
    finally:
        remove_all_pods()  # those containerd could not remove: the pod cgroup must be empty
        _remove_cgroup(cgroup_parent)
        if holder:
            holder[0].cri.close()
        for path in holder[0].pod_netns if holder else []:
            _remove_netns(path)
        unmount_under(work)
        shutil.rmtree(work, ignore_errors=True)


@pytest.fixture
def cri_env(
    run_root: Path,
    busybox_rootfs: Path,
    lab: Lab,
    cri_stubs: tuple[ModuleType, ModuleType],
) -> Iterator[CriEnv]:
    env = {**os.environ, "VC_RUN_DIR": str(run_root)}
    with cri_environment(
        "vccri-",
        env,
        lambda work: cri_plugin_toml(work / "cni", work / "vc-runtime"),
        busybox_rootfs,
        lab,
        cri_stubs,
    ) as cri_env:
        yield cri_env


def _remove_sandboxes(env: CriEnv) -> None:
    """What a failed test left, the kubelet's way; errors are printed, not raised,
    so that the fixture's later steps (and the test's own error) still come."""
    pb = env.cri.pb
    try:
        sandboxes = env.cri.call("ListPodSandbox", pb.ListPodSandboxRequest()).items
    except Exception as exc:
        print(f"listing sandboxes failed: {exc}")
        return
    for sandbox in sandboxes:
        try:
            env.cri.call("StopPodSandbox", pb.StopPodSandboxRequest(pod_sandbox_id=sandbox.id))
            env.cri.call("RemovePodSandbox", pb.RemovePodSandboxRequest(pod_sandbox_id=sandbox.id))
        except Exception as exc:
            print(f"removing sandbox {sandbox.id} failed: {exc}")


def _cgroup_dirs(path: str) -> list[Path]:
    """The cgroup ``path`` in every hierarchy that has it."""
    found = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields = line.split()
        fstype = fields[fields.index("-") + 1]
        directory = Path(fields[4], path.lstrip("/"))
        if fstype in ("cgroup", "cgroup2") and directory.is_dir():
            found.append(directory)
    return found


def _remove_cgroup(path: str) -> None:
    """The pod's parent cgroup, which the kubelet would own (vc removes the pod's)."""
    for directory in _cgroup_dirs(path):
        with contextlib.suppress(OSError):
            directory.rmdir()


def _remove_netns(path: str) -> None:
    if os.path.exists(path):
        subprocess.run(["umount", "--lazy", path], check=False, capture_output=True)
        Path(path).unlink(missing_ok=True)


def http_get(netns: str, address: str, port: int, timeout: float = 120) -> str:
    """GET / from ``address`` over TCP, from inside the namespace at ``netns``."""

    def once() -> str:
        with socket.create_connection((address, port), timeout=10) as conn:
            conn.sendall(f"GET / HTTP/1.0\r\nHost: {address}\r\n\r\n".encode())
            chunks = []
            while chunk := conn.recv(4096):
                chunks.append(chunk)
            return b"".join(chunks).decode(errors="replace")

    fd = os.open(netns, os.O_RDONLY | os.O_CLOEXEC)
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                return run_in_netns(fd, once)
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(1)
    finally:
        os.close(fd)


def _sandbox_config(pb: Any, logs: Path, cgroup_parent: str) -> Any:
    return pb.PodSandboxConfig(
        metadata=pb.PodSandboxMetadata(name="vc-pod", uid="uid-vc-pod", namespace="default"),
        hostname="vc-pod",
        log_directory=str(logs),
        linux=pb.LinuxPodSandboxConfig(cgroup_parent=cgroup_parent),
    )


def _container_config(pb: Any, name: str, script: str) -> Any:
    return pb.ContainerConfig(
        metadata=pb.ContainerMetadata(name=name),
        image=pb.ImageSpec(image=BUSYBOX_IMAGE),
        command=["sh", "-c", script],
        log_path=f"{name}.log",
        linux=pb.LinuxContainerConfig(),
    )


def test_cri_pod_with_two_containers_in_one_vm(cri_env: CriEnv) -> None:
    cri, pb = cri_env.cri, cri_env.cri.pb
    version = cri.call("Version", pb.VersionRequest(version="v1"))
    assert (version.runtime_name, version.runtime_api_version) == ("containerd", "v1")
    for ref in (PAUSE_IMAGE, BUSYBOX_IMAGE):
        status = cri.call("ImageStatus", pb.ImageStatusRequest(image=pb.ImageSpec(image=ref)))
        assert ref in status.image.repo_tags

    sandbox_config = _sandbox_config(pb, cri_env.logs, cri_env.cgroup_parent)
    sandbox_id, pod_ip = _run_sandbox(cri_env, sandbox_config)
    ids = _start_server_and_worker(cri, sandbox_id, sandbox_config)
    [pod] = api.list_pods()
    assert sorted(c.id for c in pod.containers) == sorted([sandbox_id, *ids])
    assert pod.vm_pid is not None

    executed = _exec_sync(cri, ids[1], "echo out; echo err >&2; hostname")
    assert (executed.exit_code, executed.stdout, executed.stderr) == (0, b"out\nvc-pod\n", b"err\n")
    assert _exec_sync(cri, ids[1], "exit 7").exit_code == 7
    # The container's output reaches the CRI log file, in the CRI log format.
    assert _wait_for_log(cri_env.logs / "worker.log", " stdout F worker up\n")
    _check_memory_update(cri, ids[1])

    for container_id in ids:
        status = cri.call("ContainerStatus", pb.ContainerStatusRequest(container_id=container_id))
        assert status.status.state == pb.CONTAINER_RUNNING, status.status
    listed = cri.call(
        "ListContainers",
        pb.ListContainersRequest(filter=pb.ContainerFilter(pod_sandbox_id=sandbox_id)),
    )
    assert sorted(c.id for c in listed.containers) == sorted(ids)

    assert PAGE in http_get(cri_env.netns, pod_ip, HTTP_PORT)

    # containerd's runc shim reads these from the host cgroup of the pid that
    # vc-runtime reported (its shim's), not from the guest: numbers, but not
    # the container's own (docs/vc-runtime.md, Kubernetes).
    stats = cri.call("ContainerStats", pb.ContainerStatsRequest(container_id=ids[0])).stats
    assert stats.attributes.id == ids[0]
    assert stats.cpu.usage_core_nano_seconds.value > 0, stats
    assert stats.memory.working_set_bytes.value > 0, stats

    # The pod's cgroup holds its VM (QEMU, the pod daemon): the pod's usage is the VM's.
    vm_cgroup = Path(f"/proc/{pod.vm_pid}/cgroup").read_text()
    assert f":{cri_env.cgroup_parent}/{sandbox_id}\n" in vm_cgroup, vm_cgroup
    pod_stats = cri.call(
        "PodSandboxStats", pb.PodSandboxStatsRequest(pod_sandbox_id=sandbox_id)
    ).stats
    assert pod_stats.linux.cpu.usage_core_nano_seconds.value > 0, pod_stats
    assert pod_stats.linux.memory.working_set_bytes.value > 0, pod_stats

    for container_id in ids:
        cri.call("StopContainer", pb.StopContainerRequest(container_id=container_id, timeout=5))
        status = cri.call("ContainerStatus", pb.ContainerStatusRequest(container_id=container_id))
        assert status.status.state == pb.CONTAINER_EXITED
    cri.call("StopPodSandbox", pb.StopPodSandboxRequest(pod_sandbox_id=sandbox_id))
    cri.call("RemovePodSandbox", pb.RemovePodSandboxRequest(pod_sandbox_id=sandbox_id))
    _assert_nothing_left(cri_env, pod.vm_pid)
    assert _cgroup_dirs(f"{cri_env.cgroup_parent}/{sandbox_id}") == []


def _run_sandbox(cri_env: CriEnv, config: Any) -> tuple[str, str]:
    """RunPodSandbox with the vc handler; the sandbox's id and CNI address."""
    cri, pb = cri_env.cri, cri_env.cri.pb
    request = pb.RunPodSandboxRequest(config=config, runtime_handler=HANDLER)
    sandbox_id: str = cri.call("RunPodSandbox", request).pod_sandbox_id
    sandbox = cri.call(
        "PodSandboxStatus", pb.PodSandboxStatusRequest(pod_sandbox_id=sandbox_id, verbose=True)
    )
    spec = json.loads(sandbox.info["info"])["runtimeSpec"]
    cri_env.pod_netns.extend(
        ns["path"] for ns in spec["linux"]["namespaces"] if ns["type"] == "network"
    )
    assert sandbox.status.state == pb.SANDBOX_READY
    pod_ip: str = sandbox.status.network.ip
    assert pod_ip.startswith("198.51.100."), sandbox.status
    return sandbox_id, pod_ip


def start_containers(
    cri: Cri, sandbox_id: str, sandbox_config: Any, scripts: tuple[tuple[str, str], ...]
) -> list[str]:
    """A container per (name, script) in the sandbox, created, then started."""
    pb = cri.pb
    ids: list[str] = [
        cri.call(
            "CreateContainer",
            pb.CreateContainerRequest(
                pod_sandbox_id=sandbox_id,
                config=_container_config(pb, name, script),
                sandbox_config=sandbox_config,
            ),
        ).container_id
        for name, script in scripts
    ]
    for container_id in ids:
        cri.call("StartContainer", pb.StartContainerRequest(container_id=container_id))
    return ids


def _start_server_and_worker(cri: Cri, sandbox_id: str, sandbox_config: Any) -> list[str]:
    """An HTTP server and a worker in the sandbox, created and started."""
    server = (
        f"mkdir -p /www && echo '{PAGE}' > /www/index.html && exec httpd -f -p {HTTP_PORT} -h /www"
    )
    scripts = (("server", server), ("worker", "echo worker up; exec sleep 1000000"))
    return start_containers(cri, sandbox_id, sandbox_config, scripts)


def _exec_sync(cri: Cri, container_id: str, script: str) -> Any:
    request = cri.pb.ExecSyncRequest(
        container_id=container_id, cmd=["sh", "-c", script], timeout=120
    )
    return cri.call("ExecSync", request)


def _check_memory_update(cri: Cri, container_id: str) -> None:
    """UpdateContainerResources reaches the container's cgroup in the guest."""
    limit = 256 * 1024 * 1024
    resources = cri.pb.LinuxContainerResources(memory_limit_in_bytes=limit)
    cri.call(
        "UpdateContainerResources",
        cri.pb.UpdateContainerResourcesRequest(container_id=container_id, linux=resources),
    )
    seen = _exec_sync(
        cri, container_id, "cat /sys/fs/cgroup$(cut -d: -f3 /proc/self/cgroup)/memory.max"
    )
    assert seen.stdout == f"{limit}\n".encode(), seen


def _assert_nothing_left(cri_env: CriEnv, vm_pid: int | None) -> None:
    """No sandbox, vc pod, QEMU, tap, veth, CNI namespace or containerd mount."""
    assert cri_env.cri.call("ListPodSandbox", cri_env.cri.pb.ListPodSandboxRequest()).items == []
    assert api.list_pods() == []
    assert vm_pid is not None
    assert not _is_qemu(vm_pid)
    assert cri_env.pod_netns
    assert not [path for path in cri_env.pod_netns if os.path.exists(path)]
    assert tun_links(cri_env.netns) == []
    assert inside(cri_env.netns, _veths) == []
    assert mounts.mounts_under(cri_env.containerd.base) == []


def _wait_for_log(path: Path, line: str, timeout: float = 60) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and line in path.read_text(errors="replace"):
            return True
        time.sleep(0.5)
    return False


def _is_qemu(pid: int) -> bool:
    try:
        return b"qemu" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def _veths(ipr: Any) -> list[str]:
    return [
        link.get_attr("IFLA_IFNAME")
        for link in ipr.get_links()
        if link.get_nested("IFLA_LINKINFO", "IFLA_INFO_KIND") == "veth"
    ]
