"""Shared-secret mutual authentication and per-frame integrity for one connection.

Used on the replica-to-replica wire (label ``b"qb-raft-v1"``) and on the client port
(``b"qb-client-v1"``). Pure: no sockets; the caller supplies the local nonce (see
:func:`new_nonce`) and moves the payloads.

Handshake (each side, in this order; both sides may send their hello at once)::

    send hello(identity)  ->  accept_hello(peer hello)  ->  send proof()  ->  accept_proof(peer proof)

Why this shape:

* Both nonces and both identities enter the transcript, so a proof recorded on one connection is
  useless on another (fresh nonce) and cannot be reflected back (direction is bound).
* The ``label`` is in the transcript, so a proof for the client port cannot be replayed on the raft
  port and vice versa.
* Session keys are derived per connection and per direction with HMAC-SHA256; every sealed frame
  carries a strictly increasing counter and a truncated tag, so tampered, replayed, reordered or
  reflected frames are refused with :class:`AuthError`.
* A side whose handshake fails (wrong secret, malformed hello, another service's label) sends
  one plain *refusal* frame naming the reason before it closes, so the other side raises
  :class:`AuthError` at once instead of reading a bare close as a network fault and retrying until
  its deadline. A replica at its connection cap sends the same frame in place of its hello, with
  the cap, and the client raises :class:`TooManyConnections`: one refusal vocabulary for every
  reason a connection is turned away. The frame starts with a magic no hello (a msgpack array)
  or proof (32 bytes of HMAC, matched in full) can be mistaken for.
* With ``secret=None`` the hellos are still exchanged (the peer identity is known) but proofs are
  empty and :meth:`Channel.seal`/:meth:`Channel.open` pass bytes through: that mode authenticates
  nothing and is only for trusted loopback setups.

This gives integrity and authenticity, not confidentiality (traffic is not encrypted).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import struct
from typing import Final, NoReturn

import msgpack

from quorumboard.consensus.core.invariant import check
from quorumboard.consensus.errors import AuthError, InvariantViolation, TooManyConnections

__all__ = [
    "CLIENT_LABEL",
    "NONCE_BYTES",
    "RAFT_LABEL",
    "SEAL_OVERHEAD_BYTES",
    "Channel",
    "new_nonce",
    "refusal_frame",
]

RAFT_LABEL: Final = b"qb-raft-v1"
CLIENT_LABEL: Final = b"qb-client-v1"
NONCE_BYTES: Final = 16
TAG_BYTES: Final = 16
_COUNTER = struct.Struct(">Q")
SEAL_OVERHEAD_BYTES: Final = _COUNTER.size + TAG_BYTES
_IDENTITY_CHARS_MAX: Final = 512
_HELLO_VERSION: Final = 1
_HELLO_BYTES_MAX: Final = 2048
_REFUSAL_MAGIC: Final = b"\x00qb-handshake-refused\x00"
_REFUSAL_REASON_BYTES_MAX: Final = 256


_KIND_SECRET: Final = b"S"
_KIND_CAP: Final = b"C"
_KIND_OTHER: Final = b"-"


def refusal_frame(error: AuthError | TooManyConnections) -> bytes:
    """The payload a side sends when it refuses the handshake: the magic, a kind, then the
    reason (UTF-8, cut to 256 bytes). Kinds: ``S`` a secret mismatch, ``C`` the replica is at
    its connection cap (the reason is the cap, in decimal, so the client can name it), ``-``
    anything else. Never carries secret material: reasons are fixed texts."""
    if isinstance(error, TooManyConnections):
        return _REFUSAL_MAGIC + _KIND_CAP + str(error.limit).encode()
    kind = _KIND_SECRET if error.secret_mismatch else _KIND_OTHER
    return _REFUSAL_MAGIC + kind + str(error).encode("utf-8", "replace")[:_REFUSAL_REASON_BYTES_MAX]


def _refusal(payload: bytes) -> tuple[bytes, str] | None:
    """``(kind, reason)`` of a refusal frame, or ``None`` for any other payload."""
    if not payload.startswith(_REFUSAL_MAGIC):
        return None
    body = payload[len(_REFUSAL_MAGIC):]
    reason = body[1:][:_REFUSAL_REASON_BYTES_MAX].decode("utf-8", "replace")
    return body[:1], reason


def new_nonce() -> bytes:
    """16 fresh random bytes for one connection's handshake."""
    return os.urandom(NONCE_BYTES)


