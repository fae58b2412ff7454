"""Linearizability checking of recorded histories (pure: no clock, no I/O).

The search is Wing & Gong's, with Lowe's memoisation of (linearised set, model state) pairs, as
in Porcupine (Athalye, 2017): walk the history's call and return events in time order; at a
call, try to linearise that operation now (the model accepts its output from the current
state); at a return whose operation is not yet linearised, undo the last choice. A history is
linearisable iff every operation can be placed.

* **P-compositionality.** Linearisability is local (Herlihy & Wing): a history is linearisable
  iff each key's sub-history is, so each key is checked alone — the search cost is exponential
  in a key's concurrency, not the whole history's.
* **Indeterminate operations** (Jepsen's ``info``: a timeout or a lost connection; the edit may
  or may not have applied) get a return time of +infinity and an unknown output: they may take
  effect at any point after their call, or never (placed after every observation, they change
  nothing observed), and the model accepts whatever they would have returned.
* **Bounded.** The search stops after ``steps_max`` steps, or when ``should_stop()`` (polled
  every 1,024 steps; the caller's clock lives there, not here) says so, and answers
  ``unknown`` instead of hanging.
* **Failing window.** For a key that is not linearisable, the smallest failing prefix is found
  by bisection: the history cut at time T (operations still running at T become indeterminate,
  a relaxation, so a violation in the cut is a violation in the whole) — the report names the
  operations of that prefix and the last one, which no order can explain.
"""

from __future__ import annotations

import abc
import dataclasses
import math
from collections.abc import Callable, Hashable, Iterable, Sequence
from typing import Any, Literal, Protocol, TypeVar

from quorumboard.consensus.core.invariant import check

__all__ = [
    "UNKNOWN",
    "CasRegister",
    "CheckResult",
    "Counter",
    "KeyResult",
    "LwwRegister",
    "Model",
    "Operation",
    "SetModel",
    "check_operations",
]

S = TypeVar("S", bound=Hashable)

Verdict = Literal["ok", "violation", "unknown"]


class _Unknown:
    """The output of an indeterminate operation (it may or may not have taken effect)."""

    _instance: _Unknown | None = None

    def __new__(cls) -> _Unknown:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "UNKNOWN"


UNKNOWN: Any = _Unknown()


@dataclasses.dataclass(frozen=True)
class Operation:
    """One completed or indeterminate client operation on one key.

    ``call`` and ``ret`` are the client's monotonic invoke and completion times (one clock for
    the whole history); ``ret`` is ``math.inf`` and ``output`` is :data:`UNKNOWN` for an
    indeterminate operation. ``input`` and ``output`` are whatever the key's model understands.
    """

    id: int
    client: str
    key: str
    input: tuple[Any, ...]
    output: Any
    call: float
    ret: float

    @property
    def indeterminate(self) -> bool:
        return self.output is UNKNOWN


class Model(Protocol[S]):
    """A sequential specification: a pure, deterministic step function over hashable states.

    ``step`` says whether ``op`` may take effect in ``state`` with the output it recorded (an
    :data:`UNKNOWN` output is always accepted) and returns the state after it."""

    name: str

    def init(self) -> S: ...

    def step(self, state: S, op: Operation) -> tuple[bool, S]: ...

    def describe(self, op: Operation) -> str: ...


# --------------------------------------------------------------------------------- models


class _ReadWriteModel(abc.ABC):
    """A model whose ``("read",)`` returns the whole state and whose other operations have an
    :meth:`effect`: the output they must report and the state after them."""

    name = "model"

    @abc.abstractmethod
    def init(self) -> Any:
        """The state of a key nobody has written."""

    @abc.abstractmethod
    def effect(self, state: Any, inp: tuple[Any, ...]) -> tuple[Any, Any] | None:
        """``(expected output, state after)`` of ``inp`` in ``state``; ``None`` if unknown."""

    def step(self, state: Any, op: Operation) -> tuple[bool, Any]:
        if op.input[0] == "read":
            return (op.indeterminate or op.output == state), state
        effect = self.effect(state, op.input)
        if effect is None:
            return False, state
        output, after = effect
        return (op.indeterminate or op.output == output), after

    def describe(self, op: Operation) -> str:
        return _describe(op)


