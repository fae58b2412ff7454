"""Linearizability checking of recorded histories (pure: no clock, no I/O).

Each key's sub-history is checked by a breadth-first search over *configurations*, with
just-in-time linearization (Lowe, "Testing for linearizability", 2017): walk the call and return
events in time order, carrying every configuration a valid linearization of the past can be in
— the model state, which running operations have already taken effect, which indeterminate ones
have not. At a return, each configuration must linearize the returning operation, if it has not
yet, after any sequence of other running ones; a configuration that cannot is dropped, and if
none is left the history is not linearizable. The search never backtracks and forgets every
operation once it has returned, so its cost per event depends on the concurrency at that point,
not on the length of the history: a one-hour campaign is checked in one pass.

* **P-compositionality.** Linearisability is local (Herlihy & Wing): a history is linearisable
  iff each key's sub-history is, so each key is checked alone — the search cost is exponential
  in a key's concurrency, not the whole history's.
* **Observers are placed at once.** An operation that leaves every state it is accepted in
  unchanged (a read, a refused compare-and-set: :meth:`Model.observes`) is linearized as soon
  as a configuration's state accepts it: doing it later can only be worse, since nothing it
  does could enable anything. Without this, concurrent reads multiply the configurations (each
  subset of them placed or not).
* **Indeterminate operations** (Jepsen's ``info``: a timeout or a lost connection; the edit may
  or may not have applied) have no return: they may take effect at any point after their call,
  or never, and the model accepts whatever they would have returned. Of two configurations
  that agree on everything but the set of indeterminate operations still open, the one with
  more open dominates (it may still apply them, or not) and the other is dropped: without this
  rule each lost write doubled the configurations for the rest of the history.
  Indeterminate operations with equal inputs are interchangeable, so only the first still open
  of each kind is tried (a canonical order: k equal lost increments give k + 1 configurations,
  not 2**k).
* **Bounded and fair.** Every key's search counts its steps (model steps and events) and stops
  after ``steps_max``, or when ``should_stop()`` (polled every 1,024 steps; the caller's clock
  lives there, not here) says so, and answers ``unknown`` instead of hanging. The keys advance
  in turns of :data:`SLICE_STEPS`, so a time limit is shared among them instead of spent on the
  first hard one, and an ``unknown`` says how far each undecided key got.
* **Failing window.** For a key that is not linearisable, the smallest failing prefix is found
  by search over cut times: the history cut at time T (operations still running at T become
  indeterminate, a relaxation, so a violation in the cut is a violation in the whole) — the
  report names the operations of that prefix and the last one, which no order can explain.

The previous engine, Wing & Gong's depth-first search with Lowe's memo of (linearized set, state)
pairs, stays as ``engine="wgl"``: a reference the tests compare the search against on small
histories, and the baseline of ``bench/checker.py``. Its memo holds one bit per operation of
the key per entry, so its memory grows with the square of a key's history, and Python's hash of
those bitmasks (the integer modulo 2**61 - 1) gives prefix-shaped sets whose lengths agree modulo
61 one hash: 20,000 such entries with one model state share 61 hash values, and filling a set
with them takes 17 times as long as with distinct states (comparisons along collision chains).
"""

from __future__ import annotations

import abc
import bisect
import dataclasses
import math
import operator
from collections.abc import Callable, Hashable, Iterable, Sequence
from typing import Any, Literal, Protocol, TypeVar

from quorumboard.consensus.core.invariant import check

