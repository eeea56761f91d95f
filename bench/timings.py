"""Where a start's time goes, step by step: ``virtc run --timings`` in the bench.

The real CLI, as a user runs it: ``virtc run --rm --timings --boot cold|template
-- echo hi``, cold and templated runs interleaved (cold, templated, cold, ...)
so that the machine's noise hits both alike.  Each run must exit 0 and print
``hi``; its step table (all of its stderr) is parsed strictly.

Figures per boot mode: the median, min and max of each step's increment (the
table's ``step`` column: the time since the step before it in that run) keyed
by the step's text, in the order of the steps' median time since the process
started, and of that time for the container's first output.  The template
lives in a factory of the bench's own (``templates.own_factory``), removed at
the end.
"""

from __future__ import annotations

import os
import re
import shlex
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common import progress, summary
from templates import own_factory
from virtcontainers.factory.templates import init_template

BOOTS = {"cold": "cold", "templated": "template"}
"""The result's name for each boot mode, and its ``--boot`` value."""
FIRST_OUTPUT = "first output"
RUN_TIMEOUT = 300.0
HEADER = ["total", "step", "by", "what"]
ROW = re.compile(
    r" *(?P<total>\d+\.\d{3})s +(?P<step>[+-]\d+\.\d{3})s +(?P<by>\S+) +(?P<what>\S.*)"
)


class TableError(ValueError):
    """A ``--timings`` table that is not one; the message names the line."""


@dataclass(frozen=True)
class Row:
    total: float
    """Seconds since the virtc process started."""
    step: float
    """Seconds since the step before."""
    by: str
    what: str


def parse_table(text: str) -> list[Row]:
    """The steps of a ``--timings`` table; every line of *text* must belong to it.

    Raises TableError naming the first line that is not the header, not a
    step, a step seen twice, or a step earlier than the one before it.
    """
    lines = [line.rstrip() for line in text.splitlines()]
    if not lines or lines[0].split() != HEADER:
        first = lines[0] if lines else ""
        raise TableError(f"line 1: {first!r} is not the header {'  '.join(HEADER)!r}")
    rows: list[Row] = []
    for number, line in enumerate(lines[1:], 2):
        match = ROW.fullmatch(line)
        if match is None:
            raise TableError(f"line {number}: {line!r} is not a step (total, step, by, what)")
        row = Row(float(match["total"]), float(match["step"]), match["by"], match["what"])
        if any(seen.what == row.what for seen in rows):
            raise TableError(f"line {number}: step {row.what!r} is there twice")
        if rows and row.total < rows[-1].total:
            raise TableError(f"line {number}: {line!r} is earlier than the step before it")
        rows.append(row)
    if not rows:
        raise TableError("line 1: a header and no steps")
    return rows


def virtc() -> Path:
    """The CLI installed beside this interpreter (the project's virtualenv)."""
    path = Path(sys.executable).with_name("virtc")
    if not path.is_file():
        raise FileNotFoundError(f"no virtc beside {sys.executable}: install the project first")
    return path


def run_once(boot: str) -> list[Row]:
    """One ``virtc run --timings``; its steps.  Raises RuntimeError if it failed."""
    argv = [str(virtc()), "run", "--rm", "--timings", "--boot", boot, "--", "echo", "hi"]
    command = shlex.join(argv)
    # Off a terminal rich wraps stderr at 80 columns, which would split a step's line.
    env = {**os.environ, "COLUMNS": "1000"}
    done = subprocess.run(
        argv, capture_output=True, text=True, timeout=RUN_TIMEOUT, check=False, env=env
    )
    if done.returncode != 0 or done.stdout != "hi\n":
        raise RuntimeError(
            f"{command}: exit {done.returncode}, stdout {done.stdout[-200:]!r}, "
            f"stderr:\n{done.stderr[-2000:]}"
        )
    try:
        return parse_table(done.stderr)
    except TableError as exc:
        raise RuntimeError(f"{command}: its timings, {exc}") from exc


