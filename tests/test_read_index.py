"""Linearizable reads without a log write (ReadIndex, Raft thesis §6.4), against real replica
processes over TCP on 127.0.0.1.

* Reads append nothing: the commit index stays put across linearizable reads, at the leader
  and at a follower (which asks the leader for a read index), and each read still sees the
  write acknowledged just before it.
* §6.4 safety: a leader cut off from both followers (the harness's network fault proxies),
  while the majority elects a new leader and commits a write, never answers a read through it
  with the old value: its heartbeat round gets no majority, so the read fails ``UNAVAILABLE``.
* A watch "from now" at a follower cut off from the leader is refused, not started before
  writes acknowledged meanwhile.
* With either follower paused, reads at the leader go on (the round moves to the other).
* Negative control: the same test against replicas with the ``unconfirmed-reads`` bug planted
  (the harness's replica entry point, consensus/testing/replica.py: the leader skips the
  heartbeat round) observes the stale read.
* A short chaos campaign with partitions (the leader isolated, halves, rings) and pauses, with
  readers pinned to every replica, checks as linearizable.
"""

from __future__ import annotations

import queue
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from quorumboard.consensus import LocalCluster, connect
from quorumboard.consensus.client.board import _Link
from quorumboard.consensus.testing.chaos import Scenario, run_chaos
from quorumboard.consensus.wire.protocol import Failure, ReadReq, Reply, WatchReq
from tests.conftest import leader_status

KEY = "ri/x"
READ_BUDGET_S = 0.5
ELECTION_WAIT_S = 10.0
STALE_WINDOW_S = 6.0
READS_MAX = 40
WATCH_REPLY_S = 15.0
WATCH_END_S = 30.0
WRITES_WHILE_CUT_MAX = 1_000


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    with LocalCluster(replicas=3, data_dir=tmp_path_factory.mktemp("ri"), log_level="warning",
                      network_faults=True, election_timeout_min_s=0.4,
                      election_timeout_max_s=0.7) as c:
        yield c


def test_6_4_linearizable_reads_append_nothing_and_see_the_last_write(
        cluster: LocalCluster) -> None:
    leader = cluster.wait_for_leader()
    follower = next(i for i in range(cluster.size) if i != leader)
    writer = cluster.board(agent="ri-writer")
    at_follower = connect([cluster.endpoints[follower]], agent="ri-follower",
                          secret=cluster.secret)
    try:
        for i in range(20):  # every read right after the write it must see
            writer.put(f"ri/seq/{i}", i)
            assert writer.get(f"ri/seq/{i}").value == i  # type: ignore[union-attr]
            assert at_follower.get(f"ri/seq/{i}").value == i  # type: ignore[union-attr]
        before = leader_status(cluster).commit_index
        for i in range(100):
            assert writer.get(f"ri/seq/{i % 20}") is not None
            assert at_follower.get(f"ri/seq/{i % 20}") is not None
        after = leader_status(cluster).commit_index
    finally:
        at_follower.close()
    assert after == before, "a linearizable read appended a log entry"


def test_6_4_reads_go_on_while_either_follower_is_paused(cluster: LocalCluster) -> None:
    """A round goes first to the member that answered the newest round, and to the other once
    it is 5 ms old. With that member paused (SIGSTOP: connected, silent), reads at the leader
    still see the values written before. Each follower is paused in turn, so the preferred
    one is paused at least once. (Liveness only: an AppendEntries heartbeat, every 100 ms,
    would also confirm a round, so this cannot tell widening from waiting for one; the
    choice of members is checked in tests/test_raft_rules.py.)"""
    leader = cluster.wait_for_leader()
    at_leader = connect([cluster.endpoints[leader]], agent="ri-paused", secret=cluster.secret)
    try:
        for i in range(5):
            at_leader.put(f"ri/paused/{i}", i)
        for follower in (i for i in range(cluster.size) if i != leader):
            cluster.pause(follower)
            try:
                for n in range(20):  # reads only: no append makes the other member current
                    entry = at_leader.get(f"ri/paused/{n % 5}")
                    assert entry is not None and entry.value == n % 5, (follower, n, entry)
            finally:
                cluster.resume(follower)
    finally:
        at_leader.close()


