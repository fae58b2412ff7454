"""``BoardState`` and ``apply``: leases, claims, fencing, sessions, event log, snapshots.

Scenario tests pin each documented rule; Hypothesis checks determinism, snapshot round-trips
and event-log compaction over random proposal sequences.
"""

from __future__ import annotations

from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from quorumboard.consensus.core.model import (
    ClaimCmd,
    CloseSession,
    DeleteCmd,
    ErrorInfo,
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
    VoteCmd,
)
from quorumboard.consensus.core.policies import PolicyRegistry
from quorumboard.consensus.core.state import Applied, BoardState, Limits, apply, decode_proposal
from quorumboard.consensus.errors import RevisionCompacted

REG = PolicyRegistry()


def do(s: BoardState, agent: str, cmd: Any, **kw: Any) -> Applied:
    return apply(s, Proposal(agent=agent, command=cmd, **kw), REG)


def ok(a: Applied) -> Result:
    assert a.result.error is None, a.result.error
    return a.result


def code(a: Applied) -> str | None:
    return a.result.error.code if a.result.error else None


def core(s: BoardState) -> dict[str, Any]:
    snap = s.snapshot()
    return {k: v for k, v in snap.items() if k not in ("applied", "sessions", "audit")}


# ====================================================================== leases and claims


class TestLeases:
    def test_grant_keepalive_revoke(self) -> None:
        s = BoardState()
        lease = ok(do(s, "a", GrantCmd(ttl=1.5))).lease
        assert lease is not None and lease.ttl == 1.5 and lease.refreshes == 0
        assert s.lease_refreshes() == {lease.id: (0, 1500)}
        ok(do(s, "a", PutCmd(key="x", value=1, lease=lease.id)))
        ok(do(s, "a", PutCmd(key="y", value=2, lease=lease.id)))
        ok(do(s, "a", PutCmd(key="keep", value=3)))
        rev = s.revision
        info = ok(do(s, "a", KeepAliveCmd(lease=lease.id))).lease
        assert info is not None and info.refreshes == 1 and info.keys == ["x", "y"]
        assert s.revision == rev  # keepalive is not a kv change
        stranger = do(s, "b", RevokeCmd(lease=lease.id))  # only the holder may release it
        assert stranger.result.error is not None
        assert (stranger.result.error.code, stranger.result.error.reason) == (
            "policy_rejected", "not-owner")
        assert code(do(s, "b", KeepAliveCmd(lease=lease.id))) == "policy_rejected"
        a = do(s, "a", RevokeCmd(lease=lease.id))
        assert a.result.error is None and a.result.revision == rev + 1 == s.revision
        assert [(e.kind, e.key, e.revision, e.cause) for e in a.events] == [
            ("delete", "x", rev + 1, "revoked"), ("delete", "y", rev + 1, "revoked")]
        assert s.entry("x") is None and s.entry("y") is None and s.entry("keep") is not None
        assert s.lease(lease.id) is None
        assert code(do(s, "a", KeepAliveCmd(lease=lease.id))) == "not_found"
        assert code(do(s, "a", RevokeCmd(lease=lease.id))) == "not_found"
        assert code(do(s, "a", PutCmd(key="z", value=1, lease=lease.id))) == "not_found"
        assert s.entry("z") is None

    def test_revoking_an_empty_lease_does_not_bump_revision(self) -> None:
        s = BoardState()
        lid = ok(do(s, "a", GrantCmd(ttl=1))).lease.id  # type: ignore[union-attr]
        a = do(s, "a", RevokeCmd(lease=lid))
        assert a.result.error is None and a.events == [] and s.revision == 0

    def test_expiry_carries_refresh_count(self) -> None:
        s = BoardState()
        lid = ok(do(s, "a", GrantCmd(ttl=1))).lease.id  # type: ignore[union-attr]
        ok(do(s, "a", PutCmd(key="x", value=1, lease=lid)))
        ok(do(s, "a", KeepAliveCmd(lease=lid)))
        before = s.digest()
        stale = do(s, "leader", ExpireLease(lease=lid, refreshes=0))
        assert stale.result.error is None and stale.events == [] and s.entry("x") is not None
        assert core(s) == core(BoardState.from_snapshot(s.snapshot()))
        assert s.digest() != before  # only the applied counter moved
        a = do(s, "leader", ExpireLease(lease=lid, refreshes=1))
        assert [(e.key, e.cause) for e in a.events] == [("x", "lease-expired")]
        assert s.entry("x") is None and s.lease(lid) is None
        gone = do(s, "leader", ExpireLease(lease=lid, refreshes=1))
        assert gone.result.error is None and gone.events == []

    def test_rewrite_without_lease_detaches_key(self) -> None:
        s = BoardState()
        lid = ok(do(s, "a", GrantCmd(ttl=1))).lease.id  # type: ignore[union-attr]
        ok(do(s, "a", PutCmd(key="x", value=1, lease=lid)))
        ok(do(s, "a", PutCmd(key="x", value=2, expect_version=1)))
        assert s.lease(lid).keys == []  # type: ignore[union-attr]
        assert do(s, "a", RevokeCmd(lease=lid)).events == []
        assert s.entry("x").value == 2  # type: ignore[union-attr]


