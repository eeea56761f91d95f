"""Kubernetes' path: containerd's CRI plugin starting pods through containerd-shim-vc-v2.

- CRI pod start to first output, cold and templated: ``RunPodSandbox``,
  ``CreateContainer`` and ``StartContainer`` of a container that prints one
  line, until that line is in the CRI log file containerd writes (the
  kubelet's view of "the container said something"); the pod is stopped and
  removed after each run, off the clock.  Templated runs clone a template
  made for this run in a factory directory of its own (``VC_FACTORY_DIR``,
  which containerd passes to the shim); each run checks that its pod really
  was a clone (``PodStatus.template``), and says so when it was not.
- Host PSS of an idle CRI pod (its QEMU, the pod daemon and the shim) beside
  an idle bare VM of the same size and kernel, measured together in this run.

containerd is the tests' private one (tests/engines/containerd.py): its own
root, state and socket in a temp dir, running in a network namespace this
bench makes, with CNI's bridge in there too; every pod, namespace and
directory is removed at the end.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from common import progress, summary
from network import Namespaces, ip

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the tests' engine helpers

from tests.cri.client import Cri, generate_stubs
from tests.engines.containerd import running_containerd, with_vc_shim
from tests.engines.images import oci_layout_tar
from tests.engines.test_cri import (
    BUSYBOX_IMAGE,
    HANDLER,
    PAUSE_IMAGE,
    cni_conflist,
)
from tests.engines.test_cri_shim import shim_plugin_toml

from bare import BareVMs
from templates import own_factory
from virtcontainers import api
from virtcontainers.factory.pool import ENV_FACTORY_DIR
from virtcontainers.factory.templates import init_template
from virtcontainers.host import proc as hostproc
from virtcontainers.oci.annotations import DEFAULT_MEMORY_MIB, DEFAULT_VCPUS

LINE = "cri-bench-up"
SETTLE = 3.0
"""Seconds the idle pod is left before its memory is read."""
FIRST_OUTPUT_TIMEOUT = 180.0


class CriBench:
    """A private containerd with the vc handler on the shim, its images imported."""

    def __init__(self, cri: Cri, logs: Path) -> None:
        self.cri = cri
        self.pb = cri.pb
        self.logs = logs
        self.runs = 0

    def sandbox_config(self) -> Any:
        self.runs += 1
        name = f"bench-{self.runs}"
        return self.pb.PodSandboxConfig(
            metadata=self.pb.PodSandboxMetadata(name=name, uid=f"uid-{name}", namespace="bench"),
            hostname=name,
            log_directory=str(self.logs / name),
            linux=self.pb.LinuxPodSandboxConfig(),
        )

    def start(self) -> tuple[float, str]:
        """One pod start to the first line of its container's log; (seconds, sandbox id)."""
        pb = self.pb
        config = self.sandbox_config()
        log = Path(config.log_directory) / "echo.log"
        started = time.monotonic()
        request = pb.RunPodSandboxRequest(config=config, runtime_handler=HANDLER)
        sandbox_id: str = self.cri.call("RunPodSandbox", request).pod_sandbox_id
        container = pb.ContainerConfig(
            metadata=pb.ContainerMetadata(name="echo"),
            image=pb.ImageSpec(image=BUSYBOX_IMAGE),
            command=["sh", "-c", f"echo {LINE}; exec sleep 1000000"],
            log_path="echo.log",
            linux=pb.LinuxContainerConfig(),
        )
        container_id = self.cri.call(
            "CreateContainer",
            pb.CreateContainerRequest(
                pod_sandbox_id=sandbox_id, config=container, sandbox_config=config
            ),
        ).container_id
        self.cri.call("StartContainer", pb.StartContainerRequest(container_id=container_id))
        deadline = started + FIRST_OUTPUT_TIMEOUT
        while not (log.exists() and LINE in log.read_text(errors="replace")):
            if time.monotonic() > deadline:
                raise RuntimeError(f"no {LINE!r} in {log} after {FIRST_OUTPUT_TIMEOUT:.0f} s")
            time.sleep(0.01)
        return time.monotonic() - started, sandbox_id

    def remove(self, sandbox_id: str) -> None:
        pb = self.pb
        self.cri.call("StopPodSandbox", pb.StopPodSandboxRequest(pod_sandbox_id=sandbox_id))
        self.cri.call("RemovePodSandbox", pb.RemovePodSandboxRequest(pod_sandbox_id=sandbox_id))


@contextlib.contextmanager
def cri_bench(rootfs: Path, factory_dir: Path) -> Iterator[CriBench]:
    work = Path(tempfile.mkdtemp(prefix="vccb-", dir="/tmp"))
    namespaces = Namespaces()
    try:
        netns = namespaces.make()
        ip("-n", netns, "link", "set", "lo", "up")
        (work / "cni").mkdir()
        (work / "cni" / "10-vc-cri-bench.conflist").write_text(cni_conflist(work / "ipam"))
        env = with_vc_shim({**os.environ, ENV_FACTORY_DIR: str(factory_dir)})
        with running_containerd(
            env, shim_plugin_toml(work / "cni"), netns=f"/run/netns/{netns}", namespace="k8s.io"
        ) as containerd:
            for ref, cmd in ((PAUSE_IMAGE, ("sleep", "1000000000")), (BUSYBOX_IMAGE, ("sh",))):
                tar = oci_layout_tar(rootfs, work / "image.tar", ref, cmd)
                imported = containerd.ctr("images", "import", "--digests=false", str(tar))
                if imported.returncode != 0:
                    raise RuntimeError(f"ctr images import: {imported.stderr.strip()}")
            yield CriBench(Cri(containerd.address, generate_stubs(work / "stubs")), work / "logs")
    finally:
        namespaces.close()
        with contextlib.suppress(OSError):
            for path in sorted(work.rglob("*"), reverse=True):
                path.rmdir() if path.is_dir() and not path.is_symlink() else path.unlink()
            work.rmdir()


