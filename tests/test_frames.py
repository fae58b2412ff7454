"""Frames: length prefix round-trips, and the size bound is enforced before any body is buffered."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from quorumboard.consensus.errors import FrameTooLarge, ProtocolError
from quorumboard.consensus.wire.frames import FrameDecoder, encode_frame


@given(
    payloads=st.lists(st.binary(max_size=300), max_size=20),
    cuts=st.lists(st.integers(min_value=1, max_value=64), min_size=1, max_size=10),
)
def test_round_trip_any_chunking(payloads: list[bytes], cuts: list[int]) -> None:
    stream = b"".join(encode_frame(p) for p in payloads)
    decoder = FrameDecoder(300)
    out: list[bytes] = []
    pos = 0
    i = 0
    while pos < len(stream):
        step = cuts[i % len(cuts)]
        out.extend(decoder.feed(stream[pos : pos + step]))
        pos += step
        i += 1
    assert out == payloads
    assert decoder.buffered_bytes == 0


def test_zero_length_frame_allowed() -> None:
    assert FrameDecoder(0).feed(encode_frame(b"") * 3) == [b"", b"", b""]


def test_prefix_is_big_endian_unsigned() -> None:
    assert encode_frame(b"xy") == b"\x00\x00\x00\x02xy"


def test_oversize_prefix_refused_before_body() -> None:
    decoder = FrameDecoder(1024)
    with pytest.raises(FrameTooLarge):
        decoder.feed(struct.pack(">I", 2**31))  # a 2 GiB announcement, no body sent
    assert decoder.buffered_bytes == 0
    with pytest.raises(ProtocolError):
        decoder.feed(b"more")  # the stream lost its framing: unusable


def test_limit_checked_per_frame_with_next_frame() -> None:
    """A handshake frame followed by a big message in one read: loosen the limit in between."""
    decoder = FrameDecoder(8)
    decoder.push(encode_frame(b"hello") + encode_frame(b"x" * 100))
    assert decoder.next_frame() == b"hello"
    decoder.set_limit(1000)
    assert decoder.next_frame() == b"x" * 100
    assert decoder.next_frame() is None


def test_tightening_limit_below_accepted_prefix_fails() -> None:
    decoder = FrameDecoder(100)
    assert decoder.feed(encode_frame(b"a" * 50)[:10]) == []
    with pytest.raises(FrameTooLarge):
        decoder.set_limit(10)


def test_feed_stops_at_first_oversize_frame() -> None:
    decoder = FrameDecoder(4)
    with pytest.raises(FrameTooLarge):
        decoder.feed(encode_frame(b"ok") + encode_frame(b"too long"))
