"""File I/O in a container on a rootfs shared over 9p, against one on a block-device rootfs.

One pod, two containers on the same busybox files, side by side in the same VM:

- 9p: the busybox rootfs with a writable layer of its own (overlayfs on the
  host), shared over virtio-9p (``cache=none``, as every 9p rootfs is);
- block: an ext4 image made from the same busybox rootfs (``mkfs.ext4 -d``) on
  a loop device, hot-plugged as a virtio-blk disk and mounted by the guest.

The image file and the 9p container's writable layer are on the same host
filesystem.  Each workload is a busybox shell line exec'd in the container,
timed inside the guest from ``/proc/uptime`` (10 ms steps; every workload
takes far longer), so that the exec itself is not counted:

- sequential write: ``dd`` of MiB from /dev/zero into a file, ``conv=fsync``;
- sequential read: that file read back with ``dd``, after the guest's page
  cache is dropped (``echo 3 > /proc/sys/vm/drop_caches``, from the VM);
- small files, create: N files of 4 KiB written by the shell's own ``echo``
  (no process per file), then ``sync``;
- small files, read: ``cat`` of all of them, after the cache is dropped.

Runs alternate 9p and block, and each run starts from an empty directory.
Figures are medians over runs (seconds, and MiB/s or files/s); the ratio is
block over 9p throughput (above 1: the block rootfs is faster).
"""

from __future__ import annotations

import contextlib
import os
import statistics
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from virtcontainers import api
from virtcontainers.config import Cmd, ContainerConfig, PodConfig, Resources
from virtcontainers.errors import NotFoundError, VcError

Progress = Callable[[str], None]
SMALL_FILE = 4096
WORKDIR = "/bench-io"
_CLOCK = "read t0 _ < /proc/uptime"
_ELAPSED = 'read t1 _ < /proc/uptime; echo "$t0 $t1"'


@dataclass(frozen=True)
class BlockIoConfig:
    runs: int = 5
    mib: int = 64
    small_files: int = 2000

    def __post_init__(self) -> None:
        for name in ("runs", "mib", "small_files"):
            if getattr(self, name) < 1:
                raise ValueError(f"block I/O bench: {name} must be at least 1")

    @property
    def image_mib(self) -> int:
        """Room for busybox, the big file, the small files and ext4's own."""
        return 64 + 2 * self.mib + self.small_files * 8 // 1024


def workloads(config: BlockIoConfig) -> dict[str, str]:
    """Each workload's shell line; it prints the guest's uptime before and after."""
    big = f"{WORKDIR}/big"
    fill = f"s=$(head -c {SMALL_FILE} /dev/zero | tr '\\0' x)"
    create = (
        f"{fill}; mkdir {WORKDIR}/small; {_CLOCK}; i=0; "
        f'while [ $i -lt {config.small_files} ]; do echo -n "$s" > {WORKDIR}/small/$i; '
        f"i=$((i+1)); done; sync; {_ELAPSED}"
    )
    return {
        "seq_write": (
            f"{_CLOCK}; dd if=/dev/zero of={big} bs=1M count={config.mib} conv=fsync "
            f"2>/dev/null; {_ELAPSED}"
        ),
        "seq_read": f"{_CLOCK}; dd if={big} of=/dev/null bs=1M 2>/dev/null; {_ELAPSED}",
        "small_create": create,
        "small_read": f"{_CLOCK}; cat {WORKDIR}/small/* > /dev/null; {_ELAPSED}",
    }


def run_in(pod_id: str, container_id: str | None, script: str) -> str:
    """Run ``script`` (in a container, or in the VM with None); its stdout."""
    read_end, write_end = os.pipe()
    try:
        cmd = Cmd(("sh", "-c", script))
        if container_id is None:
            handle = api.enter_pod(pod_id, cmd, api.Stdio(stdout=write_end))
        else:
            handle = api.enter_container(pod_id, container_id, cmd, api.Stdio(stdout=write_end))
        os.close(write_end)
        write_end = -1
        out = b""
        while chunk := os.read(read_end, 4096):
            out += chunk
        status = api.wait_process(pod_id, container_id, handle.exec_id)
    finally:
        if write_end >= 0:
            os.close(write_end)
        os.close(read_end)
    if status.exit_code != 0:
        raise RuntimeError(f"{container_id or 'the VM'}: {script!r} exited {status.exit_code}")
    return out.decode()


def elapsed(output: str) -> float:
    start, end = (float(field) for field in output.split())
    return end - start


def drop_caches(pod_id: str) -> None:
    run_in(pod_id, None, "sync; echo 3 > /proc/sys/vm/drop_caches")


