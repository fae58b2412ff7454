"""The state machine's byte bounds, pure (no process): the retained event log and audit trail
keep at most a byte bound of values (older records keep metadata and a digest), and the space
quota refuses, identically on every replica, a write that would exceed it."""

from __future__ import annotations

from typing import Any

import msgpack

from quorumboard.consensus.core.model import (
    DeleteCmd,
    Proposal,
    PutCmd,
    SetPolicyCmd,
    VoteCmd,
    value_bytes,
    value_sha256,
)
from quorumboard.consensus.core.policies import PolicyRegistry
from quorumboard.consensus.core.state import BoardState, Limits, apply

BUILTINS = PolicyRegistry()
VALUE_CHARS = 1_000
KEEP_BYTES = 3 * (VALUE_CHARS + 3)  # three values of 1,000 characters (str16 header: 3 bytes)


def _p(cmd: object, agent: str = "a") -> Proposal:
    return Proposal.model_validate({"agent": agent, "command": cmd})


def _run(state: BoardState, cmd: object, agent: str = "a") -> Any:
    return apply(state, _p(cmd, agent), BUILTINS).result


def _value(i: int) -> str:
    return f"{i:04d}" + "x" * (VALUE_CHARS - 4)


def _overwrites(state: BoardState, count: int, keys: int = 2) -> list[str]:
    _run(state, SetPolicyCmd(prefix="big/", name="last-writer-wins"))
    written = []
    for i in range(count):
        value = _value(i)
        assert _run(state, PutCmd(key=f"big/{i % keys}", value=value)).error is None
        written.append(value)
    return written


def _held(values: list[Any]) -> int:
    """Bytes of the values a log really holds, counted here independently of the state's
    own counters."""
    return sum(value_bytes(v) for v in values if v is not None)


def test_events_past_the_byte_bound_keep_metadata_and_digest() -> None:
    s = BoardState(Limits(events_value_bytes_max=KEEP_BYTES))
    written = _overwrites(s, 40)
    events = s.events_since("big/", 1, limit=1_000)
    assert [e.revision for e in events] == list(range(1, 41)), "every change is still streamed"
    held = [e for e in events if not e.value_dropped]
    assert [e.revision for e in held] == [38, 39, 40], "the newest values are kept, in order"
    assert [e.entry.value for e in held] == written[-3:]
    for e, value in zip(events[:-3], written, strict=False):
        assert e.entry.value is None and e.value_sha256 == value_sha256(value)
        assert e.entry.version >= 1 and e.entry.author == "a" and e.key.startswith("big/")
    assert _held([e.entry.value for e in events]) <= KEEP_BYTES
    assert s.events_value_bytes == _held([e.entry.value for e in events])


def test_audit_past_the_byte_bound_keeps_metadata_and_digest() -> None:
    s = BoardState(Limits(audit_value_bytes_max=KEEP_BYTES))
    written = _overwrites(s, 40, keys=1)
    history = s.history("big/0")
    assert [h.version for h in history] == list(range(1, 41)), "every version is still audited"
    assert [h.value for h in history[-3:]] == written[-3:]
    assert all(h.value is None and h.value_sha256 == value_sha256(v)
               for h, v in zip(history[:-3], written, strict=False))
    assert _held([h.value for h in history]) <= KEEP_BYTES
    # a refused attempt's value counts too, and is dropped first once newer ones arrive
    _run(s, SetPolicyCmd(prefix="cas/", name="reject-stale"))
    _run(s, PutCmd(key="cas/x", value=_value(1)))
    refused = _run(s, PutCmd(key="cas/x", value=_value(2), expect_version=7))
    assert refused.error is not None and refused.error.code == "stale_version"
    assert s.history("cas/x")[-1].value == _value(2)
    _overwrites(s, 3, keys=1)
    assert s.history("cas/x")[-1].value_dropped
    assert _held([a.value for a in s.audit]) <= KEEP_BYTES


def test_memory_held_by_the_logs_stays_bounded_by_bytes_not_count() -> None:
    """Many more values than the bound: the bytes the logs hold stop growing at it, while the
    item caps (20,000) are nowhere near."""
    s = BoardState(Limits(events_value_bytes_max=KEEP_BYTES, audit_value_bytes_max=KEEP_BYTES))
    _overwrites(s, 500, keys=5)
    assert len(s.events) == len(s.audit) == 500
    assert _held([e.entry.value for e in s.events]) <= KEEP_BYTES
    assert _held([a.value for a in s.audit]) <= KEEP_BYTES
    assert s.space_bytes == sum(len(k) + value_bytes(r.value) for k, r in s.kv.items())


