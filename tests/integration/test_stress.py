"""Eight processes, twenty-five mixed operations each, on four real pods.

Every operation succeeds or fails with a clear error (a state, a missing or
existing id, a busy pod); at the end the pods are consistent, and after they
are deleted and ``virtc gc`` runs, nothing is left: no QEMU, mount, directory
or record.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.integration.conftest import qemu_pids
from virtcontainers import api, errors
from virtcontainers.config import Cmd, ContainerConfig, PodConfig
from virtcontainers.states import ContainerState, PodState
from virtcontainers.storage import mounts

pytestmark = [pytest.mark.vm, pytest.mark.usefixtures("guest_image")]
PODS = ("s0", "s1", "s2", "s3")
CONTAINERS = ("a", "b", "c")
WORKERS = 8
OPERATIONS = 25
CLEAR = (
    errors.StateError,
    errors.NotFoundError,
    errors.ExistsError,
    errors.BusyError,
    errors.AgentError,
)
"""What a racing caller may be told: the pod or container moved under it."""
ROOT = Path(__file__).resolve().parents[2]


def _operation(rng: random.Random, rootfs: Path) -> tuple[str, Callable[[], object]]:
    pod = rng.choice(PODS)
    cid = rng.choice(CONTAINERS)
    config = ContainerConfig(cid, rootfs, Cmd(("sleep", "300")), writable_layer=True)
    choices: list[tuple[str, Callable[[], object]]] = [
        ("create", lambda: api.create_container(pod, config)),
        ("start", lambda: api.start_container(pod, cid)),
        ("exec", lambda: _exec(pod, cid)),
        ("kill", lambda: api.kill_container(pod, cid, signal.SIGKILL)),
        ("stop", lambda: api.stop_container(pod, cid, timeout=2)),
        ("delete", lambda: api.delete_container(pod, cid)),
        ("status", lambda: api.pod_status(pod)),
        ("list", api.list_pods),
        ("pause", lambda: _pause_and_resume(pod)),
    ]
    if rng.random() < 0.06:  # a pod restart is a boot: rare, as in life
        choices = [("restart", lambda: _restart(pod))]
    return rng.choice(choices)


def _pause_and_resume(pod: str) -> None:
    api.pause_pod(pod)
    api.resume_pod(pod)


def _restart(pod: str) -> None:
    api.stop_pod(pod)
    api.start_pod(pod)


def _exec(pod: str, cid: str) -> None:
    handle = api.enter_container(pod, cid, Cmd(("true",)))
    api.wait_process(pod, cid, handle.exec_id, timeout=60)


def worker(seed: int, rootfs: str) -> None:
    """Run OPERATIONS random calls; print one JSON line per unclear failure."""
    rng = random.Random(seed)
    for _ in range(OPERATIONS):
        name, call = _operation(rng, Path(rootfs))
        try:
            call()
        except CLEAR:
            pass
        except Exception as exc:
            print(json.dumps({"op": name, "error": f"{type(exc).__name__}: {exc}"}), flush=True)


def test_eight_callers_on_four_pods(no_leaks: Path, busybox_rootfs: Path) -> None:
    for pod in PODS:
        api.create_pod(PodConfig(id=pod))
    starts = [
        subprocess.Popen(
            [sys.executable, "-c", f"from virtcontainers import api; api.start_pod({pod!r})"]
        )
        for pod in PODS
    ]
    assert [start.wait(timeout=300) for start in starts] == [0] * len(PODS)
    code = (
        "import sys; from tests.integration.test_stress import worker; "
        "worker(int(sys.argv[1]), sys.argv[2])"
    )
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", code, str(seed), str(busybox_rootfs)],
            stdout=subprocess.PIPE,
            text=True,
            cwd=ROOT,
            env=env,
        )
        for seed in range(WORKERS)
    ]
    unclear = []
    for process in workers:
        out, _ = process.communicate(timeout=900)
        assert process.returncode == 0
        unclear += [json.loads(line) for line in out.splitlines()]
    assert unclear == [], "\n".join(map(str, unclear))
    for status in api.list_pods():  # consistent: a running pod's containers are known states
        assert status.state in (PodState.RUNNING, PodState.STOPPED)
        for container in status.containers:
            assert container.state in ContainerState
            if container.state is ContainerState.STOPPED:
                assert container.exit_code is not None
    for pod in PODS:
        api.delete_pod(pod, force=True)
    report = api.collect_garbage()
    assert report.left == [], report
    assert api.list_pods() == [] and api.list_pod_errors() == []
    assert not qemu_pids(no_leaks)
    assert not mounts.mounts_under(no_leaks)
    assert [p.name for p in (no_leaks / "pods").iterdir()] == []