class CasRegister(_ReadWriteModel):
    """A key under ``reject-stale``: compare-and-set on the version.

    State ``(version, value)``, version 0 = absent. Inputs: ``("read",)`` → output
    ``(version, value)``; ``("cas", expect_version, value)`` → ``("ok", new_version)`` or
    ``("conflict", current_version)`` (a refusal is an observation too, and is checked)."""

    name = "cas-register"

    def init(self) -> tuple[int, Any]:
        return (0, None)

    def effect(self, state: tuple[int, Any], inp: tuple[Any, ...]) -> tuple[Any, Any] | None:
        if inp[0] != "cas":
            return None
        _, expect, value = inp
        if state[0] != expect:
            return ("conflict", state[0]), state
        return ("ok", expect + 1), (expect + 1, value)


class LwwRegister(_ReadWriteModel):
    """A key under ``last-writer-wins``: every write applies, in log order.

    State ``(version, value)``. Inputs: ``("read",)`` → ``(version, value)``;
    ``("write", value)`` → ``("ok", new_version)``."""

    name = "lww-register"

    def init(self) -> tuple[int, Any]:
        return (0, None)

    def effect(self, state: tuple[int, Any], inp: tuple[Any, ...]) -> tuple[Any, Any] | None:
        if inp[0] != "write":
            return None
        return ("ok", state[0] + 1), (state[0] + 1, inp[1])


class Counter(_ReadWriteModel):
    """A key under ``merge`` with ``kind=counter``: adds commute, reads see the sum.

    State: the total. Inputs: ``("read",)`` → total (0 when absent); ``("add", n)`` →
    ``("ok", total_after)``."""

    name = "counter"

    def init(self) -> int:
        return 0

    def effect(self, state: int, inp: tuple[Any, ...]) -> tuple[Any, Any] | None:
        return None if inp[0] != "add" else (("ok", state + inp[1]), state + inp[1])


class SetModel(_ReadWriteModel):
    """A key under ``merge`` with ``kind=set``: union. State: a frozenset.

    Inputs: ``("read",)`` → frozenset; ``("add", x)`` → ``("ok", frozenset_after)``."""

    name = "set"

    def init(self) -> frozenset[Any]:
        return frozenset()

    def effect(self, state: frozenset[Any], inp: tuple[Any, ...]) -> tuple[Any, Any] | None:
        if inp[0] != "add":
            return None
        after = state | {inp[1]}
        return ("ok", after), after


def _describe(op: Operation) -> str:
    args = ", ".join(repr(a) for a in op.input[1:])
    out = "?" if op.indeterminate else repr(op.output)
    end = "…" if math.isinf(op.ret) else f"{op.ret:.6f}"
    return f"#{op.id} {op.client} {op.input[0]}({args}) -> {out}  [{op.call:.6f}, {end}]"


# --------------------------------------------------------------------------------- results


@dataclasses.dataclass(frozen=True)
class KeyResult:
    """The verdict for one key's sub-history.

    For a violation: ``window`` is the smallest failing prefix found (its operations, in call
    order, cut at ``cut_time``), ``culprit`` the operation whose completion at ``cut_time`` makes
    it fail (everything before that completion has a valid order), and
    ``linearized`` the longest order the search could build before giving up on it."""

    key: str
    model: str
    verdict: Verdict
    operations: int
    steps: int
    window: tuple[Operation, ...] = ()
    culprit: Operation | None = None
    linearized: tuple[Operation, ...] = ()
    cut_time: float = math.inf
    reason: str = ""


@dataclasses.dataclass(frozen=True)
class CheckResult:
    """``violation`` if any key has one; else ``unknown`` if any key ran out of budget;
    else ``ok``."""

    verdict: Verdict
    keys: tuple[KeyResult, ...]

    @property
    def violations(self) -> tuple[KeyResult, ...]:
        return tuple(k for k in self.keys if k.verdict == "violation")

    def explain(self, model_for: Callable[[str], Model[Any]] | None = None) -> str:
        """A human-readable account: the verdict, then each violating key's failing window."""
        lines = [f"verdict: {self.verdict} ({len(self.keys)} keys, "
                 f"{sum(k.operations for k in self.keys)} operations)"]
        for k in self.keys:
            if k.verdict == "unknown":
                lines.append(f"  key {k.key!r}: unknown ({k.reason})")
        for k in self.violations:
            lines.append(f"  key {k.key!r} ({k.model}): not linearizable; smallest failing "
                         f"prefix has {len(k.window)} operations:")
            for op in k.window:
                mark = ("  <- no valid order once this completes"
                        if op is k.culprit else
                        "  (still running at the cut: outcome treated as unknown)"
                        if op.ret > k.cut_time else "")
                lines.append(f"    {_describe(op)}{mark}")
        return "\n".join(lines)


