"""vc-runtime's commands against real pod VMs, and its error paths."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from virtcontainers import api, oci
from virtcontainers.storage import mounts

VC_RUNTIME = str(Path(sys.executable).with_name("vc-runtime"))
CRI_TYPE = "io.kubernetes.cri.container-type"
CRI_SANDBOX = "io.kubernetes.cri.sandbox-id"


def bundle(
    tmp: Path,
    name: str,
    rootfs: Path,
    args: list[str],
    *,
    sandbox_pid: int | None = None,
    edit: Callable[[dict[str, Any]], None] | None = None,
    annotations: dict[str, str] | None = None,
) -> Path:
    """A bundle; ``sandbox_pid``: its ipc and uts are those of the container with
    that pid (its sandbox's, as vc-runtime reports it), as containerd writes it."""
    directory = tmp / f"bundle-{name}"
    directory.mkdir()
    spec: dict[str, Any] = oci.default_spec()
    spec["process"]["terminal"] = False
    spec["process"]["args"] = args
    spec["root"] = {"path": str(rootfs), "readonly": False}
    spec["annotations"] = annotations or {}
    if spec["annotations"].get(CRI_TYPE) == "sandbox":
        spec["linux"]["namespaces"].append({"type": "network"})  # not the node's (hostNetwork)
    if sandbox_pid is not None:
        for namespace in spec["linux"]["namespaces"]:
            if namespace["type"] in ("ipc", "uts"):
                namespace["path"] = f"/proc/{sandbox_pid}/ns/{namespace['type']}"
    if edit is not None:
        edit(spec)
    (directory / "config.json").write_text(json.dumps(spec))
    return directory


class Runtime:
    def __init__(self, root: Path, umask: int = -1) -> None:
        self.root = root
        self.umask = umask

    def __call__(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run vc-runtime; output goes to files, since a created container keeps its stdio."""
        with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
            process = subprocess.run(
                [VC_RUNTIME, "--root", str(self.root), *args],
                stdout=out,
                stderr=err,
                timeout=300,
                check=False,
                stdin=subprocess.DEVNULL,
                umask=self.umask,
            )
            out.seek(0)
            err.seek(0)
            result = subprocess.CompletedProcess(
                process.args, process.returncode, out.read(), err.read()
            )
        if check:
            assert result.returncode == 0, f"{args}: {result.stderr}"
        return result

    def state(self, container_id: str) -> dict[str, Any]:
        state: dict[str, Any] = json.loads(self("state", container_id).stdout)
        return state

    def wait_for(self, container_id: str, status: str) -> None:
        deadline = time.monotonic() + 60
        while self.state(container_id)["status"] != status:
            assert time.monotonic() < deadline, f"{container_id} never became {status}"
            time.sleep(0.1)


@pytest.fixture
def runtime(run_root: Path, tmp_path: Path) -> Runtime:
    return Runtime(tmp_path / "vc-runtime")


@pytest.mark.vm
def test_lifecycle_and_errors(runtime: Runtime, tmp_path: Path, busybox_rootfs: Path) -> None:
    good = bundle(tmp_path, "good", busybox_rootfs, ["sleep", "1000"])
    pid_file = tmp_path / "pid"
    runtime("create", "--bundle", str(good), "--pid-file", str(pid_file), "c1")
    shim_pid = int(pid_file.read_text())
    assert runtime.state("c1")["status"] == "created"
    assert runtime.state("c1")["pid"] == shim_pid

    duplicate = runtime("create", "--bundle", str(good), "c1", check=False)
    assert (duplicate.returncode, duplicate.stderr.strip()) == (1, "container with id exists: c1")

    runtime("start", "c1")
    assert runtime.state("c1")["status"] == "running"
    listed = json.loads(runtime("list", "--format", "json").stdout)
    assert [c["id"] for c in listed] == ["c1"]
    assert json.loads(runtime("ps", "--format", "json", "c1").stdout)
    runtime("update", "--memory", "128m", "--pids-limit", "40", "c1")
    [event] = [json.loads(line) for line in runtime("events", "--stats", "c1").stdout.splitlines()]
    assert event["data"]["memory"]["usage"]["limit"] == 128 << 20
    assert event["data"]["pids"] == {"current": 1, "limit": 40}

    refused = runtime("delete", "c1", check=False)
    assert refused.returncode == 1
    assert refused.stderr.strip() == "cannot delete container c1 that is not stopped: running"

    runtime("kill", "c1", "KILL")
    runtime.wait_for("c1", "stopped")
    stopped = runtime("kill", "c1", "TERM", check=False)
    assert (stopped.returncode, stopped.stderr.strip()) == (1, "container not running")

    runtime("delete", "c1")
    assert runtime("state", "c1", check=False).stderr.strip() == "container c1 does not exist"
    assert api.list_pods() == []


@pytest.mark.vm
def test_run_exits_with_the_container_status(
    runtime: Runtime, tmp_path: Path, busybox_rootfs: Path
) -> None:
    script = bundle(tmp_path, "run", busybox_rootfs, ["sh", "-c", "echo out; echo err >&2; exit 7"])
    result = runtime("run", "--bundle", str(script), "r1", check=False)
    assert (result.returncode, result.stdout, result.stderr) == (7, "out\n", "err\n")
    assert runtime("list", "-q").stdout == ""
    assert api.list_pods() == []


@pytest.mark.vm
def test_a_read_only_root_gets_the_mount_points_it_lacks(
    runtime: Runtime, tmp_path: Path, busybox_rootfs: Path
) -> None:
    # What containerd's CRI does to a pause image: a read-only root, and a file
    # bound where the image has none. runc creates the mount point, then makes
    # the root read-only; so must the guest, without writing to the source.
    added = tmp_path / "resolv.conf"
    added.write_text("nameserver 192.0.2.53\n")

    def read_only_with_a_bind(spec: dict[str, Any]) -> None:
        spec["root"]["readonly"] = True
        spec["mounts"].append(
            {"destination": "/etc/resolv.conf", "type": "bind", "source": str(added),
             "options": ["rbind", "ro"]}
        )  # fmt: skip

    script = "cat /etc/resolv.conf; touch /new 2>&1; echo status=$?"
    made = bundle(tmp_path, "ro", busybox_rootfs, ["sh", "-c", script], edit=read_only_with_a_bind)
    result = runtime("run", "--bundle", str(made), "ro1", check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout == (
        "nameserver 192.0.2.53\ntouch: /new: Read-only file system\nstatus=1\n"
    )
    assert not (busybox_rootfs / "etc" / "resolv.conf").exists()
    assert api.list_pods() == []


@pytest.mark.vm
def test_cri_sandbox_and_two_containers_share_one_vm(
    runtime: Runtime, tmp_path: Path, busybox_rootfs: Path
) -> None:
    sandbox = bundle(
        tmp_path,
        "sb",
        busybox_rootfs,
        ["sleep", "1000"],
        annotations={CRI_TYPE: "sandbox", CRI_SANDBOX: "sb1"},
    )
    runtime("create", "--bundle", str(sandbox), "sb1")
    runtime("start", "sb1")
    for name in ("app1", "app2"):
        member = bundle(
            tmp_path,
            name,
            busybox_rootfs,
            ["sleep", "1000"],
            sandbox_pid=runtime.state("sb1")["pid"],
            annotations={CRI_TYPE: "container", CRI_SANDBOX: "sb1"},
        )
        runtime("create", "--bundle", str(member), name)
        runtime("start", name)
    pods = api.list_pods()
    assert [p.id for p in pods] == ["sb1"]
    shared = "for ns in ipc uts pid; do readlink /proc/self/ns/$ns; done"
    seen = {
        name: runtime("exec", name, "sh", "-c", shared).stdout.split()
        for name in ("sb1", "app1", "app2")
    }
    assert seen["app1"][:2] == seen["app2"][:2] == seen["sb1"][:2]  # ipc and uts shared
    assert len({seen[name][2] for name in seen}) == 3  # each has its own pid namespace
    assert sorted(c.id for c in pods[0].containers) == ["app1", "app2", "sb1"]
    assert all(c.state.value == "running" for c in pods[0].containers)

    runtime("delete", "--force", "app1")
    assert sorted(c.id for c in api.pod_status("sb1").containers) == ["app2", "sb1"]
    runtime("delete", "--force", "sb1")
    assert api.list_pods() == []
    runtime("delete", "--force", "app2")
    assert runtime("list", "-q").stdout == ""


HOOK = """#!/bin/sh
printf '%s %s\\n' "$1" "$(cat)" >> "$2"
"""
MIB = 1024 * 1024
DEVICES: list[dict[str, Any]] = [
    {"path": "/dev/fuse", "type": "c", "major": 10, "minor": 229, "fileMode": 0o666},
    {"path": "/dev/sdz", "type": "b", "major": 8, "minor": 0, "fileMode": 0o660,
     "uid": 1000, "gid": 6},
    {"path": "/dev/ufoo", "type": "u", "major": 240, "minor": 1, "fileMode": 0o600},
    {"path": "/dev/myfifo", "type": "p", "fileMode": 0o644, "uid": 5, "gid": 7},
]  # fmt: skip
NAMESPACES = "for ns in ipc uts pid; do readlink /proc/self/ns/$ns; done"


@pytest.fixture
def shared_volume(tmp_path: Path) -> Iterator[Path]:
    """A directory that is a shared mount, as / is on systemd hosts."""
    volume = tmp_path / "volume"
    volume.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(volume)], check=True)
    try:
        subprocess.run(["mount", "--make-shared", str(volume)], check=True)
        (volume / "later").mkdir()
        yield volume
    finally:
        mounts.detach(volume / "later")
        mounts.detach(volume)


SANDBOX_POD = {CRI_TYPE: "sandbox", CRI_SANDBOX: "sb"}
MEMBER = {CRI_TYPE: "container", CRI_SANDBOX: "sb"}


@pytest.mark.vm
def test_spec_settings_are_applied_in_the_guest(
    run_root: Path, tmp_path: Path, busybox_rootfs: Path, shared_volume: Path
) -> None:
    """One CRI pod whose containers carry what a VM used to drop: kernel memory, a
    cpuset, hooks, device nodes, a sandbox's namespaces by pid, bind propagation
    and options, a user namespace (under a umask of 077, which once left the
    shared directories closed to a mapped root)."""
    runtime = Runtime(tmp_path / "vc-runtime", umask=0o077)
    start_sandbox(runtime, tmp_path, busybox_rootfs)
    start_devices_member(runtime, tmp_path, busybox_rootfs, shared_volume)
    start_user_namespace_member(runtime, tmp_path, busybox_rootfs)

    def far_cpu(spec: dict[str, Any]) -> None:
        spec["linux"]["resources"] = {"cpu": {"cpus": "3"}}

    wide = bundle(tmp_path, "cpu3", busybox_rootfs, ["true"], edit=far_cpu, annotations=MEMBER)
    refused = runtime("create", "--bundle", str(wide), "cpu3", check=False)
    assert refused.returncode == 1
    assert (
        "linux.resources.cpu.cpus names CPU 3, which this VM does not have (its CPUs: 0-1)"
        in refused.stderr
    )

    assert sorted(c.id for c in api.pod_status("sb").containers) == ["dev", "sb", "userns"]
    for name in ("dev", "userns", "sb", "cpu3"):
        runtime("delete", "--force", name)
    assert api.list_pods() == []
    assert runtime("list", "-q").stdout == ""


def start_sandbox(runtime: Runtime, tmp_path: Path, rootfs: Path) -> None:
    """Kernel memory is ignored; a cpuset sizes the VM; hooks run around start."""
    hooks_log, runtime_log = tmp_path / "hooks.log", tmp_path / "runtime.log"
    hook = tmp_path / "hook.sh"
    hook.write_text(HOOK)
    hook.chmod(0o755)

    def sandbox_spec(spec: dict[str, Any]) -> None:
        spec["linux"]["resources"] = {
            "memory": {"limit": 256 * MIB, "kernel": 64 * MIB, "kernelTCP": 16 * MIB},
            "cpu": {"cpus": "1"},  # CPU 1: the VM gets 2 vCPUs
        }
        spec["hooks"] = {
            stage: [{"path": str(hook), "args": ["hook.sh", stage, str(hooks_log)]}]
            for stage in ("startContainer", "poststart")
        }

    sandbox = bundle(
        tmp_path, "sb", rootfs, ["sleep", "1000"], edit=sandbox_spec, annotations=SANDBOX_POD
    )
    runtime("--log", str(runtime_log), "create", "--bundle", str(sandbox), "sb")
    runtime("start", "sb")
    with hooks_log.open("a") as log:
        log.write("start returned\n")
    stages = [line.split(" ", 1) for line in hooks_log.read_text().splitlines()]
    assert [stage[0] for stage in stages] == ["startContainer", "poststart", "start"]
    assert json.loads(stages[0][1])["status"] == "created"
    assert json.loads(stages[1][1])["status"] == "running"
    assert "linux.resources.memory.kernel: ignored" in runtime_log.read_text()
    cgroup = "grep -c ^processor /proc/cpuinfo; cd /sys/fs/cgroup; cat cpuset.cpus memory.max"
    assert runtime("exec", "sb", "sh", "-c", cgroup).stdout.split() == ["2", "1", str(256 * MIB)]


def start_devices_member(runtime: Runtime, tmp_path: Path, rootfs: Path, volume: Path) -> None:
    """Device nodes; the sandbox's ipc, uts and pid by its pid; an rslave, nosuid bind."""
    sandbox_pid = runtime.state("sb")["pid"]

    def devices_spec(spec: dict[str, Any]) -> None:
        spec["linux"]["devices"] = DEVICES
        for namespace in spec["linux"]["namespaces"]:
            if namespace["type"] == "pid":
                namespace["path"] = f"/proc/{sandbox_pid}/ns/pid"
        options = ["rbind", "rslave", "nosuid", "noexec", "ro"]
        spec["mounts"].append(
            {"destination": "/v", "type": "bind", "source": str(volume), "options": options}
        )

    devices = bundle(
        tmp_path,
        "dev",
        rootfs,
        ["sleep", "1000"],
        sandbox_pid=sandbox_pid,
        edit=devices_spec,
        annotations=MEMBER,
    )
    runtime("create", "--bundle", str(devices), "dev")
    runtime("start", "dev")
    nodes = "stat -c '%n %F %t:%T %a %u:%g' " + " ".join(d["path"] for d in DEVICES)
    assert runtime("exec", "dev", "sh", "-c", nodes).stdout.splitlines() == [
        "/dev/fuse character special file a:e5 666 0:0",
        "/dev/sdz block special file 8:0 660 1000:6",
        "/dev/ufoo character special file f0:1 600 0:0",
        "/dev/myfifo fifo 0:0 644 5:7",
    ]
    joined = runtime("exec", "dev", "sh", "-c", NAMESPACES).stdout
    assert joined == runtime("exec", "sb", "sh", "-c", NAMESPACES).stdout
    # rslave: a mount made on the host after the start reaches the container.
    later = volume / "later"
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(later)], check=True)
    (later / "file").write_text("mounted later")
    assert runtime("exec", "dev", "cat", "/v/later/file").stdout == "mounted later"
    options = runtime("exec", "dev", "sh", "-c", "grep ' /v ' /proc/self/mountinfo").stdout
    assert {"ro", "nosuid", "noexec"} <= set(options.split()[5].split(","))


