"""The guest console: copied to a bounded log file, read at a bounded rate.

The console (ttyS0) is QEMU's stdout, a pipe.  :func:`pump` copies it into a
log kept under ``limit`` bytes: when it would grow past the limit, the older
half is dropped and a ``[console trimmed]`` line written (a reader that
follows the file must reopen it when it shrinks).  It reads no faster than
:data:`CONSOLE_RATE` after a :data:`CONSOLE_BURST`: a guest that floods its
console then waits on a full pipe instead of costing the host a core.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

CONSOLE_RATE = 128 << 10
"""Bytes per second read from the console once the burst is spent."""
CONSOLE_BURST = 512 << 10
READ_CHUNK = 16 << 10
TRIMMED = b"[console trimmed]\n"


@dataclass
class RateLimit:
    """A token bucket: ``rate`` bytes a second, at most ``burst`` saved up."""

    rate: float
    burst: float
    clock: Callable[[], float] = time.monotonic
    tokens: float = field(init=False)
    last: float = field(init=False)

    def __post_init__(self) -> None:
        self.tokens = self.burst
        self.last = self.clock()

    def delay(self, size: int) -> float:
        """Take ``size`` bytes; the seconds to wait before taking more."""
        now = self.clock()
        self.tokens = min(self.burst, self.tokens + (now - self.last) * self.rate)
        self.last = now
        self.tokens -= size
        return 0.0 if self.tokens >= 0 else -self.tokens / self.rate


async def pump(stream: asyncio.StreamReader, path: Path, limit: int, rate: RateLimit) -> None:
    """Copy the console into ``path`` until it ends (see the module docstring)."""
    with path.open("w+b") as out:
        size = 0
        while chunk := await stream.read(READ_CHUNK):
            if size + len(chunk) > limit:
                size = _trim(out, chunk, limit // 2)
            else:
                out.write(chunk)
                size += len(chunk)
            out.flush()
            wait = rate.delay(len(chunk))
            if wait:
                await asyncio.sleep(wait)


def _trim(out: IO[bytes], chunk: bytes, keep: int) -> int:
    """Rewrite the log as a marker plus the newest ``keep`` bytes of (log + chunk)."""
    out.seek(0, os.SEEK_END)
    out.seek(max(0, out.tell() - keep))
    text = TRIMMED + (out.read() + chunk)[-keep:]
    out.seek(0)
    out.truncate()
    out.write(text)
    return len(text)
