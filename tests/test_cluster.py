"""Real replicas, real TCP on 127.0.0.1, separate OS processes: the blackboard under faults."""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import wait_until

from quorumboard.consensus import (
    ClaimHeld,
    Conflict,
    FencedOut,
    InvalidKey,
    InvalidValue,
    LocalCluster,
    NotFound,
    PolicyRejected,
    StaleVersion,
    UnknownPolicy,
    connect,
)
from quorumboard.consensus.core.model import Event


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalCluster]:
    with LocalCluster(replicas=3) as c:
        yield c


@pytest.fixture
def fresh(tmp_path: Path) -> Iterator[LocalCluster]:
    with LocalCluster(replicas=3, data_dir=tmp_path / "bb") as c:
        yield c


def test_public_contract_example(cluster: LocalCluster) -> None:
    """The README's API tour, verbatim in behaviour."""
    board = cluster.board(agent="planner")
    e = board.put("plan/step-1", {"text": "draft intro"})
    assert (e.version, e.author) == (1, "planner") and e.revision >= 1
    board.put("plan/step-1", {"text": "v2"}, expect_version=1)
    with pytest.raises(Conflict) as info:
        board.put("plan/step-1", {"text": "stale"}, expect_version=1)
    assert info.value.current is not None and info.value.current.version == 2
    assert board.get("plan/step-1").value == {"text": "v2"}  # type: ignore[union-attr]
    claim = board.claim("tasks/t1", ttl=10.0)
    out = board.put("out/t1", {"ok": True}, fence=claim)
    assert out.version == 1
    events = list(board.watch("plan/", start_revision=0, idle_timeout_s=3.0))
    assert [(ev.kind, ev.entry.version) for ev in events] == [("put", 1), ("put", 2)]


def test_leader_loss_keeps_committing(fresh: LocalCluster) -> None:
    """Raft §5.2 (leader election): the cluster commits again after its leader is SIGKILLed,
    and the old leader rejoins with the same state (§5.3)."""
    board = fresh.board(agent="a")
    for i in range(20):
        board.put(f"k/{i}", i)
    old = fresh.wait_for_leader()
    fresh.kill(old)
    new = fresh.wait_for_leader()
    assert new != old
    for i in range(20, 40):
        board.put(f"k/{i}", i)
    assert [e.value for e in board.list("k/")] == sorted(range(40), key=lambda i: f"k/{i}")
    fresh.restart(old)
    digest = fresh.wait_converged()
    assert fresh.digests() == [digest] * 3


def test_restarted_follower_catches_up(fresh: LocalCluster) -> None:
    """Raft §5.3 (log replication): a follower killed while the log grows catches up."""
    leader = fresh.wait_for_leader()
    follower = (leader + 1) % 3
    fresh.kill(follower)
    board = fresh.board(agent="a")
    for i in range(150):
        board.put(f"c/{i}", {"i": i})
    fresh.restart(follower)
    fresh.wait_converged()
    assert len(set(fresh.digests())) == 1


def test_full_stop_and_start_loses_no_committed_entry(tmp_path: Path) -> None:
    """Raft Figure 2 (persistent state): SIGKILL every replica at once; a cluster started from the
    same data dir has every acknowledged write, at the same version."""
    data = tmp_path / "bb"
    acked: dict[str, int] = {}
    with LocalCluster(replicas=3, data_dir=data) as c:
        board = c.board(agent="a")
        for i in range(120):
            e = board.put(f"d/{i}", {"i": i})
            acked[e.key] = e.version
        e = board.put("d/0", {"i": "again"}, expect_version=1)
        acked[e.key] = e.version
        for i in range(3):
            c.kill(i)
    with LocalCluster(replicas=3, data_dir=data) as c:
        board = c.board(agent="b")
        got = {e.key: e.version for e in board.list("d/")}
        assert got == acked
        assert board.get("d/0").value == {"i": "again"}  # type: ignore[union-attr]
        c.wait_converged()


