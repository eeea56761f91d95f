"""Fixtures for tests that boot real pod VMs from the built guest image."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import remove_all_pods
from virtcontainers import api
from virtcontainers.config import Cmd, ContainerConfig, PodConfig
from virtcontainers.factory import pool
from virtcontainers.states import PodState
from virtcontainers.storage import mounts


def qemu_pids(run_root: Path) -> set[int]:
    """QEMU processes of pods under ``run_root`` (their argv names their run dir)."""
    found = subprocess.run(
        ["pgrep", "-f", f"qemu-system.*{run_root}/"], capture_output=True, text=True, check=False
    )
    return {int(pid) for pid in found.stdout.split()}


@pytest.fixture
def no_leaks(run_root: Path) -> Iterator[Path]:
    """After the test, its pods are removed and no VM of theirs may be left running."""
    yield run_root
    pool.stop(run_root)
    remove_all_pods()
    leaked = qemu_pids(run_root)
    assert not leaked, f"QEMU processes left behind: {leaked}"


def shell(script: str) -> Cmd:
    return Cmd(("sh", "-c", script))


def pod_with(pod_id: str, rootfs: Path, **containers: str) -> PodConfig:
    configs = tuple(
        ContainerConfig(cid, rootfs, shell(script), writable_layer=True)
        for cid, script in containers.items()
    )
    return PodConfig(id=pod_id, containers=configs)


def read_all(fd: int) -> bytes:
    chunks = []
    while chunk := os.read(fd, 1 << 16):
        chunks.append(chunk)
    os.close(fd)
    return b"".join(chunks)


def run_exec(
    pod: str, container: str, cmd: Cmd, stdin: bytes | None = None
) -> tuple[bytes, bytes, int]:
    """Exec with pipes for stdin/stdout/stderr; returns (out, err, exit code)."""
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    in_r, in_w = os.pipe() if stdin is not None else (None, None)
    handle = api.enter_container(pod, container, cmd, api.Stdio(in_r, out_w, err_w))
    for fd in (in_r, out_w, err_w):
        if fd is not None:
            os.close(fd)
    if in_w is not None:
        assert stdin is not None
        os.write(in_w, stdin)
        os.close(in_w)
    results: dict[str, bytes] = {}
    reader = threading.Thread(target=lambda: results.update(err=read_all(err_r)))
    reader.start()
    out = read_all(out_r)
    reader.join()
    status = api.wait_process(pod, container, handle.exec_id)
    return out, results["err"], status.exit_code


def virtc(run_root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """The virtc command, run on the test's run root; its text output and status."""
    return subprocess.run(
        [str(Path(sys.executable).with_name("virtc")), *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env={**os.environ, "VC_RUN_DIR": str(run_root)},
    )


__all__ = ["api", "pod_with", "read_all", "run_exec", "shell", "virtc"]


def mounts_of_a_stopped_pod(under: Path, pod_dir: Path) -> None:
    """A stopped pod keeps one mount until it is deleted: its writable layers'
    tmpfs (the layers survive a restart).  Nothing else is left under ``under``."""
    layers = Path(os.path.realpath(pod_dir / "layers"))
    assert mounts.mounts_under(under) == [layers]


def wait_stopped(pod: str) -> api.PodStatus:
    """The pod's status once it is stopped (its VM died, say); fails after a minute."""
    for _ in range(600):
        status = api.pod_status(pod)
        if status.state is PodState.STOPPED:
            return status
        time.sleep(0.1)
    raise AssertionError(f"pod {pod} did not stop")
