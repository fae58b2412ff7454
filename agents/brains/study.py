"""Per-model simulated brains calibrated on the study's *replies* (``--harness study``).

A :class:`StudyBrain` decides one reply from the agent's state in its round-start view, by
propensities fitted per model and coordination mode on the study's n = 1 and n = 2 per-reply
tables (notes/paper-calibration.md §2-§6; :mod:`agents.calibrate` fits them, and the fitted
values live in ``agents/brains/calibration/<model>.json``, each with the table rows it came from).
Nothing here is fitted to an outcome (speedup, messages, idle rounds, conflicts, tokens per
run): those emerge from these replies meeting the study's rules (:mod:`agents.study`).

The state a reply depends on (what the study's agents could see on the board):

* ``held``: tasks the agent owns and has not completed (pre-assigned: its dealt list;
  decentralized: its granted claims);
* ``ready``: unowned pending tasks whose dependencies are done (what it may claim);
* ``blocked``: tasks it might claim whose dependencies are not done;
* whether the agent has teammates (n >= 2: a feature of the engagement and sweep
  propensities; the fit sees n = 1 and 2 only, so no trend beyond is assumed).

**Decentralized reply**: with probability ``engage(n)`` the agent works: it claims every ready
task it sees (``greedy``) or one; it attempts each blocked task with probability ``beta``
(refused: ``claim_blocked``); it completes each task it claimed in this reply with probability
``same`` and each task claimed earlier with probability ``hazard``. **Pre-assigned reply**: with
probability ``engage(n)`` it works on its whole remaining list (probability ``sweep``, a
logistic in the share of that list still blocked and in n) or the next task of it, claiming those tasks
first with probability ``claim_first`` and marking them done with probability ``same`` (else it
only edits them). Either way: edits are Poisson, ``edit_task`` per task
worked on in the reply (``edit_task`` for the first, ``edit_more`` per further one:
saturating) plus ``extra`` (engaged) or ``extra_idle`` (not), except that with probability
``edit_sure`` a reply has one certain edit (its first task's file, else an extra one), the rest
Poisson with the same means: for a model whose replies write exactly one file far more often
than a Poisson does; a test run
with probability ``tests`` (§2, direct). Reply latency comes from the reply's content: a
log-normal per edit count through the study's p50 and mean (§5, saturating with edits).

**Assumptions the log cannot tell** (knobs in :class:`Assumptions`, not fitted; the README
reports how outcomes move with each):

* ``pick_first``: which ready task a claim goes to: the first listed with this probability,
  else one at random (0.5, or the model's profiled default: ``Calibration.pick_first``);
* ``cooccur``: how completions co-occur in one reply: 0 independent per task, 1 all-or-none
  per reply (0);
* ``persist``: persistence across replies: with this probability an agent repeats its last
  reply's engagement instead of drawing afresh (0);
* ``helper_share``: where an extra edit goes: a helper file (conftest.py and the like, shared
  by everyone) with this probability, else the file of a task not yet done (§6: edits to files
  of no task);
* ``foreign_share``: pre-assignment only: of the extra edits that go to a task file, the share
  that goes to the file of a task dealt to another agent (§6: edits of a task file dealt to
  another agent), else one of the agent's own open tasks' files, or when its list is done one
  of its own files again (a fix: §6's rewrites); an agent dealt nothing works on others'. Which
  of another agent's files is not in the log: any of them, done or not, alike (a fix of a
  finished module after failing tests as much as work ahead). Decentralized agents (nothing is
  dealt) and lead workers pick any open task file: the knob has no effect there.
* ``foreign_open``: of those edits of another agent's files, the share that goes only to its
  tasks not yet done (0: any of its files, the assumption above; 1: work ahead on its list
  only, while it has an open task).

**How an agent reacts to what the study never told it** (the ablation's fixes, ``--fix``; no
study reply can calibrate these, so each is a knob with a sensitivity row in the ablation):

* ``phantom``: an agent whose claim was silently ignored (another agent won the task in the
  same round) keeps working on it in its next reply with this probability, and again in each
  reply after with the same probability: edits of its files and completions the harness
  ignores (0: it reads the owner off the board at once);
* ``heed``: told its claim was refused (``claim-feedback``), it drops that task with this
  probability (1);
* ``rewrite``: told its write was refused as stale (``reject-stale-files``), it writes the file
  again in its next reply with this probability (1);
* ``adopt``: a pre-assigned agent whose own list is done claims an unowned ready task (one
  whose holder's lease ended: ``fenced-claims``) with this probability per engaged reply (0.5;
  the study told its agents to work on their dealt tasks only).
"""

