"""The Raft model rows (proofs/spin/raft.pml) and the pan-output parser they rely on.

The model rows run SPIN for real at the default bound: every property must hold exhaustively and
every planted bug must be refuted with a replayable counterexample. Without spin the test fails
with the install command -- it is never skipped, so CI cannot go green without checking.
"""

from __future__ import annotations

import concurrent.futures
import shutil
from pathlib import Path

import pytest

from quorumboard.proofs import raft_checks
from quorumboard.proofs.common import Check, Outcome
from quorumboard.proofs.spin_runner import (
    SPIN_INSTALL_HINT,
    ToolMissing,
    parse_pan_output,
    require_spin,
    run_spin,
    summarize_trail,
)

# ---- captured pan outputs (SPIN 6.5.2) ------------------------------------------------------

PAN_PASS = """\
pan: ltl formula p1

(Spin Version 6.5.2 -- 6 December 2019)
\t+ Partial Order Reduction

Full statespace search for:
\tnever claim         \t+ (p1)
\tassertion violations\t+ (if within scope of claim)
\tacceptance   cycles \t- (not selected)
\tinvalid end states\t- (disabled by never claim)

State-vector 28 byte, depth reached 19, errors: 0
       10 states, stored
        1 states, matched
       11 transitions (= stored+matched)
        0 atomic steps
hash conflicts:         0 (resolved)

Stats on memory usage (in Megabytes):
    0.001\tequivalent memory usage for states (stored*(State-vector + overhead))
    0.183\tactual memory usage for states
  128.000\tmemory used for hash table (-w24)
    0.054\tmemory used for DFS stack (-m1000)
  128.195\ttotal actual memory usage


unreached in proctype A
\t(0 of 9 states)
unreached in claim p1
\t_spin_nvr.tmp:8, state 10, "-end-"
\t(1 of 10 states)

pan: elapsed time 0 seconds
"""

PAN_ACCEPTANCE = """\
pan: ltl formula p2
pan:1: acceptance cycle (at depth 18)
pan: wrote ok.pml.trail

(Spin Version 6.5.2 -- 6 December 2019)
Warning: Search not completed
\t+ Partial Order Reduction

Full statespace search for:
\tnever claim         \t+ (p2)
\tassertion violations\t+ (if within scope of claim)
\tacceptance   cycles \t+ (fairness disabled)
\tinvalid end states\t- (disabled by never claim)

State-vector 28 byte, depth reached 19, errors: 1
       10 states, stored
        0 states, matched
       10 transitions (= stored+matched)
        0 atomic steps
hash conflicts:         0 (resolved)

Stats on memory usage (in Megabytes):
    0.001\tequivalent memory usage for states (stored*(State-vector + overhead))
    0.183\tactual memory usage for states
  128.000\tmemory used for hash table (-w24)
    0.054\tmemory used for DFS stack (-m1000)
  128.195\ttotal actual memory usage



pan: elapsed time 0.02 seconds
pan: rate       500 states/second
"""

PAN_DEPTH_LIMIT = """\
pan: ltl formula p1
error: max search depth too small

(Spin Version 6.5.2 -- 6 December 2019)
\t+ Partial Order Reduction

Full statespace search for:
\tnever claim         \t+ (p1)
\tassertion violations\t+ (if within scope of claim)
\tacceptance   cycles \t- (not selected)
\tinvalid end states\t- (disabled by never claim)

State-vector 28 byte, depth reached 2, errors: 0
        2 states, stored
        1 states, matched
        3 transitions (= stored+matched)
        0 atomic steps
hash conflicts:         0 (resolved)

Stats on memory usage (in Megabytes):
    0.000\tequivalent memory usage for states (stored*(State-vector + overhead))
    0.289\tactual memory usage for states
  128.000\tmemory used for hash table (-w24)
    0.000\tmemory used for DFS stack (-m3)
  128.195\ttotal actual memory usage


unreached in proctype A
\tok.pml:2, state 8, "assert((x==3))"
\tok.pml:2, state 9, "-end-"
\t(2 of 9 states)
unreached in claim p1
\t_spin_nvr.tmp:8, state 10, "-end-"
\t(1 of 10 states)

pan: elapsed time 0 seconds
"""

PAN_ASSERTION = """\
Depth=     111 States=    1e+06 Transitions= 1.46e+07 Memory=   280.820\tt=     14.1 R=   7e+04
pan:1: assertion violated (cmt[i]==log[(((_pid*1)+i)-1)]) (at depth 29)
pan: wrote raft.pml.trail

(Spin Version 6.5.2 -- 6 December 2019)
Warning: Search not completed
\t+ Partial Order Reduction

Full statespace search for:
\tnever claim         \t- (not selected)
\tassertion violations\t+
\tcycle checks       \t- (disabled by -DSAFETY)
\tinvalid end states\t+

State-vector 100 byte, depth reached 118, errors: 1
  1346735 states, stored
 18311344 states, matched
 19658079 transitions (= stored+matched)
        0 atomic steps
hash conflicts:    325114 (resolved)

Stats on memory usage (in Megabytes):
  164.396\tequivalent memory usage for states (stored*(State-vector + overhead))
  133.910\tactual memory usage for states (compression: 81.46%)
         \tstate-vector as stored = 76 byte + 28 byte overhead
  128.000\tmemory used for hash table (-w24)
   53.406\tmemory used for DFS stack (-m1000000)
  315.195\ttotal actual memory usage



pan: elapsed time 19.6 seconds
pan: rate 68536.132 states/second
"""


