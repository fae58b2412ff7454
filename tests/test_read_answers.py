"""The client endpoint's linearizable reads (consensus/replica/server.py): the answer may be
built while the read's heartbeat round travels (ReadIndex's ``prepare``, on a leader that has
applied its read index), but it goes out only once the round confirms; a round that fails
answers ``UNAVAILABLE`` whatever was prepared. The Raft side (``prepare`` runs only with the
read index applied) is tested in tests/test_lone_replica.py."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from quorumboard.consensus.core.model import Proposal, PutCmd
from quorumboard.consensus.core.policies import PolicyRegistry
from quorumboard.consensus.core.state import BoardState, apply
from quorumboard.consensus.replica.server import ClientServer, _Conn
from quorumboard.consensus.wire.protocol import Failure, ReadReq, Reply, decode

Done = Callable[[object | None, Failure | None], None]


class FakeCore:
    """What the read path uses of a replica: its state and lock, and a ``read_index`` that
    leaves the round to the test (it calls ``prepare`` and ``done`` itself)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.state = BoardState()
        self.rounds: list[tuple[Done, Callable[[], None] | None]] = []

    def read_index(self, done: Done, prepare: Callable[[], None] | None = None) -> None:
        self.rounds.append((done, prepare))

    def leader_client_address(self) -> str:
        return "127.0.0.1:7001"

    def put(self, value: int) -> None:
        current = self.state.entry("x")
        applied = apply(self.state, Proposal(agent="w", command=PutCmd(
            key="x", value=value, expect_version=current.version if current else None)),
            PolicyRegistry())
        assert applied.result.error is None, applied.result.error


class FakeConn(_Conn):
    """The endpoint's connection with its counting (``begin_one``/``done_one``, per connection
    and server-wide) and no socket: replies are kept."""

    def __init__(self, server: ClientServer) -> None:
        super().__init__(server, None, None)  # type: ignore[arg-type]
        self.sent: list[Reply] = []

    def send_reply(self, payload: bytes) -> None:
        self.sent.append(decode(payload, Reply))


@pytest.fixture
def endpoint() -> Iterator[tuple[ClientServer, FakeCore]]:
    core = FakeCore()
    server = ClientServer(core, "127.0.0.1", 0, None)  # type: ignore[arg-type]
    server._loop_thread_id = threading.get_ident()  # the test's thread plays the loop's
    try:
        yield server, core
    finally:
        server._loop.close()


def _read(server: ClientServer, core: FakeCore) -> tuple[FakeConn, Done, Callable[[], None]]:
    """One linearizable get waiting for its round; the round's callbacks."""
    conn = FakeConn(server)
    conn.begin_one()
    server._reads_waiting.append((conn, ReadReq(id=7, what="get", key="x")))  # type: ignore[arg-type]
    server._maybe_confirm_reads()
    done, prepare = core.rounds[-1]
    assert prepare is not None
    return conn, done, prepare


def _value(reply: Reply) -> Any:
    assert reply.entry is not None, reply
    return reply.entry.value


def test_the_answer_prepared_at_the_rounds_start_goes_out_when_it_confirms(
        endpoint: tuple[ClientServer, FakeCore]) -> None:
    server, core = endpoint
    core.put(1)
    conn, done, prepare = _read(server, core)
    prepare()  # the heartbeat left: the state is the state at the read index
    core.put(2)  # applied after the round started: this read may or may not see it
    assert conn.sent == []  # nothing before the round confirms
    done(None, None)
    assert [(r.id, _value(r)) for r in conn.sent] == [(7, 1)] and conn.inflight == 0
    assert server.requests_waiting == 0


def test_a_failed_round_sends_unavailable_whatever_was_prepared(
        endpoint: tuple[ClientServer, FakeCore]) -> None:
    server, core = endpoint
    core.put(1)
    conn, done, prepare = _read(server, core)
    prepare()
    done(None, Failure.UNAVAILABLE)  # e.g. an isolated leader: no majority answered
    assert [(r.id, r.wire_error, r.entry) for r in conn.sent] == [(7, Failure.UNAVAILABLE, None)]
    assert conn.inflight == 0 and server.requests_waiting == 0


def test_without_prepare_the_answer_is_read_when_the_round_confirms(
        endpoint: tuple[ClientServer, FakeCore]) -> None:
    """A follower (its read index comes with the leader's answer), or a leader that had not
    applied its read index when the round started: the state is read at completion."""
    server, core = endpoint
    core.put(1)
    conn, done, _prepare = _read(server, core)
    core.put(2)
    done(None, None)
    assert [_value(r) for r in conn.sent] == [2]
    assert server.requests_waiting == 0


def test_a_read_whose_confirmation_cannot_start_fails_and_frees_the_confirmation(
        endpoint: tuple[ClientServer, FakeCore]) -> None:
    """A ``read_index`` that raises (a bug) fails its reads at once and gives the one
    confirmation in flight back: the next read starts its own round."""
    server, core = endpoint
    core.put(1)
    real = core.read_index

    def broken(done: Done, prepare: Callable[[], None] | None = None) -> None:
        raise RuntimeError("planted")

    core.read_index = broken  # type: ignore[method-assign]
    conn = FakeConn(server)
    conn.begin_one()
    server._reads_waiting.append((conn, ReadReq(id=8, what="get", key="x")))
    server._maybe_confirm_reads()
    assert [(r.id, r.wire_error) for r in conn.sent] == [(8, Failure.UNAVAILABLE)]
    assert server.requests_waiting == 0 and server._confirm_inflight == 0
    core.read_index = real  # type: ignore[method-assign]
    conn2, done, _prepare = _read(server, core)
    done(None, None)
    assert [_value(r) for r in conn2.sent] == [1] and server.requests_waiting == 0


def test_a_timed_out_read_is_counted_once_whatever_comes_later(
        endpoint: tuple[ClientServer, FakeCore]) -> None:
    """The budget ends first (the sweep answers UNAVAILABLE); the round's late answer then
    sends nothing and counts nothing."""
    server, core = endpoint
    core.put(1)
    conn, done, _prepare = _read(server, core)
    server._read_deadlines.sweep(float("inf"))
    done(None, None)
    assert [(r.id, r.wire_error) for r in conn.sent] == [(7, Failure.UNAVAILABLE)]
    assert conn.inflight == 0 and server.requests_waiting == 0
