"""z3 proofs of the conflict-policy laws, run on the shipped functions of consensus/core/policies.py.

Method: symbolic execution of the real code. The proofs call ``policies.reject_stale``,
``policies.merge``, ``policies.priority``, ``policies.vote`` and ``policies.tally`` themselves
(looked up at run time, so a monkeypatched or edited policy is what gets proved) with
:class:`SymInt` arguments: ``int`` subclasses that carry a z3 term, so the policies' own
``isinstance`` checks, arithmetic and comparisons build formulas. An ``if`` on such a comparison
asks the :class:`_Explorer`, which takes the branch z3 says is feasible and, when both are,
queues the other one; the function is re-run once per feasible path until none is left, so the
paths cover every input. A law holds when, on every path, the path condition together with the
law's negation is unsat. Structural choices (key missing or present, ``expect_version`` given or
not, put or delete) are z3 booleans forked the same way.

Negative controls are the shipped function with one source fragment replaced (:func:`mutant`):
a planted bug that follows the code, and that errors rather than passes when the fragment is
gone. Laws over lists are proved for every list up to a stated length; set elements are
abstracted by their canonical key (see :func:`_keys`), and one exhaustive row re-checks the set
laws with the real ``canonical_bytes`` on JSON edge values.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import itertools
import struct
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

import z3

from quorumboard.consensus.core import policies
from quorumboard.consensus.core.model import INT_MAX, INT_MIN
from quorumboard.consensus.core.policies import Accept, Current, Decision, Defer, Reject, Write
from quorumboard.proofs.common import Check, Outcome

__all__ = ["SymBool", "SymInt", "Unsupported", "checks", "impure_names", "mutant"]

TOOL = "z3"
MAX_PATHS = 20_000
"""Every exploration stops with ``error`` beyond this many paths (a bound, never a silent cut)."""
_LOCK = threading.Lock()
"""z3's default context is not thread-safe, and a proof swaps ``policies.canonical_bytes`` and
keeps its explorer in module state: rows run one at a time even under a threaded runner."""
SOLVER_TIMEOUT_MS = 60_000
"""A solver call that takes longer answers ``unknown``, and the row ``error``."""

PolicyFn = Callable[[Current | None, Write, Any], Decision]
TallyFn = Callable[[list[str], list[str], Any], str]
Claim = Any  # a z3 BoolRef or a Python bool
Body = Callable[[], tuple[Claim, object]]
Case = tuple[list[Any], Body]  # (assumptions, body returning (claim, what to show))


# ------------------------------------------------------------------------ symbolic values


class Unsupported(BaseException):
    """The symbolic layer met an operation it does not model. A BaseException, so no policy's
    (nor ``_decide``'s) ``except Exception`` turns it into a Reject: the row ends in ``error``
    instead of proving something about a crash."""


class SymBool:
    """A z3 formula where a policy expects a bool: ``if`` on it forks the exploration."""

    __slots__ = ("t",)

    def __init__(self, t: Any) -> None:
        self.t = t

    def __bool__(self) -> bool:
        return _explorer().decide(self.t)

    def __repr__(self) -> str:
        return f"SymBool({self.t})"


def _num_term(o: object) -> Any:
    if isinstance(o, SymInt):
        return o.t
    if isinstance(o, int) and not isinstance(o, bool):
        return z3.IntVal(o)
    raise Unsupported(f"symbolic integer combined with {type(o).__name__}")


class SymInt(int):
    """An integer known only as a z3 term. An ``int`` subclass so the policies' type checks see
    a number; the operators they use return symbolic results, and every other numeric operation
    (``int()``, indexing, ``*`` ...) raises :class:`Unsupported` rather than compute on the
    placeholder value ``0`` underneath."""

    t: Any

    def __new__(cls, term: Any) -> SymInt:
        obj = super().__new__(cls, 0)
        obj.t = term
        return obj

    def __add__(self, o: object) -> SymInt:
        return SymInt(self.t + _num_term(o))

    def __radd__(self, o: object) -> SymInt:
        return SymInt(_num_term(o) + self.t)

    def __sub__(self, o: object) -> SymInt:
        return SymInt(self.t - _num_term(o))

    def __rsub__(self, o: object) -> SymInt:
        return SymInt(_num_term(o) - self.t)

    def __neg__(self) -> SymInt:
        return SymInt(-self.t)

    def __eq__(self, o: object) -> Any:
        if isinstance(o, int) and not isinstance(o, bool):
            return SymBool(self.t == _num_term(o))
        if isinstance(o, (bool, float)):
            raise Unsupported(f"symbolic integer compared with {type(o).__name__}")
        return False

    def __ne__(self, o: object) -> Any:
        same = self.__eq__(o)
        return SymBool(z3.Not(same.t)) if isinstance(same, SymBool) else True

    def __lt__(self, o: object) -> Any:
        return SymBool(self.t < _num_term(o))

    def __le__(self, o: object) -> Any:
        return SymBool(self.t <= _num_term(o))

    def __gt__(self, o: object) -> Any:
        return SymBool(self.t > _num_term(o))

    def __ge__(self, o: object) -> Any:
        return SymBool(self.t >= _num_term(o))

    def __bool__(self) -> bool:
        return _explorer().decide(self.t != 0)

    def __hash__(self) -> int:
        return 0  # equal hashes make a dict fall back to ==, which forks

    def __format__(self, spec: str) -> str:
        return f"⟨{self.t}⟩"

    def __repr__(self) -> str:
        return f"⟨{self.t}⟩"

    __str__ = __repr__


_F64 = z3.Float64()
_RNE = z3.RNE()


def _float_term(o: object) -> Any:
    if isinstance(o, SymFloat):
        return o.t
    if isinstance(o, (int, float)) and not isinstance(o, (bool, SymInt)):
        return z3.FPVal(float(o), _F64)
    raise Unsupported(f"symbolic float combined with {type(o).__name__}")


class SymFloat(float):
    """A double known only as a z3 IEEE-754 term (binary64, round-to-nearest-even, as CPython
    adds): enough of ``float`` for a counter's ``base + value``; everything else raises."""

    t: Any

    def __new__(cls, term: Any) -> SymFloat:
        obj = super().__new__(cls, 0.0)
        obj.t = term
        return obj

    def __add__(self, o: object) -> SymFloat:
        return SymFloat(z3.fpAdd(_RNE, self.t, _float_term(o)))

    def __radd__(self, o: object) -> SymFloat:
        return SymFloat(z3.fpAdd(_RNE, _float_term(o), self.t))

    def __eq__(self, o: object) -> Any:
        return SymBool(z3.fpEQ(self.t, _float_term(o)))

    def __hash__(self) -> int:
        return 0

    def __format__(self, spec: str) -> str:
        return f"⟨{self.t}⟩"

    def __repr__(self) -> str:
        return f"⟨{self.t}⟩"

    __str__ = __repr__


def _refuse(name: str) -> Callable[..., Any]:
    def op(*_args: object) -> Any:
        raise Unsupported(f"{name} on a symbolic integer is not modelled")

    return op


for _name in ("__int__", "__index__", "__float__", "__mul__", "__rmul__", "__floordiv__",
              "__rfloordiv__", "__truediv__", "__rtruediv__", "__mod__", "__rmod__", "__pow__",
              "__rpow__", "__divmod__", "__rdivmod__", "__abs__", "__pos__", "__invert__",
              "__and__", "__rand__", "__or__", "__ror__", "__xor__", "__rxor__", "__lshift__",
              "__rlshift__", "__rshift__", "__rrshift__", "__round__", "__trunc__", "__floor__",
              "__ceil__", "bit_length", "to_bytes", "conjugate", "as_integer_ratio"):
    setattr(SymInt, _name, _refuse(_name))
for _name in ("__int__", "__index__", "__float__", "__sub__", "__rsub__", "__mul__", "__rmul__",
              "__truediv__", "__rtruediv__", "__floordiv__", "__rfloordiv__", "__mod__",
              "__rmod__", "__pow__", "__rpow__", "__neg__", "__pos__", "__abs__", "__ne__",
              "__lt__", "__le__", "__gt__", "__ge__", "__bool__", "__round__", "__trunc__",
              "__floor__", "__ceil__", "__divmod__", "__rdivmod__", "is_integer", "hex",
              "as_integer_ratio", "conjugate"):
    setattr(SymFloat, _name, _refuse(_name))


# ------------------------------------------------------------------------------ explorer


class _Explorer:
    """Depth-first enumeration of a function's feasible paths by re-execution: ``prefix``
    replays the branch decisions of a queued path; past it, each fork asks z3 which way is
    feasible and queues the other way when both are. The solver holds the current path
    condition incrementally (one scope per branch), and a model of it answers one side of most
    forks without a solver call."""

    def __init__(self, assumptions: Sequence[Any]) -> None:
        self.assumptions = list(assumptions)
        self.solver = z3.Solver()
        self.solver.set("timeout", SOLVER_TIMEOUT_MS)
        self.solver.add(*assumptions)
        if self.solver.check() != z3.sat:
            raise Unsupported("the assumptions are unsatisfiable")
        self.todo: list[tuple[list[bool], Any]] = [([], self.solver.model())]
        self.prefix: list[bool] = []
        self.pc: list[Any] = []
        self.model: Any = None

    def start(self) -> None:
        """Begin the next queued path (the caller checks ``todo``)."""
        if self.pc:
            self.solver.pop(len(self.pc))
        self.prefix, self.model = self.todo.pop()
        self.pc = []

    def _model_if(self, cond: Any) -> Any:
        r = self.solver.check(cond)
        if r == z3.unknown:
            raise Unsupported(f"z3 could not decide a branch: {self.solver.reason_unknown()}")
        return self.solver.model() if r == z3.sat else None

    def decide(self, cond: Any) -> bool:
        i = len(self.pc)
        if i < len(self.prefix):
            take = self.prefix[i]
        else:
            cond = z3.simplify(cond)
            if z3.is_true(cond) or z3.is_false(cond):
                take = bool(z3.is_true(cond))
            else:
                holds = z3.is_true(self.model.eval(cond, model_completion=True))
                other = self._model_if(z3.Not(cond) if holds else cond)
                if other is not None:  # both ways feasible: take the model's, queue the other
                    self.todo.append(([*self.prefix, not holds], other))
                take = holds
            self.prefix.append(take)
        branch = cond if take else z3.Not(cond)
        self.pc.append(branch)
        self.solver.push()
        self.solver.add(branch)
        return take


_ACTIVE: list[_Explorer] = []


def _explorer() -> _Explorer:
    if not _ACTIVE:
        raise Unsupported("a symbolic value was branched on outside an exploration")
    return _ACTIVE[-1]


def fork(cond: Any) -> bool:
    """Branch on a z3 formula inside a proof body (the structural choices of the inputs)."""
    return bool(SymBool(cond))


def _explore(case: Case, leaf: Callable[[_Explorer, Claim, object], bool]) -> int:
    """Run ``case`` once per feasible path; ``leaf`` returns True to stop early."""
    assumptions, body = case
    ex = _Explorer(assumptions)
    paths = 0
    while ex.todo:
        if paths >= MAX_PATHS:
            raise Unsupported(f"more than {MAX_PATHS} paths")
        ex.start()
        _ACTIVE.append(ex)
        try:
            claim, shown = body()
            paths += 1
            if leaf(ex, claim, shown):
                break
        finally:
            _ACTIVE.pop()
    return paths


def _z(claim: Claim) -> Any:
    return z3.BoolVal(claim) if isinstance(claim, bool) else claim


def _concrete(obj: object, model: Any) -> object:
    if isinstance(obj, SymInt):
        return model.eval(obj.t, model_completion=True).as_long()
    if isinstance(obj, SymFloat):
        bits = model.eval(z3.fpToIEEEBV(obj.t), model_completion=True).as_long()
        return struct.unpack(">d", bits.to_bytes(8, "big"))[0]
    if isinstance(obj, SymBool):
        return z3.is_true(model.eval(obj.t, model_completion=True))
    if isinstance(obj, list):
        return [_concrete(v, model) for v in obj]
    if isinstance(obj, tuple):
        return tuple(_concrete(v, model) for v in obj)
    if isinstance(obj, dict):
        return {k: _concrete(v, model) for k, v in obj.items()}
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        fields = {f.name: _concrete(getattr(obj, f.name), model) for f in dataclasses.fields(obj)}
        return f"{type(obj).__name__}({', '.join(f'{k}={v!r}' for k, v in fields.items())})"
    return obj


def _show(shown: object, model: Any) -> str:
    text = repr(_concrete(shown, model)).replace('"', "").replace("'", "")
    return text if len(text) <= 600 else text[:600] + "…"


def _run(cases: Callable[[], Iterable[Case]], want: Literal["forall", "exists"],
         logic: str | None = None) -> Outcome:
    """One row, with the z3 lock held (its time excludes waiting for the lock)."""
    with _LOCK:
        return _run_locked(cases, want, logic)


def _run_locked(cases: Callable[[], Iterable[Case]], want: Literal["forall", "exists"],
                logic: str | None) -> Outcome:
    """``forall``: holds when no path satisfies its condition and the claim's negation (the
    first model found is the counterexample). ``exists``: holds when some path satisfies the
    claim (the model is the witness). ``logic``: decide each path's claim with a fresh
    non-incremental solver for that logic (floating point is ~50x faster bit-blasted up front)."""
    t0 = time.perf_counter()
    found: list[str] = []
    total = 0

    def leaf(ex: _Explorer, claim: Claim, shown: object) -> bool:
        goal = z3.Not(_z(claim)) if want == "forall" else _z(claim)
        solver = ex.solver
        if logic is not None:
            solver = z3.SolverFor(logic)
            solver.set("timeout", SOLVER_TIMEOUT_MS)
            solver.set("random_seed", 0)
            solver.add(*ex.assumptions, *ex.pc, goal)
        r = solver.check() if logic is not None else solver.check(goal)
        if r == z3.unknown:
            raise Unsupported(f"z3 could not decide a path: {solver.reason_unknown()}")
        if r == z3.sat:
            found.append(_show(shown, solver.model()))
            return True
        return False

    try:
        with _keys(abstract=False):
            for case in cases():
                total += _explore(case, leaf)
                if found:
                    break
    except Unsupported as exc:
        return Outcome("error", total, time.perf_counter() - t0, f"not modelled: {exc}")
    except Exception as exc:  # a policy crashed on a modelled input: not a proof either way
        return Outcome("error", total, time.perf_counter() - t0,
                       f"{type(exc).__name__}: {exc}")
    elapsed = time.perf_counter() - t0
    if want == "forall":
        if found:
            return Outcome("violated", total, elapsed, f"counterexample: {found[0]}")
        return Outcome("holds", total, elapsed, f"negation unsat on all {total} paths")
    if found:
        return Outcome("holds", total, elapsed, f"witness: {found[0]}")
    return Outcome("violated", total, elapsed, f"no witness on any of {total} paths")


_ABSTRACT: list[int] = [0]  # > 0 inside _keys(abstract=True)
_REAL_KEY: list[Callable[[Any], bytes]] = [policies.canonical_bytes]


@contextmanager
def _keys(abstract: bool) -> Iterator[None]:
    """Guard ``policies.canonical_bytes`` during a proof: msgpack would silently encode a
    SymInt's placeholder ``0``, so a symbolic value reaching it is refused. Inside
    ``_keys(abstract=True)`` (the set proofs) a symbolic set element is its own key. The
    abstraction is sound because ``_as_set`` uses keys only through ``==`` (dict) and ``<``
    (sorted), and canonical bytes are an injective key into a total order, as z3 integers are;
    the row z3-set-real-keys re-checks the laws with the real key."""
    outermost = policies.canonical_bytes is not _guarded
    if outermost:
        _REAL_KEY[0] = policies.canonical_bytes
        policies.canonical_bytes = _guarded  # type: ignore[assignment]
    _ABSTRACT[0] += abstract
    try:
        yield
    finally:
        _ABSTRACT[0] -= abstract
        if outermost:
            policies.canonical_bytes = _REAL_KEY[0]  # type: ignore[assignment]


def _has_sym(v: object) -> bool:
    if isinstance(v, (SymInt, SymFloat, SymBool)):
        return True
    if isinstance(v, (list, tuple)):
        return any(_has_sym(x) for x in v)
    if isinstance(v, dict):
        return any(_has_sym(x) for x in v.values())
    return False


def _guarded(v: Any) -> Any:
    if isinstance(v, SymInt) and _ABSTRACT[0] > 0:
        return v
    if _has_sym(v):
        raise Unsupported("canonical_bytes of a symbolic value (only set elements are modelled)")
    return _REAL_KEY[0](v)


# ------------------------------------------------------------------------------ mutants


def mutant(fn: Callable[..., Any], old: str, new: str) -> Callable[..., Any]:
    """The shipped ``fn`` with the one occurrence of ``old`` in its source replaced by ``new``,
    compiled against (a copy of) its module's globals: a planted bug that tracks the code. If
    the fragment is no longer there the mutant raises, so its negative control errors instead
    of passing vacuously."""
    src = textwrap.dedent(inspect.getsource(fn))
    if src.count(old) != 1:
        name = getattr(fn, "__name__", "?")

        def gone(*_a: object, **_k: object) -> Any:
            raise Unsupported(f"mutation point {old!r} is not (uniquely) in {name}")

        return gone
    namespace = dict(vars(sys.modules[fn.__module__]))
    exec(compile(src.replace(old, new), f"<mutant of {fn.__name__}>", "exec"), namespace)
    made: Callable[..., Any] = namespace[fn.__name__]
    return made


def _planted(fn: Callable[..., Any], old: str, new: str) -> Callable[[], Any]:
    """A negative control's function: the mutant of ``fn``, compiled on first use."""
    made: list[Callable[..., Any]] = []

    def get() -> Any:
        if not made:
            made.append(mutant(fn, old, new))
        return made[0]

    return get


# ------------------------------------------------------------------------ shared helpers


def _int64(*xs: Any) -> list[Any]:
    return [z3.And(x >= INT_MIN, x <= INT_MAX) for x in xs]


def _same(a: object, b: object) -> Claim:
    """Structural equality of two policy results, as a z3 formula."""
    if isinstance(a, SymFloat) or isinstance(b, SymFloat):
        ok = all(isinstance(v, float) for v in (a, b))
        return z3.BoolVal(False) if not ok else z3.fpEQ(_float_term(a), _float_term(b))
    if isinstance(a, SymInt) or isinstance(b, SymInt):
        ok = all(isinstance(v, int) and not isinstance(v, bool) for v in (a, b))
        return z3.BoolVal(False) if not ok else _num_term(a) == _num_term(b)
    if type(a) is not type(b):
        return False
    if isinstance(a, (list, tuple)):
        assert isinstance(b, (list, tuple))
        if len(a) != len(b):
            return False
        return z3.And(True, *[_z(_same(x, y)) for x, y in zip(a, b, strict=True)])
    if isinstance(a, dict):
        assert isinstance(b, dict)
        if set(a) != set(b):
            return False
        return z3.And(True, *[_z(_same(a[k], b[k])) for k in a])
    if dataclasses.is_dataclass(a) and not isinstance(a, type):
        return z3.And(True, *[_z(_same(getattr(a, f.name), getattr(b, f.name)))
                              for f in dataclasses.fields(a)])
    return bool(a == b)


def _value(d: Decision) -> object:
    """What a decision leaves in the key: the accepted value, or the refusal's reason."""
    return ("accept", d.value) if isinstance(d, Accept) else (type(d).__name__, getattr(
        d, "reason", None))


def _apply(fn: PolicyFn, state: object, delta: object, params: Any) -> tuple[object, bool]:
    """One merge write without ``expect_version`` (the concurrent CRDT case) on a key holding
    ``state`` (None: missing); a refused write leaves the value unchanged."""
    current = None if state is None else Current(state, 1, "a")
    d = fn(current, Write("put", delta, "b", None), params)
    return (d.value, True) if isinstance(d, Accept) else (state, False)


def _op(fn: PolicyFn, x: object, y: object, params: Any) -> Decision:
    """``x ⊕ y``: the merge of write value ``y`` into a key holding ``x``."""
    return fn(Current(x, 1, "a"), Write("put", y, "b", None), params)


def _syms(prefix: str, n: int) -> list[SymInt]:
    return [SymInt(z3.Int(f"{prefix}{i}")) for i in range(n)]


def _merge() -> PolicyFn:
    return policies.merge


# ------------------------------------------------------------------- CAS / reject-stale


def _cas_cases(fn: Callable[[], PolicyFn], strict: bool, policy: str
               ) -> Callable[[], Iterator[Case]]:
    """Every shape of (current, write): key missing or present at a symbolic version, a
    symbolic ``expect_version`` or none, put or delete."""

    def cases() -> Iterator[Case]:
        ver, exp, base, delta, rank_a, rank_b = z3.Ints("version expect base delta rank_a rank_b")
        has_cur, has_exp, is_put = z3.Bools("key_present expect_given is_put")
        value_of: dict[str, Callable[[], tuple[object, object, Any]]] = {
            "reject-stale": lambda: ({"v": 1}, {"v": 2}, {}),
            "last-writer-wins": lambda: ({"v": 1}, {"v": 2}, {}),
            "merge": lambda: (SymInt(base), SymInt(delta), {}),
            "priority": lambda: (1, 2, {"ranks": {"a": SymInt(rank_a), "b": SymInt(rank_b)}}),
            "vote": lambda: (1, 2, {"k": 2}),
        }

        def body() -> tuple[Claim, object]:
            old, new, params = value_of[policy]()
            cur = Current(old, SymInt(ver), "a") if fork(has_cur) else None
            ev = SymInt(exp) if fork(has_exp) else None
            put = fork(is_put)
            write = Write("put" if put else "delete", new if put else None, "b", ev)
            d = fn()(cur, write, params)
            applied = isinstance(d, (Accept, Defer))
            have = ver if cur is not None else z3.IntVal(0)
            if ev is None:
                ok: Claim = cur is None if strict else True
            else:
                ok = exp == have
            return z3.Implies(applied, _z(ok)), {"policy": policy, "current": cur,
                                                 "write": write, "decision": d}

        yield (_int64(base, delta), body)

    return cases


def _cas_all(fns: dict[str, Callable[[], PolicyFn]]) -> Callable[[], Iterator[Case]]:
    def cases() -> Iterator[Case]:
        for name, fn in fns.items():
            yield from _cas_cases(fn, strict=False, policy=name)()

    return cases


# --------------------------------------------------------------------------- determinism

_PURE_IMPORTS = {"__future__", "collections.abc", "dataclasses", "typing", "msgpack",
                 "quorumboard.consensus.errors", "quorumboard.consensus.core.model", "quorumboard.consensus.core.policy_ops"}
_IMPURE_NAMES = {"id", "hash", "open", "input", "print", "globals", "vars", "locals", "eval",
                 "exec", "compile", "__import__", "setattr", "delattr", "breakpoint", "iter"}


def impure_names(source: str) -> list[str]:
    """What in a policy module could make a decision depend on more than its arguments: an
    import outside the pure set, ``global``/``nonlocal`` state, or a builtin whose answer
    varies between processes (``id``, ``hash`` of str) or that does I/O."""
    found: list[str] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [f"import {a.name}" for a in node.names if a.name not in _PURE_IMPORTS]
        elif isinstance(node, ast.ImportFrom) and (node.module or "") not in _PURE_IMPORTS:
            found.append(f"from {node.module} import ...")
        elif isinstance(node, (ast.Global, ast.Nonlocal)):
            found.append(f"{type(node).__name__.lower()} {', '.join(node.names)}")
        elif isinstance(node, ast.Name) and node.id in _IMPURE_NAMES:
            found.append(f"{node.id}() at line {node.lineno}")
    return found


def _static_purity(extra: str = "") -> Callable[[], Outcome]:
    def run() -> Outcome:
        t0 = time.perf_counter()
        root = Path(__file__).resolve().parent.parent / "consensus" / "core"
        found: list[str] = []
        for name in ("policies.py", "policy_ops.py"):
            found += [f"{name}: {f}" for f in impure_names((root / name).read_text() + extra)]
        elapsed = time.perf_counter() - t0
        if found:
            return Outcome("violated", 2, elapsed, "; ".join(found))
        return Outcome("holds", 2, elapsed, "no impure import, global state or builtin")

    return run


def _determinism_cases(lww: Callable[[], PolicyFn]) -> Callable[[], Iterator[Case]]:
    """Each built-in called twice on the same symbolic inputs gives equal decisions."""

    def cases() -> Iterator[Case]:
        ver, exp, base, delta, ra, rb, dflt, k = z3.Ints("version expect base delta rank_a "
                                                         "rank_b default_rank k")
        has_cur, has_exp, is_put = z3.Bools("key_present expect_given is_put")
        xs, ys = _syms("x", 2), _syms("y", 1)
        shapes: list[tuple[str, Callable[[], PolicyFn], Callable[[], tuple[object, object, Any]]]]
        shapes = [
            ("reject-stale", lambda: policies.reject_stale, lambda: ({"v": 1}, {"v": 2}, {})),
            ("last-writer-wins", lww, lambda: ({"v": SymInt(base)}, {"v": SymInt(delta)}, {})),
            ("merge counter", _merge, lambda: (SymInt(base), SymInt(delta), {})),
            ("merge list", _merge, lambda: (list(xs), list(ys), {})),
            ("merge set", _merge, lambda: (list(xs), list(ys), {"kind": "set"})),
            ("merge patch", _merge,
             lambda: ({"a": xs[0], "b": {"c": xs[1]}}, {"a": None, "b": {"c": ys[0]}}, {})),
            ("priority", lambda: policies.priority,
             lambda: (1, 2, {"ranks": {"a": SymInt(ra), "b": SymInt(rb)},
                             "default_rank": SymInt(dflt)})),
            ("vote", lambda: policies.vote, lambda: (1, 2, {"k": SymInt(k), "voters": ["b"]})),
        ]
        for name, fn, inputs in shapes:

            def body(name: str = name, fn: Callable[[], PolicyFn] = fn,
                     inputs: Callable[[], tuple[object, object, Any]] = inputs
                     ) -> tuple[Claim, object]:
                old, new, params = inputs()
                cur = Current(old, SymInt(ver), "a") if fork(has_cur) else None
                ev = SymInt(exp) if fork(has_exp) else None
                put = fork(is_put)
                write = Write("put" if put else "delete", new if put else None, "b", ev)
                with _keys(abstract=True):
                    first, second = fn()(cur, write, params), fn()(cur, write, params)
                return _same(first, second), {"policy": name, "current": cur, "write": write,
                                              "first": first, "second": second}

            yield (_int64(base, delta), body)

        def tally_body() -> tuple[Claim, object]:
            votes = [fork(z3.Bool(f"approve{i}")) for i in range(3)]
            approvals = [f"v{i}" for i, yes in enumerate(votes) if yes]
            rejections = [f"v{i}" for i, yes in enumerate(votes) if not yes]
            params = {"k": SymInt(k), "voters": ["v0", "v1", "v2"]}
            first = policies.tally(approvals, rejections, params)
            second = policies.tally(approvals, rejections, params)
            return first == second, {"policy": "tally", "votes": votes, "first": first,
                                     "second": second}

        yield ([k >= 1], tally_body)

    return cases


# ------------------------------------------------------------------------------ counters


def _counter_comm(fn: Callable[[], PolicyFn]) -> Callable[[], Iterator[Case]]:
    def cases() -> Iterator[Case]:
        x, y = z3.Ints("x y")

        def body() -> tuple[Claim, object]:
            xy, yx = _op(fn(), SymInt(x), SymInt(y), {}), _op(fn(), SymInt(y), SymInt(x), {})
            return _same(_value(xy), _value(yx)), {"x": SymInt(x), "y": SymInt(y),
                                                    "x+y": xy, "y+x": yx}

        yield (_int64(x, y), body)

    return cases


def _counter_assoc(fn: Callable[[], PolicyFn]) -> Callable[[], Iterator[Case]]:
    def cases() -> Iterator[Case]:
        x, y, z = z3.Ints("x y z")

        def body() -> tuple[Claim, object]:
            sx, sy, sz = SymInt(x), SymInt(y), SymInt(z)
            left = _op(fn(), sx, sy, {})
            left = _op(fn(), left.value, sz, {}) if isinstance(left, Accept) else left
            right = _op(fn(), sy, sz, {})
            right = _op(fn(), sx, right.value, {}) if isinstance(right, Accept) else right
            ok = z3.And(_z(isinstance(left, Accept)), _z(_same(_value(left), _value(right))))
            return ok, {"x": sx, "y": sy, "z": sz, "(x+y)+z": left, "x+(y+z)": right}

        yield (_int64(x, y, z, x + y, y + z, x + y + z), body)

    return cases


def _counter_orders(fn: Callable[[], PolicyFn], n: int, in_range: bool
                    ) -> Callable[[], Iterator[Case]]:
    """Concurrent deltas applied in every order reach one value. ``in_range``: only deltas whose
    every partial sum (every subset sum, plus the base) stays within int64."""

    def cases() -> Iterator[Case]:
        b = z3.Int("base")
        ds = [z3.Int(f"d{i}") for i in range(n)]
        has_base = z3.Bool("key_present")
        assume = _int64(b, *ds)
        if in_range:
            for r in range(2, n + 1):
                for sub in itertools.combinations(ds, r):
                    assume += _int64(sum(sub))
            for r in range(1, n + 1):
                for sub in itertools.combinations(ds, r):
                    assume += _int64(b + sum(sub))

        def body() -> tuple[Claim, object]:
            start: object = SymInt(b) if fork(has_base) else None
            finals: list[tuple[tuple[int, ...], object, int]] = []
            for order in itertools.permutations(range(n)):
                state, accepted = start, 0
                for i in order:
                    state, ok = _apply(fn(), state, SymInt(ds[i]), {})
                    accepted += ok
                finals.append((order, state, accepted))
            first = finals[0]
            claim = z3.And(True, *[z3.And(_z(_same(f[1], first[1])), _z(f[2] == first[2]))
                                   for f in finals[1:]])
            return claim, {"base": start, "deltas": [SymInt(d) for d in ds],
                           "(order, value, writes accepted)": finals}

        yield (assume, body)

    return cases


# ---------------------------------------------------------------------------------- sets


def _lists(lengths: Sequence[int], names: str) -> Iterator[list[list[SymInt]]]:
    for shape in itertools.product(*[range(n + 1) for n in lengths]):
        yield [_syms(f"{names[j]}", shape[j]) for j in range(len(shape))]


def _set_law(fn: Callable[[], PolicyFn], law: Literal["commutative", "idempotent", "concurrent"],
             bounds: Sequence[int]) -> Callable[[], Iterator[Case]]:
    """Set laws over every tuple of lists of ≤ ``bounds`` abstract elements (any values, any
    duplicates); an empty base list stands for a missing key."""
    params = {"kind": "set"}

    def cases() -> Iterator[Case]:
        for lists in _lists(bounds, "xyz"):

            def body(lists: list[list[SymInt]] = lists) -> tuple[Claim, object]:
                a: object
                b: object
                with _keys(abstract=True):
                    if law == "commutative":
                        x, y = lists
                        a, b = _op(fn(), x, y, params), _op(fn(), y, x, params)
                        shown: dict[str, object] = {"x": x, "y": y, "x|y": a, "y|x": b}
                    elif law == "idempotent":
                        base, d = lists
                        once = _apply(fn(), base or None, d, params)
                        twice = _apply(fn(), once[0], d, params)
                        a, b = once[0], twice[0]
                        shown = {"base": base, "write": d, "once": a, "twice": b}
                    else:
                        base, d1, d2 = lists
                        start = base or None
                        a = _apply(fn(), _apply(fn(), start, d1, params)[0], d2, params)[0]
                        b = _apply(fn(), _apply(fn(), start, d2, params)[0], d1, params)[0]
                        shown = {"base": base, "d1": d1, "d2": d2, "d1;d2": a, "d2;d1": b}
                    return _same(_value(a) if isinstance(a, (Accept, Reject)) else a,
                                 _value(b) if isinstance(b, (Accept, Reject)) else b), shown

            yield ([], body)

    return cases


_EDGE_VALUES: list[Any] = [1, 1.0, True, "1", None, [1], {"a": 1, "b": 2}, {"b": 2, "a": 1}]


def _set_real_keys(fn: Callable[[], PolicyFn], large: bool) -> Callable[[], Outcome]:
    """The set laws once more with the real ``canonical_bytes``, exhaustively over lists of JSON
    edge values (1, 1.0 and True; one object in two key orders; null; a nested list): results
    compared by canonical bytes, as replicas' digests compare them."""

    def run() -> Outcome:
        t0 = time.perf_counter()
        key = policies.canonical_bytes
        params = {"kind": "set"}
        short = [list(p) for n in range(2) for p in itertools.product(_EDGE_VALUES, repeat=n)]
        pairs = [list(p) for n in range(3 if large else 2)
                 for p in itertools.product(_EDGE_VALUES, repeat=n)]
        cases = 0

        def val(d: Decision) -> bytes:
            return key(d.value) if isinstance(d, Accept) else repr(d).encode()

        try:
            for x, y in itertools.product(pairs, pairs):
                cases += 1
                if val(_op(fn(), x, y, params)) != val(_op(fn(), y, x, params)):
                    return Outcome("violated", cases, time.perf_counter() - t0,
                                   f"counterexample: not commutative for x={x}, y={y}")
                once = _apply(fn(), x or None, y, params)[0]
                if key(_apply(fn(), once, y, params)[0]) != key(once):
                    return Outcome("violated", cases, time.perf_counter() - t0,
                                   f"counterexample: not idempotent for base={x}, write={y}")
            for x, y, z in itertools.product(short, pairs, short):
                cases += 1
                xy, yz = _op(fn(), x, y, params), _op(fn(), y, z, params)
                a = _op(fn(), xy.value, z, params) if isinstance(xy, Accept) else xy
                b = _op(fn(), x, yz.value, params) if isinstance(yz, Accept) else yz
                if val(a) != val(b):
                    return Outcome("violated", cases, time.perf_counter() - t0,
                                   f"counterexample: not associative for {x}, {y}, {z}")
        except Exception as exc:
            return Outcome("error", cases, time.perf_counter() - t0, f"{type(exc).__name__}: {exc}")
        return Outcome("holds", cases, time.perf_counter() - t0, f"{cases} cases exhaustive")

    return run


# ------------------------------------------------------------------ order-dependent kinds


def _order_witness(fn: Callable[[], PolicyFn], kind: Literal["list", "patch", "float"]
                   ) -> Callable[[], Iterator[Case]]:
    """The README's order-dependent kinds: z3 must find two concurrent writes whose order
    changes the value (list append; merge-patch on one member; float deltas on a float key,
    with every value and result finite, as the board stores them)."""

    def cases() -> Iterator[Case]:
        a, b = z3.Ints("a b")
        fa, fb, fbase = z3.FPs("fd1 fd2 fbase", _F64)
        # One binade, [1, 2): the witness search bit-blasts three double adders, and fixing
        # the exponents keeps it to about a second instead of a minute.
        box = [z3.And(z3.fpGEQ(v, z3.FPVal(1.0, _F64)), z3.fpLT(v, z3.FPVal(2.0, _F64)))
               for v in (fa, fb, fbase)]

        def body() -> tuple[Claim, object]:
            d1: object
            d2: object
            start: object = None
            if kind == "list":
                d1, d2 = [SymInt(a)], [SymInt(b)]
            elif kind == "patch":
                d1, d2 = {"m": SymInt(a)}, {"m": SymInt(b)}
            else:
                d1, d2, start = SymFloat(fa), SymFloat(fb), SymFloat(fbase)
            with _keys(abstract=True):
                one = _apply(fn(), _apply(fn(), start, d1, {})[0], d2, {})[0]
                two = _apply(fn(), _apply(fn(), start, d2, {})[0], d1, {})[0]
            claim = z3.Not(_z(_same(one, two)))
            if kind == "float":
                claim = z3.And(claim, *[z3.Not(z3.Or(z3.fpIsInf(v.t), z3.fpIsNaN(v.t)))
                                        for v in (one, two) if isinstance(v, SymFloat)])
            return claim, {"base": start, "d1": d1, "d2": d2, "d1;d2": one, "d2;d1": two}

        yield (box if kind == "float" else [], body)

    return cases


# ------------------------------------------------------------------------------ priority


def _priority_cases(fn: Callable[[], PolicyFn], law: Literal["safety", "liveness"]
                    ) -> Callable[[], Iterator[Case]]:
    """Two agents (or one writing over itself), each ranked or falling to ``default_rank``,
    every rank symbolic, with or without ``expect_version``, put or delete."""

    def cases() -> Iterator[Case]:
        rc, rw, dflt, ver, exp = z3.Ints("rank_current rank_writer default_rank version expect")
        c_ranked, w_ranked, has_exp, is_put, same = z3.Bools(
            "current_ranked writer_ranked expect_given is_put same_agent")

        def body() -> tuple[Claim, object]:
            writer = "c" if fork(same) else "w"
            ranks: dict[str, object] = {}
            if fork(c_ranked):
                ranks["c"] = SymInt(rc)
            if writer == "w" and fork(w_ranked):
                ranks["w"] = SymInt(rw)
            params = {"ranks": ranks, "default_rank": SymInt(dflt)}
            eff_c = rc if "c" in ranks else dflt
            eff_w = eff_c if writer == "c" else (rw if "w" in ranks else dflt)
            ev = SymInt(exp) if fork(has_exp) else None
            put = fork(is_put)
            cur = Current({"v": 1}, SymInt(ver), "c")
            write = Write("put" if put else "delete", {"v": 2} if put else None, writer, ev)
            d = fn()(cur, write, params)
            shown = {"ranks": ranks, "default_rank": SymInt(dflt), "current": cur,
                     "write": write, "decision": d}
            if law == "safety":
                return z3.Implies(_z(isinstance(d, Accept)), eff_w >= eff_c), shown
            cas_ok = True if ev is None else exp == ver
            return z3.Implies(z3.And(eff_w >= eff_c, _z(cas_ok)),
                              _z(isinstance(d, Accept))), shown

        yield ([], body)

    return cases


# ---------------------------------------------------------------------------------- vote


def _vote_run(tally_fn: TallyFn, vote_fn: PolicyFn, k: int, approve: Sequence[Any],
              voters: list[str] | None, proposer_approves: bool, freeze: bool = True
              ) -> tuple[list[str], list[list[str]]]:
    """One proposal through the state machine's vote rules (consensus/core/state.py) around the
    shipped ``vote`` and ``tally``: ``_open_vote`` counts the proposer's approval unless
    ``proposer_approves=False`` and settles at once; ``_vote`` adds one distinct agent's vote (a
    repeat is refused as already-voted, a stranger as not-a-voter: the model draws only
    admissible voters) and settles; ``_pending_or_refuse`` refuses every vote once the status is
    no longer pending (``freeze``). Returns the status and approvals after each step."""
    params: dict[str, Any] = {"k": k, "proposer_approves": proposer_approves}
    if voters is not None:
        params["voters"] = voters
    decision = vote_fn(None, Write("put", 1, "p", None), params)
    if not isinstance(decision, Defer):
        return ["refused"], [[]]
    approvals = ["p"] if proposer_approves else []
    rejections: list[str] = []
    status = tally_fn(approvals, rejections, params)
    history, approved_by = [status], [list(approvals)]
    pool = [v for v in voters if v not in approvals] if voters is not None else [
        f"a{i}" for i in range(len(approve))]
    for agent, yes in zip(pool, approve, strict=False):
        if not (freeze and status != "pending"):
            (approvals if yes else rejections).append(agent)
            status = tally_fn(approvals, rejections, params)
        history.append(status)
        approved_by.append(list(approvals))
    return history, approved_by


def _vote_cases(tally_fn: Callable[[], TallyFn], law: str, n_max: int, freeze: bool = True,
                with_voters: tuple[bool, ...] = (True, False)) -> Callable[[], Iterator[Case]]:
    """Every voter list of 1..n_max agents (and no list, with n_max further voters), the
    proposer approving or not, every approve/reject sequence, k symbolic (1..n with a list,
    ≥ 1 without)."""

    def cases() -> Iterator[Case]:
        k_t = z3.Int("k")
        approve = [z3.Bool(f"approve{i}") for i in range(n_max)]
        shapes: list[list[str] | None] = []
        if True in with_voters:
            shapes += [["p", *[f"v{i}" for i in range(1, n)]] for n in range(1, n_max + 1)]
        if False in with_voters:
            shapes.append(None)
        for voters, pa in itertools.product(shapes, (True, False)):
            bound = [k_t >= 1] + ([k_t <= len(voters)] if voters is not None else [])

            def body(voters: list[str] | None = voters, pa: bool = pa) -> tuple[Claim, object]:
                k = SymInt(k_t)
                votes = [SymBool(a) for a in approve]
                hist, approved_by = _vote_run(tally_fn(), policies.vote, k, votes, voters, pa,
                                              freeze)
                shown = {"k": k, "voters": voters, "proposer_approves": pa,
                         "votes": votes[: len(hist) - 1], "statuses": hist}
                if law == "stays-decided":
                    decided = [i for i, s in enumerate(hist) if s != "pending"]
                    return all(s == hist[decided[0]] for s in hist[decided[0]:]) if decided \
                        else True, shown
                if law == "k-distinct":
                    claims = [k_t <= len(set(a)) for s, a in zip(hist, approved_by, strict=True)
                              if s == "approved"]
                    return z3.And(True, *claims), shown
                # "decides": with a voter list, once every voter voted the vote is decided
                return hist[-1] != "pending", shown

            yield (bound, body)

    return cases


# ----------------------------------------------------------------------------- the table


def _tally() -> TallyFn:
    return policies.tally


def checks(large: bool = False) -> list[Check]:
    """Every law with its negative control. ``large`` raises the list and vote bounds."""
    set_n = 3 if large else 2  # commutativity; associativity's middle operand
    idem = [2, 3] if large else [2, 2]  # base, write
    orders = [1, 2, 2] if large else [1, 2, 1]  # base, first write, second write
    orders_n = 4 if large else 3
    votes_n = 5 if large else 4
    sym = f"all integers (unbounded; int64 where stated); {TOOL} {z3.get_version_string()}"

    def forall(cases: Callable[[], Iterable[Case]]) -> Callable[[], Outcome]:
        return lambda: _run(cases, "forall")

    def exists(cases: Callable[[], Iterable[Case]], logic: str | None = None
               ) -> Callable[[], Outcome]:
        return lambda: _run(cases, "exists", logic)

    stale_bug = _planted(policies.reject_stale, "mismatch = _version_check(current, write)",
                         "mismatch = None")
    lww_counter = _planted(
        policies.last_writer_wins, 'return Accept(write.value, "log order")',
        'params.setdefault("_calls", []).append(1) if isinstance(params, dict) else None\n'
        '    odd = len(params.get("_calls", [])) % 2\n'
        '    return Accept(write.value if odd else None, "log order")')
    minus = _planted(policies.merge, "total = base + value", "total = base - value")
    float_drop = _planted(policies.merge, "total = base + value", "total = base")
    union = "Accept(_as_set(items + value)"
    set_append = _planted(policies.merge, union, "Accept((items + value)")
    set_unsorted = _planted(policies.merge, union, "Accept(list(dict.fromkeys(items + value))")
    set_dups = _planted(policies.merge, union, "Accept(_as_set(items) + value")
    list_sorted = _planted(policies.merge, 'return Accept(items + value, f"list append',
                           'return Accept(_as_set(items + value), f"list append')
    patch_const = _planted(policies.merge, "Accept(merge_patch(base, value)", "Accept(({})")
    flipped = _planted(policies.priority, "if mine < theirs:", "if mine > theirs:")
    off_by_one = _planted(policies.tally, "if len(approvals) >= k:",
                          "if len(approvals) + 1 >= k:")
    early_reject = _planted(policies.tally, "if len(set(voters)) - len(rejections) < k:",
                            "if len(set(voters)) - len(rejections) <= k:")
    no_unreachable = _planted(policies.tally, "if len(set(voters)) - len(rejections) < k:",
                              "if False:")
    builtins = {"reject-stale": lambda: policies.reject_stale,
                "last-writer-wins": lambda: policies.last_writer_wins,
                "merge": _merge, "priority": lambda: policies.priority,
                "vote": lambda: policies.vote}

    rows: list[Check] = [
        Check("z3-determinism", "every built-in policy and tally, called twice on the same "
              "symbolic inputs, decide alike", "z3", f"lists of ≤ 2; {sym}",
              "holds", forall(_determinism_cases(lambda: policies.last_writer_wins))),
        Check("z3-determinism-ctl", "control: a policy keeping state between calls",
              "z3", "same", "violated", forall(_determinism_cases(lww_counter))),
        Check("z3-purity", "policies.py and policy_ops.py use no impure import, global state "
              "or process-dependent builtin", "ast", "whole modules", "holds", _static_purity()),
        Check("z3-purity-ctl", "control: the same modules with `import random` planted",
              "ast", "whole modules", "violated", _static_purity("\nimport random\n")),
        Check("z3-reject-stale", "reject-stale accepts only with expect_version == the key's "
              "version (0 if missing), or without one only to create", "z3", sym, "holds",
              forall(_cas_cases(lambda: policies.reject_stale, True, "reject-stale"))),
        Check("z3-reject-stale-ctl", "control: reject-stale ignoring expect_version", "z3", sym,
              "violated", forall(_cas_cases(stale_bug, True, "reject-stale"))),
        Check("z3-cas-all", "every built-in accepts (or opens a vote) only if a given "
              "expect_version equals the key's version", "z3", sym, "holds",
              forall(_cas_all(builtins))),
        Check("z3-cas-all-ctl", "control: the same with reject-stale ignoring expect_version",
              "z3", sym, "violated", forall(_cas_all({**builtins, "reject-stale": stale_bug}))),
        Check("z3-counter-comm", "integer counter: x⊕y = y⊕x, overflow refusals included",
              "z3", sym, "holds", forall(_counter_comm(_merge))),
        Check("z3-counter-comm-ctl", "control: counter that subtracts", "z3", sym, "violated",
              forall(_counter_comm(minus))),
        Check("z3-counter-assoc", "integer counter: (x⊕y)⊕z = x⊕(y⊕z) when the sums are in "
              "int64", "z3", sym, "holds", forall(_counter_assoc(_merge))),
        Check("z3-counter-assoc-ctl", "control: counter that subtracts", "z3", sym, "violated",
              forall(_counter_assoc(minus))),
        Check("z3-counter-orders", f"{orders_n} concurrent integer deltas reach one value in "
              "every order (key missing or not), when every partial sum is in int64", "z3",
              f"{orders_n} deltas, {sym}", "holds",
              forall(_counter_orders(_merge, orders_n, in_range=True))),
        Check("z3-counter-orders-ctl", "control: counter that subtracts", "z3",
              f"{orders_n} deltas", "violated",
              forall(_counter_orders(minus, orders_n, in_range=True))),
        Check("z3-counter-int64-limit", "limit (README): at the int64 boundary an overflow "
              "refusal makes the counter order-dependent", "z3", "2 deltas, int64", "violated",
              forall(_counter_orders(_merge, 2, in_range=False))),
        Check("z3-set-comm", "set: x|y = y|x", "z3", f"lists of ≤ {set_n} abstract elements",
              "holds", forall(_set_law(_merge, "commutative", [set_n] * 2))),
        Check("z3-set-comm-ctl", "control: set merge without the canonical order", "z3",
              f"lists of ≤ {set_n}", "violated", forall(_set_law(set_unsorted, "commutative",
                                                                  [set_n] * 2))),
        Check("z3-set-assoc", "set: (x|y)|z = x|(y|z)", "z3",
              f"lists of ≤ 1 (x, z) and ≤ {set_n} (y) abstract elements", "holds",
              forall(_set_law_shaped(_merge, 1, set_n))),
        Check("z3-set-assoc-ctl", "control: set merge keeping duplicates of the write", "z3",
              "same", "violated", forall(_set_law_shaped(set_dups, 1, set_n))),
        Check("z3-set-idem", "set: applying the same write twice = once", "z3",
              f"base of ≤ {idem[0]}, write of ≤ {idem[1]} abstract elements", "holds",
              forall(_set_law(_merge, "idempotent", idem))),
        Check("z3-set-idem-ctl", "control: set merge that appends", "z3", "same",
              "violated", forall(_set_law(set_append, "idempotent", idem))),
        Check("z3-set-orders", "set: two concurrent writes reach one value in either order "
              "(key missing or not)", "z3",
              f"base of ≤ {orders[0]}, writes of ≤ {orders[1]} and ≤ {orders[2]} abstract "
              "elements", "holds",
              forall(_set_law(_merge, "concurrent", orders))),
        Check("z3-set-orders-ctl", "control: set merge without the canonical order", "z3",
              "same", "violated",
              forall(_set_law(set_unsorted, "concurrent", orders))),
        Check("z3-set-real-keys", "set laws with the real canonical_bytes on JSON edge values",
              "exhaustive", f"lists of ≤ {2 if large else 1} of 8 edge values", "holds",
              _set_real_keys(_merge, large)),
        Check("z3-set-real-keys-ctl", "control: set merge that appends", "exhaustive", "same",
              "violated", _set_real_keys(set_append, large)),
        Check("z3-list-order", "list append is order-dependent: z3 finds two writes whose order "
              "changes the value", "z3", sym, "holds", exists(_order_witness(_merge, "list"))),
        Check("z3-list-order-ctl", "control: list merge that sorts (no witness exists)", "z3",
              sym, "violated", exists(_order_witness(list_sorted, "list"))),
        Check("z3-patch-order", "merge-patch is order-dependent: z3 finds two patches whose "
              "order changes the value", "z3", sym, "holds",
              exists(_order_witness(_merge, "patch"))),
        Check("z3-patch-order-ctl", "control: merge-patch that stores {} (no witness exists)",
              "z3", sym, "violated", exists(_order_witness(patch_const, "patch"))),
        Check("z3-float-order", "float counter deltas are order-dependent (rounding): z3 "
              "finds a base and two deltas whose order changes the sum", "z3",
              "binary64, base and deltas in [1, 2)", "holds",
              exists(_order_witness(_merge, "float"), "QF_FP")),
        Check("z3-float-order-ctl", "control: counter that ignores the delta (no witness)",
              "z3", "same", "violated", exists(_order_witness(float_drop, "float"), "QF_FP")),
        Check("z3-priority", "priority: a write is accepted only if the writer's rank ≥ the "
              "current author's", "z3", sym, "holds",
              forall(_priority_cases(lambda: policies.priority, "safety"))),
        Check("z3-priority-ctl", "control: priority with the comparison flipped", "z3", sym,
              "violated", forall(_priority_cases(flipped, "safety"))),
        Check("z3-priority-live", "priority: an equal or higher rank is accepted when a given "
              "expect_version matches", "z3", sym, "holds",
              forall(_priority_cases(lambda: policies.priority, "liveness"))),
        Check("z3-priority-live-ctl", "control: priority with the comparison flipped", "z3", sym,
              "violated", forall(_priority_cases(flipped, "liveness"))),
        Check("z3-vote-once", "vote: decided once, stays decided (state machine's freeze + "
              "tally)", "z3", f"≤ {votes_n} voters, k symbolic", "holds",
              forall(_vote_cases(_tally, "stays-decided", votes_n))),
        Check("z3-vote-once-ctl", "control: re-tallying after a decision (freeze removed)",
              "z3", f"≤ {votes_n} voters", "violated",
              forall(_vote_cases(_tally, "stays-decided", votes_n, freeze=False))),
        Check("z3-vote-monotone", "vote with a voter list: tally alone never reverses a "
              "decision as further votes arrive", "z3", f"≤ {votes_n} voters, k symbolic",
              "holds", forall(_vote_cases(_tally, "stays-decided", votes_n, freeze=False,
                                          with_voters=(True,)))),
        Check("z3-vote-monotone-ctl", "control: tally rejecting while k is still reachable",
              "z3", f"≤ {votes_n} voters", "violated",
              forall(_vote_cases(early_reject, "stays-decided", votes_n, freeze=False,
                                 with_voters=(True,)))),
        Check("z3-vote-k", "vote: approved only with ≥ k distinct approvers", "z3",
              f"≤ {votes_n} voters, k symbolic", "holds",
              forall(_vote_cases(_tally, "k-distinct", votes_n))),
        Check("z3-vote-k-ctl", "control: tally approving at k-1", "z3", f"≤ {votes_n} voters",
              "violated", forall(_vote_cases(off_by_one, "k-distinct", votes_n))),
        Check("z3-vote-decides", "vote with a voter list: decided once every voter voted",
              "z3", f"≤ {votes_n} voters, k symbolic", "holds",
              forall(_vote_cases(_tally, "decides", votes_n, with_voters=(True,)))),
        Check("z3-vote-decides-ctl", "control: tally never rejecting an unreachable k", "z3",
              f"≤ {votes_n} voters", "violated",
              forall(_vote_cases(no_unreachable, "decides", votes_n, with_voters=(True,)))),
    ]
    return rows


def _set_law_shaped(fn: Callable[[], PolicyFn], outer: int, inner: int
                    ) -> Callable[[], Iterator[Case]]:
    """Associativity with x, z of ≤ ``outer`` and y of ≤ ``inner`` elements (the middle operand
    is the one both groupings treat differently)."""
    params = {"kind": "set"}

    def cases() -> Iterator[Case]:
        for x, y, z in _lists([outer, inner, outer], "xyz"):

            def body(x: list[SymInt] = x, y: list[SymInt] = y, z: list[SymInt] = z
                     ) -> tuple[Claim, object]:
                with _keys(abstract=True):
                    xy, yz = _op(fn(), x, y, params), _op(fn(), y, z, params)
                    a = _op(fn(), xy.value, z, params) if isinstance(xy, Accept) else xy
                    b = _op(fn(), x, yz.value, params) if isinstance(yz, Accept) else yz
                return _same(_value(a), _value(b)), {"x": x, "y": y, "z": z, "(x|y)|z": a,
                                                     "x|(y|z)": b}

            yield ([], body)

    return cases


def main() -> int:
    """Print the table; exit 1 if any row's verdict differs from its expectation."""
    large = "--large" in sys.argv
    bad = 0
    t0 = time.perf_counter()
    for check in checks(large):
        out = check.run()
        ok = check.passed(out)
        bad += not ok
        print(f"{'ok ' if ok else 'BAD'} {check.name:24s} {out.verdict:8s} "
              f"{out.states if out.states is not None else '-':>6} {out.time_s:6.2f}s  "
              f"{check.property}\n      {out.detail[:300]}")
    print(f"total {time.perf_counter() - t0:.1f}s")
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
