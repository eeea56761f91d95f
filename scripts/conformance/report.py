"""critest's JUnit reports read back: counts per handler, and what fails only with vc."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from dataclasses import asdict, dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class Outcome:
    name: str
    status: str
    """passed, failed or skipped (ginkgo's pending counts as skipped)."""
    seconds: float
    message: str = ""


@dataclass
class Run:
    handler: str
    seconds: float
    outcomes: list[Outcome] = field(default_factory=list)

    def count(self, status: str) -> int:
        return sum(1 for outcome in self.outcomes if outcome.status == status)

    def by_name(self) -> dict[str, Outcome]:
        return {outcome.name: outcome for outcome in self.outcomes}


def _status(case: ET.Element) -> str:
    if case.find("failure") is not None or case.find("error") is not None:
        return "failed"
    if case.find("skipped") is not None:
        return "skipped"
    return case.get("status", "passed").replace("pending", "skipped")


def _message(case: ET.Element) -> str:
    for tag in ("failure", "error"):
        found = case.find(tag)
        if found is not None:
            return (found.get("message") or found.text or "").strip()
    return ""


def read_junit(path: Path) -> list[Outcome]:
    """The suite's specs (ginkgo's "[It]" cases; suite set-up nodes are left out)."""
    if not path.exists():
        return []
    outcomes = []
    for case in ET.parse(path).iter("testcase"):
        name = case.get("name", "")
        if not name.startswith("[It]"):
            continue
        outcomes.append(
            Outcome(
                name.removeprefix("[It] ").strip(),
                _status(case),
                float(case.get("time", "0")),
                _message(case),
            )
        )
    return outcomes


def only_failing_with(vc: Run, runc: Run) -> list[Outcome]:
    """Specs that fail with vc and pass with runc in the same run."""
    passed_runc = {name for name, o in runc.by_name().items() if o.status == "passed"}
    return [o for o in vc.outcomes if o.status == "failed" and o.name in passed_runc]


def summary(runs: list[Run]) -> str:
    """A Markdown summary: counts and times per handler, then the vc-only failures."""
    lines = [
        "| handler | passed | failed | skipped | specs | time (s) |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for run in runs:
        lines.append(
            f"| {run.handler} | {run.count('passed')} | {run.count('failed')} | "
            f"{run.count('skipped')} | {len(run.outcomes)} | {run.seconds:.0f} |"
        )
    handlers = {run.handler: run for run in runs}
    if "vc" in handlers and "runc" in handlers:
        lines += ["", "Failing with vc, passing with runc:", ""]
        for outcome in only_failing_with(handlers["vc"], handlers["runc"]):
            first_line = outcome.message.splitlines()[0] if outcome.message else ""
            lines.append(f"- {outcome.name}: {first_line}")
    for run in runs:
        failed = [o.name for o in run.outcomes if o.status == "failed"]
        lines += ["", f"Failing with {run.handler}: {len(failed)}", ""]
        lines += [f"- {name}" for name in failed]
    return "\n".join(lines) + "\n"


def write(runs: list[Run], results: Path) -> None:
    (results / "summary.md").write_text(summary(runs))
    (results / "summary.json").write_text(json.dumps([asdict(run) for run in runs], indent=1))
