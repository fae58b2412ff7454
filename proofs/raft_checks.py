"""The Raft rows of the proofs table: proofs/spin/raft.pml checked by SPIN, one search per row.

Each property gets its own search with only its own assertion (and ghost state) compiled in,
so a row's verdict and state count are about that property alone. Each planted bug is a
negative control: it must be refuted with an *assertion* counterexample (a deadlock or a tool
failure is an error, not the expected refutation), so a checker that stopped finding anything
fails these rows.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from quorumboard.proofs.common import Check, Outcome
from quorumboard.proofs.spin_runner import run_spin

__all__ = ["MODEL", "Bound", "checks"]

MODEL: Final = Path(__file__).resolve().parent / "spin" / "raft.pml"

_DEFAULT_TIMEOUT_S: Final = 120.0
_LARGE_TIMEOUT_S: Final = 900.0


@dataclass(frozen=True, slots=True)
class Bound:
    """The model's bounds (macros MAXTERM, MAXLOG, NMSG of raft.pml)."""

    terms: int
    log: int
    msgs: int

    def macros(self) -> dict[str, str | int | None]:
        return {"MAXTERM": self.terms, "MAXLOG": self.log, "NMSG": self.msgs}

    def label(self) -> str:
        return f"3 replicas, terms≤{self.terms}, log≤{self.log}, ≤{self.msgs} msgs in flight"


# CI bound: every property exhaustive in seconds. --large: a third message in flight (more
# reordering). The third term gets its own rows: one entry and one message in flight by default
# (seconds); two of each under --large (3.6-15 million states, up to ~2.5 min and ~3 GB each).
DEFAULT: Final = Bound(terms=2, log=2, msgs=2)
LARGE: Final = Bound(terms=2, log=2, msgs=3)
THIRD_TERM_DEFAULT: Final = Bound(terms=3, log=1, msgs=1)
THIRD_TERM_LARGE: Final = Bound(terms=3, log=2, msgs=2)
# pysyncobj's unfixed reply rule keeps every reply in flight (nothing is dead to the leader), so
# its state space is larger: at T=3, L=2, M=2, 41 million states (~15 min); --large keeps M=1.
NO_TERM_LARGE: Final = Bound(terms=3, log=2, msgs=1)
_LARGE_MEMORY_MB: Final = 6144
# Figure 8 needs four terms (old entry, newer conflicting entry, the wrong commit, the
# overwriting leader) but only one log slot.
FIGURE8_DEFAULT: Final = Bound(terms=4, log=1, msgs=1)
FIGURE8_LARGE: Final = Bound(terms=4, log=1, msgs=2)
# A follower's read index ask stays pending while everything else moves, so its row has the
# largest state space: one message in flight by default (1.4 million states, ~13 s), two under
# --large (7.5 million, ~2 min). The third-term rows keep their bound for it.
ASK_DEFAULT: Final = Bound(terms=2, log=2, msgs=1)
ASK_LARGE: Final = Bound(terms=2, log=2, msgs=2)
_ASK_ROW: Final = "raft.read_index_ask"
# The read rows at the third-term bound cost more than every other third-term row together
# (356k and 1.8M states, ~25 s): they run under --large, beside the rest of the large rows.
_LARGE_ONLY_T3: Final = frozenset({"raft.read_index", _ASK_ROW})

_PROPERTIES: Final = (
    ("raft.election_safety", "PROP_ELECTION",
     "Election Safety: at most one leader per term, over the whole history (§5.2)"),
    ("raft.log_matching", "PROP_MATCHING",
     "Log Matching: same index and term ⇒ identical logs up to that index (§5.3)"),
    ("raft.leader_completeness", "PROP_COMPLETE",
     "Leader Completeness: an entry committed in term T is in every later leader's log (§5.4)"),
    ("raft.state_machine_safety", "PROP_SMS",
     "State Machine Safety: no two replicas apply different entries at one index (§5.4.3)"),
    ("raft.current_term_acks", "PROP_CONFIRM",
     "Current-term acknowledgements: every AppendEntries reply a leader counts (matchIndex, "
     "commit, leadership) answers an append it sent in its current term (§5.1, §5.3; thesis §6.4)"),
    ("raft.read_index", "PROP_READ",
     "ReadIndex, a leader's round: a read served after a heartbeat round a majority answered in "
     "the leader's term, at the commit index of an own-term commit, reflects every entry "
     "committed before it started (thesis §6.4)"),
    (_ASK_ROW, "PROP_READ_ASK",
     "ReadIndex, a follower's ask in a group of three: the leader's commit index, given at once "
     "to an asker of its own term, reflects every entry committed before the ask (thesis §6.4)"),
)
# The rows above are also checked at a third term (name + "_t3"), with the code's reply rule.
THIRD_TERM_SUFFIX: Final = "_t3"