class TestClaims:
    def test_claim_fence_and_release(self) -> None:
        s = BoardState()
        c1 = ok(do(s, "alice", ClaimCmd(key="task/1", ttl=2))).claim
        assert c1 is not None and c1.owner == "alice" and c1.ttl == 2
        e = s.entry("task/1")
        assert e is not None and e.value == {"owner": "alice", "fence": c1.fence}
        assert e.lease == c1.lease
        # the same owner re-claiming gets the same claim, nothing changes
        rev = s.revision
        again = ok(do(s, "alice", ClaimCmd(key="task/1", ttl=2))).claim
        assert again == c1 and s.revision == rev
        # another agent is refused, with the holder
        a = do(s, "bob", ClaimCmd(key="task/1", ttl=2))
        assert code(a) == "claim_held"
        err = a.result.error
        assert err is not None and err.policy == "claim" and err.reason == "held"
        assert err.detail == {"owner": "alice", "fence": c1.fence} and err.current == e
        # writes need the claim's fence
        unfenced = do(s, "alice", PutCmd(key="task/1", value="x", expect_version=1))
        assert code(unfenced) == "fenced_out" and unfenced.result.error.reason == "claimed"  # type: ignore[union-attr]
        fenced = ok(do(s, "alice", PutCmd(key="task/1", value="done", expect_version=1,
                                          fence=FenceRef(key="task/1", fence=c1.fence))))
        assert fenced.entry is not None and fenced.entry.lease == c1.lease  # stays on the claim
        wrong = do(s, "bob", PutCmd(key="task/1", value="mine", expect_version=2,
                                    fence=FenceRef(key="task/1", fence=c1.fence + 1)))
        assert code(wrong) == "fenced_out"
        # the claim's lease expires: key gone, claim gone, fence stale
        a = do(s, "leader", ExpireLease(lease=c1.lease, refreshes=0))
        assert [(ev.kind, ev.key) for ev in a.events] == [("delete", "task/1")]
        assert s.claims == {} and s.entry("task/1") is None
        stale = do(s, "alice", PutCmd(key="task/1", value="late",
                                      fence=FenceRef(key="task/1", fence=c1.fence)))
        assert code(stale) == "fenced_out" and stale.result.error.reason == "stale-fence"  # type: ignore[union-attr]
        assert s.entry("task/1") is None
        # a new owner gets a strictly larger fence
        c2 = ok(do(s, "bob", ClaimCmd(key="task/1", ttl=2))).claim
        assert c2 is not None and c2.fence > c1.fence and c2.owner == "bob"
        old = do(s, "alice", PutCmd(key="task/1", value="late", expect_version=1,
                                    fence=FenceRef(key="task/1", fence=c1.fence)))
        assert code(old) == "fenced_out"
        assert s.entry("task/1").author == "bob"  # type: ignore[union-attr]

    def test_claim_on_existing_key_refused(self) -> None:
        s = BoardState()
        ok(do(s, "a", PutCmd(key="k", value=1)))
        a = do(s, "b", ClaimCmd(key="k", ttl=1))
        assert code(a) == "claim_held" and a.result.error.reason == "key-exists"  # type: ignore[union-attr]
        assert s.claims == {}

    def test_deleting_a_claimed_key_releases_the_claim(self) -> None:
        s = BoardState()
        c = ok(do(s, "a", ClaimCmd(key="k", ttl=1))).claim
        assert c is not None
        assert code(do(s, "a", DeleteCmd(key="k", expect_version=1))) == "fenced_out"
        ok(do(s, "a", DeleteCmd(key="k", expect_version=1, fence=FenceRef(key="k",
                                                                          fence=c.fence))))
        assert s.claims == {}
        c2 = ok(do(s, "b", ClaimCmd(key="k", ttl=1))).claim
        assert c2 is not None and c2.fence > c.fence

    def test_fence_guards_writes_to_other_keys(self) -> None:
        s = BoardState()
        c = ok(do(s, "a", ClaimCmd(key="lock", ttl=1))).claim
        assert c is not None
        ref = FenceRef(key="lock", fence=c.fence)
        ok(do(s, "a", PutCmd(key="data", value=1, fence=ref)))
        ok(do(s, "a", RevokeCmd(lease=c.lease)))
        a = do(s, "a", PutCmd(key="data", value=2, expect_version=1, fence=ref))
        assert code(a) == "fenced_out" and s.entry("data").value == 1  # type: ignore[union-attr]


