"""Log lines on stderr, or on /dev/console once PID 1 has opened it."""

from __future__ import annotations

import os

_log_fd = 2


def log_to(fd: int) -> None:
    global _log_fd
    _log_fd = fd


def log(message: str) -> None:
    line = f"vc-agent[{os.getpid()}]: {message}\n".encode(errors="replace")
    try:
        os.write(_log_fd, line)
    except OSError:
        return


def describe_exception(exc: BaseException) -> str:
    """A short traceback without importing traceback (keeps start-up lean)."""
    parts = [f"{type(exc).__name__}: {exc}"]
    tb = exc.__traceback__
    while tb is not None:
        code = tb.tb_frame.f_code
        parts.append(f"  {code.co_filename}:{tb.tb_lineno} in {code.co_name}")
        tb = tb.tb_next
    return "\n".join(parts)
