"""The density figures as PNG plots in docs/ and a markdown table in
docs/measurements.md (between two marker comments, rewritten each run)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

DOCS = Path(__file__).resolve().parent.parent / "docs"
DENSITY_PNG = DOCS / "density.png"
BREAKDOWN_PNG = DOCS / "density-breakdown.png"
TABLE_BEGIN = "<!-- density table: written by bench/run.py -->"
TABLE_END = "<!-- end of density table -->"
TIMES = "\N{MULTIPLICATION SIGN}"
KINDS = (
    ("bare", "bare VM (floor)", "tab:gray"),
    ("cold", "cold pod", "tab:red"),
    ("templated", "templated pod", "tab:blue"),
)


def machine_line(facts: dict[str, Any]) -> str:
    return f"{facts['cpus']} cores, {facts['memory_gib']:.0f} GiB, {facts['accelerator'].upper()}"


def _pyplot() -> Any:
    """matplotlib's pyplot, drawing to files only (no display here); imported
    when a plot is drawn, so that the table needs no matplotlib."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_density(results: dict[str, Any], machine: str, path: Path = DENSITY_PNG) -> None:
    plt = _pyplot()
    figure, (memory, cpu) = plt.subplots(1, 2, figsize=(11, 4.2))
    for kind, label, colour in KINDS:
        points = results[kind]["points"]
        ns = [p["n"] for p in points]
        memory.plot(ns, [p["pss_total_mib"] for p in points], "o-", color=colour, label=label)
        memory.plot(
            ns,
            [p["host_used_delta_mib"] for p in points],
            "x--",
            color=colour,
            alpha=0.6,
            label=f"{label}: MemAvailable drop",
        )
        cpus = [p["cpu_percent_of_one_core"] for p in points]
        cpu.plot(ns, cpus, "o-", color=colour, label=label)
    memory.set(xlabel="idle members at once (N)", ylabel="host memory, MiB", title="Memory")
    memory.legend(fontsize=7)
    cpu.axhline(20, color="black", linestyle=":", linewidth=1, label="target, 20 pods")
    cpu.set(xlabel="idle members at once (N)", ylabel="% of one core", title="Idle CPU")
    cpu.legend(fontsize=7)
    for axes in (memory, cpu):
        axes.grid(alpha=0.3)
        axes.set_xticks(sorted({p["n"] for k, _, _ in KINDS for p in results[k]["points"]}))
    figure.suptitle(f"Idle density: summed PSS (solid) and CPU against N — {machine}", fontsize=10)
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt.close(figure)


def plot_breakdown(results: dict[str, Any], machine: str, path: Path = BREAKDOWN_PNG) -> None:
    """Stacked PSS per member at the cold fleet's size, by where it goes."""
    plt = _pyplot()
    n = results["cold"]["size"]
    columns = []
    for kind, label, _ in KINDS:
        point = next((p for p in results[kind]["points"] if p["n"] == n), None)
        if point is not None:
            columns.append((label, point["pss_per_unit_by_kind_mib"]))
    parts = sorted({part for _, kinds in columns for part in kinds})
    figure, axes = plt.subplots(figsize=(7, 4.2))
    bottoms = [0.0] * len(columns)
    for part in parts:
        values = [kinds.get(part, 0.0) for _, kinds in columns]
        axes.bar([label for label, _ in columns], values, bottom=bottoms, label=part)
        bottoms = [b + v for b, v in zip(bottoms, values, strict=True)]
    axes.set(ylabel="PSS per member, MiB", title=f"Where the PSS goes, {n} at once — {machine}")
    axes.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt.close(figure)


def _pss_rows(
    block: dict[str, Any], floor: str, labels: tuple[str, str], targets: tuple[str, str]
) -> list[str]:
    """The cold and the templated row of one PSS figure."""
    return [
        f"| {label} | {block[f'{kind}_pod_mib']:.0f} MiB | {floor} "
        f"| {block[f'{kind}_over_bare']}{TIMES} |{f' {target} ' if target else ' '}|"
        for kind, label, target in zip(("cold", "templated"), labels, targets, strict=True)
    ]


