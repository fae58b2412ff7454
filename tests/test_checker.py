"""The linearizability checker (consensus/testing/checker.py): known verdicts, simulated histories,
indeterminate operations, budgets, and its negative control (a planted stale read); each rule of
the frontier search on a hand-made history that needs it (and its planted-bug twin), the search
against the reference depth-first search, and keys sharing a time limit."""

from __future__ import annotations

import dataclasses
import math
import random
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bench.checker import plant_stale_read, simulate
from quorumboard.consensus.errors import InvariantViolation
from quorumboard.consensus.testing import checker
from quorumboard.consensus.testing.checker import (
    UNKNOWN,
    CasRegister,
    Counter,
    LwwRegister,
    Model,
    Operation,
    SetModel,
    check_operations,
)


def op(i: int, inp: tuple[object, ...], out: object, call: float, ret: float,
       key: str = "k", client: str = "") -> Operation:
    return Operation(i, client or f"c{i}", key, inp, out, call, ret)


def verdict(ops: list[Operation], model: object = None) -> str:
    return check_operations(ops, model or CasRegister()).verdict  # type: ignore[arg-type]


# ------------------------------------------------------------------ small known histories


def test_concurrent_read_may_see_either_value() -> None:
    create = op(0, ("cas", 0, "a"), ("ok", 1), 0.0, 10.0)
    assert verdict([create, op(1, ("read",), (0, None), 1.0, 2.0)]) == "ok"
    assert verdict([create, op(1, ("read",), (1, "a"), 1.0, 2.0)]) == "ok"


def test_read_after_completed_write_must_see_it() -> None:
    create = op(0, ("cas", 0, "a"), ("ok", 1), 0.0, 1.0)
    stale = op(1, ("read",), (0, None), 2.0, 3.0)
    assert verdict([create, stale]) == "violation"
    (bad,) = check_operations([create, stale], CasRegister()).violations
    assert bad.culprit == stale and bad.window == (create, stale)
    assert verdict([create, op(1, ("read",), (1, "a"), 2.0, 3.0)]) == "ok"


def test_refusals_are_observations_too() -> None:
    """A conflict must report the version current at its linearization point."""
    create = op(0, ("cas", 0, "a"), ("ok", 1), 0.0, 1.0)
    assert verdict([create, op(1, ("cas", 0, "b"), ("conflict", 1), 2.0, 3.0)]) == "ok"
    assert verdict([create, op(1, ("cas", 0, "b"), ("conflict", 0), 2.0, 3.0)]) == "violation"
    assert verdict([create, op(1, ("cas", 0, "b"), ("ok", 1), 2.0, 3.0)]) == "violation"


def test_two_creates_cannot_both_win() -> None:
    a = op(0, ("cas", 0, "a"), ("ok", 1), 0.0, 5.0)
    b = op(1, ("cas", 0, "b"), ("ok", 1), 1.0, 6.0)
    assert verdict([a, b]) == "violation"


def test_indeterminate_write_may_or_may_not_have_applied() -> None:
    unknown = op(0, ("cas", 0, "a"), UNKNOWN, 0.0, math.inf)
    assert verdict([unknown, op(1, ("read",), (1, "a"), 5.0, 6.0)]) == "ok"  # it applied
    assert verdict([unknown, op(1, ("read",), (0, None), 5.0, 6.0)]) == "ok"  # or not (yet)
    # ...but once seen it cannot be undone.
    assert verdict([unknown, op(1, ("read",), (1, "a"), 5.0, 6.0),
                    op(2, ("read",), (0, None), 7.0, 8.0)]) == "violation"