def test_concurrent_cas_increments_lose_no_update(cluster: LocalCluster) -> None:
    """Several agents read-then-compare-and-set one counter: every acknowledged increment is
    in the final value, none twice."""
    board = cluster.board(agent="setup")
    board.put("cnt/x", 0)
    done: list[int] = []
    lock = threading.Lock()

    def agent(name: str) -> None:
        b = cluster.board(agent=name)
        mine = 0
        for _ in range(15):
            for _attempt in range(200):
                cur = b.get("cnt/x")
                assert cur is not None
                try:
                    b.put("cnt/x", cur.value + 1, expect_version=cur.version)
                    mine += 1
                    break
                except StaleVersion:
                    continue
        with lock:
            done.append(mine)

    threads = [threading.Thread(target=agent, args=(f"w{i}",)) for i in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert len(done) == 5
    final = board.get("cnt/x")
    assert final is not None and final.value == sum(done) == 75
    assert final.version == 76


class _DroppingProxy:
    """Loopback TCP proxy that, once armed, swallows the next replica->client frame and cuts
    the connection: the request was applied but the client never hears the reply."""

    def __init__(self, target: str) -> None:
        host, _, port = target.rpartition(":")
        self.target = (host, int(port))
        self.server = socket.create_server(("127.0.0.1", 0))
        self.address = f"127.0.0.1:{self.server.getsockname()[1]}"
        self.armed = threading.Event()
        self.dropped = threading.Event()
        self.stop = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        self.server.settimeout(0.2)
        while not self.stop.is_set():
            try:
                client, _ = self.server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            upstream = socket.create_connection(self.target)
            threading.Thread(target=self._pipe, args=(client, upstream, False), daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, client, True), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket, replies: bool) -> None:
        buf = b""
        frames = 0
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                if not replies:
                    dst.sendall(data)
                    continue
                buf += data
                while len(buf) >= 4:
                    (n,) = struct.unpack(">I", buf[:4])
                    if len(buf) < 4 + n:
                        break
                    frame, buf = buf[: 4 + n], buf[4 + n :]
                    frames += 1
                    if frames > 2 and self.armed.is_set() and not self.dropped.is_set():
                        self.dropped.set()
                        raise ConnectionAbortedError("dropping this reply")
                    dst.sendall(frame)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.close()

    def close(self) -> None:
        self.stop.set()
        self.server.close()


def test_retry_after_dropped_reply_does_not_double_apply(cluster: LocalCluster) -> None:
    """The reply to an applied counter increment is lost; the client's retry (same session and
    seq) returns the original result and the counter moves once."""
    leader = cluster.wait_for_leader()
    proxy = _DroppingProxy(cluster.endpoints[leader])
    try:
        admin = cluster.board(agent="admin")
        admin.set_policy("ctr/", "merge", kind="counter")
        board = connect([proxy.address], agent="retrier", timeout_s=20)
        board.put("ctr/warm", 1)  # opens the session before the fault is armed
        proxy.armed.set()
        first = board.put("ctr/n", 5)
        assert proxy.dropped.is_set(), "the fault was not injected"
        assert first.value == 5 and first.version == 1
        assert admin.get("ctr/n").value == 5  # type: ignore[union-attr]
        hist = admin.history("ctr/n")
        assert [h.outcome for h in hist] == ["put"]
        board.close()
    finally:
        proxy.close()


def test_claim_fencing_after_expiry(cluster: LocalCluster) -> None:
    """A stalled owner's claim expires (decided through the log); the new owner gets a higher
    fence; the stalled owner's late write is refused, the new owner's accepted."""
    a, b = cluster.board(agent="slow"), cluster.board(agent="fast")
    claim = a.claim("tasks/stall", ttl=2.0)
    with pytest.raises(ClaimHeld) as held:
        b.claim("tasks/stall", ttl=5)
    assert held.value.current is not None
    a.put("out/stall", {"by": "slow"}, fence=claim)
    wait_until(lambda: a.get("tasks/stall") is None, what="claim expiry")
    takeover = b.claim("tasks/stall", ttl=5)
    assert takeover.fence > claim.fence and takeover.owner == "fast"
    with pytest.raises(FencedOut):
        a.put("out/stall", {"by": "slow again"}, expect_version=1, fence=claim)
    b.put("out/stall", {"by": "fast"}, expect_version=1, fence=takeover)
    assert a.get("out/stall").value == {"by": "fast"}  # type: ignore[union-attr]


