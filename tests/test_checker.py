"""The linearizability checker (consensus/testing/checker.py): known verdicts, simulated histories,
indeterminate operations, budgets, and its negative control (a planted stale read)."""

from __future__ import annotations

import dataclasses
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bench.checker import plant_stale_read, simulate
from quorumboard.consensus.errors import InvariantViolation
from quorumboard.consensus.testing.checker import (
    UNKNOWN,
    CasRegister,
    Counter,
    LwwRegister,
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
