"""Checks of a recorded run beyond linearizability (pure: records in, findings out).

* :func:`check_exactly_once` — a counter incremented by operations that the client may have
  retried ends within ``[sum of ok increments, sum of ok + indeterminate increments]``: below
  means an acknowledged increment was lost, above means some increment applied twice.
* :func:`check_set_complete` — the final set holds every element whose add was acknowledged and
  nothing that was never attempted.
* :func:`check_watch` — each watcher's stream is ordered, gap-free and equal to the committed
  history over the revisions it covered; every acknowledged write is in the committed history,
  and every committed event was an attempted write.
* :func:`check_versions` — a stream from revision 1 holds every version of every key, so a
  missing event shows even when no client was told about it.
* :func:`check_claims` — never two holders of a task at once, fences increasing, and every
  fenced write committed inside its claim's tenure.

Each returns a :class:`Finding`; ``ok`` findings say what they verified, violations say which
record broke the rule.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from quorumboard.consensus.testing.history import OpRecord, pair_records

__all__ = [
    "Finding",
    "check_claims",
    "check_exactly_once",
    "check_set_complete",
    "check_versions",
    "check_watch",
]

FindingVerdict = Literal["ok", "violation", "unknown"]
EXAMPLES_MAX = 5


class Finding(BaseModel):
    """The outcome of one check: its name, verdict and a sentence or two of evidence."""

    model_config = ConfigDict(frozen=True)

    check: str
    verdict: FindingVerdict
    detail: str


def _final_reads(records: Iterable[OpRecord]) -> dict[str, Any]:
    """key -> value of the last ``ok`` read by the ``final`` process (after the heal)."""
    out: dict[str, Any] = {}
    for inv, done in pair_records(records):
        if inv.process == "final" and inv.f == "read" and done is not None and done.type == "ok":
            out[inv.key] = done.value[1]
    return out


def _judge_finals(check: str, records: Sequence[OpRecord], keys: Iterable[str],
                  judge: Callable[[str, Any], list[str]], ok_detail: str) -> Finding:
    """Apply ``judge(key, final value) -> problems`` to every key's final read: a violation
    if any key has problems, unknown if some key was never read at the end, else ok."""
    finals = _final_reads(records)
    bad: list[str] = []
    unread: list[str] = []
    for key in sorted(keys):
        if key in finals:
            bad += judge(key, finals[key])
        else:
            unread.append(key)
    if bad:
        return Finding(check=check, verdict="violation", detail="; ".join(bad[:EXAMPLES_MAX]))
    if unread:
        return Finding(check=check, verdict="unknown",
                       detail=f"no final read of {', '.join(unread[:EXAMPLES_MAX])}")
    return Finding(check=check, verdict="ok", detail=ok_detail)


def check_exactly_once(records: Sequence[OpRecord], keys: Iterable[str]) -> Finding:
    """Per counter key: final total within [ok adds, ok + indeterminate adds]."""
    ok: dict[str, int] = {}
    maybe: dict[str, int] = {}
    for inv, done in pair_records(records):
        if inv.f != "add":
            continue
        delta = int(inv.value)
        if done is not None and done.type == "ok":
            ok[inv.key] = ok.get(inv.key, 0) + delta
        elif done is None or done.type == "info":
            maybe[inv.key] = maybe.get(inv.key, 0) + delta

    def judge(key: str, final: Any) -> list[str]:
        total = int(final or 0)
        low, high = ok.get(key, 0), ok.get(key, 0) + maybe.get(key, 0)
        if low <= total <= high:
            return []
        what = "lost acknowledged increments" if total < low else "applied an increment twice"
        return [f"{key}: final {total} outside [{low}, {high}] ({what})"]

    return _judge_finals("exactly-once", records, keys, judge,
                         f"every counter within [ok, ok + indeterminate] increments "
                         f"({sum(ok.values())} acknowledged, {sum(maybe.values())} unknown)")


def check_set_complete(records: Sequence[OpRecord], keys: Iterable[str]) -> Finding:
    """Per set key: acknowledged adds present in the final set, nothing unattempted in it."""
    acked: dict[str, set[Any]] = {}
    attempted: dict[str, set[Any]] = {}
    for inv, done in pair_records(records):
        if inv.f != "add":
            continue
        attempted.setdefault(inv.key, set()).add(inv.value)
        if done is not None and done.type == "ok":
            acked.setdefault(inv.key, set()).add(inv.value)

    def judge(key: str, final_value: Any) -> list[str]:
        final = set(final_value or [])
        lost = sorted(acked.get(key, set()) - final)
        phantom = sorted(final - attempted.get(key, set()))
        problems = []
        if lost:
            problems.append(f"{key}: acknowledged adds missing from the final set: {lost[:5]}")
        if phantom:
            problems.append(f"{key}: elements nobody added: {phantom[:5]}")
        return problems

    return _judge_finals("set-complete", records, keys, judge,
                         f"every acknowledged add is in the final sets "
                         f"({sum(len(v) for v in acked.values())} acknowledged)")


Event = tuple[int, str, str, Any]
"""(revision, kind, key, value) of one committed event."""


def check_watch(records: Sequence[OpRecord], streams: Mapping[str, Sequence[Event]],
                committed: Sequence[Event]) -> Finding:
    """``streams``: what each watcher received (from revision 1); ``committed``: the full event
    history of the prefix read after the heal (a fresh watch from revision 1)."""
    problems: list[str] = []
    # One revision may hold several events (a lease's end deletes all its keys at once), so
    # events are identified by (revision, key).
    ids = [(e[0], e[2]) for e in committed]
    if [r for r, _ in ids] != sorted(r for r, _ in ids) or len(set(ids)) != len(ids):
        problems.append("the committed history itself is out of order or repeats an event")
    by_rev = {e[0]: e for e in committed}
    for name, stream in sorted(streams.items()):
        if not stream:
            continue
        got = [e[0] for e in stream]
        bad_order = next((i for i in range(1, len(got))
                          if got[i] < got[i - 1] or stream[i] == stream[i - 1]), None)
        if bad_order is not None:
            problems.append(f"watcher {name}: revision {got[bad_order]} after "
                            f"{got[bad_order - 1]} (out of order or repeated)")
            continue
        expected = [e for e in committed if e[0] <= got[-1]]
        if list(stream) != expected:
            missing = sorted(set(e[0] for e in expected) - set(got))
            extra = sorted(set(got) - set(by_rev))
            changed = [r for r in got if r in by_rev and by_rev[r] not in stream]
            problems.append(f"watcher {name}: differs from the committed history up to "
                            f"revision {got[-1]} (missing {missing[:5]}, not committed "
                            f"{extra[:5]}, different {changed[:5]})")
    writes_ok: list[tuple[str, Any, int]] = []
    attempted: set[tuple[str, str]] = set()
    for inv, done in pair_records(records):
        if inv.f != "write":
            continue
        attempted.add((inv.key, repr(inv.value)))
        if done is not None and done.type == "ok":
            writes_ok.append((inv.key, inv.value, int(done.value[2])))
    for key, value, rev in writes_ok:
        event = by_rev.get(rev)
        if event is None or event[2] != key or event[3] != value:
            problems.append(f"acknowledged write of {key} at revision {rev} is not in the "
                            "committed history")
            break
    phantom = [e for e in committed if e[1] == "put" and (e[2], repr(e[3])) not in attempted]
    if phantom:
        problems.append(f"committed events nobody wrote: {phantom[:3]}")
    if problems:
        return Finding(check="watch", verdict="violation",
                       detail="; ".join(problems[:EXAMPLES_MAX]))
    return Finding(check="watch", verdict="ok",
                   detail=f"{len(streams)} watchers, {sum(len(s) for s in streams.values())} "
                          f"events, all ordered, gap-free and equal to the {len(committed)} "
                          "committed events")


def check_claims(committed: Sequence[Event], task_prefix: str, out_prefix: str) -> Finding:
    """Claims safety, from the committed event history of the workload's prefix.

    Per task key: grants (put events whose value names ``owner`` and ``fence``) and ends
    (deletes: expiry or revoke) alternate — never two holders at once — and fences strictly
    increase. Every committed write under ``out_prefix`` carries ``[writer, fence]`` and must
    have committed inside that fence's tenure (after its grant, before its end): a fenced
    write that landed after its claim ended or was taken over is exactly what fencing forbids."""
    tenures: dict[int, tuple[str, int, float]] = {}  # fence -> (task, granted at, ended at)
    held: dict[str, tuple[int, int]] = {}  # task -> (fence, granted at)
    last_fence = 0
    problems: list[str] = []
    writes = 0
    for rev, kind, key, value in committed:
        if key.startswith(out_prefix):
            continue
        if not key.startswith(task_prefix):
            continue
        if kind == "put":
            fence = value.get("fence") if isinstance(value, dict) else None
            if not isinstance(fence, int):
                problems.append(f"{key} at revision {rev}: a grant without a fence ({value!r})")
                continue
            if key in held:
                problems.append(f"{key} granted again at revision {rev} (fence {fence}) while "
                                f"fence {held[key][0]} still held it: two holders")
            if fence <= last_fence:
                problems.append(f"fence {fence} at revision {rev} does not exceed {last_fence}")
            last_fence = max(last_fence, fence)
            held[key] = (fence, rev)
            tenures[fence] = (key, rev, float("inf"))
        elif key in held:
            fence, start = held.pop(key)
            tenures[fence] = (key, start, rev)
    for rev, kind, key, value in committed:
        if kind != "put" or not key.startswith(out_prefix):
            continue
        writes += 1
        fence = value[1] if isinstance(value, list) and len(value) == 2 else None
        tenure = tenures.get(fence) if isinstance(fence, int) else None
        if tenure is None:
            problems.append(f"write to {key} at revision {rev} names no granted fence "
                            f"({value!r})")
        elif not tenure[1] < rev < tenure[2]:
            problems.append(f"write to {key} at revision {rev} with fence {fence} is outside "
                            f"its claim's tenure on {tenure[0]} (revisions {tenure[1]} to "
                            f"{tenure[2]}): a stale holder wrote")
    if problems:
        return Finding(check="claims", verdict="violation",
                       detail="; ".join(problems[:EXAMPLES_MAX]))
    return Finding(check="claims", verdict="ok",
                   detail=f"{len(tenures)} claims, never two holders of a task, fences "
                          f"increasing, all {writes} fenced writes inside their claim's tenure")


def check_versions(events: Sequence[tuple[int, str, str, int | None]], where: str) -> Finding:
    """A stream read from revision 1 must show every put of every key: versions 1, 2, 3, ...
    per key, starting over after a delete. A version skipped means an event is missing, even
    one no client was told about — independent of which writes were acknowledged."""
    last: dict[str, int] = {}
    for rev, kind, key, version in events:
        if kind == "delete":
            last[key] = 0
            continue
        expected = last.get(key, 0) + 1
        if version != expected:
            return Finding(check="watch", verdict="violation",
                           detail=f"{where}: {key} at revision {rev} has version {version}, "
                                  f"expected {expected}: an event is missing before it")
        last[key] = expected
    return Finding(check="watch", verdict="ok", detail=f"{where}: every version present")
