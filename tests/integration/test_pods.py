"""Pods in real QEMU VMs (TCG here): containers run by crun in the guest."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from tests.conftest import shell_session_in_pty
from tests.integration.conftest import (
    mounts_of_a_stopped_pod,
    pod_with,
    qemu_pids,
    run_exec,
    shell,
    virtc,
    wait_stopped,
)
from virtcontainers import api
from virtcontainers.config import Cmd, ContainerConfig, ImagePaths, PodConfig
from virtcontainers.errors import HypervisorError, StateError
from virtcontainers.hypervisor.accel import detect_accelerator
from virtcontainers.hypervisor.base import Accelerator
from virtcontainers.image import GuestImage
from virtcontainers.states import ContainerState, PodState
from virtcontainers.storage import mounts

pytestmark = [pytest.mark.vm, pytest.mark.usefixtures("guest_image")]


def test_container_output_and_exec(no_leaks: Path, busybox_rootfs: Path) -> None:
    api.run_pod(PodConfig(id="io"))
    out_r, out_w = os.pipe()
    config = ContainerConfig(
        "c", busybox_rootfs, shell("echo ready; uname -r; exec sleep 1000"), writable_layer=True
    )
    api.create_container("io", config, api.Stdio(stdout=out_w))
    os.close(out_w)
    api.start_container("io", "c")
    with os.fdopen(out_r, "rb") as output:
        assert output.readline() == b"ready\n"
        assert output.readline().startswith(b"6.")  # the guest's Debian 6.x kernel

        out, err, code = run_exec("io", "c", shell("echo out; echo err >&2; exit 3"))
        assert (out, err, code) == (b"out\n", b"err\n", 3)

        out, _, code = run_exec("io", "c", Cmd(("cat",)), stdin=b"through stdin\n")
        assert (out, code) == (b"through stdin\n", 0)

        handle = api.enter_container("io", "c", Cmd(("sleep", "1000")))
        api.signal_process("io", "c", handle.exec_id, signal.SIGKILL)
        status = api.wait_process("io", "c", handle.exec_id)
        assert (status.exit_code, status.signal) == (137, 9)

        with pytest.raises(StateError, match="it is running, must be created or stopped"):
            api.delete_pod("io")

        api.kill_container("io", "c", signal.SIGKILL)
        assert api.wait_container("io", "c").exit_code == 137
    assert api.container_status("io", "c").state is ContainerState.STOPPED


def test_fifty_megabytes_of_stdout_arrive_intact(no_leaks: Path, busybox_rootfs: Path) -> None:
    api.run_pod(
        PodConfig(
            id="stream",
            containers=(
                ContainerConfig("c", busybox_rootfs, Cmd(("sleep", "1000")), writable_layer=True),
            ),
        )
    )
    # The bytes are made in the guest (tmpfs) and hashed there by a separate exec.
    _, err, code = run_exec(
        "stream", "c", shell("dd if=/dev/urandom of=/dev/shm/data bs=1M count=50")
    )
    assert code == 0, err
    digest, _, code = run_exec("stream", "c", shell("sha256sum /dev/shm/data"))
    assert code == 0
    out, err, code = run_exec("stream", "c", Cmd(("cat", "/dev/shm/data")))
    assert code == 0
    assert len(out) == 50 * 1024 * 1024
    assert hashlib.sha256(out).hexdigest() == digest.split()[0].decode()


def test_three_containers_in_one_pod(no_leaks: Path, busybox_rootfs: Path) -> None:
    config = pod_with(
        "three", busybox_rootfs, a="exec sleep 1000", b="exec sleep 1000", c="exec sleep 1000"
    )
    status = api.run_pod(config)
    assert [c.state for c in status.containers] == [ContainerState.RUNNING] * 3
    for cid in ("a", "b", "c"):
        out, _, code = run_exec("three", cid, shell("hostname; cat /proc/1/cmdline | tr '\\0' ' '"))
        assert code == 0
        assert b"sleep 1000" in out
    guest = api.pod_status("three").guest  # fetched in the background after boot
    assert guest is not None and guest.kernel.startswith("6.") and guest.runtime
    processes = api.list_processes("three", "b")
    assert any(p.args[:2] == ("sleep", "1000") for p in processes)
    idle, _, code = run_exec("three", "a", shell("cat /proc/sys/vm/compaction_proactiveness"))
    assert code == 0
    _, _, has_psi = run_exec("three", "a", shell("test -e /proc/pressure"))
    if detect_accelerator()[0] is Accelerator.TCG:  # qemu_command.TCG_IDLE_PARAMS reached the guest
        assert (idle, has_psi) == (b"0\n", 1)
    api.stop_container("three", "a", timeout=1)
    assert api.container_status("three", "a").state is ContainerState.STOPPED
    assert api.container_status("three", "b").state is ContainerState.RUNNING


def test_two_pods_at_once_and_list_from_another_process(
    no_leaks: Path, busybox_rootfs: Path
) -> None:
    errors: list[BaseException] = []

    def start(pod_id: str) -> None:
        try:
            api.run_pod(pod_with(pod_id, busybox_rootfs, c="exec sleep 1000"))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=start, args=(p,)) for p in ("left", "right")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    code = (
        "from virtcontainers import api; "
        "print(sorted((p.id, p.state.value) for p in api.list_pods()))"
    )
    listed = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert listed.stdout.strip() == "[('left', 'running'), ('right', 'running')]"
    out_left, _, _ = run_exec("left", "c", shell("hostname"))
    out_right, _, _ = run_exec("right", "c", shell("hostname"))
    assert (out_left, out_right) == (b"left\n", b"right\n")


def test_stop_then_delete_leaves_nothing(run_root: Path, busybox_rootfs: Path) -> None:
    status = api.run_pod(pod_with("tidy", busybox_rootfs, c="exec sleep 1000"))
    assert status.vm_pid in qemu_pids(run_root)
    pod_dir = run_root / "pods" / "tidy"
    assert mounts.mounts_under(pod_dir)
    stopped = api.stop_pod("tidy")
    assert stopped.state is PodState.STOPPED
    assert stopped.containers[0].exit_code == 137
    assert not qemu_pids(run_root)
    # Only the layers' tmpfs stays, with the layers, until the pod is deleted.
    mounts_of_a_stopped_pod(pod_dir, pod_dir)
    api.delete_pod("tidy")
    assert not pod_dir.exists()
    assert not mounts.mounts_under(pod_dir)


def test_virtc_run_exit_status_and_streams(run_root: Path) -> None:
    result = virtc(run_root, "run", "--rm", "--", "sh", "-c", "echo out; echo err >&2; exit 3")
    assert result.returncode == 3, result.stderr
    assert result.stdout == "out\n"
    assert result.stderr.splitlines()[-1] == "err"
    assert not any((run_root / "pods").iterdir())


def test_virtc_run_with_a_terminal(run_root: Path) -> None:
    binary = Path(sys.executable).with_name("virtc")
    env = {**os.environ, "VC_RUN_DIR": str(run_root)}
    code, output = shell_session_in_pty([str(binary), "run", "--rm", "-it", "--", "sh"], env)
    assert code == 6
    assert b"/dev/pts/" in output


def test_a_vm_that_dies_stops_its_pod_cleanly(run_root: Path, busybox_rootfs: Path) -> None:
    status = api.run_pod(pod_with("crash", busybox_rootfs, c="exec sleep 1000"))
    assert status.vm_pid is not None
    os.kill(status.vm_pid, signal.SIGKILL)
    status = wait_stopped("crash")
    assert status.state is PodState.STOPPED
    assert status.error is not None and "VM exited unexpectedly" in status.error
    assert status.containers[0].state is ContainerState.STOPPED
    mounts_of_a_stopped_pod(run_root / "pods" / "crash", run_root / "pods" / "crash")
    api.delete_pod("crash")
    assert not mounts.mounts_under(run_root)


def test_a_guest_that_cannot_boot_fails_clearly_and_leaves_nothing(
    run_root: Path, guest_image: GuestImage, tmp_path: Path
) -> None:
    garbage = tmp_path / "garbage.squashfs"
    garbage.write_bytes(b"not a filesystem" * 4096)
    image = ImagePaths(guest_image.kernel, guest_image.initrd, garbage)
    with pytest.raises(HypervisorError, match="vc-init"):
        api.run_pod(PodConfig(id="broken", image=image))
    assert api.list_pods() == []
    assert not qemu_pids(run_root)