# ===================================================================== refusal bookkeeping


def test_refusals_change_only_audit_and_applied() -> None:
    s = BoardState()
    ok(do(s, "a", PutCmd(key="k", value=1)))
    before = core(s)
    audit = len(s.audit)
    for cmd in (PutCmd(key="k", value=2), PutCmd(key="k", value=2, expect_version=7),
                DeleteCmd(key="k"), DeleteCmd(key="nope"), KeepAliveCmd(lease=9),
                ClaimCmd(key="k", ttl=1), VoteCmd(key="k", proposal=1, approve=True),
                SetPolicyCmd(prefix="", name="nope")):
        a = do(s, "b", cmd)
        assert a.result.error is not None and a.events == []
        assert core(s) == before
    hist = s.history("k")
    assert [h.outcome for h in hist] == ["put", "rejected", "rejected", "rejected"]
    assert len(s.audit) == audit + 3
    assert all(h.policy == "reject-stale" for h in hist)
    assert "blind-write" in hist[1].decision and "version-mismatch" in hist[2].decision


def test_keys_max_quota() -> None:
    s = BoardState(Limits(keys_max=2))
    ok(do(s, "a", PutCmd(key="a", value=1)))
    ok(do(s, "a", PutCmd(key="b", value=1)))
    a = do(s, "a", PutCmd(key="c", value=1))
    assert code(a) == "policy_rejected" and a.result.error.reason == "quota"  # type: ignore[union-attr]
    ok(do(s, "a", PutCmd(key="a", value=2, expect_version=1)))  # updates still fine


def test_unencodable_strings_never_reach_the_state() -> None:
    """A lone surrogate would make the state undigestible; the wire form is refused instead."""
    s = BoardState()
    for cmd in ({"op": "set_policy", "prefix": "a\ud800", "name": "merge"},
                {"op": "put", "key": "k\ud800", "value": 1},
                {"op": "put", "key": "k", "value": {"\ud800": 1}},
                {"op": "claim", "key": "k", "ttl": 1, "value": "\udc00"}):
        info = decode_proposal({"agent": "a", "command": cmd})
        assert isinstance(info, ErrorInfo) and info.code == "invalid", info
    assert s.digest() == BoardState().digest()


# ============================================================================ sessions


def test_session_retry_returns_original_result() -> None:
    s = BoardState()
    sid = ok(do(s, "a", OpenSession())).session
    assert sid == 1
    first = do(s, "a", PutCmd(key="k", value=1), session=sid, seq=1)
    ok(first)
    refusal = do(s, "a", PutCmd(key="k", value=2), session=sid, seq=2)
    assert code(refusal) == "stale_version"
    snap = s.snapshot()
    for seq, want in ((1, first.result), (2, refusal.result)):
        # even if the retried payload differs, the cached result is returned
        again = do(s, "a", PutCmd(key="k", value=3), session=sid, seq=seq)
        assert again.result == want and again.events == []
    assert s.entry("k").value == 1 and s.entry("k").version == 1  # type: ignore[union-attr]
    after = s.snapshot()
    assert after["kv"] == snap["kv"] and after["events"] == snap["events"]
    assert after["audit"] == snap["audit"] and after["revision"] == snap["revision"]


