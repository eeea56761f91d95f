"""VM templates (docs/factory.md): templated pod start beside the cold one and its floor.

- template build: the template VM booted until its agent answers, then saved
  (once per shape; not on any pod's path);
- restore floor: a clone of the template launched by the QEMU driver alone,
  timed from launch until its agent answers the HELLO (no pod daemon, no
  ``init_clone``, no container): what a templated start cannot go below;
- templated pod start to first output: run.py's cold figure with
  ``boot="template"`` (``run_pod`` + ``create_container`` +
  ``start_container`` until the container's first byte);
- PSS: two idle pods at once, cloned and then cold, their QEMU processes and
  daemons (``/proc/<pid>/smaps_rollup``);
- networked pod start to first output, templated and cold: the same with a
  network namespace of one veth (the bench's own, bench/network.py); a
  clone gets its NIC hot-plugged after the restore, a cold VM boots with it.

The template lives in a factory directory of its own (``VC_FACTORY_DIR``, on
tmpfs where /dev/shm exists), removed at the end.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from common import progress, summary
from network import Namespaces
from virtcontainers import api
from virtcontainers.agent.client import AgentClient
from virtcontainers.config import Cmd, ContainerConfig, PodConfig
from virtcontainers.errors import NotFoundError, StateError
from virtcontainers.factory.pool import ENV_FACTORY_DIR
from virtcontainers.factory.template import Template
from virtcontainers.factory.templates import Factory, init_template
from virtcontainers.host import proc as hostproc
from virtcontainers.hypervisor.qemu.driver import QemuHypervisor

SETTLE = 3.0
"""Seconds idle pods are left before their memory is read."""


@contextlib.contextmanager
def own_factory() -> Iterator[Factory]:
    """A factory directory for this run only, named by VC_FACTORY_DIR meanwhile."""
    parent = "/dev/shm" if os.path.isdir("/dev/shm") else None
    base = Path(tempfile.mkdtemp(prefix="vc-bench-", dir=parent))
    saved = os.environ.get(ENV_FACTORY_DIR)
    os.environ[ENV_FACTORY_DIR] = str(base / "factory")
    try:
        yield Factory(base / "factory")
    finally:
        if saved is None:
            os.environ.pop(ENV_FACTORY_DIR, None)
        else:
            os.environ[ENV_FACTORY_DIR] = saved
        Factory(base / "factory").destroy()
        shutil.rmtree(base, ignore_errors=True)


async def restore_once(template: Template, run_dir: Path) -> float:
    shared = run_dir / "shared"
    shared.mkdir(parents=True)
    hypervisor = QemuHypervisor()
    agent = AgentClient("bench-restore")
    await hypervisor.create(
        template.clone_config("bench-restore", run_dir, run_dir / "agent.sock", shared)
    )
    started = time.monotonic()
    try:
        await hypervisor.start()
        await agent.connect(hypervisor.agent_socket_path(), 60)
        return time.monotonic() - started
    finally:
        await agent.close()
        await hypervisor.stop()


def restores(template: Template, runs: int) -> list[float]:
    times = []
    with tempfile.TemporaryDirectory(prefix="vc-bench-") as tmp:
        for index in range(runs):
            times.append(asyncio.run(restore_once(template, Path(tmp) / f"vm{index}")))
            progress(f"bare restore {index + 1}/{runs}: {times[-1]:.2f}s")
    return times


def pod_start_once(rootfs: Path, pod_id: str, boot: str, netns: str | None = None) -> float:
    """From run_pod to the container's first output byte; the pod is left running."""
    read_end, write_end = os.pipe()
    started = time.monotonic()
    try:
        api.run_pod(PodConfig(id=pod_id, boot=boot, netns=netns))
        container = ContainerConfig(
            "c", rootfs, Cmd(("sh", "-c", "echo first; exec sleep 1000")), writable_layer=True
        )
        api.create_container(pod_id, container, api.Stdio(stdout=write_end))
        api.start_container(pod_id, "c")
        os.close(write_end)
        write_end = -1
        first = os.read(read_end, 1)
        elapsed = time.monotonic() - started
        assert first == b"f", first
        return elapsed
    finally:
        if write_end >= 0:
            os.close(write_end)
        os.close(read_end)


def remove(pod_id: str) -> None:
    """Stop and delete a pod, if a failed start left one."""
    with contextlib.suppress(NotFoundError):
        with contextlib.suppress(StateError):
            api.stop_pod(pod_id)
        api.delete_pod(pod_id)


def templated_starts(rootfs: Path, runs: int) -> list[float]:
    times = []
    for index in range(runs):
        pod_id = f"bench-tpl-{os.getpid()}-{index}"
        try:
            times.append(pod_start_once(rootfs, pod_id, "template"))
            progress(f"templated pod start {index + 1}/{runs}: {times[-1]:.2f}s")
        finally:
            remove(pod_id)
    return times


