"""Attaching virtc to a process in a VM: its stdio, our signals, the terminal size."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import termios
import threading
import tty
from collections.abc import Callable, Iterator
from types import FrameType

from virtcontainers import api
from virtcontainers.cli.virtc.common import fail
from virtcontainers.errors import VcError


@contextlib.contextmanager
def attached_stdio(interactive: bool, use_tty: bool) -> Iterator[api.Stdio]:
    """Our own fds for the process; with a terminal, raw mode while it runs."""
    if use_tty and not os.isatty(0):
        fail("--tty needs a terminal on stdin")
    if not use_tty:
        yield api.Stdio(stdin=0 if interactive else None, stdout=1, stderr=2)
        return
    saved = termios.tcgetattr(0)
    tty.setraw(0)
    try:
        yield api.Stdio(stdin=0, stdout=1)
    finally:
        termios.tcsetattr(0, termios.TCSADRAIN, saved)


@contextlib.contextmanager
def forwarded_signals(forward: Callable[[int], None]) -> Iterator[None]:
    """SIGINT/SIGTERM/SIGHUP to us go to the process in the VM instead."""

    def handler(signum: int, _frame: FrameType | None) -> None:
        with contextlib.suppress(VcError):
            forward(signum)

    signals = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    previous = {s: signal.signal(s, handler) for s in signals}
    try:
        yield
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)


@contextlib.contextmanager
def resize_on_winch(use_tty: bool, resize: Callable[[int, int], None]) -> Iterator[None]:
    if not use_tty:
        yield
        return

    def apply(*_args: object) -> None:
        size = os.get_terminal_size(0)
        with contextlib.suppress(VcError):
            resize(size.lines, size.columns)

    previous = signal.signal(signal.SIGWINCH, apply)
    apply()
    try:
        yield
    finally:
        signal.signal(signal.SIGWINCH, previous)


@contextlib.contextmanager
def noting_first_output(stdio: api.Stdio, note: Callable[[], None]) -> Iterator[api.Stdio]:
    """The same stdio, its stdout relayed through a pipe so that the first byte
    the process writes is noticed (``note``), then passed on unchanged."""
    if stdio.stdout is None:
        yield stdio
        return
    target = stdio.stdout
    read_end, write_end = os.pipe()

    def relay() -> None:
        first = True
        with os.fdopen(read_end, "rb", buffering=0) as source:
            while chunk := source.read(1 << 16):
                if first:
                    note()
                    first = False
                view = memoryview(chunk)
                while view:
                    view = view[os.write(target, view) :]

    relaying = threading.Thread(target=relay, daemon=True)
    relaying.start()
    try:
        yield dataclasses.replace(stdio, stdout=write_end)
    finally:
        os.close(write_end)  # the pod has its own copy: EOF once the process ends
        relaying.join()
