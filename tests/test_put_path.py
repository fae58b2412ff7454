"""One put path: one failure vocabulary from the Raft layer to the client's exceptions, and one
time budget, sent with the request in relative seconds, that the replica answers within."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from quorumboard.consensus import (
    InvalidCommand,
    LocalCluster,
    OutcomeUnknown,
    RevisionCompacted,
    WatchCancelled,
)
from quorumboard.consensus.client.board import _RETRY_ELSEWHERE, _final_error, _Link
from quorumboard.consensus.core.model import Proposal, PutCmd
from quorumboard.consensus.raft.node import ProposeFailure
from quorumboard.consensus.wire.protocol import Failure, ProposeReq, Reply


def test_every_raft_failure_maps_to_one_wire_failure() -> None:
    """Raft §8 (client interaction): a failure that may have committed must reach the client
    as OUTCOME_UNKNOWN (retry only with the same session and seq), never as a plain
    UNAVAILABLE that invites a fresh retry."""
    for reason in ProposeFailure:
        expected = Failure.OUTCOME_UNKNOWN if reason.may_have_committed else Failure.UNAVAILABLE
        assert reason.outcome is expected, reason


def test_the_client_maps_every_wire_failure() -> None:
    """Every member of the vocabulary is either retried elsewhere or raised as one exception."""
    final = set(Failure) - _RETRY_ELSEWHERE
    assert final == {Failure.INVALID, Failure.COMPACTED, Failure.SLOW_WATCHER}
    assert isinstance(_final_error(Reply(id=1, wire_error=Failure.INVALID, message="m"),
                                   uncertain=False), InvalidCommand)
    uncertain = _final_error(Reply(id=1, wire_error=Failure.INVALID, message="m"),
                             uncertain=True)
    assert isinstance(uncertain, OutcomeUnknown)
    assert isinstance(uncertain.__cause__, InvalidCommand)
    compacted = _final_error(Reply(id=1, wire_error=Failure.COMPACTED, compact_revision=9,
                                   message="m"), uncertain=False)
    assert isinstance(compacted, RevisionCompacted) and compacted.compact_revision == 9
    slow = _final_error(Reply(id=1, wire_error=Failure.SLOW_WATCHER, resume_revision=7,
                              message="m"), uncertain=False)
    assert isinstance(slow, WatchCancelled) and slow.resume_revision == 7


@pytest.fixture
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    with LocalCluster(replicas=3, data_dir=tmp_path_factory.mktemp("budget"),
                      log_level="warning") as c:
        yield c


def _propose_to_a_stalled_leader(cluster: LocalCluster, wait_s: float) -> Reply:
    """Pause the followers (nothing can commit) and propose to the leader at once, before it
    notices it lost its majority (2 s) and steps down; retried if it stepped down first."""
    reply = Reply(id=0)
    for _ in range(3):  # bounded: a slow machine may let the leader step down first
        leader = cluster.wait_for_leader()
        link = _Link(cluster.endpoints[leader], None, "agent:budget")
        followers = [i for i in range(3) if i != leader]
        for i in followers:
            cluster.pause(i)
        try:
            reply = link.request(lambda rid: ProposeReq(id=rid, proposal=Proposal(
                agent="budget", command=PutCmd(key="b/x", value=1))), timeout_s=wait_s)
        finally:
            link.close()
            for i in followers:
                cluster.resume(i)
        if reply.wire_error is not Failure.NOT_LEADER:
            break
    return reply


def test_the_replica_answers_within_the_requests_budget(cluster: LocalCluster) -> None:
    """The client waits 1 s; the request carries that (less the reply's margin) as its budget,
    and the stalled leader answers OUTCOME_UNKNOWN within it, before it would step down (2 s).
    Under the old fixed server timeout (5 s) the client heard nothing before giving up."""
    reply = _propose_to_a_stalled_leader(cluster, wait_s=1.0)
    assert reply.wire_error is Failure.OUTCOME_UNKNOWN, reply
    assert "budget" in reply.message