def first_output(rows: list[Row]) -> float:
    """When the container's first output came.  Raises RuntimeError if it did not."""
    for row in rows:
        if row.what == FIRST_OUTPUT:
            return row.total
    raise RuntimeError(f"no {FIRST_OUTPUT!r} among the steps {[row.what for row in rows]}")


def summarize(runs: list[list[Row]], boot: str) -> dict[str, Any]:
    """Each step's increment and the time to first output, over runs of one boot mode.

    Raises RuntimeError if the runs did not all take the same steps.
    """
    names = [row.what for row in runs[0]]
    for index, rows in enumerate(runs[1:], 2):
        if sorted(row.what for row in rows) != sorted(names):
            raise RuntimeError(
                f"{boot} run {index} took the steps {[row.what for row in rows]}, run 1 {names}"
            )
    totals = {
        name: [row.total for rows in runs for row in rows if row.what == name] for name in names
    }
    steps = {
        name: [row.step for rows in runs for row in rows if row.what == name] for name in names
    }
    # Steps close in time can swap from one run to the next: order them by their medians.
    order = sorted(names, key=lambda name: statistics.median(totals[name]))
    return {
        "runs": len(runs),
        "steps": {name: summary(steps[name]) for name in order},
        "first_output": summary([first_output(rows) for rows in runs]),
    }


def measure(runs: int) -> dict[str, Any]:
    """*runs* cold and *runs* templated ``virtc run --timings``, interleaved, summarized."""
    if runs < 1:
        raise ValueError(f"timings bench: runs must be at least 1, not {runs}")
    tables: dict[str, list[list[Row]]] = {name: [] for name in BOOTS}
    with own_factory() as factory:
        started = time.monotonic()
        init_template(factory=factory, progress=progress)
        progress(f"template for the timings built in {time.monotonic() - started:.1f}s")
        for index in range(runs):
            for name, boot in BOOTS.items():
                rows = run_once(boot)
                tables[name].append(rows)
                at = first_output(rows)
                progress(f"timings {name} {index + 1}/{runs}: first output at {at:.2f}s")
    figures: dict[str, Any] = {name: summarize(tables[name], name) for name in BOOTS}
    cold, templated = (figures[name]["first_output"]["median_s"] for name in BOOTS)
    figures["ratios"] = {"templated_first_output_over_cold": round(templated / cold, 2)}
    return figures


def merged_steps(first: list[str], second: list[str]) -> list[str]:
    """Both step lists in one: a step of *second* missing from *first* goes just
    before the step that follows it in *second* (so a cold step reads above its
    templated counterpart)."""
    merged = list(first)
    for index in reversed(range(len(second))):
        name = second[index]
        if name not in merged:
            following = second[index + 1] if index + 1 < len(second) else None
            merged.insert(len(merged) if following is None else merged.index(following), name)
    return merged


def report(figures: dict[str, Any]) -> None:
    """Each step's median increment, cold and templated, and the time to first output."""
    cold, templated = (figures[name] for name in BOOTS)
    names = merged_steps(list(cold["steps"]), list(templated["steps"]))
    width = max(len(name) for name in names)

    def cell(mode: dict[str, Any], name: str) -> str:
        step = mode["steps"].get(name)
        return f"{'-':>9}" if step is None else f"{step['median_s']:+8.3f}s"

    print(f"where a start goes (virtc run --timings, medians of {cold['runs']} runs)")
    print(f"  {'step':<{width}}  {'cold':>9}  {'templated':>9}")
    for name in names:
        print(f"  {name:<{width}}  {cell(cold, name)}  {cell(templated, name)}")
    ratio = figures["ratios"]["templated_first_output_over_cold"]
    print(
        f"  {'to first output':<{width}}  {cold['first_output']['median_s']:8.3f}s  "
        f"{templated['first_output']['median_s']:8.3f}s  ({ratio}x)"
    )