def test_lease_expiry_deletes_keys_with_events(cluster: LocalCluster) -> None:
    board = cluster.board(agent="leaser")
    start = board.status().revision + 1
    lease = board.grant(2.0)
    board.put("leased/a", 1, lease=lease)
    board.put("leased/b", 2, lease=lease)
    wait_until(lambda: not board.list("leased/"), what="lease expiry")
    events = list(board.watch("leased/", start_revision=start, idle_timeout_s=3.0))
    deletes = [ev for ev in events if ev.kind == "delete"]
    assert {ev.key for ev in deletes} == {"leased/a", "leased/b"}
    assert {ev.cause for ev in deletes} == {"lease-expired"}
    assert len({ev.revision for ev in deletes}) == 1, "one expiry is one atomic revision"
    with pytest.raises(NotFound):
        board.keepalive(lease)


def test_keepalive_holds_a_lease(cluster: LocalCluster) -> None:
    board = cluster.board(agent="keeper")
    lease = board.grant(1.5)
    board.put("kept/x", 1, lease=lease)
    # Kept alive for twice its TTL: without the keepalives the key would be gone.
    for _ in range(12):
        board.keepalive(lease)
        threading.Event().wait(0.25)  # the agent's work between keepalives (not a sync wait)
        assert board.get("kept/x") is not None
    board.revoke(lease)
    assert board.get("kept/x") is None


def test_watch_is_ordered_gap_free_and_resumes_across_failover(fresh: LocalCluster) -> None:
    board = fresh.board(agent="w")
    board.put("w/0", 0)
    seen: list[Event] = []
    watcher = fresh.board(agent="watcher")

    def consume() -> None:
        for ev in watcher.watch("w/", start_revision=1, idle_timeout_s=8):
            seen.append(ev)
            if len(seen) >= 60:
                return

    t = threading.Thread(target=consume)
    t.start()
    written = [1]
    for i in range(1, 30):
        written.append(board.put(f"w/{i}", i).revision)
    fresh.kill(fresh.wait_for_leader())
    for i in range(30, 60):
        written.append(board.put(f"w/{i}", i).revision)
    t.join(60)
    assert [ev.revision for ev in seen] == written
    assert [ev.key for ev in seen] == [f"w/{i}" for i in range(60)]


def test_watch_reports_compaction_explicitly(tmp_path: Path) -> None:
    from quorumboard.consensus import Limits, RevisionCompacted

    with LocalCluster(replicas=1, data_dir=tmp_path / "c",
                      limits=Limits(events_retained_max=5)) as c:
        board = c.board(agent="a")
        for i in range(12):
            board.put(f"x/{i}", i)
        with pytest.raises(RevisionCompacted) as info:
            next(iter(board.watch("x/", start_revision=1, idle_timeout_s=2)))
        assert info.value.compact_revision > 1
        resumed = list(board.watch("x/", start_revision=info.value.compact_revision,
                                   idle_timeout_s=3.0))
        assert resumed and resumed[-1].revision == 12


def test_linearizable_read_after_failover(fresh: LocalCluster) -> None:
    """Raft §8 (client interaction): a read after a write that committed on the new leader
    sees it, even though the old leader died a moment ago."""
    board = fresh.board(agent="r")
    board.put("lin/x", 1)
    fresh.kill(fresh.wait_for_leader())
    e = board.put("lin/x", 2, expect_version=1)
    reader = fresh.board(agent="reader")
    assert reader.get("lin/x").version == e.version  # type: ignore[union-attr]


def test_policies_over_the_wire(cluster: LocalCluster) -> None:
    admin = cluster.board(agent="lead")
    worker = cluster.board(agent="worker")
    admin.set_policy("p/lww/", "last-writer-wins")
    worker.put("p/lww/a", 1)
    admin.put("p/lww/a", 2)
    assert worker.get("p/lww/a").value == 2  # type: ignore[union-attr]
    admin.set_policy("p/rank/", "priority", ranks={"lead": 10, "worker": 1})
    admin.put("p/rank/plan", "lead's plan")
    with pytest.raises(PolicyRejected) as info:
        worker.put("p/rank/plan", "worker's plan")
    assert info.value.policy == "priority" and info.value.reason == "lower-rank"
    assert info.value.current is not None and info.value.current.author == "lead"
    admin.set_policy("p/set/", "merge", kind="set")
    worker.put("p/set/tags", ["b", "a"])
    admin.put("p/set/tags", ["a", "c"])
    assert admin.get("p/set/tags").value == ["a", "b", "c"]  # type: ignore[union-attr]
    admin.set_policy("p/vote/", "vote", k=2)
    pending = worker.propose("p/vote/decision", "ship it")
    assert not hasattr(pending, "version") and pending.status == "pending"  # type: ignore[union-attr]
    assert worker.get("p/vote/decision") is None
    entry = admin.vote("p/vote/decision", pending.id)  # type: ignore[union-attr]
    assert entry.value == "ship it" and entry.author == "worker"  # type: ignore[union-attr]
    with pytest.raises(UnknownPolicy):
        admin.set_policy("p/x/", "no-such-policy")
    worker.put("p/rank-free", 1)
    with pytest.raises(StaleVersion) as stale:
        worker.put("p/rank-free", 2)
    assert stale.value.reason == "blind-write"