# A bitstate run never proves anything, even with errors: 0.
PAN_BITSTATE = PAN_PASS.replace("Full statespace search for:", "Bit statespace search for:")
# Hash-compact: a verdict, but probabilistic.
PAN_HASH_COMPACT = PAN_PASS.replace("Full statespace search for:", "Hash-Compact 4 search for:")

TRAIL_REPLAY = """\
  2:\tproc  0 (Replica:1) raft.pml:470 (state 1)\t[((role[_pid]!=2))]
EV r1 times out: candidate in term 1 (log len 0)
  4:\tproc  2 (Replica:1) raft.pml:318 (state 9)\t[(1)]
EV r0 votes for r1 in term 1
spin: raft.pml:341, Error: assertion violated
spin: text of failed assertion: assert((leaderOf[1]==0))
spin: trail ends after 4 steps
#processes: 4
\t\tcurrentTerm[0] = 1
"""


def test_parse_pass() -> None:
    report = parse_pan_output(PAN_PASS)
    assert report.errors == 0
    assert report.states_stored == 10
    assert report.depth_reached == 19
    assert report.full_search and not report.depth_limited and not report.trail_written
    assert report.complete


def test_parse_assertion_violation() -> None:
    report = parse_pan_output(PAN_ASSERTION)
    assert report.errors == 1
    assert report.error_kind == "assertion violated"
    assert report.error_text is not None and report.error_text.startswith("assertion violated (cmt[i]")
    assert report.states_stored == 1346735
    assert report.trail_written
    assert report.elapsed_s == pytest.approx(19.6)
    assert not report.complete


def test_parse_acceptance_cycle() -> None:
    report = parse_pan_output(PAN_ACCEPTANCE)
    assert report.errors == 1
    assert report.error_kind == "acceptance cycle"
    assert report.trail_written


def test_parse_depth_limit_is_not_complete() -> None:
    report = parse_pan_output(PAN_DEPTH_LIMIT)
    assert report.errors == 0
    assert report.depth_limited
    assert not report.complete


def test_parse_bitstate_and_hash_compact_are_not_exhaustive() -> None:
    assert not parse_pan_output(PAN_BITSTATE).complete
    hc = parse_pan_output(PAN_HASH_COMPACT)
    assert hc.hash_compact and not hc.full_search and not hc.complete


def test_parse_garbage() -> None:
    report = parse_pan_output("gcc: internal compiler error")
    assert report.errors is None and report.states_stored is None


def test_trail_summary_keeps_events_and_the_failed_assertion() -> None:
    summary = summarize_trail(TRAIL_REPLAY)
    assert summary.splitlines()[:2] == [
        "EV r1 times out: candidate in term 1 (log len 0)",
        "EV r0 votes for r1 in term 1",
    ]
    assert "text of failed assertion: assert((leaderOf[1]==0))" in summary
    assert summary.splitlines()[-1] == "trail ends after 4 steps"
    assert "currentTerm[0]" not in summary


# ---- the runner on tiny models ----------------------------------------------------------------


def _spin_or_fail() -> None:
    try:
        require_spin()
    except ToolMissing as exc:
        pytest.fail(str(exc))


TINY = """\
byte x;
active proctype A() {
  do
  :: x < 3 -> x++
  :: x >= 3 -> break
  od;
  assert(x != LIMIT)
}
"""


def test_run_spin_holds_violated_and_incomplete(tmp_path: Path) -> None:
    _spin_or_fail()
    model = tmp_path / "tiny.pml"
    model.write_text(TINY)
    holds = run_spin(model, {"LIMIT": 4})
    assert holds.verdict == "holds", holds.detail
    assert "exhaustive" in holds.detail
    violated = run_spin(model, ["LIMIT=3"])
    assert violated.verdict == "violated", violated.detail
    assert "trail: yes" in violated.detail and "assert((x!=3))" in violated.detail
    cut = run_spin(model, {"LIMIT": 4}, max_depth=3)
    assert cut.verdict == "error" and "incomplete" in cut.detail
    assert not list(tmp_path.glob("*.trail")) and not list(tmp_path.glob("pan*"))


def test_run_spin_reports_compile_errors(tmp_path: Path) -> None:
    _spin_or_fail()
    model = tmp_path / "broken.pml"
    model.write_text("active proctype A() { x = 1 }\n")
    outcome = run_spin(model)
    assert outcome.verdict == "error" and "spin -a failed" in outcome.detail


