"""Block-device rootfs: a loop device over an ext4 image as a container's root, in the VM."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from google.protobuf import empty_pb2
from google.protobuf.message import Message

from tests.integration.conftest import run_exec, shell
from tests.integration.test_vc_runtime import Runtime, bundle
from tests.loopdev import image_file, loop_device, make_ext4_image
from virtcontainers import api, oci
from virtcontainers.config import Cmd, ContainerConfig, PodConfig, Resources
from virtcontainers.errors import ConfigError
from virtcontainers.shim import ttrpc
from virtcontainers.shim.protos import EVENTS_SERVICE, TASK_SERVICE, event_service, task
from virtcontainers.store import Store

pytestmark = [pytest.mark.vm, pytest.mark.usefixtures("guest_image")]


def host_mount(device: Path, target: Path) -> subprocess.CompletedProcess[str]:
    target.mkdir(exist_ok=True)
    return subprocess.run(
        ["mount", "-t", "ext4", str(device), str(target)],
        check=False,
        capture_output=True,
        text=True,
    )


def test_a_loop_device_is_the_root_and_the_host_cannot_mount_it_meanwhile(
    no_leaks: Path, busybox_rootfs: Path, tmp_path: Path
) -> None:
    image = make_ext4_image(tmp_path / "root.img", busybox_rootfs, 32)
    with loop_device(image) as device:
        config = ContainerConfig("c", device, shell("exec sleep 1000"), rootfs_fstype="ext4")
        api.run_pod(PodConfig(id="broot", resources=Resources(hotplug_slots=1)))
        api.create_container("broot", config)
        api.start_container("broot", "c")

        out, _, code = run_exec("broot", "c", shell("ls /bin/busybox && mount | grep ' / '"))
        assert code == 0 and out.startswith(b"/bin/busybox\n") and b"ext4" in out, out
        _, _, code = run_exec("broot", "c", shell("echo written in the VM > /written; sync"))
        assert code == 0
        # Nothing of the root is shared: the container's skeleton has no rootfs.
        shared = Store().paths("broot").shared / "c"
        assert not (shared / "rootfs").exists()
        # The pod holds the device: the host's mount is refused while the guest has it.
        refused = host_mount(device, tmp_path / "host")
        assert refused.returncode != 0 and "busy" in refused.stderr.lower(), refused.stderr

        api.stop_container("broot", "c", timeout=1)
        api.delete_container("broot", "c")
        assert image_file(image, "written") == "written in the VM\n"
        # Unplugged and released: the host may mount it again, and it is consistent.
        mounted = host_mount(device, tmp_path / "host")
        assert mounted.returncode == 0, mounted.stderr
        assert (tmp_path / "host" / "written").read_text() == "written in the VM\n"

        # A device the host has mounted is refused, and the pod stays healthy.
        with pytest.raises(ConfigError, match="in use on the host"):
            api.create_container("broot", config)
        subprocess.run(["umount", str(tmp_path / "host")], check=True)
        read_only = ContainerConfig(
            "r", device, Cmd(("cat", "/written")), rootfs_fstype="ext4", read_only_rootfs=True
        )
        api.create_container("broot", read_only)
        api.start_container("broot", "r")
        assert api.wait_container("broot", "r").exit_code == 0
        api.delete_pod("broot", force=True)


def test_vc_runtime_runs_a_bundle_whose_rootfs_is_a_mounted_loop_device(
    run_root: Path, busybox_rootfs: Path, tmp_path: Path
) -> None:
    runtime = Runtime(tmp_path / "vc-runtime")
    image = make_ext4_image(tmp_path / "root.img", busybox_rootfs, 32)
    rootfs = tmp_path / "rootfs"
    with loop_device(image) as device:
        assert host_mount(device, rootfs).returncode == 0
        script = "echo from vc-runtime > /written; sync; exec sleep 1000"
        runtime("create", "--bundle", str(bundle(tmp_path, "b", rootfs, ["sh", "-c", script])), "v")
        # Moved aside: the host no longer has it mounted, and cannot while the VM has it.
        assert not os.path.ismount(rootfs)
        assert host_mount(device, tmp_path / "other").returncode != 0
        assert not (Store().paths("v").shared / "v" / "rootfs").exists()
        runtime("start", "v")
        done = runtime(
            "exec",
            "v",
            "sh",
            "-c",
            "until [ -s /written ]; do sleep 0.1; done; cat /written; mount",
        )
        assert done.stdout.startswith("from vc-runtime\n") and " / type ext4" in done.stdout
        runtime("kill", "v", "KILL")
        runtime.wait_for("v", "stopped")
        runtime("delete", "v")
        # Put back where the caller had it, with what the container wrote.
        assert os.path.ismount(rootfs)
        assert (rootfs / "written").read_text() == "from vc-runtime\n"
        assert (rootfs / "bin" / "busybox").exists()
    assert api.list_pods() == []


def test_vc_runtime_refuses_a_rootfs_the_host_still_uses(
    run_root: Path, busybox_rootfs: Path, tmp_path: Path
) -> None:
    runtime = Runtime(tmp_path / "vc-runtime")
    image = make_ext4_image(tmp_path / "root.img", busybox_rootfs, 32)
    rootfs = tmp_path / "rootfs"
    with loop_device(image) as device:
        assert host_mount(device, rootfs).returncode == 0
        with open(rootfs / "bin" / "busybox", "rb"):  # a host process uses the filesystem
            refused = runtime(
                "create", "--bundle", str(bundle(tmp_path, "b", rootfs, ["true"])), "v", check=False
            )
        assert refused.returncode == 1 and "cannot move the mount" in refused.stderr, refused.stderr
        assert os.path.ismount(rootfs) and (rootfs / "bin" / "busybox").exists()
        assert runtime("state", "v", check=False).returncode == 1
    assert api.list_pods() == []


def shim_bundle(tmp_path: Path, script: str) -> Path:
    directory = tmp_path / "shim-bundle"
    directory.mkdir()
    spec = oci.default_spec()
    spec["process"]["terminal"] = False
    spec["process"]["args"] = ["sh", "-c", script]
    spec["root"] = {"path": "rootfs", "readonly": False}
    (directory / "config.json").write_text(json.dumps(spec))
    return directory


async def forward_events(path: Path, topics: list[str]) -> ttrpc.Server:
    """containerd's event service, as far as the shim needs it."""

    async def forward(request: event_service.ForwardRequest, _ctx: ttrpc.CallContext) -> Message:
        topics.append(request.envelope.topic)
        return empty_pb2.Empty()

    server = ttrpc.Server()
    server.register(EVENTS_SERVICE, {"Forward": ttrpc.unary(event_service.ForwardRequest, forward)})
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(str(path))
    sock.listen()
    await server.serve(sock)
    return server


