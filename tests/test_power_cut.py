"""Durable writes under power cuts: no acknowledged write is lost (Raft thesis §10.2.1; Raft
§5.1 / Figure 2: persistent state).

With ``fsync=True`` a write is acknowledged only after a majority has its entry on disk, the
leader possibly outside that majority (it flushes while its AppendEntries travel and counts
itself only once flushed). A SIGKILL cannot test that (the page cache keeps every write), so the
replicas run on the harness's power-cut disk (consensus/testing/powercut.py): a power cut drops
every write to the Raft log not yet flushed, keeping a random prefix of them (the last record
kept possibly torn) or a random set of their pages (writeback in any order). Under load, at a random point, a majority loses power; the remaining
replica is paused (it neither helps nor hides anything); the majority restarts alone and must
still hold every acknowledged write. The negative control runs the same with planted bug
``unsynced-acks`` (acknowledge first, flush once a second), which must lose one.
"""

from __future__ import annotations

import os
import random
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from quorumboard.consensus import BoardError, connect
from quorumboard.consensus.client.board import Board
from quorumboard.consensus.raft.journal import JOURNAL_FILE, Journal
from quorumboard.consensus.testing.powercut import PowerCutCluster, PowerCutJournal, cut_power
from tests.conftest import wait_until

CLIENTS = 3
KEYS_PER_CLIENT = 4
PREFIX = "pc/"
OP_TIMEOUT_S = 4.0
OPS_PER_ROUND_MAX = 100_000
JOIN_TIMEOUT_S = 2 * OP_TIMEOUT_S + 5.0
FAST_ELECTIONS = {"election_timeout_min_s": 0.4, "election_timeout_max_s": 0.8}
"""The restarted majority elects a leader sooner (nothing else here is timing-sensitive)."""


class Load:
    """Client threads, each writing increasing sequence numbers to its own keys (one write
    after another); per key, the highest sequence number acknowledged. The last value of a
    key can only be a write at least that new (a later one, acknowledged or not, may have
    committed too)."""

    def __init__(self, cluster: PowerCutCluster) -> None:
        self.acked: dict[str, int] = {}
        self.count = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._boards = [cluster.board(f"pc{c}", timeout_s=OP_TIMEOUT_S) for c in range(CLIENTS)]
        self._boards[0].set_policy(PREFIX, "last-writer-wins")
        self._next = [0] * CLIENTS

    def start(self) -> None:
        self._stop.clear()
        self._threads = [threading.Thread(target=self._run, args=(c,), daemon=True)
                         for c in range(CLIENTS)]
        for t in self._threads:
            t.start()

    def _run(self, c: int) -> None:
        board = self._boards[c]
        for _ in range(OPS_PER_ROUND_MAX):
            if self._stop.is_set():
                return
            self._next[c] += 1
            n = self._next[c]
            key = f"{PREFIX}c{c}/k{n % KEYS_PER_CLIENT}"
            try:
                board.put(key, str(n))
            except BoardError:
                continue  # not acknowledged: it may or may not have committed
            with self._lock:
                self.acked[key] = max(self.acked.get(key, 0), n)
                self.count += 1

    def stop(self) -> None:
        """Ask the clients to stop after the write each has in flight."""
        self._stop.set()

    def join(self) -> None:
        for t in self._threads:
            t.join(JOIN_TIMEOUT_S)
        assert not any(t.is_alive() for t in self._threads), "a load client did not stop"

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(self.acked)


def lost_writes(board: Board, acked: dict[str, int]) -> list[str]:
    """Every acknowledged write the cluster no longer has (read linearizably)."""
    lost = []
    for key, seq in sorted(acked.items()):
        entry = board.get(key)
        value = None if entry is None else int(str(entry.value))
        if value is None or value < seq:
            lost.append(f"{key}: acknowledged {seq}, read {value}")
    return lost


def power_cut_round(cluster: PowerCutCluster, load: Load, rng: random.Random,
                    cut_leader: bool) -> list[str]:
    """Load, then at a random point cut the power of a majority (with or without the leader),
    pause the other replica, restart the majority alone and read back every acknowledged
    write; the lost ones, after resuming the other replica."""
    leader = cluster.wait_for_leader()
    followers = [i for i in range(cluster.size) if i != leader]
    cut = [leader, followers[0]] if cut_leader else followers
    spared = next(i for i in range(cluster.size) if i not in cut)
    load.start()
    target = load.count + rng.randint(10, 60)  # the random point: after this many more acks
    wait_until(lambda: load.count >= target, timeout_s=15.0, what=f"{target} acknowledged puts")
    cluster.pause(spared)
    load.stop()
    for i in cut:
        cluster.power_cut(i, rng)
    restarts = [threading.Thread(target=cluster.restart, args=(i,)) for i in cut]
    for t in restarts:
        t.start()
    for t in restarts:
        t.join(30.0)
    try:
        cluster.wait_for_leader()
        acked = load.snapshot()
        assert acked, "no write was acknowledged"
        with connect(",".join(cluster.endpoints[i] for i in cut), agent="pc-reader",
                     timeout_s=10.0) as reader:
            return lost_writes(reader, acked)
    finally:
        cluster.resume(spared)
        load.join()


