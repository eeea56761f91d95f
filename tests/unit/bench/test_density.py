"""The density benchmark's pure parts: where a QEMU mapping's PSS is counted,
meminfo parsing, the ratios and the table (no VM is started)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "bench"))

import common
import density
import plots

KERNEL = Path("/cache/vmlinux")


def point(n: int, pss: float, cpu: float) -> dict[str, Any]:
    return {
        "n": n,
        "cpu_percent_of_one_core": cpu,
        "cpu_window_s": 30.0,
        "pss_total_mib": pss * n,
        "pss_per_unit_mib": {"mean": pss, "median": pss, "min": pss, "max": pss},
        "pss_per_unit_by_kind_mib": {"qemu_guest_ram": pss},
        "host_used_delta_mib": pss * n,
    }


def fleet(points: list[dict[str, Any]]) -> dict[str, Any]:
    return {"size": points[-1]["n"], "points": points, "guest_meminfo_mib": {}}


def results() -> dict[str, Any]:
    return {
        "bare": fleet([point(1, 200, 1), point(10, 150, 8)]),
        "cold": fleet([point(1, 300, 1), point(10, 180, 9)]),
        "templated": fleet([point(1, 100, 1), point(10, 60, 9), point(20, 50, 15)]),
    }


def test_mappings_are_counted_by_kind() -> None:
    guest = 512 * 1024

    def kind(line: str, size: int) -> str:
        return density._mapping_kind(line.split(), KERNEL, guest, size)

    anon = "7f00-7f01 rw-p 00000000 00:00 0"
    assert kind(anon, guest) == "guest_ram"
    assert kind("7f00-7f01 rw-p 0 00:20 5 /dev/shm/f/memory", guest) == "guest_ram"
    assert kind("7f00-7f01 rwxp 00000000 00:00 0", 1 << 20) == "tcg_code_buffer"
    assert kind(anon, 2048) == "other_anon"
    assert kind("7f00-7f01 rw-p 0 00:00 0 [heap]", 2048) == "other_anon"
    assert kind(f"7f00-7f01 rw-p 0 fe:00 7 {KERNEL}", 65536) == "kernel_image"
    assert kind("7f00-7f01 r-xp 0 fe:00 7 /usr/lib/libc.so.6", guest) == "files"


def test_meminfo_is_parsed_in_kib() -> None:
    text = "MemTotal:       24684000 kB\nMemAvailable:   20000000 kB\nHugePages_Total:       0\n"
    info = common.meminfo_kib(text)
    assert info == {"MemTotal": 24684000, "MemAvailable": 20000000, "HugePages_Total": 0}


def test_ratios_and_headline_compare_pods_with_bare_vms_at_the_same_n() -> None:
    figures = results()
    assert density.ratios(figures) == {
        "cold_pss_over_bare_at_1": 1.5,
        "cold_pss_over_bare_at_10": 1.2,
        "templated_pss_over_bare_at_1": 0.5,
        "templated_pss_over_bare_at_10": 0.4,
    }
    top = density.headline(figures)
    assert top["pss"]["cold_over_bare"] == 1.2
    assert top["pss"]["templated_over_bare"] == 0.4
    assert top["idle_cpu"]["pods"] == 20
    lines = density.report({**figures, **{"ratios": {}}})
    assert any("misses" in line and "cold" in line for line in lines)
    assert any("idle CPU, 20 templated pods" in line and "meets" in line for line in lines)


def test_the_table_names_every_n_and_replaces_only_its_own_section(tmp_path: Path) -> None:
    figures = results()
    figures["cold"]["burst"] = {
        "burst_mib": 200,
        "guest_ram_before_mib": 100.0,
        "guest_ram_held_mib": 300.0,
        "guest_ram_after_mib": 110.0,
        "wait_s": 10.0,
    }
    text = plots.table(figures, density.headline(figures), "today", "2 cores, TCG")
    assert "a 200 MiB burst in a cold pod's guest" in text
    assert "| 110 MiB (held: 300) | before the burst: 100 MiB | 1.10" in text
    assert "| 20 | — | — | 50 MiB PSS each" in text
    assert "1.2\N{MULTIPLICATION SIGN}" in text
    doc = tmp_path / "measurements.md"
    doc.write_text(f"before\n{plots.TABLE_BEGIN}\nstale row\n{plots.TABLE_END}\nafter\n")
    plots.write_table(doc, text)
    written = doc.read_text()
    assert "stale row" not in written
    assert written.startswith("before\n") and written.endswith("after\n")
    assert text in written
