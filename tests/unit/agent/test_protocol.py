"""The frame decoder against malformed, truncated and oversized input."""

from __future__ import annotations

import pytest

from virtcontainers.agent import protocol
from virtcontainers.agent.protocol import HEADER, MAGIC, FrameDecoder, FrameType, ProtocolError


def test_round_trip_split_at_every_byte() -> None:
    stream = protocol.request(7, "ping", {}) + protocol.data(3, b"abc", eof=True)
    for split in range(len(stream) + 1):
        decoder = FrameDecoder()
        frames = decoder.feed(stream[:split]) + decoder.feed(stream[split:])
        assert [(f.type, f.stream) for f in frames] == [(FrameType.REQUEST, 7), (FrameType.DATA, 3)]
        assert frames[0].json() == {"op": "ping", "args": {}}
        assert frames[1].payload == b"abc" and frames[1].eof
        assert decoder.pending == 0


def test_truncated_frame_waits_for_more() -> None:
    frame = protocol.data(1, b"x" * 100)
    decoder = FrameDecoder()
    assert decoder.feed(frame[:-1]) == []
    assert decoder.pending == len(frame) - 1


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"XX" + b"\0" * 10, "bad magic"),
        (b"Q", "bad magic"),
        (HEADER.pack(MAGIC, 99, 0, 0, 0), "unknown frame type"),
        (HEADER.pack(MAGIC, FrameType.REQUEST, protocol.FLAG_EOF, 1, 0), "invalid flags"),
        (HEADER.pack(MAGIC, FrameType.DATA, 0x80, 1, 0), "invalid flags"),
        (HEADER.pack(MAGIC, FrameType.DATA, 0, 1, protocol.MAX_PAYLOAD + 1), "exceeds"),
        (HEADER.pack(MAGIC, FrameType.DATA, 0, 1, 0xFFFFFFFF), "exceeds"),
    ],
)
def test_strict_decoder_rejects(raw: bytes, message: str) -> None:
    with pytest.raises(ProtocolError, match=message):
        FrameDecoder().feed(raw)


def test_oversized_length_is_rejected_before_buffering() -> None:
    decoder = FrameDecoder(max_payload=1024)
    with pytest.raises(ProtocolError):
        decoder.feed(HEADER.pack(MAGIC, FrameType.DATA, 0, 1, 1025))


@pytest.mark.parametrize("payload", [b"\xff\xfe", b"[1, 2]", b"not json", b'"string"', b""])
def test_json_payload_must_be_an_object(payload: bytes) -> None:
    frame = FrameDecoder().feed(protocol.encode_frame(FrameType.RESPONSE, 1, payload))[0]
    with pytest.raises(ProtocolError):
        frame.json()


@pytest.mark.parametrize("payload", [b"", b"\0\0\0", b"\0\0\0\0", b"\xff\xff\xff\xff\xff"])
def test_bad_credit(payload: bytes) -> None:
    with pytest.raises(ProtocolError):
        protocol.decode_credit(payload)


def test_resync_skips_garbage_to_next_magic() -> None:
    decoder = FrameDecoder(resync=True)
    garbage = b"\x00VXV" + HEADER.pack(MAGIC, 99, 0, 0, 0)
    frames = decoder.feed(garbage + protocol.hello("n1"))
    assert [f.type for f in frames] == [FrameType.HELLO]
    assert frames[0].json()["nonce"] == "n1"
    assert decoder.skipped > 0


def test_encoder_refuses_oversized_payload() -> None:
    with pytest.raises(ProtocolError):
        protocol.encode_frame(FrameType.DATA, 1, b"x" * (protocol.MAX_PAYLOAD + 1))