__all__ = [
    "UNKNOWN",
    "CasRegister",
    "CheckResult",
    "Counter",
    "Engine",
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

    def observes(self, op: Operation) -> bool:
        """Whether ``op``, with its recorded output, leaves every state that accepts it
        unchanged (a read, a refusal). The search then places it as soon as it is accepted;
        ``False`` is always safe (only slower)."""
        ...

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

    def observes(self, op: Operation) -> bool:
        """A read changes nothing, whatever it returned."""
        return bool(op.input[0] == "read")

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

    def observes(self, op: Operation) -> bool:
        """A read, or a refusal (the state stays as it was wherever a ``conflict`` is the
        answer); an accepted compare-and-set always bumps the version."""
        return super().observes(op) or (isinstance(op.output, tuple)
                                         and op.output[:1] == ("conflict",))


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
    it fail (everything before that completion has a valid order). For ``unknown``,
    ``reason`` says which limit stopped the search and how far into the key's events it got."""

    key: str
    model: str
    verdict: Verdict
    operations: int
    steps: int
    window: tuple[Operation, ...] = ()
    culprit: Operation | None = None
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

STEPS_MAX_DEFAULT = 50_000_000
"""Search steps per key before answering ``unknown`` (a step is one event or one model step:
about a minute of CPU; a caller's time limit usually binds first)."""
SLICE_STEPS = 1 << 16
"""Steps one key's search runs before the next undecided key takes its turn."""
_STOP_POLL_STEPS = 1_024

Engine = Literal["frontier", "wgl"]


@dataclasses.dataclass
class _Outcome:
    ok: bool | None  # None: out of budget
    steps: int
    culprit: Operation | None = None
    reason: str = ""


class _Stopped(Exception):
    """A search's budget is spent, or its caller said stop: the verdict is ``unknown``."""


_Config = tuple[Any, frozenset[int]]
"""(model state, the running operations it has already linearized)"""


def _add(configs: dict[_Config, list[frozenset[int]]], state: Any, lin: frozenset[int],
         open_: frozenset[int]) -> None:
    """Add a configuration, keeping per (state, linearized) only the maximal sets of still-open
    indeterminate operations: more open dominates (each may still apply, or never)."""
    have = configs.get((state, lin))
    if have is None:
        configs[(state, lin)] = [open_]
    elif not any(open_ <= other for other in have):
        have[:] = [other for other in have if not other <= open_]
        have.append(open_)


class _Frontier:
    """The breadth-first search over one key's sub-history (see the module docstring). It is
    resumable: :meth:`advance` runs it for a number of steps, and may be called again, which is
    how the keys of one history share a time limit."""

    def __init__(self, ops: Sequence[Operation], model: Model[Any], steps_max: int,
                 should_stop: Callable[[], bool] | None) -> None:
        self.ops = ops
        self.model = model
        self.steps_max = steps_max
        self.should_stop = should_stop
        self.observer = [model.observes(op) for op in ops]
        self.indeterminate = [op.output is UNKNOWN for op in ops]
        # Indeterminate operations with equal inputs are interchangeable once called (no return
        # bounds them, their outputs are unknown): only the first still open of each kind is
        # tried, so k equal lost writes give k + 1 configurations, not 2**k.
        kinds: dict[Hashable, int] = {}
        self.kind: list[Hashable] = []
        for i, op in enumerate(ops):
            try:
                self.kind.append(kinds.setdefault(op.input, i) if op.indeterminate else i)
            except TypeError:  # an unhashable input: no twin
                self.kind.append(i)
        # An indeterminate observer constrains nothing and changes nothing: it is left out.
        # Calls sort before returns at equal times (operations that touch in time count as
        # concurrent: the permissive choice).
        events = [(op.call, 0, i) for i, op in enumerate(ops)
                  if not (op.indeterminate and self.observer[i])]
        events += [(op.ret, 1, i) for i, op in enumerate(ops) if not op.indeterminate]
        events.sort()
        self.events = [(kind == 0, i) for _, kind, i in events]
        self.position = 0
        self.steps = 0
        self.next_poll = _STOP_POLL_STEPS
        self.running: set[int] = set()  # determinate operations called and not yet returned
        self.configs: dict[_Config, list[frozenset[int]]] = {
            (model.init(), frozenset()): [frozenset()]}
        self.verdict: bool | None = None
        self.culprit: Operation | None = None
        self.reason = ""

    @property
    def finished(self) -> bool:
        return self.verdict is not None or bool(self.reason)

    def outcome(self) -> _Outcome:
        return _Outcome(self.verdict, self.steps, self.culprit, self.reason)

    def advance(self, budget: int) -> bool | None:
        """Run about ``budget`` more steps (whole events); the verdict once there is one."""
        if self.finished:
            return self.verdict
        until = self.steps + budget
        try:
            while self.position < len(self.events) and self.steps < until:  # bounded: events
                is_call, i = self.events[self.position]
                self._tick()
                if is_call:
                    self._call(i)
                else:
                    self._return(i)
                self.position += 1
                if not self.configs:
                    self.verdict, self.culprit = False, self.ops[i]
                    return False
        except _Stopped as exc:
            self.reason = (f"{exc} after {self.steps:,} steps, at event {self.position:,} "
                           f"of {len(self.events):,}")
            return None
        if self.position == len(self.events):
            self.verdict = True
        return self.verdict

    def _tick(self) -> None:
        self.steps += 1
        if self.steps > self.steps_max:
            raise _Stopped("search budget spent")
        if self.should_stop is not None and self.steps >= self.next_poll:
            self.next_poll += _STOP_POLL_STEPS
            if self.should_stop():
                raise _Stopped("time limit reached")

    def _accepts(self, state: Any, i: int) -> bool:
        """Whether observer ``i`` may take effect in ``state`` (and leaves it as it is)."""
        self._tick()
        ok, after = self.model.step(state, self.ops[i])
        check(not ok or after == state,
              f"{self.model.name}: operation {self.ops[i].id} is declared an observer but "
              "changed the state")
        return ok

    def _eager(self, state: Any, lin: frozenset[int]) -> frozenset[int]:
        """``lin`` plus every running observer ``state`` accepts: placed at once."""
        placed = [q for q in self.running
                  if self.observer[q] and q not in lin and self._accepts(state, q)]
        return lin.union(placed) if placed else lin

    def _call(self, i: int) -> None:
        if self.indeterminate[i]:  # it may apply from now on: one more open operation
            self.configs = {c: [o | {i} for o in opens] for c, opens in self.configs.items()}
            return
        self.running.add(i)
        if not self.observer[i]:
            return  # placed when something needs it, at the latest at its return
        if len(self.configs) == 1:  # the common case, without rebuilding anything
            ((state, lin), opens), = self.configs.items()
            if self._accepts(state, i):
                self.configs = {(state, lin | {i}): opens}
            return
        configs: dict[_Config, list[frozenset[int]]] = {}
        for (state, lin), opens in self.configs.items():
            if self._accepts(state, i):
                lin = lin | {i}
            for o in opens:
                _add(configs, state, lin, o)
        self.configs = configs

    def _return(self, i: int) -> None:
        self.running.discard(i)
        if len(self.configs) == 1:  # the common case: already placed, forget it
            ((state, lin), opens), = self.configs.items()
            if i in lin:
                self.configs = {(state, lin - {i}): opens}
                return
        self.running.add(i)
        configs: dict[_Config, list[frozenset[int]]] = {}
        for (state, lin), opens in self.configs.items():
            for o in opens:
                if i in lin:
                    _add(configs, state, lin - {i}, o)
                else:
                    self._place(i, state, lin, o, configs)
        self.running.discard(i)
        self.configs = configs

    def _place(self, i: int, state: Any, lin: frozenset[int], open_: frozenset[int],
               out: dict[_Config, list[frozenset[int]]]) -> None:
        """Every configuration that linearizes ``i`` after some sequence of other running or
        open operations, from this one, into ``out`` (with ``i`` forgotten: it has returned)."""
        todo = [(state, lin, open_)]
        seen = {(state, lin, open_)}
        while todo:  # bounded: each configuration is expanded once, and the step budget
            s, lin, open_ = todo.pop()
            tried: set[Hashable] = set()
            for q in [*self.running, *sorted(open_)]:
                # A running observer the state accepts is already placed (see _eager), so
                # one not placed is not accepted here: only a state change can place it.
                if q in lin or self.observer[q] or self.kind[q] in tried:
                    continue
                tried.add(self.kind[q])
                self._tick()
                ok, after = self.model.step(s, self.ops[q])
                if not ok:
                    continue
                if q in open_:
                    if after == s:
                        continue  # dominated by this configuration, with q still open
                    lin2, open2 = lin, open_ - {q}
                else:
                    lin2, open2 = lin | {q}, open_
                if after != s:
                    lin2 = self._eager(after, lin2)
                if i in lin2:
                    _add(out, after, lin2 - {i}, open2)
                elif (after, lin2, open2) not in seen:
                    seen.add((after, lin2, open2))
                    todo.append((after, lin2, open2))


def _search_frontier(ops: Sequence[Operation], model: Model[Any], steps_max: int,
                     should_stop: Callable[[], bool] | None) -> _Outcome:
    search = _Frontier(ops, model, steps_max, should_stop)
    search.advance(steps_max + 1)
    return search.outcome()


def _search_wgl(ops: Sequence[Operation], model: Model[Any], steps_max: int,
                should_stop: Callable[[], bool] | None) -> _Outcome:
    """WGL over one key's operations (the reference engine). Returns whether they linearize
    (None: budget spent)."""
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
    entry = nxt[0]
    steps = 0
    for steps in range(1, steps_max + 1):  # bounded: the step budget
        if nxt[0] == -1:
            return _Outcome(True, steps)
        if should_stop is not None and steps % _STOP_POLL_STEPS == 0 and should_stop():
            return _Outcome(None, steps, reason=f"time limit reached after {steps:,} steps")
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
            if not calls:
                return _Outcome(False, steps, culprit=ops[op_of[entry]])
            top, state = calls.pop()
            linearized &= ~(1 << op_of[top])
            unlift(top)
            entry = nxt[top]
    return _Outcome(None, steps, reason=f"search budget spent after {steps:,} steps")


_ENGINES: dict[str, Callable[[Sequence[Operation], Model[Any], int,
                              Callable[[], bool] | None], _Outcome]] = {
    "frontier": _search_frontier, "wgl": _search_wgl}


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


def _key_result(key: str, ops: list[Operation], model: Model[Any], outcome: _Outcome,
                engine: Engine, steps_max: int, should_stop: Callable[[], bool] | None
                ) -> KeyResult:
    """The key's verdict from its search's outcome; for a violation, its failing window."""
    if outcome.ok is None:
        return KeyResult(key, model.name, "unknown", len(ops), outcome.steps,
                         reason=outcome.reason)
    if outcome.ok:
        return KeyResult(key, model.name, "ok", len(ops), outcome.steps)
    search = _ENGINES[engine]
    # The smallest failing cut: violation is monotone in the cut time, and no cut before the
    # completion the search failed at fails (before it, a valid order of everything returned
    # exists, and the cut only relaxes the rest). Probe from there, doubling the stride, then
    # bisect the last stride: usually the first probe fails.
    times = sorted({op.ret for op in ops if not math.isinf(op.ret)})
    first = (outcome.culprit.ret if outcome.culprit is not None
             and not math.isinf(outcome.culprit.ret) else times[0] if times else math.inf)
    lo, hi = bisect.bisect_left(times, first), len(times) - 1
    found = outcome
    steps = outcome.steps
    stride = 1
    probe_at: int | None = lo
    for _ in range(128):  # bounded: doubling, then halving, over at most 2**64 times
        if lo >= hi:
            break
        mid = min(probe_at, hi - 1) if probe_at is not None else (lo + hi) // 2
        probe = search(_cut(ops, times[mid]), model, steps_max, should_stop)
        steps += probe.steps
        if probe.ok is False:
            hi, found, probe_at = mid, probe, None
        else:  # linearizable, or undecided: do not claim a smaller window
            lo = mid + 1
            if probe_at is not None:
                probe_at, stride = lo + stride, stride * 2
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
            probe = search(relaxed, model, steps_max, should_stop)
            steps += probe.steps
            if probe.ok:
                culprit = cand
                break
    return KeyResult(key, model.name, "violation", len(ops), steps, window=window,
                     culprit=culprit, cut_time=cut_time)


def _search_keys(histories: dict[str, list[Operation]], models: dict[str, Model[Any]],
                 steps_max: int, should_stop: Callable[[], bool] | None
                 ) -> dict[str, _Outcome]:
    """Every key's frontier search, in turns of :data:`SLICE_STEPS`: a time limit that stops
    them stops them all part way, each with its progress, not the last keys before they
    start."""
    searches = {key: _Frontier(ops, models[key], steps_max, should_stop)
                for key, ops in histories.items()}
    undecided = list(searches)
    for _ in range(steps_max // SLICE_STEPS + 2):  # bounded: a turn spends a slice or ends one
        if not undecided:
            break
        for key in undecided:
            searches[key].advance(SLICE_STEPS)
        undecided = [key for key in undecided if not searches[key].finished]
    return {key: search.outcome() for key, search in searches.items()}


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
    engine: Engine = "frontier",
) -> CheckResult:
    """Check a history of operations for linearizability, one key at a time.

    ``model`` is one model for every key, or a function from key to model. ``engine`` is
    ``"frontier"`` (the search) or ``"wgl"`` (the reference, one key after the other). Never
    raises on a bad history; an operation whose ``ret`` precedes its ``call`` is a caller bug
    and is refused with :class:`~consensus.errors.InvariantViolation`."""
    check(engine in _ENGINES, f"unknown checker engine {engine!r}")
    by_key: dict[str, list[Operation]] = {}
    seen: set[int] = set()
    for op in ops:
        check(op.ret >= op.call, f"operation {op.id} returns before it is called")
        check(op.id not in seen, f"operation id {op.id} appears twice")
        seen.add(op.id)
        by_key.setdefault(op.key, []).append(op)
    by_call = operator.attrgetter("call", "id")
    histories = {key: sorted(by_key[key], key=by_call) for key in sorted(by_key)}
    models = {key: _model_for(model, key) for key in histories}
    if engine == "frontier":
        outcomes = _search_keys(histories, models, steps_max, should_stop)
    else:
        outcomes = {key: _search_wgl(ops_, models[key], steps_max, should_stop)
                    for key, ops_ in histories.items()}
    results = [_key_result(key, histories[key], models[key], outcomes[key], engine, steps_max,
                           should_stop) for key in histories]
    verdicts = {r.verdict for r in results}
    verdict: Verdict = ("violation" if "violation" in verdicts else
                        "unknown" if "unknown" in verdicts else "ok")
    return CheckResult(verdict, tuple(results))
