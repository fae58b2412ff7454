"""The client after faults (regressions from a cold review, each guarding a README promise):
a retry after an unknown outcome applies once, a quiet watch resumes after failover without a
spurious compaction error, and a leader hint that never comes leaks no connection."""

from __future__ import annotations

import threading
from collections.abc import Iterator

from quorumboard.consensus import LocalCluster, OutcomeUnknown, RevisionCompacted, Unavailable
from quorumboard.consensus.core.model import Event
from quorumboard.consensus.core.state import Limits
from tests.review_helpers import Precondition, poll, require

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
        require(board._link is not None and board._link.address == c.endpoints[leader],
                 "the board is connected to the leader")
        board.timeout_s = 0.6
        for i in followers:
            c.pause(i)
        try:
            try:
                entry = board.put("ctr/n", 1)
                raise Precondition(f"the put committed with both followers paused: {entry}")
            except OutcomeUnknown:
                pass
        finally:
            for i in followers:
                c.resume(i)
        board.timeout_s = 15.0
        # The original proposal was in the leader's log: it commits once followers are back.
        poll(lambda: (e := admin.get("ctr/n")) is not None and e.value == 1, 15.0,
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
        watcher = c.board(agent="watcher")
        served_by = c.endpoints.index(watcher.watch_address)  # the replica its watches go to
        others = [i for i in range(3) if i != served_by]
        first = writer.put("a/first", 1)
        it: Iterator[Event] = watcher.watch("a/", start_revision=first.revision, idle_timeout_s=30)
        ev = next(it)
        require(ev.key == "a/first", "watch delivered the first event")
        for i in range(20):  # traffic elsewhere compacts the event log
            head = writer.put(f"b/{i}", i).revision
        def caught_up() -> bool:
            return all((s := c._status_of(i)) is not None and s.revision >= head
                       for i in others)

        poll(caught_up, 15.0, f"replicas {others} to apply revision {head}")
        c.kill(served_by)  # the replica serving the watch
        writer.put("a/second", 2)
        try:
            nxt = next(it)
        except RevisionCompacted as exc:
            raise AssertionError(
                f"watch on a/ resumed from revision {first.revision + 1} and was told it was "
                f"compacted (oldest {exc.compact_revision}), though no a/ event was missed"
            ) from exc
        assert nxt.key == "a/second"


# --------------------------------------------------------- client connection leak


def test_not_leader_without_hint_does_not_leak_connections() -> None:
    with LocalCluster(replicas=3) as c:
        board = c.board(agent="leaky", timeout_s=3.0)
        board.put("leak/warm", 1)
        survivor = c.wait_for_leader()
        for i in range(3):
            if i != survivor:
                c.kill(i)
        poll(lambda: (s := c._status_of(survivor)) is not None and s.leader is None, 15.0,
              "the lone survivor to know no leader")
        try:
            board.put("leak/x", 1)
            raise Precondition("a write committed without a quorum")
        except Unavailable:
            pass
        name = f"board-link-{c.endpoints[survivor]}"
        live = [t for t in threading.enumerate() if t.name == name and t.is_alive()]
        assert len(live) <= 1, f"{len(live)} open connections to one replica after one call"


