"""Conformance: the Promela state machine that leases.pml / sessions.pml explore
(``proofs/spin/board_sm.pml``) and the real ``consensus.state.apply`` agree on random command
sequences, so the models cannot silently drift from the code.

Each example is a list of proposals (grant, keepalive, claim, fenced put/delete, ExpireLease with
a refresh count, revoke, open/close session, retries with the same session and seq). The test
writes them as ``STEP(...)`` lines, runs ``proofs/spin/conform.pml`` in SPIN's simulator (no
compilation), and compares every printed step (result code, note, revision, fence/version, lease;
every lease, key, claim, session and cached session result) with the same rendering of the real
``BoardState`` after the real ``apply``. A planted divergence (the harness with a rule flipped)
must make the comparison fail: that is what shows this test can fail.

Also here: the client bug found by ``sessions.pml -DEVICT`` (fixed), replayed through the real
``Board`` client; its SPIN rows are in ``proofs.spin_lease_checks.checks()``.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from quorumboard.consensus.core.model import (
    ClaimCmd,
    CloseSession,
    Command,
    DeleteCmd,
    ExpireLease,
    FenceRef,
    GrantCmd,
    KeepAliveCmd,
    OpenSession,
    Proposal,
    PutCmd,
    Result,
    RevokeCmd,
)
from quorumboard.consensus.core.policies import PolicyRegistry
from quorumboard.consensus.core.state import BoardState, Limits, apply

BUILTINS = PolicyRegistry()
"""The built-in policies only: ``apply`` takes its registry as an argument."""


SPIN_DIR = Path(__file__).resolve().parent.parent / "proofs" / "spin"
SPIN = shutil.which("spin")
pytestmark = pytest.mark.skipif(SPIN is None, reason="SPIN is not installed (apt-get install spin)")

SPIN_TIMEOUT_S = 60.0
NONE = 255
# conform.pml's bounds: lease ids < NL = 10, session ids < NS = 8, seq < NQ = 8, 2 keys;
# sessions_max = SMAX = 2, results_per_session_max = RMAX = 3 (small, so both limits are hit).
LIMITS = Limits(sessions_max=2, results_per_session_max=3)
LEASES_MAX = 8
SESSIONS_OPENED_MAX = 6

OPS = {"open": 1, "close": 2, "put": 3, "delete": 4, "claim": 5, "grant": 6, "keepalive": 7,
       "revoke": 8, "expire": 9}
CODES = {None: 0, "claim_held": 1, "fenced_out": 2, "not_found": 3, "invalid": 4,
         "policy_rejected": 5, "stale_version": 6, "session_expired": 7}
NOTES = {"": 0, "already held by this agent": 1, "lease refreshed or gone": 2,
         "lease-expired": 3, "revoked": 4, "closed": 5}
AGENTS = {0: "replica:r1", 1: "a1", 2: "a2"}
KEYS = ("k0", "k1")


@dataclass(frozen=True, slots=True)
class Step:
    """One proposal, in the fields of board_sm.pml's ``Cmd`` (NONE = not given)."""

    op: str
    agent: int = 1
    key: int = 0
    fkey: int = NONE
    ffence: int = 0
    lease: int = 0
    expect: int = NONE
    refs: int = 0
    sess: int = 0
    seq: int = 0
    acked: int = 0

    def promela(self) -> str:
        return (f"  STEP({OPS[self.op]}, {self.agent}, {self.key}, {self.fkey}, {self.ffence}, "
                f"{self.lease}, {self.expect}, {self.refs}, {self.sess}, {self.seq}, "
                f"{self.acked});")

    def command(self) -> Command:
        key = KEYS[self.key]
        fence = None if self.fkey == NONE else FenceRef(key=KEYS[self.fkey], fence=self.ffence)
        expect = None if self.expect == NONE else self.expect
        if self.op == "put":
            return PutCmd(key=key, value=1, expect_version=expect,
                          lease=self.lease or None, fence=fence)
        if self.op == "delete":
            return DeleteCmd(key=key, expect_version=expect, fence=fence)
        if self.op == "claim":
            return ClaimCmd(key=key, ttl=10)
        if self.op == "grant":
            return GrantCmd(ttl=10)
        if self.op == "keepalive":
            return KeepAliveCmd(lease=self.lease)
        if self.op == "revoke":
            return RevokeCmd(lease=self.lease)
        if self.op == "expire":
            return ExpireLease(lease=self.lease, refreshes=self.refs)
        if self.op == "open":
            return OpenSession()
        return CloseSession()

    def proposal(self) -> Proposal:
        return Proposal(agent=AGENTS[self.agent], session=self.sess, seq=self.seq,
                        acked_below=self.acked, command=self.command())


