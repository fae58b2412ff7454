"""The lease and session models' rows, and the one command that re-checks everything.

Every property row must hold after a complete SPIN search, and every negative control (and the
documented limit) must be refuted by the assertion it plants against, with a trail: a checker
that stopped finding anything fails here. The runner's own contract (a table row per check, exit
status 0 only when every row passed) is checked on a cheap subset and on a row made to fail.
"""

from __future__ import annotations

import json

import pytest

from quorumboard.proofs import run
from quorumboard.proofs.common import Check, Outcome
from quorumboard.proofs.spin_lease_checks import checks


@pytest.fixture(scope="module")
def lease_results() -> list[tuple[Check, Outcome]]:
    rows = checks()
    return list(zip(rows, run.run_checks(rows, jobs=2), strict=True))


def test_lease_and_session_rows_cover_properties_controls_and_the_eviction_fix() -> None:
    names = {c.name: c.expect for c in checks()}
    assert names["leases.safety"] == "holds"
    assert names["sessions.exactly_once"] == "holds"
    assert names["sessions.exactly_once_across_eviction"] == "holds"
    controls = [n for n, e in names.items() if e == "violated"]
    assert {"leases.bug_local_expiry", "leases.bug_no_refresh_guard", "leases.bug_fence_le",
            "leases.bug_claim_no_bump", "sessions.bug_forget",
            "sessions.bug_resend_after_expiry"} <= set(controls)


def test_lease_and_session_properties_hold(lease_results: list[tuple[Check, Outcome]]) -> None:
    for check, outcome in lease_results:
        if check.expect == "holds":
            assert outcome.verdict == "holds", f"{check.name}: {outcome.detail}"
            assert outcome.states is not None and outcome.states > 1_000, check.name


def test_lease_and_session_controls_are_refuted_by_an_assertion(
        lease_results: list[tuple[Check, Outcome]]) -> None:
    for check, outcome in lease_results:
        if check.expect == "violated":
            assert outcome.verdict == "violated", f"{check.name}: {outcome.detail}"
            assert "assertion violated" in outcome.detail, check.name


def test_runner_table_json_and_exit_status(capsys: pytest.CaptureFixture[str]) -> None:
    assert run.main(["--only", "z3-vote-k*", "--no-install"]) == 0
    table = capsys.readouterr().out
    assert "z3-vote-k " in table and "z3-vote-k-ctl" in table
    assert "counterexample found (expected)" in table and "2/2 rows passed" in table
    assert run.main(["--only", "z3-reject-stale", "--json", "--no-install"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [(r["name"], r["verdict"], r["passed"]) for r in rows] == [  # a prefix matches both
        ("z3-reject-stale", "holds", True), ("z3-reject-stale-ctl", "violated", True)]
    assert run.main(["--only", "no-such-row", "--no-install"]) == 2


def test_runner_fails_when_a_row_does_not_match_its_expectation(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """A property that no longer holds (here: the tool answers 'violated') fails the run."""
    broken = Check(name="planted.row", property="a property the tool refutes", tool="test",
                   bound="-", expect="holds",
                   run=lambda: Outcome("violated", 3, 0.0, "counterexample: planted"))
    monkeypatch.setattr(run, "collect", lambda large, modules=run.MODULES: [broken])
    assert run.main(["--no-install"]) == 1
    out = capsys.readouterr().out
    assert "planted.row" in out and "counterexample: planted" in out