def test_the_shim_plugs_a_block_rootfs_mount_as_containerd_sends_it(
    no_leaks: Path, busybox_rootfs: Path, tmp_path: Path
) -> None:
    """containerd's devmapper snapshotter needs device-mapper, which this host's
    kernel lacks: the test sends the shim's Create the one mount that snapshotter
    answers (an ext4 filesystem on a block device), from a loop device, over ttrpc
    from a separate shim process, as containerd does."""
    image = make_ext4_image(tmp_path / "root.img", busybox_rootfs, 32)
    script = "ls /bin/busybox; mount | grep ' / '; echo from the shim > /written; sync"
    bundle_dir = shim_bundle(tmp_path, script)
    stdout = tmp_path / "stdout"
    os.mkfifo(stdout)
    reader = os.open(stdout, os.O_RDONLY | os.O_NONBLOCK)
    topics: list[str] = []

    async def scenario(device: Path) -> bytes:
        events = await forward_events(tmp_path / "events.sock", topics)
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(str(tmp_path / "shim.sock"))
        listener.listen()
        argv = [sys.executable, "-m", "virtcontainers.shim", "-namespace", "vc-test"]
        argv += ["-id", "s", "-bundle", str(bundle_dir), "-listen-fd", str(listener.fileno())]
        env = {**os.environ, "TTRPC_ADDRESS": str(tmp_path / "events.sock")}
        shim = subprocess.Popen(argv, pass_fds=[listener.fileno()], env=env, cwd=bundle_dir)
        listener.close()
        client = await ttrpc.Client.connect(tmp_path / "shim.sock")
        try:
            create = task.CreateTaskRequest(id="s", bundle=str(bundle_dir), stdout=str(stdout))
            create.rootfs.add(type="ext4", source=str(device), options=["rw"])
            await client.call(TASK_SERVICE, "Create", create.SerializeToString(), timeout=300)
            # Not mounted on the host, not shared: the VM has it, and the host cannot mount it.
            assert not os.path.ismount(bundle_dir / "rootfs")
            assert not (Store().paths("s").shared / "s" / "rootfs").exists()
            assert host_mount(device, tmp_path / "host").returncode != 0
            await client.call(TASK_SERVICE, "Start", task.StartRequest(id="s").SerializeToString())
            waited = await client.call_message(
                TASK_SERVICE, "Wait", task.WaitRequest(id="s"), task.WaitResponse, timeout=120
            )
            assert waited.exit_status == 0
            output = os.read(reader, 4096)
            await client.call(
                TASK_SERVICE, "Delete", task.DeleteRequest(id="s").SerializeToString()
            )
            await client.call(
                TASK_SERVICE, "Shutdown", task.ShutdownRequest(id="s").SerializeToString()
            )
            assert await asyncio.to_thread(shim.wait, 60) == 0
            return output
        finally:
            await client.close()
            if shim.poll() is None:
                shim.kill()  # its pod's daemon runs in it: QEMU goes with it
                shim.wait()
            await events.close()

    try:
        with loop_device(image) as device:
            output = asyncio.run(scenario(device))
            assert output.startswith(b"/bin/busybox\n") and b" on / type ext4" in output, output
            assert "/tasks/create" in topics and "/tasks/delete" in topics
            assert image_file(image, "written") == "from the shim\n"
    finally:
        os.close(reader)
