"""Hypothesis stateful testing against a *live* 3-replica cluster (real processes, real TCP),
with faults as rules: SIGKILL and restart, SIGSTOP and SIGCONT, isolating a replica behind the
network proxies, and a leader clock run fast to make leases expire through the log.

Rules put (create and compare-and-set), delete, add to a merge counter, claim, keep claims
alive (keepalive), write with a claim's fence, and end leases early. A small model records what each
*acknowledged* operation implies. An operation whose outcome is unknown may still commit at any
later time, so its key is retired for the rest of the example, and the agent continues on a
fresh board (on the old one, an identical command would be taken as the unknown one's retry).
After every step, whenever no fault is in force:

* every key still in the model reads back (linearizably) as the model says;
* at most one agent holds a claim on a key at any time: a second claim while the first is
  live is refused, and a write carrying a superseded fence is refused;
* once everything is healed, every replica converges to one digest (checked in ``heal``).

Bounded for CI (10 examples of up to 30 steps: about a minute). The long profile is one command:
``QUORUMBOARD_LIVE_PROFILE=long python -m pytest tests/test_live_stateful.py``.
"""

from __future__ import annotations

import collections
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from quorumboard.consensus import Claim, ClaimHeld, Conflict, LocalCluster
from quorumboard.consensus.errors import FencedOut, OutcomeUnknown, Unavailable
from tests.conftest import wait_until

PROFILES = {
    "ci": settings(max_examples=10, stateful_step_count=30, deadline=None,
                   suppress_health_check=list(HealthCheck)),
    "long": settings(max_examples=60, stateful_step_count=40, deadline=None,
                     suppress_health_check=list(HealthCheck)),
}
PROFILE = PROFILES[os.environ.get("QUORUMBOARD_LIVE_PROFILE", "ci")]
CLIENT_TIMEOUT_S = 4.0
CLAIM_TTL_S = 300.0
"""Long: a claim ends only when a rule makes it (the fast leader clock), never by the wall."""
KEYS = ["a", "b", "c"]
AGENTS = ["ann", "bo"]
_UNSET = object()


class _Shared:
    """One cluster for every example (starting one per example would dominate the run); each
    example works under its own key prefix and heals everything when it ends."""

    cluster: LocalCluster | None = None
    examples = 0
    ran: ClassVar[collections.Counter[str]] = collections.Counter()


