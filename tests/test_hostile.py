"""Hostile bytes at both ports of a live replica: no code runs, nothing crashes, commits go on.

Covers: garbage, a 2 GiB length prefix, a pickle whose ``__reduce__`` would create a marker file
(sent raw, and framed the way pysyncobj frames its pickles), a pysyncobj utility command and a
``readonly`` hello on the raft port, undecodable and mis-typed frames after a valid client
handshake, and a wrong shared secret.
"""

from __future__ import annotations

import os
import pickle
import socket
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path

import msgpack
import pytest
from conftest import wait_until

from quorumboard.consensus import AuthError, LocalCluster, connect
from quorumboard.consensus.wire.auth import CLIENT_LABEL, Channel, new_nonce
from quorumboard.consensus.wire.frames import FrameDecoder, encode_frame

SECRET = "correct horse battery staple 42"


class _Evil:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, (f"touch {self.marker}",))


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    with LocalCluster(replicas=3, data_dir=tmp_path_factory.mktemp("hostile"),
                      secret=SECRET) as c:
        yield c


def _blast(address: str, payload: bytes, read: bool = True) -> bytes:
    host, _, port = address.rpartition(":")
    with socket.create_connection((host, int(port)), timeout=3) as s:
        try:
            s.sendall(payload)
            if read:
                s.settimeout(1.0)
                return s.recv(65536)
        except OSError:
            pass
    return b""


def test_a_stale_endpoint_is_passed_over_not_fatal(secured: LocalCluster) -> None:
    """An endpoint list with a wrong port first (here a replica's raft port: another service)
    still works: only a secret every endpoint refuses is final."""
    raft_port = secured.raft_addresses[0]
    board = connect([raft_port, *secured.endpoints], agent="stale-list", secret=SECRET,
                    timeout_s=60)
    assert board.put("stale/x", 1).version == 1
    board.close()


def test_refused_handshake_is_answered_before_the_close(secured: LocalCluster) -> None:
    """A handshake the replica refuses (here a hello for another service) gets a refusal frame
    naming the reason before the close, which the client's channel raises as AuthError."""
    ch = Channel(None, new_nonce(), initiator=True, label=b"qb-raft-v1")
    host, _, port = secured.endpoints[0].rpartition(":")
    with socket.create_connection((host, int(port)), timeout=5) as s:
        s.sendall(encode_frame(ch.hello("agent:wrong-port")))
        decoder = FrameDecoder(4096)
        frames: list[bytes] = []

        def two_frames() -> bool:
            data = s.recv(65536)
            if data:
                frames.extend(decoder.feed(data))
            return len(frames) >= 2 or not data

        wait_until(two_frames, what="the replica's hello and its refusal")
    assert len(frames) >= 2, frames
    with pytest.raises(AuthError, match="refused the handshake: hello for another service"):
        ch.accept_hello(frames[1])


def _attacks(marker: Path) -> list[bytes]:
    evil = pickle.dumps(_Evil(marker))
    pysyncobj_framed = zlib.compress(evil, 3)
    utility = zlib.compress(pickle.dumps(["status"]), 3)
    readonly = zlib.compress(pickle.dumps("readonly"), 3)
    return [
        b"\x00garbage\xff" * 100,
        struct.pack(">I", 2**31) + b"x" * 1000,  # 2 GiB announced: refused before buffering
        struct.pack("<i", 2**31 - 1) + b"y" * 100,
        evil,
        struct.pack("i", len(pysyncobj_framed)) + pysyncobj_framed,
        struct.pack("i", len(utility)) + utility,
        struct.pack("i", len(readonly)) + readonly,
        encode_frame(evil),
        encode_frame(msgpack.packb({"type": "append_entries", "term": 999})),
    ]


