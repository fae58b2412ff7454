"""``apply`` against an independent dict model, over random operation sequences.

A Hypothesis ``RuleBasedStateMachine`` drives puts (plain, CAS, leased, fenced), deletes,
claims, grants, keepalives, revokes, leader expiries, policy bindings and sessions (with retries
of earlier ``(session, seq)`` pairs) from several agents. After every step it checks the real
``BoardState`` against a small model written from the documented semantics, plus invariants:

* the revision increases by exactly one on each kv change and never otherwise;
* versions count puts since (re)creation; authors and leases are as the model says;
* at most one claim per key, every claimed key exists, fence tokens strictly increase;
* a write carrying a stale fence never applies;
* an ended lease's keys are all gone, deleted in one revision with one event each;
* a retry of an applied ``(session, seq)`` returns the identical Result and changes nothing;
* a refusal changes no replicated content (only the audit trail and the session's cache);
* a twin state fed the same proposals (and periodically rebuilt from a snapshot) has the
  same digest; the watch stream replayed from revision 1 rebuilds the key/value map;
* ``apply`` never raises, even on garbage that ``decode_proposal`` lets through.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import msgpack
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from quorumboard.consensus.core.model import (
    ClaimCmd,
    CloseSession,
    DeleteCmd,
    Event,
    ExpireLease,
    FenceRef,
    GrantCmd,
    KeepAliveCmd,
    OpenSession,
    Proposal,
    PutCmd,
    Result,
    RevokeCmd,
    SetPolicyCmd,
)
from quorumboard.consensus.core.policies import PolicyRegistry
from quorumboard.consensus.core.state import Applied, BoardState, apply, decode_proposal

AGENTS = ["alice", "bob", "boss", "carol"]
KEYS = ["k/a", "k/b", "m/x", "m/y", "z"]
PREFIXES = ["", "k/", "m/"]
RANKS = {"boss": 2, "carol": 0}
DEFAULT_RANK = 1
POLICY_PARAMS: dict[str, dict[str, Any]] = {
    "reject-stale": {},
    "last-writer-wins": {},
    "merge": {},
    "priority": {"ranks": RANKS, "default_rank": DEFAULT_RANK},
}
CONFLICT_CODES = {"stale_version", "policy_rejected", "claim_held", "fenced_out"}

REGISTRY = PolicyRegistry()


# ---------------------------------------------------------------------------------- model


@dataclass
class MKey:
    value: Any
    version: int
    author: str
    lease: int | None


@dataclass
class MLease:
    owner: str
    refreshes: int = 0
    keys: set[str] = field(default_factory=set)


@dataclass
class MClaim:
    owner: str
    fence: int
    lease: int


@dataclass
class MSession:
    agent: str
    next_seq: int = 1
    floor: int = 0
    sent: dict[int, tuple[Proposal, Result]] = field(default_factory=dict)


def _core(snap: dict[str, Any]) -> dict[str, Any]:
    """Replicated content: everything but the applied counter, session table and audit."""
    return {k: v for k, v in snap.items() if k not in ("applied", "sessions", "audit")}


def _retry_view(snap: dict[str, Any]) -> dict[str, Any]:
    """Everything a retry must leave alone: all but the applied counter and session LRU stamps."""
    out = {k: v for k, v in snap.items() if k != "applied"}
    out["sessions"] = [[sid, agent, floor, results] for sid, agent, floor, _la, results
                       in snap["sessions"]]
    return out


# Garbage for decode_proposal: random JSON-ish dicts, half of them shaped like proposals.
_atoms = st.none() | st.booleans() | st.integers(-3, 2**64) | st.floats() | st.text(max_size=6)
_json = st.recursive(
    _atoms,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner,
                                                                max_size=3),
    max_leaves=8,
)
_ops = st.sampled_from(["put", "delete", "vote", "withdraw", "grant", "keepalive", "revoke",
                        "claim", "set_policy", "open_session", "close_session", "expire_lease",
                        "announce_policies", "bogus"])
_command_like = st.fixed_dictionaries(
    {"op": _ops},
    optional={
        "key": st.sampled_from([*KEYS, "", "a//b", "x"]) | st.text(max_size=4),
        "value": _json,
        "expect_version": st.integers(-1, 3) | st.none() | st.text(max_size=1),
        "lease": st.integers(-1, 5) | st.none(),
        "ttl": st.floats(-1, 10) | st.integers(0, 3),
        "fence": st.none() | st.fixed_dictionaries({"key": st.sampled_from(KEYS),
                                                    "fence": st.integers(0, 4)}),
        "refreshes": st.integers(0, 3),
        "prefix": st.sampled_from([*PREFIXES, "/"]),
        "name": st.sampled_from(["merge", "vote", "nope", ""]),
        "params": _json,
        "proposal": st.integers(0, 3),
        "approve": st.booleans(),
        "replica": st.text(max_size=3),
        "cluster_size": st.integers(0, 16),
        "policies": st.dictionaries(st.text(max_size=3), st.text(max_size=2), max_size=2),
    },
)
garbage = _json | st.fixed_dictionaries(
    {"agent": st.sampled_from(AGENTS) | st.text(max_size=3), "command": _command_like | _json},
    optional={"session": st.integers(-1, 4), "seq": st.integers(-1, 4),
              "acked_below": st.integers(-1, 4)},
)

fence_choice = st.sampled_from(["none", "none", "own", "stale", "other"])
version_choice = st.sampled_from(["none", "none", "current", "wrong", "zero"])
lease_choice = st.sampled_from(["none", "none", "none", "live", "any"])


class BoardMachine(RuleBasedStateMachine):
    """Drives ``apply`` and checks it against an independent model."""

    def __init__(self) -> None:
        super().__init__()
        self.state = BoardState()
        self.twin = BoardState()
        # model
        self.kv: dict[str, MKey] = {}
        self.revision = 0
        self.leases: dict[int, MLease] = {}
        self.next_lease = 1
        self.claims: dict[str, MClaim] = {}
        self.fences_issued: list[int] = []
        self.bindings: dict[str, str] = {}
        self.sessions: dict[int, MSession] = {}
        self.closed: set[int] = set()
        self.next_session = 1
        self.events: list[Event] = []
        self.step_result: Result | None = None

    # ------------------------------------------------------------------ model helpers

    def policy(self, key: str) -> str:
        best = max((p for p in self.bindings if key.startswith(p)), key=len, default=None)
        return "reject-stale" if best is None else self.bindings[best]

    def rank(self, agent: str) -> int:
        return RANKS.get(agent, DEFAULT_RANK)

    def decide(self, policy: str, agent: str, key: str, op: str, value: Any,
               ev: int | None) -> tuple[str | None, Any]:
        """(error code or None, value to store) per the documented policy semantics."""
        cur = self.kv.get(key)
        have = cur.version if cur else 0
        if ev is not None and ev != have:
            return "stale_version", None
        if policy == "reject-stale":
            if ev is None and cur is not None:
                return "stale_version", None
            return None, value
        if policy == "last-writer-wins":
            return None, value
        if policy == "merge":
            if op == "delete":
                return None, None
            base = 0 if cur is None else cur.value
            if isinstance(base, bool) or not isinstance(base, int):
                return "policy_rejected", None
            return None, base + value
        if policy == "priority":
            if cur is not None and self.rank(agent) < self.rank(cur.author):
                return "policy_rejected", None
            return None, value
        raise AssertionError(policy)

    def fence_ok(self, key: str, fence: FenceRef | None) -> bool:
        claim = self.claims.get(key)
        if claim is not None and (fence is None or fence.key != key or fence.fence != claim.fence):
            return False
        if fence is None:
            return True
        held = self.claims.get(fence.key)
        return held is not None and held.fence == fence.fence

    def make_fence(self, key: str, choice: str, data: Any) -> FenceRef | None:
        if choice == "own":
            c = self.claims.get(key)
            return FenceRef(key=key, fence=c.fence) if c else None
        if choice == "stale":
            c = self.claims.get(key)
            stale = [f for f in self.fences_issued if c is None or f != c.fence] or [0]
            return FenceRef(key=key, fence=data.draw(st.sampled_from(stale)))
        if choice == "other" and self.claims:
            other = data.draw(st.sampled_from(sorted(self.claims)))
            return FenceRef(key=other, fence=self.claims[other].fence)
        return None

    def make_version(self, key: str, choice: str) -> int | None:
        have = self.kv[key].version if key in self.kv else 0
        return {"none": None, "current": have, "wrong": have + 1, "zero": 0}[choice]

    def make_lease(self, choice: str, data: Any) -> int | None:
        if choice == "live" and self.leases:
            return int(data.draw(st.sampled_from(sorted(self.leases))))
        if choice == "any":
            return int(data.draw(st.integers(1, self.next_lease + 1)))
        return None

    def remove_key(self, key: str) -> None:
        rec = self.kv.pop(key)
        if rec.lease is not None and rec.lease in self.leases:
            self.leases[rec.lease].keys.discard(key)
        self.claims.pop(key, None)

    def write_key(self, key: str, value: Any, author: str, lease: int | None) -> None:
        old = self.kv.get(key)
        if old is not None and old.lease is not None and old.lease != lease \
                and old.lease in self.leases:
            self.leases[old.lease].keys.discard(key)
        self.kv[key] = MKey(value, old.version + 1 if old else 1, author, lease)
        if lease is not None:
            self.leases[lease].keys.add(key)
        self.revision += 1

    def end_lease(self, lid: int) -> list[str]:
        rec = self.leases.pop(lid)
        for k in [k for k, c in self.claims.items() if c.lease == lid]:
            del self.claims[k]
        gone = sorted(rec.keys)
        if gone:
            self.revision += 1
            for k in gone:
                self.kv.pop(k)
        return gone

    # ------------------------------------------------------------------ driving

    def session_fields(self, agent: str, data: Any) -> tuple[int, int, int, MSession | None]:
        """Maybe send through one of the agent's open (or a closed) session:
        (session, seq, acked_below, rec). A session belongs to the agent that opened it."""
        mine = sorted(sid for sid, rec in self.sessions.items() if rec.agent == agent)
        choices = ["none", "none"]
        if mine:
            choices += ["open", "open"]
        if self.closed:
            choices.append("closed")
        how = data.draw(st.sampled_from(choices))
        if how == "open":
            sid = data.draw(st.sampled_from(mine))
            rec = self.sessions[sid]
            seq = rec.next_seq
            rec.next_seq += 1
            acked = data.draw(st.sampled_from([rec.floor, rec.floor, seq]))
            return sid, seq, acked, rec
        if how == "closed":
            return data.draw(st.sampled_from(sorted(self.closed))), 1, 0, None
        return 0, 0, 0, None

    def run(self, agent: str, cmd: Any, data: Any, *, allow_session: bool = True) -> Result | None:
        """Apply ``cmd`` (maybe inside a session) to both states and check the common
        invariants of one step. Returns the Result if the model should be updated, or None
        if the session layer refused it (closed session)."""
        sid, seq, acked, srec = (self.session_fields(agent, data) if allow_session
                                 else (0, 0, 0, None))
        p = Proposal(agent=agent, session=sid, seq=seq, acked_below=acked, command=cmd)
        before = self.state.snapshot()
        applied = self.apply_both(p)
        res = applied.result
        assert res.error is None or res.error.code != "internal", res.error
        if sid and srec is None:  # a closed session
            assert res.error is not None and res.error.code == "session_expired", res
            assert _core(self.state.snapshot()) == _core(before)
            return None
        if srec is not None:
            if acked > srec.floor:
                srec.floor = acked
                for s in [s for s in srec.sent if s < acked]:
                    del srec.sent[s]
            if seq < srec.floor:
                assert res.error is not None and res.error.code == "invalid", res
                return None
            srec.sent[seq] = (p, res)
        self.check_step(before, applied)
        return res

    def apply_both(self, p: Proposal) -> Applied:
        applied = apply(self.state, p, REGISTRY)
        twin = apply(self.twin, p, REGISTRY)
        assert twin.result == applied.result
        assert [e.model_dump() for e in twin.events] == [e.model_dump() for e in applied.events]
        return applied

    def check_step(self, before: dict[str, Any], applied: Applied) -> None:
        res = applied.result
        after = self.state.snapshot()
        assert res.revision == self.state.revision
        if res.error is not None:
            assert _core(after) == _core(before), f"refusal changed state: {res.error}"
            assert applied.events == []
            if res.error.code in CONFLICT_CODES:
                assert res.error.policy and res.error.reason
        if applied.events:
            assert self.state.revision == before["revision"] + 1
            assert {e.revision for e in applied.events} == {self.state.revision}
        else:
            assert self.state.revision == before["revision"]
        self.events.extend(applied.events)

    def expect(self, res: Result, code: str | None, key: str | None = None) -> None:
        got = res.error.code if res.error else None
        assert got == code, f"model expected {code}, apply gave {res.error or res}"
        if code in CONFLICT_CODES and key is not None:
            assert res.error is not None
            cur = self.kv.get(key)
            if cur is None:
                assert res.error.current is None
            else:
                assert res.error.current is not None
                assert (res.error.current.value, res.error.current.version) == (cur.value,
                                                                               cur.version)

    # ------------------------------------------------------------------ rules

    @initialize()
    def bind_policies(self) -> None:
        for prefix, name in (("m/", "merge"), ("k/", "priority")):
            cmd = SetPolicyCmd(prefix=prefix, name=name, params=POLICY_PARAMS[name])
            assert self.apply_both(Proposal(agent="admin", command=cmd)).result.error is None
            self.bindings[prefix] = name

    @rule(agent=st.sampled_from(AGENTS), key=st.sampled_from(KEYS), value=st.integers(-5, 5),
          ver=version_choice, fen=fence_choice, lea=lease_choice, data=st.data())
    def put(self, agent: str, key: str, value: int, ver: str, fen: str, lea: str,
            data: Any) -> None:
        ev = self.make_version(key, ver)
        fence = self.make_fence(key, fen, data)
        lease = self.make_lease(lea, data)
        cmd = PutCmd(key=key, value=value, expect_version=ev, lease=lease, fence=fence)
        res = self.run(agent, cmd, data)
        if res is None:
            return
        stale_fence = fence is not None and (fence.key not in self.claims
                                             or self.claims[fence.key].fence != fence.fence)
        if not self.fence_ok(key, fence):
            self.expect(res, "fenced_out", key)
            return
        assert not stale_fence
        if lease is not None and lease not in self.leases:
            self.expect(res, "not_found")
            return
        if lease is not None and key in self.claims and lease != self.claims[key].lease:
            self.expect(res, "invalid")  # a claimed key keeps its claim's lease
            return
        code, new = self.decide(self.policy(key), agent, key, "put", value, ev)
        self.expect(res, code, key)
        if code is None:
            if lease is None and key in self.claims:
                lease = self.claims[key].lease
            self.write_key(key, new, agent, lease)
            assert res.entry is not None
            m = self.kv[key]
            assert (res.entry.value, res.entry.version, res.entry.author, res.entry.lease) == (
                m.value, m.version, m.author, m.lease)

    @rule(agent=st.sampled_from(AGENTS), key=st.sampled_from(KEYS), ver=version_choice,
          fen=fence_choice, data=st.data())
    def delete(self, agent: str, key: str, ver: str, fen: str, data: Any) -> None:
        ev = self.make_version(key, ver)
        fence = self.make_fence(key, fen, data)
        res = self.run(agent, DeleteCmd(key=key, expect_version=ev, fence=fence), data)
        if res is None:
            return
        if not self.fence_ok(key, fence):
            self.expect(res, "fenced_out", key)
            return
        if key not in self.kv:
            self.expect(res, "not_found")
            return
        code, _ = self.decide(self.policy(key), agent, key, "delete", None, ev)
        self.expect(res, code, key)
        if code is None:
            last = self.kv[key]
            self.remove_key(key)
            self.revision += 1
            assert res.entry is not None and res.entry.version == last.version

    @rule(agent=st.sampled_from(AGENTS), key=st.sampled_from(KEYS),
          ttl=st.sampled_from([0.5, 2.0, 30.0]), data=st.data())
    def claim(self, agent: str, key: str, ttl: float, data: Any) -> None:
        res = self.run(agent, ClaimCmd(key=key, ttl=ttl), data)
        if res is None:
            return
        held = self.claims.get(key)
        if held is not None:
            if held.owner == agent:
                self.expect(res, None)
                assert res.claim is not None and res.claim.fence == held.fence
            else:
                self.expect(res, "claim_held", key)
            return
        if key in self.kv:
            self.expect(res, "claim_held", key)
            return
        self.expect(res, None)
        assert res.claim is not None
        assert (res.claim.owner, res.claim.lease) == (agent, self.next_lease)
        # fence tokens strictly increase across new owners
        assert all(res.claim.fence > f for f in self.fences_issued)
        self.fences_issued.append(res.claim.fence)
        self.leases[self.next_lease] = MLease(agent)
        self.claims[key] = MClaim(agent, res.claim.fence, self.next_lease)
        self.write_key(key, {"owner": agent, "fence": res.claim.fence}, agent, self.next_lease)
        self.next_lease += 1

    @rule(agent=st.sampled_from(AGENTS), ttl=st.sampled_from([0.25, 1.0, 60.0]), data=st.data())
    def grant(self, agent: str, ttl: float, data: Any) -> None:
        res = self.run(agent, GrantCmd(ttl=ttl), data)
        if res is None:
            return
        self.expect(res, None)
        assert res.lease is not None and res.lease.id == self.next_lease
        assert res.lease.ttl == ttl and res.lease.keys == []
        self.leases[self.next_lease] = MLease(agent)
        self.next_lease += 1

    @rule(agent=st.sampled_from(AGENTS), lea=st.sampled_from(["live", "any"]), data=st.data())
    def keepalive(self, agent: str, lea: str, data: Any) -> None:
        lid = self.make_lease(lea, data) or 1
        res = self.run(agent, KeepAliveCmd(lease=lid), data)
        if res is None:
            return
        if lid not in self.leases:
            self.expect(res, "not_found")
            return
        if self.leases[lid].owner != agent:  # only the holder renews its lease
            self.expect(res, "policy_rejected")
            return
        self.expect(res, None)
        self.leases[lid].refreshes += 1
        assert res.lease is not None and res.lease.refreshes == self.leases[lid].refreshes

    @rule(agent=st.sampled_from(AGENTS), lea=st.sampled_from(["live", "any"]), data=st.data())
    def revoke(self, agent: str, lea: str, data: Any) -> None:
        lid = self.make_lease(lea, data) or 1
        n = len(self.events)
        res = self.run(agent, RevokeCmd(lease=lid), data)
        if res is None:
            return
        if lid not in self.leases:
            self.expect(res, "not_found")
            return
        if self.leases[lid].owner != agent:  # a stranger cannot release someone's lease
            self.expect(res, "policy_rejected")
            return
        self.expect(res, None)
        self.check_lease_end(lid, self.end_lease(lid), self.events[n:], "revoked")

    @rule(lea=st.sampled_from(["live", "any"]), stale=st.booleans(), data=st.data())
    def expire_lease(self, lea: str, stale: bool, data: Any) -> None:
        lid = self.make_lease(lea, data) or 1
        seen = self.leases[lid].refreshes if lid in self.leases else 0
        refreshes = max(seen - 1, 0) if stale else seen
        n = len(self.events)
        res = self.run("leader", ExpireLease(lease=lid, refreshes=refreshes), data,
                       allow_session=False)
        assert res is not None
        self.expect(res, None)
        if lid not in self.leases or refreshes != seen:
            assert self.events[n:] == [] and res.lease is None
            return
        self.check_lease_end(lid, self.end_lease(lid), self.events[n:], "lease-expired")

    def check_lease_end(self, lid: int, gone: list[str], events: list[Event], cause: str) -> None:
        assert res_keys(events) == gone
        assert all(e.kind == "delete" and e.cause == cause for e in events)
        assert len({e.revision for e in events}) <= 1
        assert lid not in self.state.leases
        assert not any(k in self.state.kv for k in gone)
        assert not any(c.lease == lid for c in self.state.claims.values())

    @rule(prefix=st.sampled_from(PREFIXES), name=st.sampled_from(sorted(POLICY_PARAMS)),
          data=st.data())
    def set_policy(self, prefix: str, name: str, data: Any) -> None:
        res = self.run("admin", SetPolicyCmd(prefix=prefix, name=name,
                                             params=POLICY_PARAMS[name]), data)
        if res is None:
            return
        self.expect(res, None)
        self.bindings[prefix] = name

    @rule(agent=st.sampled_from(AGENTS))
    def open_session(self, agent: str) -> None:
        p = Proposal(agent=agent, command=OpenSession())
        before = self.state.snapshot()
        applied = self.apply_both(p)
        assert applied.result.session == self.next_session
        self.check_step(before, applied)
        self.sessions[self.next_session] = MSession(agent)
        self.next_session += 1

    @precondition(lambda self: bool(self.sessions))
    @rule(data=st.data())
    def close_session(self, data: Any) -> None:
        sid = data.draw(st.sampled_from(sorted(self.sessions)))
        rec = self.sessions.pop(sid)
        p = Proposal(agent=rec.agent, session=sid, seq=rec.next_seq, acked_below=rec.floor,
                     command=CloseSession())
        before = self.state.snapshot()
        applied = self.apply_both(p)
        assert applied.result.error is None
        self.check_step(before, applied)
        assert sid not in self.state.sessions
        self.closed.add(sid)

    @precondition(lambda self: any(s.sent for s in self.sessions.values()))
    @rule(data=st.data())
    def retry(self, data: Any) -> None:
        sid = data.draw(st.sampled_from(sorted(s for s, r in self.sessions.items() if r.sent)))
        rec = self.sessions[sid]
        seq = data.draw(st.sampled_from(sorted(rec.sent)))
        p, original = rec.sent[seq]
        before = self.state.snapshot()
        applied = self.apply_both(p)
        assert applied.result == original, "a retry must return the original result"
        assert applied.events == []
        assert _retry_view(self.state.snapshot()) == _retry_view(before)

    @precondition(lambda self: any(s.floor > 1 for s in self.sessions.values()))
    @rule(data=st.data())
    def retry_acked(self, data: Any) -> None:
        sid = data.draw(st.sampled_from(sorted(s for s, r in self.sessions.items()
                                               if r.floor > 1)))
        rec = self.sessions[sid]
        seq = data.draw(st.integers(1, rec.floor - 1))
        p = Proposal(agent="alice", session=sid, seq=seq, acked_below=rec.floor,
                     command=PutCmd(key="z", value=99))
        before = self.state.snapshot()
        applied = self.apply_both(p)
        assert applied.result.error is not None and applied.result.error.code == "invalid"
        assert _core(self.state.snapshot()) == _core(before)

    @rule(data=st.data())
    def never_opened_session(self, data: Any) -> None:
        sid = self.next_session + data.draw(st.integers(0, 3))
        p = Proposal(agent="alice", session=sid, seq=1, command=PutCmd(key="z", value=1))
        before = self.state.snapshot()
        applied = self.apply_both(p)
        assert applied.result.error is not None and applied.result.error.code == "invalid"
        assert _core(self.state.snapshot()) == _core(before)

    @rule(raw=garbage)
    def garbage_never_raises(self, raw: Any) -> None:
        decoded = decode_proposal(raw)
        if not isinstance(decoded, Proposal):
            assert decoded.code == "invalid" and decoded.message
            return
        scratch = BoardState.from_snapshot(self.state.snapshot())
        applied = apply(scratch, decoded, REGISTRY)  # must not raise
        assert isinstance(applied, Applied)
        assert applied.result.revision == scratch.revision

    @rule(through_msgpack=st.booleans())
    def snapshot_roundtrip(self, through_msgpack: bool) -> None:
        snap = self.state.snapshot()
        if through_msgpack:
            snap = msgpack.unpackb(msgpack.packb(snap, use_bin_type=True), raw=False,
                                   strict_map_key=False)
        self.twin = BoardState.from_snapshot(snap)
        assert self.twin.digest() == self.state.digest()

    # ------------------------------------------------------------------ invariants

    @invariant()
    def matches_model(self) -> None:
        s = self.state
        assert s.revision == self.revision
        assert {k: (r.value, r.version, r.author, r.lease) for k, r in s.kv.items()} == {
            k: (m.value, m.version, m.author, m.lease) for k, m in self.kv.items()}
        assert {lid: (r.refreshes, r.keys) for lid, r in s.leases.items()} == {
            lid: (m.refreshes, m.keys) for lid, m in self.leases.items()}
        assert {k: (c.owner, c.fence, c.lease) for k, c in s.claims.items()} == {
            k: (c.owner, c.fence, c.lease) for k, c in self.claims.items()}

    @invariant()
    def structural(self) -> None:
        s = self.state
        for key, c in s.claims.items():
            assert key in s.kv, "a claimed key exists"
            assert c.lease in s.leases, "a claim's lease is alive"
            assert s.kv[key].lease == c.lease, "a claimed key lives with its claim's lease"
        assert len(set(c.fence for c in s.claims.values())) == len(s.claims)
        for lid, rec in s.leases.items():
            for key in rec.keys:
                assert s.kv[key].lease == lid
        for key, r in s.kv.items():
            if r.lease is not None:
                assert key in s.leases[r.lease].keys
            assert r.version >= 1 and r.create_revision <= r.mod_revision <= s.revision

    @invariant()
    def deterministic(self) -> None:
        assert self.twin.digest() == self.state.digest()

    @invariant()
    def watch_stream_rebuilds_kv(self) -> None:
        assert [e.model_dump() for e in self.state.events_since("", 1, limit=10**6)] == [
            e.model_dump() for e in self.events]
        rebuilt: dict[str, Any] = {}
        for e in self.events:
            if e.kind == "put":
                rebuilt[e.key] = (e.entry.value, e.entry.version)
            else:
                assert rebuilt.pop(e.key)[1] == e.entry.version
        assert rebuilt == {k: (m.value, m.version) for k, m in self.kv.items()}


def res_keys(events: list[Event]) -> list[str]:
    return [e.key for e in events]


BoardMachine.TestCase.settings = settings(
    max_examples=120,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
TestBoardMachine = BoardMachine.TestCase
