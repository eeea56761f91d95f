"""Signal names and numbers as both CLIs accept them (``KILL``, ``SIGKILL``, ``9``)."""

from __future__ import annotations

import signal

MAX_SIGNAL = 64


def signal_number(text: str) -> int | None:
    """The signal ``text`` names, or None if it names none."""
    if text.isdigit():
        number = int(text)
        return number if 0 < number <= MAX_SIGNAL else None
    name = text.upper()
    try:
        return int(signal.Signals[name if name.startswith("SIG") else f"SIG{name}"])
    except KeyError:
        return None
