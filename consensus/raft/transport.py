"""The replica-to-replica wire: authenticated, size-bounded, msgpack-only (never pickle).

Replaces pysyncobj's ``TcpConnection`` (pickle + zlib, unbounded pre-auth buffering) and the
parts of ``TCPTransport`` that let anyone on the raft port send admin/utility commands or attach
as a read-only node and stream the whole log (pysyncobj's side of that, ``QbTransport``, is in
consensus/raft/_pysyncobj.py, the only module that imports pysyncobj). Only the raft package
uses this module.

Per connection: frames (consensus.frames) bounded by ``hello_bytes_max`` until the handshake
(consensus.auth, label ``b"qb-raft-v1"``) completes, ``frame_bytes_max`` after; every post-handshake
frame is sealed (counter + HMAC tag when a secret is set) and carries one msgpack message that is
schema-checked before pysyncobj sees it. Any decode, auth, size or schema error disconnects that
connection only (the peer reconnects; the replica goes on).
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import socket
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import msgpack
import structlog

from quorumboard.consensus.errors import AuthError, ProtocolError
from quorumboard.consensus.raft._pysyncobj import CONNECTION_STATE, POLL_EVENT_TYPE
from quorumboard.consensus.wire.auth import RAFT_LABEL, SEAL_OVERHEAD_BYTES, Channel, new_nonce
from quorumboard.consensus.wire.frames import FrameDecoder, encode_frame

__all__ = ["MESSAGE_TYPES", "QbConnection", "WireConfig", "listen_socket", "validate_message"]

log = structlog.get_logger(__name__)

_READS_PER_EVENT_MAX = 32
_ACCEPTS_PER_EVENT_MAX = 16
_SPLIT_DEPTH_MAX = 24  # halving an entry list this many times reaches single entries


@dataclasses.dataclass(frozen=True)
class WireConfig:
    """Everything a connection needs, fixed for the life of the replica."""

    identity: str
    secret: bytes | None
    hello_bytes_max: int
    frame_bytes_max: int
    command_bytes_max: int
    idle_timeout_s: float
    handshake_timeout_s: float
    send_buffer_bytes_max: int
    recv_chunk_bytes: int
    socket_buffer_bytes: int
    pending_connections_max: int
    dial: dict[str, str] = dataclasses.field(default_factory=dict)
    """Peer identity -> the address to dial for it (a fault-injection proxy), if not itself."""


# --- message schema ----------------------------------------------------------------------------

# pysyncobj's messages, plus ``round`` on AppendEntries and their replies and quorumboard's own
# ReadIndex request and answer (a follower asks the leader for a read index, Raft thesis §6.4;
# see consensus/raft/_pysyncobj.py).
MESSAGE_TYPES = frozenset(
    {
        "request_vote",
        "response_vote",
        "append_entries",
        "next_node_idx",
        "apply_command",
        "apply_command_response",
        "timeout_now",
        "qb_heartbeat",
        "qb_heartbeat_reply",
        "qb_read_index",
        "qb_read_index_reply",
    }
)


def _is_int(value: object) -> bool:
    return type(value) is int and value >= 0


def _is_entry(value: object, command_bytes_max: int) -> bool:
    return (
        isinstance(value, tuple)
        and len(value) == 3
        and isinstance(value[0], bytes)
        and 0 < len(value[0]) <= command_bytes_max + 1
        and _is_int(value[1])
        and _is_int(value[2])
    )


_REQUIRED: dict[str, tuple[str, ...]] = {
    "request_vote": ("term", "last_log_index", "last_log_term"),
    "response_vote": ("term",),
    "append_entries": ("term", "commit_index"),
    "next_node_idx": ("next_node_idx", "reset", "success", "term"),
    "apply_command": ("command",),
    "apply_command_response": ("request_id",),
    "timeout_now": ("term",),
    "qb_heartbeat": ("term", "round"),
    "qb_heartbeat_reply": ("term", "round"),
    "qb_read_index": ("read_id", "term"),
    "qb_read_index_reply": ("read_id",),
}
_ALLOWED: dict[str, frozenset[str]] = {
    "request_vote": frozenset({"type", "term", "last_log_index", "last_log_term"}),
    "response_vote": frozenset({"type", "term"}),
    "append_entries": frozenset(
        {"type", "term", "commit_index", "entries", "prevLogIdx", "prevLogTerm", "serialized",
         "round"}
    ),
    "next_node_idx": frozenset({"type", "next_node_idx", "reset", "success", "term", "round"}),
    "apply_command": frozenset({"type", "command", "request_id"}),
    "apply_command_response": frozenset({"type", "request_id", "error", "log_idx", "log_term"}),
    "timeout_now": frozenset({"type", "term"}),
    "qb_heartbeat": frozenset({"type", "term", "round"}),
    "qb_heartbeat_reply": frozenset({"type", "term", "round"}),
    "qb_read_index": frozenset({"type", "read_id", "term"}),
    "qb_read_index_reply": frozenset({"type", "read_id", "read_index"}),
}
_INT_FIELDS = frozenset(
    {
        "term",
        "last_log_index",
        "last_log_term",
        "commit_index",
        "next_node_idx",
        "request_id",
        "error",
        "log_idx",
        "log_term",
        "round",
        "read_id",
        "read_index",
    }
)


def validate_message(message: object, command_bytes_max: int) -> dict[str, Any]:
    """Return ``message`` if it is a well-formed pysyncobj message, else raise ProtocolError.

    pysyncobj indexes messages without checking them (a missing key raises inside its tick), and
    its chunked large-entry "transmission" path unpickles: neither is reachable past this check.
    """
    if not isinstance(message, dict):
        raise ProtocolError("message is not a map")
    kind = message.get("type")
    if not isinstance(kind, str) or kind not in MESSAGE_TYPES:
        raise ProtocolError(f"message type {kind!r} not allowed")
    if not set(message) <= _ALLOWED[kind]:
        raise ProtocolError(f"unexpected fields in {kind}: {sorted(set(message) - _ALLOWED[kind])}")
    for field in _REQUIRED[kind]:
        if field not in message:
            raise ProtocolError(f"{kind} lacks {field}")
    for field in _INT_FIELDS & message.keys():
        if not _is_int(message[field]):
            raise ProtocolError(f"{kind}.{field} is not a non-negative int")
    if kind == "next_node_idx" and not (
        isinstance(message["reset"], bool) and isinstance(message["success"], bool)
    ):
        raise ProtocolError("next_node_idx flags are not booleans")
    if kind == "apply_command":
        command = message["command"]
        if not isinstance(command, bytes) or not 0 < len(command) <= command_bytes_max + 1:
            raise ProtocolError("apply_command.command out of bounds")
    if (
        kind == "apply_command_response"
        and "error" not in message
        and ("log_idx" not in message or "log_term" not in message)
    ):
        raise ProtocolError("apply_command_response lacks log position")
    if kind == "append_entries":
        _validate_append_entries(message, command_bytes_max)
    return message


def _validate_append_entries(message: dict[str, Any], command_bytes_max: int) -> None:
    if "prevLogIdx" in message:
        for field in ("prevLogIdx", "prevLogTerm"):
            value = message.get(field)
            if value is not None and not _is_int(value):
                raise ProtocolError(f"append_entries.{field} invalid")
        entries = message.get("entries", ())
        if not isinstance(entries, tuple) or not all(
            _is_entry(e, command_bytes_max) for e in entries
        ):
            raise ProtocolError("append_entries.entries invalid")
        message["entries"] = list(entries)
        if "serialized" in message:
            raise ProtocolError("append_entries mixes entries and a snapshot")
    elif "serialized" in message:
        chunk = message["serialized"]
        if chunk is False:  # pysyncobj sends False when it failed to read its own snapshot
            message["serialized"] = None
        elif chunk is not None and not (
            isinstance(chunk, tuple)
            and len(chunk) == 3
            and isinstance(chunk[0], bytes)
            and isinstance(chunk[1], bool)
            and isinstance(chunk[2], bool)
        ):
            raise ProtocolError("append_entries.serialized invalid")
    elif "entries" in message:
        raise ProtocolError("append_entries entries without prevLogIdx")


def encode_message(message: dict[str, Any]) -> bytes:
    """msgpack with bin types; tuples become arrays (entries decode back as tuples)."""
    return bytes(msgpack.packb(message, use_bin_type=True))


def decode_message(payload: bytes, frame_bytes_max: int, command_bytes_max: int) -> dict[str, Any]:
    """Decode one message payload (bounded, no ext types, arrays as tuples) and validate it."""
    try:
        message = msgpack.unpackb(
            payload,
            raw=False,
            use_list=False,
            strict_map_key=True,
            max_str_len=1024,
            max_map_len=32,
            max_ext_len=0,
        )
    except Exception as exc:
        raise ProtocolError(f"undecodable message: {type(exc).__name__}") from exc
    return validate_message(message, command_bytes_max)


def split_append_entries(message: dict[str, Any]) -> list[dict[str, Any]]:
    """Split an append_entries in two consecutive ones (prev index/term chained).

    Followers process messages in order, so the second half's ``prevLogIdx`` is the first half's
    last entry and the log-matching check still holds (Raft §5.3).
    """
    entries = list(message["entries"])
    half = len(entries) // 2
    first = dict(message, entries=entries[:half])
    second = dict(
        message,
        entries=entries[half:],
        prevLogIdx=entries[half - 1][1],
        prevLogTerm=entries[half - 1][2],
    )
    return [first, second]


# --- connection --------------------------------------------------------------------------------


class QbConnection:
    """A poller-driven connection mirroring pysyncobj's TcpConnection interface.

    ``state`` is CONNECTING until the handshake completes, so pysyncobj's transport sends nothing
    before the peer is authenticated. The connected callback fires only after authentication.
    """

    def __init__(
        self,
        poller: Any,
        wire: WireConfig,
        *,
        sock: socket.socket | None = None,
        expected_peer: str | None = None,
        dial: str | None = None,
        peer_allowed: Callable[[str], bool] | None = None,
    ) -> None:
        self._poller = poller
        self._wire = wire
        self._expected_peer = expected_peer
        self._dial = dial
        self._peer_allowed = peer_allowed
        self._on_connected: Callable[[], None] | None = None
        self._on_message: Callable[[dict[str, Any]], None] | None = None
        self._on_disconnected: Callable[[], None] | None = None
        self._socket: socket.socket | None = None
        self._fileno: int | None = None
        self._state: int = CONNECTION_STATE.DISCONNECTED
        self._tcp_up = False
        self._channel: Channel | None = None
        self._decoder = FrameDecoder(wire.hello_bytes_max)
        self._write_chunks: deque[bytes] = deque()
        self._write_bytes = 0
        self._want_write = False
        self._started_at = time.monotonic()
        self._last_progress_at = self._started_at
        if sock is not None:
            self._adopt(sock, tcp_up=True)

    # pysyncobj's transport API --------------------------------------------------------------

    def setOnConnectedCallback(self, callback: Callable[[], None] | None) -> None:
        self._on_connected = callback

    def setOnMessageReceivedCallback(
        self, callback: Callable[[dict[str, Any]], None] | None
    ) -> None:
        self._on_message = callback

    def setOnDisconnectedCallback(self, callback: Callable[[], None] | None) -> None:
        self._on_disconnected = callback

    @property
    def state(self) -> int:
        return self._state

    @property
    def peer_identity(self) -> str | None:
        channel = self._channel
        return channel.peer_identity if channel is not None and channel.established else None

    def fileno(self) -> int | None:
        return self._fileno

    def connect(self, host: str | None, port: int) -> bool:
        """Start a non-blocking connect; the handshake begins once TCP is up. A ``dial``
        override (a proxy) replaces the address; the peer must still prove its identity."""
        if self._dial is not None:
            host, _, dial_port = self._dial.rpartition(":")
            port = int(dial_port)
        if host is None:
            return False
        self._close_socket()
        sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
        self._configure(sock)
        self._decoder = FrameDecoder(self._wire.hello_bytes_max)
        try:
            sock.connect((host, port))
        except BlockingIOError:
            pass
        except OSError:
            sock.close()
            return False
        self._adopt(sock, tcp_up=False)
        return True

    def send(self, message: dict[str, Any]) -> None:
        """Queue one message (dropped unless authenticated)."""
        channel = self._channel
        if self._state != CONNECTION_STATE.CONNECTED or channel is None:
            return
        for part in self._fit(message, 0):
            self._queue_frame(channel.seal(part))
            if self._state != CONNECTION_STATE.CONNECTED:
                return
        self._flush()

    def disconnect(self) -> None:
        was_live = self._state != CONNECTION_STATE.DISCONNECTED
        self._close_socket()
        self._state = CONNECTION_STATE.DISCONNECTED
        callback = self._on_disconnected
        if was_live and callback is not None:
            callback()

    def check_timeouts(self, now: float) -> None:
        """Drop a connection that never authenticated in time or went silent."""
        if self._state == CONNECTION_STATE.DISCONNECTED:
            return
        if self._state == CONNECTION_STATE.CONNECTING:
            if now - self._started_at > self._wire.handshake_timeout_s:
                log.info("raft_handshake_timeout", peer=self._peer_name())
                self.disconnect()
        elif self._write_bytes and now - self._last_progress_at > self._wire.idle_timeout_s:
            # Only a peer that stopped reading is dropped: idle links (follower to follower)
            # are normal, and dead ones are found by TCP keepalive or the next send.
            log.info("raft_peer_stalled", peer=self._peer_name(), buffered_bytes=self._write_bytes)
            self.disconnect()

    # internals --------------------------------------------------------------------------------

    def _configure(self, sock: socket.socket) -> None:
        size = self._wire.socket_buffer_bytes
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, size)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        if hasattr(socket, "TCP_KEEPIDLE"):  # Linux: notice a silently dead peer in ~30 s
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, 15)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, 3)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, 5)
        sock.setblocking(False)

    def _adopt(self, sock: socket.socket, *, tcp_up: bool) -> None:
        if tcp_up:
            self._configure(sock)
        self._socket = sock
        self._fileno = sock.fileno()
        self._state = CONNECTION_STATE.CONNECTING
        self._tcp_up = False
        self._channel = None
        self._write_chunks.clear()
        self._write_bytes = 0
        self._started_at = self._last_progress_at = time.monotonic()
        self._want_write = True
        self._subscribe()
        if tcp_up:
            self._on_tcp_up()

    def _subscribe(self) -> None:
        if self._fileno is None:
            return
        mask = POLL_EVENT_TYPE.READ | POLL_EVENT_TYPE.ERROR
        if self._want_write:
            mask |= POLL_EVENT_TYPE.WRITE
        self._poller.subscribe(self._fileno, self._process, mask)

    def _close_socket(self) -> None:
        if self._fileno is not None:
            self._poller.unsubscribe(self._fileno)
            self._fileno = None
        if self._socket is not None:
            with contextlib.suppress(OSError):
                self._socket.close()
            self._socket = None
        self._write_chunks.clear()
        self._write_bytes = 0
        self._tcp_up = False
        self._channel = None

    def _peer_name(self) -> str:
        channel = self._channel
        if self._expected_peer is not None:
            return self._expected_peer
        if channel is not None and channel.peer_identity is not None:
            return f"{channel.peer_identity}?"
        return "unknown"

    def _drop(self, event: str, exc: BaseException) -> None:
        log.warning(event, peer=self._peer_name(), error=str(exc), kind=type(exc).__name__)
        self.disconnect()

    def _on_tcp_up(self) -> None:
        self._tcp_up = True
        channel = Channel(
            self._wire.secret,
            new_nonce(),
            initiator=self._expected_peer is not None,
            label=RAFT_LABEL,
        )
        self._channel = channel
        self._queue_frame(channel.hello(self._wire.identity))
        self._flush()

    def _process(self, descr: int, event: int) -> None:
        if descr != self._fileno or self._socket is None:
            self._poller.unsubscribe(descr)
            return
        if event & POLL_EVENT_TYPE.ERROR:
            self.disconnect()
            return
        if not self._tcp_up:
            if self._socket.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):
                self.disconnect()
                return
            if event & (POLL_EVENT_TYPE.WRITE | POLL_EVENT_TYPE.READ):
                self._on_tcp_up()
                if self._state == CONNECTION_STATE.DISCONNECTED:
                    return
        if event & POLL_EVENT_TYPE.WRITE:
            self._flush()
            if self._state == CONNECTION_STATE.DISCONNECTED:
                return
        if event & POLL_EVENT_TYPE.READ:
            self._read()

    def _read(self) -> None:
        # Bounded per poll event so one busy peer cannot starve the tick.
        for _ in range(_READS_PER_EVENT_MAX):
            sock = self._socket
            if sock is None:
                return
            try:
                data = sock.recv(self._wire.recv_chunk_bytes)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                self.disconnect()
                return
            if not data:
                self.disconnect()
                return
            self._last_progress_at = time.monotonic()
            try:
                self._decoder.push(data)
            except ProtocolError as exc:
                self._drop("raft_frame_rejected", exc)
                return
            if not self._drain_frames():
                return
            if len(data) < self._wire.recv_chunk_bytes:
                return

    def _drain_frames(self) -> bool:
        """Handle every complete frame; False if the connection was dropped."""
        # Bounded: each pass consumes one frame from a buffer of at most limit + one chunk.
        while True:
            try:
                frame = self._decoder.next_frame()
            except ProtocolError as exc:
                self._drop("raft_frame_rejected", exc)
                return False
            if frame is None:
                return True
            try:
                self._handle_frame(frame)
            except (AuthError, ProtocolError) as exc:
                self._drop("raft_peer_rejected", exc)
                return False
            except Exception as exc:  # pysyncobj choked on a valid message: resync by reconnecting
                log.exception("raft_message_handler_failed", peer=self._peer_name())
                self._drop("raft_message_handler_failed", exc)
                return False
            if self._state == CONNECTION_STATE.DISCONNECTED:
                return False

    def _handle_frame(self, frame: bytes) -> None:
        channel = self._channel
        if channel is None:
            raise ProtocolError("frame before connection setup")
        if channel.established:
            payload = channel.open(frame)
            message = decode_message(
                payload, self._wire.frame_bytes_max, self._wire.command_bytes_max
            )
            callback = self._on_message
            if callback is not None:
                callback(message)
            return
        if channel.peer_identity is None:
            identity = channel.accept_hello(frame)
            if self._expected_peer is not None:
                if identity != self._expected_peer:
                    raise AuthError(f"dialled {self._expected_peer} but peer says {identity!r}")
            elif self._peer_allowed is None or not self._peer_allowed(identity):
                raise AuthError(f"{identity!r} is not a configured peer that dials us")
            self._queue_frame(channel.proof())
            self._flush()
            return
        channel.accept_proof(frame)
        self._decoder.set_limit(self._wire.frame_bytes_max)
        self._state = CONNECTION_STATE.CONNECTED
        self._last_progress_at = time.monotonic()
        log.info("raft_peer_authenticated", peer=channel.peer_identity)
        callback_connected = self._on_connected
        if callback_connected is not None:
            callback_connected()

    def _fit(self, message: dict[str, Any], depth: int) -> list[bytes]:
        """Encode, splitting an oversized append_entries; refuse anything else that is too big."""
        try:
            payload = encode_message(message)
        except (TypeError, ValueError, OverflowError) as exc:
            log.error("raft_message_unencodable", kind=message.get("type"), error=str(exc))
            return []
        if len(payload) + SEAL_OVERHEAD_BYTES <= self._wire.frame_bytes_max:
            return [payload]
        entries = message.get("entries")
        if (
            message.get("type") == "append_entries"
            and isinstance(entries, list)
            and len(entries) > 1
            and depth < _SPLIT_DEPTH_MAX
        ):
            parts: list[bytes] = []
            for half in split_append_entries(message):
                parts.extend(self._fit(half, depth + 1))
            return parts
        log.error("raft_message_too_large", kind=message.get("type"), size_bytes=len(payload))
        return []

    def _queue_frame(self, payload: bytes) -> None:
        data = encode_frame(payload)
        self._write_chunks.append(data)
        self._write_bytes += len(data)
        if self._write_bytes > self._wire.send_buffer_bytes_max:
            log.warning(
                "raft_peer_not_reading", peer=self._peer_name(), buffered_bytes=self._write_bytes
            )
            self.disconnect()

    def _flush(self) -> None:
        sock = self._socket
        if sock is None or not self._tcp_up:
            return
        # Bounded by the queued chunks: each pass sends some bytes or stops.
        while self._write_chunks:
            chunk = self._write_chunks[0]
            try:
                sent = sock.send(chunk)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as exc:
                if exc.errno in (errno.EAGAIN, errno.EWOULDBLOCK):
                    break
                self.disconnect()
                return
            self._write_bytes -= sent
            self._last_progress_at = time.monotonic()
            if sent == len(chunk):
                self._write_chunks.popleft()
            else:
                self._write_chunks[0] = chunk[sent:]
                break
        want_write = bool(self._write_chunks)
        if want_write != self._want_write:
            self._want_write = want_write
            self._subscribe()


# --- server and transport ----------------------------------------------------------------------


def listen_socket(host: str, port: int) -> socket.socket:
    """A non-blocking listening socket on ``host:port`` (raises :class:`OSError`)."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setblocking(False)
        sock.bind((host, port))
        sock.listen(64)
    except OSError:
        sock.close()
        raise
    return sock