@dataclass
class Side:
    """One container's samples: seconds per workload, per run."""

    name: str
    container_id: str
    seconds: dict[str, list[float]]

    def run_once(self, pod_id: str, config: BlockIoConfig, progress: Progress) -> None:
        lines = workloads(config)
        run_in(pod_id, self.container_id, f"rm -rf {WORKDIR}; mkdir {WORKDIR}; sync")
        for name, script in lines.items():
            if name.endswith("read"):
                drop_caches(pod_id)
            self.seconds.setdefault(name, []).append(
                elapsed(run_in(pod_id, self.container_id, script))
            )
        run_in(pod_id, self.container_id, f"rm -rf {WORKDIR}; sync")
        last = {name: f"{times[-1]:.2f}s" for name, times in self.seconds.items()}
        progress(f"block I/O {self.name} run {len(self.seconds['seq_write'])}: {last}")

    def summary(self, config: BlockIoConfig) -> dict[str, Any]:
        amounts = {
            "seq_write": (config.mib, "mib_s"),
            "seq_read": (config.mib, "mib_s"),
            "small_create": (config.small_files, "files_s"),
            "small_read": (config.small_files, "files_s"),
        }
        figures: dict[str, Any] = {}
        for name, samples in self.seconds.items():
            amount, unit = amounts[name]
            median = statistics.median(samples)
            figures[name] = {
                "median_s": round(median, 3),
                "min_s": round(min(samples), 3),
                "max_s": round(max(samples), 3),
                unit: round(amount / median, 1) if median > 0 else None,
                "runs": len(samples),
            }
        return figures


@contextlib.contextmanager
def loop_image(rootfs: Path, size_mib: int) -> Iterator[Path]:
    """An ext4 image of ``rootfs`` on a loop device, detached and deleted afterwards."""
    with tempfile.TemporaryDirectory(prefix="vc-bench-blk-", dir="/var/tmp") as tmp:
        image = Path(tmp) / "root.img"
        subprocess.run(
            ["mkfs.ext4", "-q", "-F", "-d", str(rootfs), str(image), f"{size_mib}M"],
            check=True,
            capture_output=True,
        )
        attached = subprocess.run(
            ["losetup", "--find", "--show", str(image)], check=True, capture_output=True, text=True
        )
        device = Path(attached.stdout.strip())
        try:
            yield device
        finally:
            subprocess.run(["losetup", "--detach", str(device)], check=False, capture_output=True)


@contextlib.contextmanager
def io_pod(rootfs: Path, device: Path) -> Iterator[str]:
    pod_id = f"bench-blkio-{os.getpid()}"
    idle = Cmd(("sleep", "100000"))
    containers = (
        ContainerConfig("ninep", rootfs, idle, writable_layer=True),
        ContainerConfig("block", device, idle, rootfs_fstype="ext4"),
    )
    config = PodConfig(id=pod_id, containers=containers, resources=Resources(hotplug_slots=1))
    try:
        api.run_pod(config)
        yield pod_id
    finally:
        with contextlib.suppress(NotFoundError):
            try:
                with contextlib.suppress(VcError):
                    api.stop_pod(pod_id)
            finally:
                api.delete_pod(pod_id, force=True)


def measure(config: BlockIoConfig, rootfs: Path, progress: Progress) -> dict[str, Any]:
    """Set up, measure 9p and block alternately, tear down; the figures for results.json."""
    ninep, block = Side("9p", "ninep", {}), Side("block", "block", {})
    with loop_image(rootfs, config.image_mib) as device, io_pod(rootfs, device) as pod_id:
        progress(f"block I/O: pod {pod_id}, block rootfs on {device}")
        for _ in range(config.runs):
            ninep.run_once(pod_id, config, progress)
            block.run_once(pod_id, config, progress)
    ninep_figures, block_figures = ninep.summary(config), block.summary(config)
    ratios = {
        f"{name}_block_over_9p": round(
            ninep_figures[name]["median_s"] / block_figures[name]["median_s"], 2
        )
        for name in ninep_figures
    }
    return {
        "setup": {
            "seq_mib": config.mib,
            "small_files": config.small_files,
            "small_file_bytes": SMALL_FILE,
            "ninep": "busybox rootfs + writable layer (host overlayfs), virtio-9p cache=none",
            "block": "ext4 image of the same rootfs on a loop device, virtio-blk",
            "timer": "/proc/uptime in the guest (10 ms steps)",
        },
        "ninep": ninep_figures,
        "block": block_figures,
        "ratios": ratios,
    }


def report(figures: dict[str, Any]) -> list[str]:
    """Lines for the terminal: each workload's medians and the block/9p throughput ratio."""
    lines = []
    for name, ratio in figures["ratios"].items():
        workload = name.removesuffix("_block_over_9p")
        ninep, block = figures["ninep"][workload], figures["block"][workload]
        unit = "mib_s" if "mib_s" in ninep else "files_s"
        lines.append(
            f"{workload:13} 9p median {ninep['median_s']:.2f} s ({ninep[unit]} {unit}), "
            f"block {block['median_s']:.2f} s ({block[unit]} {unit}): block/9p {ratio}x"
        )
    return lines
