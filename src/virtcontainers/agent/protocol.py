"""The agent wire format, shared by the host client and the guest agent.

This module is copied into the guest image beside the agent, so it must use
the Python standard library only (and nothing newer than Python 3.11).

One byte stream (a virtio-serial port, or vsock) carries every frame between
host and guest.  A frame is a fixed 12-byte header followed by a payload::

    offset  size  field
    0       2     magic, b"VC"
    2       1     type (FrameType)
    3       1     flags (FLAG_EOF on DATA; zero elsewhere)
    4       4     stream: request id, or I/O stream id (big endian)
    8       4     payload length in bytes (big endian, <= MAX_PAYLOAD)

HELLO, REQUEST, RESPONSE and EVENT payloads are UTF-8 JSON objects.  DATA
payloads are raw bytes of one I/O stream; CREDIT payloads are a 4-byte big
endian count of bytes the receiver is ready to accept on that stream.

docs/protocol.md describes the conversation; this module frames it and names
its operations.
"""

from __future__ import annotations

import enum
import json
import struct

# The guest imports this module at every boot: under TCG each import costs
# ~16x its native time, and dataclasses (with inspect) or typing would add
# ~0.2 s, so neither is imported at run time.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping

MAGIC = b"VC"
HEADER = struct.Struct("!2sBBII")
HEADER_SIZE = HEADER.size
PROTOCOL_VERSION = 1

MAX_PAYLOAD = 1 << 20
"""No frame payload may exceed this; a larger length is a protocol error."""

DATA_CHUNK = 64 * 1024
"""Senders split I/O into DATA frames of at most this many bytes."""

STREAM_WINDOW = 256 * 1024
"""Bytes a sender may have in flight on one stream before it needs CREDIT."""

FLAG_EOF = 0x01
_CREDIT = struct.Struct("!I")


class FrameType(enum.IntEnum):
    HELLO = 1
    REQUEST = 2
    RESPONSE = 3
    EVENT = 4
    DATA = 5
    CREDIT = 6


class Op:
    """The operations the agent serves, by the name a REQUEST gives in "op".

    The host's client and the guest agent's dispatch table both name an op
    through these constants, never by a literal.  Plain strings, not an enum:
    the guest builds this class at every boot.
    """

    PING = "ping"
    GUEST_DETAILS = "guest_details"
    CREATE_CONTAINER = "create_container"
    START_CONTAINER = "start_container"
    EXEC_PROCESS = "exec_process"
    EXEC_GUEST = "exec_guest"
    SIGNAL_PROCESS = "signal_process"
    WAIT_PROCESS = "wait_process"
    RESIZE_TERMINAL = "resize_terminal"
    CLOSE_OUTPUT = "close_output"
    LIST_PROCESSES = "list_processes"
    PAUSE_CONTAINER = "pause_container"
    RESUME_CONTAINER = "resume_container"
    CONTAINER_STATE = "container_state"
    REMOVE_CONTAINER = "remove_container"
    CONFIGURE_NETWORK = "configure_network"
    UPDATE_CONTAINER = "update_container"
    CONTAINER_STATS = "container_stats"
    MOUNT_BLOCK = "mount_block"
    UNMOUNT_BLOCK = "unmount_block"
    INIT_CLONE = "init_clone"
    CONNECT_PORT = "connect_port"
    SHUTDOWN = "shutdown"
    PROCESS_TABLE = "process_table"
    RESUME_OUTPUT = "resume_output"


class ProtocolError(Exception):
    """The byte stream does not follow the wire format."""


class Frame:
    """One decoded frame (immutable by convention)."""

    __slots__ = ("flags", "payload", "stream", "type")

    def __init__(self, ftype: FrameType, stream: int, payload: bytes = b"", flags: int = 0) -> None:
        self.type = ftype
        self.stream = stream
        self.payload = payload
        self.flags = flags

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Frame):
            return NotImplemented
        return (self.type, self.stream, self.payload, self.flags) == (
            other.type,
            other.stream,
            other.payload,
            other.flags,
        )

    def __hash__(self) -> int:
        return hash((self.type, self.stream, self.payload, self.flags))

    def __repr__(self) -> str:
        size = len(self.payload)
        return f"Frame({self.type.name}, stream={self.stream}, {size} bytes, flags={self.flags})"

    @property
    def eof(self) -> bool:
        return bool(self.flags & FLAG_EOF)

    def encode(self) -> bytes:
        return encode_frame(self.type, self.stream, self.payload, self.flags)

    def json(self) -> dict[str, object]:
        return decode_json(self.payload)

    def credit(self) -> int:
        return decode_credit(self.payload)


def encode_frame(ftype: FrameType, stream: int, payload: bytes = b"", flags: int = 0) -> bytes:
    if len(payload) > MAX_PAYLOAD:
        raise ProtocolError(f"payload of {len(payload)} bytes exceeds the {MAX_PAYLOAD}-byte limit")
    if not 0 <= stream <= 0xFFFFFFFF:
        raise ProtocolError(f"stream id {stream} out of range")
    return HEADER.pack(MAGIC, int(ftype), flags, stream, len(payload)) + payload


