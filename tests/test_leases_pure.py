"""``LeaseTimers``: the leader's pure lease-expiry clock (time is always an argument).

Documented contract: a lease is due once it went a full TTL without a refresh *as observed by
this tracker on the given clock*; a changed refresh count restarts its countdown; ``reset()``
(leadership change) restarts every countdown; at most ``expiries_per_tick_max`` are returned per
tick, oldest deadline first; leases that vanished from the state are forgotten.
"""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from quorumboard.consensus.core.leases import LeaseTimers


def test_expires_only_after_a_full_ttl() -> None:
    t = LeaseTimers()
    leases = {1: (0, 2000)}
    assert t.due(leases, 100.0) == []  # first sighting starts the countdown
    assert t.due(leases, 101.0) == []
    assert t.due(leases, 101.999) == []
    assert t.due(leases, 102.0) == [(1, 0)]  # exactly one TTL later
    assert t.due(leases, 105.0) == [(1, 0)]  # still due until it is gone or refreshed


def test_refresh_restarts_the_countdown() -> None:
    t = LeaseTimers()
    assert t.due({1: (0, 1000)}, 0.0) == []
    assert t.due({1: (0, 1000)}, 0.9) == []
    assert t.due({1: (1, 1000)}, 0.95) == []  # keepalive committed: new countdown from 0.95
    assert t.due({1: (1, 1000)}, 1.5) == []
    assert t.due({1: (1, 1000)}, 1.9) == []
    assert t.due({1: (1, 1000)}, 1.95) == [(1, 1)]  # carries the refresh count it saw


def test_refresh_noticed_late_still_restarts() -> None:
    t = LeaseTimers()
    assert t.due({1: (0, 1000)}, 0.0) == []
    # the refresh count moved while the tracker was not looking; it restarts at sighting
    assert t.due({1: (3, 1000)}, 5.0) == []
    assert t.due({1: (3, 1000)}, 5.5) == []
    assert t.due({1: (3, 1000)}, 6.0) == [(1, 3)]


def test_reset_restarts_all() -> None:
    t = LeaseTimers()
    leases = {1: (0, 1000), 2: (4, 3000)}
    assert t.due(leases, 0.0) == []
    assert t.due(leases, 0.9) == []
    t.reset()  # new leader: a TTL is a minimum, never shortened by a leader change
    assert t.due(leases, 1.0) == []
    assert t.due(leases, 1.5) == []
    assert t.due(leases, 2.0) == [(1, 0)]
    assert t.due(leases, 4.0) == [(1, 0), (2, 4)]


def test_bounded_per_tick_oldest_first() -> None:
    t = LeaseTimers(expiries_per_tick_max=3)
    leases = {lid: (0, 1000 * lid) for lid in range(1, 11)}  # lease n has an n-second ttl
    assert t.due(leases, 0.0) == []
    assert t.due(leases, 100.0) == [(1, 0), (2, 0), (3, 0)]
    for lid in (1, 2, 3):
        del leases[lid]  # the expiries committed
    assert t.due(leases, 100.0) == [(4, 0), (5, 0), (6, 0)]


def test_vanished_leases_are_forgotten() -> None:
    t = LeaseTimers()
    assert t.due({1: (0, 1000), 2: (0, 1000)}, 0.0) == []
    assert t.due({2: (0, 1000)}, 0.5) == []  # lease 1 revoked/expired
    assert 1 not in t._seen
    # if id 1 were seen again it starts a fresh countdown rather than inheriting the old one
    assert t.due({1: (0, 1000), 2: (0, 1000)}, 1.0) == [(2, 0)]
    assert t.due({1: (0, 1000), 2: (0, 1000)}, 1.9) == [(2, 0)]
    assert t.due({1: (0, 1000), 2: (0, 1000)}, 2.0) == [(2, 0), (1, 0)]


def test_does_not_mutate_input() -> None:
    t = LeaseTimers()
    leases = {1: (0, 10), 2: (1, 10)}
    copy = dict(leases)
    t.due(leases, 0.0)
    t.due(leases, 1.0)
    assert leases == copy


# ------------------------------------------------------------------ property: vs a model

# Times are multiples of 1/8 s and TTLs multiples of 125 ms, so every sum is exact in binary
# floating point and the model needs no tolerance.
tick = st.fixed_dictionaries({
    "advance": st.integers(0, 16).map(lambda n: n / 8),
    "refresh": st.lists(st.integers(1, 6), max_size=2),
    "remove": st.lists(st.integers(1, 6), max_size=1),
    "add": st.lists(st.tuples(st.integers(1, 6), st.integers(1, 16).map(lambda n: n * 125)),
                    max_size=2),
    "reset": st.sampled_from([False] * 9 + [True]),  # leadership changes are rare
})


@settings(max_examples=200, deadline=None)
@given(st.lists(tick, min_size=1, max_size=30), st.integers(1, 4))
def test_matches_a_model_of_the_contract(ticks: list[dict[str, Any]], bound: int) -> None:
    t = LeaseTimers(expiries_per_tick_max=bound)
    leases: dict[int, tuple[int, int]] = {}
    # model: lease -> (refresh count at the start of its countdown, start time)
    start: dict[int, tuple[int, float]] = {}
    now = 0.0
    for step in ticks:
        now += step["advance"]
        for lid, ttl in step["add"]:
            leases.setdefault(lid, (0, ttl))
        for lid in step["refresh"]:
            if lid in leases:
                leases[lid] = (leases[lid][0] + 1, leases[lid][1])
        for lid in step["remove"]:
            leases.pop(lid, None)
        if step["reset"]:
            t.reset()
            start.clear()
        for lid in list(start):
            if lid not in leases:
                del start[lid]
        for lid, (refreshes, _ttl) in leases.items():
            if lid not in start or start[lid][0] != refreshes:
                start[lid] = (refreshes, now)
        got = t.due(dict(leases), now)
        overdue = sorted(
            (start[lid][1] + ttl / 1000, lid, refreshes)
            for lid, (refreshes, ttl) in leases.items()
            if now - start[lid][1] >= ttl / 1000
        )
        want = [(lid, r) for _, lid, r in overdue][:bound]
        assert got == want
        # safety, stated directly: nothing due before a full TTL since its countdown began
        for lid, r in got:
            assert r == leases[lid][0]
            assert now - start[lid][1] >= leases[lid][1] / 1000
        # liveness: if fewer than the bound are due, every overdue lease is reported
        if len(overdue) <= bound:
            assert len(got) == len(overdue)


def test_time_left_follows_the_countdown_without_moving_it() -> None:
    """``time_left`` says what ``due`` would decide, and asking changes nothing: a lease not
    yet counted has its whole TTL, a counted one its deadline less now (never below 0)."""
    t = LeaseTimers()
    leases = {1: (0, 2000), 2: (0, 500)}
    assert t.time_left(leases, 100.0) == {1: 2.0, 2: 0.5}  # countdowns not started yet
    assert t.due(leases, 100.0) == []
    assert t.time_left(leases, 101.5) == {1: 0.5, 2: 0.0}
    assert t.due(leases, 101.5) == [(2, 0)]  # the read did not restart anything
    assert t.time_left({1: (1, 2000)}, 101.5) == {1: 2.0}  # refreshed: restarts at the tick
    t.reset()
    assert t.time_left(leases, 101.5) == {1: 2.0, 2: 0.5}  # a new leader restarts them all