def networked_starts(rootfs: Path, runs: int, boot: str) -> list[float]:
    """Pod starts on a namespace of one interface (a veth of the bench's own)."""
    times = []
    spaces = Namespaces()
    try:
        for index in range(runs):
            pair = spaces.pair()
            pod_id = f"bench-net-{boot}-{os.getpid()}-{index}"
            try:
                times.append(pod_start_once(rootfs, pod_id, boot, pair.far_path))
                progress(f"networked {boot} pod start {index + 1}/{runs}: {times[-1]:.2f}s")
            finally:
                remove(pod_id)
    finally:
        spaces.close()
    return times


def pss_kib(pid: int | None) -> int:
    return 0 if pid is None else hostproc.pss_kib(pid) or 0


def idle_pss(rootfs: Path, boot: str, pods: int = 2) -> dict[str, float]:
    """Median PSS per pod of *pods* idle pods at once: QEMU, and QEMU with its daemon."""
    ids = [f"bench-pss-{boot}-{os.getpid()}-{n}" for n in range(pods)]
    try:
        for pod_id in ids:
            pod_start_once(rootfs, pod_id, boot)
        time.sleep(SETTLE)
        statuses = [api.pod_status(pod_id) for pod_id in ids]
        qemu = [pss_kib(s.vm_pid) / 1024 for s in statuses]
        both = [(pss_kib(s.vm_pid) + pss_kib(s.daemon_pid)) / 1024 for s in statuses]
    finally:
        for pod_id in ids:
            remove(pod_id)
    return {
        "qemu_mib": round(statistics.median(qemu), 1),
        "qemu_and_daemon_mib": round(statistics.median(both), 1),
        "pods": pods,
    }


def measure(rootfs: Path, runs: int, cold_starts: list[float]) -> dict[str, Any]:
    """Every template figure, with its ratios to run.py's cold starts (same run)."""
    with own_factory() as factory:
        started = time.monotonic()
        template, _ = init_template(factory=factory, progress=progress)
        build = time.monotonic() - started
        disk_mib = template.disk_bytes() >> 20
        progress(f"template built in {build:.1f}s ({disk_mib} MiB on disk)")
        floor = summary(restores(template, runs))
        templated = summary(templated_starts(rootfs, runs))
        pss_templated = idle_pss(rootfs, "template")
        pss_cold = idle_pss(rootfs, "cold")
        net_templated = summary(networked_starts(rootfs, runs, "template"))
    net_cold = summary(networked_starts(rootfs, runs, "cold"))
    cold = summary(cold_starts)
    return {
        "template_build_s": round(build, 2),
        "template_disk_mib": disk_mib,
        "bare_restore_to_agent": floor,
        "templated_pod_start_to_first_output": templated,
        "idle_pss_per_pod_templated": pss_templated,
        "idle_pss_per_pod_cold": pss_cold,
        "networked_pod_start_templated": net_templated,
        "networked_pod_start_cold": net_cold,
        "ratios": {
            "networked_templated_over_networked_cold": round(
                net_templated["median_s"] / net_cold["median_s"], 2
            ),
            "templated_start_over_cold_start": round(templated["median_s"] / cold["median_s"], 2),
            "templated_start_over_bare_restore": round(
                templated["median_s"] / floor["median_s"], 2
            ),
            "templated_pss_over_cold_pss": round(
                pss_templated["qemu_and_daemon_mib"] / pss_cold["qemu_and_daemon_mib"], 2
            ),
        },
    }


def report(figures: dict[str, Any]) -> None:
    floor = figures["bare_restore_to_agent"]["median_s"]
    start = figures["templated_pod_start_to_first_output"]["median_s"]
    ratios = figures["ratios"]
    pss_t = figures["idle_pss_per_pod_templated"]["qemu_and_daemon_mib"]
    pss_c = figures["idle_pss_per_pod_cold"]["qemu_and_daemon_mib"]
    print(f"bare restore to agent (floor) median {floor:.2f} s")
    print(
        f"templated pod start to output median {start:.2f} s "
        f"({ratios['templated_start_over_cold_start']}x cold, "
        f"{ratios['templated_start_over_bare_restore']}x its floor)"
    )
    print(
        f"idle PSS per pod, 2 at once      templated {pss_t:.0f} MiB, cold {pss_c:.0f} MiB "
        f"({ratios['templated_pss_over_cold_pss']}x)"
    )
    net_t = figures["networked_pod_start_templated"]["median_s"]
    net_c = figures["networked_pod_start_cold"]["median_s"]
    print(
        f"networked pod start to output    templated {net_t:.2f} s, cold {net_c:.2f} s "
        f"({ratios['networked_templated_over_networked_cold']}x)"
    )
