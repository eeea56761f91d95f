"""Process stdio relayed as DATA frames, with per-stream credit flow control."""

from __future__ import annotations

import errno
import os

from .log import log
from .osutil import close_fd
from .wire import CHUNK, WINDOW, protocol

TYPE_CHECKING = False  # typing costs ~50 ms at every guest boot under TCG: annotations only
if TYPE_CHECKING:
    from typing import Protocol

    from .loop import Loop

    class StreamOwner(Protocol):
        """What a stream needs of the agent: its loop, the channel to the host,
        and the tables of bound stream ids."""

        loop: Loop
        outs: dict[int, OutStream]
        detached: dict[int, OutStream]
        ins: dict[int, InStream]
        busy_streams: set[int]

        def send(self, frame: bytes) -> None: ...

    class StreamUser(Protocol):
        """The process an output stream belongs to."""

        def on_stream_done(self) -> None: ...


class OutStream:
    """A process output fd (pipe or pty master) relayed as DATA frames.

    stream_id 0 means "nobody listens": output is read and discarded (a
    terminal whose host passed stdout=null must still be drained).

    Bytes sent are kept until the host's CREDIT for them comes back (at most
    the window): the host credits a chunk once its relay has written it, so
    when the host goes away, what it had not written is sent again to the
    host that reattaches.  While no host is attached (:meth:`detach`) the fd
    is not read: the process's writes block once the pipe is full, and no
    byte is lost.
    """

    def __init__(self, agent: StreamOwner, stream_id: int, fd: int, proc: StreamUser) -> None:
        self.agent = agent
        self.stream_id = stream_id
        self.fd = fd
        self.proc = proc
        self.credit = WINDOW
        self.paused = False
        self.detached = False
        self.unacked = bytearray()
        os.set_blocking(fd, False)
        if stream_id:
            agent.outs[stream_id] = self
        agent.loop.set_reader(fd, self.on_readable)

    @property
    def done(self) -> bool:
        return self.fd < 0

    def on_readable(self) -> None:
        self.pump(drain=False)

    def pump(self, drain: bool) -> None:
        while self.fd >= 0 and not self.detached:
            size = min(CHUNK, self.credit) if self.stream_id else CHUNK
            if size <= 0:
                self.pause()
                return
            try:
                data = os.read(self.fd, size)
            except BlockingIOError:
                return
            except OSError as exc:
                if exc.errno != errno.EIO:  # EIO: pty master after the slave closed
                    log(f"read from stream {self.stream_id}: {exc}")
                data = b""
            if not data:
                self.finish()
                return
            if self.stream_id:
                self._send(data)
            if not drain:
                return

    def _send(self, data: bytes) -> None:
        self.credit -= len(data)
        self.unacked += data
        self.agent.send(protocol.data(self.stream_id, data))

    def pause(self) -> None:
        if not self.paused and self.fd >= 0:
            self.paused = True
            self.agent.loop.set_reader(self.fd, None)

    def add_credit(self, count: int) -> None:
        self.credit += count
        if self.credit > WINDOW:
            log(f"host granted too much credit on stream {self.stream_id}; clamped")
            self.credit = WINDOW
        del self.unacked[:count]
        if self.fd < 0:
            if not self.unacked:
                self._unbind()
            return
        if self.paused and self.credit > 0:
            self.paused = False
            self.agent.loop.set_reader(self.fd, self.on_readable)

    def detach(self) -> None:
        """The host went away: stop reading, and keep the stream (its id, and the
        bytes it had not credited) for a host that reattaches (:meth:`resume`)."""
        if self.detached or not self.stream_id:
            return
        self.detached = True
        if self.fd >= 0:
            self.agent.loop.set_reader(self.fd, None)
        self.paused = False
        if self.agent.outs.get(self.stream_id) is self:
            del self.agent.outs[self.stream_id]
        self.agent.detached[self.stream_id] = self
        self.agent.busy_streams.add(self.stream_id)

    def resume(self) -> None:
        """A host reattached and took this stream again: send what the previous
        host had not credited, then the rest (and the EOF, if the fd ended)."""
        if not self.detached:
            return
        self.detached = False
        del self.agent.detached[self.stream_id]
        self.agent.outs[self.stream_id] = self
        self.credit = WINDOW
        pending, self.unacked = bytes(self.unacked), bytearray()
        for start in range(0, len(pending), CHUNK):
            self._send(pending[start : start + CHUNK])
        if self.fd < 0:
            self.agent.send(protocol.data(self.stream_id, b"", eof=True))
            if not self.unacked:
                self._unbind()
        elif self.credit > 0:
            self.agent.loop.set_reader(self.fd, self.on_readable)
        else:
            self.paused = True

    def _unbind(self) -> None:
        if self.agent.outs.get(self.stream_id) is self:
            del self.agent.outs[self.stream_id]
            self.agent.busy_streams.discard(self.stream_id)

    def finish(self) -> None:
        """EOF (or the container is removed): close and tell the host (a detached
        stream tells the host that reattaches).  The id stays bound until the
        host has credited every byte."""
        if self.fd < 0:
            return
        self.agent.loop.forget(self.fd)
        close_fd(self.fd)
        self.fd = -1
        if self.stream_id and not self.detached:
            self.agent.send(protocol.data(self.stream_id, b"", eof=True))
            if not self.unacked:
                self._unbind()
        self.proc.on_stream_done()


