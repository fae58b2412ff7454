"""The replica loop's selector: it polls its sockets for a moment before it sleeps, while a
lone client is being served.

Why. A lone client's linearizable read is four loopback messages in a row (client → leader
→ follower → leader → client), and each wakes a process that slept in ``epoll_wait``. On a
small VM (2 vCPUs) a vCPU with nothing to run halts, and waking it again is the largest single
cost of such a read: measured, a lone client's read took 0.33 ms with the leader sleeping
between messages and 0.23 ms with it polling instead (``python -m bench.peers``, README).
etcd's Go runtime gets the same effect from its spinning scheduler threads.

What it costs, and why it is gated. Polling burns the CPU time it would have slept: a
leader serving one client goes from about 55 % to about 90 % of a core. With many clients
that time is other processes' (the followers', the clients'), and the loop would take events
one at a time instead of in batches; with all replicas polling whenever they woke, 64
clients' reads fell by a quarter. So the loop polls only when :attr:`PollingSelector.gate`
says so (the client endpoint: at most one client request in flight, requests within the
last millisecond and all from one connection, see ``ClientServer.lone_client``), for at most ``spin_s`` per sleep, and
stops polling for :data:`QUIET_S` whenever a poll was preempted (its thread got less than
:data:`CPU_SHARE_MIN` of the wall time it polled for: another task wanted this core).
``ReplicaConfig.poll_spin_us = 0`` never polls (the replica then runs on the default event
loop, as before this selector), and embedded replicas, which share their process and its GIL
with the program that embeds them, do not poll unless asked.
"""

from __future__ import annotations

import selectors
import time
from collections.abc import Callable
from typing import Final

__all__ = ["CPU_SHARE_MIN", "POLLS_PER_SPIN_MAX", "POLL_SPIN_US", "POLL_SPIN_US_RANGE",
           "QUIET_S", "PollingSelector"]

POLL_SPIN_US: Final = 200
"""Default ``ReplicaConfig.poll_spin_us``: 100, 200 and 300 us gave the same lone-client
reads (a member's answer or the client's next request comes within 0.05-0.2 ms on
loopback)."""
POLL_SPIN_US_RANGE: Final = (0, 10_000)

QUIET_S: Final = 0.05
"""After a preempted poll, sleep in ``epoll_wait`` at once for this long: the core is
contended, and the time a poll would burn is another task's."""
CPU_SHARE_MIN: Final = 0.8
"""A poll whose thread ran less than this share of its wall time was preempted."""
PREEMPTION_MEASURABLE_S: Final = 30e-6
"""Polls shorter than this say nothing about preemption (clock granularity, one syscall)."""
POLLS_PER_SPIN_MAX: Final = 100_000
"""Bound on non-blocking polls in one spin (a spin also ends at its deadline; one poll is
about 0.5 us)."""


class PollingSelector(selectors.DefaultSelector):
    """``selectors.DefaultSelector`` whose blocking :meth:`select` first polls (timeout 0)
    for up to ``spin_s``, when :attr:`gate` allows it and no poll was preempted lately.

    ``clock`` and ``cpu_clock`` (this thread's CPU time) are the module ``time``'s; tests
    give their own to drive the preemption rule. Counters: :attr:`spins` (polls begun),
    :attr:`hits` (spins that found an event), :attr:`preempted`."""

    def __init__(self, spin_s: float, *, clock: Callable[[], float] = time.perf_counter,
                 cpu_clock: Callable[[], float] = time.thread_time) -> None:
        if not 0.0 <= spin_s <= POLL_SPIN_US_RANGE[1] / 1e6:  # before an epoll fd is open
            raise ValueError(f"spin_s must be in 0..{POLL_SPIN_US_RANGE[1] / 1e6:g} s "
                             f"(got {spin_s!r})")
        super().__init__()
        self.spin_s = spin_s
        self.gate: Callable[[], bool] = lambda: False
        """Whether polling is worth its CPU now; set by the loop's owner."""
        self._clock = clock
        self._cpu_clock = cpu_clock
        self._quiet_until = 0.0
        self.spins = 0
        self.hits = 0
        self.preempted = 0

    def counters(self) -> dict[str, int]:
        """The counters under their ``ReplicaStatus`` names."""
        return {"poll_spins": self.spins, "poll_spin_hits": self.hits,
                "poll_spins_preempted": self.preempted}

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        if self.spin_s <= 0.0 or (timeout is not None and timeout <= 0.0) or not self.gate():
            return super().select(timeout)
        start = self._clock()
        if start < self._quiet_until:
            return super().select(timeout)
        spin_s = self.spin_s if timeout is None else min(self.spin_s, timeout)
        deadline = start + spin_s
        cpu_start = self._cpu_clock()
        self.spins += 1
        ready: list[tuple[selectors.SelectorKey, int]] = []
        for _ in range(POLLS_PER_SPIN_MAX):  # bounded by the count and by the deadline
            ready = super().select(0)
            if ready or self._clock() >= deadline:
                break
        spent_s = self._clock() - start
        if (spent_s >= PREEMPTION_MEASURABLE_S
                and self._cpu_clock() - cpu_start < CPU_SHARE_MIN * spent_s):
            self.preempted += 1
            self._quiet_until = start + spent_s + QUIET_S
        if ready:
            self.hits += 1
            return ready
        left_s = None if timeout is None else max(0.0, timeout - spent_s)
        return super().select(left_s)
