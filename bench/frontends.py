"""Start to first output through each front-end, templated and cold, beside the
restore floor, all in one run (the CRI's figures are bench/cri.py's, in the
same ``make bench``).

- floor: a clone of the template launched by the QEMU driver alone, timed
  from launch until its agent answers (templates.restores);
- API: ``run_pod`` + ``create_container`` + ``start_container`` until the
  container's first byte (templates.pod_start_once);
- virtc: ``virtc run --rm -- sh -c 'echo first'``, from spawning the CLI until
  the first byte on its stdout;
- vc-runtime: ``vc-runtime create`` (stdout a pipe of ours, as an engine's
  shim hands it) and ``vc-runtime start`` of a bundle whose process prints a
  line, from spawning create until that line's first byte; then kill and
  delete, off the clock.

Every front-end starts its pod with ``boot="auto"``, as users get it: the
templated runs see a factory holding the default template (each run checks
its pod was a clone), the cold runs an empty one, with automatic templates
off.  The pooled runs see the same template and a pool of one waiting clone
(``virtc factory pool --size 1``): before each, off the clock, the bench
waits until a standby is ready, and after it checks that standby was taken.
Cold, templated and pooled runs alternate, so the machine's noise hits all.
Last, the host memory (PSS) of one waiting clone: its daemon and its QEMU.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from common import progress, summary
from templates import own_factory, pod_start_once, remove, restores
from virtcontainers import api, oci
from virtcontainers.factory import pool
from virtcontainers.factory.pool import ENV_FACTORY_DIR
from virtcontainers.factory.templates import ENV_AUTO_TEMPLATES, init_template
from virtcontainers.store import run_root

BIN = Path(sys.executable).parent
LINE = b"first"
MODES = ("cold", "templated", "pooled")
FRONT_ENDS = ("api", "virtc", "vc-runtime")
TIMEOUT = 300.0


@contextlib.contextmanager
def factory_env(directory: Path, pooled: bool = False) -> Iterator[None]:
    """Pods started meanwhile (by us, or by the commands we spawn) look in
    *directory*, and take a waiting clone when *pooled*."""
    names = (ENV_FACTORY_DIR, ENV_AUTO_TEMPLATES, pool.ENV_POOL)
    saved = {name: os.environ.get(name) for name in names}
    os.environ[ENV_FACTORY_DIR] = str(directory)
    os.environ[ENV_AUTO_TEMPLATES] = "0"
    os.environ[pool.ENV_POOL] = "1" if pooled else "0"
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def first_byte(argv: list[str], started: float) -> float:
    """Spawn *argv*; seconds from *started* until its stdout's first byte, which
    must begin LINE.  The command is left to finish."""
    with subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE) as process:
        assert process.stdout is not None
        first = process.stdout.read(1)
        elapsed = time.monotonic() - started
        rest = process.stdout.read()
        if process.wait(TIMEOUT) != 0 or (first + rest)[: len(LINE)] != LINE:
            raise RuntimeError(f"{argv[0]} exited {process.returncode}, printed {first + rest!r}")
    return elapsed


def virtc_once(_rootfs: Path, index: int, templated: bool) -> float:
    pod_id = f"bench-virtc-{os.getpid()}-{index}"
    boot = "template" if templated else "cold"  # what auto picks here, and checked
    argv = [str(BIN / "virtc"), "run", "--rm", "--name", pod_id, "--boot", boot]
    return first_byte([*argv, "--", "sh", "-c", f"echo {LINE.decode()}"], time.monotonic())


def bundle(rootfs: Path, directory: Path) -> Path:
    spec: dict[str, Any] = oci.default_spec()
    spec["process"]["terminal"] = False
    spec["process"]["args"] = ["sh", "-c", f"echo {LINE.decode()}; exec sleep 1000"]
    spec["root"] = {"path": str(rootfs), "readonly": True}
    directory.mkdir()
    (directory / "config.json").write_text(json.dumps(spec))
    return directory


def vc_runtime_once(rootfs: Path, index: int, templated: bool) -> float:
    runtime = str(BIN / "vc-runtime")
    container_id = f"bench-rt-{os.getpid()}-{index}"
    with tempfile.TemporaryDirectory(prefix="vc-bench-") as tmp:
        root = ["--root", str(Path(tmp) / "state")]
        create = [runtime, *root, "create", "--bundle", str(bundle(rootfs, Path(tmp) / "b"))]
        read_end, write_end = os.pipe()
        started = time.monotonic()
        try:
            subprocess.run(
                [*create, container_id],
                stdin=subprocess.DEVNULL,
                stdout=write_end,
                check=True,
                timeout=TIMEOUT,
            )
            os.close(write_end)
            write_end = -1
            subprocess.run([runtime, *root, "start", container_id], check=True, timeout=TIMEOUT)
            first = os.read(read_end, 1)
            elapsed = time.monotonic() - started
            if first != LINE[:1]:
                raise RuntimeError(f"vc-runtime's container printed {first!r}")
            [pod] = [p for p in api.list_pods() if p.id == container_id]
            if (pod.template is not None) != templated:
                raise RuntimeError(f"vc-runtime's pod {pod.id}: template {pod.template}")
            return elapsed
        finally:
            if write_end >= 0:
                os.close(write_end)
            os.close(read_end)
            subprocess.run([runtime, *root, "delete", "--force", container_id], check=False)


def api_once(rootfs: Path, index: int, templated: bool) -> float:
    pod_id = f"bench-api-{os.getpid()}-{index}"
    try:
        elapsed = pod_start_once(rootfs, pod_id, "auto")
        if (api.pod_status(pod_id).template is not None) != templated:
            raise RuntimeError(f"pod {pod_id} was{' not' if templated else ''} a clone")
        return elapsed
    finally:
        remove(pod_id)


STARTS: dict[str, Callable[[Path, int, bool], float]] = {
    "api": api_once,
    "virtc": virtc_once,
    "vc-runtime": vc_runtime_once,
}


def ready_standby(key: str) -> pool.StandbyInfo:
    """The pool's ready standby of *key*, once its boot is over (off the clock)."""
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        ready = [s for s in pool.standbys(run_root()) if s.ready and s.key == key]
        if ready:
            return ready[0]
        time.sleep(0.1)
    raise RuntimeError(f"no waiting clone of {key} became ready in {TIMEOUT:.0f}s")


