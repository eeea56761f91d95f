"""virtcontainers.oci: loading and translating realistic podman and containerd bundles."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from virtcontainers import spec as guest_spec
from virtcontainers.config import Cmd, User
from virtcontainers.oci import Bundle, PodRole, load_bundle
from virtcontainers.oci.namespaces import Peer
from virtcontainers.volumes import Mount

SECCOMP = {
    "defaultAction": "SCMP_ACT_ERRNO",
    "defaultErrnoRet": 38,
    "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
    "syscalls": [{"names": ["read", "write", "exit_group"], "action": "SCMP_ACT_ALLOW"}],
}
CAPS = ["CAP_CHOWN", "CAP_KILL", "CAP_NET_BIND_SERVICE"]


def write_bundle(directory: Path, spec: dict[str, Any], rootfs: str = "rootfs") -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / rootfs).mkdir(exist_ok=True)
    (directory / "config.json").write_text(json.dumps(spec))
    return directory


def podman_spec(tmp: Path) -> dict[str, Any]:
    """What podman 4 writes for `podman run --user 1000:1000 --group-add 10 -v VOL:/data:ro`."""
    userdata = tmp / "storage" / "userdata"
    (userdata / "shm").mkdir(parents=True)
    for name in ("hosts", "resolv.conf", "hostname", ".containerenv"):
        (userdata / name).write_text(f"{name}\n")
    (tmp / "vol").mkdir()
    hook = tmp / "hook.sh"
    hook.write_text("#!/bin/sh\ncat > /dev/null\n")
    hook.chmod(0o755)
    return {
        "ociVersion": "1.0.2-dev",
        "process": {
            "terminal": True,
            "user": {"uid": 1000, "gid": 1000, "additionalGids": [10, 20], "umask": 18},
            "args": ["/bin/sh", "-c", "echo hi"],
            "env": ["PATH=/usr/bin:/bin", "TERM=xterm", "container=podman", "HOME=/home/u"],
            "cwd": "/home/u",
            "capabilities": {"bounding": CAPS, "effective": CAPS, "permitted": CAPS},
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
            "noNewPrivileges": True,
            "oomScoreAdj": 100,
            "apparmorProfile": "containers-default-0.50.0",
            "selinuxLabel": "system_u:system_r:container_t:s0:c1,c2",
        },
        "root": {"path": str(tmp / "storage" / "merged"), "readonly": True},
        "hostname": "3f5a9c2e1b7d",
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc",
             "options": ["nosuid", "noexec", "nodev"]},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
             "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
            {"destination": "/sys", "type": "sysfs", "source": "sysfs",
             "options": ["nosuid", "noexec", "nodev", "ro"]},
            {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
             "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"]},
            {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
             "options": ["nosuid", "noexec", "nodev"]},
            {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
             "options": ["rprivate", "nosuid", "noexec", "nodev", "relatime", "ro"]},
            {"destination": "/data", "type": "bind", "source": str(tmp / "vol"),
             "options": ["ro", "rbind", "rprivate"]},
            {"destination": "/etc/hosts", "type": "bind", "source": str(userdata / "hosts"),
             "options": ["bind", "rprivate"]},
            {"destination": "/dev/shm", "type": "bind", "source": str(userdata / "shm"),
             "options": ["bind", "rprivate", "nosuid", "noexec", "nodev"]},
            {"destination": "/etc/resolv.conf", "type": "bind",
             "source": str(userdata / "resolv.conf"), "options": ["bind", "rprivate"]},
            {"destination": "/etc/hostname", "type": "bind",
             "source": str(userdata / "hostname"), "options": ["bind", "rprivate"]},
            {"destination": "/run/.containerenv", "type": "bind",
             "source": str(userdata / ".containerenv"), "options": ["bind", "rprivate"]},
        ],
        "hooks": {"prestart": [{"path": str(hook), "args": ["hook.sh", "prestart"]}]},
        "annotations": {
            "io.container.manager": "libpod", "io.podman.annotations.autoremove": "FALSE",
        },
        "linux": {
            "sysctl": {"net.ipv4.ping_group_range": "0 0"},
            "resources": {
                "devices": [
                    {"allow": False, "access": "rwm"},
                    {"allow": True, "type": "c", "major": 10, "minor": 229, "access": "rwm"},
                ],
                "pids": {"limit": 2048},
            },
            "cgroupsPath": "machine.slice:libpod:3f5a9c2e1b7d",
            "namespaces": [
                {"type": "pid"},
                {"type": "network", "path": "/run/netns/netns-1b2c3d"},
                {"type": "ipc"},
                {"type": "uts"},
                {"type": "mount"},
                {"type": "cgroup"},
            ],
            "devices": [
                {"path": "/dev/fuse", "type": "c", "major": 10, "minor": 229, "fileMode": 438},
                {"path": "/dev/null", "type": "c", "major": 1, "minor": 3, "fileMode": 438},
            ],
            "seccomp": SECCOMP,
            "maskedPaths": ["/proc/acpi", "/proc/kcore", "/sys/firmware"],
            "readonlyPaths": ["/proc/bus", "/proc/sys"],
            "mountLabel": "system_u:object_r:container_file_t:s0:c1,c2",
        },
    }  # fmt: skip


@pytest.fixture
def podman(tmp_path: Path) -> Bundle:
    spec = podman_spec(tmp_path)
    (tmp_path / "storage" / "merged").mkdir(parents=True)
    bundle = tmp_path / "userdata-bundle"
    bundle.mkdir()
    (bundle / "config.json").write_text(json.dumps(spec))
    return load_bundle(bundle)


def test_podman_bundle_identity(podman: Bundle, tmp_path: Path) -> None:
    assert podman.path == tmp_path / "userdata-bundle"
    assert podman.rootfs == tmp_path / "storage" / "merged"
    assert podman.rootfs.is_absolute()
    assert podman.role is PodRole.STANDALONE
    assert podman.sandbox_id is None
    assert podman.spec["hooks"]["prestart"][0]["args"] == ["hook.sh", "prestart"]


def test_podman_process(podman: Bundle) -> None:
    assert podman.process_cmd() == Cmd(
        args=("/bin/sh", "-c", "echo hi"),
        env=("PATH=/usr/bin:/bin", "TERM=xterm", "container=podman", "HOME=/home/u"),
        cwd="/home/u",
        user=User(1000, 1000, (10, 20)),
        terminal=True,
        runtime_settings=podman.process_cmd().runtime_settings,
    )
    config = podman.container_config("c1")
    assert config.oci is not None and "process" not in config.oci
    process = config.cmd.runtime_settings
    assert process is not None
    assert set(process) == {"capabilities", "rlimits", "noNewPrivileges", "oomScoreAdj"}
    assert process["rlimits"] == [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}]
    assert process["capabilities"]["bounding"] == CAPS
    assert process["noNewPrivileges"] is True
    assert process["oomScoreAdj"] == 100
    assert "apparmorProfile" not in process
    assert "selinuxLabel" not in process


def test_podman_container_config(podman: Bundle, tmp_path: Path) -> None:
    config = podman.container_config("3f5a9c2e1b7d")
    userdata = tmp_path / "storage" / "userdata"
    assert config.id == "3f5a9c2e1b7d"
    assert config.rootfs == tmp_path / "storage" / "merged"
    assert config.read_only_rootfs is True
    assert config.hostname == "3f5a9c2e1b7d"
    assert config.annotations["io.container.manager"] == "libpod"
    private = ("bind", "rprivate")
    assert config.mounts == (
        Mount(str(tmp_path / "vol"), "/data", read_only=True, options=("rbind", "rprivate")),
        Mount(str(userdata / "hosts"), "/etc/hosts", options=private),
        Mount(str(userdata / "shm"), "/dev/shm", options=(*private, "nosuid", "noexec", "nodev")),
        Mount(str(userdata / "resolv.conf"), "/etc/resolv.conf", options=private),
        Mount(str(userdata / "hostname"), "/etc/hostname", options=private),
        Mount(str(userdata / ".containerenv"), "/run/.containerenv", options=private),
    )
    oci = config.oci
    assert oci is not None
    assert [m["destination"] for m in oci["mounts"]] == [
        "/proc", "/dev", "/sys", "/dev/pts", "/dev/mqueue", "/sys/fs/cgroup",
    ]  # fmt: skip
    assert "hooks" not in oci
    assert "root" not in oci
    linux = oci["linux"]
    assert linux["namespaces"] == [
        {"type": "pid"},
        {"type": "network", "path": "/proc/1/ns/net"},
        *({"type": t} for t in ("ipc", "uts", "mount", "cgroup")),
    ]
    assert linux["cgroupsPath"] == "/vc/3f5a9c2e1b7d"
    assert linux["devices"] == [  # crun makes them in the guest, as it would on a host
        {"path": "/dev/fuse", "type": "c", "major": 10, "minor": 229, "fileMode": 438},
        {"path": "/dev/null", "type": "c", "major": 1, "minor": 3, "fileMode": 438},
    ]
    assert linux["resources"]["devices"][1]["major"] == 10  # cgroup device rules are kept
    assert linux["resources"]["pids"] == {"limit": 2048}
    assert linux["sysctl"] == {"net.ipv4.ping_group_range": "0 0"}
    assert linux["seccomp"] == SECCOMP
    assert linux["maskedPaths"] == ["/proc/acpi", "/proc/kcore", "/sys/firmware"]
    assert linux["readonlyPaths"] == ["/proc/bus", "/proc/sys"]
    assert "mountLabel" not in linux
    assert oci["annotations"] == dict(podman.annotations)


def test_podman_warnings(podman: Bundle) -> None:
    text = "\n".join(podman.warnings)
    for expected in (
        "config.json: process.user.umask: dropped",
        "config.json: process.apparmorProfile: 'containers-default-0.50.0' dropped",
        "config.json: process.selinuxLabel:",
        "config.json: linux.cgroupsPath: 'machine.slice:libpod:3f5a9c2e1b7d' replaced",
        "config.json: linux.mountLabel: dropped",
    ):
        assert expected in text, expected
    assert not any("mounts[" in w for w in podman.warnings)  # bind options are all applied
    assert not any("devices" in w for w in podman.warnings)
    assert not any("network" in w for w in podman.warnings)


def test_the_network_namespace_becomes_the_pods(podman: Bundle) -> None:
    """The engine's network namespace is put on the pod's VM; the container joins
    the guest's, which holds the pod's interfaces."""
    assert podman.netns == "/run/netns/netns-1b2c3d"
    assert podman.pod_config("p").netns == "/run/netns/netns-1b2c3d"
    oci = podman.container_config("c1").oci
    assert oci is not None
    network = [ns for ns in oci["linux"]["namespaces"] if ns["type"] == "network"]
    assert network == [{"type": "network", "path": "/proc/1/ns/net"}]


def test_podman_guest_spec_through_library(podman: Bundle) -> None:
    """spec.container_spec makes the process of the Cmd and its runtime settings."""
    config = podman.container_config("c1")
    final = guest_spec.container_spec(config, "pod")
    process = final["process"]
    assert process["user"] == {"uid": 1000, "gid": 1000, "additionalGids": [10, 20]}
    assert process["args"] == ["/bin/sh", "-c", "echo hi"]
    assert process["oomScoreAdj"] == 100
    assert process["rlimits"][0]["type"] == "RLIMIT_NOFILE"
    assert final["root"] == {"path": guest_spec.guest_rootfs("c1"), "readonly": True}
    assert final["hostname"] == "3f5a9c2e1b7d"
    binds = [m for m in final["mounts"] if m["type"] == "bind"]
    assert [m["destination"] for m in binds][:2] == ["/data", "/etc/hosts"]
    assert binds[0]["options"] == ["rbind", "ro", "rprivate"]
    shm = next(m for m in binds if m["destination"] == "/dev/shm")
    assert shm["options"] == ["rbind", "rw", "rprivate", "nosuid", "noexec", "nodev"]
    assert binds[0]["source"] == guest_spec.guest_mount_source("c1", 0)
    json.dumps(final)  # JSON-safe all the way


def test_podman_pod_config(podman: Bundle) -> None:
    pod = podman.pod_config("p1")
    assert pod.id == "p1"
    assert pod.containers == ()
    assert pod.hostname == "3f5a9c2e1b7d"
    assert (pod.resources.vcpus, pod.resources.memory_mib) == (1, 512)


def containerd_spec(tmp: Path, sandbox: str) -> dict[str, Any]:
    """What containerd 1.6's CRI plugin writes for a container of a pod."""
    sbdir = tmp / "sandboxes" / sandbox
    (sbdir / "shm").mkdir(parents=True)
    for name in ("hosts", "hostname", "resolv.conf"):
        (sbdir / name).write_text(name)
    term = tmp / "termination-log"
    term.write_text("")
    return {
        "ociVersion": "1.0.2-dev",
        "process": {
            "user": {"uid": 0, "gid": 0, "additionalGids": [0, 1, 2, 3, 4, 6, 10, 11, 20, 26, 27]},
            "args": ["nginx", "-g", "daemon off;"],
            "env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                    "HOSTNAME=web-0", "KUBERNETES_SERVICE_HOST=10.96.0.1"],
            "cwd": "/",
            "capabilities": {"bounding": CAPS, "effective": CAPS, "permitted": CAPS},
            "noNewPrivileges": False,
            "oomScoreAdj": 1000,
        },
        "root": {"path": "rootfs"},
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc",
             "options": ["nosuid", "noexec", "nodev"]},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
             "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
            {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
             "options": ["nosuid", "noexec", "nodev", "relatime", "ro"]},
            {"destination": "/etc/hosts", "type": "bind", "source": str(sbdir / "hosts"),
             "options": ["rbind", "rprivate", "rw"]},
            {"destination": "/dev/termination-log", "type": "bind", "source": str(term),
             "options": ["rbind", "rprivate", "rw"]},
            {"destination": "/etc/hostname", "type": "bind", "source": str(sbdir / "hostname"),
             "options": ["rbind", "rprivate", "rw"]},
            {"destination": "/etc/resolv.conf", "type": "bind",
             "source": str(sbdir / "resolv.conf"), "options": ["rbind", "rprivate", "rw"]},
            {"destination": "/dev/shm", "type": "bind", "source": str(sbdir / "shm"),
             "options": ["rbind", "rprivate", "rw"]},
        ],
        "annotations": {
            "io.kubernetes.cri.container-name": "web",
            "io.kubernetes.cri.container-type": "container",
            "io.kubernetes.cri.image-name": "docker.io/library/nginx:latest",
            "io.kubernetes.cri.sandbox-id": sandbox,
            "io.kubernetes.cri.sandbox-name": "web-0",
            "io.kubernetes.cri.sandbox-namespace": "default",
        },
        "linux": {
            "resources": {
                "devices": [{"allow": False, "access": "rwm"}],
                "memory": {"limit": 268435456},
                "cpu": {"shares": 256, "quota": 50000, "period": 100000},
            },
            "cgroupsPath": f"kubepods-burstable-pod1234.slice:cri-containerd:{sandbox[:12]}",
            "namespaces": [
                {"type": "pid"},
                {"type": "ipc", "path": "/proc/4242/ns/ipc"},
                {"type": "uts", "path": "/proc/4242/ns/uts"},
                {"type": "mount"},
                {"type": "network", "path": "/proc/4242/ns/net"},
            ],
            "maskedPaths": ["/proc/acpi", "/proc/kcore"],
            "readonlyPaths": ["/proc/bus"],
        },
    }  # fmt: skip


