"""The nemesis's choices (pure parts of consensus/testing/nemesis.py): victims, halves, rings and
bridges over replica indices, for 3, 4, 5 and 7 replicas; and its step-wise API on a real
cluster (a delayed kill healed, one called off, a partition, the timeline they leave)."""

from __future__ import annotations

import itertools
import random
from typing import Any

import pytest

from quorumboard.consensus import LocalCluster
from quorumboard.consensus.errors import InvalidCommand
from quorumboard.consensus.testing.history import read_faults
from quorumboard.consensus.testing.nemesis import MODES, FaultStep, Nemesis, NemesisConfig


class _Cluster:
    def __init__(self, size: int, leader: int | None) -> None:
        self.size = size
        self._leader = leader

    def leader(self) -> int | None:
        return self._leader


def _nemesis(size: int, leader: int | None = 0, seed: int = 1) -> Any:
    n: Any = object.__new__(Nemesis)  # only the choice helpers: no cluster, no timeline
    n.cluster = _Cluster(size, leader)
    n._rnd = random.Random(seed)
    return n


def _reachable(size: int, cut: list[tuple[int, int]]) -> dict[int, set[int]]:
    return {a: {b for b in range(size) if b != a and (min(a, b), max(a, b)) not in cut}
            for a in range(size)}


@pytest.mark.parametrize("size", [3, 4, 5, 7])
def test_victims_and_halves_have_the_sizes_their_names_promise(size: int) -> None:
    for seed in range(20):
        n = _nemesis(size, leader=1, seed=seed)
        assert n._victims("leader") == ([1], True)
        assert len(n._victims("minority")[0]) == max(1, (size - 1) // 2)
        assert len(n._victims("majority")[0]) == size // 2 + 1
        groups, _ = n._partition("halves")
        assert sorted(groups[0] | groups[1]) == list(range(size))
        assert len(groups[0]) == size // 2 + 1 and not groups[0] & groups[1]
        groups, known = n._partition("isolate-leader")
        assert groups[-1] == {1} and known
    unknown = _nemesis(size, leader=None)
    victim, known = unknown._leader_or_any()
    assert 0 <= victim < size and not known


@pytest.mark.parametrize("size", [5, 7])
def test_a_ring_leaves_each_replica_exactly_its_two_neighbours(size: int) -> None:
    for seed in range(10):
        cut = _nemesis(size, seed=seed)._unreachable("ring")
        reach = _reachable(size, cut)
        assert all(len(r) == 2 for r in reach.values())
        # connected as one cycle: walking neighbours visits everyone
        seen, here, prev = [0], 0, -1
        for _ in range(size):
            here, prev = next(b for b in reach[here] if b != prev), here
            seen.append(here)
        assert set(seen) == set(range(size))


@pytest.mark.parametrize("size", [3, 4, 5, 7])
def test_a_bridge_joins_two_halves_through_one_replica(size: int) -> None:
    for seed in range(10):
        cut = _nemesis(size, seed=seed)._unreachable("bridge")
        reach = _reachable(size, cut)
        bridges = [a for a in range(size) if len(reach[a]) == size - 1]
        assert len(bridges) == 1, reach
        others = [a for a in range(size) if a not in bridges]
        assert any((min(a, b), max(a, b)) in cut for a, b in itertools.combinations(others, 2))


def test_every_kind_has_modes() -> None:
    assert all(MODES[k] for k in MODES) and "slow-leader" in MODES["clock"]


def test_a_corrupt_flip_lands_where_the_journal_must_refuse_it(tmp_path: Any) -> None:
    """Inside the first record while another follows (a flip in the last record would be
    dropped as a torn append); nowhere when the journal holds a single record."""
    from quorumboard.consensus.errors import CorruptData
    from quorumboard.consensus.raft.journal import Journal
    from quorumboard.consensus.testing.nemesis import _flip_position

    rnd = random.Random(3)
    for count, refusable in ((1, False), (3, True), (50, True)):
        path = tmp_path / f"j{count}"
        j = Journal(path, fsync=False, record_bytes_max=1 << 16)
        for idx in range(1, count + 1):
            j.add(f"cmd{idx}".encode(), idx, 1)
        j.close()
        pristine = path.read_bytes()
        for _ in range(20):
            data = bytearray(pristine)
            pos = _flip_position(data, "flip-journal", rnd)
            assert (pos is not None) == refusable
            if pos is None:
                continue
            data[pos] ^= 1 << rnd.randrange(8)
            path.write_bytes(bytes(data))
            with pytest.raises(CorruptData):
                Journal(path, fsync=False, record_bytes_max=1 << 16)
    assert _flip_position(bytearray(b"QBJRNL01"), "flip-journal", rnd) is None


def test_fault_steps_are_injected_healed_and_called_off_with_one_record_each(
        tmp_path: Any) -> None:
    timeline = tmp_path / "faults.jsonl"
    with LocalCluster(replicas=3, log_level="warning", network_faults=True) as cluster, \
            Nemesis(cluster, NemesisConfig(faults=["kill", "partition"]), timeline) as nemesis:
        leader = cluster.wait_for_leader()
        # A delayed kill: its victim is chosen at once, the SIGKILL comes from a timer, and a
        # heal first lets it happen, then restarts the victim.
        kill = nemesis.inject(FaultStep("kill", "leader", delay_s=1.0, leader_wait_s=30.0))
        assert kill.targets == [leader] and kill.detail == {"leader_known": True}
        assert kill.state == "pending" and cluster.pid(leader) is not None
        assert nemesis.heal(kill) and kill.state == "healed"
        assert cluster.alive() == [0, 1, 2] and nemesis.injected == 1
        # Called off before its timer: it never happens, and nothing is recorded.
        never = nemesis.inject(FaultStep("kill", "leader", delay_s=60.0, leader_wait_s=30.0))
        pid = cluster.pid(never.targets[0])
        assert not nemesis.heal(never, call_off=True) and never.state == "called-off"
        assert cluster.pid(never.targets[0]) == pid and nemesis.injected == 1
        cut = nemesis.inject(FaultStep("partition", "isolate-leader", leader_wait_s=30.0))
        assert cut.state == "in-force" and cut.detail["groups"][-1] == cut.targets
        assert nemesis.heal(cut) and not nemesis.heal(cut)  # healed once
        with pytest.raises(InvalidCommand, match="not pause"):
            nemesis.inject(FaultStep("pause", "leader"))
        with pytest.raises(InvalidCommand, match="no kill mode 'everyone'"):
            nemesis.inject(FaultStep("kill", "everyone"))
        assert nemesis.crashed == [] and nemesis.violations == []
    events = [(e.index, e.phase, e.kind, e.targets, e.error) for e in read_faults(timeline)]
    assert events == [(0, "start", "kill", [leader], ""), (0, "end", "kill", [leader], ""),
                      (2, "start", "partition", cut.targets, ""),
                      (2, "end", "partition", cut.targets, "")]
