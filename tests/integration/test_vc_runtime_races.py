"""vc-runtime's create racing another create of the same id, with real pod VMs."""

from __future__ import annotations

import os
import subprocess
import tempfile
import threading
from pathlib import Path

import pytest

from tests.integration.test_vc_runtime import CRI_SANDBOX, CRI_TYPE, VC_RUNTIME, Runtime, bundle
from virtcontainers import api
from virtcontainers.states import ContainerState, PodState

CONTAINER_TRIALS = 20
POD_TRIALS = 3
"""Each own-pod trial boots a VM for its winner: fewer of them, the same race."""
SANDBOX = {CRI_TYPE: "sandbox", CRI_SANDBOX: "sb"}
MEMBER = {CRI_TYPE: "container", CRI_SANDBOX: "sb"}


def gated_bundle(
    tmp: Path, name: str, rootfs: Path, annotations: dict[str, str] | None = None
) -> tuple[Path, str]:
    """A bundle whose config.json is a FIFO: a create reading it waits for the test."""
    directory = bundle(tmp, name, rootfs, ["sleep", "1000"], annotations=annotations)
    config = directory / "config.json"
    text = config.read_text()
    config.unlink()
    os.mkfifo(config)
    return directory, text


def release(directory: Path, text: str) -> threading.Thread:
    """Feed the config to whoever reads the FIFO, then leave a plain file for later commands."""

    def feed() -> None:
        config = directory / "config.json"
        with open(config, "w") as fifo:
            fifo.write(text)
        plain = directory / "config.plain"
        plain.write_text(text)
        os.replace(plain, config)

    thread = threading.Thread(target=feed, daemon=True)
    thread.start()
    return thread


def start_create(
    runtime: Runtime, directory: Path, pid_file: Path, container_id: str
) -> tuple[subprocess.Popen[bytes], tempfile._TemporaryFileWrapper[str]]:
    err = tempfile.NamedTemporaryFile("w+")  # noqa: SIM115 - closed by the test
    argv = [VC_RUNTIME, "--root", str(runtime.root), "create", "--bundle", str(directory)]
    process = subprocess.Popen(
        [*argv, "--pid-file", str(pid_file), container_id],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=err,
    )
    return process, err


@pytest.fixture
def runtime(run_root: Path, tmp_path: Path) -> Runtime:
    return Runtime(tmp_path / "vc-runtime")


def race(
    runtime: Runtime,
    tmp_path: Path,
    rootfs: Path,
    container_id: str,
    annotations: dict[str, str] | None = None,
) -> None:
    """Two creates of ``container_id`` at once: one wins, and is left as it made it;
    the other says the id exists."""
    # Both creates are held at reading their bundle, then let go together: one
    # that checks the id before it reads it has checked it when the other claims it.
    racers = []
    for side in ("a", "b"):
        directory, text = gated_bundle(tmp_path, f"{container_id}{side}", rootfs, annotations)
        pid_file = tmp_path / f"pid-{container_id}{side}"
        process, err = start_create(runtime, directory, pid_file, container_id)
        racers.append((process, err, pid_file, directory, text))
    feeders = [release(directory, text) for _, _, _, directory, text in racers]
    codes = [process.wait(timeout=300) for process, *_ in racers]
    for feeder in feeders:
        feeder.join(timeout=30)
    errors = []
    for _, err, *_ in racers:
        err.seek(0)
        errors.append(err.read().strip())
        err.close()
    assert sorted(codes) == [0, 1], f"{container_id}: exit codes {codes}, errors {errors}"
    winner = codes.index(0)
    assert errors[1 - winner] == f"container with id exists: {container_id}", errors
    state = runtime.state(container_id)
    assert state["status"] == "created"
    assert state["pid"] == int(racers[winner][2].read_text())
    assert state["bundle"] == str(racers[winner][3])


@pytest.mark.vm
def test_two_creates_of_one_pod_one_wins_and_the_loser_leaves_it_alone(
    runtime: Runtime, tmp_path: Path, busybox_rootfs: Path
) -> None:
    for trial in range(POD_TRIALS):
        container_id = f"race{trial}"
        race(runtime, tmp_path, busybox_rootfs, container_id)
        assert api.pod_status(container_id).state is PodState.RUNNING
        runtime("delete", "--force", container_id)
    assert api.list_pods() == []


@pytest.mark.vm
def test_two_creates_of_one_container_in_a_sandbox_one_wins(
    runtime: Runtime, tmp_path: Path, busybox_rootfs: Path
) -> None:
    sandbox = bundle(tmp_path, "sb", busybox_rootfs, ["sleep", "1000"], annotations=SANDBOX)
    runtime("create", "--bundle", str(sandbox), "sb")
    runtime("start", "sb")
    for trial in range(CONTAINER_TRIALS):
        container_id = f"race{trial}"
        race(runtime, tmp_path, busybox_rootfs, container_id, MEMBER)
        [container] = [c for c in api.pod_status("sb").containers if c.id == container_id]
        assert container.state is ContainerState.CREATED
        runtime("delete", "--force", container_id)
    runtime("delete", "--force", "sb")
    assert api.list_pods() == []