def pooled_once(
    start: Callable[[Path, int, bool], float], rootfs: Path, index: int, key: str
) -> float:
    standby = ready_standby(key)
    elapsed = start(rootfs, index, True)
    if standby.path.exists():
        raise RuntimeError(f"the pod did not take the waiting clone {standby.path.name}")
    return elapsed


def pss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1])
    raise RuntimeError(f"no Pss in /proc/{pid}/smaps_rollup")


def standby_memory(key: str) -> dict[str, float]:
    """Host PSS of one waiting clone, settled: its daemon and its QEMU."""
    standby = ready_standby(key)
    time.sleep(5)  # the guest and the daemon idle, as a waiting clone does
    if standby.daemon is None or standby.vm is None:
        raise RuntimeError(f"standby {standby.path.name} records no daemon or VM")
    daemon, vm = pss_kib(standby.daemon.pid), pss_kib(standby.vm.pid)
    return {"daemon_mib": round(daemon / 1024, 1), "qemu_mib": round(vm / 1024, 1)}


def measure(rootfs: Path, runs: int) -> dict[str, Any]:
    times: dict[str, dict[str, list[float]]] = {m: {f: [] for f in FRONT_ENDS} for m in MODES}
    with own_factory() as factory, tempfile.TemporaryDirectory(prefix="vc-bench-") as empty:
        template, _ = init_template(factory=factory, progress=progress)
        floor = restores(template, runs)
        pool.set_pool_size(factory.root, 1)
        try:
            for index in range(runs):
                for mode in MODES:
                    where = factory.root if mode != "cold" else Path(empty) / "none"
                    with factory_env(where, pooled=mode == "pooled"):
                        if mode == "pooled":
                            pool.fill(run_root(), factory.root, template.key)
                        for name, start in STARTS.items():
                            if mode == "pooled":
                                took = pooled_once(start, rootfs, index, template.key)
                            else:
                                took = start(rootfs, index, mode == "templated")
                            times[mode][name].append(took)
                            progress(f"{name} {mode} {index + 1}/{runs}: {took:.2f}s")
            with factory_env(factory.root, pooled=True):
                memory = standby_memory(template.key)
        finally:
            pool.set_pool_size(factory.root, 0)
            pool.stop(run_root(), template.key)
    figures: dict[str, Any] = {"bare_restore_to_agent": summary(floor)}
    floor_s = figures["bare_restore_to_agent"]["median_s"]
    for name in FRONT_ENDS:
        cold, clone = summary(times["cold"][name]), summary(times["templated"][name])
        pooled = summary(times["pooled"][name])
        figures[name] = {
            "cold": cold,
            "templated": clone,
            "pooled": pooled,
            "templated_over_cold": round(clone["median_s"] / cold["median_s"], 2),
            "templated_over_floor": round(clone["median_s"] / floor_s, 1),
            "pooled_over_floor": round(pooled["median_s"] / floor_s, 1),
        }
    figures["waiting_clone_pss"] = memory
    return figures


def report(figures: dict[str, Any]) -> None:
    floor = figures["bare_restore_to_agent"]["median_s"]
    print(f"start to first output by front-end (floor: bare restore to agent {floor:.2f} s)")
    for name in FRONT_ENDS:
        entry = figures[name]
        print(
            f"  {name:<10}  pooled {entry['pooled']['median_s']:.2f} s, "
            f"templated {entry['templated']['median_s']:.2f} s, "
            f"cold {entry['cold']['median_s']:.2f} s ({entry['templated_over_cold']}x cold, "
            f"{entry['templated_over_floor']}x the floor, pooled {entry['pooled_over_floor']}x)"
        )
    memory = figures["waiting_clone_pss"]
    print(
        f"  one waiting clone of the pool: PSS {memory['daemon_mib'] + memory['qemu_mib']:.0f} MiB "
        f"(daemon {memory['daemon_mib']:.0f} MiB, QEMU {memory['qemu_mib']:.0f} MiB)"
    )
