"""The lease/claim/fencing and exactly-once-session rows: ``proofs/spin/leases.pml`` and
``proofs/spin/sessions.pml`` checked by SPIN, both built on the shared transcription of
``consensus/core/state.py`` in ``proofs/spin/board_sm.pml`` (the one the conformance test checks).

A property row holds only after a complete search; a negative control passes only when SPIN
refutes it with an *assertion* counterexample (a deadlock or a tool failure is an error, not the
refutation the row is about), so a model that stopped exploring fails its controls.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Final

from quorumboard.proofs.common import Check, Outcome
from quorumboard.proofs.spin_runner import run_spin

__all__ = ["LEASES", "SESSIONS", "checks"]

LEASES: Final = Path(__file__).resolve().parent / "spin" / "leases.pml"
SESSIONS: Final = Path(__file__).resolve().parent / "spin" / "sessions.pml"

_TIMEOUT_S: Final = 120.0
_LARGE_TIMEOUT_S: Final = 1800.0
# pan.c is ~370 kB (the state machine is inlined): gcc -O2 costs ~10 s a row. Properties search
# ~10^5-10^6 states and get -O1; a control stops at its first counterexample and gets -O0.
# COLLAPSE is lossless compression: only worth it at the large bound.
_CC: Final = ("-O1",)
_CC_CONTROL: Final = ("-O0",)
_CC_LARGE: Final = ("-O1", "-DCOLLAPSE")

LEASES_BOUND: Final = ("2 replicas, 2 agents (1 claim each; agent 1: +2 keepalives/puts), "
                       "log≤4, ≤2 proposals in flight, 1 duplicate, 1 ExpireLease, "
                       "1 leader change")
LEASES_LARGE_BOUND: Final = ("2 replicas, 2 agents (1 claim each; +2/+1 keepalives/puts), "
                             "log≤6, ≤3 in flight, 1 duplicate, 2 ExpireLease, "
                             "2 leader changes")
SESSIONS_BOUND: Final = ("2 replicas, 2 calls, 1 attempt per pass, 1 user retry per call, "
                         "1 leader change, ≤2 requests/proposals/replies in flight, 1 duplicate")
SESSIONS_LARGE_BOUND: Final = ("2 replicas, 2 calls, 2 attempts per pass, 1 user retry per call, "
                               "1 leader change, ≤2 in flight per bag, 1 duplicate")

_LEASE_PROPERTY: Final = (
    "leases whose expiry enters through the log, with leader change, an old leader's late/"
    "lost/duplicated ExpireLease and loss/dup/reorder: at every applied index one claim holder "
    "(all replicas agree), fences strictly increase, no stale-fence write applies, and an "
    "expiry never beats a keepalive committed before it (refreshes_seen)")
_LEASE_CONTROLS: Final = (
    ("leases.bug_local_expiry", "BUG_LOCAL_EXPIRY",
     "negative control: a replica (a follower too) expires a lease by its own clock, outside "
     "the log ⇒ replicas disagree on the holder at one index"),
    ("leases.bug_no_refresh_guard", "BUG_NO_REFRESH_GUARD",
     "negative control: ExpireLease ignores refreshes_seen ⇒ an expiry racing a keepalive "
     "ends a lease refreshed after the leader looked"),
    ("leases.bug_fence_le", "BUG_FENCE_LE",
     "negative control: _check_fences accepts fence ≤ current ⇒ a stale-fence write applies"),
    ("leases.bug_claim_no_bump", "BUG_CLAIM_NO_BUMP",
     "negative control: a claim does not bump the fence counter ⇒ fences stop increasing"),
)
_SESSION_PROPERTY: Final = (
    "exactly-once sessions, client.py retries (same session/seq after timeout, not_leader, "
    "outcome_unknown, and a user retry after OutcomeUnknown) under leader change and "
    "loss/dup/reorder: each (session, seq) applied at most once, a retry's reply is the "
    "original result, each call's command applied at most once")
_SESSION_CONTROLS: Final = (
    ("sessions.bug_forget", "BUG_FORGET",
     "negative control: the session table keeps only the latest result per session ⇒ a "
     "retry of an earlier unknown outcome applies twice"),
)


def _run(model: Path, macros: tuple[str, ...], large: bool, control: bool) -> Outcome:
    outcome = run_spin(
        model,
        macros,
        timeout_s=_LARGE_TIMEOUT_S if large else _TIMEOUT_S,
        cc_flags=_CC_LARGE if large else (_CC_CONTROL if control else _CC),
    )
    if control and outcome.verdict == "violated" and "assertion violated" not in outcome.detail:
        return Outcome("error", outcome.states, outcome.time_s,
                       "refuted, but not by an assertion:\n" + outcome.detail)
    return outcome


def checks(large: bool = False) -> list[Check]:
    """The lease and session rows: three properties (expected to hold), six planted bugs and one documented limit."""
    lease_macros: tuple[str, ...] = ("LARGE",) if large else ()
    session_macros: tuple[str, ...] = ("ATT=2",) if large else ("ATT=1",)
    lease_bound = LEASES_LARGE_BOUND if large else LEASES_BOUND
    session_bound = SESSIONS_LARGE_BOUND if large else SESSIONS_BOUND
    rows = [Check(
        name="leases.safety", property=_LEASE_PROPERTY, tool="spin", bound=lease_bound,
        expect="holds", run=functools.partial(_run, LEASES, lease_macros, large, False),
    )]
    for name, bug, text in _LEASE_CONTROLS:
        rows.append(Check(
            name=name, property=text, tool="spin", bound=f"{lease_bound} (-D{bug})",
            expect="violated",
            run=functools.partial(_run, LEASES, (*lease_macros, bug), large, True),
        ))
    rows.append(Check(
        name="sessions.exactly_once", property=_SESSION_PROPERTY, tool="spin",
        bound=session_bound, expect="holds",
        run=functools.partial(_run, SESSIONS, session_macros, large, False),
    ))
    for name, bug, text in _SESSION_CONTROLS:
        rows.append(Check(
            name=name, property=text, tool="spin", bound=f"{session_bound} (-D{bug})",
            expect="violated",
            run=functools.partial(_run, SESSIONS, (*session_macros, bug), large, True),
        ))
    # Session eviction: the bug SPIN found in client.py (fixed), then its negative control.
    evict_bound = f"{SESSIONS_BOUND}, sessions_max=1, another agent opens 1 session"
    evict = ("ATT=1", "EVICT")
    rows.append(Check(
        name="sessions.exactly_once_across_eviction",
        property=("a call retried after OutcomeUnknown applies at most once even if its "
                  "session was evicted meanwhile (the client raises SessionExpired instead "
                  "of re-sending under new numbers)"),
        tool="spin", bound=evict_bound, expect="holds",
        run=functools.partial(_run, SESSIONS, evict, False, False),
    ))
    rows.append(Check(
        name="sessions.limit_duplicated_requests",
        property=("documented limit: a network that duplicates a request across the eviction "
                  "of its session defeats any bounded session table (TCP and server.py never "
                  "make such a copy; a second attempt sets maybe_applied instead)"),
        tool="spin", bound=f"{evict_bound} (-DDUP_REQUESTS)", expect="violated",
        run=functools.partial(_run, SESSIONS, (*evict, "DUP_REQUESTS"), False, True),
    ))
    rows.append(Check(
        name="sessions.bug_resend_after_expiry",
        property=("negative control: the client before the fix (session_expired on a retry of "
                  "an unknown outcome taken as 'nothing applied', sent again) ⇒ applied twice"),
        tool="spin", bound=f"{evict_bound} (-DBUG_RESEND_AFTER_EXPIRY)", expect="violated",
        run=functools.partial(_run, SESSIONS, (*evict, "BUG_RESEND_AFTER_EXPIRY"), False, True),
    ))
    return rows
