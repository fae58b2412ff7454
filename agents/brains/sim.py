"""Simulated brains: offline, seeded, reproducible agents calibrated on the study's figures.

A :class:`SimBrain` decides like the study's agents did, by *mechanisms with rates*, never by
outcomes: it works on the task it holds (write the task's file; the write fails its check at the
``faulty_rate``; complete once a passing write is in), else looks for work as its coordination
mode allows (claim a ready task, picking the first one listed at ``pick_first_rate`` and a random
one otherwise, so concurrent agents collide as real ones do; misread the board and claim a task
whose dependencies are not done at ``blocked_claim_rate``; write another task's file at
``cross_write_rate``; do nothing at ``idle_rate``). Every conflict, idle round and recovery in a
sweep emerges from these choices meeting the real board.

Reply latency is drawn from the study's own quantile table (``notes/paper.md``: p10, p50, p90
and p99 of all replies per model), with p10 / 3 (at least 0.2 s) as p0 and p99 as p100: a seeded
uniform u is mapped through the piecewise log-linear interpolation of these (quantile, seconds)
knots (:func:`quantile_of`). Why not a log-normal fitted to p50 and p90: one sigma cannot carry
the table's tails (gpt-5.2's p99 is 6x its p90, claude's 1.5x), so the fitted p10 and p99 were
off by up to 4x (claude's p99: 210 s for 48.6 s), and the stragglers that set a round's length
came out wrong. The knots reproduce every tabled quantile, and the means come out 4-13 % above
the table's (:func:`study_knots` says why the tail stops at p99).

Replies that do nothing are faster in the released data: the draw is scaled by
``idle_latency_factor`` (0.6) for them and ``act_latency_factor`` (1.15) for the others, chosen
so that a mixture of ~30% idle replies keeps each table's median within ~3% (checked
numerically; the table is over all replies); a scaled draw is capped at the top knot.

Task time (``task_time="task"``, the default): a task has a size of its own. A reply that acts
on a task takes a time fixed by that task, drawn once per (run work seed, task, step) from the
calibrated *acting*-reply distribution (the table's knots scaled by ``act_latency_factor``),
whoever sends it: doing its work (writing its files, well or faultily) takes the task's *work
time*; claiming it (or trying to, while it is blocked) and marking it done take its claim and
completion times. Replies that touch no task (idle, a lead's assignments) keep their per-reply
draws. The marginal distribution of acting replies is unchanged (each draw is one from it), so
the calibrated means are too; what changes is that agents racing for the same ready task can
no longer "hedge" (the fastest of k independent draws winning). For the same reason whether a
task is claimed and worked in one reply, and written and completed in one, is the task's too
(drawn once per work seed and task at the profile's rates). Under ``task_time="reply"``
(the study's pure-latency semantics) that let async teams beat both n and the DAG's N / CP.

Tokens: input grows with the board and the message history, output with what the reply does.
Pure: the randomness is a seeded ``random.Random`` per agent, time is the caller's virtual clock.
"""

from __future__ import annotations

import itertools
import math
import random
from typing import Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field, field_validator

from quorumboard.agents.team.actions import (
    Action,
    Assign,
    ClaimTask,
    CompleteTask,
    Idle,
    Message,
    Reply,
    TaskView,
    View,
    WriteFile,
)

__all__ = ["LATENCY_CAP_S", "PROFILES", "Brain", "BrainProfile", "SimBrain", "lead_of",
           "quantile_of", "study_knots", "task_work_s"]

LATENCY_CAP_S = 603.0
"""The largest reply latency in the study's released events: every real profile's p100 knot."""

Knots = tuple[tuple[float, float], ...]


def study_knots(p10: float, p50: float, p90: float, p99: float) -> Knots:
    """A model's latency knots from the study's table: its p10/p50/p90/p99, p10 / 3 (at least
    0.2 s) as p0, and p99 again as p100. The released data's largest reply (603 s) is one
    outlier across all models: a tail out to it would put every model's mean 20-60 % above the
    table's, while ending at p99 keeps the means within 13 % (the log-linear segments already
    run a little heavy). Stragglers are an experiment's knob, not the baseline's tail."""
    return ((0.0, max(0.2, p10 / 3.0)), (0.1, p10), (0.5, p50), (0.9, p90), (0.99, p99),
            (1.0, p99))


