"""The block I/O benchmark's pure parts: its workloads' shell lines, its timer
and its summary (no VM is started)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "bench"))

import blockio
from blockio import BlockIoConfig, Side, elapsed, workloads


def test_the_workloads_run_in_a_busybox_shell_and_print_the_uptime_twice(tmp_path: Path) -> None:
    """Run on the host's busybox, in a scratch directory standing in for the root."""
    config = BlockIoConfig(runs=1, mib=1, small_files=3)
    root = tmp_path / "root"
    lines = workloads(config)
    prepare = f"rm -rf {blockio.WORKDIR}; mkdir {blockio.WORKDIR}"
    for name in ("seq_write", "seq_read", "small_create", "small_read"):
        script = (prepare + "; " if name == "seq_write" else "") + lines[name]
        script = script.replace(blockio.WORKDIR, str(root))
        done = subprocess.run(
            ["busybox", "sh", "-c", script], capture_output=True, text=True, check=True
        )
        assert elapsed(done.stdout) >= 0, name
    assert (root / "big").stat().st_size == 1 << 20
    assert sorted(p.name for p in (root / "small").iterdir()) == ["0", "1", "2"]
    assert (root / "small" / "2").read_text() == "x" * blockio.SMALL_FILE


def test_the_summary_gives_medians_and_throughput() -> None:
    config = BlockIoConfig(runs=3, mib=64, small_files=2000)
    side = Side("block", "block", {"seq_write": [2.0, 4.0, 1.0], "small_read": [1.0, 1.0, 1.0]})
    figures = side.summary(config)
    assert figures["seq_write"] == {
        "median_s": 2.0, "min_s": 1.0, "max_s": 4.0, "mib_s": 32.0, "runs": 3,
    }  # fmt: skip
    assert figures["small_read"]["files_s"] == 2000.0
    assert config.image_mib > 64 * 2
    with pytest.raises(ValueError, match="small_files"):
        BlockIoConfig(small_files=0)
