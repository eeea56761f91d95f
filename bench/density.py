"""Density: host memory and CPU of many idle pods at once, beside bare VMs.

Three fleets, one after the other, each grown one member at a time and
measured when it reaches each checkpoint N (1, 5, 10, 20, up to its size):

- **bare**: the floor.  The guest image's kernel in a VM of the pods' size,
  through the same QEMU driver, to a busybox init that prints the guest's
  meminfo and sleeps (bench/bare.py);
- **cold**: pods booted cold (``PodConfig(boot="cold")``);
- **templated**: pods cloned from a VM template (``boot="template"``).

A pod is idle once its one busybox container printed its first line and
went to ``sleep``.  At each checkpoint the fleet first settles: its CPU use is
read over 5 s windows until it stops falling (at most 90 s).  Then:

- PSS per member: the sum of ``Pss`` in ``/proc/<pid>/smaps_rollup`` over its
  host processes (QEMU, the pod daemon, and any other child of the daemon,
  such as virtiofsd); the figure is the fleet's total over N (its mean, which
  counts each shared page once over the fleet), with the median beside it;
- host memory: MemTotal - MemAvailable, less its value before the fleet's
  first member (other people's VMs move it too: read it as a cross-check);
- CPU: utime + stime of all those processes over a window (30 s at the
  fleet's largest N, 10 s before), as % of one core;
- where a member's PSS goes: QEMU's mappings by kind (guest RAM, the TCG
  translation buffer, the kernel image QEMU loaded, its other anonymous
  memory, files) and the daemon's; and the guest's own meminfo (a pod's from
  ``cat /proc/meminfo`` run by its agent, a bare VM's from its init).

Every VM and pod started here is stopped and deleted on the way out, also on
failure, Ctrl-C or SIGTERM.  A template is made in a factory directory of
this run's own and removed afterwards, unless the default factory already
holds a current one for this shape (then that one is used and kept).
"""

from __future__ import annotations

import contextlib
import os
import statistics
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from bare import BareVMs, bare_initrd
from common import Closing, meminfo_kib, progress
from templates import own_factory, pod_start_once, remove
from virtcontainers import api
from virtcontainers.config import Cmd
from virtcontainers.errors import NotFoundError
from virtcontainers.factory.templates import Factory, current_shape, init_template
from virtcontainers.host import proc as hostproc
from virtcontainers.image import find_image
from virtcontainers.records import ProcessRef

CHECKPOINTS = (1, 5, 10, 20)
SETTLE_WINDOW = 5.0
SETTLE_MAX = 90.0
SWEEP_CPU_WINDOW = 10.0
TARGETS = {"cold_pss_over_bare": 1.15, "templated_pss_over_bare": 0.35, "idle_cpu_percent": 20.0}
PAGE_KIB = os.sysconf("SC_PAGE_SIZE") // 1024


@dataclass(frozen=True)
class DensityConfig:
    bare: int = 10
    cold: int = 10
    templated: int = 20
    cpu_window: float = 30.0
    memory_mib: int = 512


class Fleet(Protocol):
    lost: list[str]
    """Members that went away by themselves while measured."""

    def add(self) -> float: ...

    def units(self) -> list[dict[str, list[int]]]: ...

    def meminfo(self) -> dict[str, int]: ...


def host_used_kib() -> int:
    info = meminfo_kib(Path("/proc/meminfo").read_text())
    return info["MemTotal"] - info["MemAvailable"]


def cpu_ticks(pids: Sequence[int]) -> int:
    """utime + stime of every thread of these processes (gone ones count 0)."""
    total = 0
    for pid in pids:
        fields = hostproc.stat_fields(pid)
        if fields is not None:
            total += int(fields[11]) + int(fields[12])
    return total


def cpu_percent(pids: Sequence[int], seconds: float) -> float:
    """CPU used by *pids* over *seconds*, as % of one core."""
    before, started = cpu_ticks(pids), time.monotonic()
    time.sleep(seconds)
    used = (cpu_ticks(pids) - before) / hostproc.CLOCK_TICKS
    return 100.0 * used / (time.monotonic() - started)


def settle(pids: Sequence[int], label: str) -> float:
    """Wait until the fleet's CPU use stops falling; returns the seconds waited."""
    started = time.monotonic()
    previous = cpu_percent(pids, SETTLE_WINDOW)
    while time.monotonic() - started < SETTLE_MAX:
        current = cpu_percent(pids, SETTLE_WINDOW)
        progress(f"{label}: settling, {current:.1f}% of a core over {SETTLE_WINDOW:.0f}s")
        if current >= previous * 0.9 - 0.5:
            break
        previous = current
    return time.monotonic() - started


