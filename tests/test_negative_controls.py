"""Negative controls: each checker of a chaos run catches the bug planted for it (planted only
by the harness's replica entry point, ``Scenario(planted_bug=...)`` -> ``LocalCluster(planted_bug=
...)``; see consensus/testing/replica.py), and passes the same run without it.

* ``retry-bypass`` (a retry that skips the session table) -> the counter's exactly-once check;
* ``watch-gap`` (watch streams that drop events) -> the watch check;
* ``fence-bypass`` (the leader drops fences) -> the claims safety check;
* ``lost-write`` (acknowledged puts forgotten) -> the set completeness check and the final
  reads of the linearizability check;
* ``divergent-apply`` (one replica applies differently) -> the convergence check.

``stale-reads`` -> linearizability is in tests/test_workload.py and tests/test_chaos.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from quorumboard.consensus import InvalidCommand, LocalCluster
from quorumboard.consensus.testing.chaos import ChaosReport, Scenario, run_chaos


def _run(tmp_path: Path, workload: str, planted_bug: str | None = None) -> ChaosReport:
    # A short run with a harmless fault: these bugs need no fault to show.
    scenario = Scenario.model_validate(dict(
        replicas=3, workload=workload, clients=4, rate=150.0, duration_s=5.0, keys=2,
        nemesis=["delay"], interval_s=1.0, fault_s=1.0, seed=4, planted_bug=planted_bug))
    return run_chaos(scenario, tmp_path / "run")


def _finding(report: ChaosReport, check: str) -> str:
    return next(f.verdict for f in report.findings if f.check == check)


CONTROLS = [
    # (planted bug, workload, the check that must catch it, words its account must hold)
    ("retry-bypass", "counter", "exactly-once", ["applied an increment twice"]),
    # The committed history is read through a watch too, so the gap shows there as well: as an
    # acknowledged write missing from it, or as a stream that differs.
    ("watch-gap", "watch", "watch", ["not in the committed history", "missing"]),
    ("fence-bypass", "claims", "claims", ["outside its claim's tenure"]),
    ("lost-write", "set", "set-complete", ["missing from the final set"]),
]


@pytest.mark.parametrize("workload,check", [(w, c) for _, w, c, _ in CONTROLS])
def test_healthy_runs_pass_the_checks_the_controls_break(tmp_path: Path, workload: str,
                                                          check: str) -> None:
    report = _run(tmp_path, workload)
    assert report.verdict == "valid", report.explanation
    assert _finding(report, check) == "ok"


@pytest.mark.parametrize("bug,workload,check,words", CONTROLS)
def test_each_planted_bug_is_caught_by_its_check(tmp_path: Path, bug: str, workload: str,
                                                 check: str, words: list[str]) -> None:
    report = _run(tmp_path, workload, planted_bug=bug)
    assert report.verdict == "invalid"
    assert _finding(report, check) == "violation", report.explanation
    assert any(w in report.explanation for w in words), report.explanation


def test_a_replica_that_applies_differently_is_caught_by_convergence(tmp_path: Path) -> None:
    report = _run(tmp_path, "lww-register", planted_bug="divergent-apply")
    assert report.verdict == "invalid" and not report.converged
    assert len(set(report.digests)) > 1
    assert "did not converge" in " ".join(report.problems)


def test_a_planted_bug_is_named_and_only_planted_in_replica_processes() -> None:
    """``LocalCluster(planted_bug=...)`` refuses a name the harness does not know, and embedded
    replicas (no harness entry point to plant it through)."""
    with pytest.raises(InvalidCommand, match="not one of"):
        LocalCluster(replicas=1, planted_bug="stale-read", start=False)
    with pytest.raises(InvalidCommand, match="replica processes"):
        LocalCluster(replicas=1, planted_bug="stale-reads", embedded=True, start=False)
