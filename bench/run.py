"""Benchmarks: medians, and ratios against a floor measured in the same run.

- floor: the guest image's own kernel booted bare (same QEMU driver, same
  machine type and command line) to a trivial init that prints a marker and
  powers off; timed from launch to QEMU's exit.
- pod start to first output: ``run_pod`` + ``create_container`` +
  ``start_container`` until the container's first byte arrives on our pipe.
- exec round trip: ``enter_container(true)`` + ``wait_process``.
- image lookup: ``find_image()`` (a dpkg query and a hash of the image's
  inputs); a pod resolves its image once, at create, and records it, where
  the daemon used to look it up at every start.
- agent import in the guest: what the start stub does before ``main()``
  (``import agent``: the package and the stdlib modules it needs), timed by
  the guest's Python after dropping the guest's page cache, as at boot.
- timings (bench/timings.py): ``virtc run --rm --timings -- echo hi``, the
  real CLI, cold and templated runs interleaved: each step's median increment
  from the CLI's process start to the container's first output and exit.
- density (bench/density.py): PSS and CPU of 1, 5, 10, 20 idle pods at once,
  cold and templated, beside as many idle bare VMs (bench/bare.py); with
  plots in docs/ and a table in docs/measurements.md (bench/plots.py).
- ksm (bench/ksm.py): idle cold pods' PSS without KSM and after it scanned
  them (KSM turned on for the measurement only, its settings restored);
- network (bench/network.py): TCP throughput and round trips from a client
  namespace to a container of a pod on a veth, against the same server in a
  plain namespace;
- cri (bench/cri.py): containerd's CRI plugin starting a pod through
  containerd-shim-vc-v2 to its container's first output, cold and templated,
  and an idle CRI pod's host PSS beside an idle bare VM's;
- blockio (bench/blockio.py): sequential write and read, and many small
  files created and read, in a container whose rootfs is shared over 9p and
  in one whose rootfs is a block device, side by side in one pod;
- front-ends (bench/frontends.py): start to first output through the API,
  ``virtc run`` and vc-runtime (create + start), templated and cold, beside
  the bare restore floor.  ``--only starts`` runs it with the CRI's figures:
  every front-end's templated and cold start, and the floor, in one run.

Writes bench/results.json (``--only timings``, ``--only network``,
``--only density``, ``--only cri``, ``--only blockio`` or ``--only starts``
updates those figures and keeps the rest).  This machine is noisy: read the ratios.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import blockio
import cri
import density
import frontends
import ksm
import network
import plots
import templates
import timings
from bare import bare_boot_once, bare_initrd, python_floor_initrd, root_disk
from common import meminfo_kib, progress, summary
from templates import pod_start_once
from virtcontainers import api
from virtcontainers.config import Cmd
from virtcontainers.hypervisor.accel import detect_accelerator
from virtcontainers.image import build_busybox_rootfs, find_image
from virtcontainers.image.rootfs import AGENT_ZIP

RESULTS = Path(__file__).with_name("results.json")
AGENT_IMPORT = f"""
import sys, time
with open("/proc/sys/vm/drop_caches", "w") as caches:
    caches.write("3")