class InStream:
    """Host DATA on a stdin stream, written to a pipe or pty master.

    CREDIT goes back for every byte written (or discarded once the process
    cannot read any more), so the host never blocks on a dead process.
    """

    def __init__(self, agent: StreamOwner, stream_id: int, fd: int) -> None:
        self.agent = agent
        self.stream_id = stream_id
        self.fd = fd
        self.buffer = bytearray()
        self.eof = False
        self.orphaned = stream_id == 0  # 0: nobody writes (kept only to hold the fd)
        os.set_blocking(fd, False)
        if stream_id:
            agent.ins[stream_id] = self

    def on_data(self, frame: protocol.Frame) -> None:
        if self.eof:
            return  # nothing may follow EOF
        if self.fd < 0:
            self.grant(len(frame.payload))
        else:
            self.buffer += frame.payload
            if len(self.buffer) > WINDOW:
                log(f"host overran the stdin window on stream {self.stream_id}")
        if frame.eof:
            self.eof = True
        self.flush()

    def grant(self, count: int) -> None:
        if self.eof or self.orphaned:
            return  # the host sends no more: no CREDIT after its EOF
        while count > 0:
            step = min(count, WINDOW)
            self.agent.send(protocol.encode_credit(self.stream_id, step))
            count -= step

    def flush(self) -> None:
        while self.fd >= 0 and self.buffer:
            try:
                written = os.write(self.fd, self.buffer[:CHUNK])
            except BlockingIOError:
                self.agent.loop.set_writer(self.fd, self.flush)
                return
            except OSError as exc:  # EPIPE/EIO: the reader is gone
                if exc.errno not in (errno.EPIPE, errno.EIO):
                    log(f"write to stdin stream {self.stream_id}: {exc}")
                self.grant(len(self.buffer))
                self.buffer.clear()
                self.close_fd()
                break
            del self.buffer[:written]
            self.grant(written)
        if self.fd >= 0:
            self.agent.loop.set_writer(self.fd, None)
            if self.eof and not self.buffer:
                self.close_fd()
        if self.eof and not self.buffer:
            self.release()

    def orphan(self) -> None:
        """New host connection: unbind the stream id, drop unwritten bytes.

        The pipe stays open (the process does not see EOF) until the process
        is removed: the new host knows nothing of this stream.
        """
        self.buffer.clear()
        if self.fd >= 0:
            self.agent.loop.set_writer(self.fd, None)
        if self.orphaned:
            return
        self.orphaned = True
        if self.agent.ins.get(self.stream_id) is self:
            del self.agent.ins[self.stream_id]
        self.agent.busy_streams.discard(self.stream_id)

    def close_fd(self) -> None:
        if self.fd >= 0:
            self.agent.loop.forget(self.fd)
            close_fd(self.fd)
            self.fd = -1

    def release(self) -> None:
        self.close_fd()
        if self.orphaned:
            return  # the id may already belong to the new connection
        self.orphaned = True
        if self.agent.ins.get(self.stream_id) is self:
            del self.agent.ins[self.stream_id]
        self.agent.busy_streams.discard(self.stream_id)