def test_acked_results_are_freed_and_acked_retry_refused() -> None:
    s = BoardState()
    sid = ok(do(s, "a", OpenSession())).session
    for seq in (1, 2, 3):
        ok(do(s, "a", PutCmd(key=f"k{seq}", value=seq), session=sid, seq=seq))
    assert sorted(s.sessions[sid].results) == [1, 2, 3]  # type: ignore[index]
    ok(do(s, "a", PutCmd(key="k4", value=4), session=sid, seq=4, acked_below=3))
    assert sorted(s.sessions[sid].results) == [3, 4]  # type: ignore[index]
    before = core(s)
    for seq in (1, 2):
        a = do(s, "a", PutCmd(key=f"k{seq}", value=seq), session=sid, seq=seq, acked_below=3)
        assert code(a) == "invalid" and "acknowledged" in a.result.error.message  # type: ignore[union-attr]
        assert core(s) == before
    assert do(s, "a", PutCmd(key="k3", value=3), session=sid, seq=3).result.error is None


def test_results_per_session_bound() -> None:
    s = BoardState(Limits(results_per_session_max=2))
    sid = ok(do(s, "a", OpenSession())).session
    ok(do(s, "a", PutCmd(key="a", value=1), session=sid, seq=1))
    ok(do(s, "a", PutCmd(key="b", value=1), session=sid, seq=2))
    a = do(s, "a", PutCmd(key="c", value=1), session=sid, seq=3)
    assert code(a) == "invalid" and s.entry("c") is None
    ok(do(s, "a", PutCmd(key="c", value=1), session=sid, seq=3, acked_below=2))


def test_session_eviction_lru() -> None:
    s = BoardState(Limits(sessions_max=2))
    s1 = ok(do(s, "a", OpenSession())).session
    s2 = ok(do(s, "b", OpenSession())).session
    ok(do(s, "a", PutCmd(key="x", value=1), session=s1, seq=1))  # s1 now more recent than s2
    s3 = ok(do(s, "c", OpenSession())).session
    assert sorted(s.sessions) == sorted([s1, s3])  # type: ignore[type-var]
    a = do(s, "b", PutCmd(key="y", value=1), session=s2, seq=1)
    assert code(a) == "session_expired" and s.entry("y") is None
    a = do(s, "b", PutCmd(key="y", value=1), session=99, seq=1)
    assert code(a) == "invalid"
    ok(do(s, "a", PutCmd(key="y", value=1), session=s1, seq=2))
    # closing frees the slot and the closed id reads as expired
    ok(do(s, "a", CloseSession(), session=s1, seq=3))
    assert code(do(s, "a", PutCmd(key="z", value=1), session=s1, seq=4)) == "session_expired"


# ============================================================================ event log


def test_events_since_basics() -> None:
    s = BoardState()
    ok(do(s, "a", PutCmd(key="a/1", value=1)))
    ok(do(s, "a", PutCmd(key="b/1", value=1)))
    ok(do(s, "a", PutCmd(key="a/2", value=1)))
    assert [e.key for e in s.events_since("a/", 1)] == ["a/1", "a/2"]
    assert [e.key for e in s.events_since("", 2)] == ["b/1", "a/2"]
    assert s.events_since("", 4) == [] and s.events_since("", 100) == []
    assert [e.revision for e in s.events_since("", 0)] == [1, 2, 3]


def test_compaction_raises_with_compact_revision() -> None:
    s = BoardState(Limits(events_retained_max=2))
    for i in range(5):
        ok(do(s, "a", PutCmd(key=f"k{i}", value=i)))
    with pytest.raises(RevisionCompacted) as info:
        s.events_since("", 1)
    cr = info.value.compact_revision
    assert cr == s.events_compact_revision == 4
    assert [e.revision for e in s.events_since("", cr)] == [4, 5]
    with pytest.raises(RevisionCompacted):
        s.events_since("", cr - 1)


def test_compaction_drops_a_multi_key_revision_whole() -> None:
    s = BoardState(Limits(events_retained_max=3))
    lid = ok(do(s, "a", GrantCmd(ttl=1))).lease.id  # type: ignore[union-attr]
    for k in "abc":
        ok(do(s, "a", PutCmd(key=k, value=1, lease=lid)))
    a = do(s, "a", RevokeCmd(lease=lid))
    assert len(a.events) == 3 and {e.revision for e in a.events} == {4}
    ok(do(s, "a", PutCmd(key="d", value=1)))  # revision 5 pushes the log over 3 events
    evs = s.events_since("", s.events_compact_revision)
    revs = [e.revision for e in evs]
    assert 4 not in revs or revs.count(4) == 3