class LiveBoard(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        cluster = _Shared.cluster
        assert cluster is not None
        self.c = cluster
        _Shared.examples += 1
        self.prefix = f"ex{_Shared.examples}/"
        self.boards = {a: cluster.board(agent=f"{a}-{_Shared.examples}",
                                        timeout_s=CLIENT_TIMEOUT_S) for a in AGENTS}
        self.model: dict[str, Any] = {}  # key -> (version, value) | None (absent)
        self.uncertain: set[str] = set()  # outcome unknown: retired for this example
        self.counter: int | None = 0  # None: unknown
        self.claims: dict[str, tuple[str, Claim]] = {}  # key -> (agent, live claim)
        self.claim_unknown: set[str] = set()  # a claim whose outcome is unknown: not judged
        self.stale_fences: list[tuple[str, Claim]] = []
        self.killed: set[int] = set()
        self.paused: set[int] = set()
        self.isolated: int | None = None
        self.late_writes = 0

    @initialize()
    def bind_counter_policy(self) -> None:
        board = self.boards[AGENTS[0]]
        bindings = [("ctr/", "merge", {"kind": "counter"}), ("task/", "last-writer-wins", {}),
                    ("out/", "last-writer-wins", {})]
        for suffix, policy, params in bindings:  # idempotent: a retry after unknown is safe
            for _ in range(3):
                try:
                    board.set_policy(f"{self.prefix}{suffix}", policy, **params)
                    break
                except Unavailable:
                    continue
            else:
                raise AssertionError(f"could not bind {policy} on a healthy cluster")

    # ------------------------------------------------------------------------- helpers

    def ran(self, what: str) -> None:
        _Shared.ran[what] += 1

    def key(self, name: str) -> str:
        return f"{self.prefix}{name}"

    def unknown(self, agent: str, key: str | None) -> None:
        """An operation by ``agent`` on ``key`` ended with its outcome unknown."""
        if key is not None:
            self.uncertain.add(key)
        self.boards[agent].close()  # same agent (claims are owned by name), new session
        self.boards[agent] = self.c.board(agent=f"{agent}-{_Shared.examples}",
                                          timeout_s=CLIENT_TIMEOUT_S)

    def healthy(self) -> bool:
        return not (self.killed or self.paused or self.isolated is not None)

    def down(self) -> int:
        return len(self.killed | self.paused | ({self.isolated} if self.isolated is not None
                                               else set()))

    # ----------------------------------------------------------------------- operations

    @rule(name=st.sampled_from(KEYS), agent=st.sampled_from(AGENTS), value=st.integers(0, 99))
    def put(self, name: str, agent: str, value: int) -> None:
        self.ran("put")
        key = self.key(name)
        if key in self.uncertain or key in self.claims:
            return
        current = self.model.get(key)
        expect = 0 if current is None else current[0]
        try:
            entry = self.boards[agent].put(key, value, expect_version=expect)
        except Conflict as exc:  # only possible if someone else wrote: never, here
            raise AssertionError(f"unexpected conflict on {key}: {exc}") from None
        except OutcomeUnknown:
            self.unknown(agent, key)
            return
        except Unavailable:  # certainly not applied
            return
        assert entry.version == expect + 1 and entry.value == value
        self.model[key] = (entry.version, value)

    @rule(name=st.sampled_from(KEYS), agent=st.sampled_from(AGENTS))
    def stale_put_is_refused(self, name: str, agent: str) -> None:
        self.ran("stale_put_is_refused")
        key = self.key(name)
        current = self.model.get(key)
        if key in self.uncertain or key in self.claims or current is None:
            return
        try:
            self.boards[agent].put(key, "stale", expect_version=current[0] - 1 if current[0] > 1
                                   else current[0] + 5)
        except Conflict as exc:
            assert exc.current is None or exc.current.version == current[0]
            return
        except OutcomeUnknown:
            self.unknown(agent, key)
            return
        except Unavailable:
            return
        raise AssertionError(f"a stale compare-and-set on {key} was accepted")

    @rule(name=st.sampled_from(KEYS), agent=st.sampled_from(AGENTS))
    def delete(self, name: str, agent: str) -> None:
        self.ran("delete")
        key = self.key(name)
        current = self.model.get(key)
        if key in self.uncertain or key in self.claims or current is None:
            return
        try:
            self.boards[agent].delete(key, expect_version=current[0])
        except OutcomeUnknown:
            self.unknown(agent, key)
            return
        except Unavailable:
            return
        self.model[key] = None

    @rule(agent=st.sampled_from(AGENTS), n=st.integers(1, 5))
    def add(self, agent: str, n: int) -> None:
        self.ran("add")
        try:
            entry = self.boards[agent].put(self.key("ctr/n"), n)
        except OutcomeUnknown:
            self.counter = None  # retired: the increment may land at any later time
            self.unknown(agent, None)
            return
        except Unavailable:
            return
        if self.counter is not None:
            self.counter += n
            assert entry.value == self.counter, (entry.value, self.counter)

    @rule(name=st.sampled_from(KEYS), agent=st.sampled_from(AGENTS))
    def claim(self, name: str, agent: str) -> None:
        self.ran("claim")
        key = self.key(f"task/{name}")
        held = self.claims.get(key)
        try:
            claim = self.boards[agent].claim(key, ttl=CLAIM_TTL_S)
        except ClaimHeld:
            assert held is not None or key in self.claim_unknown, \
                f"{key} refused as held, but no claim is live"
            return
        except OutcomeUnknown:
            self.claim_unknown.add(key)
            self.unknown(agent, None)
            return
        except Unavailable:
            return
        if key in self.claim_unknown:  # whoever holds it now is known again
            self.claims[key] = (agent, claim)
            self.claim_unknown.discard(key)
            return
        assert held is None or held[0] == agent, \
            f"{key} granted to {agent} while {held[0]} held it: two holders"
        if held is not None:
            assert claim.fence == held[1].fence, "re-claiming your own claim keeps its fence"
        self.claims[key] = (agent, claim)

    @rule(name=st.sampled_from(KEYS))
    def fenced_write(self, name: str) -> None:
        self.ran("fenced_write")
        key = self.key(f"task/{name}")
        held = self.claims.get(key)
        if held is None:
            return
        agent, claim = held
        try:  # the claimed key itself, and a result key elsewhere, both under the fence
            self.boards[agent].put(key, {"done": True}, fence=claim)
            self.boards[agent].put(self.key(f"out/{name}"), claim.fence, fence=claim)
        except FencedOut:
            raise AssertionError(f"the live claim's fence on {key} was refused") from None
        except OutcomeUnknown:
            self.unknown(agent, None)
        except Unavailable:
            return

    @rule(name=st.sampled_from(KEYS))
    def keepalive(self, name: str) -> None:
        key = self.key(f"task/{name}")
        held = self.claims.get(key)
        if held is None:
            return
        self.ran("keepalive")
        agent, claim = held
        try:
            lease = self.boards[agent].keepalive(claim)
        except OutcomeUnknown:
            self.unknown(agent, None)
            return
        except Unavailable:
            return
        assert lease.id == claim.lease, "a keepalive renews the claim's own lease"

    @rule()
    def stale_fence_is_refused(self) -> None:
        self.ran("stale_fence_is_refused")
        for agent, claim in self.stale_fences[-2:]:
            name = claim.key.rsplit("/", 1)[1]
            target = self.data_draw_target(claim.key, name)
            try:
                self.boards[agent].put(target, "late", fence=claim)
            except Conflict:
                continue  # FencedOut (a Conflict): refused, as it must be
            except OutcomeUnknown:
                self.unknown(agent, None)
                continue
            except Unavailable:
                continue
            raise AssertionError(f"a write with superseded fence {claim.fence} on {claim.key} "
                                 "was accepted")

    def data_draw_target(self, claimed: str, name: str) -> str:
        """Alternate a stale holder's late write between the claimed key and a result key."""
        self.late_writes += 1
        return claimed if self.late_writes % 2 else self.key(f"out/{name}")

    @precondition(lambda self: self.healthy() and bool(self.claims or self.claim_unknown))
    @rule()
    def leases_expire_on_a_fast_leader_clock(self) -> None:
        """Time enters through the log: the leader's clock runs 1000x, every claim's lease
        expires, and every replica deletes the claimed keys in the same revision."""
        self.ran("leases_expire_on_a_fast_leader_clock")
        leader = self.c.wait_for_leader()
        self.c.skew_clock(leader, rate=1000.0)
        try:
            board = self.boards[AGENTS[0]]
            keys = set(self.claims) | self.claim_unknown
            wait_until(lambda: all(board.get(k) is None for k in keys), 20.0,
                       what="claimed keys to expire")
        finally:
            self.c.skew_clock(leader, rate=1.0)
        self.stale_fences += list(self.claims.values())
        self.claims.clear()
        self.claim_unknown.clear()

    # --------------------------------------------------------------------------- faults

    @precondition(lambda self: self.down() == 0)
    @rule(data=st.data())
    def kill(self, data: st.DataObject) -> None:
        self.ran("kill")
        i = data.draw(st.integers(0, self.c.size - 1), label="replica")
        self.c.kill(i)
        self.killed.add(i)

    @precondition(lambda self: self.down() == 0)
    @rule(data=st.data())
    def pause(self, data: st.DataObject) -> None:
        self.ran("pause")
        i = data.draw(st.integers(0, self.c.size - 1), label="replica")
        self.c.pause(i)
        self.paused.add(i)

    @precondition(lambda self: self.down() == 0)
    @rule(data=st.data())
    def isolate(self, data: st.DataObject) -> None:
        self.ran("isolate")
        assert self.c.net is not None
        i = data.draw(st.integers(0, self.c.size - 1), label="replica")
        self.c.net.isolate(i)
        self.isolated = i

    @precondition(lambda self: not self.healthy())
    @rule()
    def heal(self) -> None:
        """Raft §5.4 (safety) and §5.3 (log matching): after any of these faults heals, every
        replica converges to the same log and state."""
        self.ran("heal")
        for i in sorted(self.killed):
            self.c.restart(i)
        for i in sorted(self.paused):
            self.c.resume(i)
        if self.isolated is not None and self.c.net is not None:
            self.c.net.heal()
        self.killed.clear()
        self.paused.clear()
        self.isolated = None
        self.c.wait_for_leader()
        digest = self.c.wait_converged()  # every live replica: same applied index and digest
        assert self.c.alive() == list(range(self.c.size)) and digest

    # ------------------------------------------------------------------------ invariants

    @invariant()
    def acknowledged_state_reads_back(self) -> None:
        if not self.healthy():
            return  # a minority fault still serves, but a read may wait out a failover
        board = self.boards[AGENTS[1]]
        try:
            for name in KEYS:
                key = self.key(name)
                if key in self.uncertain:
                    continue
                got = board.get(key)
                expected = self.model.get(key)
                actual = None if got is None else (got.version, got.value)
                assert actual == expected, f"{key}: read {actual}, acknowledged {expected}"
            if self.counter is not None:
                total = board.get(self.key("ctr/n"))
                value = 0 if total is None else total.value
                assert value == self.counter, f"counter {value}, acknowledged {self.counter}"
        except Unavailable:  # just healed, a failover may still be settling: check next step
            return

    @invariant()
    def one_holder_per_claimed_key(self) -> None:
        if not self.healthy():
            return
        board = self.boards[AGENTS[0]]
        try:
            for key, (_agent, claim) in self.claims.items():
                entry = board.get(key)
                assert entry is not None, f"{key}: a live claim's key vanished"
                assert entry.lease == claim.lease, f"{key}: held under another lease"
        except Unavailable:
            return

    def teardown(self) -> None:
        try:
            if not self.healthy():
                self.heal()
        finally:
            for board in self.boards.values():
                board.close()


@pytest.fixture(scope="module")
def live_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    path: Path = tmp_path_factory.mktemp("live")
    with LocalCluster(replicas=3, data_dir=path, network_faults=True,
                      clock_faults=True) as cluster:
        _Shared.cluster = cluster
        try:
            yield cluster
        finally:
            _Shared.cluster = None


def test_live_cluster_under_faults_agrees_with_the_model(live_cluster: LocalCluster) -> None:
    runner = LiveBoard.TestCase
    runner.settings = PROFILE
    runner().runTest()
    print(f"live stateful: {_Shared.examples} examples, rules run: {dict(_Shared.ran)}")
    assert _Shared.examples >= 1
    assert _Shared.ran["put"] > 0 and _Shared.ran["heal"] > 0, dict(_Shared.ran)