SANDBOX_ID = "a1b2c3d4" * 8  # a 64-hex containerd sandbox id


def test_containerd_container(tmp_path: Path) -> None:
    bundle = load_bundle(write_bundle(tmp_path / "b", containerd_spec(tmp_path, SANDBOX_ID)))
    assert bundle.role is PodRole.CONTAINER
    assert bundle.sandbox_id == SANDBOX_ID
    assert bundle.rootfs == tmp_path / "b" / "rootfs"  # relative to the bundle
    cmd = bundle.process_cmd()
    assert cmd.user == User(0, 0, (0, 1, 2, 3, 4, 6, 10, 11, 20, 26, 27))
    assert cmd.terminal is False
    assert [(ns.kind, ns.pid) for ns in bundle.namespace_paths] == [
        ("ipc", 4242), ("uts", 4242), ("network", 4242),
    ]  # fmt: skip
    sandbox = {4242: Peer(SANDBOX_ID, SANDBOX_ID)}.get
    config = bundle.resolve_namespaces(sandbox).container_config("e" * 64)
    assert dict(config.join_namespaces) == {"ipc": SANDBOX_ID, "uts": SANDBOX_ID}
    assert config.read_only_rootfs is False
    assert config.hostname is None
    assert [m.destination for m in config.mounts] == [
        "/etc/hosts", "/dev/termination-log", "/etc/hostname", "/etc/resolv.conf", "/dev/shm",
    ]  # fmt: skip
    assert not any(m.read_only for m in config.mounts)
    assert Path(config.mounts[1].source).is_file()  # a bind of a file
    assert config.oci is not None
    linux = config.oci["linux"]
    assert linux["namespaces"] == [
        *({"type": t} for t in ("pid", "ipc", "uts", "mount")),
        {"type": "network", "path": "/proc/1/ns/net"},
    ]
    assert linux["cgroupsPath"] == "/vc/" + "e" * 64
    assert linux["resources"]["memory"] == {"limit": 268435456}
    text = "\n".join(bundle.warnings)
    assert "namespaces" not in text
    assert bundle.pod_config(SANDBOX_ID).netns is None  # a member shares its sandbox's
    assert "cri-containerd" in text
    # containerd's binds use only rbind/rprivate/rw: nothing lost, nothing said.
    assert not any("mounts[" in w for w in bundle.warnings)
    pod = bundle.pod_config(SANDBOX_ID)  # 256 MiB limit + 256 overhead; 0.5 CPU
    assert (pod.resources.vcpus, pod.resources.memory_mib) == (1, 512)
    assert pod.hostname is None


