"""The replica loop's selector (consensus/replica/polling.py): it polls before sleeping only
when its gate allows, finds what arrives, and stops polling for a while after a poll lost its
core. A socket pair in this process; the preemption rule driven by clocks the test owns."""

from __future__ import annotations

import selectors
import socket
import time
from collections.abc import Iterator

import pytest

from quorumboard.consensus.replica.polling import QUIET_S, PollingSelector


class _Clocks:
    """A wall clock that advances ``step_s`` on every read, and a thread-CPU clock that has
    run ``cpu_share`` of the wall time so far."""

    def __init__(self, step_s: float, cpu_share: float) -> None:
        self.wall_s = 100.0
        self.step_s = step_s
        self.cpu_share = cpu_share
        self.skipped_s = 0.0
        """Wall time that passed while the thread slept (no CPU)."""

    def wall(self) -> float:
        self.wall_s += self.step_s
        return self.wall_s

    def cpu(self) -> float:
        return (self.wall_s - 100.0 - self.skipped_s) * self.cpu_share


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    a, b = socket.socketpair()
    a.setblocking(False)
    try:
        yield a, b
    finally:
        a.close()
        b.close()


def _selector(sock: socket.socket, spin_s: float, clocks: _Clocks | None = None,
              gate: bool = True) -> PollingSelector:
    sel = (PollingSelector(spin_s) if clocks is None
           else PollingSelector(spin_s, clock=clocks.wall, cpu_clock=clocks.cpu))
    sel.register(sock, selectors.EVENT_READ)
    sel.gate = lambda: gate
    return sel


def test_a_closed_gate_never_polls(pair: tuple[socket.socket, socket.socket]) -> None:
    a, b = pair
    sel = _selector(a, 0.001, gate=False)
    assert sel.select(0.01) == []
    b.send(b"x")
    assert [key.fileobj for key, _ in sel.select(1.0)] == [a]
    assert (sel.spins, sel.hits) == (0, 0)
    sel.close()


def test_an_open_gate_polls_and_finds_what_arrived(
        pair: tuple[socket.socket, socket.socket]) -> None:
    a, b = pair
    sel = _selector(a, 0.001)
    b.send(b"x")
    assert [key.fileobj for key, _ in sel.select(1.0)] == [a]
    assert (sel.spins, sel.hits) == (1, 1)
    a.recv(16)
    began = time.monotonic()
    assert sel.select(0.002) == []  # polled its 1 ms, found nothing, slept out the rest
    assert time.monotonic() - began >= 0.0015  # the rest was slept, not returned at once
    assert (sel.spins, sel.hits) == (2, 1)
    assert sel.select(0) == []  # a non-blocking select is never a poll
    assert sel.spins == 2
    b.send(b"y")
    assert [key.fileobj for key, _ in sel.select(None)] == [a]  # no timeout: polls first
    assert (sel.spins, sel.hits) == (3, 2)
    sel.close()


def test_a_preempted_poll_stops_polling_for_a_while(
        pair: tuple[socket.socket, socket.socket]) -> None:
    """The thread runs a tenth of the wall time: the first poll lost its core, so polls stop
    until QUIET_S has passed; then they start again."""
    a, _b = pair
    clocks = _Clocks(step_s=100e-6, cpu_share=0.1)
    sel = _selector(a, 0.001, clocks)
    assert sel.select(0.001) == []
    assert (sel.spins, sel.preempted) == (1, 1)
    sel.select(0.001)
    assert sel.spins == 1  # quiet: slept at once
    clocks.wall_s += QUIET_S
    clocks.skipped_s += QUIET_S
    sel.select(0.001)
    assert (sel.spins, sel.preempted) == (2, 2)
    sel.close()


def test_a_poll_that_kept_its_core_keeps_polling(
        pair: tuple[socket.socket, socket.socket]) -> None:
    """The twin of the test above, the thread running all the wall time it polled: the rule
    must not take every poll for a preempted one."""
    a, _b = pair
    clocks = _Clocks(step_s=100e-6, cpu_share=1.0)
    sel = _selector(a, 0.001, clocks)
    for _ in range(3):
        sel.select(0.001)
    assert (sel.spins, sel.preempted) == (3, 0)
    sel.close()


def test_the_poll_time_is_bounded() -> None:
    with pytest.raises(ValueError, match="spin_s"):
        PollingSelector(0.5)
    with pytest.raises(ValueError, match="spin_s"):
        PollingSelector(-1e-6)