# ------------------------------------------------------------------------- the real side


def _result_line(r: Result) -> str:
    """``R code note rev aux lease`` as conform.pml prints ``res``."""
    code = CODES[r.error.code if r.error else None]
    if r.error is not None:
        aux, lease = 0, 0
    elif r.claim is not None:
        aux, lease = r.claim.fence, r.claim.lease
    elif r.entry is not None:
        aux, lease = r.entry.version, 0
    elif r.session is not None:
        aux, lease = r.session, 0
    elif r.lease is not None:
        aux, lease = (r.lease.refreshes if r.note == "" else 0), r.lease.id
    else:
        aux, lease = 0, 0
    return f"{code} {NOTES[r.note]} {r.revision} {aux} {lease}"


def _agent(name: str) -> int:
    return {v: k for k, v in AGENTS.items()}[name]


def render(state: BoardState, result: Result) -> list[str]:
    """The real state in conform.pml's ``dump()`` format."""
    lines = [f"R {_result_line(result)}",
             f"G {state.revision} {state.applied} {state.next_lease} {state.next_session} "
             f"{state.fence_counter}"]
    for lid in sorted(state.leases):
        rec = state.leases[lid]
        bits = sum(1 << KEYS.index(k) for k in rec.keys)
        lines.append(f"L {lid} {_agent(rec.owner)} {rec.refreshes} {bits}")
    for i, key in enumerate(KEYS):
        kv = state.kv.get(key)
        if kv is not None:
            lines.append(f"K {i} {kv.version} {kv.lease or 0}")
        claim = state.claims.get(key)
        if claim is not None:
            lines.append(f"C {i} {_agent(claim.owner)} {claim.fence} {claim.lease}")
    for sid in sorted(state.sessions):
        sess = state.sessions[sid]
        lines.append(f"S {sid} {_agent(sess.agent)} {sess.floor} {sess.last_active}")
        for seq in sorted(sess.results):
            lines.append(f"Q {sid} {seq} {_result_line(sess.results[seq])}")
    return lines


def run_real(steps: Sequence[Step]) -> list[list[str]]:
    state = BoardState(LIMITS)
    out: list[list[str]] = []
    for step in steps:  # bounded by the generated list
        applied = apply(state, step.proposal(), BUILTINS)
        out.append(render(state, applied.result))
    return out


# ------------------------------------------------------------------------- the model side


def run_model(steps: Sequence[Step], macros: Sequence[str] = ()) -> list[list[str]]:
    """conform.pml in SPIN's simulator over ``steps``: one list of lines per step."""
    assert SPIN is not None
    with tempfile.TemporaryDirectory(prefix="qb-conform-") as tmp:
        work = Path(tmp)
        for name in ("board_sm.pml", "conform.pml"):
            shutil.copy2(SPIN_DIR / name, work / name)
        body = "\n".join(s.promela() for s in steps) or "  skip"
        (work / "conform_cmds.pml").write_text(f"inline commands() {{\n{body}\n}}\n")
        proc = subprocess.run([SPIN, *(f"-D{m}" for m in macros), "conform.pml"], cwd=work,
                              capture_output=True, text=True, timeout=SPIN_TIMEOUT_S, check=False)
    assert proc.returncode == 0 and "DONE" in proc.stdout, proc.stdout + proc.stderr
    steps_out: list[list[str]] = []
    current: list[str] = []
    for raw in proc.stdout.splitlines():  # bounded by SPIN's output
        line = raw.strip()
        if line == "E":
            steps_out.append(current)
            current = []
        elif line[:2] in ("R ", "G ", "L ", "K ", "C ", "S ", "Q "):
            current.append(line)
    return steps_out