def test_other_models() -> None:
    adds = [op(0, ("add", 2), ("ok", 2), 0.0, 1.0), op(1, ("add", 3), ("ok", 5), 0.5, 2.0)]
    assert verdict([*adds, op(2, ("read",), 5, 3.0, 4.0)], Counter()) == "ok"
    assert verdict([*adds, op(2, ("read",), 3, 3.0, 4.0)], Counter()) == "violation"
    s = [op(0, ("add", "x"), ("ok", frozenset({"x"})), 0.0, 1.0),
         op(1, ("add", "y"), ("ok", frozenset({"x", "y"})), 0.5, 2.0)]
    assert verdict([*s, op(2, ("read",), frozenset({"x", "y"}), 3.0, 4.0)], SetModel()) == "ok"
    assert verdict([*s, op(2, ("read",), frozenset({"y"}), 3.0, 4.0)], SetModel()) == "violation"
    w = [op(0, ("write", "a"), ("ok", 1), 0.0, 1.0), op(1, ("write", "b"), ("ok", 2), 0.5, 2.0)]
    assert verdict([*w, op(2, ("read",), (2, "b"), 3.0, 4.0)], LwwRegister()) == "ok"
    assert verdict([*w, op(2, ("read",), (1, "a"), 3.0, 4.0)], LwwRegister()) == "violation"


def test_keys_are_checked_independently_and_a_model_per_key() -> None:
    ops = [op(0, ("add", 1), ("ok", 1), 0.0, 1.0, key="ctr"),
           op(1, ("cas", 0, "a"), ("ok", 1), 0.0, 1.0, key="reg"),
           op(2, ("read",), (0, None), 2.0, 3.0, key="reg")]
    result = check_operations(ops, lambda k: Counter() if k == "ctr" else CasRegister())
    assert {k.key: k.verdict for k in result.keys} == {"ctr": "ok", "reg": "violation"}
    assert result.verdict == "violation"


def test_malformed_history_is_refused() -> None:
    with pytest.raises(InvariantViolation):
        check_operations([op(0, ("read",), (0, None), 2.0, 1.0)], CasRegister())
    with pytest.raises(InvariantViolation):
        check_operations([op(0, ("read",), (0, None), 0.0, 1.0)] * 2, CasRegister())


# -------------------------------------------------------------------- simulated histories


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), clients=st.integers(1, 8), keys=st.integers(1, 3),
       info=st.sampled_from([0.0, 0.05, 0.3]))
def test_simulated_linearizable_histories_pass(seed: int, clients: int, keys: int,
                                               info: float) -> None:
    history, _ = simulate(300, clients, keys, seed, info)
    result = check_operations(history, CasRegister())
    assert result.verdict == "ok", result.explain()


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), clients=st.integers(1, 8), keys=st.integers(1, 3))
def test_negative_control_planted_stale_read_is_caught(seed: int, clients: int,
                                                       keys: int) -> None:
    history, _ = simulate(300, clients, keys, seed, 0.05)
    bad = plant_stale_read(history)
    result = check_operations(bad, CasRegister())
    assert result.verdict == "violation"
    (failing,) = result.violations
    planted = next(o for o, b in zip(history, bad, strict=True) if o != b)
    assert planted.id in {o.id for o in failing.window}, result.explain()
    assert 0 < len(failing.window) <= failing.operations
    # The window really fails on its own, and it is minimal among prefixes: dropping its last
    # completion makes it explainable.
    window_ops = [dataclasses.replace(o, output=UNKNOWN, ret=math.inf)
                  if o.ret > failing.cut_time else o for o in failing.window]
    assert check_operations(window_ops, CasRegister()).verdict == "violation"
    assert "no valid order once this completes" in result.explain()
    # The culprit's completion is what breaks it: cut just before, the prefix is explainable.
    assert failing.culprit is not None and failing.culprit.ret == failing.cut_time
    before = [dataclasses.replace(o, output=UNKNOWN, ret=math.inf) if o.ret >= failing.cut_time
              else o for o in failing.window]
    assert check_operations(before, CasRegister()).verdict == "ok"


def test_budget_gives_unknown_not_a_hang() -> None:
    history, _ = simulate(2_000, 16, 1, 3, 0.0)
    assert check_operations(history, CasRegister(), steps_max=50).verdict == "unknown"
    calls = []

    def stop() -> bool:
        calls.append(1)
        return True

    result = check_operations(history, CasRegister(), should_stop=stop)
    assert result.verdict == "unknown" and calls
    assert "budget" in result.explain() or "unknown" in result.explain()


