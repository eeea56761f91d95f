"""Callers killed, raced and left hanging, with real VMs: nothing is lost or leaked."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.integration.conftest import qemu_pids
from tests.integration.test_vc_runtime import VC_RUNTIME, Runtime, bundle
from virtcontainers import api
from virtcontainers.config import PodConfig
from virtcontainers.errors import NotFoundError, StateError, VcError
from virtcontainers.states import PodState

pytestmark = [pytest.mark.vm, pytest.mark.usefixtures("guest_image")]
VIRTC = str(Path(sys.executable).with_name("virtc"))


def wait_for(predicate: Callable[[], bool], what: str, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def state_of(pod_id: str) -> PodState | None:
    try:
        return api.pod_status(pod_id).state
    except NotFoundError:
        return None


def test_a_second_start_and_a_delete_during_a_boot_wait_for_it(no_leaks: Path) -> None:
    """One daemon and one VM per pod, however many callers start it at once."""
    api.create_pod(PodConfig(id="race"))
    starter = subprocess.Popen(
        [sys.executable, "-c", "from virtcontainers import api; api.start_pod('race')"]
    )
    try:
        wait_for(lambda: state_of("race") is PodState.STARTING, "the first start")
        with pytest.raises(StateError, match="it is running"):
            api.start_pod("race")
        with pytest.raises(StateError, match="it is running"):
            api.delete_pod("race")
        assert starter.wait(timeout=120) == 0
        assert len(qemu_pids(no_leaks)) == 1
    finally:
        starter.kill()
        starter.wait()


def test_virtc_run_rm_killed_while_booting_leaves_nothing(no_leaks: Path) -> None:
    run = subprocess.Popen([VIRTC, "run", "--rm", "--name", "killed", "--", "sleep", "100"])
    try:
        wait_for(lambda: state_of("killed") is PodState.STARTING, "the boot")
        run.kill()
        run.wait()
        wait_for(lambda: state_of("killed") is None, "the pod's removal")
    finally:
        run.kill()
        run.wait()
    assert not qemu_pids(no_leaks)


def test_virtc_run_rm_killed_while_running_leaves_nothing(no_leaks: Path) -> None:
    run = subprocess.Popen([VIRTC, "run", "--rm", "--name", "killed2", "--", "sleep", "100"])
    try:
        wait_for(
            lambda: (
                state_of("killed2") is PodState.RUNNING
                and bool(api.pod_status("killed2").containers)
            ),
            "the container",
        )
        run.kill()
        run.wait()
        wait_for(lambda: state_of("killed2") is None, "the pod's removal")
    finally:
        run.kill()
        run.wait()
    assert not qemu_pids(no_leaks)


@pytest.mark.parametrize("signum", [signal.SIGKILL, signal.SIGTERM], ids=["SIGKILL", "SIGTERM"])
def test_vc_runtime_create_killed_while_booting_can_be_cleaned_and_retried(
    no_leaks: Path, tmp_path: Path, busybox_rootfs: Path, signum: int
) -> None:
    runtime = Runtime(tmp_path / "vc-runtime")
    config = bundle(tmp_path, "b", busybox_rootfs, ["sleep", "100"])
    create = subprocess.Popen(
        [VC_RUNTIME, "--root", str(runtime.root), "create", "--bundle", str(config), "ctr"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for(lambda: state_of("ctr") is PodState.STARTING, "the boot")
        create.send_signal(signum)
        create.wait(timeout=180)
    finally:
        create.kill()
        create.wait()
    if signum == signal.SIGKILL:
        assert runtime.state("ctr")["status"] == "stopped"
        runtime("delete", "--force", "ctr")
    else:  # a create that is told to stop undoes itself
        wait_for(lambda: state_of("ctr") is None, "the create to undo itself")
    assert runtime("state", "ctr", check=False).returncode == 1
    wait_for(lambda: not qemu_pids(no_leaks), "the VM to go")
    runtime("create", "--bundle", str(config), "ctr")  # a retry works
    assert runtime.state("ctr")["status"] == "created"
    runtime("delete", "--force", "ctr")
    assert state_of("ctr") is None


def test_virtc_run_rm_says_the_vm_died_and_leaves_nothing(no_leaks: Path) -> None:
    run = subprocess.Popen(
        [VIRTC, "run", "--rm", "--name", "crash", "--", "sh", "-c", "echo started; sleep 100"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert run.stdout is not None
        assert run.stdout.readline() == "started\n"
        vm_pid = api.pod_status("crash").vm_pid
        assert vm_pid is not None
        api_kill = subprocess.run(["kill", "-9", str(vm_pid)], check=False)
        assert api_kill.returncode == 0
        _, err = run.communicate(timeout=120)
    finally:
        run.kill()
        run.wait()
    assert run.returncode == 137
    assert "the VM exited unexpectedly" in err and "Traceback" not in err, err
    assert state_of("crash") is None
    assert not qemu_pids(no_leaks)


def test_a_reader_that_goes_away_ends_the_container(no_leaks: Path) -> None:
    """``virtc run -- yes | head -1`` returns, as it does without a VM (SIGPIPE)."""
    done = subprocess.run(
        f"{VIRTC} run --rm -- yes | head -1",
        shell=True,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert done.stdout == "y\n", done.stderr
    assert "Traceback" not in done.stderr


def test_the_console_of_a_crashed_vm_is_kept_until_delete(no_leaks: Path) -> None:
    status = api.run_pod(PodConfig(id="console"))
    assert status.vm_pid is not None
    subprocess.run(["kill", "-9", str(status.vm_pid)], check=True)
    wait_for(lambda: state_of("console") is PodState.STOPPED, "the pod to stop")
    error = api.pod_status("console").error
    console = no_leaks / "pods" / "console" / "console.log"
    assert error is not None and str(console) in error
    assert console.is_file()
    api.delete_pod("console")
    assert not console.exists()


def test_run_pod_that_gives_up_waiting_leaves_no_pod(run_root: Path) -> None:
    """A start that times out (or is interrupted) while the VM boots: run_pod's
    clean-up forces the pod down rather than leave it running."""
    with pytest.raises(VcError):
        api.run_pod(PodConfig(id="impatient"), timeout=0.5)
    assert api.list_pods() == []
    assert not qemu_pids(run_root)