def _mapping_kind(header: list[str], kernel: Path, guest_kib: int, size_kib: int) -> str:
    perms = header[1]
    path = header[5] if len(header) > 5 else ""
    if size_kib == guest_kib and (not path or "memory" in path):
        return "guest_ram"
    if path == str(kernel):
        return "kernel_image"
    if not path or path.startswith("["):
        return "tcg_code_buffer" if "x" in perms else "other_anon"
    return "files"


_GUEST_RAM: dict[ProcessRef, tuple[int, int]] = {}
"""Where each QEMU's guest RAM lies, once seen whole: discarding reported free
pages may split its mapping, whose parts are then found by their addresses."""


def _smaps(pid: int) -> list[tuple[int, int, list[str], int]]:
    """QEMU's mappings: start, end, header fields, PSS (kB)."""
    mappings: list[tuple[int, int, list[str], int]] = []
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/smaps").read_text().splitlines():
            parts = line.split()
            if not parts:
                continue
            if "-" in parts[0] and not parts[0].endswith(":"):
                low, high = (int(x, 16) for x in parts[0].split("-"))
                mappings.append((low, high, parts, 0))
            elif parts[0] == "Pss:" and mappings:
                low, high, header, _ = mappings[-1]
                mappings[-1] = (low, high, header, int(parts[1]))
    return mappings