def test_user_namespace_and_mappings_kept(tmp_path: Path) -> None:
    spec = containerd_spec(tmp_path, SANDBOX_ID)
    spec["linux"]["namespaces"].append({"type": "user"})
    spec["linux"]["uidMappings"] = [{"containerID": 0, "hostID": 100000, "size": 65536}]
    spec["linux"]["gidMappings"] = [{"containerID": 0, "hostID": 100000, "size": 65536}]
    bundle = load_bundle(write_bundle(tmp_path / "b", spec))
    config = bundle.resolve_namespaces({4242: Peer(SANDBOX_ID, SANDBOX_ID)}.get).container_config(
        "c"
    )
    assert config.oci is not None
    assert {"type": "user"} in config.oci["linux"]["namespaces"]
    assert config.oci["linux"]["uidMappings"][0]["hostID"] == 100000


def test_guest_side_binds(tmp_path: Path) -> None:
    """Binds of standard device nodes and of /proc, /sys are made from the guest's own."""
    spec = minimal_spec()
    spec["mounts"] = [
        {"destination": "/dev/kmsg", "type": "bind", "source": "/dev/null", "options": ["bind"]},
        {"destination": "/sys", "type": "none", "source": "/sys", "options": ["rbind", "ro"]},
        {"destination": "/mnt", "source": "data", "options": ["rbind"]},  # relative: bundle's
    ]
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "data").mkdir()
    bundle = load_bundle(write_bundle(tmp_path / "b", spec))
    config = bundle.container_config("c")
    assert config.oci is not None
    assert [m["source"] for m in config.oci["mounts"]] == ["/dev/null", "/sys"]
    assert config.mounts == (Mount(str(tmp_path / "b" / "data"), "/mnt", options=("rbind",)),)
    assert any("served from the guest's /sys" in w for w in bundle.warnings)


