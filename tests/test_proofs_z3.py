"""The z3 proofs of the policy laws (proofs/z3_checks.py): every row meets its expectation, and
the proofs speak of the shipped code: breaking a shipped policy breaks its proof."""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator
from typing import Any

import pytest

pytest.importorskip("z3")

from quorumboard.consensus.core import policies
from quorumboard.consensus.core.model import Proposal, PutCmd, SetPolicyCmd, VoteCmd
from quorumboard.consensus.core.policies import Accept, Current, PolicyRegistry, Write
from quorumboard.consensus.core.policy_ops import as_int
from quorumboard.consensus.core.state import BoardState, apply
from quorumboard.proofs import z3_checks
from quorumboard.proofs.common import Check, Outcome
from quorumboard.proofs.z3_checks import SymInt, Unsupported, checks, impure_names, mutant

BUILTINS = PolicyRegistry()
"""The built-in policies only: ``apply`` takes its registry as an argument."""

ROWS = {c.name: c for c in checks()}


def _run(name: str) -> Outcome:
    return ROWS[name].run()


@pytest.fixture(scope="module")
def table() -> dict[str, tuple[Check, Outcome]]:
    return {c.name: (c, c.run()) for c in checks()}


@pytest.mark.parametrize("name", sorted(ROWS))
def test_row_meets_expectation(name: str, table: dict[str, tuple[Check, Outcome]]) -> None:
    check, out = table[name]
    assert out.verdict == check.expect, f"{name}: {out.verdict} ({out.detail})"
    if check.expect == "violated" or name.endswith("-order"):
        assert out.detail.startswith(("counterexample:", "witness:", "no witness")) or \
            check.tool == "ast", out.detail  # a refutation names its model


def test_every_law_has_a_negative_control() -> None:
    laws = [n for n, c in ROWS.items() if c.expect == "holds"]
    assert len(laws) >= 20
    for law in laws:
        assert ROWS[f"{law}-ctl"].expect == "violated", law


def test_whole_table_fits_the_ci_budget(table: dict[str, tuple[Check, Outcome]]) -> None:
    assert sum(out.time_s for _, out in table.values()) < 30.0


# ------------------------------------------------- the proofs speak of the shipped code


@pytest.mark.parametrize(
    ("attr", "old", "new", "row"),
    [
        ("merge", "total = base + value", "total = base - value", "z3-counter-comm"),
        ("merge", "total = base + value", "total = base + value + value", "z3-counter-orders"),
        ("merge", "Accept(_as_set(items + value)", "Accept((items + value)", "z3-set-idem"),
        ("merge", "Accept(_as_set(items + value)", "Accept(list(dict.fromkeys(items + value))",
         "z3-set-comm"),
        ("merge", 'return Accept(items + value, f"list append',
         'return Accept(_as_set(items + value), f"list append', "z3-list-order"),
        ("priority", "if mine < theirs:", "if False:", "z3-priority"),
        ("priority", "if mine < theirs:", "if mine > theirs:", "z3-priority-live"),
        ("reject_stale", "if write.expect_version is None and current is not None:",
         "if False:", "z3-reject-stale"),
        ("tally", "if len(approvals) >= k:", "if len(approvals) >= k - 1:", "z3-vote-k"),
    ],
)
def test_breaking_a_shipped_policy_breaks_its_proof(
    monkeypatch: pytest.MonkeyPatch, attr: str, old: str, new: str, row: str
) -> None:
    assert _run(row).verdict == "holds"
    monkeypatch.setattr(policies, attr, mutant(getattr(policies, attr), old, new))
    out = _run(row)
    assert out.verdict == "violated", out
    assert "counterexample" in out.detail or "no witness" in out.detail


def test_a_hand_written_replacement_is_what_gets_proved(monkeypatch: pytest.MonkeyPatch) -> None:
    """Not only source mutants: any function bound as ``policies.priority`` is what z3 sees."""

    def always(current: Current | None, write: Write, params: Any) -> Accept:
        return Accept(write.value, "always")

    monkeypatch.setattr(policies, "priority", always)
    assert _run("z3-priority").verdict == "violated"
    assert _run("z3-priority-live").verdict == "holds"  # accepting everything is live