def _watch_from_now_at(cluster: LocalCluster, i: int) -> Reply:
    """The first reply to a watch "from now" opened at replica ``i``."""
    link = _Link(cluster.endpoints[i], cluster.secret, "ri-watch", timeout_s=1.0)
    try:
        return link.request(lambda rid: WatchReq(id=rid, prefix="ri/lag/"), WATCH_REPLY_S)
    finally:
        link.close()


def test_6_4_a_watch_from_now_at_a_lagging_follower_misses_no_write_and_replays_none(
        cluster: LocalCluster) -> None:
    """A watch with no start revision starts after a confirmed read index, like a linearizable
    read. A follower cut off from the leader, behind the writes acknowledged since, does not
    start it after its own old revision (which would stream those writes as new): it refuses
    (``UNAVAILABLE``, and a Board tries another replica). Healed, it starts after them."""
    assert cluster.net is not None
    leader = cluster.wait_for_leader()
    follower = next(i for i in range(cluster.size) if i != leader)
    writer = connect([cluster.endpoints[leader]], agent="ri-lag", secret=cluster.secret)
    try:
        cluster.net.isolate(follower)
        try:
            last = max(writer.put(f"ri/lag/{i}", i).revision for i in range(5))
            cut_off = _watch_from_now_at(cluster, follower)
        finally:
            cluster.net.heal()
        cluster.wait_converged()
        healed = _watch_from_now_at(cluster, follower)
    finally:
        writer.close()
    assert cut_off.wire_error is Failure.UNAVAILABLE or (
        cut_off.revision is not None and cut_off.revision >= last), \
        f"a lagging follower started a watch before the acknowledged revision {last}: {cut_off}"
    assert healed.wire_error is None and healed.revision is not None \
        and healed.revision >= last, healed


def test_a_follower_whose_links_were_reset_ends_its_watches(cluster: LocalCluster) -> None:
    """A follower whose connections to every member were reset (not just held) connects to no
    one, so it starts no election and keeps naming its old leader while the others commit
    without it. Its watches must not stall in silence: out of touch with any leader for the
    limit, it ends them (``UNAVAILABLE``), and their clients resume on another replica."""
    assert cluster.net is not None
    leader = cluster.wait_for_leader()
    follower = next(i for i in range(cluster.size) if i != leader)
    link = _Link(cluster.endpoints[follower], cluster.secret, "ri-reset", timeout_s=1.0)
    writer = connect([cluster.endpoints[leader]], agent="ri-reset-w", secret=cluster.secret)
    try:
        rid, box = link.open_box(stream=True)
        link.send(WatchReq(id=rid, prefix="ri/reset/", start_revision=1))
        opened = link.wait(box, WATCH_REPLY_S)
        assert isinstance(opened, Reply) and opened.wire_error is None, opened
        cluster.net.isolate(follower, reset=True)
        ended: Reply | None = None
        deadline = time.monotonic() + WATCH_END_S
        for n in range(WRITES_WHILE_CUT_MAX):  # the others go on committing meanwhile
            writer.put(f"ri/reset/{n}", n)
            try:
                msg = link.wait(box, 0.2)
            except queue.Empty:
                msg = None
            if isinstance(msg, Reply):
                ended = msg
                break
            if time.monotonic() > deadline:
                break
    finally:
        cluster.net.heal()
        link.close()
        writer.close()
        cluster.wait_converged()
    assert ended is not None and ended.wire_error is Failure.UNAVAILABLE, \
        f"the cut-off follower's watch stalled without a word: {ended}"


def _read_at(cluster: LocalCluster, i: int) -> Reply:
    link = _Link(cluster.endpoints[i], cluster.secret, "ri-pinned", timeout_s=1.0)
    try:
        return link.request(lambda rid: ReadReq(id=rid, what="get", key=KEY,
                                                budget_s=READ_BUDGET_S), READ_BUDGET_S + 2.0)
    finally:
        link.close()