def test_twenty_thousand_operations_decide() -> None:
    """The issue's size: 20,000 operations from 16 clients over 10 keys (timing is measured by
    bench/checker.py, not asserted here)."""
    history, _ = simulate(20_000, 16, 10, 11, 0.01)
    assert check_operations(history, CasRegister()).verdict == "ok"
    assert check_operations(plant_stale_read(history), CasRegister()).verdict == "violation"


def test_culprit_is_the_completion_the_search_stopped_at() -> None:
    """Two reads complete at the cut time; the stale one is named, not the first by call."""
    write = op(0, ("cas", 0, "a"), ("ok", 1), 0.0, 1.0)
    fresh = op(1, ("read",), (1, "a"), 2.0, 3.0)
    stale = op(2, ("read",), (0, None), 2.0, 3.0)
    (bad,) = check_operations([write, fresh, stale], CasRegister()).violations
    assert bad.culprit == stale


# ------------------------------------------- the search's rules, on small hand-made histories
# Each history needs one rule of the frontier search to be decided in a few hundred steps; the
# reference depth-first search (engine="wgl") runs out of the same small budget on it, and the
# planted-bug twin of each history is still caught, naming the planted operation.

SMALL_BUDGET = 2_000


def _reads_around_a_write(planted: bool) -> list[Operation]:
    """One slow write and 16 reads all concurrent with it, alternately seeing it and not."""
    ops = [op(0, ("cas", 0, "a"), ("ok", 1), 0.0, 100.0)]
    ops += [op(j, ("read",), (0, None) if j % 2 else (1, "a"), float(j), 100.0 + j)
            for j in range(1, 17)]
    if planted:  # a read called after the write completed that does not see it
        ops.append(op(17, ("read",), (0, None), 300.0, 301.0))
    return ops


def _lost_writes(planted: bool) -> list[Operation]:
    """12 compare-and-sets from version 0 that timed out and never applied, then a create by
    someone else that everybody reads."""
    ops = [op(j, ("cas", 0, f"x{j}"), UNKNOWN, float(j), math.inf) for j in range(12)]
    ops.append(op(12, ("cas", 0, "b"), ("ok", 1), 50.0, 51.0))
    ops += [op(13 + j, ("read",), (1, "b"), 60.0 + 2 * j, 61.0 + 2 * j) for j in range(20)]
    if planted:  # a lost write seen after the create that beat it was seen: no order
        ops.append(op(40, ("read",), (1, "x3"), 200.0, 201.0))
    return ops


def _equal_lost_increments(planted: bool) -> list[Operation]:
    """12 increments by one that timed out; reads then see the total climb 0, 1, ..., 12."""
    ops = [op(j, ("add", 1), UNKNOWN, float(j), math.inf) for j in range(12)]
    ops += [op(13 + j, ("read",), j, 50.0 + 2 * j, 51.0 + 2 * j) for j in range(13)]
    if planted:  # the total goes back
        ops.append(op(30, ("read",), 11, 200.0, 201.0))
    return ops


RULES = [
    # (history, model, the rule that decides it)
    (_reads_around_a_write, CasRegister, "observers placed at once"),
    (_lost_writes, CasRegister, "dominated indeterminate sets dropped"),
    (_equal_lost_increments, Counter, "equal indeterminate operations in one order"),
]


@pytest.mark.parametrize("history,model,rule", RULES, ids=[r for _, _, r in RULES])
def test_each_search_rule_decides_its_history_in_a_small_budget(
        history: Callable[[bool], list[Operation]], model: Callable[[], Model[Any]],
        rule: str) -> None:
    ops = history(False)
    result = check_operations(ops, model(), steps_max=SMALL_BUDGET)
    assert result.verdict == "ok", (rule, result.explain())
    assert check_operations(ops, model(), steps_max=SMALL_BUDGET, engine="wgl").verdict \
        == "unknown", "the reference search needs far more steps: the history tests the rule"
    assert check_operations(ops, model(), steps_max=5_000_000, engine="wgl").verdict == "ok"