# (name, property macro, bug macro, what it plants, which bound: "main", "fig8" or "t3")
_CONTROLS: Final = (
    ("raft.bug_no_majority", "PROP_ELECTION", "BUG_NO_MAJORITY",
     "negative control: a candidate wins on its own vote ⇒ Election Safety must fail", "main"),
    ("raft.bug_truncate_matching", "PROP_COMPLETE", "BUG_TRUNCATE_MATCHING",
     "negative control: pysyncobj's truncate-after-prevLogIdx (fixed in raft.py) ⇒ "
     "Leader Completeness must fail", "main"),
    ("raft.bug_truncate_matching_sms", "PROP_SMS", "BUG_TRUNCATE_MATCHING",
     "negative control: the same truncation ⇒ State Machine Safety must fail", "main"),
    ("raft.bug_no_uptodate", "PROP_COMPLETE", "BUG_NO_UPTODATE",
     "negative control: no election restriction (§5.4.1) ⇒ Leader Completeness must fail",
     "main"),
    ("raft.bug_commit_old_term", "PROP_COMPLETE", "BUG_COMMIT_OLD_TERM",
     "negative control: commit an old-term entry by counting replicas (Figure 8, §5.4.2) ⇒ "
     "Leader Completeness must fail", "fig8"),
    ("raft.bug_no_uptodate_t3", "PROP_COMPLETE", "BUG_NO_UPTODATE",
     "negative control at the third-term bound (it reaches the classic failures): no election "
     "restriction (§5.4.1) ⇒ Leader Completeness must fail", "t3"),
    ("raft.bug_reply_without_term", "PROP_CONFIRM", "CODE_AER_NO_TERM",
     "negative control: pysyncobj 0.3.17's reply rule (the reply's term is not read) ⇒ a reply "
     "given in an earlier term counts toward a re-elected leader: current-term acks must fail",
     "t3"),
    ("raft.bug_read_unconfirmed", "PROP_READ", "BUG_READ_UNCONFIRMED",
     "negative control: a leader serves reads without its heartbeat round (the harness's "
     "unconfirmed-reads bug) ⇒ a deposed leader reads stale: ReadIndex must fail", "main"),
    ("raft.bug_read_no_own_term", "PROP_READ", "BUG_READ_NO_OWN_TERM",
     "negative control: a new leader serves reads before an entry of its term is committed ⇒ its "
     "commit index may lag its predecessor's: ReadIndex must fail", "main"),
    ("raft.bug_ask_any_term", "PROP_READ_ASK", "BUG_ASK_ANY_TERM",
     "negative control: the leader answers a follower's ask at once whatever the asker's term ⇒ "
     "a newer leader the asker voted for may have committed: ReadIndex must fail", "ask"),
)

# pysyncobj's reply rule without the fix, against the two properties it could break: a row that
# documents what SPIN says at the third-term bound (no counterexample there), not a control.
_NO_TERM_ROWS: Final = (
    ("raft.reply_without_term_leader_completeness_t3", "PROP_COMPLETE",
     "pysyncobj 0.3.17's reply rule (the reply's term not read): Leader Completeness (§5.4) "
     "still holds at this bound"),
    ("raft.reply_without_term_sms_t3", "PROP_SMS",
     "pysyncobj 0.3.17's reply rule (the reply's term not read): State Machine Safety (§5.4.3) "
     "still holds at this bound"),
)



def _property_run(prop: str, bound: Bound, timeout_s: float, large: bool,
                  code: str | None = None) -> Outcome:
    macros: dict[str, str | int | None] = {**bound.macros(), prop: None}
    if code is not None:
        macros[code] = None
    # COLLAPSE is lossless state compression: still exhaustive, less memory at the large bound.
    # -O2 at the large bound: there the search, not the compile, dominates.
    if large:
        return run_spin(MODEL, macros, timeout_s=timeout_s, cc_flags=["-DCOLLAPSE"], opt="-O2",
                        memory_mb=_LARGE_MEMORY_MB)
    return run_spin(MODEL, macros, timeout_s=timeout_s)


def _control_run(prop: str, bug: str, bound: Bound, timeout_s: float) -> Outcome:
    macros = {**bound.macros(), prop: None, bug: None}
    outcome = run_spin(MODEL, macros, timeout_s=timeout_s)
    if outcome.verdict == "violated" and "assertion violated" not in outcome.detail:
        # A deadlock or other error is not the refutation this control is about.
        return Outcome("error", outcome.states, outcome.time_s,
                       "refuted, but not by the property's assertion:\n" + outcome.detail)
    return outcome


def checks(large: bool = False) -> list[Check]:
    """The Raft rows: seven properties (expected to hold) at two terms and again at three, the
    planted bugs (refuted), and pysyncobj's unfixed reply rule at three terms (holds there)."""
    bound = LARGE if large else DEFAULT
    bounds = {"main": bound, "fig8": FIGURE8_LARGE if large else FIGURE8_DEFAULT,
              "t3": THIRD_TERM_LARGE if large else THIRD_TERM_DEFAULT,
              "ask": ASK_LARGE if large else ASK_DEFAULT}
    timeout_s = _LARGE_TIMEOUT_S if large else _DEFAULT_TIMEOUT_S
    rows: list[Check] = []
    for suffix, main in (("", bound), (THIRD_TERM_SUFFIX, bounds["t3"])):
        for name, prop, text in _PROPERTIES:
            if suffix and name in _LARGE_ONLY_T3:
                if not large:
                    continue
                b = THIRD_TERM_DEFAULT  # their T=3, L=2, M=2 search was not run to the end
            else:
                b = bounds["ask"] if name == _ASK_ROW and not suffix else main
            rows.append(Check(
                name=name + suffix, property=text, tool="spin", bound=b.label(), expect="holds",
                run=functools.partial(_property_run, prop, b, timeout_s, large),
            ))
    for name, prop, text in _NO_TERM_ROWS:
        b = NO_TERM_LARGE if large else THIRD_TERM_DEFAULT
        rows.append(Check(
            name=name, property=text, tool="spin", bound=f"{b.label()} (-DCODE_AER_NO_TERM)",
            expect="holds",
            run=functools.partial(_property_run, prop, b, timeout_s, large, "CODE_AER_NO_TERM"),
        ))
    for name, prop, bug, text, which in _CONTROLS:
        b = bounds[which]
        rows.append(Check(
            name=name, property=text, tool="spin", bound=f"{b.label()} (-D{bug})",
            expect="violated",
            run=functools.partial(_control_run, prop, bug, b, timeout_s),
        ))
    return rows
