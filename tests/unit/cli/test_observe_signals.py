"""virtc top and virtc metrics end on a signal without a lock in a handler."""

from __future__ import annotations

import subprocess
import sys

ENDED_BY = """
import os, select, signal
from virtcontainers.cli.virtc.observe import _signalled
ended = _signalled((signal.SIGINT, signal.SIGTERM))
os.kill(os.getpid(), signal.{name})
print(bool(select.select([ended], [], [], 10)[0]))
"""


def test_sigint_and_sigterm_make_the_wakeup_fd_readable_and_raise_nothing() -> None:
    for name in ("SIGINT", "SIGTERM"):
        done = subprocess.run(
            [sys.executable, "-c", ENDED_BY.format(name=name)],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert (done.returncode, done.stdout, done.stderr) == (0, "True\n", "")