def qemu_breakdown_kib(pid: int, kernel: Path, memory_mib: int) -> dict[str, int]:
    """QEMU's PSS by kind of mapping (kB)."""
    guest_kib = memory_mib * 1024
    mappings = _smaps(pid)
    ram: tuple[int, int] | None = None
    key = hostproc.of(pid)
    if key is not None:
        for low, high, header, _ in mappings:
            if _mapping_kind(header, kernel, guest_kib, (high - low) // 1024) == "guest_ram":
                _GUEST_RAM[key] = (low, high)
        ram = _GUEST_RAM.get(key)
    kinds: dict[str, int] = {}
    for low, high, header, pss in mappings:
        if ram is not None and ram[0] <= low and high <= ram[1]:
            kind = "guest_ram"
        else:
            kind = _mapping_kind(header, kernel, guest_kib, (high - low) // 1024)
        kinds[kind] = kinds.get(kind, 0) + pss
    return kinds


def children(parent: int) -> list[int]:
    """Every process whose parent is *parent*."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        fields = hostproc.stat_fields(int(entry.name))
        if fields is not None and int(fields[1]) == parent:
            found.append(int(entry.name))
    return found


class PodFleet(Closing):
    """Idle pods, booted cold or cloned; every one is removed by :meth:`close`."""

    def __init__(self, rootfs: Path, boot: str) -> None:
        self.rootfs = rootfs
        self.boot = boot
        self.ids: list[str] = []
        self.lost: list[str] = []
        self.count = 0

    def add(self) -> float:
        pod_id = f"bench-dens-{self.boot}-{os.getpid()}-{self.count}"
        self.count += 1
        self.ids.append(pod_id)
        return pod_start_once(self.rootfs, pod_id, self.boot)

    def units(self) -> list[dict[str, list[int]]]:
        units = []
        for pod_id in list(self.ids):
            try:
                status = api.pod_status(pod_id)
            except NotFoundError:
                # Reported and counted, not fatal: the figures then say how many were measured.
                progress(f"pod {pod_id} is gone: measuring the others")
                self.ids.remove(pod_id)
                self.lost.append(pod_id)
                continue
            unit: dict[str, list[int]] = {}
            if status.vm_pid is not None:
                unit["qemu"] = [status.vm_pid]
            if status.daemon_pid is not None:
                unit["daemon"] = [status.daemon_pid]
                others = [p for p in children(status.daemon_pid) if p != status.vm_pid]
                if others:
                    unit["other"] = others
            units.append(unit)
        return units

    def run(self, script: str) -> str:
        """Run a shell line in the first pod's VM; its output (bounded)."""
        read_end, write_end = os.pipe()
        try:
            cmd = Cmd(("/bin/busybox", "sh", "-c", script))
            handle = api.enter_pod(self.ids[0], cmd, api.Stdio(stdout=write_end))
            os.close(write_end)
            write_end = -1
            out = b""
            while (chunk := os.read(read_end, 4096)) and len(out) < 65536:
                out += chunk
            status = api.wait_process(self.ids[0], None, handle.exec_id)
        finally:
            if write_end >= 0:
                os.close(write_end)
            os.close(read_end)
        if status.exit_code != 0:
            raise RuntimeError(f"{script!r} in pod {self.ids[0]}: exit {status.exit_code}")
        return out.decode(errors="replace")

    def meminfo(self) -> dict[str, int]:
        """The first pod's guest meminfo, read by its agent."""
        return meminfo_kib(self.run("cat /proc/meminfo")) if self.ids else {}

    def close(self) -> None:
        for pod_id in self.ids:
            try:
                remove(pod_id)
            except Exception as error:  # one pod's failure must not leave the others
                progress(f"removing {pod_id}: {error}")
        self.ids.clear()


BURST_MIB = 200
BURST_WAIT = 10.0
BURST = (
    "mkdir -p /tmp/vc-burst && mount -t tmpfs tmpfs /tmp/vc-burst && "
    f"dd if=/dev/zero of=/tmp/vc-burst/fill bs=1M count={BURST_MIB} 2>/dev/null"
)
BURST_END = "rm /tmp/vc-burst/fill && umount /tmp/vc-burst"


def burst(fleet: PodFleet, kernel: Path, memory_mib: int) -> dict[str, float]:
    """Does a pod hand back memory its guest used and freed?  The first pod's
    guest fills a tmpfs with BURST_MIB MiB, then removes it; its QEMU's guest
    RAM PSS is read before, while the file is there, and BURST_WAIT s after."""
    pid = fleet.units()[0]["qemu"][0]

    def guest_ram() -> float:
        return _mib(qemu_breakdown_kib(pid, kernel, memory_mib).get("guest_ram", 0))

    before = guest_ram()
    fleet.run(BURST)
    held = guest_ram()
    fleet.run(BURST_END)
    time.sleep(BURST_WAIT)
    after = guest_ram()
    progress(f"a {BURST_MIB} MiB burst: guest RAM {before:.0f} → {held:.0f} → {after:.0f} MiB")
    return {
        "burst_mib": BURST_MIB,
        "guest_ram_before_mib": before,
        "guest_ram_held_mib": held,
        "guest_ram_after_mib": after,
        "wait_s": BURST_WAIT,
    }


def _mib(kib: float) -> float:
    return round(kib / 1024, 1)


def snapshot(
    fleet: Fleet, n: int, baseline_kib: int, cpu_window: float, kernel: Path, memory_mib: int
) -> dict[str, Any]:
    label = f"{n} at once"
    pids = [pid for unit in fleet.units() for group in unit.values() for pid in group]
    settled = settle(pids, label)
    cpu = cpu_percent(pids, cpu_window)
    units = fleet.units()
    if len(units) != n:
        progress(f"{label}: {len(units)} measured (the others are gone)")
    per_unit = [
        sum((hostproc.pss_kib(pid) or 0) for group in unit.values() for pid in group)
        for unit in units
    ]
    breakdown: dict[str, float] = {}
    for unit in units:
        for pid in unit.get("qemu", []):
            for kind, kib in qemu_breakdown_kib(pid, kernel, memory_mib).items():
                breakdown[f"qemu_{kind}"] = breakdown.get(f"qemu_{kind}", 0) + kib
        for role in ("daemon", "other"):
            for pid in unit.get(role, []):
                breakdown[role] = breakdown.get(role, 0) + (hostproc.pss_kib(pid) or 0)
    return {
        "n": n,
        "measured": len(units),
        "settle_s": round(settled, 1),
        "cpu_window_s": cpu_window,
        "cpu_percent_of_one_core": round(cpu, 2),
        "pss_total_mib": _mib(sum(per_unit)),
        "pss_per_unit_mib": {
            "mean": _mib(sum(per_unit) / len(per_unit)),
            "median": _mib(statistics.median(per_unit)),
            "min": _mib(min(per_unit)),
            "max": _mib(max(per_unit)),
        },
        "pss_per_unit_by_kind_mib": {
            kind: _mib(kib / len(units)) for kind, kib in sorted(breakdown.items())
        },
        "host_used_delta_mib": _mib(host_used_kib() - baseline_kib),
        "load_average": os.getloadavg()[0],
    }


def guest_summary(info: dict[str, int]) -> dict[str, float]:
    """What the guest itself says its memory holds (MiB)."""
    if not info:
        return {}
    return {
        "total": _mib(info.get("MemTotal", 0)),
        "used_not_free": _mib(info.get("MemTotal", 0) - info.get("MemFree", 0)),
        "page_cache": _mib(info.get("Cached", 0) + info.get("Buffers", 0)),
        "anon": _mib(info.get("AnonPages", 0)),
        "slab": _mib(info.get("Slab", 0)),
        "kernel_stack_and_page_tables": _mib(
            info.get("KernelStack", 0) + info.get("PageTables", 0)
        ),
    }


def sweep(
    kind: str, fleet: Fleet, size: int, config: DensityConfig, kernel: Path
) -> dict[str, Any]:
    """Grow *fleet* to *size*, measuring at each checkpoint."""
    checkpoints = [n for n in CHECKPOINTS if n < size] + [size]
    baseline = host_used_kib()
    starts: list[float] = []
    points: list[dict[str, Any]] = []
    guest: dict[str, float] = {}
    for n in range(1, size + 1):
        starts.append(fleet.add())
        progress(f"{kind}: {n}/{size} started ({starts[-1]:.1f}s)")
        if n in checkpoints:
            window = config.cpu_window if n == size else SWEEP_CPU_WINDOW
            point = snapshot(fleet, n, baseline, window, kernel, config.memory_mib)
            points.append(point)
            progress(
                f"{kind}: {n} at once: PSS {point['pss_per_unit_mib']['mean']:.0f} MiB each, "
                f"CPU {point['cpu_percent_of_one_core']:.1f}% of a core, "
                f"host +{point['host_used_delta_mib']:.0f} MiB"
            )
            if n == size:
                guest = guest_summary(fleet.meminfo())
    return {
        "size": size,
        "start_s": {
            "median": round(statistics.median(starts), 2),
            "min": round(min(starts), 2),
            "max": round(max(starts), 2),
        },
        "points": points,
        "guest_meminfo_mib": guest,
        "lost": list(fleet.lost),
    }


@contextlib.contextmanager
def a_template(memory_mib: int) -> Iterator[str]:
    """The template pods of this size clone: the default factory's, if current
    (kept), else one made for this run (removed afterwards).  Yields where."""
    shape = current_shape(1, memory_mib, ())
    existing = Factory().find(shape.key)
    if existing is not None and existing.current():
        yield "the default factory's (kept)"
        return
    with own_factory() as factory:
        init_template(1, memory_mib, factory=factory, progress=progress)
        yield "made for this run (removed afterwards)"


def point_at(fleet: dict[str, Any], n: int) -> dict[str, Any] | None:
    return next((p for p in fleet["points"] if p["n"] == n), None)


def ratios(results: dict[str, Any]) -> dict[str, float]:
    """Per-pod PSS against the bare floor at the same N, and the idle CPU."""
    out: dict[str, float] = {}
    bare = results["bare"]
    for kind in ("cold", "templated"):
        for point in results[kind]["points"]:
            floor = point_at(bare, point["n"])
            if floor is not None:
                out[f"{kind}_pss_over_bare_at_{point['n']}"] = round(
                    point["pss_per_unit_mib"]["mean"] / floor["pss_per_unit_mib"]["mean"], 2
                )
    return out


def measure(config: DensityConfig, rootfs: Path) -> dict[str, Any]:
    image = find_image()
    results: dict[str, Any] = {"config": config.__dict__.copy()}
    with tempfile.TemporaryDirectory(prefix="vc-bench-") as tmp:
        initrd = Path(tmp) / "idle-initrd.img"
        bare_initrd(initrd, idle=True)
        with BareVMs(image.kernel, initrd, Path(tmp), config.memory_mib) as vms:
            results["bare"] = sweep("bare VMs", vms, config.bare, config, image.kernel)
    with PodFleet(rootfs, "cold") as pods:
        results["cold"] = sweep("cold pods", pods, config.cold, config, image.kernel)
        results["cold"]["burst"] = burst(pods, image.kernel, config.memory_mib)
    with a_template(config.memory_mib) as where:
        results["template"] = where
        with PodFleet(rootfs, "template") as pods:
            results["templated"] = sweep(
                "templated pods", pods, config.templated, config, image.kernel
            )
            results["templated"]["burst"] = burst(pods, image.kernel, config.memory_mib)
    results["ratios"] = ratios(results)
    results["targets"] = TARGETS
    return results


def headline(results: dict[str, Any]) -> dict[str, Any]:
    """The issue's three figures, each with its floor and target."""
    cold_n = results["cold"]["size"]
    tpl_n = min(results["templated"]["size"], cold_n)
    bare = point_at(results["bare"], cold_n)
    cold = point_at(results["cold"], cold_n)
    templated = point_at(results["templated"], tpl_n)
    biggest = results["templated"]["points"][-1]
    out: dict[str, Any] = {
        "idle_cpu": {
            "pods": biggest["n"],
            "boot": "template",
            "percent_of_one_core": biggest["cpu_percent_of_one_core"],
            "window_s": biggest["cpu_window_s"],
            "target_below": TARGETS["idle_cpu_percent"],
        }
    }
    if bare and cold and templated:
        floor = bare["pss_per_unit_mib"]["mean"]

        def without_tcg(point: dict[str, Any]) -> float:
            kinds = point["pss_per_unit_by_kind_mib"]
            return float(point["pss_per_unit_mib"]["mean"] - kinds.get("qemu_tcg_code_buffer", 0))

        out["pss_without_tcg_buffer"] = {
            "bare_vm_mib": round(without_tcg(bare), 1),
            "cold_pod_mib": round(without_tcg(cold), 1),
            "templated_pod_mib": round(without_tcg(templated), 1),
            "cold_over_bare": round(without_tcg(cold) / without_tcg(bare), 2),
            "templated_over_bare": round(without_tcg(templated) / without_tcg(bare), 2),
        }
        out["pss"] = {
            "bare_vm_mib": floor,
            "cold_pod_mib": cold["pss_per_unit_mib"]["mean"],
            "templated_pod_mib": templated["pss_per_unit_mib"]["mean"],
            "n": cold_n,
            "cold_over_bare": round(cold["pss_per_unit_mib"]["mean"] / floor, 2),
            "templated_over_bare": round(templated["pss_per_unit_mib"]["mean"] / floor, 2),
            "cold_target": TARGETS["cold_pss_over_bare"],
            "templated_target": TARGETS["templated_pss_over_bare"],
        }
    return out


def _met(value: float, target: float) -> str:
    return "meets" if value <= target else "misses"


def report(results: dict[str, Any]) -> list[str]:
    top = headline(results)
    lines = []
    if "pss" in top:
        pss = top["pss"]
        lines += [
            f"PSS per idle bare VM, {pss['n']} at once (floor) {pss['bare_vm_mib']:.0f} MiB",
            f"PSS per idle pod, {pss['n']} at once, cold      {pss['cold_pod_mib']:.0f} MiB "
            f"({pss['cold_over_bare']}x floor; target <= {pss['cold_target']}x: "
            f"{_met(pss['cold_over_bare'], pss['cold_target'])})",
            f"PSS per idle pod, {pss['n']} at once, templated {pss['templated_pod_mib']:.0f} MiB "
            f"({pss['templated_over_bare']}x floor; target <= {pss['templated_target']}x: "
            f"{_met(pss['templated_over_bare'], pss['templated_target'])})",
        ]
    if "pss_without_tcg_buffer" in top:
        bare_only = top["pss_without_tcg_buffer"]
        lines.append(
            f"  without QEMU's TCG translation buffer (KVM has none): bare "
            f"{bare_only['bare_vm_mib']:.0f} MiB, cold {bare_only['cold_over_bare']}x, "
            f"templated {bare_only['templated_over_bare']}x"
        )
    cpu = top["idle_cpu"]
    lines.append(
        f"idle CPU, {cpu['pods']} templated pods, {cpu['window_s']:.0f}s "
        f"{cpu['percent_of_one_core']:.1f}% of one core (target < {cpu['target_below']:.0f}%: "
        f"{_met(cpu['percent_of_one_core'], cpu['target_below'] - 1e-9)})"
    )
    for kind in ("cold", "templated"):
        if "burst" in results[kind]:
            b = results[kind]["burst"]
            lines.append(
                f"a {b['burst_mib']} MiB burst in a {kind} pod's guest: guest RAM PSS "
                f"{b['guest_ram_before_mib']:.0f} → {b['guest_ram_held_mib']:.0f} → "
                f"{b['guest_ram_after_mib']:.0f} MiB {b['wait_s']:.0f}s after it was freed"
            )
    for kind in ("bare", "cold", "templated"):
        point = results[kind]["points"][-1]
        parts = ", ".join(f"{k} {v:.0f}" for k, v in point["pss_per_unit_by_kind_mib"].items())
        lines.append(f"where a {kind} member's PSS goes at {point['n']} (MiB): {parts}")
        guest = results[kind]["guest_meminfo_mib"]
        if guest:
            parts = ", ".join(f"{k} {v:.0f}" for k, v in guest.items())
            lines.append(f"  its guest's meminfo (MiB): {parts}")
    return lines
