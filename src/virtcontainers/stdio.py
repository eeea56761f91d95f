"""A process's stdio as host file descriptors, handed to the pod daemon."""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

NAMES = ("stdin", "stdout", "stderr")


@dataclass
class Stdio:
    """Host fds for a process (owned by the relay once handed over)."""

    stdin: int | None = None
    stdout: int | None = None
    stderr: int | None = None

    def named(self) -> list[tuple[str, int]]:
        """The fds that are set, with their names, in stdin-stdout-stderr order."""
        return [(name, fd) for name in NAMES if (fd := getattr(self, name)) is not None]

    @property
    def given(self) -> bool:
        return bool(self.named())

    def close(self) -> None:
        """Close each fd once; a second call must not hit a reused fd number."""
        fds = {self.stdin, self.stdout, self.stderr}
        self.stdin = self.stdout = self.stderr = None
        for fd in fds:
            if fd is not None:
                with contextlib.suppress(OSError):
                    os.close(fd)
