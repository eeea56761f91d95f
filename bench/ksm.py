"""KSM: what merging identical pages saves across idle cold pods.

QEMU marks a VM's own RAM mergeable (``mem-merge``, on by default), so KSM
can merge the pages that idle pods hold alike: the guest kernel's, the page
cache of the same root image, the agent's.  KSM is host-wide and off here by
default, so the bench turns it on only while it measures and puts every
setting back afterwards (``run=2`` first, unmerging what it merged, when it
was off).  Measured: the summed PSS of the pods' processes before KSM and
after two full scans, with KSM's own count of pages saved.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from common import progress
from density import PodFleet, settle
from virtcontainers.host.proc import pss_kib

KSM = Path("/sys/kernel/mm/ksm")
SCAN = {"pages_to_scan": "5000", "sleep_millisecs": "20"}
SCANS = 2
SCAN_TIMEOUT = 300.0
PAGE_KIB = 4


def available() -> bool:
    return (KSM / "run").exists()


def _read(name: str) -> str:
    return (KSM / name).read_text().strip()


def _write(name: str, value: str) -> None:
    (KSM / name).write_text(value)


@contextlib.contextmanager
def merging() -> Iterator[None]:
    """KSM on, scanning fast; its settings as they were afterwards."""
    saved = {name: _read(name) for name in ("run", *SCAN)}
    try:
        for name, value in SCAN.items():
            _write(name, value)
        _write("run", "1")
        yield
    finally:
        if saved["run"] == "0":
            _write("run", "2")  # unmerge, so the host is as it was
        for name, value in saved.items():
            if name != "run":
                _write(name, value)
        _write("run", saved["run"])


def wait_for_scans(count: int) -> None:
    start = int(_read("full_scans"))
    deadline = time.monotonic() + SCAN_TIMEOUT
    while int(_read("full_scans")) < start + count:
        if time.monotonic() > deadline:
            raise TimeoutError(f"KSM did not finish {count} scans in {SCAN_TIMEOUT:.0f}s")
        time.sleep(0.5)


def fleet_pss_mib(fleet: PodFleet) -> float:
    pids = [pid for unit in fleet.units() for pids in unit.values() for pid in pids]
    return sum(pss_kib(pid) or 0 for pid in pids) / 1024


def measure(rootfs: Path, pods: int) -> dict[str, Any]:
    """*pods* idle cold pods: their PSS without KSM, then once KSM has scanned them twice."""
    with PodFleet(rootfs, "cold") as fleet:
        for n in range(pods):
            seconds = fleet.add()
            progress(f"ksm: cold pod {n + 1}/{pods} started ({seconds:.1f}s)")
        pids = [pid for unit in fleet.units() for pids in unit.values() for pid in pids]
        settle(pids, "ksm: idle pods")
        before = fleet_pss_mib(fleet)
        with merging():
            wait_for_scans(SCANS)
            after = fleet_pss_mib(fleet)
            sharing_mib = int(_read("pages_sharing")) * PAGE_KIB / 1024
        measured = len(fleet.ids)
    return {
        "pods": measured,
        "pss_per_pod_without_ksm_mib": round(before / measured, 1),
        "pss_per_pod_with_ksm_mib": round(after / measured, 1),
        "ksm_pages_sharing_mib": round(sharing_mib, 1),
        "ratio_with_over_without": round(after / before, 2),
    }


def report(figures: dict[str, Any]) -> list[str]:
    return [
        f"KSM, {figures['pods']} idle cold pods: PSS per pod "
        f"{figures['pss_per_pod_without_ksm_mib']:.0f} MiB without, "
        f"{figures['pss_per_pod_with_ksm_mib']:.0f} MiB after {SCANS} scans "
        f"({figures['ratio_with_over_without']}x; KSM shares "
        f"{figures['ksm_pages_sharing_mib']:.0f} MiB)"
    ]
