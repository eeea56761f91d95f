"""The end of a log file, for error messages (consoles, daemon logs)."""

from __future__ import annotations

import os
from pathlib import Path


def tail(path: Path, limit: int = 4096) -> str:
    """The last ``limit`` bytes of ``path``, as text ("" if it cannot be read)."""
    try:
        with path.open("rb") as source:
            source.seek(0, os.SEEK_END)
            source.seek(max(0, source.tell() - limit))
            return source.read().decode(errors="replace")
    except OSError:
        return ""