def start_user_namespace_member(runtime: Runtime, tmp_path: Path, rootfs: Path) -> None:
    def userns_spec(spec: dict[str, Any]) -> None:
        spec["linux"]["namespaces"].append({"type": "user"})
        for key in ("uidMappings", "gidMappings"):
            spec["linux"][key] = [{"containerID": 0, "hostID": 100000, "size": 65536}]

    mapped = bundle(
        tmp_path, "userns", rootfs, ["sleep", "1000"], edit=userns_spec, annotations=MEMBER
    )
    runtime("create", "--bundle", str(mapped), "userns")
    runtime("start", "userns")
    seen = runtime("exec", "userns", "sh", "-c", "cat /proc/self/uid_map; id -u; ls -d /bin")
    assert seen.stdout.split() == ["0", "100000", "65536", "0", "/bin"]


def test_errors_without_a_vm(runtime: Runtime, tmp_path: Path) -> None:
    unknown = runtime("state", "nope", check=False)
    assert (unknown.returncode, unknown.stderr.strip()) == (1, "container nope does not exist")
    assert runtime("start", "nope", check=False).returncode == 1
    assert runtime("kill", "nope", check=False).returncode == 1
    assert runtime("delete", "nope", check=False).returncode == 1
    assert runtime("delete", "--force", "nope").returncode == 0

    missing = runtime("create", "--bundle", str(tmp_path / "absent"), "x", check=False)
    assert missing.returncode == 1 and "is not a directory" in missing.stderr

    malformed = tmp_path / "malformed"
    malformed.mkdir()
    (malformed / "config.json").write_text("{not json")
    bad = runtime("create", "--bundle", str(malformed), "x", check=False)
    assert bad.returncode == 1 and "config.json" in bad.stderr

    (malformed / "config.json").write_text(
        json.dumps({"ociVersion": "1.0.2", "process": {"args": "sh"}})
    )
    bad = runtime("create", "--bundle", str(malformed), "x", check=False)
    assert bad.returncode == 1 and "config.json" in bad.stderr

    bad_id = runtime("create", "--bundle", str(malformed), "../evil", check=False)
    assert bad_id.returncode == 1 and "container id" in bad_id.stderr

    for name, path, message in (
        ("host-ns", "/var/run/ipcns/1f2e", "is not a namespace a container in a VM can join"),
        ("no-vc-pid", "/proc/1/ns/ipc", "pid 1 is not a container of this runtime"),
        ("ns-type", "/proc/1/ns/uts", "is a namespace of type 'uts', but this entry is 'ipc'"),
    ):

        def join(spec: dict[str, Any], path: str = path) -> None:
            next(ns for ns in spec["linux"]["namespaces"] if ns["type"] == "ipc")["path"] = path

        joining = bundle(tmp_path, name, tmp_path, ["true"], edit=join)
        refused = runtime("create", "--bundle", str(joining), "x", check=False)
        assert refused.returncode == 1
        assert message in refused.stderr and "config.json: linux.namespaces[" in refused.stderr
    assert runtime("list", "-q").stdout == ""
    assert api.list_pods() == []


def test_spec_and_features(runtime: Runtime, tmp_path: Path) -> None:
    runtime("spec", "--bundle", str(tmp_path))
    spec = json.loads((tmp_path / "config.json").read_text())
    assert spec["process"]["args"] == ["sh"]
    again = runtime("spec", "--bundle", str(tmp_path), check=False)
    assert again.returncode == 1
    features = json.loads(runtime("features").stdout)
    assert features["ociVersionMax"].startswith("1.")
