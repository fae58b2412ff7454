"""The cas-register workload against a real 3-replica cluster under faults — a follower
repeatedly paused (SIGSTOP), or cut off from its peers by the network fault proxies while
clients still reach it — records a JSON Lines history that checks as linearizable; with a
planted bug (replicas answer linearizable reads from local state, no barrier) the partition
run is caught as a violation (the negative control)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from quorumboard.consensus import LocalCluster, connect
from quorumboard.consensus.errors import CorruptData
from quorumboard.consensus.testing.history import HistoryWriter, read_history, to_operations
from quorumboard.consensus.testing.workload import CasRegisterWorkload, check_cas_register

WORKLOAD = CasRegisterWorkload(clients=6, keys=2, ops_per_client=120, duration_s=20.0,
                               rate_per_s=300.0, read_share=0.5, seed=5)


PAUSE_S = 0.4
PAUSE_EVERY_S = 1.0
PAUSES_MAX = 8


@contextmanager
def _pausing_a_follower(cluster: LocalCluster) -> Iterator[list[int]]:
    """A small nemesis: SIGSTOP one follower for PAUSE_S every PAUSE_EVERY_S (bounded), while
    the leader keeps committing with the other. Readers pinned to it wait; when it resumes,
    their reads and the leader's backlog arrive together. Always resumed on exit."""
    leader = cluster.wait_for_leader()
    victim = next(i for i in range(len(cluster.endpoints)) if i != leader)
    stop = threading.Event()
    pauses: list[int] = []

    def run() -> None:
        for _ in range(PAUSES_MAX):
            if stop.wait(PAUSE_EVERY_S - PAUSE_S):
                return
            cluster.pause(victim)
            pauses.append(victim)
            try:
                stop.wait(PAUSE_S)
            finally:
                cluster.resume(victim)

    thread = threading.Thread(target=run, name="nemesis-pause", daemon=True)
    thread.start()
    try:
        yield pauses
    finally:
        stop.set()
        thread.join(PAUSE_EVERY_S + 5.0)
        cluster.resume(victim)


@contextmanager
def _isolating_a_follower(cluster: LocalCluster) -> Iterator[list[int]]:
    """Cut one follower off from both peers (raft links only) for most of the run; heal at the
    end, also on failure. The majority keeps committing; the follower falls behind."""
    assert cluster.net is not None
    leader = cluster.wait_for_leader()
    victim = next(i for i in range(len(cluster.endpoints)) if i != leader)
    cluster.net.isolate(victim)
    try:
        yield [victim]
    finally:
        cluster.net.heal()


def _run(cluster: LocalCluster, path: Path, nemesis: Any = None) -> None:
    with (nemesis or _pausing_a_follower)(cluster) as pauses, HistoryWriter(path) as history:
        stats = WORKLOAD.run(
            writer_for=lambda name: cluster.board(agent=f"{name}-w"),
            reader_for=lambda name, n: connect([cluster.endpoints[n % len(cluster.endpoints)]],
                                               agent=f"{name}-r"),
            history=history)
    assert pauses, "the nemesis never paused a follower"
    assert stats.ok > WORKLOAD.clients * WORKLOAD.ops_per_client // 2, stats
    assert "client still running after the deadline" not in stats.errors


def test_healthy_cluster_history_is_linearizable(tmp_path: Path) -> None:
    path = tmp_path / "history.jsonl"
    with LocalCluster(replicas=3, data_dir=tmp_path / "bb") as cluster:
        _run(cluster, path)
    records, note = read_history(path)
    assert note == ""
    kinds = {(r.f, r.type) for r in records}
    assert {("read", "ok"), ("cas", "ok")} <= kinds
    refused = [r for r in records if r.f == "cas" and r.type == "ok" and r.value[0] == "conflict"]
    assert refused, "concurrent writers on two keys must collide at least once"
    finals = [r for r in records if r.process == "final" and r.type == "ok"]
    assert len(finals) == WORKLOAD.keys, "the final read of every key is in the history"
    result, _ = check_cas_register(path)
    assert result.verdict == "ok", result.explain()


PARTITION_WORKLOAD = CasRegisterWorkload(clients=6, keys=2, ops_per_client=60, duration_s=20.0,
                                         rate_per_s=120.0, read_share=0.5, seed=9)


def _partition_run(tmp_path: Path, planted_bug: str | None = None) -> tuple[str, str]:
    path = tmp_path / "history.jsonl"
    with LocalCluster(replicas=3, data_dir=tmp_path / "bb", network_faults=True,
                      planted_bug=planted_bug) as cluster:
        with _isolating_a_follower(cluster), HistoryWriter(path) as history:
            stats = PARTITION_WORKLOAD.run(
                writer_for=lambda name: cluster.board(agent=f"{name}-w"),
                reader_for=lambda name, n: connect([cluster.endpoints[n % 3]], agent=f"{name}-r",
                                                   timeout_s=2.0),
                history=history)
        assert stats.ok > 0 and "client still running after the deadline" not in stats.errors
        cluster.wait_converged()
        assert len(set(cluster.digests())) == 1, "replicas converge after heal"
    result, _ = check_cas_register(path)
    return result.verdict, result.explain()


def test_partitioned_follower_never_serves_a_stale_read(tmp_path: Path) -> None:
    """Raft §8 (reads): a follower cut off from the leader cannot pass a read barrier, so its
    linearizable reads fail instead of answering from its stale state."""
    verdict, explanation = _partition_run(tmp_path)
    assert verdict == "ok", explanation


def test_negative_control_planted_stale_reads_are_caught(tmp_path: Path) -> None:
    verdict, explanation = _partition_run(tmp_path, planted_bug="stale-reads")
    assert verdict == "violation", explanation
    assert "read()" in explanation


def test_torn_last_line_is_dropped_and_other_damage_refused(tmp_path: Path) -> None:
    path = tmp_path / "h.jsonl"
    with HistoryWriter(path) as h:
        h.write("c0", "invoke", "read", "k", None, 1)
        h.write("c0", "ok", "read", "k", [0, None], 2)
        h.write("c1", "invoke", "cas", "k", [0, 5], 3)
    with path.open("a") as f:
        f.write('{"index": 3, "process": "c1", "type": "o')  # the recorder died mid-line
    records, note = read_history(path)
    assert [r.index for r in records] == [0, 1, 2] and "torn" in note
    with pytest.raises(FileExistsError):  # one history per run: never appended to
        HistoryWriter(path)
    # c1's cas never completed: it is checked as indeterminate.
    ops = to_operations(records, lambda inv, done: ((inv.f,), None if done is None
                                                    else tuple(done.value)))
    assert [op.indeterminate for op in ops] == [False, True]

    lines = path.read_text().splitlines()
    lines[1] = json.dumps({"index": 1, "process": "c0", "type": "bogus"})
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(CorruptData, match="line 2"):
        read_history(path)