def minimal_spec() -> dict[str, Any]:
    return {
        "ociVersion": "1.1.0",
        "root": {"path": "rootfs"},
        "process": {"args": ["true"], "cwd": "/"},
    }


def test_minimal_bundle(tmp_path: Path) -> None:
    bundle = load_bundle(write_bundle(tmp_path / "b", minimal_spec()))
    assert bundle.warnings == ()
    cmd = bundle.process_cmd()
    assert (cmd.args, cmd.env, cmd.user, cmd.terminal) == (("true",), (), User(), False)
    assert cmd.runtime_settings == {}  # the spec's: none, not the library's defaults
    config = bundle.container_config("c")
    assert config.oci is not None
    assert config.oci["linux"] == {"cgroupsPath": "/vc/c"}


def test_bundle_without_process(tmp_path: Path) -> None:
    spec = minimal_spec()
    del spec["process"]
    bundle = load_bundle(write_bundle(tmp_path / "b", spec))
    with pytest.raises(Exception, match=r"^config.json: process: is required to run a container"):
        bundle.container_config("c")
    assert bundle.pod_config("p").id == "p"


def test_relative_bundle_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_bundle(tmp_path / "b", minimal_spec())
    monkeypatch.chdir(tmp_path)
    bundle = load_bundle(Path("b"))
    assert bundle.path == tmp_path / "b"
    assert bundle.rootfs == tmp_path / "b" / "rootfs"


def test_dropped_platform_sections(tmp_path: Path) -> None:
    spec = minimal_spec()
    spec["vm"] = {"hypervisor": {"path": "/usr/bin/qemu"}, "kernel": {"path": "/vmlinuz"}}
    spec["linux"] = {"intelRdt": {"closID": "x"}, "personality": {"domain": "LINUX"}}
    bundle = load_bundle(write_bundle(tmp_path / "b", spec))
    assert "vm" not in bundle.guest_spec
    assert bundle.guest_spec["linux"] == {"personality": {"domain": "LINUX"}}
    assert "config.json: vm: dropped: the guest is Linux run by crun" in bundle.warnings
    assert "config.json: linux.intelRdt: dropped: the VM has no Intel RDT" in bundle.warnings
