"""The leader's lease clock, kept pure: time is an argument, never read here.

Lease expiry must be decided identically on every replica, so the state machine never looks at a
clock. Instead the leader runs this tracker against its *own* monotonic clock and proposes
``ExpireLease(lease, refreshes)`` when a lease went a full TTL without a refresh. The expiry
carries the refresh count it saw, so a keepalive that commits first turns it into a no-op.

Like etcd, a new leader restarts every lease's countdown from the moment it took over: a TTL is
a minimum, never a promise of prompt expiry, and a lease is never expired early because the
leader changed.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["LeaseTimers"]


@dataclass(slots=True)
class LeaseTimers:
    """Deadlines for the leases the state machine holds, on the leader's clock."""

    expiries_per_tick_max: int = 256
    """Bound on expiries proposed per tick (a mass expiry is spread over ticks)."""

    _seen: dict[int, tuple[int, float]] = field(default_factory=dict)
    """lease id -> (refresh count last seen, local deadline in seconds)."""

    def reset(self) -> None:
        """Forget every deadline: called when this replica becomes leader (or stops being)."""
        self._seen.clear()

    def due(self, leases: dict[int, tuple[int, int]], now_s: float) -> list[tuple[int, int]]:
        """Given ``{lease: (refreshes, ttl_ms)}`` from the applied state and the leader's
        clock, return ``[(lease, refreshes)]`` whose deadline passed, oldest deadline first."""
        for lease_id in [lid for lid in self._seen if lid not in leases]:
            del self._seen[lease_id]
        expired: list[tuple[float, int, int]] = []
        for lease_id, (refreshes, ttl_ms) in leases.items():
            seen = self._seen.get(lease_id)
            if seen is None or seen[0] != refreshes:
                self._seen[lease_id] = (refreshes, now_s + ttl_ms / 1000)
                continue
            if now_s >= seen[1]:
                expired.append((seen[1], lease_id, refreshes))
        expired.sort()
        return [(lid, ref) for _, lid, ref in expired[: self.expiries_per_tick_max]]

    def time_left(self, leases: dict[int, tuple[int, int]], now_s: float) -> dict[int, float]:
        """Seconds until each lease of ``{lease: (refreshes, ttl_ms)}`` is due on this clock,
        as :meth:`due` would decide: a lease whose countdown has not started yet (first seen,
        refreshed since, or after :meth:`reset`) still has its whole TTL, since its countdown
        starts at the next tick; one already due has 0. Read-only: the countdowns move only
        in :meth:`due`, so asking never changes when a lease expires."""
        out: dict[int, float] = {}
        for lease_id, (refreshes, ttl_ms) in leases.items():
            seen = self._seen.get(lease_id)
            if seen is None or seen[0] != refreshes:
                out[lease_id] = ttl_ms / 1000
            else:
                out[lease_id] = max(0.0, seen[1] - now_s)
        return out