def table(results: dict[str, Any], headline: dict[str, Any], when: str, machine: str) -> str:
    rows = [
        f"| figure ({when}, {machine}) | measured | its floor, same run | ratio | target |",
        "| --- | --- | --- | --- | --- |",
    ]
    if "pss" in headline:
        pss = headline["pss"]
        each = f"host PSS per idle pod, {pss['n']} at once"
        rows += _pss_rows(
            pss,
            f"bare VM, {pss['n']} at once: {pss['bare_vm_mib']:.0f} MiB",
            (f"{each}, cold", f"{each}, templated"),
            (f"≤ {pss['cold_target']}{TIMES}", f"≤ {pss['templated_target']}{TIMES}"),
        )
    if "pss_without_tcg_buffer" in headline:
        less = headline["pss_without_tcg_buffer"]
        same = "the same without QEMU's TCG translation buffer"
        rows += _pss_rows(
            less,
            f"bare VM: {less['bare_vm_mib']:.0f} MiB",
            (f"{same} (KVM has none), cold", f"{same}, templated"),
            ("", ""),
        )
    cpu = headline["idle_cpu"]
    bare_cpu = results["bare"]["points"][-1]
    rows.append(
        f"| idle CPU, {cpu['pods']} templated pods, over {cpu['window_s']:.0f} s "
        f"| {cpu['percent_of_one_core']:.1f}% of one core "
        f"| {bare_cpu['n']} bare VMs: {bare_cpu['cpu_percent_of_one_core']:.1f}% | "
        f"| < {cpu['target_below']:.0f}% |"
    )
    for kind, label, _ in KINDS:
        if "burst" in results[kind]:
            b = results[kind]["burst"]
            rows.append(
                f"| a {b['burst_mib']} MiB burst in a {label}'s guest, then freed: "
                f"its guest RAM's PSS {b['wait_s']:.0f} s later "
                f"| {b['guest_ram_after_mib']:.0f} MiB (held: {b['guest_ram_held_mib']:.0f}) "
                f"| before the burst: {b['guest_ram_before_mib']:.0f} MiB "
                f"| {b['guest_ram_after_mib'] / b['guest_ram_before_mib']:.2f}{TIMES} | |"
            )
    rows += ["", "| N | " + " | ".join(label for _, label, _ in KINDS) + " |"]
    rows.append("| --- |" + " --- |" * len(KINDS))
    ns = sorted({p["n"] for kind, _, _ in KINDS for p in results[kind]["points"]})
    for n in ns:
        cells = []
        for kind, _, _ in KINDS:
            point = next((p for p in results[kind]["points"] if p["n"] == n), None)
            cells.append(
                "—"
                if point is None
                else f"{point['pss_per_unit_mib']['mean']:.0f} MiB PSS each, "
                f"{point['pss_total_mib']:.0f} in all (host +{point['host_used_delta_mib']:.0f}), "
                f"CPU {point['cpu_percent_of_one_core']:.1f}%"
            )
        rows.append(f"| {n} | " + " | ".join(cells) + " |")
    return "\n".join([*rows, "", *breakdown_table(results)])


def breakdown_table(results: dict[str, Any]) -> list[str]:
    """Where a member's PSS goes at the cold fleet's size, and what its guest says."""
    n = results["cold"]["size"]
    points = {k: next((p for p in results[k]["points"] if p["n"] == n), None) for k, _, _ in KINDS}
    rows = [f"| per member, {n} at once, MiB | " + " | ".join(lb for _, lb, _ in KINDS) + " |"]
    rows.append("| --- |" + " --- |" * len(KINDS))
    parts = sorted({part for p in points.values() if p for part in p["pss_per_unit_by_kind_mib"]})
    for part in parts:
        cells = [
            "—" if p is None else f"{p['pss_per_unit_by_kind_mib'].get(part, 0.0):.0f}"
            for p in points.values()
        ]
        rows.append(f"| host PSS: {part} | " + " | ".join(cells) + " |")
    fields = sorted({f for k, _, _ in KINDS for f in results[k]["guest_meminfo_mib"]})
    for field in fields:
        cells = []
        for kind, _, _ in KINDS:
            guest = results[kind]["guest_meminfo_mib"]
            cells.append(f"{guest[field]:.0f}" if field in guest else "—")
        rows.append(f"| guest meminfo (at its largest N): {field} | " + " | ".join(cells) + " |")
    return rows


def main() -> None:
    """Redraw the plots and the table from bench/results.json (no measuring)."""
    import json

    import density

    results = json.loads((Path(__file__).with_name("results.json")).read_text())
    figures, facts = results["density"], results["machine"]
    figures["headline"] = density.headline(figures)
    machine = (
        f"{facts['cpus']} cores, {facts['memory_gib']:.0f} GiB, {facts['accelerator'].upper()}"
    )
    plot_density(figures, machine)
    plot_breakdown(figures, machine)
    when = results["when"][:16].replace("T", " ") + " UTC"
    write_table(DOCS / "measurements.md", table(figures, figures["headline"], when, machine))


def write_table(doc: Path, text: str) -> None:
    """Replace what lies between the markers in *doc* (they must be there)."""
    content = doc.read_text()
    begin = content.index(TABLE_BEGIN) + len(TABLE_BEGIN)
    end = content.index(TABLE_END)
    doc.write_text(content[:begin] + "\n\n" + text + "\n\n" + content[end:])


if __name__ == "__main__":
    main()