def test_invalid_input_is_typed(cluster: LocalCluster) -> None:
    board = cluster.board(agent="a")
    for bad in ["", "/lead", "trail/", "a//b", "a/../b", "x" * 600, "ctl\x01"]:
        with pytest.raises(InvalidKey):
            board.put(bad, 1)
    with pytest.raises(InvalidValue):
        board.put("v/nan", float("nan"))
    with pytest.raises(InvalidValue):
        board.put("v/big", "x" * (2 << 20))
    near_max = "y" * ((1 << 20) - 16)  # just under the 1 MiB value bound, plus its envelope
    assert board.put("v/near-max", near_max).version == 1
    assert board.get("v/near-max").value == near_max  # type: ignore[union-attr]


def test_history_records_versions_and_refusals(cluster: LocalCluster) -> None:
    board = cluster.board(agent="auditor")
    board.put("h/k", 1)
    board.put("h/k", 2, expect_version=1)
    with pytest.raises(StaleVersion):
        board.put("h/k", 3, expect_version=1)
    board.delete("h/k", expect_version=2)
    hist = board.history("h/k")
    assert [(h.outcome, h.version) for h in hist] == [
        ("put", 1), ("put", 2), ("rejected", 2), ("delete", 2)]
    assert hist[2].policy == "reject-stale" and "expected version 1" in hist[2].decision


def test_embedded_single_replica(tmp_path: Path) -> None:
    """The embedded single-process case: the replica runs inside this process (its Raft node,
    client endpoint and journal), clients still speak TCP on loopback, and a restart recovers
    everything from the data dir."""
    import os

    from quorumboard.consensus import InvalidCommand

    with LocalCluster(replicas=1, data_dir=tmp_path / "emb", embedded=True) as c:
        assert c.pid(0) == os.getpid()
        board = c.board(agent="solo")
        for i in range(30):
            board.put(f"e/{i}", i)
        claim = board.claim("e-task", ttl=30)
        before = [(e.key, e.version, e.value) for e in board.list("")]
        with pytest.raises(InvalidCommand):
            c.kill(0)
        c.restart(0)  # the replica re-announces itself (a new entry), so compare contents
        assert [(e.key, e.version, e.value) for e in board.list("")] == before
        assert len(board.list("e/")) == 30
        assert board.put("e/0", "after", expect_version=1, fence=None).version == 2
        with pytest.raises(FencedOut):
            board.put("e-task", "no fence")
        assert board.put("e-task", "with fence", fence=claim, expect_version=1).version == 2


def test_watch_idle_timeout_counts_events_not_progress(tmp_path: Path) -> None:
    """A watch with no events under its prefix ends after ``idle_timeout_s`` although the
    board keeps moving elsewhere (the replica's progress batches are not events): an agent can
    notice a silent watch, e.g. one on a replica that was partitioned away."""
    with LocalCluster(replicas=1, data_dir=tmp_path / "c") as c:
        watcher, writer = c.board(agent="watcher"), c.board(agent="writer")
        stop = threading.Event()
        written: list[int] = []

        def write() -> None:
            for i in range(3_000):  # bounded: ~30 s at most
                if stop.is_set():
                    return
                writer.put(f"busy/{i}", i)
                written.append(i)
                stop.wait(0.01)

        thread = threading.Thread(target=write, daemon=True)
        thread.start()
        try:
            events = list(watcher.watch("quiet/", idle_timeout_s=1.5))
            still_writing = thread.is_alive() and not stop.is_set()
            at_end = len(written)
        finally:
            stop.set()
            thread.join(timeout=10)
        assert events == [] and still_writing and 0 < at_end < 3_000