def _reads_through_an_isolated_leader(cluster: LocalCluster) -> list[tuple[bool, Reply]]:
    """Write ``old``; isolate the leader from both followers; wait for the majority to elect a
    new leader and commit ``new``; then read through the old leader until it stops claiming
    leadership. Returns (old leader still claimed to lead, reply) per read."""
    assert cluster.net is not None
    writer = cluster.board(agent="ri-isolation")
    writer.put(KEY, "old")
    cluster.wait_converged()
    old_status = leader_status(cluster)
    old = cluster.raft_addresses.index(old_status.address)
    majority = [i for i in range(cluster.size) if i != old]
    cluster.net.isolate(old)
    try:
        deadline = time.monotonic() + ELECTION_WAIT_S
        new: int | None = None
        while new is None and time.monotonic() < deadline:
            statuses = cluster.status()
            new = next((i for i in majority if (s := statuses[i]) is not None
                        and s.role == "leader" and s.term > old_status.term), None)
            time.sleep(0.02)
        assert new is not None, "the majority elected no new leader"
        majority_writer = connect([cluster.endpoints[i] for i in majority], agent="ri-new",
                                  secret=cluster.secret, timeout_s=5.0)
        try:
            majority_writer.put(KEY, "new", expect_version=1)
        finally:
            majority_writer.close()
        reads: list[tuple[bool, Reply]] = []
        stop = time.monotonic() + STALE_WINDOW_S
        for _ in range(READS_MAX):
            status = cluster.status()[old]
            claims = status is not None and status.role == "leader"
            reads.append((claims, _read_at(cluster, old)))
            if not claims or time.monotonic() > stop:
                break
        return reads
    finally:
        cluster.net.heal()
        cluster.wait_converged()


def test_6_4_an_isolated_leader_never_serves_the_old_value(cluster: LocalCluster) -> None:
    """Raft thesis §6.4: the old leader still believes it leads (it steps down only after
    ``leader_fallback_timeout_s``), but its heartbeat round reaches no majority, so no read
    through it is answered: ``UNAVAILABLE`` within the read's budget, never ``old``."""
    reads = _reads_through_an_isolated_leader(cluster)
    assert any(claims for claims, _ in reads), \
        f"no read reached the old leader while it still claimed to lead: {reads}"
    values = [r.entry.value for _, r in reads if r.entry is not None]
    assert "old" not in values, f"stale read through an isolated leader: {reads}"
    assert all(r.wire_error in (Failure.UNAVAILABLE, Failure.NOT_LEADER) or
               (r.entry is not None and r.entry.value == "new") for _, r in reads), reads


def test_6_4_negative_control_skipping_the_heartbeat_round_serves_a_stale_read(
        tmp_path: Path) -> None:
    """The same test, with the ``unconfirmed-reads`` bug planted by the harness (a leader takes
    its commit index as the read index without the round): the isolated leader answers
    ``old`` after ``new`` was acknowledged."""
    with LocalCluster(replicas=3, data_dir=tmp_path / "bb", log_level="warning",
                      network_faults=True, election_timeout_min_s=0.4,
                      election_timeout_max_s=0.7, planted_bug="unconfirmed-reads") as planted:
        reads = _reads_through_an_isolated_leader(planted)
    stale = [r for claims, r in reads if claims and r.entry is not None and r.entry.value == "old"]
    assert stale, f"the planted bug went unnoticed: {reads}"


def test_6_4_chaos_with_partitions_and_pauses_is_linearizable(tmp_path: Path) -> None:
    """Readers pinned to every replica (leader and follower reads) under isolated leaders,
    halves, rings and paused leaders or followers; the linearizability checker passes."""
    scenario = Scenario(replicas=3, workload="cas-register", clients=6, rate=200.0,
                        duration_s=14.0, keys=2, nemesis=["partition", "pause"], interval_s=0.5,
                        fault_s=1.5, seed=64, client_timeout_s=2.0, check_time_limit_s=20.0)
    report = run_chaos(scenario, tmp_path / "run")
    assert report.faults_injected >= 3, report.explanation
    assert report.verdict == "valid" and report.linearizable == "ok", report.explanation