# --------------------------------------------------------------------------------- search

STEPS_MAX_DEFAULT = 5_000_000
"""Search steps per key before answering ``unknown`` (about a few seconds of CPU)."""
_STOP_POLL_STEPS = 1_024


@dataclasses.dataclass
class _Outcome:
    ok: bool | None  # None: out of budget
    steps: int
    culprit: Operation | None = None
    linearized: tuple[Operation, ...] = ()


def _search(ops: Sequence[Operation], model: Model[Any], steps_max: int,
            should_stop: Callable[[], bool] | None) -> _Outcome:
    """WGL over one key's operations. Returns whether they linearize (None: budget spent)."""
    n = len(ops)
    if n == 0:
        return _Outcome(True, 0)
    # Event slots 1..2n; slot 0 is the list head. Calls sort before returns at equal times
    # (operations that touch in time count as concurrent: the permissive choice).
    events = sorted(
        [(op.call, 0, i) for i, op in enumerate(ops)] + [(op.ret, 1, i) for i, op in enumerate(ops)]
    )
    size = 2 * n + 1
    nxt = list(range(1, size + 1))
    prv = list(range(-1, size - 1))
    nxt[size - 1] = -1
    is_call = [False] * size
    op_of = [0] * size
    match = [0] * size
    call_slot = [0] * n
    ret_slot = [0] * n
    for slot, (_, kind, i) in enumerate(events, start=1):
        is_call[slot] = kind == 0
        op_of[slot] = i
        if kind == 0:
            call_slot[i] = slot
        else:
            ret_slot[i] = slot
    for i in range(n):
        match[call_slot[i]] = ret_slot[i]
        match[ret_slot[i]] = call_slot[i]

    def lift(slot: int) -> None:
        for s in (slot, match[slot]):
            p, q = prv[s], nxt[s]
            nxt[p] = q
            if q != -1:
                prv[q] = p

    def unlift(slot: int) -> None:
        for s in (match[slot], slot):
            p, q = prv[s], nxt[s]
            nxt[p] = s
            if q != -1:
                prv[q] = s

    state = model.init()
    linearized = 0
    cache: set[tuple[int, Any]] = set()
    calls: list[tuple[int, Any]] = []
    best: list[int] = []
    low = 0  # the stack's lowest depth since ``best`` was last brought up to date
    entry = nxt[0]
    steps = 0
    for steps in range(1, steps_max + 1):  # bounded: the step budget
        if nxt[0] == -1:
            return _Outcome(True, steps)
        if should_stop is not None and steps % _STOP_POLL_STEPS == 0 and should_stop():
            return _Outcome(None, steps)
        if is_call[entry]:
            i = op_of[entry]
            ok, after = model.step(state, ops[i])
            if ok:
                marked = linearized | (1 << i)
                memo = (marked, after)
                if memo not in cache:
                    cache.add(memo)
                    calls.append((entry, state))
                    state, linearized = after, marked
                    lift(entry)
                    entry = nxt[0]
                    continue
            entry = nxt[entry]
        else:
            # The longest partial order, kept for the report, is updated when the search
            # backtracks from a record depth, and only above the lowest depth the stack has
            # reached since the last update (below it, ``best`` and the stack still agree):
            # amortised O(1) per step. Copying the whole stack at each new record made a
            # linearizable key of n operations cost O(n^2): 74 of 78 s at 80,000 operations.
            if len(calls) > len(best):
                del best[low:]
                best.extend(op_of[s] for s, _ in calls[low:])
                low = len(calls)
            if not calls:
                return _Outcome(False, steps, culprit=ops[op_of[entry]],
                                linearized=tuple(ops[i] for i in best))
            top, state = calls.pop()
            low = min(low, len(calls))
            linearized &= ~(1 << op_of[top])
            unlift(top)
            entry = nxt[top]
    return _Outcome(None, steps)