def test_an_unmodelled_operation_is_an_error_not_a_proof(monkeypatch: pytest.MonkeyPatch) -> None:
    def doubling(current: Current | None, write: Write, params: Any) -> Accept:
        return Accept(write.value * 2, "x2")  # `*` is outside the symbolic layer

    monkeypatch.setattr(policies, "merge", doubling)
    out = _run("z3-counter-comm")
    assert out.verdict == "error" and "not modelled" in out.detail
    with pytest.raises(Unsupported):
        int(SymInt(z3_checks.z3.Int("x")))


def test_a_vanished_mutation_point_errors_its_control() -> None:
    gone = mutant(policies.priority, "this fragment is not there", "x")
    with pytest.raises(Unsupported):
        gone(None, Write("put", 1, "a", None), {})


def test_purity_scan_flags_impure_code() -> None:
    assert impure_names("import time\n") == ["import time"]
    assert impure_names("def f():\n    global n\n    return id(f)\n") == ["global n",
                                                                        "id() at line 3"]
    assert impure_names("from quorumboard.consensus.core.model import Value\n") == []


def test_canonical_bytes_is_restored_after_the_proofs() -> None:
    real = policies.canonical_bytes
    _run("z3-set-comm")
    assert policies.canonical_bytes is real
    assert policies.merge(None, Write("put", [2, 1, 2], "a", None), {"kind": "set"}) == Accept(
        [1, 2], "set union of 3")


# ------------------------------------------------------------- the helper layer and model


@pytest.mark.parametrize("value", [0, -3, 2**63 - 1, True, False, "7", 2.9, -2.9])
def test_as_int_is_int_on_production_values(value: Any) -> None:
    got = as_int(value)
    assert got == int(value) and type(got) is int


def _real_statuses(k: int, voters: list[str] | None, pa: bool, votes: list[bool]) -> list[str]:
    """The real state machine on one proposal: the status after opening and after each vote."""
    s = BoardState()
    params: dict[str, Any] = {"k": k, "proposer_approves": pa}
    if voters is not None:
        params["voters"] = voters
    apply(s, Proposal(agent="admin", command=SetPolicyCmd(prefix="v/", name="vote",
                                                          params=params)), BUILTINS)
    r = apply(s, Proposal(agent="p", command=PutCmd(key="v/x", value=1)), BUILTINS).result
    if r.pending is None:
        return ["refused"]
    pid = r.pending.id
    statuses = [s.pending[pid].status]
    pool = [v for v in voters if v != "p" or not pa] if voters is not None else [
        f"a{i}" for i in range(len(votes))]
    for agent, yes in zip(pool, votes, strict=False):
        apply(s, Proposal(agent=agent, command=VoteCmd(key="v/x", proposal=pid, approve=yes)),
              BUILTINS)
        statuses.append(s.pending[pid].status)
    return statuses


def _vote_shapes() -> Iterator[tuple[int, list[str] | None, bool, list[bool]]]:
    for n, pa in itertools.product(range(1, 4), (True, False)):
        voters = ["p", *[f"v{i}" for i in range(1, n)]]
        for k in range(1, n + 1):
            for votes in itertools.product((True, False), repeat=n):
                yield k, voters, pa, list(votes)
    for k, pa in itertools.product(range(1, 4), (True, False)):
        for votes in itertools.product((True, False), repeat=3):
            yield k, None, pa, list(votes)


def test_vote_model_agrees_with_the_state_machine() -> None:
    """The proofs' vote model (the rules of state.py around the shipped tally) run on concrete
    values gives the status sequence the real ``apply`` gives, on every shape at a small bound."""
    t0 = time.perf_counter()
    shapes = 0
    for k, voters, pa, votes in _vote_shapes():
        shapes += 1
        model, _ = z3_checks._vote_run(policies.tally, policies.vote, k, votes, voters, pa)
        assert model == _real_statuses(k, voters, pa, votes), (k, voters, pa, votes)
    assert shapes > 100 and time.perf_counter() - t0 < 20


def test_rows_run_safely_under_a_threaded_runner() -> None:
    """proofs/run.py runs rows on a thread pool; z3 rows serialize on a lock."""
    from concurrent.futures import ThreadPoolExecutor

    names = ["z3-set-comm", "z3-priority", "z3-vote-k", "z3-set-comm-ctl", "z3-counter-comm"]
    with ThreadPoolExecutor(max_workers=3) as pool:
        outs = list(pool.map(_run, names))
    assert [o.verdict for o in outs] == [ROWS[n].expect for n in names]