@pytest.mark.parametrize("history,model,rule", RULES, ids=[r for _, _, r in RULES])
def test_negative_control_each_rules_history_with_a_planted_bug_is_caught(
        history: Callable[[bool], list[Operation]], model: Callable[[], Model[Any]],
        rule: str) -> None:
    ops = history(True)
    result = check_operations(ops, model(), steps_max=SMALL_BUDGET)
    assert result.verdict == "violation", (rule, result.explain())
    (bad,) = result.violations
    assert bad.culprit == ops[-1] and ops[-1] in bad.window, result.explain()


# ------------------------------------------------------- the search against the reference


def _random_history(rnd: random.Random, model: str) -> list[Operation]:
    """A few operations from a few clients, produced by a sequential run (so linearizable)
    with some outcomes lost (indeterminate) and, sometimes, one output changed (often not)."""
    clock = [0.0] * rnd.randint(1, 5)
    planned = []
    for i in range(rnd.randint(1, 10)):
        c = rnd.randrange(len(clock))
        call = clock[c] + rnd.random() / 2
        clock[c] = call + rnd.random() * 3
        planned.append((rnd.uniform(call, clock[c]), i, c, call, clock[c]))
    planned.sort()
    state: Any = (0, None) if model == "cas" else 0
    ops = []
    for _, i, c, call, ret in planned:
        inp: tuple[Any, ...]
        if rnd.random() < 0.4:
            inp, out = ("read",), state
        elif model == "cas":
            expect = state[0] if rnd.random() < 0.6 else rnd.randrange(3)
            inp = ("cas", expect, rnd.choice("ab"))
            out = ("ok", expect + 1) if expect == state[0] else ("conflict", state[0])
            state = (expect + 1, inp[2]) if expect == state[0] else state
        else:
            inp = ("add", rnd.randint(1, 2))
            state += inp[1]
            out = ("ok", state)
        if rnd.random() < 0.12:
            out, ret = UNKNOWN, math.inf
        ops.append(op(i, inp, out, call, ret, client=f"c{c}"))
    if rnd.random() < 0.4:
        j = rnd.randrange(len(ops))
        if not ops[j].indeterminate:
            wrong = (rnd.randrange(3), rnd.choice([None, "a", "b"])) if model == "cas" \
                else rnd.randrange(6)
            ops[j] = dataclasses.replace(ops[j], output=wrong if ops[j].input[0] == "read"
                                         else ("ok", rnd.randrange(4)))
    return ops


@settings(max_examples=300, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), model=st.sampled_from(["cas", "counter"]))
def test_the_search_agrees_with_the_reference_search(seed: int, model: str) -> None:
    """Same verdict, same smallest failing window and culprit, on small random histories
    (about a third of them not linearizable)."""
    ops = _random_history(random.Random(seed), model)
    m: Model[Any] = CasRegister() if model == "cas" else Counter()
    new, ref = check_operations(ops, m), check_operations(ops, m, engine="wgl")
    assert new.verdict == ref.verdict, (new.explain(), ref.explain())
    for a, b in zip(new.violations, ref.violations, strict=True):
        assert (a.window, a.culprit, a.cut_time) == (b.window, b.culprit, b.cut_time)


def test_keys_share_a_time_limit_in_turns(monkeypatch: pytest.MonkeyPatch) -> None:
    """A limit that stops the search part way stops every key part way, each saying how far it
    got; before, the first key took the whole limit and the others never started. (Turns are
    made short here so that a small history needs several.)"""
    monkeypatch.setattr(checker, "SLICE_STEPS", 4_096)
    history, _ = simulate(12_000, 16, 3, 5, 0.0)
    assert all(k.steps > 3 * 4_096 for k in check_operations(history, CasRegister()).keys)
    polls = []

    def stop() -> bool:  # about one and a half turns of each key
        polls.append(1)
        return len(polls) > 3 * 4_096 * 3 // 2 // 1_024

    result = check_operations(history, CasRegister(), should_stop=stop)
    assert [k.verdict for k in result.keys] == ["unknown"] * 3, result.explain()
    for k in result.keys:
        assert "time limit reached" in k.reason and k.steps >= 4_096, k.reason
        position = int(k.reason.split("at event ")[1].split(" of")[0].replace(",", ""))
        assert 0 < position < 2 * 4_000 * 3 // 4, k.reason