def _cut(ops: Sequence[Operation], t: float) -> list[Operation]:
    """The history as seen at time ``t``: operations called by then; those still running
    become indeterminate (a relaxation: a violation here is a violation of the whole)."""
    out = []
    for op in ops:
        if op.call > t:
            continue
        if op.ret > t and not op.indeterminate:
            op = dataclasses.replace(op, output=UNKNOWN, ret=math.inf)
        out.append(op)
    return out


def _check_key(key: str, ops: list[Operation], model: Model[Any], steps_max: int,
               should_stop: Callable[[], bool] | None) -> KeyResult:
    ops = sorted(ops, key=lambda o: (o.call, o.id))
    outcome = _search(ops, model, steps_max, should_stop)
    if outcome.ok is None:
        return KeyResult(key, model.name, "unknown", len(ops), outcome.steps,
                         reason=f"search budget spent after {outcome.steps} steps")
    if outcome.ok:
        return KeyResult(key, model.name, "ok", len(ops), outcome.steps)
    # Bisect the smallest failing prefix (violation is monotone in the cut time).
    times = sorted({op.ret for op in ops if not math.isinf(op.ret)})
    lo, hi = 0, len(times) - 1
    found = outcome
    steps = outcome.steps
    for _ in range(64):  # bounded: log2 of the number of distinct return times
        if lo >= hi:
            break
        mid = (lo + hi) // 2
        probe = _search(_cut(ops, times[mid]), model, steps_max, should_stop)
        steps += probe.steps
        if probe.ok is False:
            hi, found = mid, probe
        else:  # linearizable, or undecided: do not claim a smaller window
            lo = mid + 1
    cut_time = times[hi] if times else math.inf
    kept = {o.id for o in _cut(ops, cut_time)}
    window = tuple(o for o in ops if o.id in kept)
    # Up to just before cut_time the history is explainable; a completion at cut_time breaks it.
    # If several complete then, name the first whose outcome, made unknown, explains the rest.
    at_cut = [o for o in window if o.ret == cut_time]
    culprit = at_cut[0] if at_cut else found.culprit
    if len(at_cut) > 1:
        seen = _cut(ops, cut_time)
        for cand in at_cut:
            relaxed = [dataclasses.replace(o, output=UNKNOWN, ret=math.inf) if o.id == cand.id
                       else o for o in seen]
            probe = _search(relaxed, model, steps_max, should_stop)
            steps += probe.steps
            if probe.ok:
                culprit = cand
                break
    return KeyResult(key, model.name, "violation", len(ops), steps, window=window,
                     culprit=culprit, linearized=found.linearized, cut_time=cut_time)


def _model_for(model: Model[Any] | Callable[[str], Model[Any]], key: str) -> Model[Any]:
    if hasattr(model, "step"):
        return model  # type: ignore[return-value]
    return model(key)


def check_operations(
    ops: Iterable[Operation],
    model: Model[Any] | Callable[[str], Model[Any]],
    *,
    steps_max: int = STEPS_MAX_DEFAULT,
    should_stop: Callable[[], bool] | None = None,
) -> CheckResult:
    """Check a history of operations for linearizability, one key at a time.

    ``model`` is one model for every key, or a function from key to model. Never raises on a
    bad history; an operation whose ``ret`` precedes its ``call`` is a caller bug and is
    refused with :class:`~consensus.errors.InvariantViolation`."""
    by_key: dict[str, list[Operation]] = {}
    seen: set[int] = set()
    for op in ops:
        check(op.ret >= op.call, f"operation {op.id} returns before it is called")
        check(op.id not in seen, f"operation id {op.id} appears twice")
        seen.add(op.id)
        by_key.setdefault(op.key, []).append(op)
    results = []
    for key in sorted(by_key):
        m = _model_for(model, key)
        results.append(_check_key(key, by_key[key], m, steps_max, should_stop))
    verdicts = {r.verdict for r in results}
    verdict: Verdict = ("violation" if "violation" in verdicts else
                        "unknown" if "unknown" in verdicts else "ok")
    return CheckResult(verdict, tuple(results))
