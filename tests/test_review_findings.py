"""Regression tests from a cold review: each once proved a place where the code broke a guarantee
the README states (or a resource bound it implies) and now guards the fix. A broken precondition
is reported as ``_Precondition`` (a RuntimeError), never mistaken for the property failing.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator

import pytest

from quorumboard.consensus import LocalCluster, OutcomeUnknown, RevisionCompacted, Unavailable
from quorumboard.consensus.core.model import ClaimCmd, Event, Proposal, PutCmd, SetPolicyCmd
from quorumboard.consensus.core.policies import PolicyRegistry
from quorumboard.consensus.core.state import BoardState, Limits, apply

BUILTINS = PolicyRegistry()
"""The built-in policies only: ``apply`` takes its registry as an argument."""



class _Precondition(RuntimeError):
    """The scenario did not set up as intended (not the bug under test)."""


def _require(condition: object, what: str) -> None:
    if not condition:
        raise _Precondition(what)


def _poll(predicate: Callable[[], object], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise _Precondition(f"timed out waiting for {what}")


# ---------------------------------------------------------------- exactly-once (client.py)


def test_retry_after_outcome_unknown_applies_once() -> None:
    # Long election timeouts so a short follower pause causes no election; the pause stays
    # well under the leader's 2 s fallback, so the leader keeps the uncommitted entry.
    with LocalCluster(replicas=3, election_timeout_min_s=2.0,
                      election_timeout_max_s=3.0) as c:
        admin = c.board(agent="admin")
        admin.set_policy("ctr/", "merge", kind="counter")
        board = c.board(agent="agent")
        board.put("ctr/warm", 1)  # session open, link to the leader
        c.wait_converged()
        leader = c.wait_for_leader()
        followers = [i for i in range(3) if i != leader]
        _require(board._link is not None and board._link.address == c.endpoints[leader],
                 "the board is connected to the leader")
        board.timeout_s = 0.6
        for i in followers:
            c.pause(i)
        try:
            try:
                entry = board.put("ctr/n", 1)
                raise _Precondition(f"the put committed with both followers paused: {entry}")
            except OutcomeUnknown:
                pass
        finally:
            for i in followers:
                c.resume(i)
        board.timeout_s = 15.0
        # The original proposal was in the leader's log: it commits once followers are back.
        _poll(lambda: (e := admin.get("ctr/n")) is not None and e.value == 1, 15.0,
              "the uncertain increment to commit")
        # "Retrying it through the same Board is still exactly-once."
        board.put("ctr/n", 1)
        final = admin.get("ctr/n")
        assert final is not None and final.value == 1, (
            f"the retried increment applied twice: counter is {final.value if final else None}")


# ---------------------------------------------------------------------- watch (client.py)


def test_quiet_watch_resumes_after_failover_without_spurious_compaction() -> None:
    with LocalCluster(replicas=3, limits=Limits(events_retained_max=5)) as c:
        writer = c.board(agent="writer")
        watcher = c.board(agent="watcher")  # no link yet: its watch connects to endpoints[0]
        first = writer.put("a/first", 1)
        it: Iterator[Event] = watcher.watch("a/", start_revision=first.revision, idle_timeout_s=30)
        ev = next(it)
        _require(ev.key == "a/first", "watch delivered the first event")
        for i in range(20):  # traffic elsewhere compacts the event log
            head = writer.put(f"b/{i}", i).revision
        def caught_up() -> bool:
            return all((s := c._status_of(i)) is not None and s.revision >= head
                       for i in (1, 2))

        _poll(caught_up, 15.0, f"replicas 1 and 2 to apply revision {head}")
        c.kill(0)  # the replica serving the watch
        writer.put("a/second", 2)
        try:
            nxt = next(it)
        except RevisionCompacted as exc:
            raise AssertionError(
                f"watch on a/ resumed from revision {first.revision + 1} and was told it was "
                f"compacted (oldest {exc.compact_revision}), though no a/ event was missed"
            ) from exc
        assert nxt.key == "a/second"


# ------------------------------------------------------------- frame bound on replies


_BIG = "x" * 1_000_000  # one value near the 1 MiB bound
_BIG_KEYS = 70  # 70 MB > REPLY_FRAME_BYTES_MAX (64 MiB)


@pytest.fixture(scope="module")
def big_board() -> Iterator[LocalCluster]:
    with LocalCluster(replicas=3) as c:
        writers = [c.board(agent=f"w{t}") for t in range(4)]

        def fill(t: int) -> None:
            for i in range(t, _BIG_KEYS, len(writers)):
                writers[t].put(f"big/{i:03d}", _BIG)

        threads = [threading.Thread(target=fill, args=(t,)) for t in range(len(writers))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        yield c


def test_list_of_legal_values_larger_than_a_reply_frame(big_board: LocalCluster) -> None:
    board = big_board.board(agent="lister", timeout_s=5.0)
    _require(board.get(f"big/{_BIG_KEYS - 1:03d}") is not None, "all big values written")
    try:
        entries = board.list("big/")
    except Unavailable as exc:
        raise AssertionError(f"list of {_BIG_KEYS} legal values never answered: {exc}") from exc
    assert len(entries) == _BIG_KEYS


def test_watch_over_values_larger_than_a_reply_frame(big_board: LocalCluster) -> None:
    watcher = big_board.board(agent="big-watcher")
    got: list[str] = []
    failure: list[BaseException] = []

    def consume() -> None:
        try:
            for ev in watcher.watch("big/", start_revision=0, idle_timeout_s=20):
                got.append(ev.key)
                return
        except BaseException as exc:  # reported below
            failure.append(exc)

    t = threading.Thread(target=consume, daemon=True)
    t.start()
    t.join(6)
    assert got, f"the watch delivered nothing in 6 s (error: {failure!r})"
    watcher.close()  # ends the reconnect loop if it is still running
    t.join(30)


# --------------------------------------------------------- client connection leak


def test_not_leader_without_hint_does_not_leak_connections() -> None:
    with LocalCluster(replicas=3) as c:
        board = c.board(agent="leaky", timeout_s=3.0)
        board.put("leak/warm", 1)
        survivor = c.wait_for_leader()
        for i in range(3):
            if i != survivor:
                c.kill(i)
        _poll(lambda: (s := c._status_of(survivor)) is not None and s.leader is None, 15.0,
              "the lone survivor to know no leader")
        try:
            board.put("leak/x", 1)
            raise _Precondition("a write committed without a quorum")
        except Unavailable:
            pass
        name = f"board-link-{c.endpoints[survivor]}"
        live = [t for t in threading.enumerate() if t.name == name and t.is_alive()]
        assert len(live) <= 1, f"{len(live)} open connections to one replica after one call"


# ------------------------------------------------------------- pure state machine


def _p(cmd: object, agent: str = "a") -> Proposal:
    return Proposal.model_validate({"agent": agent, "command": cmd})


def test_claim_respects_keys_max() -> None:
    s = BoardState(Limits(keys_max=2))
    for key in ("k/1", "k/2"):
        applied = apply(s, _p(PutCmd(key=key, value=1)), BUILTINS)
        _require(applied.result.error is None, "fill to quota")
    refused = apply(s, _p(PutCmd(key="k/3", value=1)), BUILTINS).result.error
    _require(refused is not None and refused.reason == "quota", "put is refused at the quota")
    for i in range(5):
        apply(s, _p(ClaimCmd(key=f"task/{i}", ttl=60)), BUILTINS)
    assert len(s.kv) <= s.limits.keys_max, f"{len(s.kv)} keys with keys_max=2"


def test_counter_merge_is_order_independent() -> None:
    def run(deltas: list[float]) -> object:
        s = BoardState()
        apply(s, _p(SetPolicyCmd(prefix="c/", name="merge", params={"kind": "counter"})),
              BUILTINS)
        for d in deltas:
            err = apply(s, _p(PutCmd(key="c/x", value=d)), BUILTINS).result.error
            _require(err is None, f"delta {d} accepted")
        entry = s.entry("c/x")
        return entry.value if entry else None

    # The README's law is exact for integer deltas (the CRDT case) ...
    forward, backward = run([1, 20, 300]), run([300, 20, 1])
    assert forward == backward == 321, f"same deltas, different order: {forward!r} != {backward!r}"
    # ... and says float deltas are order-dependent up to rounding: both hold here.
    f, b = run([0.1, 0.2, 0.3]), run([0.3, 0.2, 0.1])
    assert isinstance(f, float) and isinstance(b, float) and abs(f - b) < 1e-12


# ------------------------------------------------------------------ server (server.py)


def test_answered_proposal_leaves_nothing_but_its_id_in_the_deadline_queue() -> None:
    """The budget sweep holds each proposal's expiry for its budget (budget_s); once answered,
    that must not keep the connection (or through it the request and its value) alive."""
    import gc

    from quorumboard.consensus.replica.server import _Answer
    from quorumboard.consensus.wire.protocol import Reply

    sent: list[Reply] = []

    class Conn:  # the two members _Answer uses
        inflight = 1

        def send(self, reply: Reply) -> None:
            sent.append(reply)

    conn = Conn()
    answer = _Answer(conn, 7)  # type: ignore[arg-type]
    answer.finish(Reply(id=7))
    answer.expire()  # the sweep, later: no second reply
    answer.finish(Reply(id=7, wire_error="unavailable"))
    assert [r.id for r in sent] == [7] and sent[0].wire_error is None and conn.inflight == 0
    assert conn not in gc.get_referents(answer) and answer.conn is None

    late = _Answer(Conn(), 8)  # type: ignore[arg-type]
    late.expire()
    assert sent[-1].id == 8 and sent[-1].wire_error == "outcome_unknown"


def test_deadline_sweep_survives_a_raising_handler() -> None:
    from quorumboard.consensus.replica.server import _Deadlines

    fired: list[str] = []
    deadlines = _Deadlines()

    def boom() -> None:
        fired.append("boom")
        raise RuntimeError("handler bug")

    deadlines.add(0.0, boom)
    deadlines.add(0.0, lambda: fired.append("next"))
    deadlines.add(3600.0, lambda: fired.append("not due"))
    import time

    deadlines.sweep(time.monotonic() + 1.0)
    assert fired == ["boom", "next"]