def _mac(key: bytes, *parts: bytes) -> bytes:
    return hmac.new(key, b"".join(parts), hashlib.sha256).digest()


class Channel:
    """Per-connection authentication state (pure: no sockets)."""

    def __init__(
        self, secret: bytes | None, local_nonce: bytes, *, initiator: bool, label: bytes
    ) -> None:
        check(len(local_nonce) == NONCE_BYTES, "local nonce must be 16 bytes")
        check(secret is None or len(secret) > 0, "secret must be None or non-empty")
        self._secret = secret
        self._local_nonce = local_nonce
        self._initiator = initiator
        self._label = label
        self._local_identity: str | None = None
        self._peer_identity: str | None = None
        self._peer_nonce: bytes | None = None
        self._proof_sent = False
        self._established = False
        self._failed = False
        self._send_key = b""
        self._recv_key = b""
        self._proof_out = b""
        self._proof_in = b""
        self._send_counter = 0
        self._recv_counter = 0

    # --- handshake ---------------------------------------------------------------------------

    def hello(self, identity: str) -> bytes:
        """First payload this side sends: version, label, identity and our nonce (msgpack)."""
        check(self._local_identity is None, "hello() called twice")
        check(0 < len(identity) <= _IDENTITY_CHARS_MAX, "identity length out of bounds")
        self._local_identity = identity
        return bytes(
            msgpack.packb(
                [_HELLO_VERSION, self._label, identity, self._local_nonce], use_bin_type=True
            )
        )

    def accept_hello(self, payload: bytes) -> str:
        """Check the peer's hello and return the identity it claims (proven only by the proof)."""
        if self._peer_identity is not None or self._failed:
            self._fail("unexpected second hello")
        self._check_refusal(payload)
        if len(payload) > _HELLO_BYTES_MAX:
            self._fail("hello too large")
        try:
            fields = msgpack.unpackb(
                payload,
                raw=False,
                use_list=True,
                strict_map_key=True,
                max_array_len=8,
                max_map_len=0,
                max_ext_len=0,
            )
        except Exception as exc:  # any decode failure means garbage on the wire
            self._fail(f"undecodable hello: {type(exc).__name__}")
        if not isinstance(fields, list) or len(fields) != 4:
            self._fail("malformed hello")
        version, label, identity, nonce = fields
        if version != _HELLO_VERSION:
            self._fail(f"unsupported hello version {version!r}")
        if label != self._label:
            self._fail("hello for another service (label mismatch)")
        if not isinstance(identity, str) or not 0 < len(identity) <= _IDENTITY_CHARS_MAX:
            self._fail("malformed peer identity")
        if not isinstance(nonce, bytes) or len(nonce) != NONCE_BYTES:
            self._fail("malformed peer nonce")
        if hmac.compare_digest(nonce, self._local_nonce):
            self._fail("peer echoed our nonce (reflection)")
        self._peer_identity = identity
        self._peer_nonce = nonce
        return identity

    def proof(self) -> bytes:
        """Second payload: HMAC over both nonces, both identities, the label and the direction."""
        check(self._local_identity is not None, "proof() before hello()")
        check(self._peer_nonce is not None, "proof() before accept_hello()")
        check(not self._proof_sent, "proof() called twice")
        self._derive_keys()
        self._proof_sent = True
        return self._proof_out

    def accept_proof(self, payload: bytes) -> None:
        """Verify the peer's proof in constant time; the channel is established afterwards."""
        if self._failed or not self._proof_sent or self._established:
            self._fail("proof out of order")
        self._check_refusal(payload)
        if not hmac.compare_digest(payload, self._proof_in):
            self._fail("peer failed to prove the shared secret", secret_mismatch=True)
        self._established = True

    @property
    def established(self) -> bool:
        """True once both sides proved the secret (or exchanged hellos, with no secret)."""
        return self._established

    @property
    def peer_identity(self) -> str | None:
        """Identity from the peer's hello (authenticated once :attr:`established`)."""
        return self._peer_identity

    # --- after the handshake -----------------------------------------------------------------

    def seal(self, payload: bytes) -> bytes:
        """Prefix a per-direction counter and append a truncated HMAC tag (passthrough w/o secret)."""
        check(self._established, "seal() before the handshake completed")
        if self._secret is None:
            return payload
        self._send_counter += 1
        head = _COUNTER.pack(self._send_counter)
        tag = _mac(self._send_key, head, payload)[:TAG_BYTES]
        return head + payload + tag

    def open(self, frame: bytes) -> bytes:
        """Verify tag and counter (must strictly increase) and return the payload."""
        if not self._established:
            self._fail("frame before the handshake completed")
        if self._secret is None:
            return frame
        if len(frame) < SEAL_OVERHEAD_BYTES:
            self._fail("sealed frame too short")
        head = frame[: _COUNTER.size]
        payload = frame[_COUNTER.size : -TAG_BYTES]
        tag = frame[-TAG_BYTES:]
        expected = _mac(self._recv_key, head, payload)[:TAG_BYTES]
        if not hmac.compare_digest(tag, expected):
            self._fail("frame tag does not verify")
        (counter,) = _COUNTER.unpack(head)
        if counter <= self._recv_counter:
            self._fail("replayed or reordered frame")
        self._recv_counter = counter
        return payload

    # --- internals ---------------------------------------------------------------------------

    def _derive_keys(self) -> None:
        local_id = self._local_identity
        peer_id = self._peer_identity
        peer_nonce = self._peer_nonce
        if local_id is None or peer_id is None or peer_nonce is None:
            raise InvariantViolation("key derivation before both hellos")
        if self._secret is None:
            self._proof_out = b""
            self._proof_in = b""
            return
        if self._initiator:
            ids = (local_id, peer_id)
            nonces = (self._local_nonce, peer_nonce)
        else:
            ids = (peer_id, local_id)
            nonces = (peer_nonce, self._local_nonce)
        transcript = bytes(
            msgpack.packb([self._label, ids[0], ids[1], nonces[0], nonces[1]], use_bin_type=True)
        )
        session = _mac(self._secret, b"qb-session", transcript)
        proof_i2r = _mac(session, b"proof initiator->responder")
        proof_r2i = _mac(session, b"proof responder->initiator")
        key_i2r = _mac(session, b"data initiator->responder")
        key_r2i = _mac(session, b"data responder->initiator")
        if self._initiator:
            self._proof_out, self._proof_in = proof_i2r, proof_r2i
            self._send_key, self._recv_key = key_i2r, key_r2i
        else:
            self._proof_out, self._proof_in = proof_r2i, proof_i2r
            self._send_key, self._recv_key = key_r2i, key_i2r

    def _check_refusal(self, payload: bytes) -> None:
        refusal = _refusal(payload)
        if refusal is None:
            return
        kind, reason = refusal
        if kind == _KIND_CAP and self._label == CLIENT_LABEL:  # only the client port has a cap
            self._failed = True
            limit = int(reason) if reason.isascii() and reason.isdigit() and len(reason) < 19 \
                else 0
            raise TooManyConnections(
                f"the replica refused the connection: it serves at most {limit} client "
                "connections at once (connections_max in its config)", limit=limit)
        self._fail(f"the peer refused the handshake: {reason}",
                   secret_mismatch=kind == _KIND_SECRET)

    def _fail(self, reason: str, *, secret_mismatch: bool = False) -> NoReturn:
        self._failed = True
        raise AuthError(reason, secret_mismatch=secret_mismatch)