from __future__ import annotations

import json
import math
import random
from collections import deque
from importlib import resources
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from quorumboard.agents.team.actions import (
    Action,
    Assign,
    ClaimTask,
    CompleteTask,
    Reply,
    TaskView,
    View,
    WriteFile,
)

__all__ = ["STUDY_MODELS", "Assumptions", "Calibration", "LatencyBin", "ModeParams",
           "StudyBrain", "load_calibration", "parse_assumptions"]

STUDY_MODELS = ("claude-sonnet-4-6", "gpt-5.2", "gemini-3-flash-preview")
HELPER_FILES = ("conftest.py", "test_suite.py", "helpers.py")
"""Paths of no task the study's agents wrote (test dumps, conftest.py, test_suite.py)."""
LATENCY_CAP_S = 300.0
TOKENS_OUT_CAP = 8_192
"""The study's max_tokens (config.py:13-14): long replies saturate here, as their latency does."""
SWEEP_LEN_REF = 8
"""The list length at which ``sweep0`` applies (the sweep's length feature is centred here, so
that the fit can move ``sweep_len`` without dragging ``sweep0`` with it)."""
HISTORY_MESSAGES = 20
"""The study's context window: the last 20 history messages (base_agent.py:80-98)."""


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Assumptions(_Frozen):
    """What the study's log cannot tell: named knobs, not fitted (see the module docstring)."""

    pick_first: float = Field(default=0.5, ge=0, le=1)
    cooccur: float = Field(default=0.0, ge=0, le=1)
    persist: float = Field(default=0.0, ge=0, le=1)
    helper_share: float = Field(default=0.5, ge=0, le=1)
    foreign_share: float | None = Field(default=None, ge=0, le=1)
    """None: any open task file, whoever holds it (the rule before §6's dealt-to-another share
    was fitted; decentralized agents always)."""
    foreign_open: float = Field(default=0.0, ge=0, le=1)
    """Of the edits ``foreign_share`` sends to another agent's files, the share that goes to
    the file of a task of theirs not yet done (work ahead on their list); the rest go to any
    of their files, done or not, alike (0: the assumption before this knob)."""
    phantom: float = Field(default=0.0, ge=0, le=1)
    heed: float = Field(default=1.0, ge=0, le=1)
    rewrite: float = Field(default=1.0, ge=0, le=1)
    adopt: float = Field(default=0.5, ge=0, le=1)


class ModeParams(_Frozen):
    """Fitted propensities of one model in one mode (probabilities in [0, 1], means >= 0)."""

    engage0: float = 2.0
    """logit P(a reply works on tasks) of a lone agent."""
    engage_n: float = 0.0
    """Change of that logit in a team (n >= 2; team size as a feature, see :func:`_team`)."""
    greedy: float = Field(default=0.3, ge=0, le=1)
    beta: float = Field(default=0.1, ge=0, le=1)
    same: float = Field(default=0.6, ge=0, le=1)
    """Decentralized: P(completing, in the same reply, a task claimed in it). Pre-assigned:
    P(an engaged reply marks done the tasks it works on)."""
    hazard: float = Field(default=0.3, ge=0, le=1)
    claim_held: float = Field(default=0.5, ge=0, le=1)
    """Decentralized: P(claiming more ready tasks while holding a claimed one)."""
    sweep0: float = 0.0
    sweep1: float = 0.0
    sweep_n: float = 0.0
    """Change of the sweep logit in a team (n >= 2, see :func:`_team`)."""
    sweep_len: float = 0.0
    """Change of the sweep logit per unit of ln(tasks still held / 8): a reply that must write a
    long list runs into the output cap (§5: latency and edits saturate near 8,192 tokens)."""
    claim_first: float = Field(default=0.9, ge=0, le=1)
    edit_task: float = Field(default=1.0, ge=0, le=20)
    edit_more: float = Field(default=0.5, ge=0, le=20)
    edit_sure: float = Field(default=0.0, ge=0, le=1)
    """P(a reply has one certain edit: its first task's file if it works on a task, else an
    extra one); the rest of its edits stay Poisson, with the same means. §2's edit histograms
    are not Poisson: gemini's decentralized replies write exactly one file in 79 % of replies,
    where a Poisson of their mean (1.2) gives 36 % and puts 30 % at none."""
    extra: float = Field(default=0.3, ge=0, le=50)
    extra_idle: float = Field(default=0.2, ge=0, le=50)
    tests: float = Field(default=0.5, ge=0, le=1)


