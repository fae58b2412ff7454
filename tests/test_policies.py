"""Conflict policies: every accept and reject path, directly and through ``apply``.

Expectations come from the documented semantics in consensus/core/policies.py (the README table):
reject-stale is compare-and-set, last-writer-wins is log order (+CAS if asked), merge is
type-aware (RFC 7386 patch, counter, set union, list append), priority is by rank, vote needs
``k`` approvals. CRDT laws are checked as properties.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from quorumboard.consensus.core.model import (
    AnnouncePolicies,
    DeleteCmd,
    GrantCmd,
    OpenSession,
    Proposal,
    PutCmd,
    Result,
    SetPolicyCmd,
    VoteCmd,
    WithdrawCmd,
)
from quorumboard.consensus.core.policies import (
    BUILTIN,
    Accept,
    Current,
    Decision,
    Defer,
    PolicyRegistry,
    Reject,
    Write,
    canonical_bytes,
    last_writer_wins,
    merge,
    merge_patch,
    priority,
    reject_stale,
    tally,
    vote,
)
from quorumboard.consensus.core.state import Applied, BoardState, apply

INT64_MAX = 2**63 - 1
INT64_MIN = -(2**63)


# ------------------------------------------------------------------------------ helpers


class Board:
    """A BoardState driven through ``apply`` with session-less proposals."""

    def __init__(self, reg: PolicyRegistry | None = None) -> None:
        self.state = BoardState()
        self.reg = reg or PolicyRegistry()

    def do(self, agent: str, cmd: Any) -> Applied:
        return apply(self.state, Proposal(agent=agent, command=cmd), self.reg)

    def put(self, agent: str, key: str, value: Any, ev: int | None = None, **kw: Any) -> Result:
        return self.do(agent, PutCmd(key=key, value=value, expect_version=ev, **kw)).result

    def delete(self, agent: str, key: str, ev: int | None = None) -> Result:
        return self.do(agent, DeleteCmd(key=key, expect_version=ev)).result

    def bind(self, prefix: str, name: str, **params: Any) -> Result:
        res = self.do("admin", SetPolicyCmd(prefix=prefix, name=name, params=params)).result
        return res

    def value(self, key: str) -> Any:
        e = self.state.entry(key)
        return None if e is None else e.value


def ok(res: Result) -> Result:
    assert res.error is None, res.error
    return res


def refused(res: Result, code: str, policy: str, reason: str) -> Result:
    assert res.error is not None, f"expected {code}/{reason}, got {res}"
    assert (res.error.code, res.error.policy, res.error.reason) == (code, policy, reason), res.error
    assert res.error.message
    return res


def cur(value: Any, version: int = 1, author: str = "a") -> Current:
    return Current(value, version, author)


def put(value: Any, author: str = "a", ev: int | None = None) -> Write:
    return Write("put", value, author, ev)


# ============================================================================ reject-stale


class TestRejectStale:
    def test_create_without_version(self) -> None:
        d = reject_stale(None, put(1), {})
        assert isinstance(d, Accept) and d.value == 1

    def test_create_with_expect_version_zero(self) -> None:
        d = reject_stale(None, put(1, ev=0), {})
        assert isinstance(d, Accept) and d.value == 1

    def test_create_only_fails_when_key_exists(self) -> None:
        d = reject_stale(cur("x", 2), put(1, ev=0), {})
        assert isinstance(d, Reject) and d.stale and d.reason == "version-mismatch"

    def test_cas_match_and_mismatch(self) -> None:
        d = reject_stale(cur("x", 3), put("y", ev=3), {})
        assert isinstance(d, Accept) and d.value == "y"
        for ev in (0, 2, 4):
            d = reject_stale(cur("x", 3), put("y", ev=ev), {})
            assert isinstance(d, Reject) and d.stale and d.reason == "version-mismatch"

    def test_cas_on_missing_key_with_nonzero_version_is_stale(self) -> None:
        d = reject_stale(None, put("y", ev=1), {})
        assert isinstance(d, Reject) and d.stale

    def test_blind_write_to_existing_is_stale(self) -> None:
        d = reject_stale(cur("x", 1), put("y"), {})
        assert isinstance(d, Reject) and d.stale and d.reason == "blind-write"

    def test_delete_rules(self) -> None:
        assert isinstance(reject_stale(cur("x", 2), Write("delete", None, "a", 2), {}), Accept)
        d = reject_stale(cur("x", 2), Write("delete", None, "a", 1), {})
        assert isinstance(d, Reject) and d.stale
        d = reject_stale(cur("x", 2), Write("delete", None, "a", None), {})
        assert isinstance(d, Reject) and d.reason == "blind-write"

    def test_through_apply(self) -> None:
        b = Board()
        e = ok(b.put("a", "k", 1)).entry
        assert e is not None and e.version == 1
        r = refused(b.put("b", "k", 2), "stale_version", "reject-stale", "blind-write")
        assert r.error is not None and r.error.current is not None
        assert (r.error.current.value, r.error.current.version) == (1, 1)
        r = refused(b.put("b", "k", 2, ev=5), "stale_version", "reject-stale", "version-mismatch")
        assert r.error is not None and r.error.current is not None
        assert r.error.current.version == 1
        e = ok(b.put("b", "k", 2, ev=1)).entry
        assert e is not None and (e.value, e.version, e.author) == (2, 2, "b")
        refused(b.put("c", "k", 3, ev=0), "stale_version", "reject-stale", "version-mismatch")
        refused(b.delete("c", "k"), "stale_version", "reject-stale", "blind-write")
        refused(b.delete("c", "k", ev=1), "stale_version", "reject-stale", "version-mismatch")
        ok(b.delete("c", "k", ev=2))
        assert b.state.entry("k") is None
        r = b.delete("c", "k", ev=2)
        assert r.error is not None and r.error.code == "not_found"
        # re-creation restarts the version count
        e = ok(b.put("d", "k", 9, ev=0)).entry
        assert e is not None and e.version == 1
        # a create with expect_version=0 on a missing key: the rejection carries current=None
        r = refused(b.put("d", "new", 1, ev=3), "stale_version", "reject-stale", "version-mismatch")
        assert r.error is not None and r.error.current is None


# ========================================================================= last-writer-wins


class TestLastWriterWins:
    def test_blind_overwrite_accepted(self) -> None:
        d = last_writer_wins(cur("x", 4), put("y"), {})
        assert isinstance(d, Accept) and d.value == "y"
        assert isinstance(last_writer_wins(None, put("y"), {}), Accept)

    def test_version_still_checked_when_given(self) -> None:
        assert isinstance(last_writer_wins(cur("x", 4), put("y", ev=4), {}), Accept)
        d = last_writer_wins(cur("x", 4), put("y", ev=3), {})
        assert isinstance(d, Reject) and d.stale

    def test_through_apply(self) -> None:
        b = Board()
        ok(b.bind("lww/", "last-writer-wins"))
        ok(b.put("a", "lww/k", 1))
        e = ok(b.put("b", "lww/k", 2)).entry
        assert e is not None and (e.value, e.version) == (2, 2)
        r = refused(b.put("c", "lww/k", 3, ev=1), "stale_version", "last-writer-wins",
                    "version-mismatch")
        assert r.error is not None and r.error.current is not None
        assert r.error.current.value == 2
        ok(b.delete("c", "lww/k"))  # blind delete allowed
        # the binding is by prefix: other keys keep the default
        ok(b.put("a", "other", 1))
        refused(b.put("b", "other", 2), "stale_version", "reject-stale", "blind-write")


# ================================================================================= merge


class TestMerge:
    def test_patch_rfc7386(self) -> None:
        # RFC 7386 appendix A examples
        cases = [
            ({"a": "b"}, {"a": "c"}, {"a": "c"}),
            ({"a": "b"}, {"b": "c"}, {"a": "b", "b": "c"}),
            ({"a": "b"}, {"a": None}, {}),
            ({"a": "b", "b": "c"}, {"a": None}, {"b": "c"}),
            ({"a": ["b"]}, {"a": "c"}, {"a": "c"}),
            ({"a": "c"}, {"a": ["b"]}, {"a": ["b"]}),
            ({"a": {"b": "c"}}, {"a": {"b": "d", "c": None}}, {"a": {"b": "d"}}),
            ({"a": [{"b": "c"}]}, {"a": [1]}, {"a": [1]}),
            ({"e": None}, {"a": 1}, {"e": None, "a": 1}),
            ({}, {"a": {"bb": {"ccc": None}}}, {"a": {"bb": {}}}),
        ]
        for target, patch, want in cases:
            assert merge_patch(target, patch) == want
            d = merge(cur(target), put(patch), {})
            assert isinstance(d, Accept) and d.value == want, (target, patch)
        # non-object patch replaces
        assert merge_patch({"a": 1}, [1]) == [1]
        assert merge_patch({"a": 1}, None) is None

    def test_patch_does_not_mutate_inputs(self) -> None:
        target = {"a": {"b": 1}}
        patch = {"a": {"c": 2}}
        merge_patch(target, patch)
        assert target == {"a": {"b": 1}} and patch == {"a": {"c": 2}}

    def test_patch_create_drops_nulls(self) -> None:
        d = merge(None, put({"a": 1, "b": None, "c": {"d": None}}), {})
        assert isinstance(d, Accept) and d.value == {"a": 1, "c": {}}

    def test_patch_type_mismatch(self) -> None:
        d = merge(cur([1]), put({"a": 1}), {})
        assert isinstance(d, Reject) and d.reason == "type-mismatch" and not d.stale
        d = merge(cur({}), put([1]), {"kind": "patch"})
        assert isinstance(d, Reject) and d.reason == "type-mismatch"

    def test_counter(self) -> None:
        d = merge(None, put(5), {})
        assert isinstance(d, Accept) and d.value == 5
        d = merge(cur(5), put(-7), {})
        assert isinstance(d, Accept) and d.value == -2
        d = merge(cur(1.5), put(2), {"kind": "counter"})
        assert isinstance(d, Accept) and d.value == 3.5
        d = merge(cur(2), put(0.25), {})
        assert isinstance(d, Accept) and d.value == 2.25

    def test_counter_overflow_rejected(self) -> None:
        d = merge(cur(INT64_MAX), put(1), {})
        assert isinstance(d, Reject) and d.reason == "overflow"
        d = merge(cur(INT64_MIN), put(-1), {})
        assert isinstance(d, Reject) and d.reason == "overflow"
        d = merge(cur(INT64_MAX - 1), put(1), {})
        assert isinstance(d, Accept) and d.value == INT64_MAX

    def test_counter_bool_rejected(self) -> None:
        d = merge(cur(1), put(True), {"kind": "counter"})
        assert isinstance(d, Reject) and d.reason == "type-mismatch"
        d = merge(cur(True), put(1), {"kind": "counter"})
        assert isinstance(d, Reject) and d.reason == "type-mismatch"
        # in auto mode a boolean is not a number at all
        d = merge(cur(1), put(True), {})
        assert isinstance(d, Reject) and d.reason == "unmergeable"
        d = merge(cur(True), put(1), {})
        assert isinstance(d, Reject) and d.reason == "type-mismatch"

    def test_counter_type_mismatch(self) -> None:
        d = merge(cur("x"), put(1), {})
        assert isinstance(d, Reject) and d.reason == "type-mismatch"
        d = merge(cur(1), put("x"), {"kind": "counter"})
        assert isinstance(d, Reject) and d.reason == "type-mismatch"

    def test_set_union(self) -> None:
        d = merge(None, put([3, 1, 3, 2]), {"kind": "set"})
        assert isinstance(d, Accept)
        assert sorted(d.value) == [1, 2, 3] and len(d.value) == 3
        first = d.value
        d2 = merge(cur(first), put([2, 4]), {"kind": "set"})
        assert isinstance(d2, Accept) and sorted(d2.value) == [1, 2, 3, 4]
        # idempotent
        d3 = merge(cur(d2.value), put([2, 4]), {"kind": "set"})
        assert isinstance(d3, Accept) and d3.value == d2.value
        # canonical order: the same members in any order produce the same list
        a = merge(None, put([{"x": 1}, "s", 2]), {"kind": "set"})
        b = merge(None, put([2, "s", {"x": 1}]), {"kind": "set"})
        assert isinstance(a, Accept) and isinstance(b, Accept) and a.value == b.value
        # members are compared canonically: key order inside an object does not matter
        c = merge(cur([{"a": 1, "b": 2}]), put([{"b": 2, "a": 1}]), {"kind": "set"})
        assert isinstance(c, Accept) and len(c.value) == 1

    def test_list_append(self) -> None:
        d = merge(cur([1, 2]), put([2, 3]), {})
        assert isinstance(d, Accept) and d.value == [1, 2, 2, 3]
        d = merge(None, put([1]), {"kind": "list"})
        assert isinstance(d, Accept) and d.value == [1]

    def test_list_and_set_type_mismatch(self) -> None:
        for kind in ("set", "list"):
            d = merge(cur([1]), put({"a": 1}), {"kind": kind})
            assert isinstance(d, Reject) and d.reason == "type-mismatch"
            d = merge(cur(5), put([1]), {"kind": kind})
            assert isinstance(d, Reject) and d.reason == "type-mismatch"
        d = merge(cur({"a": 1}), put([1]), {})
        assert isinstance(d, Reject) and d.reason == "type-mismatch"

    @pytest.mark.parametrize("value", ["s", None, True])
    def test_unmergeable_scalars(self, value: Any) -> None:
        d = merge(cur(1), put(value), {})
        assert isinstance(d, Reject) and d.reason == "unmergeable"

    def test_version_checked_and_delete_allowed(self) -> None:
        d = merge(cur(1, 3), put(1, ev=2), {})
        assert isinstance(d, Reject) and d.stale
        assert isinstance(merge(cur(1, 3), Write("delete", None, "a", None), {}), Accept)

    def test_kind_param_validation(self) -> None:
        check = BUILTIN["merge"].check_params
        for kind in ("auto", "patch", "counter", "set", "list"):
            check({"kind": kind})
        check({})
        from quorumboard.consensus.errors import UnknownPolicy

        with pytest.raises(UnknownPolicy, match="kind"):
            check({"kind": "bag"})
        with pytest.raises(UnknownPolicy, match="colour"):
            check({"colour": "red"})

    def test_through_apply(self) -> None:
        b = Board()
        ok(b.bind("c/", "merge"))
        ok(b.bind("s/", "merge", kind="set"))
        ok(b.put("a", "c/n", 2))
        ok(b.put("b", "c/n", 3))
        e = ok(b.put("c", "c/n", -1)).entry
        assert e is not None and (e.value, e.version) == (4, 3)
        r = refused(b.put("c", "c/n", "x"), "policy_rejected", "merge", "unmergeable")
        assert r.error is not None and r.error.current is not None
        assert r.error.current.value == 4
        refused(b.put("c", "c/n", [1]), "policy_rejected", "merge", "type-mismatch")
        ok(b.put("a", "c/max", INT64_MAX))
        r = refused(b.put("a", "c/max", 1), "policy_rejected", "merge", "overflow")
        assert b.value("c/max") == INT64_MAX
        # float overflow to infinity is refused by value validation, not stored
        ok(b.put("a", "c/f", 1e308))
        r = b.put("a", "c/f", 1e308)
        assert r.error is not None and r.error.policy == "merge"
        assert b.value("c/f") == 1e308
        ok(b.put("a", "s/x", ["b", "a"]))
        ok(b.put("b", "s/x", ["c", "a"]))
        assert sorted(b.value("s/x")) == ["a", "b", "c"]
        refused(b.put("b", "s/x", 1), "policy_rejected", "merge", "type-mismatch")
        ok(b.put("a", "c/doc", {"a": {"b": 1}}))
        ok(b.put("b", "c/doc", {"a": {"c": 2, "b": None}}))
        assert b.value("c/doc") == {"a": {"c": 2}}
        r = refused(b.bind("x/", "merge", kind="multiset"), "unknown_policy", "", "")


# =============================================================================== priority


class TestPriority:
    params: Mapping[str, Any] = {"ranks": {"boss": 10, "mid": 5, "low": 1}}

    def test_lower_rank_rejected(self) -> None:
        d = priority(cur("x", 1, "boss"), put("y", "mid"), self.params)
        assert isinstance(d, Reject) and d.reason == "lower-rank" and not d.stale

    def test_equal_and_higher_accepted(self) -> None:
        assert isinstance(priority(cur("x", 1, "mid"), put("y", "mid"), self.params), Accept)
        assert isinstance(priority(cur("x", 1, "mid"), put("y", "boss"), self.params), Accept)
        assert isinstance(priority(None, put("y", "low"), self.params), Accept)

    def test_default_rank(self) -> None:
        # unknown agents get default_rank (0 unless given)
        d = priority(cur("x", 1, "low"), put("y", "stranger"), self.params)
        assert isinstance(d, Reject)
        p = {**self.params, "default_rank": 5}
        assert isinstance(priority(cur("x", 1, "mid"), put("y", "stranger"), p), Accept)
        assert isinstance(priority(cur("x", 1, "boss"), put("y", "stranger"), p), Reject)
        assert isinstance(priority(cur("x", 1, "stranger"), put("y", "other"), {}), Accept)

    def test_cas_when_version_given(self) -> None:
        d = priority(cur("x", 2, "low"), put("y", "boss", ev=1), self.params)
        assert isinstance(d, Reject) and d.stale
        assert isinstance(priority(cur("x", 2, "low"), put("y", "boss", ev=2), self.params),
                          Accept)

    def test_param_validation(self) -> None:
        from quorumboard.consensus.errors import UnknownPolicy

        check = BUILTIN["priority"].check_params
        check({"ranks": {"a": 1}, "default_rank": -3})
        for bad in ({"ranks": {"a": "1"}}, {"ranks": {"a": True}}, {"ranks": [1]},
                    {"default_rank": 1.5}, {"default_rank": True}, {"level": 1}):
            with pytest.raises(UnknownPolicy):
                check(bad)

    def test_through_apply(self) -> None:
        b = Board()
        ok(b.bind("p/", "priority", ranks={"boss": 10, "low": 1}))
        ok(b.put("boss", "p/k", "plan"))
        r = refused(b.put("low", "p/k", "mine"), "policy_rejected", "priority", "lower-rank")
        assert r.error is not None and r.error.current is not None
        assert (r.error.current.value, r.error.current.author) == ("plan", "boss")
        ok(b.put("boss", "p/k", "plan2"))
        refused(b.delete("low", "p/k"), "policy_rejected", "priority", "lower-rank")
        ok(b.delete("boss", "p/k"))
        # once gone, anyone creates, and then a higher rank overrides
        ok(b.put("low", "p/k", "x"))
        ok(b.put("boss", "p/k", "y"))
        refused(b.bind("q/", "priority", ranks={"a": "high"}), "unknown_policy", "", "")


# =================================================================================== vote


class TestVote:
    def test_defer_with_k(self) -> None:
        d = vote(None, put(1), {"k": 3})
        assert isinstance(d, Defer) and d.k == 3
        d = vote(None, put(1), {})
        assert isinstance(d, Defer) and d.k == 2

    def test_non_voter_proposer(self) -> None:
        d = vote(None, put(1, "eve"), {"k": 1, "voters": ["a", "b"]})
        assert isinstance(d, Reject) and d.reason == "not-a-voter"
        d = vote(None, put(1, "eve"), {"k": 1, "voters": ["a", "b"], "proposer_approves": False})
        assert isinstance(d, Defer)

    def test_tally(self) -> None:
        assert tally(["a"], [], {"k": 2}) == "pending"
        assert tally(["a", "b"], [], {"k": 2}) == "approved"
        assert tally([], ["a"], {"k": 2}) == "pending"
        assert tally([], ["a", "b"], {"k": 2}) == "rejected"
        v = {"k": 2, "voters": ["a", "b", "c"]}
        assert tally(["a"], ["b"], v) == "pending"
        assert tally([], ["b", "c"], v) == "rejected"  # only one voter left
        assert tally(["a", "c"], ["b"], v) == "approved"

    def test_param_validation(self) -> None:
        from quorumboard.consensus.errors import UnknownPolicy

        check = BUILTIN["vote"].check_params
        check({"k": 1})
        check({"k": 2, "voters": ["a", "b"], "proposer_approves": False})
        for bad in ({"k": 0}, {"k": True}, {"k": "2"}, {"k": 3, "voters": ["a", "b", "a"]},
                    {"voters": "ab"}, {"voters": [1, 2]}, {"proposer_approves": 1},
                    {"quorum": 2}):
            with pytest.raises(UnknownPolicy):
                check(bad)

    def _board(self, **params: Any) -> Board:
        b = Board()
        ok(b.bind("v/", "vote", **params))
        return b

    def test_k_approvals_decide_proposer_counts(self) -> None:
        b = self._board(k=2)
        r = ok(b.put("alice", "v/plan", "A"))
        assert r.pending is not None and r.pending.status == "pending"
        assert r.pending.approvals == ["alice"] and r.entry is None
        assert b.state.entry("v/plan") is None  # nothing written until decided
        rev = b.state.revision
        r = ok(b.do("bob", VoteCmd(key="v/plan", proposal=r.pending.id, approve=True)).result)
        assert r.pending is not None and r.pending.status == "approved"
        assert r.entry is not None and (r.entry.value, r.entry.author) == ("A", "alice")
        assert b.state.revision == rev + 1
        ev = b.state.events_since("v/", rev + 1)
        assert [(e.kind, e.cause) for e in ev] == [("put", "vote-approved")]

    def test_k1_applies_immediately(self) -> None:
        b = self._board(k=1)
        r = ok(b.put("alice", "v/x", 1))
        assert r.pending is not None and r.pending.status == "approved"
        assert b.value("v/x") == 1

    def test_proposer_approves_false(self) -> None:
        b = self._board(k=1, proposer_approves=False)
        r = ok(b.put("alice", "v/x", 1))
        assert r.pending is not None and r.pending.approvals == []
        assert r.pending.status == "pending"
        pid = r.pending.id
        r = ok(b.do("bob", VoteCmd(key="v/x", proposal=pid, approve=True)).result)
        assert r.pending is not None and r.pending.status == "approved"

    def test_voters_restriction(self) -> None:
        b = self._board(k=2, voters=["alice", "bob", "carol"])
        r = refused(b.put("eve", "v/x", 1), "policy_rejected", "vote", "not-a-voter")
        r = ok(b.put("alice", "v/x", 1))
        assert r.pending is not None
        pid = r.pending.id
        refused(b.do("eve", VoteCmd(key="v/x", proposal=pid, approve=True)).result,
                "policy_rejected", "vote", "not-a-voter")
        r = ok(b.do("carol", VoteCmd(key="v/x", proposal=pid, approve=True)).result)
        assert r.pending is not None and r.pending.status == "approved"

    def test_rejections_decide_when_k_unreachable(self) -> None:
        b = self._board(k=2, voters=["alice", "bob", "carol"])
        pid = ok(b.put("alice", "v/x", 1)).pending.id  # type: ignore[union-attr]
        r = ok(b.do("bob", VoteCmd(key="v/x", proposal=pid, approve=False)).result)
        assert r.pending is not None and r.pending.status == "pending"  # carol could still
        r = ok(b.do("carol", VoteCmd(key="v/x", proposal=pid, approve=False)).result)
        assert r.pending is not None and r.pending.status == "rejected"
        assert b.state.entry("v/x") is None

    def test_rejections_without_voter_list(self) -> None:
        b = self._board(k=2)
        pid = ok(b.put("alice", "v/x", 1)).pending.id  # type: ignore[union-attr]
        r = ok(b.do("bob", VoteCmd(key="v/x", proposal=pid, approve=False)).result)
        assert r.pending is not None and r.pending.status == "pending"
        r = ok(b.do("carol", VoteCmd(key="v/x", proposal=pid, approve=False)).result)
        assert r.pending is not None and r.pending.status == "rejected"

    def test_double_vote_refused(self) -> None:
        b = self._board(k=3)
        pid = ok(b.put("alice", "v/x", 1)).pending.id  # type: ignore[union-attr]
        refused(b.do("alice", VoteCmd(key="v/x", proposal=pid, approve=True)).result,
                "policy_rejected", "vote", "already-voted")
        ok(b.do("bob", VoteCmd(key="v/x", proposal=pid, approve=False)).result)
        refused(b.do("bob", VoteCmd(key="v/x", proposal=pid, approve=True)).result,
                "policy_rejected", "vote", "already-voted")
        (p,) = b.state.pending_for("v/x")
        assert (p.approvals, p.rejections) == (["alice"], ["bob"])

    def test_withdraw_by_author_only(self) -> None:
        b = self._board(k=2)
        pid = ok(b.put("alice", "v/x", 1)).pending.id  # type: ignore[union-attr]
        refused(b.do("bob", WithdrawCmd(key="v/x", proposal=pid)).result,
                "policy_rejected", "vote", "not-author")
        r = ok(b.do("alice", WithdrawCmd(key="v/x", proposal=pid)).result)
        assert r.pending is not None and r.pending.status == "withdrawn"
        refused(b.do("bob", VoteCmd(key="v/x", proposal=pid, approve=True)).result,
                "policy_rejected", "vote", "decided")
        assert b.state.entry("v/x") is None

    def test_decided_stays_decided(self) -> None:
        b = self._board(k=2)
        pid = ok(b.put("alice", "v/x", 1)).pending.id  # type: ignore[union-attr]
        ok(b.do("bob", VoteCmd(key="v/x", proposal=pid, approve=True)).result)
        rev = b.state.revision
        for agent, cmd in [
            ("carol", VoteCmd(key="v/x", proposal=pid, approve=False)),
            ("carol", VoteCmd(key="v/x", proposal=pid, approve=True)),
            ("alice", WithdrawCmd(key="v/x", proposal=pid)),
        ]:
            refused(b.do(agent, cmd).result, "policy_rejected", "vote", "decided")
        assert b.state.revision == rev
        assert b.state.pending_for("v/x")[0].status == "approved"

    def test_unknown_proposal_or_wrong_key(self) -> None:
        b = self._board(k=2)
        pid = ok(b.put("alice", "v/x", 1)).pending.id  # type: ignore[union-attr]
        r = b.do("bob", VoteCmd(key="v/y", proposal=pid, approve=True)).result
        assert r.error is not None and r.error.code == "not_found"
        r = b.do("bob", VoteCmd(key="v/x", proposal=pid + 100, approve=True)).result
        assert r.error is not None and r.error.code == "not_found"

    def test_superseded_when_key_changed_meanwhile(self) -> None:
        b = self._board(k=2)
        p1 = ok(b.put("alice", "v/x", "A")).pending.id  # type: ignore[union-attr]
        p2 = ok(b.put("bob", "v/x", "B")).pending.id  # type: ignore[union-attr]
        ok(b.do("carol", VoteCmd(key="v/x", proposal=p2, approve=True)).result)
        assert b.value("v/x") == "B"
        rev = b.state.revision
        r = ok(b.do("carol", VoteCmd(key="v/x", proposal=p1, approve=True)).result)
        assert r.pending is not None and r.pending.status == "superseded"
        assert b.value("v/x") == "B" and b.state.revision == rev

    def test_cas_against_base_version(self) -> None:
        b = self._board(k=1)
        ok(b.put("alice", "v/x", 1))
        refused(b.put("bob", "v/x", 2, ev=0), "stale_version", "vote", "version-mismatch")
        r = ok(b.put("bob", "v/x", 2, ev=1))
        assert r.entry is not None and r.entry.version == 2

    def test_delete_under_vote_refused(self) -> None:
        b = self._board(k=1)
        ok(b.put("alice", "v/x", 1))
        r = refused(b.delete("alice", "v/x"), "policy_rejected", "vote", "vote-delete")
        assert r.error is not None and r.error.current is not None

    def test_vote_approved_put_keeps_its_lease(self) -> None:
        b = self._board(k=1)
        lease = ok(b.do("alice", GrantCmd(ttl=5)).result).lease
        assert lease is not None
        ok(b.put("alice", "v/x", 1, lease=lease.id))
        e = b.state.entry("v/x")
        assert e is not None and e.lease == lease.id

    def test_superseded_when_key_deleted_and_recreated(self) -> None:
        b = Board()
        lease = ok(b.do("alice", GrantCmd(ttl=5)).result).lease
        assert lease is not None
        ok(b.put("alice", "v/x", "orig", lease=lease.id))  # version 1, default policy
        ok(b.bind("v/", "vote", k=2))
        p_old = ok(b.put("alice", "v/x", "A")).pending.id  # type: ignore[union-attr]
        from quorumboard.consensus.core.model import RevokeCmd

        ok(b.do("alice", RevokeCmd(lease=lease.id)).result)  # v/x deleted
        p_new = ok(b.put("bob", "v/x", "B")).pending.id  # type: ignore[union-attr]
        ok(b.do("carol", VoteCmd(key="v/x", proposal=p_new, approve=True)).result)
        assert b.value("v/x") == "B"  # re-created, version 1 again
        r = ok(b.do("carol", VoteCmd(key="v/x", proposal=p_old, approve=True)).result)
        assert r.pending is not None and r.pending.status == "superseded"
        assert b.value("v/x") == "B"


# ========================================================================= custom policies


def only_even(current: Current | None, write: Write, params: Mapping[str, Any]) -> Decision:
    if isinstance(write.value, int) and write.value % 2 == 0:
        return Accept(write.value, "even")
    return Reject("odd", f"{write.value!r} is not even")


def announce(b: Board, policies: dict[str, str], n: int = 3, replicas: int | None = None) -> None:
    for i in range(n if replicas is None else replicas):
        ok(b.do(f"r{i}", AnnouncePolicies(replica=f"r{i}", cluster_size=n,
                                          policies=policies)).result)


class TestCustom:
    def test_registered_by_name_in_a_registry_instance(self) -> None:
        reg = PolicyRegistry()
        reg.register("even", only_even, version="2")
        assert reg.get("even") is not None and reg.custom_versions() == {"even": "2"}
        assert PolicyRegistry().get("even") is None  # not global
        b = Board(reg)
        announce(b, {"even": "2"})
        ok(b.bind("e/", "even"))
        ok(b.put("a", "e/n", 2))
        r = refused(b.put("a", "e/n", 3), "policy_rejected", "even", "odd")
        assert r.error is not None and r.error.current is not None
        assert r.error.current.value == 2
        ok(b.put("a", "e/n", 4))
        assert b.value("e/n") == 4

    def test_builtin_names_cannot_be_replaced(self) -> None:
        from quorumboard.consensus.errors import UnknownPolicy

        reg = PolicyRegistry()
        with pytest.raises(UnknownPolicy):
            reg.register("merge", only_even)
        with pytest.raises(UnknownPolicy):
            reg.register("", only_even)
        with pytest.raises(UnknownPolicy):
            reg.register("x" * 65, only_even)

    def test_unknown_names_and_bad_params(self) -> None:
        b = Board()
        announce(b, {})
        for name, params in [("nope", {}), ("merge", {"kind": "bag"}),
                             ("reject-stale", {"x": 1}), ("vote", {"k": 0})]:
            before = b.state.snapshot()
            r = b.bind("x/", name, **params)
            assert r.error is not None and r.error.code == "unknown_policy", (name, r)
            assert b.state.policy_for("x/k").name == "reject-stale"
            assert _core(b.state.snapshot()) == _core(before)

    def test_custom_params_check(self) -> None:
        from quorumboard.consensus.errors import UnknownPolicy

        def check(p: Mapping[str, Any]) -> None:
            if set(p) - {"mod"}:
                raise UnknownPolicy("only mod")

        def boom(p: Mapping[str, Any]) -> None:
            raise ValueError("boom")

        reg = PolicyRegistry()
        reg.register("even", only_even, check_params=check)
        reg.register("boom", only_even, check_params=boom)
        b = Board(reg)
        announce(b, reg.custom_versions())
        ok(b.bind("e/", "even", mod=2))
        refused(b.bind("e/", "even", other=2), "unknown_policy", "", "")
        r = refused(b.bind("e/", "boom"), "unknown_policy", "", "")
        assert r.error is not None and "boom" in r.error.message

    def test_not_announced_by_every_replica(self) -> None:
        reg = PolicyRegistry()
        reg.register("even", only_even, version="1")
        b = Board(reg)
        r = b.bind("e/", "even")  # nobody announced anything
        assert r.error is not None and r.error.code == "unknown_policy"
        announce(b, {"even": "1"}, n=3, replicas=2)  # third replica silent
        r = b.bind("e/", "even")
        assert r.error is not None and r.error.code == "unknown_policy"
        assert "not yet announced" in r.error.message
        ok(b.do("r2", AnnouncePolicies(replica="r2", cluster_size=3, policies={})).result)
        r = b.bind("e/", "even")
        assert r.error is not None and r.error.code == "unknown_policy" and "r2" in r.error.message
        ok(b.do("r2", AnnouncePolicies(replica="r2", cluster_size=3,
                                       policies={"even": "0"})).result)
        r = b.bind("e/", "even")  # other version
        assert r.error is not None and r.error.code == "unknown_policy"
        ok(b.do("r2", AnnouncePolicies(replica="r2", cluster_size=3,
                                       policies={"even": "1"})).result)
        ok(b.bind("e/", "even"))
        assert b.state.policy_for("e/k").name == "even"

    def test_set_policy_halts_when_announced_but_missing_locally(self) -> None:
        b = Board(PolicyRegistry())
        announce(b, {"even": "1"})
        before = b.state.digest()
        a = b.do("admin", SetPolicyCmd(prefix="e/", name="even"))
        assert a.halt is not None and "even" in a.halt
        assert a.result.error is not None and a.result.error.code == "internal"
        assert b.state.digest() == before

    def test_bound_policy_missing_locally_halts_without_mutation(self) -> None:
        reg = PolicyRegistry()
        reg.register("even", only_even)
        b = Board(reg)
        announce(b, {"even": "1"})
        ok(b.bind("e/", "even"))
        ok(b.put("a", "e/n", 2))
        sid = b.do("a", OpenSession()).result.session
        lacking = PolicyRegistry()
        before = b.state.digest()
        for cmd in (PutCmd(key="e/n", value=4, expect_version=1),
                    DeleteCmd(key="e/n", expect_version=1),
                    VoteCmd(key="e/n", proposal=1, approve=True)):
            for session, seq in ((0, 0), (sid, 1)):
                a = apply(b.state, Proposal(agent="a", session=session or 0, seq=seq,
                                            command=cmd), lacking)
                assert a.halt is not None and "even" in a.halt and a.events == []
                assert a.result.error is not None and a.result.error.code == "internal"
                # nothing at all changed: not even the applied counter or the session cache
                assert b.state.digest() == before
        # the same entries apply on a replica that has the policy
        r = b.do("a", PutCmd(key="e/n", value=4, expect_version=1)).result
        assert r.error is None

    def test_halt_leaves_digest_unchanged(self) -> None:
        reg = PolicyRegistry()
        reg.register("even", only_even)
        b = Board(reg)
        announce(b, {"even": "1"})
        ok(b.bind("e/", "even"))
        before = b.state.digest()
        a = apply(b.state, Proposal(agent="a", command=PutCmd(key="e/n", value=2)),
                  PolicyRegistry())
        assert a.halt is not None
        assert b.state.digest() == before

    def test_raising_custom_policy_refuses_identically(self) -> None:
        def broken(current: Current | None, write: Write, params: Mapping[str, Any]) -> Decision:
            raise ZeroDivisionError("oops")

        reg = PolicyRegistry()
        reg.register("broken", broken)
        b = Board(reg)
        announce(b, {"broken": "1"})
        ok(b.bind("z/", "broken"))
        r = refused(b.put("a", "z/k", 1), "policy_rejected", "broken", "policy-error")
        assert r.error is not None and "ZeroDivisionError" in r.error.message
        assert b.state.entry("z/k") is None

    def test_custom_policy_returning_invalid_value_is_refused(self) -> None:
        def nan(current: Current | None, write: Write, params: Mapping[str, Any]) -> Decision:
            return Accept(math.nan, "nan")

        reg = PolicyRegistry()
        reg.register("nan", nan)
        b = Board(reg)
        announce(b, {"nan": "1"})
        ok(b.bind("n/", "nan"))
        refused(b.put("a", "n/k", 1), "policy_rejected", "nan", "result-invalid")
        assert b.state.entry("n/k") is None

    def test_longest_prefix_wins(self) -> None:
        b = Board()
        ok(b.bind("a/", "last-writer-wins"))
        ok(b.bind("a/b/", "merge"))
        assert b.state.policy_for("a/x").name == "last-writer-wins"
        assert b.state.policy_for("a/b/x").name == "merge"
        assert b.state.policy_for("z").name == "reject-stale"
        ok(b.put("u", "a/b/c", 1))
        ok(b.put("u", "a/b/c", 1))
        assert b.value("a/b/c") == 2


def _core(snap: dict[str, Any]) -> dict[str, Any]:
    """The replicated content of a snapshot, minus bookkeeping counters of applied entries."""
    return {k: v for k, v in snap.items() if k not in ("applied", "sessions", "audit")}


# ======================================================================== CRDT properties


def _apply_all(writes: list[Any], params: Mapping[str, Any]) -> Any:
    value: Any = None
    version = 0
    for w in writes:
        d = merge(None if version == 0 else cur(value, version), put(w), params)
        assert isinstance(d, Accept), d
        value, version = d.value, version + 1
    return value


small_ints = st.integers(-(10**12), 10**12)
members = st.one_of(
    st.integers(-5, 5), st.text(max_size=2), st.booleans(), st.none(),
    st.lists(st.integers(0, 2), max_size=2),
    st.dictionaries(st.sampled_from("ab"), st.integers(0, 2), max_size=2),
)
set_writes = st.lists(st.lists(members, max_size=4), min_size=1, max_size=5)


@settings(max_examples=100, deadline=None)
@given(set_writes, st.randoms(use_true_random=False))
def test_set_merge_independent_of_order(writes: list[list[Any]], rnd: Any) -> None:
    shuffled = list(writes)
    rnd.shuffle(shuffled)
    a = _apply_all(writes, {"kind": "set"})
    b = _apply_all(shuffled, {"kind": "set"})
    assert canonical_bytes(a) == canonical_bytes(b)
    # the result is exactly the set of distinct members (canonically compared), no duplicates
    flat = {canonical_bytes(m) for w in writes for m in w}
    assert sorted(canonical_bytes(m) for m in a) == sorted(flat)


@settings(max_examples=150, deadline=None)
@given(st.lists(members, max_size=4), st.lists(members, max_size=4), st.lists(members, max_size=4))
def test_set_merge_associative_commutative_idempotent(
    x: list[Any], y: list[Any], z: list[Any]
) -> None:
    p = {"kind": "set"}

    def u(base: list[Any], w: list[Any]) -> list[Any]:
        d = merge(cur(base), put(w), p)
        assert isinstance(d, Accept)
        return list(d.value)

    x0 = _apply_all([x], p)
    y0 = _apply_all([y], p)
    cb = canonical_bytes
    assert cb(u(x0, y)) == cb(u(y0, x))  # commutative
    assert cb(u(u(x0, y), z)) == cb(u(x0, u(y0, z)))  # associative
    assert cb(u(x0, x)) == cb(x0)  # idempotent
    assert cb(u(u(x0, y), y)) == cb(u(x0, y))


@settings(max_examples=200, deadline=None)
@given(st.lists(small_ints, min_size=1, max_size=8), st.randoms(use_true_random=False))
def test_int_counter_independent_of_order(deltas: list[int], rnd: Any) -> None:
    shuffled = list(deltas)
    rnd.shuffle(shuffled)
    assert _apply_all(deltas, {}) == _apply_all(shuffled, {}) == sum(deltas)
    assert _apply_all(deltas, {"kind": "counter"}) == sum(deltas)


@settings(max_examples=100, deadline=None)
@given(small_ints, small_ints, small_ints)
def test_int_counter_associative(a: int, b: int, c: int) -> None:
    def add(x: int, y: int) -> int:
        d = merge(cur(x), put(y), {})
        assert isinstance(d, Accept)
        return int(d.value)

    assert add(add(a, b), c) == add(a, add(b, c))
    assert add(a, b) == add(b, a)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.floats(-1e6, 1e6, allow_nan=False), min_size=1, max_size=6),
       st.randoms(use_true_random=False))
def test_float_counter_order_independent_up_to_rounding(deltas: list[float], rnd: Any) -> None:
    shuffled = list(deltas)
    rnd.shuffle(shuffled)
    a, b = _apply_all(deltas, {}), _apply_all(shuffled, {})
    assert math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-6)


def test_list_append_is_order_dependent() -> None:
    witness = next(
        (x, y) for x, y in itertools.product([[1], [2]], repeat=2)
        if _apply_all([x, y], {}) != _apply_all([y, x], {})
    )
    assert witness == ([1], [2])
    assert _apply_all([[1], [2]], {}) == [1, 2]
    assert _apply_all([[2], [1]], {}) == [2, 1]


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(0, 3), min_size=1, max_size=3),
       st.lists(st.integers(0, 3), min_size=1, max_size=3))
def test_list_append_order_matters_unless_equal(x: list[int], y: list[int]) -> None:
    xy, yx = _apply_all([x, y], {}), _apply_all([y, x], {})
    assert xy == x + y and yx == y + x
    assert sorted(xy) == sorted(yx)  # same multiset, possibly different order


def test_merge_patch_is_order_dependent() -> None:
    a, b = {"owner": "alice"}, {"owner": "bob"}
    assert _apply_all([a, b], {}) == {"owner": "bob"}
    assert _apply_all([b, a], {}) == {"owner": "alice"}
    # and a null removal does not commute with a set
    c, d = {"k": 1}, {"k": None}
    assert _apply_all([{"x": 0}, c, d], {}) != _apply_all([{"x": 0}, d, c], {})


@settings(max_examples=60, deadline=None)
@given(st.dictionaries(st.sampled_from("abc"), st.integers(0, 3) | st.none(), max_size=3),
       st.dictionaries(st.sampled_from("abc"), st.integers(0, 3) | st.none(), max_size=3))
def test_merge_patch_commutes_iff_no_overlapping_members(p: dict[str, Any], q: dict[str, Any]) -> None:
    pq, qp = _apply_all([{"z": 9}, p, q], {}), _apply_all([{"z": 9}, q, p], {})
    clash = any(p[k] != q[k] for k in set(p) & set(q))
    assert (pq != qp) == clash


# ------------------------------------------------------------------ the registry apply is given


def test_apply_decides_with_the_registry_it_is_given_never_a_late_registration() -> None:
    """``apply`` takes its policy registry as an argument (no default, so no process-global),
    and a replica applies with a snapshot taken at start: a policy registered later in the
    process (a late import) is not in the snapshot, so this replica halts on it exactly as a
    peer without it would, instead of deciding differently from its peers."""
    import inspect

    assert inspect.signature(apply).parameters["policies"].default is inspect.Parameter.empty
    process = PolicyRegistry()
    process.register("early", last_writer_wins, version="1")
    at_start = process.snapshot()
    process.register("late", last_writer_wins, version="1")
    assert at_start.get("early") is not None and at_start.get("late") is None
    assert at_start.custom_versions() == {"early": "1"}
    assert process.get("late") is not None

    board = Board(process)
    announce(board, {"early": "1", "late": "1"})  # as if every peer had it
    assert board.bind("p/", "late").error is None  # the process's registry has it
    board.reg = at_start
    halted = board.do("a", PutCmd(key="p/x", value=1))
    assert halted.halt is not None and "late" in halted.halt and "p/x" not in board.state.kv
