"""What every part of the benchmark shares: its progress lines, its summaries,
meminfo parsing, and fleets that close as they leave a ``with``."""

from __future__ import annotations

import statistics
import sys
from typing import Self


def progress(message: str) -> None:
    """Long work shows progress, on stderr: stdout carries the figures."""
    print(f"» {message}", file=sys.stderr, flush=True)


def summary(samples: list[float]) -> dict[str, float]:
    """The median of some timings in seconds, with their spread."""
    return {
        "median_s": round(statistics.median(samples), 4),
        "min_s": round(min(samples), 4),
        "max_s": round(max(samples), 4),
        "runs": len(samples),
    }


def meminfo_kib(text: str) -> dict[str, int]:
    """The kB fields of a /proc/meminfo text (the host's, or a guest's)."""
    fields: dict[str, int] = {}
    for line in text.splitlines():
        name, _, rest = line.partition(":")
        value = rest.split()
        if value and value[0].isdigit():
            fields[name.strip()] = int(value[0])
    return fields


class Closing:
    """VMs or pods started one by one, all stopped by :meth:`close`, also when the
    ``with`` around them ends in a failure or Ctrl-C."""

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def close(self) -> None:
        raise NotImplementedError
