"""The byte stream to the host, and how it survives the host going away."""

from __future__ import annotations

import os
from collections import deque

from .log import describe_exception, log
from .wire import protocol

TYPE_CHECKING = False  # typing costs ~50 ms at every guest boot under TCG: annotations only
if TYPE_CHECKING:
    from typing import Protocol

    from .loop import Loop

    class ChannelOwner(Protocol):
        """What the channel needs of the agent: its loop, whether it is PID 1
        (then it never exits), and where incoming frames go."""

        loop: Loop
        pid1: bool

        def on_frame(self, frame: protocol.Frame) -> None: ...


HUP_DELAY = 0.05
"""Pause before polling a hung-up virtio-serial port again."""


class Channel:
    """The byte stream to the host: a virtio-serial port or a socket."""

    def __init__(self, agent: ChannelOwner, fd: int, is_port: bool) -> None:
        self.agent = agent
        self.loop = agent.loop
        self.fd = fd
        self.is_port = is_port
        self.decoder = protocol.FrameDecoder(resync=True)
        self.queue: deque[bytes] = deque()
        self.partial: memoryview | None = None
        self.hung_up = False
        os.set_blocking(fd, False)
        self.loop.set_reader(fd, self.on_readable)

    # writing
    def send(self, frame: bytes) -> None:
        self.queue.append(frame)
        if not self.hung_up and self.partial is None and len(self.queue) == 1:
            self.flush()

    def flush(self) -> None:
        while True:
            if self.partial is None:
                if not self.queue:
                    break
                self.partial = memoryview(self.queue.popleft())
            try:
                written = os.write(self.fd, self.partial)
            except BlockingIOError:
                break
            except OSError as exc:
                self.hangup(f"write: {exc}")
                return
            self.partial = self.partial[written:] if written < len(self.partial) else None
        pending = self.partial is not None or bool(self.queue)
        self.loop.set_writer(self.fd, self.flush if pending else None)

    def drop_queued(self) -> None:
        """New host connection: unsent frames belonged to the previous one.

        The remainder of a frame already partly written is kept so that framing
        stays intact on a connection that is still the same byte stream.
        """
        self.queue.clear()

    # reading
    def on_readable(self) -> None:
        try:
            data = os.read(self.fd, 1 << 16)
        except BlockingIOError:
            return
        except OSError as exc:
            self.hangup(f"read: {exc}")
            return
        if not data:
            self.hangup("end of stream")
            return
        try:
            frames = self.decoder.feed(data)
        except protocol.ProtocolError as exc:  # cannot happen with resync, but be safe
            log(f"protocol error: {exc}")
            self.decoder = protocol.FrameDecoder(resync=True)
            return
        for frame in frames:
            try:
                self.agent.on_frame(frame)
            except Exception as exc:
                log(f"error handling {frame.type.name} frame: {describe_exception(exc)}")

    def hangup(self, reason: str) -> None:
        if self.hung_up or self.loop.stopped:
            return
        if not self.is_port and not self.agent.pid1:
            log(f"host connection closed ({reason}); exiting")
            self.loop.stopped = True
            self.loop.forget(self.fd)
            return
        # virtio-serial: the host went away; keep the fd and poll again later.
        self.hung_up = True
        self.loop.forget(self.fd)
        self.decoder = protocol.FrameDecoder(resync=True)
        self.loop.call_later(HUP_DELAY, self.resume)

    def resume(self) -> None:
        self.hung_up = False
        self.loop.set_reader(self.fd, self.on_readable)
        if self.partial is not None or self.queue:
            self.loop.set_writer(self.fd, self.flush)
