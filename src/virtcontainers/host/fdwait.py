"""Waiting for an fd to be ready in the event loop, without making it non-blocking.

The fds are the caller's (passed over the daemon socket) and shared with
other processes: switching them to non-blocking would change them for those
too.  Raises OSError (or ValueError) for fds the event loop cannot poll.
"""

from __future__ import annotations

import asyncio


async def wait_readable(fd: int) -> None:
    await _wait(fd, writable=False)


async def wait_writable(fd: int) -> None:
    await _wait(fd, writable=True)


async def _wait(fd: int, writable: bool) -> None:
    loop = asyncio.get_running_loop()
    ready: asyncio.Future[None] = loop.create_future()
    add, remove = (
        (loop.add_writer, loop.remove_writer) if writable else (loop.add_reader, loop.remove_reader)
    )
    add(fd, _resolve, ready)
    try:
        await ready
    finally:
        remove(fd)


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
