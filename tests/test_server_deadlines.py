"""The client endpoint's request budgets (regressions from a cold review): an answered proposal
leaves nothing alive in the deadline heap, and a raising handler does not stop the sweep."""

from __future__ import annotations

import time

# ------------------------------------------------------------------ server (server.py)


def test_answered_proposal_leaves_nothing_but_its_id_in_the_deadline_queue() -> None:
    """The budget sweep holds each proposal's expiry for its budget (budget_s); once answered,
    that must not keep the connection (or through it the request and its value) alive."""
    import gc

    from quorumboard.consensus.replica.server import _Answer
    from quorumboard.consensus.wire.protocol import Reply

    sent: list[Reply] = []

    class Core:
        def leader_client_address(self) -> str:
            return "127.0.0.1:7001"

    class Server:
        core = Core()

    class Conn:  # what _Answer uses: the count, the send, and the leader hint for expiry
        inflight = 1
        server = Server()

        def send(self, reply: Reply) -> None:
            sent.append(reply)

        def done_one(self) -> None:
            self.inflight -= 1

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
    assert sent[-1].leader_hint == "127.0.0.1:7001"  # the client retries there, not elsewhere


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

    deadlines.sweep(time.monotonic() + 1.0)
    assert fired == ["boom", "next"]