def test_run_spin_without_spin_names_the_install(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(shutil, "which", lambda _name: None)
    outcome = run_spin(tmp_path / "any.pml")
    assert outcome.verdict == "error"
    assert outcome.detail == SPIN_INSTALL_HINT


# ---- the Raft model at the default bound ------------------------------------------------------


@pytest.fixture(scope="module")
def raft_results() -> list[tuple[Check, Outcome]]:
    _spin_or_fail()
    rows = raft_checks.checks(large=False)
    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
        outcomes = list(pool.map(lambda row: row.run(), rows))
    return list(zip(rows, outcomes, strict=True))


def test_raft_rows_cover_every_property_and_control() -> None:
    names = {row.name for row in raft_checks.checks(large=False)}
    assert {
        "raft.election_safety", "raft.log_matching", "raft.leader_completeness",
        "raft.state_machine_safety", "raft.bug_no_majority", "raft.bug_commit_old_term",
        "raft.bug_truncate_matching", "raft.current_term_acks", "raft.current_term_acks_t3",
        "raft.bug_reply_without_term", "raft.reply_without_term_leader_completeness_t3",
        "raft.read_index", "raft.read_index_ask",
        "raft.bug_read_unconfirmed", "raft.bug_read_no_own_term", "raft.bug_ask_any_term",
    } <= names
    assert len({row.bound for row in raft_checks.checks(large=True)}) >= 1
    # every property is also checked at a third term, with the code's reply rule
    third = raft_checks.THIRD_TERM_DEFAULT.label()
    assert {row.name for row in raft_checks.checks(large=False) if row.bound == third} == {
        name + raft_checks.THIRD_TERM_SUFFIX for name, _, _ in raft_checks._PROPERTIES
        if name not in raft_checks._LARGE_ONLY_T3}
    assert {"raft.read_index_t3", "raft.read_index_ask_t3"} <= {
        row.name for row in raft_checks.checks(large=True)}


def test_raft_properties_hold_exhaustively(raft_results: list[tuple[Check, Outcome]]) -> None:
    props = [(row, out) for row, out in raft_results if row.expect == "holds"]
    # two bounds (the read rows' third-term bound under --large only), + the no-term rows
    assert len(props) == 2 * len(raft_checks._PROPERTIES) - len(raft_checks._LARGE_ONLY_T3) + 2
    for row, out in props:
        assert out.verdict == "holds", f"{row.name}: {out.detail}"
        assert "exhaustive: full state space" in out.detail, f"{row.name}: {out.detail}"
        assert out.states is not None and out.states > 1000, row.name


def test_raft_negative_controls_are_refuted_with_a_trail(
    raft_results: list[tuple[Check, Outcome]],
) -> None:
    controls = [(row, out) for row, out in raft_results if row.expect == "violated"]
    assert len(controls) >= 3
    for row, out in controls:
        assert out.verdict == "violated", f"{row.name}: {out.detail}"
        assert "assertion violated" in out.detail and "trail: yes" in out.detail, row.name
        assert "EV r" in out.detail, f"{row.name}: no replayed steps in {out.detail}"


def test_a_reply_without_term_is_refuted_by_a_re_elected_leader(
    raft_results: list[tuple[Check, Outcome]],
) -> None:
    """Raft §5.1: pysyncobj 0.3.17's reply rule (no term read) lets a reply to an append of an
    earlier term count for the same leader re-elected in a later term -- the stale
    acknowledgement ReadIndex must not take; at the same bound, with the term read, it holds."""
    outcomes = {row.name: out for row, out in raft_results}
    control = outcomes["raft.bug_reply_without_term"]
    assert control.verdict == "violated", control.detail
    steps = [line for line in control.detail.splitlines() if line.startswith("EV r")]
    leaders = [line.split()[1] for line in steps if "becomes leader" in line]
    assert len(leaders) > len(set(leaders)), control.detail  # one replica elected twice
    assert "((msg>>14)&31)==currentTerm" in control.detail  # the current-term assertion
    assert outcomes["raft.current_term_acks_t3"].verdict == "holds"


def test_an_unconfirmed_read_is_refuted_by_a_deposed_leader(
    raft_results: list[tuple[Check, Outcome]],
) -> None:
    """Raft thesis §6.4: without its heartbeat round, a leader that a newer leader has deposed
    (without its knowing) serves a read that misses a write the newer leader committed; with
    the round, at the same bound, every served read holds every earlier commit."""
    outcomes = {row.name: out for row, out in raft_results}
    control = outcomes["raft.bug_read_unconfirmed"]
    assert control.verdict == "violated", control.detail
    steps = [line for line in control.detail.splitlines() if line.startswith("EV r")]
    served = [line for line in steps if "serves a read" in line]
    assert served, control.detail
    server, term = served[-1].split()[1], int(served[-1].split()[-1].rstrip(")"))
    newer = [line for line in steps if "becomes leader of term" in line
             and int(line.split("term")[1].split()[0]) > term]
    assert newer and all(line.split()[1] != server for line in newer), control.detail
    assert outcomes["raft.read_index"].verdict == "holds"
    assert outcomes["raft.read_index_ask"].verdict == "holds"
