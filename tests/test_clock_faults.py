"""Clock faults for the lease-expiry decision (consensus/testing/clocks.py): the fault clock itself, and
on a real cluster, a leader whose clock runs fast expires a lease early — through the log, so
every replica agrees."""

from __future__ import annotations

from pathlib import Path

import pytest

from quorumboard.consensus import LocalCluster
from quorumboard.consensus.errors import InvalidCommand
from quorumboard.consensus.testing.clocks import (
    ClockFault,
    FaultClock,
    read_clock_fault,
    write_clock_fault,
)
from tests.conftest import wait_until


class _Manual:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_fault_clock_jumps_once_scales_and_ignores_a_bad_file(tmp_path: Path) -> None:
    path = tmp_path / "clock"
    base = _Manual()
    clock = FaultClock(path, base)
    assert clock() == 100.0  # no file: real time
    write_clock_fault(path, ClockFault(serial=1, jump_s=60.0, rate=2.0))
    assert clock() == 160.0  # the jump applies at once ...
    base.now = 101.0
    assert clock() == 162.0  # ... once, and the rate from the moment it was read
    write_clock_fault(path, ClockFault(serial=1, jump_s=60.0, rate=2.0))  # same serial again
    assert clock() == 162.0
    write_clock_fault(path, ClockFault(serial=2, rate=1.0))  # healed: real rate, offset kept
    assert clock() == 162.0  # a new rate applies from the moment it is read
    base.now = 111.0
    assert clock() == 172.0
    path.write_bytes(b"\x93garbage")
    base.now = 112.0
    assert clock() == 173.0, "an unreadable file leaves the clock as it was"
    with pytest.raises(ValueError, match="not a clock fault"):
        read_clock_fault(path)
    with pytest.raises(ValueError):
        ClockFault(serial=3, rate=0.0)


def test_fast_leader_clock_expires_a_lease_through_the_log(tmp_path: Path) -> None:
    with LocalCluster(replicas=3, data_dir=tmp_path, clock_faults=True) as cluster:
        board = cluster.board(agent="holder")
        lease = board.grant(ttl=30.0)
        board.put("held/k", 1, lease=lease)
        leader = cluster.wait_for_leader()
        assert board.lease(lease) is not None and board.get("held/k") is not None
        # 100x fast on the deciding clock: the 30 s TTL passes in 0.3 s, whenever the leader's
        # timer first saw the lease (a jump could land before that, and then not shorten it).
        cluster.skew_clock(leader, rate=100.0)
        wait_until(lambda: board.lease(lease) is None, 10.0, what="the lease to expire")
        assert board.get("held/k") is None, "expiry deleted the attached key"
        cluster.wait_converged()
        assert len(set(cluster.digests())) == 1
    with LocalCluster(replicas=1, data_dir=tmp_path / "plain") as plain, \
            pytest.raises(InvalidCommand, match="clock_faults"):
        plain.skew_clock(0, jump_s=1.0)