def test_hostile_bytes_on_both_ports(secured: LocalCluster, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    board = secured.board(agent="survivor")
    board.put("alive/0", 0)
    pids = [secured.pid(i) for i in range(3)]
    term_before = max(st.term for st in secured.status() if st)
    for i in range(3):
        for attack in _attacks(marker):
            _blast(secured.raft_addresses[i], attack)
            _blast(secured.endpoints[i], attack)
    for i in range(1, 20):
        board.put(f"alive/{i}", i)
    assert not marker.exists(), "a pickle payload ran code"
    assert [secured.pid(i) for i in range(3)] == pids, "a replica died"
    assert len(board.list("alive/")) == 20
    secured.wait_converged()
    # Garbage must not have forced elections (it never reached the Raft state machine).
    assert max(st.term for st in secured.status() if st) == term_before


def _client_session(address: str) -> tuple[socket.socket, Channel, FrameDecoder]:
    host, _, port = address.rpartition(":")
    s = socket.create_connection((host, int(port)), timeout=3)
    ch = Channel(SECRET.encode(), new_nonce(), initiator=True, label=CLIENT_LABEL)
    dec = FrameDecoder(1 << 20)
    s.sendall(encode_frame(ch.hello("agent:tester")))

    pending: list[bytes] = []

    def frame() -> bytes:
        for _ in range(100):
            if pending:
                return pending.pop(0)
            pending.extend(dec.feed(s.recv(65536)))
        raise AssertionError("no frame")

    ch.accept_hello(frame())
    s.sendall(encode_frame(ch.proof()))
    ch.accept_proof(frame())
    return s, ch, dec


def test_invalid_frames_after_handshake_get_error_replies(secured: LocalCluster) -> None:
    s, ch, dec = _client_session(secured.endpoints[0])
    with s:
        bad = [
            msgpack.packb({"kind": "propose", "id": 7, "proposal": {"agent": "x", "command": {
                "op": "put", "key": "a//b", "value": 1}}}),
            msgpack.packb({"kind": "propose", "id": 8, "proposal": {"agent": "x", "command": {
                "op": "expire_lease", "lease": 1, "refreshes": 0}}}),
            msgpack.packb({"kind": "nonsense", "id": 9}),
            msgpack.packb([1, 2, 3]),
        ]
        for payload in bad:
            s.sendall(encode_frame(ch.seal(payload)))
        replies = []
        for _ in range(100):
            if len(replies) >= len(bad):
                break
            for f in dec.feed(s.recv(65536)):
                replies.append(msgpack.unpackb(ch.open(f), raw=False))
        errors = [r["wire_error"] for r in replies]
        assert errors == ["invalid"] * 4, replies
        assert "segment" in replies[0]["message"]
        assert "replica-internal" in replies[1]["message"] or "not the leader" in str(replies[1])
        # Tampered frame: authentication fails, the connection is closed.
        sealed = bytearray(ch.seal(msgpack.packb({"kind": "status", "id": 10})))
        sealed[-1] ^= 1
        s.sendall(encode_frame(bytes(sealed)))
        wait_until(lambda: s.recv(65536) == b"", what="connection closed after a bad tag")


def test_wrong_secret_is_refused(secured: LocalCluster) -> None:
    """A wrong or missing secret is an :class:`AuthError` naming the secret, raised at the first
    connection: not ``Unavailable`` (which scripts retry) after the deadline. The deadline here
    is long, so a client that still retried would fail the assertion on the type, not pass late."""
    intruder = connect(secured.endpoints, agent="intruder", secret="not the secret at all!!",
                       timeout_s=120)
    with pytest.raises(AuthError, match="secret"):
        intruder.put("intruder/x", 1)
    with pytest.raises(AuthError):
        next(iter(intruder.watch("", start_revision=0)))
    nobody = connect(secured.endpoints, agent="anon", timeout_s=120)
    with pytest.raises(AuthError, match="secret"):
        nobody.put("anon/x", 1)
    friend = connect(secured.endpoints, agent="friend", secret=SECRET)
    assert friend.put("friend/x", 1).version == 1
    assert friend.get("intruder/x") is None and friend.get("anon/x") is None
    friend.close()