def first_divergence(steps: Sequence[Step], macros: Sequence[str] = ()) -> str | None:
    """Where the model and the code first disagree (None: they agree on every step)."""
    real, model = run_real(steps), run_model(steps, macros)
    if len(real) != len(model):
        return f"{len(model)} model steps for {len(real)} commands"
    for i, (r, m) in enumerate(zip(real, model, strict=True)):
        if r != m:
            return f"step {i} {steps[i]}:\n  code:  {r}\n  model: {m}"
    return None


# ------------------------------------------------------------------------- generators

# Biased towards commands that succeed (a lease id that exists, the session's own agent, a
# small fence or version that may be current), so that success paths, races and refusals all
# occur; every field can still take a value that makes the command fail.
_lease_id = st.sampled_from([1, 1, 2, 2, 3, 4, 0])
_sess = st.sampled_from([0, 0, 0, 1, 1, 2, 3])


@st.composite
def _step(draw: st.DrawFn) -> Step:
    op = draw(st.sampled_from([*OPS, "keepalive", "claim", "put", "expire"]))
    sess = 0 if op in ("open", "expire") else draw(_sess)
    if op == "expire":
        agent = 0
    elif sess in (1, 2) and draw(st.integers(min_value=0, max_value=4)):
        agent = sess  # sessions 1 and 2 are opened by agents 1 and 2 (see _steps)
    else:
        agent = draw(st.integers(min_value=1, max_value=2))
    key = draw(st.integers(min_value=0, max_value=1))
    fenced = op in ("put", "delete") and draw(st.booleans())
    fkey = draw(st.integers(min_value=0, max_value=1)) if fenced else NONE
    ffence = draw(st.integers(min_value=0, max_value=3)) if fenced else 0
    lease = draw(_lease_id) if op in ("keepalive", "revoke", "expire") else 0
    if op == "put" and draw(st.booleans()):
        lease = draw(_lease_id)
    expect = draw(st.sampled_from([NONE, NONE, 0, 1, 2])) if op in ("put", "delete") else NONE
    refs = draw(st.integers(min_value=0, max_value=2)) if op == "expire" else 0
    seq = draw(st.integers(min_value=1, max_value=5)) if sess else 0
    acked = draw(st.integers(min_value=0, max_value=seq)) if sess else 0
    if sess and not draw(st.integers(min_value=0, max_value=5)):
        acked = draw(st.integers(min_value=0, max_value=5))  # a floor above seq, sometimes
    return Step(op, agent, key, fkey, ffence, lease, expect, refs, sess, seq, acked)


def _within_bounds(steps: list[Step]) -> list[Step]:
    """Keep the prefix that stays inside conform.pml's arrays (leases, sessions opened)."""
    leases = opened = 0
    kept: list[Step] = []
    for s in steps:  # bounded by the list
        leases += s.op in ("claim", "grant")
        opened += s.op == "open"
        if leases > LEASES_MAX or opened > SESSIONS_OPENED_MAX:
            break
        kept.append(s)
    return kept


# Sessions are opened early and often so that retries, floors and eviction are exercised.
_steps = st.lists(_step(), min_size=1, max_size=16).map(
    lambda xs: _within_bounds([Step("open", 1), Step("open", 2), *xs]))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_steps)
def test_model_transition_relation_matches_apply(steps: list[Step]) -> None:
    divergence = first_divergence(steps)
    assert divergence is None, divergence


