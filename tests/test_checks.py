"""The run checks of consensus/testing/checks.py on hand-made histories: each passes a correct one and
names what is wrong in a broken one (lost or doubled increments, lost or phantom set elements,
watch gaps and reorderings, two claim holders, a stale fence's write)."""

from __future__ import annotations

from typing import Any

from quorumboard.consensus.testing.checks import (
    check_claims,
    check_exactly_once,
    check_set_complete,
    check_watch,
)
from quorumboard.consensus.testing.history import OpRecord


def _ops(*ops: tuple[str, str, str, Any, str, Any]) -> list[OpRecord]:
    """(process, f, key, invoke value, completion type or "" for none, completion value)."""
    out: list[OpRecord] = []
    t = 0
    for process, f, key, inp, kind, outv in ops:
        out.append(OpRecord(index=len(out), process=process, type="invoke", f=f, key=key,
                            value=inp, time_ns=t))
        t += 1
        if kind:
            out.append(OpRecord(index=len(out), process=process, type=kind, f=f, key=key,
                                value=outv, time_ns=t))
            t += 1
    return out


def _final(key: str, value: Any) -> tuple[str, str, str, Any, str, Any]:
    return ("final", "read", key, None, "ok", [1, value])


def test_exactly_once_bounds() -> None:
    adds = [("c0", "add", "k", 1, "ok", ["ok", 1]), ("c1", "add", "k", 1, "info", None),
            ("c2", "add", "k", 1, "fail", None)]
    for total, verdict in ((1, "ok"), (2, "ok"), (0, "violation"), (3, "violation")):
        finding = check_exactly_once(_ops(*adds, _final("k", total)), ["k"])
        assert finding.verdict == verdict, (total, finding)
    assert "twice" in check_exactly_once(_ops(*adds, _final("k", 3)), ["k"]).detail
    assert check_exactly_once(_ops(*adds), ["k"]).verdict == "unknown"  # no final read


def test_set_complete_finds_lost_and_phantom_elements() -> None:
    adds = [("c0", "add", "s", 7, "ok", ["ok", [7]]), ("c1", "add", "s", 8, "info", None)]
    assert check_set_complete(_ops(*adds, _final("s", [7])), ["s"]).verdict == "ok"
    assert check_set_complete(_ops(*adds, _final("s", [7, 8])), ["s"]).verdict == "ok"
    lost = check_set_complete(_ops(*adds, _final("s", [8])), ["s"])
    assert lost.verdict == "violation" and "missing" in lost.detail
    phantom = check_set_complete(_ops(*adds, _final("s", [7, 9])), ["s"])
    assert phantom.verdict == "violation" and "nobody added" in phantom.detail


def test_watch_streams_must_equal_the_committed_history() -> None:
    writes = _ops(("c0", "write", "k", 5, "ok", ["ok", 1, 1]),
                  ("c0", "write", "k", 6, "ok", ["ok", 2, 2]))
    committed = [(1, "put", "k", 5), (2, "put", "k", 6)]
    assert check_watch(writes, {"w0": committed, "w1": committed[:1]}, committed).verdict == "ok"
    gap = check_watch(writes, {"w0": [committed[1]]}, committed)
    assert gap.verdict == "violation" and "missing [1]" in gap.detail
    order = check_watch(writes, {"w0": [committed[1], committed[0]]}, committed)
    assert order.verdict == "violation" and "out of order" in order.detail
    lost = check_watch(writes, {}, committed[:1])
    assert lost.verdict == "violation" and "not in the committed history" in lost.detail
    phantom = check_watch(writes, {}, [*committed, (3, "put", "k", 99)])
    assert phantom.verdict == "violation" and "nobody wrote" in phantom.detail


def test_claims_safety() -> None:
    grant = {"owner": "a", "fence": 1}
    ok = [(1, "put", "t/0", grant), (2, "put", "out/0", ["c0", 1]), (3, "delete", "t/0", None),
          (4, "put", "t/0", {"owner": "b", "fence": 2}), (5, "put", "out/0", ["c1", 2])]
    assert check_claims(ok, "t/", "out/").verdict == "ok"
    stale = [*ok, (6, "put", "out/0", ["c0", 1])]  # fence 1 ended at revision 3
    finding = check_claims(stale, "t/", "out/")
    assert finding.verdict == "violation" and "outside its claim's tenure" in finding.detail
    two = [(1, "put", "t/0", grant), (2, "put", "t/0", {"owner": "b", "fence": 2})]
    assert "two holders" in check_claims(two, "t/", "out/").detail
    back = [(1, "put", "t/0", {"owner": "a", "fence": 5}), (2, "delete", "t/0", None),
            (3, "put", "t/0", {"owner": "b", "fence": 4})]
    assert "does not exceed" in check_claims(back, "t/", "out/").detail


def test_versions_reveal_a_missing_event_nobody_was_told_about() -> None:
    from quorumboard.consensus.testing.checks import check_versions

    full = [(1, "put", "k", 1), (2, "put", "j", 1), (3, "put", "k", 2), (4, "delete", "k", None),
            (5, "put", "k", 1)]
    assert check_versions(full, "w0").verdict == "ok"
    puts = [(1, "put", "k", 1), (2, "put", "j", 1), (3, "put", "k", 2), (4, "put", "k", 3)]
    gap = check_versions([e for e in puts if e[0] != 3], "w0")  # k's version 2 never shown
    assert gap.verdict == "violation" and "k at revision 4 has version 3" in gap.detail
    lost_delete = check_versions([e for e in full if e[0] != 4], "w0")
    assert lost_delete.verdict == "violation" and "expected 3" in lost_delete.detail
    # (a put lost just before a delete leaves no trace in versions: the delete starts over)
