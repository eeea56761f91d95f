"""The timings benchmark's pure parts: its parser of ``virtc run --timings``
tables, and how it summarizes them (no VM is started)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "bench"))

import timings
from timings import Row, TableError, merged_steps, parse_table, summarize

# Real runs of `virtc run --rm --timings --boot cold|template -- echo hi` (stderr).
COLD = """\
   total      step  by     what
  0.000s   +0.000s  virtc  process started
  0.448s   +0.448s  virtc  command line parsed
  1.031s   +0.583s  pod    the daemon starts the VM
  1.336s   +0.305s  pod    VM launched
  8.316s   +6.980s  pod    agent answered
  8.322s   +0.006s  pod    pod running
  9.120s   +0.798s  virtc  container created
  9.282s   +0.162s  virtc  container started
  9.364s   +0.082s  virtc  first output
  9.435s   +0.070s  virtc  container exited
"""
TEMPLATED = """\
   total      step  by     what
  0.000s   +0.000s  virtc  process started
  0.372s   +0.372s  virtc  command line parsed
  0.892s   +0.519s  pod    the daemon starts the VM
  1.033s   +0.142s  pod    VM restored from its template
  1.160s   +0.126s  pod    agent answered
  1.521s   +0.362s  pod    clone given its identity and NICs
  1.525s   +0.003s  pod    pod running
  1.949s   +0.425s  virtc  container created
  2.083s   +0.134s  virtc  container started
  2.324s   +0.241s  virtc  first output
  2.449s   +0.125s  virtc  container exited
"""


def test_a_real_cold_table_parses() -> None:
    rows = parse_table(COLD)
    assert rows[0] == Row(0.0, 0.0, "virtc", "process started")
    assert rows[4] == Row(8.316, 6.98, "pod", "agent answered")
    assert [row.what for row in rows][-2:] == ["first output", "container exited"]
    assert timings.first_output(rows) == 9.364


def test_a_real_templated_table_parses() -> None:
    rows = parse_table(TEMPLATED)
    assert [row.by for row in rows] == ["virtc"] * 2 + ["pod"] * 5 + ["virtc"] * 4
    assert rows[5].what == "clone given its identity and NICs"
    assert timings.first_output(rows) == 2.324


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("", r"^line 1: '' is not the header"),
        ("\n".join(COLD.splitlines()[1:]), r"^line 1: '  0.000s .*' is not the header"),
        (COLD.splitlines()[0], r"^line 1: a header and no steps$"),
        # What rich does to a long line off a terminal at 80 columns.
        (COLD + "  9.500s   +0.065s  virtc  a step\nwhose text wrapped\n", r"^line 13: 'whose"),
        (COLD + "virtc: error: pod run-1 is gone\n", r"^line 12: 'virtc: error: .*' is not a step"),
        (COLD.replace("+0.305s", "0.305s"), r"^line 5: .* is not a step"),
        (COLD.replace("1.336s", "1.336 s"), r"^line 5: .* is not a step"),
        (COLD.replace("pod    VM launched", "pod"), r"^line 5: .* is not a step"),
        (COLD + "  9.500s   +0.065s  virtc  first output\n", r"^line 12: step 'first output' is"),
        (COLD.replace("8.322s", "0.322s"), r"^line 7: .* is earlier than the step before it$"),
    ],
)
def test_a_line_that_does_not_parse_is_named(text: str, error: str) -> None:
    with pytest.raises(TableError, match=error):
        parse_table(text)


def test_trailing_blanks_are_not_an_error() -> None:
    assert parse_table(COLD.replace("\n", "  \n")) == parse_table(COLD)


def test_steps_are_summarized_in_the_order_of_their_median_times() -> None:
    # "first output" came before "container started" in the second run only.
    swapped = COLD.replace(
        "  9.282s   +0.162s  virtc  container started\n  9.364s   +0.082s  virtc  first output",
        "  9.200s   +0.080s  virtc  first output\n  9.364s   +0.164s  virtc  container started",
    )
    figures = summarize([parse_table(COLD), parse_table(swapped), parse_table(COLD)], "cold")
    assert figures["runs"] == 3
    assert list(figures["steps"])[-3:] == ["container started", "first output", "container exited"]
    assert figures["steps"]["agent answered"] == {
        "median_s": 6.98,
        "min_s": 6.98,
        "max_s": 6.98,
        "runs": 3,
    }
    assert figures["first_output"]["min_s"] == 9.2
    assert figures["first_output"]["median_s"] == 9.364


def test_runs_that_took_other_steps_are_an_error() -> None:
    with pytest.raises(RuntimeError, match="cold run 2 took the steps"):
        summarize([parse_table(COLD), parse_table(TEMPLATED)], "cold")
    silent = parse_table(COLD.replace("first output", "no output"))
    with pytest.raises(RuntimeError, match="no 'first output' among the steps"):
        summarize([silent], "cold")


def test_the_report_puts_each_modes_own_steps_where_they_happen() -> None:
    cold = [row.what for row in parse_table(COLD)]
    templated = [row.what for row in parse_table(TEMPLATED)]
    merged = merged_steps(cold, templated)
    assert merged[3:7] == [
        "VM launched",
        "VM restored from its template",
        "agent answered",
        "clone given its identity and NICs",
    ]
    assert sorted(merged) == sorted(set(cold) | set(templated))