def quantile_of(knots: Knots, u: float) -> float:
    """The value at quantile ``u`` (0..1) of the piecewise log-linear distribution through
    ``knots``: log(seconds) is linear in the quantile between neighbouring knots."""
    u = min(1.0, max(0.0, u))
    for (q0, x0), (q1, x1) in itertools.pairwise(knots):
        if u <= q1:
            if x0 == x1:  # a flat segment (a fixed latency): exact, no exp(log(x)) rounding
                return x0
            return x0 * math.exp((u - q0) / (q1 - q0) * math.log(x1 / x0))
    return knots[-1][1]


class Brain(Protocol):
    """Anything that turns a view into a reply: :class:`SimBrain`, ``agents.llm.OpenAIBrain``,
    or a user's own."""

    def decide(self, view: View) -> Reply: ...


class BrainProfile(BaseModel):
    """Latency, token and behaviour parameters of one simulated model."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    latency_quantiles_s: Knots
    """Sorted (quantile, seconds) knots of the reply latency, from quantile 0 to 1 (see
    :func:`study_knots`); quantiles strictly increasing, seconds positive and non-decreasing
    (all equal: a fixed latency)."""
    idle_latency_factor: float = Field(default=0.6, gt=0)
    act_latency_factor: float = Field(default=1.15, gt=0)
    tokens_in_base: int = 4_000
    tokens_in_per_task: int = 250
    tokens_in_per_message: int = 120
    tokens_out_idle: int = 150
    tokens_out_per_action: int = 120
    tokens_out_per_write: int = 500
    idle_rate: float = Field(default=0.08, ge=0, le=1)
    blocked_claim_rate: float = Field(default=0.2, ge=0, le=1)
    eager_blocked_claim_rate: float = Field(default=0.5, ge=0, le=1)
    """...and at this rate when nothing it may take is ready (agents with nothing to do try)."""
    cross_write_rate: float = Field(default=0.04, ge=0, le=1)
    faulty_rate: float = Field(default=0.12, ge=0, le=1)
    pick_first_rate: float = Field(default=0.5, ge=0, le=1)
    write_and_complete_rate: float = Field(default=0.7, ge=0, le=1)
    """A passing write is followed by its completion in the same reply at this rate."""
    claim_and_work_rate: float = Field(default=0.6, ge=0, le=1)
    """A claim is followed, in the same reply, by the task's writes (and completion) at this
    rate: the study's replies often claim, edit, test and complete at once. The writes are
    planned on the pre-claim view, so a lost claim race leaves an unfenced write behind."""
    spread_picks: bool = False
    """Pick the ready task at the agent's own index in the team (no collisions): for
    hand-checkable runs."""
    announce_rate: float = Field(default=0.3, ge=0, le=1)
    """Self-claiming agents post a message about their claim at this rate."""

    @field_validator("latency_quantiles_s")
    @classmethod
    def _check_knots(cls, knots: Knots) -> Knots:
        if len(knots) < 2:
            raise ValueError("needs at least two (quantile, seconds) knots")
        if knots[0][0] != 0.0 or knots[-1][0] != 1.0:
            raise ValueError("the knots must run from quantile 0 to quantile 1")
        for (q0, x0), (q1, x1) in itertools.pairwise(knots):
            if not q1 > q0:
                raise ValueError(f"quantiles must increase: {q0} then {q1}")
            if not x1 >= x0:
                raise ValueError(f"seconds must not decrease: {x0} then {x1}")
        if not (knots[0][1] > 0 and math.isfinite(knots[-1][1])):
            raise ValueError("seconds must be positive and finite")
        return knots

    @property
    def latency_max_s(self) -> float:
        return self.latency_quantiles_s[-1][1]


PROFILES: dict[str, BrainProfile] = {
    # p10 / p50 / p90 / p99 of all replies from notes/paper.md; output sizes within the
    # 200-1,600 range.
    "gpt-5.2": BrainProfile(name="gpt-5.2", latency_quantiles_s=study_knots(0.87, 1.83, 6.77, 42.8),
                            tokens_out_per_write=400),
    "claude-sonnet-4-6": BrainProfile(name="claude-sonnet-4-6",
                                      latency_quantiles_s=study_knots(1.18, 3.50, 33.4, 48.6),
                                      tokens_out_per_write=1_200),
    "gemini-3-flash-preview": BrainProfile(name="gemini-3-flash-preview",
                                           latency_quantiles_s=study_knots(2.24, 4.07, 10.6, 27.7),
                                           tokens_out_per_write=700),
    # Deterministic: fixed latency, no behaviour noise. For hand-checkable runs and tests.
    "exact": BrainProfile(name="exact", latency_quantiles_s=((0.0, 10.0), (1.0, 10.0)),
                          idle_latency_factor=1.0, act_latency_factor=1.0, idle_rate=0.0,
                          blocked_claim_rate=0.0, eager_blocked_claim_rate=0.0,
                          cross_write_rate=0.0, faulty_rate=0.0,
                          pick_first_rate=1.0, write_and_complete_rate=1.0, announce_rate=0.0,
                          claim_and_work_rate=1.0, spread_picks=True),
}


def lead_of(view: View) -> str | None:
    """The lead in ``lead`` mode: the first agent, when the team has more than one."""
    return view.team[0] if view.mode == "lead" and len(view.team) > 1 else None


TaskStep = Literal["work", "claim", "complete"]


def task_work_s(profile: BrainProfile, work_seed: int, task: str,
                step: TaskStep = "work") -> float:
    """How long a reply taking ``step`` on ``task`` lasts in a run with ``work_seed``: one draw
    from the profile's acting-reply distribution, a function of (work seed, task, step) only,
    not of the agent (``work``: the task's work time)."""
    u = random.Random(f"{step}|{work_seed}|{task}").random()
    draw = quantile_of(profile.latency_quantiles_s, u)
    return min(profile.latency_max_s, draw * profile.act_latency_factor)


class SimBrain:
    """A seeded simulated agent. ``slowdown`` multiplies its latency (a straggler).
    ``work_seed`` (with ``task_time="task"``): the run's task work times (:func:`task_work_s`);
    None draws every reply afresh (``task_time="reply"``)."""

    def __init__(self, profile: BrainProfile, seed: int, slowdown: float = 1.0,
                 work_seed: int | None = None) -> None:
        self.profile = profile
        self.slowdown = slowdown
        self.work_seed = work_seed
        self._rng = random.Random(seed)
        self._step: tuple[TaskStep, str] | None = None

    def _chance(self, rate: float) -> bool:
        return rate > 0 and self._rng.random() < rate

    def _path(self, task: str, which: str, rate: float) -> bool:
        """Whether a reply on ``task`` combines two steps (claim + work, write + complete).
        With task time this is the task's, fixed per (work seed, task), like its sizes:
        otherwise agents racing for one task would hedge between the one-reply path and the
        two-reply one (the fastest choice winning), as they would between latency draws. The
        per-agent draw is consumed either way, so the rng stream does not depend on it."""
        mine = self._chance(rate)
        if self.work_seed is None:
            return mine
        return rate > 0 and random.Random(f"{which}|{self.work_seed}|{task}").random() < rate

    def latency_s(self, acting: bool) -> float:
        prof = self.profile
        factor = prof.act_latency_factor if acting else prof.idle_latency_factor
        draw = quantile_of(prof.latency_quantiles_s, self._rng.random())
        return min(prof.latency_max_s, draw * factor) * self.slowdown

    def work_s(self, task: str, step: TaskStep = "work") -> float:
        """How long a reply taking ``step`` on ``task`` takes this agent (task time)."""
        assert self.work_seed is not None
        return task_work_s(self.profile, self.work_seed, task, step) * self.slowdown

    def decide(self, view: View) -> Reply:
        self._step = None
        actions = self._choose(view)
        acting = any(not isinstance(a, Idle) for a in actions)
        prof = self.profile
        tokens_in = (prof.tokens_in_base + prof.tokens_in_per_task * len(view.tasks)
                     + prof.tokens_in_per_message * len(view.messages))
        tokens_out = prof.tokens_out_idle if not acting else sum(
            prof.tokens_out_per_write if isinstance(a, WriteFile) else prof.tokens_out_per_action
            for a in actions)
        draw = self.latency_s(acting)  # drawn either way: the rng stream does not depend on it
        if self._step is not None and self.work_seed is not None:
            draw = self.work_s(self._step[1], self._step[0])
        return Reply(actions=tuple(actions), latency_s=draw,
                     tokens_in=tokens_in, tokens_out=tokens_out)

    # ------------------------------------------------------------------------------ choices

    def _choose(self, view: View) -> list[Action]:
        if self._chance(self.profile.idle_rate):
            return [Idle(reason="no effective action this turn")]
        if lead_of(view) == view.agent:
            return self._lead(view) or [Idle(reason="nothing to assign")]
        held = [t for t in view.tasks if t.status == "claimed" and t.owner == view.agent]
        if held:
            return self._work(view, held[0])
        return self._find_work(view)

    def _work(self, view: View, task: TaskView) -> list[Action]:
        out: list[Action] = []
        if self._chance(self.profile.cross_write_rate):
            others = [f for t in view.tasks if t.id != task.id for f in t.files]
            if others:
                # An edit of another task's file breaks it: its owner must write it again.
                out.append(WriteFile(file=self._rng.choice(others), task=task.id, passes=False,
                                     content=f"# edited by {view.agent} while on {task.id}\n"))
        written = all((f := view.file(name)) is not None and f.passes and f.author == view.agent
                      for name in task.files)
        if written:
            self._step = ("complete", task.id)
            return [*out, CompleteTask(task=task.id)]
        passes = not self._chance(self.profile.faulty_rate)
        if task.files:
            self._step = ("work", task.id)  # this reply does the task's work (well or not)
        for name in task.files:
            out.append(WriteFile(file=name, task=task.id, passes=passes,
                                 content=f"# {task.id} by {view.agent}\n"))
        if passes and self._path(task.id, "write+complete",
                                 self.profile.write_and_complete_rate):
            out.append(CompleteTask(task=task.id))
        return out

    def _find_work(self, view: View) -> list[Action]:
        self_claiming = view.self_claiming
        pending = [t for t in view.tasks if t.status == "pending"
                   and (t.owner == view.agent or (self_claiming and t.owner is None))]
        ready_ids = {t.id for t in view.ready}
        ready = [t for t in pending if t.id in ready_ids]
        blocked = [t for t in pending if t.id not in ready_ids]
        if self_claiming:  # tasks whose owner went quiet (claimed or assigned) can be taken
            ready += [t for t in view.tasks if t.owner in view.stale_owners
                      and (t.status == "claimed" or t.id in ready_ids)]
        # Misreading the board: with ready work at hand now and then, with none far more often.
        rate = self.profile.blocked_claim_rate if ready else self.profile.eager_blocked_claim_rate
        if blocked and self._chance(rate):
            target = self._rng.choice(blocked).id
            self._step = ("claim", target)
            return [ClaimTask(task=target)]
        if not ready:
            return [Idle(reason="waiting on dependencies" if blocked else "nothing left for me")]
        if self.profile.spread_picks:
            pick = ready[view.team.index(view.agent) % len(ready)]
        elif self._chance(self.profile.pick_first_rate):
            pick = ready[0]
        else:
            pick = self._rng.choice(ready)
        out: list[Action] = [ClaimTask(task=pick.id)]
        self._step = ("claim", pick.id)
        if self_claiming and self._chance(self.profile.announce_rate):
            out.append(Message(text=f"{view.agent} is taking {pick.id}"))
        if self._path(pick.id, "claim+work", self.profile.claim_and_work_rate):
            out += self._work(view, pick)
        return out

    def _lead(self, view: View) -> list[Action]:
        """Assign ready, unowned tasks to the workers holding the fewest open tasks; hand the
        tasks of workers whose heartbeat went stale to live ones."""
        workers = [a for a in view.team if a != view.agent and a not in view.stale_owners]
        if not workers:
            return []
        load = {w: sum(1 for t in view.tasks if t.owner == w and t.status != "done")
                for w in workers}
        out: list[Action] = []
        stale = [t for t in view.tasks if t.status != "done" and t.owner in view.stale_owners]
        free = [t for t in view.ready if t.owner is None]
        for t in (stale + free)[:8]:
            worker = min(workers, key=lambda w: (load[w], w))
            load[worker] += 1
            out.append(Assign(task=t.id, agent=worker))
        return out
