"""vc-runtime's commands against real pod VMs, and its error paths."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest

from virtcontainers import api, oci

VC_RUNTIME = str(Path(sys.executable).with_name("vc-runtime"))
CRI_TYPE = "io.kubernetes.cri.container-type"
CRI_SANDBOX = "io.kubernetes.cri.sandbox-id"


def bundle(tmp: Path, name: str, rootfs: Path, args: list[str], **annotations: str) -> Path:
    directory = tmp / f"bundle-{name}"
    directory.mkdir()
    spec: dict[str, Any] = oci.default_spec()
    spec["process"]["terminal"] = False
    spec["process"]["args"] = args
    spec["root"] = {"path": str(rootfs), "readonly": False}
    spec["annotations"] = annotations
    if annotations.get(CRI_TYPE) == "container":
        # As containerd's CRI plugin writes it: ipc and uts are the sandbox's (host paths).
        for namespace in spec["linux"]["namespaces"]:
            if namespace["type"] in ("ipc", "uts"):
                namespace["path"] = f"/proc/4242/ns/{namespace['type']}"
    (directory / "config.json").write_text(json.dumps(spec))
    return directory


class Runtime:
    def __init__(self, root: Path) -> None:
        self.root = root

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
def test_cri_sandbox_and_two_containers_share_one_vm(
    runtime: Runtime, tmp_path: Path, busybox_rootfs: Path
) -> None:
    sandbox = bundle(
        tmp_path,
        "sb",
        busybox_rootfs,
        ["sleep", "1000"],
        **{CRI_TYPE: "sandbox", CRI_SANDBOX: "sb1"},
    )
    runtime("create", "--bundle", str(sandbox), "sb1")
    runtime("start", "sb1")
    for name in ("app1", "app2"):
        member = bundle(
            tmp_path,
            name,
            busybox_rootfs,
            ["sleep", "1000"],
            **{CRI_TYPE: "container", CRI_SANDBOX: "sb1"},
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