class _Server:
    """Listening socket; wraps each accepted socket in a QbConnection."""

    def __init__(
        self,
        poller: Any,
        host: str,
        port: int,
        on_new_connection: Callable[[socket.socket], None],
    ) -> None:
        self._poller = poller
        self._host = host
        self._port = port
        self._on_new_connection = on_new_connection
        self._socket: socket.socket | None = None

    def bind(self) -> None:
        sock = listen_socket(self._host, self._port)
        self._socket = sock
        self._poller.subscribe(
            sock.fileno(), self._on_event, POLL_EVENT_TYPE.READ | POLL_EVENT_TYPE.ERROR
        )

    def unbind(self) -> None:
        sock = self._socket
        self._socket = None
        if sock is not None:
            self._poller.unsubscribe(sock.fileno())
            sock.close()

    def _on_event(self, descr: int, event: int) -> None:
        sock = self._socket
        if sock is None:
            self._poller.unsubscribe(descr)
            return
        if event & POLL_EVENT_TYPE.ERROR:
            log.warning("raft_listener_error_event")
        for _ in range(_ACCEPTS_PER_EVENT_MAX):
            try:
                conn_sock, _addr = sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # e.g. EMFILE: keep the listener, try again next event
                log.warning("raft_accept_failed", error=str(exc))
                return
            self._on_new_connection(conn_sock)