def encode_json(ftype: FrameType, stream: int, message: Mapping[str, object]) -> bytes:
    payload = json.dumps(message, separators=(",", ":")).encode()
    return encode_frame(ftype, stream, payload)


def encode_credit(stream: int, count: int) -> bytes:
    return encode_frame(FrameType.CREDIT, stream, _CREDIT.pack(count))


def decode_json(payload: bytes) -> dict[str, object]:
    """The JSON object in ``payload``; ProtocolError for anything else, nesting too
    deep for the parser (a RecursionError) included."""
    try:
        message = json.loads(payload.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise ProtocolError(f"frame payload is not valid UTF-8 JSON: {exc}") from exc
    except RecursionError:
        raise ProtocolError("frame payload nests JSON too deep to decode") from None
    if not isinstance(message, dict):
        raise ProtocolError(f"frame payload is a JSON {type(message).__name__}, not an object")
    return message


def decode_credit(payload: bytes) -> int:
    if len(payload) != _CREDIT.size:
        raise ProtocolError(f"CREDIT payload is {len(payload)} bytes, expected {_CREDIT.size}")
    count: int = _CREDIT.unpack(payload)[0]
    if count == 0 or count > STREAM_WINDOW:
        raise ProtocolError(f"CREDIT of {count} bytes is outside 1..{STREAM_WINDOW}")
    return count


class FrameDecoder:
    """Turns a byte stream into frames.

    Strict by default: the host treats any malformed frame as fatal for the
    connection.  With ``resync=True`` (the guest's choice) garbage is skipped
    up to the next magic, because stale bytes from an earlier host connection
    may sit in the port's queue when a new host attaches.
    """

    def __init__(self, max_payload: int = MAX_PAYLOAD, resync: bool = False) -> None:
        self._buffer = bytearray()
        self._max_payload = max_payload
        self._resync = resync
        self.skipped = 0

    @property
    def pending(self) -> int:
        return len(self._buffer)

    def take_pending(self) -> bytes:
        """Hand over the undecoded bytes (to switch decoders mid-stream)."""
        pending = bytes(self._buffer)
        self._buffer.clear()
        return pending

    def feed(self, data: bytes) -> list[Frame]:
        self._buffer += data
        frames: list[Frame] = []
        while True:
            try:
                frame = self._next()
            except ProtocolError:
                if not self._resync:
                    raise
                self._skip_to_next_magic()
                continue
            if frame is None:
                return frames
            frames.append(frame)

    def _next(self) -> Frame | None:
        if len(self._buffer) < HEADER_SIZE:
            if self._buffer and not MAGIC.startswith(bytes(self._buffer[:2])):
                raise ProtocolError(f"bad magic {bytes(self._buffer[:2])!r}")
            return None
        magic, ftype, flags, stream, length = HEADER.unpack_from(self._buffer)
        if magic != MAGIC:
            raise ProtocolError(f"bad magic {magic!r}")
        try:
            frame_type = FrameType(ftype)
        except ValueError:
            raise ProtocolError(f"unknown frame type {ftype}") from None
        if flags & ~FLAG_EOF or (flags and frame_type is not FrameType.DATA):
            raise ProtocolError(f"invalid flags {flags:#x} on a {frame_type.name} frame")
        if length > self._max_payload:
            raise ProtocolError(f"frame length {length} exceeds the {self._max_payload}-byte limit")
        end = HEADER_SIZE + length
        if len(self._buffer) < end:
            return None
        payload = bytes(self._buffer[HEADER_SIZE:end])
        del self._buffer[:end]
        return Frame(frame_type, stream, payload, flags)

    def _skip_to_next_magic(self) -> None:
        index = self._buffer.find(MAGIC, 1)
        if index < 0:
            # Keep a trailing b"V": it may be the first half of the next magic.
            keep = 1 if self._buffer.endswith(MAGIC[:1]) else 0
            index = len(self._buffer) - keep
        self.skipped += index
        del self._buffer[:index]


def hello(nonce: str) -> bytes:
    return encode_json(FrameType.HELLO, 0, {"version": PROTOCOL_VERSION, "nonce": nonce})


def request(request_id: int, op: str, args: Mapping[str, object]) -> bytes:
    return encode_json(FrameType.REQUEST, request_id, {"op": op, "args": args})


def response_ok(request_id: int, result: Mapping[str, object]) -> bytes:
    return encode_json(FrameType.RESPONSE, request_id, {"ok": True, "result": result})


def response_error(request_id: int, kind: str, message: str) -> bytes:
    return encode_json(
        FrameType.RESPONSE, request_id, {"ok": False, "error": {"kind": kind, "message": message}}
    )


def event(name: str, fields: Mapping[str, object]) -> bytes:
    return encode_json(FrameType.EVENT, 0, dict(fields, event=name))


def data(stream: int, chunk: bytes, eof: bool = False) -> bytes:
    return encode_frame(FrameType.DATA, stream, chunk, FLAG_EOF if eof else 0)