sys.path.insert(0, "{AGENT_ZIP}")
started = time.perf_counter()
import agent
print(time.perf_counter() - started)
"""


def bare_boot(kernel: Path, runs: int) -> list[float]:
    times = []
    with tempfile.TemporaryDirectory(prefix="vc-bench-") as tmp:
        initrd = Path(tmp) / "initrd.img"
        bare_initrd(initrd)
        for index in range(runs):
            run_dir = Path(tmp) / f"vm{index}"
            times.append(asyncio.run(bare_boot_once(kernel, initrd, run_dir)))
            progress(f"bare boot {index + 1}/{runs}: {times[-1]:.2f}s")
    return times


def python_floor_boots(kernel: Path, initrd: Path, rootfs: Path, runs: int) -> list[float]:
    times = []
    with tempfile.TemporaryDirectory(prefix="vc-bench-") as tmp:
        floor_initrd = Path(tmp) / "initrd.img"
        python_floor_initrd(initrd, floor_initrd)
        for index in range(runs):
            run_dir = Path(tmp) / f"vm{index}"
            boot = bare_boot_once(kernel, floor_initrd, run_dir, [root_disk(rootfs)])
            times.append(asyncio.run(boot))
            progress(f"boot to python3 {index + 1}/{runs}: {times[-1]:.2f}s")
    return times


def exec_round_trips(pod_id: str, runs: int) -> list[float]:
    times = []
    for _ in range(runs):
        started = time.monotonic()
        handle = api.enter_container(pod_id, "c", Cmd(("true",)))
        status = api.wait_process(pod_id, "c", handle.exec_id)
        times.append(time.monotonic() - started)
        assert status.exit_code == 0
    return times


def agent_import_times(pod_id: str, runs: int) -> list[float]:
    times = []
    for _ in range(runs):
        read_end, write_end = os.pipe()
        try:
            cmd = Cmd(("/usr/bin/python3.11", "-S", "-c", AGENT_IMPORT))
            handle = api.enter_pod(pod_id, cmd, api.Stdio(stdout=write_end))
            os.close(write_end)
            write_end = -1
            out = b""
            while chunk := os.read(read_end, 4096):
                out += chunk
            status = api.wait_process(pod_id, None, handle.exec_id)
            assert status.exit_code == 0, status
            times.append(float(out))
        finally:
            if write_end >= 0:
                os.close(write_end)
            os.close(read_end)
    return times


def image_lookups(runs: int) -> list[float]:
    times = []
    for _ in range(runs):
        started = time.monotonic()
        find_image()
        times.append(time.monotonic() - started)
    return times


def core(args: argparse.Namespace, rootfs: Path) -> dict[str, Any]:
    """Boots, pod starts, exec round trips, agent import, image lookup."""
    image = find_image()
    boots = bare_boot(image.kernel, args.runs)
    pythons = python_floor_boots(image.kernel, image.initrd, image.rootfs, args.runs)
    lookups = image_lookups(args.runs)
    progress(f"image lookup median: {statistics.median(lookups) * 1000:.0f} ms")
    starts: list[float] = []
    execs: list[float] = []
    imports: list[float] = []
    for index in range(args.runs):
        pod_id = f"bench-{os.getpid()}-{index}"
        try:
            starts.append(pod_start_once(rootfs, pod_id, boot="cold"))
            progress(f"pod start {index + 1}/{args.runs}: {starts[-1]:.2f}s")
            if index == 0:
                execs = exec_round_trips(pod_id, args.execs)
                progress(f"exec round trip median: {statistics.median(execs) * 1000:.0f} ms")
                imports = agent_import_times(pod_id, args.runs)
                progress(f"agent import median: {statistics.median(imports) * 1000:.0f} ms")
        finally:
            try:
                api.stop_pod(pod_id)
            finally:
                api.delete_pod(pod_id)

    boot, start, rtt = summary(boots), summary(starts), summary(execs)
    python = summary(pythons)
    python_ratio = round(python["median_s"] / boot["median_s"], 2)
    agent_import = summary(imports)
    start_ratio = round(start["median_s"] / boot["median_s"], 2)
    print(f"bare boot to init (floor)   median {boot['median_s']:.2f} s")
    print(f"image's boot to python3     median {python['median_s']:.2f} s ({python_ratio}x floor)")
    print(f"pod start to first output   median {start['median_s']:.2f} s ({start_ratio}x floor)")
    print(f"exec round trip             median {rtt['median_s'] * 1000:.0f} ms")
    print(f"agent import in the guest   median {agent_import['median_s'] * 1000:.0f} ms")
    lookup_ms = statistics.median(lookups) * 1000
    print(f"image lookup (now once, at create) median {lookup_ms:.0f} ms")

    templated = templates.measure(rootfs, args.runs, starts)
    templates.report(templated)
    return {
        "templates": templated,
        "bare_boot_to_init": boot,
        "image_boot_to_python": python,
        "pod_start_to_first_output": start,
        "exec_round_trip": rtt,
        "agent_import_in_guest": agent_import,
        "image_lookup": summary(lookups),
        "ratios": {
            "pod_start_over_bare_boot": start_ratio,
            "image_boot_to_python_over_bare_boot": python_ratio,
            "exec_round_trip_over_bare_boot": round(rtt["median_s"] / boot["median_s"], 3),
        },
    }


def previous_results() -> dict[str, Any]:
    """The last results.json, for ``--only``: its other figures are kept."""
    try:
        previous = json.loads(RESULTS.read_text())
    except (OSError, ValueError):
        return {}
    return previous if isinstance(previous, dict) else {}


def machine(accelerator: str) -> dict[str, Any]:
    cpuinfo = Path("/proc/cpuinfo").read_text()
    model = next(
        (line.split(":", 1)[1].strip() for line in cpuinfo.splitlines() if "model name" in line),
        platform.machine(),
    )
    memory_kib = meminfo_kib(Path("/proc/meminfo").read_text())["MemTotal"]
    return {
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "memory_gib": round(memory_kib / 1024 / 1024, 1),
        "kernel": platform.release(),
        "accelerator": accelerator,
    }


def run_density(args: argparse.Namespace, rootfs: Path, facts: dict[str, Any]) -> dict[str, Any]:
    """The density sweep, its plots in docs/ and its table in docs/measurements.md."""
    config = density.DensityConfig(
        bare=args.density_bare,
        cold=args.density_cold,
        templated=args.density_templated,
        cpu_window=args.cpu_window,
    )
    figures = density.measure(config, rootfs)
    figures["headline"] = density.headline(figures)
    for line in density.report(figures):
        print(line)
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    plots.plot_density(figures, plots.machine_line(facts))
    plots.plot_breakdown(figures, plots.machine_line(facts))
    table = plots.table(figures, figures["headline"], when, plots.machine_line(facts))
    plots.write_table(plots.DOCS / "measurements.md", table)
    print(f"wrote {plots.DENSITY_PNG}, {plots.BREAKDOWN_PNG} and the table in docs/measurements.md")
    return figures


def run_cri(args: argparse.Namespace, rootfs: Path) -> dict[str, Any]:
    """Kubernetes' path: CRI pod starts through the shim, and an idle CRI pod's memory."""
    kernel = find_image().kernel
    with tempfile.TemporaryDirectory(prefix="vc-bench-") as tmp:
        initrd = Path(tmp) / "idle.img"
        bare_initrd(initrd, idle=True)
        figures = cri.measure(rootfs, kernel, initrd, args.runs)
    cri.report(figures)
    return figures


def run_blockio(args: argparse.Namespace, rootfs: Path) -> dict[str, Any]:
    """File I/O in a container on a 9p rootfs and in one on a block-device rootfs."""
    figures = blockio.measure(blockio.BlockIoConfig(runs=args.runs), rootfs, progress)
    for line in blockio.report(figures):
        print(line)
    return figures


def run_frontends(args: argparse.Namespace, rootfs: Path, ratios: dict[str, Any]) -> dict[str, Any]:
    """Each front-end's templated and cold start, beside a bare boot and a bare restore."""
    boots = summary(bare_boot(find_image().kernel, args.runs))
    figures = {"bare_boot_to_init": boots, **frontends.measure(rootfs, args.runs)}
    for name in frontends.FRONT_ENDS:
        entry = figures[name]
        ratios[f"{name}_templated_over_cold"] = entry["templated_over_cold"]
        ratios[f"{name}_templated_over_bare_boot"] = round(
            entry["templated"]["median_s"] / boots["median_s"], 2
        )
        ratios[f"{name}_pooled_over_bare_boot"] = round(
            entry["pooled"]["median_s"] / boots["median_s"], 2
        )
    print(f"bare boot to init (a cold start's floor) median {boots['median_s']:.2f} s")
    frontends.report(figures)
    return figures


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--only",
        choices=["timings", "network", "density", "ksm", "cri", "blockio", "starts"],
        help="run only this part",
    )
    parser.add_argument("--ksm-pods", type=int, default=5, help="idle cold pods for KSM")
    parser.add_argument("--runs", type=int, default=5, help="runs of each figure")
    parser.add_argument("--execs", type=int, default=20, help="exec round trips")
    parser.add_argument("--net-mib", type=int, default=64, help="MiB per throughput run")
    parser.add_argument(
        "--net-round-trips", type=int, default=1000, help="TCP round trips per network run"
    )
    parser.add_argument("--density-bare", type=int, default=10, help="idle bare VMs, at most")
    parser.add_argument("--density-cold", type=int, default=10, help="idle cold pods, at most")
    parser.add_argument(
        "--density-templated", type=int, default=20, help="idle templated pods, at most"
    )
    parser.add_argument(
        "--cpu-window", type=float, default=30.0, help="seconds of CPU read at a fleet's largest N"
    )
    return parser.parse_args()