@pytest.fixture
def healthy() -> Iterator[PowerCutCluster]:
    with PowerCutCluster(replicas=3, fsync=True, log_level="warning", **FAST_ELECTIONS) as cluster:
        yield cluster


@pytest.fixture
def acks_before_flush() -> Iterator[PowerCutCluster]:
    with PowerCutCluster(replicas=3, fsync=True, log_level="warning", **FAST_ELECTIONS,
                         planted_bug="unsynced-acks") as cluster:
        yield cluster


def test_raft_thesis_10_2_1_power_cut_majority_keeps_every_acknowledged_write(
        healthy: PowerCutCluster) -> None:
    """Raft thesis §10.2.1 and Raft §5.1: two power cuts of a majority under load, one with
    the leader, one without it (the leader outside the majority that had the entry on disk):
    the restarted majority alone holds every acknowledged write."""
    rng = random.Random(1021)
    load = Load(healthy)
    for cut_leader in (True, False):
        lost = power_cut_round(healthy, load, rng, cut_leader)
        assert lost == [], f"power cut lost acknowledged writes: {lost[:5]}"


NEGATIVE_ROUNDS_MAX = 3
"""Rounds the negative control may take to lose a write. One round can miss: when the cut
keeps a random prefix of each follower's unflushed log, a prefix reaching past the last
acknowledged entry (into entries appended but not yet acknowledged when the leader was
paused) loses none, and where that entry falls depends on timing, not only on the seed
(after the commit notice went on a timer one round missed in 3 of 13 runs on a loaded
machine, main in none of 5; with up to three rounds none of 6 missed)."""


def test_negative_control_acks_before_the_flush_lose_writes_to_a_power_cut(
        acks_before_flush: PowerCutCluster) -> None:
    """The same round with planted bug ``unsynced-acks`` (appends acknowledged, and counted by
    the leader, before they are flushed): power cuts take acknowledged writes, within
    :data:`NEGATIVE_ROUNDS_MAX` rounds."""
    rng = random.Random(1021)
    load = Load(acks_before_flush)
    lost: list[str] = []
    for _ in range(NEGATIVE_ROUNDS_MAX):
        lost = power_cut_round(acks_before_flush, load, rng, cut_leader=False)
        if lost:
            break
    assert lost, "acknowledging before the flush lost nothing: the power cut tests nothing"


def _die(journal: PowerCutJournal) -> None:
    """The process holding ``journal`` is gone: its descriptor closes, nothing is flushed."""
    os.close(journal._fd)
    journal._closed = True


@pytest.mark.parametrize("seed", [None, *range(1, 13)])
def test_a_power_cut_keeps_the_flushed_log_and_maybe_a_torn_prefix_of_the_rest(
        tmp_path: Path, seed: int | None) -> None:
    """The power-cut disk itself: the flushed records survive, unflushed ones are gone (or some
    of them stay: a random prefix, the last one possibly torn, which the journal's torn-tail
    rule truncates; or random pages of them, a record missing before later ones, where the
    journal ends the log at the first page never written back), and the log opens as a
    prefix of what was written, every flushed record in it."""
    path = tmp_path / JOURNAL_FILE
    j = PowerCutJournal(path, fsync=True, record_bytes_max=1 << 20)
    for idx in range(1, 6):
        j.add(b"flushed" * 9, idx, 1)
    j.sync()
    for idx in range(6, 30):  # about six pages of unflushed records
        j.add(b"pending" * 140, idx, 1)
    _die(j)
    cut_power(tmp_path, None if seed is None else random.Random(seed))
    k = Journal(path, fsync=True, record_bytes_max=1 << 20)
    indexes = [e[1] for e in k.entries()]
    k.close()
    assert indexes[:5] == [1, 2, 3, 4, 5] and indexes == list(range(1, len(indexes) + 1))
    if seed is None:
        assert len(indexes) == 5