# Hand-written sequences that must agree: the races the models are about.
_CLAIM_EXPIRE_RECLAIM = [
    Step("claim", 1, key=0),                                   # a1 claims k0: fence 1, lease 1
    Step("keepalive", 1, lease=1),                             # refreshes 1
    Step("expire", 0, lease=1, refs=0),                        # stale expiry: a no-op
    Step("expire", 0, lease=1, refs=1),                        # expires: k0 deleted
    Step("claim", 2, key=0),                                   # a2: fence 2
    Step("put", 1, key=0, fkey=0, ffence=1, expect=1),         # a1's stale fence: fenced_out
    Step("put", 2, key=0, fkey=0, ffence=2, expect=1),         # a2 writes
    Step("put", 2, key=1, fkey=0, ffence=2),                   # a fenced write to another key
    Step("revoke", 2, lease=2),
]
_SESSION_RETRIES = [
    Step("open", 1),
    Step("put", 1, key=0, sess=1, seq=1, acked=1),
    Step("put", 1, key=0, sess=1, seq=1, acked=1),             # retry: the cached result
    Step("put", 1, key=1, sess=1, seq=2, acked=1),
    Step("put", 1, key=1, sess=1, seq=3, acked=3),             # floor 3: results 1, 2 forgotten
    Step("put", 1, key=0, sess=1, seq=1, acked=3),             # below the floor: invalid
    Step("open", 2),
    Step("open", 2),                                           # sessions_max 2: evicts session 1
    Step("put", 1, key=0, sess=1, seq=4, acked=4),             # session_expired
]


@pytest.mark.parametrize("steps", [_CLAIM_EXPIRE_RECLAIM, _SESSION_RETRIES],
                         ids=["claim-expire-reclaim", "session-retries"])
def test_model_matches_apply_on_the_modelled_races(steps: list[Step]) -> None:
    assert first_divergence(steps) is None


@pytest.mark.parametrize(("macro", "steps"), [
    ("BUG_CLAIM_NO_BUMP", _CLAIM_EXPIRE_RECLAIM),
    ("BUG_FENCE_LE", _CLAIM_EXPIRE_RECLAIM),
    ("BUG_NO_REFRESH_GUARD", _CLAIM_EXPIRE_RECLAIM),
    ("BUG_FORGET", _SESSION_RETRIES),
])
def test_a_wrong_transcription_is_caught(macro: str, steps: list[Step]) -> None:
    """Planted divergence: the harness with one rule flipped must disagree with the code, so
    the conformance test above is able to fail."""
    assert first_divergence(steps, [macro]) is not None


# --------------------------------------------- the client bug SPIN found (fixed since)


def test_board_retry_after_outcome_unknown_and_eviction_applies_once(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """SPIN's EVICT counterexample (sessions.pml), replayed through the real Board against the
    real apply: put -> applied, reply lost (OutcomeUnknown) -> another agent's session evicts
    ours (sessions_max=1) -> the user's retry. Before the fix the retry was re-sent under a new
    session and applied a second time; now it raises SessionExpired and applies nothing."""
    from quorumboard.consensus.client.board import Board
    from quorumboard.consensus.core.model import SetPolicyCmd
    from quorumboard.consensus.errors import OutcomeUnknown, SessionExpired
    from quorumboard.consensus.wire.protocol import ProposeReq, Reply

    state = BoardState(Limits(sessions_max=1))
    # last-writer-wins, so a second application shows as version 2 instead of a refusal
    apply(state, Proposal(agent="admin", command=SetPolicyCmd(prefix="", name="last-writer-wins")),
          BUILTINS)
    lost = [False]

    def call_tracked(build: object, *, idempotent: bool,
                     deadline_s: float | None = None) -> tuple[Reply, bool]:
        assert callable(build)
        req = build(1)
        assert isinstance(req, ProposeReq)
        result = apply(state, req.proposal, BUILTINS).result
        if req.proposal.command.op == "put" and not lost[0]:
            lost[0] = True
            raise OutcomeUnknown("the put committed; its reply was lost until the deadline")
        return Reply(id=1, result=result), False

    board = Board(["127.0.0.1:9"], "a1")
    monkeypatch.setattr(board, "_call_tracked", call_tracked)
    with pytest.raises(OutcomeUnknown):
        board.put("k", 1)
    apply(state, Proposal(agent="a2", command=OpenSession()), BUILTINS)  # evicts a1's session (LRU)
    with pytest.raises(SessionExpired, match="could apply it twice"):
        board.put("k", 1)  # the retry: its outcome is in the evicted session
    entry = state.entry("k")
    assert entry is not None and entry.version == 1, f"applied {entry and entry.version} times"
    board.put("k", 2)  # the next call is a new command under a new session
    entry = state.entry("k")
    assert entry is not None and (entry.version, entry.value) == (2, 2)
