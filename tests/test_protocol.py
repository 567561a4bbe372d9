"""The wire format (firmware/protocol.py, shared by board and host): COBS, frames, the
streaming decoder's resynchronisation and drop accounting."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from xbar.firmware import protocol as P

payloads = st.binary(min_size=0, max_size=P.MAX_PAYLOAD)
codes = st.integers(0, 255)
seqs = st.integers(0, 0xFFFF)


def cobs(data: bytes) -> bytes:
    out = bytearray(len(data) + len(data) // 254 + 2)
    n = P.cobs_encode(data, len(data), out)
    return bytes(out[:n])


@given(st.binary(max_size=3000))
def test_cobs_round_trip_has_no_zero(data: bytes) -> None:
    enc = cobs(data)
    assert 0 not in enc
    assert len(enc) <= len(data) + len(data) // 254 + 1
    assert P.cobs_decode(enc) == data


@given(codes, seqs, payloads)
def test_frame_round_trip(code: int, seq: int, payload: bytes) -> None:
    wire = P.encode(code, seq, payload)
    assert wire.endswith(b"\x00") and 0 not in wire[:-1]
    assert len(wire) <= P.MAX_WIRE
    got_code, got_seq, got = P.decode(wire)
    assert (got_code, got_seq, bytes(got)) == (code, seq, payload)


@given(codes, seqs, payloads, st.integers(1, 64))
def test_streaming_decoder_any_chunking(code: int, seq: int, payload: bytes, step: int) -> None:
    wire = P.encode(code, seq, payload) * 2
    dec = P.Decoder()
    frames = []
    for i in range(0, len(wire), step):
        frames += dec.feed(wire[i : i + step])
    assert frames == [(code, seq, payload)] * 2
    assert dec.dropped == 0


def test_encoder_matches_encode() -> None:
    enc = P.Encoder()
    enc.payload[:5] = b"\x00abc\x00"
    assert bytes(enc.finish(0x81, 513, 5)) == P.encode(0x81, 513, b"\x00abc\x00")


def test_oversized_payload_refused() -> None:
    with pytest.raises(P.ProtocolError, match="exceeds MAX_PAYLOAD"):
        P.encode(1, 1, bytes(P.MAX_PAYLOAD + 1))


def _corrupt_crc(wire: bytes) -> bytes:
    raw = bytearray(P.cobs_decode(wire[:-1]))
    raw[-1] ^= 0x55 if raw[-1] != 0x55 else 0x0F
    return cobs(bytes(raw)) + b"\x00"


@pytest.mark.parametrize(
    "bad, reason",
    [
        (lambda w: _corrupt_crc(w), P.DROP_CRC),
        (lambda w: w[: len(w) // 2] + b"\x00", None),  # truncated
        (lambda w: b"\x05\x01\x02\x00", P.DROP_COBS),  # block runs past the end
        (lambda w: cobs(b"\x02" + bytes(9)) + b"\x00", P.DROP_VERSION),
        (lambda w: cobs(bytes(5)) + b"\x00", P.DROP_SHORT),
        (lambda w: b"\x01" * (P.MAX_WIRE + 10) + b"\x00", P.DROP_OVERSIZE),
    ],
)
def test_bad_frames_dropped_counted_and_resynced(bad, reason) -> None:  # type: ignore[no-untyped-def]
    good = P.encode(0x01, 7, b"hi")
    dec = P.Decoder()
    frames = dec.feed(bad(good) + good)
    assert frames == [(0x01, 7, b"hi")]
    assert dec.dropped == 1
    if reason is not None:
        assert dec.last_drop == reason


def test_length_field_mismatch_dropped() -> None:
    raw = bytearray(struct.pack(P.HEADER, P.VERSION, 1, 1, 3) + b"ab")
    raw += struct.pack("<I", P.crc32(bytes(raw)))
    dec = P.Decoder()
    assert dec.feed(cobs(bytes(raw)) + b"\x00") == []
    assert dec.last_drop == P.DROP_LENGTH


@settings(max_examples=300)
@given(st.binary(max_size=4000), codes, seqs, payloads)
def test_garbage_then_frame_always_recovers(
    garbage: bytes, code: int, seq: int, payload: bytes
) -> None:
    """Whatever precedes it, a frame after a delimiter is decoded, and garbage never
    yields a frame that was not sent except by an astronomically unlikely CRC match."""
    dec = P.Decoder()
    junk = dec.feed(garbage)
    frames = dec.feed(b"\x00" + P.encode(code, seq, payload))
    assert frames[-1] == (code, seq, payload)
    assert len(junk) + len(frames) <= 1 + garbage.count(0) + 1


def test_error_payload_round_trip() -> None:
    p = P.error_payload(P.E_RANGE, P.READ, "row 12 outside 10")
    assert P.parse_error(p) == (P.E_RANGE, P.READ, "row 12 outside 10")
    assert len(P.error_payload(1, 2, "x" * 500)) == 122
