"""What every part of the benchmark shares: its progress lines and its summaries."""

from __future__ import annotations

import statistics
import sys


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