def _ops(draw: Any, n: int) -> list[tuple[str, Any]]:
    keys = ["a", "b", "c/d", "c/e"]
    ops: list[tuple[str, Any]] = []
    for _ in range(n):
        kind = draw(st.sampled_from(["put", "put", "put", "lput", "del", "grant", "revoke",
                                     "claim", "keep", "expire", "policy", "session"]))
        agent = draw(st.sampled_from(["x", "y"]))
        key = draw(st.sampled_from(keys))
        ev = draw(st.none() | st.integers(0, 3))
        lid = draw(st.integers(1, 4))
        cmd: Any
        if kind == "put":
            cmd = PutCmd(key=key, value=draw(st.integers(0, 3)), expect_version=ev)
        elif kind == "lput":
            cmd = PutCmd(key=key, value=1, expect_version=ev, lease=lid)
        elif kind == "del":
            cmd = DeleteCmd(key=key, expect_version=ev)
        elif kind == "grant":
            cmd = GrantCmd(ttl=1)
        elif kind == "revoke":
            cmd = RevokeCmd(lease=lid)
        elif kind == "claim":
            cmd = ClaimCmd(key=key, ttl=1)
        elif kind == "keep":
            cmd = KeepAliveCmd(lease=lid)
        elif kind == "expire":
            cmd = ExpireLease(lease=lid, refreshes=draw(st.integers(0, 1)))
        elif kind == "policy":
            cmd = SetPolicyCmd(prefix=draw(st.sampled_from(["", "c/"])),
                               name=draw(st.sampled_from(["last-writer-wins", "merge",
                                                          "reject-stale"])))
        else:
            cmd = OpenSession()
        ops.append((agent, cmd))
    return ops


@st.composite
def op_lists(draw: Any, max_size: int = 40) -> list[Proposal]:
    n = draw(st.integers(1, max_size))
    out = []
    sessions = 0
    seqs: dict[int, int] = {}
    for agent, cmd in _ops(draw, n):
        if isinstance(cmd, OpenSession):
            sessions += 1
            out.append(Proposal(agent=agent, command=cmd))
            continue
        sid = draw(st.integers(0, sessions))
        if sid:
            retry = seqs.get(sid) and draw(st.booleans())
            seq = draw(st.integers(1, seqs[sid])) if retry else seqs.get(sid, 0) + 1
            seqs[sid] = max(seqs.get(sid, 0), seq)
            out.append(Proposal(agent=agent, session=sid, seq=seq, command=cmd))
        else:
            out.append(Proposal(agent=agent, command=cmd))
    return out


@settings(max_examples=60, deadline=None)
@given(op_lists(), st.data())
def test_determinism_and_snapshot_resume(props: list[Proposal], data: Any) -> None:
    a, b = BoardState(), BoardState()
    cut = data.draw(st.integers(0, len(props)))
    for i, p in enumerate(props):
        if i == cut:
            snap = msgpack.unpackb(msgpack.packb(a.snapshot(), use_bin_type=True), raw=False)
            b = BoardState.from_snapshot(snap)
            assert b.digest() == a.digest()
            assert b.snapshot() == a.snapshot()
        ra, rb = apply(a, p, REG), apply(b, p, REG)
        assert ra.result == rb.result
        assert ra.result.error is None or ra.result.error.code != "internal", ra.result.error
        assert a.digest() == b.digest()


@settings(max_examples=60, deadline=None)
@given(op_lists(max_size=30), st.integers(1, 4))
def test_compaction_never_splits_a_revision(props: list[Proposal], keep: int) -> None:
    """A small event log serves exactly what a full log would, from its compact revision on."""
    full, small = BoardState(), BoardState(Limits(events_retained_max=keep))
    for p in props:
        apply(full, p, REG)
        apply(small, p, REG)
        assert full.revision == small.revision
        cr = small.events_compact_revision
        assert 1 <= cr <= small.revision + 1
        if cr > 1:
            with pytest.raises(RevisionCompacted) as info:
                small.events_since("", cr - 1)
            assert info.value.compact_revision == cr
        got = [e.model_dump() for e in small.events_since("", cr, limit=10**6)]
        want = [e.model_dump() for e in full.events_since("", cr, limit=10**6)]
        assert got == want
        # with a limit, batches still end on a revision boundary
        batch = small.events_since("", cr, limit=1)
        if batch:
            rev = batch[-1].revision
            assert [e.revision for e in batch] == [rev] * len(batch)
            assert len(batch) == sum(1 for e in full.events_since("", rev, limit=10**6)
                                     if e.revision == rev)