class LatencyBin(_Frozen):
    """Reply latency for replies with ``edits_min``..``edits_max`` edits (§5: p50 / mean)."""

    edits_min: int
    edits_max: int
    p50_s: float = Field(gt=0)
    mean_s: float = Field(gt=0)


class Calibration(_Frozen):
    """One model's calibration file (``agents/brains/calibration/<model>.json``)."""

    model: str
    modes: dict[str, ModeParams]
    latency: tuple[LatencyBin, ...]
    tokens_per_edit: int = 450
    helper_share: dict[str, float] = Field(default_factory=dict)
    """§6 share of edits to files of no task, per mode (the default ``helper_share`` knob)."""
    foreign_share: float | None = None
    """The default ``foreign_share`` knob of pre-assigned agents, fitted on §6's n = 2 share of
    edits of a task file dealt to another agent (n = 3-5 validate it); None: not fitted."""
    pick_first: dict[str, float] = Field(default_factory=dict)
    """The default of the ``pick_first`` knob per mode, where the n = 1-2 rows prefer one
    setting over the others (``calibrate profile``: the other propensities refitted at each
    setting, compared on held-out seeds); 0.5 where none was profiled."""
    sources: dict[str, Any] = Field(default_factory=dict)
    """Per mode and parameter, the table rows it came from (and the fit's residuals)."""

    def params(self, mode: str) -> ModeParams:
        """Lead workers behave like pre-assigned agents, hybrid ones like decentralized ones
        (the study has no data for either mode)."""
        key = {"lead": "preassign", "hybrid": "decentralized"}.get(mode, mode)
        return self.modes[key]


def load_calibration(model: str) -> Calibration:
    """The shipped calibration of ``model`` (one of :data:`STUDY_MODELS`)."""
    if model not in STUDY_MODELS:
        raise ValueError(f"no study calibration for model {model!r} "
                         f"(calibrated: {', '.join(STUDY_MODELS)})")
    text = (resources.files("quorumboard.agents.brains") / "calibration" / f"{model}.json").read_text(
        encoding="utf-8")
    return Calibration.model_validate(json.loads(text))


def parse_assumptions(text: str, cal: Calibration, mode: str) -> Assumptions:
    """``"pick_first=1,persist=0.5"`` over the defaults (``helper_share``: the model's §6 share
    in this mode; ``pick_first``: the model's profiled default in this mode, else 0.5).
    Raises ``ValueError`` naming an unknown knob or a bad value."""
    fam = "preassign" if mode in ("preassign", "lead") else "decentralized"
    values: dict[str, float | None] = {"helper_share": cal.helper_share.get(fam, 0.5),
                                       "pick_first": cal.pick_first.get(fam, 0.5)}
    if mode == "preassign":  # lead workers have no deal: their extra edits keep the old rule
        values["foreign_share"] = cal.foreign_share
    for part in (x.strip() for x in text.split(",") if x.strip()):
        name, sep, value = part.partition("=")
        name = name.strip()
        if not sep or name not in Assumptions.model_fields:
            raise ValueError(f"--assume {part!r}: expected name=value with name one of "
                             f"{', '.join(Assumptions.model_fields)}")
        try:
            values[name] = float(value)
        except ValueError:
            raise ValueError(f"--assume {part!r}: {value!r} is not a number") from None
    return Assumptions.model_validate(values)


