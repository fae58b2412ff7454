"""Length-prefixed frames with a size bound enforced *before* a body is buffered.

Both the replica wire (raft.py) and the client endpoint use this. A frame is a 4-byte big-endian
unsigned length followed by that many payload bytes. The decoder refuses a prefix that announces
more than its current limit as soon as the prefix is complete, so a peer can never make us
allocate more than ``frame_bytes_max`` + one read chunk (the pre-auth denial of service pysyncobj
has). Pure: no sockets, threads or clock.
"""

from __future__ import annotations

import struct

from quorumboard.consensus.core.invariant import check
from quorumboard.consensus.errors import FrameTooLarge, ProtocolError

__all__ = ["FRAME_PREFIX_BYTES", "FrameDecoder", "encode_frame"]

FRAME_PREFIX_BYTES = 4
_PREFIX = struct.Struct(">I")
_LENGTH_MAX = 2**32 - 1


def encode_frame(payload: bytes) -> bytes:
    """Prefix ``payload`` with its length (4 bytes, big-endian, unsigned)."""
    if len(payload) > _LENGTH_MAX:
        raise FrameTooLarge(f"payload of {len(payload)} bytes cannot be framed")
    return _PREFIX.pack(len(payload)) + payload


class FrameDecoder:
    """Incremental decoder: feed it bytes as they arrive, get complete frames back.

    The limit can be changed between feeds (tight before authentication, loose after) because
    the same connection carries a tiny handshake and then large replication messages.
    """

    __slots__ = ("_broken", "_buffer", "_frame_bytes_max", "_need_bytes", "_pos")

    def __init__(self, frame_bytes_max: int) -> None:
        check(frame_bytes_max >= 0, "frame_bytes_max must be >= 0")
        self._frame_bytes_max = frame_bytes_max
        self._buffer = bytearray()
        self._pos = 0  # start of unparsed bytes in _buffer (compacted lazily)
        self._need_bytes: int | None = None  # body length of the frame being read, once known
        self._broken = False

    @property
    def frame_bytes_max(self) -> int:
        """The current per-frame bound."""
        return self._frame_bytes_max

    @property
    def buffered_bytes(self) -> int:
        """Bytes held for an incomplete frame (bounded by the limit plus one feed)."""
        return len(self._buffer) - self._pos

    def set_limit(self, frame_bytes_max: int) -> None:
        """Change the bound; a frame whose prefix was already accepted is checked again."""
        check(frame_bytes_max >= 0, "frame_bytes_max must be >= 0")
        self._frame_bytes_max = frame_bytes_max
        if self._need_bytes is not None and self._need_bytes > frame_bytes_max:
            self._broken = True
            raise FrameTooLarge(
                f"frame of {self._need_bytes} bytes exceeds the new limit {frame_bytes_max}"
            )

    def feed(self, data: bytes) -> list[bytes]:
        """Append ``data``; return every frame it completes, in order.

        Raises :class:`FrameTooLarge` as soon as a prefix announces more than the limit; the
        decoder is unusable afterwards (the stream has lost its framing), so the caller must drop
        the connection.
        """
        self.push(data)
        frames: list[bytes] = []
        # Each pass returns one frame from the bounded buffer, so the loop is finite.
        while (frame := self.next_frame()) is not None:
            frames.append(frame)
        return frames

    def push(self, data: bytes) -> None:
        """Buffer ``data`` without parsing: pair with :meth:`next_frame` when the limit may
        change between two frames of the same read (handshake frame followed by a big message).
        """
        if self._broken:
            raise ProtocolError("decoder already failed; the connection must be dropped")
        if self._pos and self._pos * 2 >= len(self._buffer):
            del self._buffer[: self._pos]
            self._pos = 0
        self._buffer += data

    def next_frame(self) -> bytes | None:
        """Pop one complete frame, or ``None`` if more bytes are needed.

        The limit is checked against each prefix when it is parsed, i.e. with the limit in force
        at that moment.
        """
        if self._broken:
            raise ProtocolError("decoder already failed; the connection must be dropped")
        buf = self._buffer
        if self._need_bytes is None:
            if len(buf) - self._pos < FRAME_PREFIX_BYTES:
                return None
            (length,) = _PREFIX.unpack_from(buf, self._pos)
            if length > self._frame_bytes_max:
                self._broken = True
                self._buffer = bytearray()
                self._pos = 0
                raise FrameTooLarge(
                    f"frame of {length} bytes announced, limit is {self._frame_bytes_max}"
                )
            self._pos += FRAME_PREFIX_BYTES
            self._need_bytes = length
        if len(buf) - self._pos < self._need_bytes:
            return None
        end = self._pos + self._need_bytes
        frame = bytes(buf[self._pos : end])
        self._pos = end
        self._need_bytes = None
        if self._pos == len(buf):
            buf.clear()
            self._pos = 0
        return frame
