"""The public reads of who holds what: ``Board.claims``, ``Board.policies`` and
``Board.leases`` (with the time left as the leader counts it), and their CLI commands, against
a real cluster."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from quorumboard.consensus import (
    InvalidCommand,
    LeaseStatus,
    LocalCluster,
    PolicyBinding,
    connect,
)
from quorumboard.consensus.cli import main
from tests.conftest import wait_until


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    with LocalCluster(replicas=3, data_dir=tmp_path_factory.mktemp("reads"),
                      log_level="warning") as c:
        yield c


def test_claims_list_owner_fence_and_lease(cluster: LocalCluster) -> None:
    alice, bob = cluster.board(agent="alice"), cluster.board(agent="bob")
    a = alice.claim("work/a", ttl=30.0)
    b = bob.claim("work/b", ttl=30.0, value={"task": 2})
    alice.claim("other/c", ttl=30.0)
    assert alice.claims("work/") == [a, b]  # key order; owner, fence and lease as claimed
    assert [c.owner for c in bob.claims("")] == ["alice", "alice", "bob"]
    assert bob.claims("work/", limit=1) == [a]
    assert alice.claims("work/b", stale=True) == [b]
    bob.release(b)
    assert alice.claims("work/") == [a]
    with pytest.raises(InvalidCommand, match="claims"):
        alice.claims("work/", limit=0)


def test_policies_list_every_binding(cluster: LocalCluster) -> None:
    board = cluster.board(agent="admin")
    board.set_policy("count/", "merge", kind="counter")
    board.set_policy("notes/", "last-writer-wins")
    bindings = board.policies()
    assert PolicyBinding(prefix="count/", name="merge", params={"kind": "counter"}) in bindings
    assert PolicyBinding(prefix="notes/", name="last-writer-wins") in bindings
    assert [b.prefix for b in bindings] == sorted(b.prefix for b in bindings)


def test_leases_count_down_on_the_leaders_clock(cluster: LocalCluster) -> None:
    board = cluster.board(agent="leaser")
    lease = board.grant(30.0)
    board.put("leased/k", 1, lease=lease)
    claim = board.claim("leased/claimed", ttl=30.0)

    def mine() -> dict[int, LeaseStatus]:
        return {s.id: s for s in board.leases() if s.owner == "leaser"}

    now = mine()
    assert set(now) == {lease.id, claim.lease}
    assert now[lease.id].keys == ["leased/k"] and now[lease.id].ttl == 30.0
    assert now[claim.lease].claims == ["leased/claimed"]
    # The leader's countdown starts at its next lease tick, and then moves.
    left = wait_until(lambda: (s := mine()[lease.id]).time_left_s is not None
                      and s.time_left_s < 30.0 and s.time_left_s, what="the countdown moving")
    assert 0 < left < 30.0
    board.keepalive(lease)
    assert mine()[lease.id].refreshes == 1
    # A follower asked directly: a stale read knows no countdown; a linearizable one is sent
    # on to the leader (the one failure vocabulary's not_leader hint) and gets it.
    leader = cluster.wait_for_leader()
    follower = cluster.endpoints[(leader + 1) % cluster.size]
    with connect([follower], agent="asker") as asker:
        assert all(s.time_left_s is None for s in asker.leases(stale=True))
        assert all(s.time_left_s is not None for s in asker.leases())
    board.revoke(lease)
    assert lease.id not in mine()


def _qb(cluster: LocalCluster, capsys: pytest.CaptureFixture[str], *args: str) -> str:
    """The command's output (in this process: the parsing and printing are what is tested)."""
    capsys.readouterr()
    code = main([*args[:1], "--endpoints", ",".join(cluster.endpoints), "--timeout", "10",
                 *args[1:]])
    out = capsys.readouterr()
    assert code == 0, out.err
    return out.out


def test_cli_claims_leases_policies(cluster: LocalCluster,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    board = cluster.board(agent="carol")
    claim = board.claim("cli/task", ttl=60.0)
    board.set_policy("cli/counts/", "merge", kind="counter")
    claims = _qb(cluster, capsys, "claims", "cli/", "--json")
    assert json.loads(claims) == [claim.model_dump(mode="json")]
    human = _qb(cluster, capsys, "claims", "cli/")
    assert f"cli/task  owner carol, fence {claim.fence}" in human, human
    leases = json.loads(_qb(cluster, capsys, "leases", "--json"))
    mine = [s for s in leases if s["id"] == claim.lease]
    assert mine and mine[0]["claims"] == ["cli/task"] and mine[0]["time_left_s"] > 0
    assert f"lease {claim.lease}  owner carol" in _qb(cluster, capsys, "leases")
    policies = json.loads(_qb(cluster, capsys, "policies", "--json"))
    assert {"prefix": "cli/counts/", "name": "merge", "params": {"kind": "counter"}} in policies
    assert 'cli/counts/ -> merge {"kind": "counter"}' in _qb(cluster, capsys, "policies")


def _spins(cluster: LocalCluster) -> int:
    return sum(s.poll_spins for s in cluster.status() if s is not None)


def test_a_lone_clients_reads_make_its_replica_poll(cluster: LocalCluster) -> None:
    """One client reading request after request is what the replica loop polls for
    (consensus/replica/polling.py); the counters say it did."""
    board = cluster.board(agent="lone-reader")
    board.put("lone/k", 1)
    before = _spins(cluster)

    def polled() -> bool:
        for _ in range(50):
            board.get("lone/k")
        return _spins(cluster) > before

    try:
        wait_until(polled, timeout_s=30.0, what="a replica to poll for a lone client")
    finally:
        board.close()


@pytest.mark.parametrize("embedded", [False, True], ids=["poll_spin_us=0", "embedded"])
def test_replicas_told_not_to_poll_never_do(tmp_path_factory: pytest.TempPathFactory,
                                            embedded: bool) -> None:
    """The twin of the test above: ``poll_spin_us=0``, and embedded replicas (which share
    their host's process and GIL) by default."""
    with LocalCluster(replicas=1, data_dir=tmp_path_factory.mktemp("nopoll"),
                      log_level="warning", embedded=embedded,
                      poll_spin_us=None if embedded else 0) as c:
        board = c.board(agent="lone-reader")
        board.put("lone/k", 1)
        for _ in range(300):
            board.get("lone/k")
        assert _spins(c) == 0
        board.close()