def _team(n: int) -> float:
    """The team-size feature: 0 alone, 1 with teammates. The fit sees n = 1 and 2 only, so it
    can tell an agent alone from one in a team, not a trend in n: a logit linear in n - 1
    fitted on two points drove a model's engagement to nothing at n = 5 (gpt-5.2's fell from
    0.95 alone to 0.6 at n = 2, so 0.001 at n = 5), an extrapolation no row supports. Beyond
    n = 2 the per-reply rates change only through the agent's state (fewer tasks held and
    ready), which is what the n = 3-5 rows validate."""
    return 0.0 if n <= 1 else 1.0


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-max(-40.0, min(40.0, x))))


class StudyBrain:
    """A seeded simulated agent of one model under the study's rules (see module doc)."""

    def __init__(self, calibration: Calibration, mode: str, seed: int,
                 assumptions: Assumptions | None = None, slowdown: float = 1.0,
                 params: ModeParams | None = None) -> None:
        self.cal = calibration
        self.mode = mode
        self.p = params if params is not None else calibration.params(mode)
        self.a = assumptions if assumptions is not None else parse_assumptions(
            "", calibration, mode)
        self.slowdown = slowdown
        self._rng = random.Random(seed)
        self._engaged: bool | None = None
        self._claimed: set[str] = set()
        """Tasks this agent claimed in its last reply (it may believe it holds them)."""
        self._phantom: set[str] = set()
        """Tasks it believes it holds although another agent does (``phantom``)."""
        self._history: deque[int] = deque(maxlen=HISTORY_MESSAGES)
        self._sure = False
        """Whether this reply still has its certain edit (``edit_sure``) to place."""

    # ------------------------------------------------------------------------ propensities

    def _chance(self, p: float) -> bool:
        return self._rng.random() < p

    def _poisson(self, mean: float) -> int:
        """Knuth's method, bounded (means here are < 20)."""
        if mean <= 0:
            return 0
        limit, k, prod = math.exp(-mean), 0, self._rng.random()
        while prod > limit and k < 200:
            k += 1
            prod *= self._rng.random()
        return k

    def _engage(self, n: int) -> bool:
        fresh = self._chance(_sigmoid(self.p.engage0 + self.p.engage_n * _team(n)))
        if self._engaged is not None and self._chance(self.a.persist):
            fresh = self._engaged
        self._engaged = fresh
        return fresh

    # ------------------------------------------------------------------------------ decide

    def decide(self, view: View) -> Reply:
        # One certain edit per reply at ``edit_sure``, taken by the reply's first edits (its
        # tasks' files if it works on any, else an extra edit); no draw when 0, so the
        # calibrations without it keep their random stream.
        self._sure = self.p.edit_sure > 0 and self._chance(self.p.edit_sure)
        me = view.agent
        done = view.done
        held = [t for t in view.tasks if t.owner == me and t.status != "done"]
        n = len(view.team)
        if view.mode == "lead" and n > 1 and me == view.team[0]:
            actions = self._lead(view)
        elif view.mode in ("preassign", "lead") and not (view.mode == "lead" and n == 1):
            actions = self._preassigned(view, held, done, n)
        else:
            actions = self._self_claiming(view, held, done, n)
        actions += self._reactions(view)
        self._claimed = {a.task for a in actions if isinstance(a, ClaimTask)}
        edits = sum(1 for a in actions if isinstance(a, WriteFile))
        tests = self._chance(self.p.tests)
        latency = self._latency(edits) * self.slowdown
        tokens_out = min(TOKENS_OUT_CAP, 150 + self.cal.tokens_per_edit * edits)
        board = 40 + 30 * len(view.tasks)
        tokens_in = 1_500 + sum(self._history) + board
        self._history.extend([board, tokens_out] + ([400] if tests else []))
        return Reply(actions=tuple(actions), latency_s=latency, tokens_in=tokens_in,
                     tokens_out=tokens_out, run_tests=tests)

    def _believed(self, view: View) -> list[TaskView]:
        """Tasks this agent still works on although another agent holds them: claims of its
        last reply the board shows lost (and those it kept believing in), each kept with
        probability ``phantom``; one named in ``claim_held`` feedback is dropped with
        probability ``heed`` first."""
        if self.a.phantom <= 0:  # no draw: the study's calibrated streams stay as they were
            self._phantom = set()
            return []
        told = {f.task for f in view.feedback if f.kind == "claim_held"}
        out = []
        for task_id in sorted(self._claimed | self._phantom):
            t = view.task(task_id)
            if t is None or t.owner in (None, view.agent) or t.status == "done":
                continue
            if task_id in told and self._chance(self.a.heed):
                continue
            if self._chance(self.a.phantom):
                out.append(t)
        self._phantom = {t.id for t in out}
        return out

    def _reactions(self, view: View) -> list[Action]:
        """Refused writes written again (``rewrite``)."""
        return [WriteFile(file=f.file, task=f.task, content="# again\n")
                for f in view.feedback
                if f.kind == "write_stale" and f.file and self._chance(self.a.rewrite)]

    def _completions(self, tasks: list[TaskView], p: float) -> list[TaskView]:
        """Which of ``tasks`` this reply completes, each with probability ``p``; ``cooccur``
        ties the draws of one reply together (all or none)."""
        if not tasks:
            return []
        if self._chance(self.a.cooccur):
            return list(tasks) if self._chance(p) else []
        return [t for t in tasks if self._chance(p)]

    def _self_claiming(self, view: View, held: list[TaskView], done: frozenset[str],
                       n: int) -> list[Action]:
        p, me = self.p, view.agent
        # Ready: unowned, or assigned to this agent (the hybrid monitor's reassignment).
        ready = [t for t in view.tasks if t.status == "pending" and t.owner in (None, me)
                 and all(d in done for d in t.dependencies)]
        blocked = [t for t in view.tasks if t.status == "pending" and t.owner is None
                   and not all(d in done for d in t.dependencies)]
        actionable = bool(ready or held)
        if actionable and not self._engage(n):
            return self._extra_edits(view, p.extra_idle)
        claims: list[TaskView] = []
        working = [t for t in held if t.status == "claimed"]
        if ready and (not working or self._chance(p.claim_held)):
            # Both draws are made whatever the choice, so the random stream after them does
            # not depend on ``pick_first``: its sensitivity rows (common random numbers)
            # then show the choice's effect, not a reshuffle of every later draw.
            shuffled = self._rng.sample(ready, len(ready))
            order = ready if self._chance(self.a.pick_first) else shuffled
            claims = order if self._chance(p.greedy) else order[:1]
        tries = [t for t in blocked if self._chance(p.beta)]
        believed = self._believed(view)
        finish = self._completions(claims, p.same) + self._completions(working + believed,
                                                                        p.hazard)
        out: list[Action] = self._task_edits(claims + working + believed)
        out += self._extra_edits(view, p.extra if actionable else p.extra_idle)
        out += [ClaimTask(task=t.id) for t in claims + tries]
        out += [CompleteTask(task=t.id) for t in finish]
        return out

    def _preassigned(self, view: View, held: list[TaskView], done: frozenset[str],
                     n: int) -> list[Action]:
        p = self.p
        if not held:
            orphans = [t for t in view.tasks if t.status == "pending" and t.owner is None
                       and all(d in done for d in t.dependencies)]
            if orphans and self._engage(n) and self._chance(self.a.adopt):
                t = orphans[0]
                out: list[Action] = [*self._task_edits([t]), ClaimTask(task=t.id)]
                return out + ([CompleteTask(task=t.id)] if self._chance(p.same) else [])
            return self._extra_edits(view, p.extra_idle)
        if not self._engage(n):
            return self._extra_edits(view, p.extra_idle)
        blocked_share = sum(1 for t in held if not all(d in done for d in t.dependencies)) \
            / len(held)
        sweep = _sigmoid(p.sweep0 + p.sweep1 * blocked_share + p.sweep_n * _team(n)
                         + p.sweep_len * math.log(len(held) / SWEEP_LEN_REF))
        k = len(held) if self._chance(sweep) else 1
        tasks = held[:k]  # the dealt list in the board's (topological) order
        out = self._task_edits(tasks)
        out += self._extra_edits(view, p.extra)
        if self._chance(p.claim_first):
            out += [ClaimTask(task=t.id) for t in tasks]
        if self._chance(p.same):  # else the reply works on them without marking them done
            out += [CompleteTask(task=t.id) for t in tasks]
        return out

    def _lead(self, view: View) -> list[Action]:
        """The lead (no study data): assigns every ready unowned task to the least-loaded
        worker, as the board harness's simulated lead does."""
        workers = list(view.team[1:])
        load = {w: sum(1 for t in view.tasks if t.owner == w and t.status != "done")
                for w in workers}
        out: list[Action] = []
        for t in view.ready:
            if t.owner is None:
                w = min(workers, key=lambda x: (load[x], x))
                load[w] += 1
                out.append(Assign(task=t.id, agent=w))
        return out

    def _task_edits(self, tasks: list[TaskView]) -> list[Action]:
        """Edits of the files of the tasks the reply works on: Poisson with mean
        ``edit_task`` for the first task plus ``edit_more`` per further one (a reply covering
        many tasks writes less per task: the study's edits saturate), dealt over the tasks'
        files in turn."""
        files = [(t.id, f) for t in tasks for f in t.files]
        if not files:
            return []
        count = self._edit_count(self.p.edit_task + self.p.edit_more * (len(tasks) - 1))
        return [WriteFile(file=files[i % len(files)][1], task=files[i % len(files)][0],
                          content=f"# {files[i % len(files)][0]}\n") for i in range(count)]

    def _extra_edits(self, view: View, mean: float) -> list[Action]:
        """Edits beyond the reply's own tasks: a helper file (``helper_share``), else the file
        of a task not yet done: work ahead, or another agent's (``foreign_share``)."""
        out: list[Action] = []
        open_tasks = [t for t in view.tasks if t.status != "done"]
        open_files = [f for t in open_tasks for f in t.files]
        share = self.a.foreign_share if view.mode == "preassign" else None
        own: list[str] = []
        others: list[str] = []
        others_open: list[str] = []
        if share is not None:  # only pre-assigned agents have a deal to tell the two apart
            mine = [t for t in view.tasks if t.owner == view.agent]
            own = [f for t in mine if t.status != "done" for f in t.files] or [
                f for t in mine for f in t.files]
            # Another agent's: an unowned task (a lease that ended) is nobody's, as in the deal.
            others_tasks = [t for t in view.tasks if t.owner not in (None, view.agent)]
            others = [f for t in others_tasks for f in t.files]
            others_open = [f for t in others_tasks if t.status != "done" for f in t.files]
        for _ in range(self._edit_count(mean)):
            if self._chance(self.a.helper_share) or not open_files:
                out.append(WriteFile(file=self._rng.choice(HELPER_FILES), content="# helper\n"))
            elif share is None:  # no draw: the decentralized streams stay as they were
                out.append(WriteFile(file=self._rng.choice(open_files), content="# ahead\n"))
            else:
                # No draw without another's file: a lone agent's stream stays as it was.
                pool = others if (others and self._chance(share)) or not own else own
                # No draw at 0: the streams before the knob stay as they were.
                if (pool is others and others_open and self.a.foreign_open > 0
                        and self._chance(self.a.foreign_open)):
                    pool = others_open
                out.append(WriteFile(file=self._rng.choice(pool), content="# ahead\n"))
        return out

    def _edit_count(self, mean: float) -> int:
        """Poisson edits of this ``mean``; the reply's certain edit (``edit_sure``), if it has
        one left, is one of them and the rest keep the mean: 1 + Poisson(mean - edit_sure)."""
        if not self._sure:
            return self._poisson(mean)
        self._sure = False
        return 1 + self._poisson(max(0.0, mean - self.p.edit_sure))

    def _latency(self, edits: int) -> float:
        for b in self.cal.latency:
            if b.edits_min <= edits <= b.edits_max:
                sigma = math.sqrt(2.0 * math.log(max(b.mean_s / b.p50_s, 1.0 + 1e-3)))
                sigma = min(1.2, max(0.15, sigma))
                return min(LATENCY_CAP_S, b.p50_s * math.exp(sigma * self._rng.gauss(0, 1)))
        return self.cal.latency[-1].p50_s