def main() -> int:
    args = parse_args()
    config = network.NetBenchConfig(
        runs=args.runs, mib=args.net_mib, round_trips=args.net_round_trips
    )
    # SIGTERM unwinds like Ctrl-C does, through every cleanup (pods, VMs, namespaces, servers).
    signal.signal(signal.SIGTERM, lambda signum, _frame: sys.exit(128 + signum))
    rootfs = build_busybox_rootfs()
    accelerator, reason = detect_accelerator()
    progress(f"accelerator {accelerator.value}: {reason}")
    facts = machine(accelerator.value)

    results = previous_results() if args.only else {}
    ratios = results.setdefault("ratios", {})
    if args.only is None:
        results.update(core(args, rootfs))
        ratios = results["ratios"]
    if args.only in (None, "timings"):
        results["timings"] = timings.measure(args.runs)
        ratios.update({f"timings_{k}": v for k, v in results["timings"]["ratios"].items()})
        timings.report(results["timings"])
    if args.only in (None, "network"):
        results["network"] = network.measure(config, rootfs, progress)
        ratios.update({f"network_{k}": v for k, v in results["network"]["ratios"].items()})
        for line in network.report(results["network"]):
            print(line)
    if args.only in (None, "density"):
        results["density"] = run_density(args, rootfs, facts)
        ratios.update({f"density_{k}": v for k, v in results["density"]["ratios"].items()})
    if args.only in (None, "ksm") and ksm.available():
        results["ksm"] = ksm.measure(rootfs, args.ksm_pods)
        ratios["ksm_pss_with_over_without"] = results["ksm"]["ratio_with_over_without"]
        for line in ksm.report(results["ksm"]):
            print(line)
    if args.only in (None, "starts"):
        results["frontends"] = run_frontends(args, rootfs, ratios)
    if args.only in (None, "cri", "starts"):
        results["cri"] = run_cri(args, rootfs)
        ratios["cri_templated_over_cold"] = results["cri"]["templated_over_cold"]
        for kind in ("cold", "templated"):
            ratios[f"cri_idle_{kind}_pss_over_bare_vm"] = results["cri"][f"idle_pss_{kind}"][
                "over_bare"
            ]
    if args.only in (None, "blockio"):
        results["blockio"] = run_blockio(args, rootfs)
        ratios.update({f"blockio_{k}": v for k, v in results["blockio"]["ratios"].items()})
    results["machine"] = facts
    results["when"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
