"""Channel: mutual proof of the shared secret, per-direction keys, sealed frames."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from quorumboard.consensus.errors import AuthError
from quorumboard.consensus.wire.auth import CLIENT_LABEL, RAFT_LABEL, Channel, new_nonce

SECRET = b"s" * 32


def pair(
    secret_a: bytes | None = SECRET,
    secret_b: bytes | None = SECRET,
    label_a: bytes = RAFT_LABEL,
    label_b: bytes = RAFT_LABEL,
) -> tuple[Channel, Channel]:
    a = Channel(secret_a, new_nonce(), initiator=True, label=label_a)
    b = Channel(secret_b, new_nonce(), initiator=False, label=label_b)
    return a, b


def handshake(a: Channel, b: Channel) -> bytes:
    """Run the handshake; return the initiator's proof (what an eavesdropper would record)."""
    hello_a, hello_b = a.hello("A:1"), b.hello("B:2")
    assert b.accept_hello(hello_a) == "A:1"
    assert a.accept_hello(hello_b) == "B:2"
    proof_a, proof_b = a.proof(), b.proof()
    b.accept_proof(proof_a)
    a.accept_proof(proof_b)
    return proof_a


@given(st.lists(st.binary(max_size=200), max_size=10))
def test_sealed_round_trip_both_directions(payloads: list[bytes]) -> None:
    a, b = pair()
    handshake(a, b)
    assert a.established and b.established
    for p in payloads:
        assert b.open(a.seal(p)) == p
        assert a.open(b.seal(p)) == p


def test_wrong_secret_rejected() -> None:
    a, b = pair(secret_b=b"t" * 32)
    with pytest.raises(AuthError):
        handshake(a, b)
    assert not b.established


def test_secret_vs_no_secret_rejected() -> None:
    for secrets in ((SECRET, None), (None, SECRET)):
        a, b = pair(*secrets)
        with pytest.raises(AuthError):
            handshake(a, b)


def test_no_secret_passthrough_but_identity_known() -> None:
    a, b = pair(None, None)
    handshake(a, b)
    assert b.peer_identity == "A:1"
    assert a.seal(b"x") == b"x" and b.open(b"x") == b"x"


def test_cross_label_rejected() -> None:
    a, b = pair(label_b=CLIENT_LABEL)
    with pytest.raises(AuthError):
        handshake(a, b)


def test_proof_replay_across_labels_and_connections_rejected() -> None:
    """A proof recorded on one connection (or port) is useless on another."""
    a, b = pair()
    recorded = handshake(a, b)
    # same identities, new nonces (a new connection), even on the same label
    a2, b2 = pair()
    b2.hello("B:2")
    b2.accept_hello(a2.hello("A:1"))
    b2.proof()
    with pytest.raises(AuthError):
        b2.accept_proof(recorded)
    # the client label derives different proofs from the same secret
    c1, c2 = pair(label_a=CLIENT_LABEL, label_b=CLIENT_LABEL)
    c2.hello("B:2")
    c2.accept_hello(c1.hello("A:1"))
    c2.proof()
    with pytest.raises(AuthError):
        c2.accept_proof(recorded)


def test_reflected_proof_rejected() -> None:
    a, b = pair()
    hello_a, hello_b = a.hello("A:1"), b.hello("B:2")
    b.accept_hello(hello_a)
    a.accept_hello(hello_b)
    proof_b = b.proof()
    a.proof()
    with pytest.raises(AuthError):
        b.accept_proof(proof_b)  # our own proof sent back


def test_reflected_nonce_rejected() -> None:
    nonce = new_nonce()
    a = Channel(SECRET, nonce, initiator=True, label=RAFT_LABEL)
    b = Channel(SECRET, nonce, initiator=False, label=RAFT_LABEL)
    with pytest.raises(AuthError):
        b.accept_hello(a.hello("A:1"))


def test_tampered_replayed_reordered_frames_rejected() -> None:
    a, b = pair()
    handshake(a, b)
    f1, f2, f3 = a.seal(b"one"), a.seal(b"two"), a.seal(b"three")
    tampered = bytearray(f1)
    tampered[9] ^= 1
    with pytest.raises(AuthError):
        b.open(bytes(tampered))
    assert b.open(f1) == b"one"
    with pytest.raises(AuthError):
        b.open(f1)  # replay
    assert b.open(f3) == b"three"
    with pytest.raises(AuthError):
        b.open(f2)  # reordered (older counter)
    with pytest.raises(AuthError):
        a.open(a.seal(b"x"))  # reflected to the sender: wrong direction key
    with pytest.raises(AuthError):
        b.open(b"short")


@given(st.binary(max_size=100))
def test_garbage_hello_rejected(data: bytes) -> None:
    _a, b = pair()
    b.hello("B:2")
    with pytest.raises(AuthError):
        b.accept_hello(data)


def test_frames_before_handshake_rejected() -> None:
    a, b = pair()
    with pytest.raises(AuthError):
        b.open(b"\x00" * 40)
    with pytest.raises(AuthError):
        b.accept_hello(a.hello("A:1"))  # a failed channel stays failed
    a, b = pair()
    b.hello("B:2")
    b.accept_hello(a.hello("A:1"))
    with pytest.raises(AuthError):
        b.accept_proof(b"\x00" * 32)  # proof before we sent ours