def test_snapshot_restores_the_byte_accounting() -> None:
    """A replica restored from a snapshot counts bytes as the one that applied the log did:
    the same later commands give the same digest (refusals included)."""
    limits = Limits(events_value_bytes_max=KEEP_BYTES, audit_value_bytes_max=KEEP_BYTES,
                    space_quota_bytes=6 * VALUE_CHARS)
    live = BoardState(limits)
    _overwrites(live, 30, keys=3)
    restored = BoardState.from_snapshot(live.snapshot())
    assert restored.digest() == live.digest()
    for rec in [*live.events, *live.audit]:  # the snapshot's fast rows are pydantic's dumps
        assert rec.row() == rec.model_dump(mode="python")
    assert (restored.space_bytes, restored.events_value_bytes, restored.audit_value_bytes) == \
        (live.space_bytes, live.events_value_bytes, live.audit_value_bytes)
    later = [PutCmd(key=f"big/{i % 7}", value=_value(100 + i)) for i in range(12)]
    codes = []
    for cmd in later:
        codes.append([(r.error.code if r.error else None)
                      for r in (_run(live, cmd), _run(restored, cmd))])
        assert restored.digest() == live.digest()
    assert ["space_quota", "space_quota"] in codes, "the quota was reached on both"


def test_space_quota_refuses_a_write_past_it_and_a_delete_recovers() -> None:
    s = BoardState(Limits(space_quota_bytes=3 * (VALUE_CHARS + 10)))
    for k in ("q/a", "q/b", "q/c"):
        assert _run(s, PutCmd(key=k, value=_value(0))).error is None
    before = s.snapshot()["kv"]
    refused = _run(s, PutCmd(key="q/d", value=_value(1)))
    assert refused.error is not None and refused.error.code == "space_quota"
    assert refused.error.detail["quota_bytes"] == s.limits.space_quota_bytes
    assert refused.error.detail["used_bytes"] == s.space_bytes
    assert "q/d" in refused.error.message and "delete" in refused.error.message
    assert s.snapshot()["kv"] == before, "a refused write changes no key"
    # a write that does not grow the board past its quota still applies ...
    assert _run(s, PutCmd(key="q/a", value="small", expect_version=1)).error is None
    # ... and so does every delete, which frees space
    assert _run(s, DeleteCmd(key="q/b", expect_version=1)).error is None
    assert _run(s, PutCmd(key="q/d", value=_value(1))).error is None
    assert s.space_bytes <= s.limits.space_quota_bytes


def test_open_proposals_count_against_the_quota_until_decided() -> None:
    s = BoardState(Limits(space_quota_bytes=2 * (VALUE_CHARS + 10)))
    _run(s, SetPolicyCmd(prefix="v/", name="vote", params={"k": 2}))
    opened = _run(s, PutCmd(key="v/x", value=_value(1)))
    assert opened.pending is not None and opened.pending.status == "pending"
    assert s.space_bytes == value_bytes(_value(1))
    assert _run(s, PutCmd(key="v/y", value=_value(2))).pending is not None
    third = _run(s, PutCmd(key="v/z", value=_value(3)))
    assert third.error is not None and third.error.code == "space_quota"
    approved = _run(s, VoteCmd(key="v/x", proposal=opened.pending.id, approve=True), agent="b")
    assert approved.entry is not None and approved.entry.value == _value(1)
    assert approved.pending is not None and approved.pending.value == _value(1)
    assert s.space_bytes == value_bytes(_value(1)) + len("v/x") + value_bytes(_value(2))
    assert s.pending[opened.pending.id].value is None, "a decided proposal frees its value"


def test_value_bytes_is_the_msgpack_size() -> None:
    """The quota counts msgpack bytes; scalars are sized without packing: at every boundary of
    msgpack's encodings the two agree."""
    ints = [b + d for b in (0, 32, 128, 256, 2**16, 2**32, 2**63 - 1) for d in (-1, 0, 1)]
    samples: list[Any] = [None, True, False, 0.5, -1e300, *ints, *(-i for i in ints),
                          -(2**63), {"a": [1, "x"]}, [], "é" * 20, "€" * 11]
    samples += ["a" * n for n in (0, 31, 32, 255, 256, 65535, 65536)]
    for v in samples:
        if isinstance(v, int) and not -(2**63) <= v < 2**63:
            continue
        assert value_bytes(v) == len(msgpack.packb(v, use_bin_type=True)), repr(v)[:40]
