"""Negative controls: each checker of a chaos run catches the bug planted for it (switchable only
through ``QUORUMBOARD_PLANTED_BUG`` in the replicas' environment; see consensus/server.py).

* ``retry-bypass`` (a retry that skips the session table) -> the counter's exactly-once check;
* ``watch-gap`` (watch streams that drop events) -> the watch check;
* ``divergent-apply`` (one replica applies differently) -> the convergence check;
* ``fence-bypass`` (the leader drops fences) -> the claims safety check;
* ``lost-write`` (acknowledged puts forgotten) -> the set completeness check and the final
  reads of the linearizability check.

``stale-reads`` -> linearizability is in tests/test_workload.py and tests/test_chaos.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from consensus.chaos import ChaosReport, Scenario, run_chaos
from consensus.server import PLANTED_BUG_ENV


def _run(tmp_path: Path, workload: str) -> ChaosReport:
    # A short run with a harmless fault: these bugs need no fault to show.
    scenario = Scenario(replicas=3, workload=workload, clients=4, rate=150.0, duration_s=5.0,
                        keys=2, nemesis=["delay"], interval_s=1.0, fault_s=1.0, seed=4)
    return run_chaos(scenario, tmp_path / "run")


def _finding(report: ChaosReport, check: str) -> str:
    return next(f.verdict for f in report.findings if f.check == check)


@pytest.mark.parametrize("workload,check", [("counter", "exactly-once"), ("watch", "watch"),
                                            ("claims", "claims"), ("set", "set-complete")])
def test_healthy_runs_pass_the_checks_the_controls_break(tmp_path: Path, workload: str,
                                                          check: str) -> None:
    report = _run(tmp_path, workload)
    assert report.verdict == "valid", report.explanation
    assert _finding(report, check) == "ok"


def test_retry_bypassing_the_session_table_is_caught_by_exactly_once(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(PLANTED_BUG_ENV, "retry-bypass")
    report = _run(tmp_path, "counter")
    assert report.verdict == "invalid"
    assert _finding(report, "exactly-once") == "violation", report.explanation
    assert "applied an increment twice" in report.explanation


def test_a_watch_stream_with_gaps_is_caught(tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(PLANTED_BUG_ENV, "watch-gap")
    report = _run(tmp_path, "watch")
    assert report.verdict == "invalid"
    assert _finding(report, "watch") == "violation", report.explanation
    # The committed history is read through a watch too, so the gap shows there as well: it
    # is caught as an acknowledged write missing from it, or as a stream that differs.
    assert "not in the committed history" in report.explanation \
        or "missing" in report.explanation


def test_a_replica_that_applies_differently_is_caught_by_convergence(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(PLANTED_BUG_ENV, "divergent-apply")
    report = _run(tmp_path, "lww-register")
    assert report.verdict == "invalid" and not report.converged
    assert len(set(report.digests)) > 1
    assert "did not converge" in " ".join(report.problems)


def test_a_stale_holders_write_is_caught_by_the_claims_check(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Stalled claim holders write after their claim expired and was taken over; with the
    fences dropped those writes apply, outside their claim's tenure."""
    monkeypatch.setenv(PLANTED_BUG_ENV, "fence-bypass")
    report = _run(tmp_path, "claims")
    assert report.verdict == "invalid"
    assert _finding(report, "claims") == "violation", report.explanation
    assert "outside its claim's tenure" in report.explanation


def test_acknowledged_writes_that_are_forgotten_are_caught(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(PLANTED_BUG_ENV, "lost-write")
    report = _run(tmp_path, "set")
    assert report.verdict == "invalid"
    assert _finding(report, "set-complete") == "violation", report.explanation
    assert _finding(report, "linearizable") == "violation"
    assert "missing from the final set" in report.explanation