def pod_of(sandbox_id: str) -> api.PodStatus:
    return next(pod for pod in api.list_pods() if sandbox_id in {c.id for c in pod.containers})


def starts(bench: CriBench, runs: int, label: str) -> tuple[list[float], list[str | None]]:
    times: list[float] = []
    clones: list[str | None] = []
    for run in range(runs):
        seconds, sandbox_id = bench.start()
        clones.append(pod_of(sandbox_id).template)
        bench.remove(sandbox_id)
        times.append(seconds)
        progress(f"CRI pod start {label} {run + 1}/{runs}: {seconds:.2f} s")
    return times, clones


def pod_pss_mib(pod: api.PodStatus) -> dict[str, float]:
    """The host PSS of a pod's QEMU, daemon and shim processes (MiB); the daemon
    apart only if it is a process of its own, not hosted by the shim."""
    parts: dict[str, float] = {}
    shim = shim_of(pod)
    daemon = None if pod.daemon_pid == shim else pod.daemon_pid
    for role, pid in (("qemu", pod.vm_pid), ("daemon", daemon), ("shim", shim)):
        kib = hostproc.pss_kib(pid) if pid is not None else None
        parts[role] = round((kib or 0) / 1024, 1)
    parts["total"] = round(sum(parts.values()), 1)
    return parts


def shim_of(pod: api.PodStatus) -> int | None:
    """The pid of the shim server that serves this pod (``python -m virtcontainers.shim``,
    spawned by containerd-shim-vc-v2's ``start``, with ``-id`` the pod's)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            if b"virtcontainers.shim" in argv and pod.id.encode() in argv:
                return int(entry.name)
    return None


def idle_pss(bench: CriBench, kernel: Path, initrd: Path, memory_mib: int) -> dict[str, Any]:
    """An idle CRI pod and an idle bare VM of the same size, measured together."""
    _, sandbox_id = bench.start()
    try:
        with (
            tempfile.TemporaryDirectory(prefix="vccb-vm-") as run_root,
            BareVMs(kernel, initrd, Path(run_root), memory_mib) as vms,
        ):
            vms.add()
            time.sleep(SETTLE)
            pod = pod_of(sandbox_id)
            pss = pod_pss_mib(pod)
            [bare] = vms.units()
            bare_mib = round((hostproc.pss_kib(bare["qemu"][0]) or 0) / 1024, 1)
    finally:
        bench.remove(sandbox_id)
    return {
        "cri_pod_mib": pss,
        "bare_vm_mib": bare_mib,
        "over_bare": round(pss["total"] / bare_mib, 3) if bare_mib else None,
        "template": pod.template,
    }


def measure(rootfs: Path, kernel: Path, bare_initrd: Path, runs: int) -> dict[str, Any]:
    # A sandbox that asks for no resources gets the OCI translation's default size.
    vcpus, memory = DEFAULT_VCPUS, DEFAULT_MEMORY_MIB
    with own_factory() as factory, cri_bench(rootfs, factory.root) as bench:
        cold, cold_clones = starts(bench, runs, "cold")
        cold_pss = idle_pss(bench, kernel, bare_initrd, memory)
        progress(f"making a template of {vcpus} vCPU, {memory} MiB for the CRI pods")
        init_template(vcpus, memory, factory=factory, progress=progress)
        templated, clones = starts(bench, runs, "templated")
        templated_pss = idle_pss(bench, kernel, bare_initrd, memory)
    return {
        "cold": summary(cold),
        "templated": summary(templated),
        "templated_over_cold": round(summary(templated)["median_s"] / summary(cold)["median_s"], 3),
        "cold_runs_cloned": sum(1 for key in cold_clones if key is not None),
        "templated_runs_cloned": sum(1 for key in clones if key is not None),
        "idle_pss_cold": cold_pss,
        "idle_pss_templated": templated_pss,
        "vm": {"vcpus": vcpus, "memory_mib": memory},
    }


def report(figures: dict[str, Any]) -> None:
    cold, templated = figures["cold"], figures["templated"]
    print(
        f"CRI pod start -> first output: cold {cold['median_s']:.2f} s, templated "
        f"{templated['median_s']:.2f} s ({figures['templated_over_cold']:.2f}x; "
        f"{figures['templated_runs_cloned']}/{templated['runs']} runs were clones)"
    )
    for kind in ("cold", "templated"):
        pss = figures[f"idle_pss_{kind}"]
        parts = pss["cri_pod_mib"]
        print(
            f"idle {kind} CRI pod host PSS {parts['total']:.0f} MiB (qemu {parts['qemu']:.0f}, "
            f"daemon {parts['daemon']:.0f}, shim {parts['shim']:.0f}) against a bare VM's "
            f"{pss['bare_vm_mib']:.0f} MiB ({pss['over_bare']}x)"
        )
