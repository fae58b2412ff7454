"""What one team run is (:class:`RunSpec`) and the faults injected into it.

A run is identified by its spec; a sweep's ``results.jsonl`` holds one :class:`RunRecord`
(spec + metrics) per finished run, so a resumed sweep skips every spec already recorded.
A *cell* is every spec field but ``rep`` and ``seed`` and ``agents``: runs of one cell differ
only in team size and repetition, which is what speedup is measured across.
"""

from __future__ import annotations

import hashlib
import json
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = ["AgentFault", "BoardFault", "Harness", "RunSpec", "SyncMode", "TaskTime", "check_harness"]

SyncMode = Literal["rounds", "async"]
Harness = Literal["board", "study"]
"""Whose rules a run follows: ``board`` (this toolkit's: claims are leases with fencing
tokens, a completion needs the task's dependencies done and a passing write of its files) or
``study`` (the study's orchestrator, exactly: :mod:`agents.study`)."""
TaskTime = Literal["task", "reply"]
"""How long a simulated reply that does a task's work takes: ``task`` (the task's own work
time, drawn once per run work seed and task, the same whoever does it) or ``reply`` (a fresh
draw per reply: the study's pure-latency semantics, under which racing agents hedge)."""


def check_harness(harness: str, sync: str) -> None:
    """The study harness has rounds only: its orchestrator has no asynchronous schedule."""
    if harness == "study" and sync != "rounds":
        raise ValueError("--harness study runs in synchronous rounds only (the study's "
                         f"orchestrator has no asynchronous schedule), not --sync {sync}")


class AgentFault(BaseModel):
    """A fault of one agent (by index in the team). ``slowdown``: its reply latency is
    multiplied by this (a straggler). ``stall_at_s``/``stall_s``: at its first turn from that
    run time on at which it holds a task (a stall mid-task), it stops replying for ``stall_s``
    (heartbeats stop too, so its claims go stale; in asynchronous runs a reply in flight lands
    when it wakes). ``crash_at_s``: it stops for good."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    agent: int = Field(ge=0, le=63)
    slowdown: float = Field(default=1.0, ge=1.0, le=1000.0)
    stall_at_s: float | None = Field(default=None, ge=0)
    stall_s: float = Field(default=0.0, ge=0)
    crash_at_s: float | None = Field(default=None, ge=0)


class BoardFault(BaseModel):
    """Faults of the blackboard itself during a run, one at a time (a majority stays up): at
    round ``at_round`` (async runs: after that many replies per agent) the leader replica is
    SIGKILLed, ``kill_delay_s`` of wall time later; ``heal_after`` rounds later it restarts and the new leader is partitioned away;
    ``heal_after`` rounds after that the partition heals."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    at_round: int = Field(default=3, ge=1)
    heal_after: int = Field(default=3, ge=1)
    kill_leader: bool = True
    partition_one: bool = True
    kill_delay_s: float = Field(default=0.02, ge=0, le=60)
    """The kill fires from a timer this long (wall clock) after the fault round starts, so it
    lands while the agents' view catch-ups and writes are in flight (in-flight commits then
    end in a retry or an unknown outcome, as a real crash makes them). Short: a round's board
    calls take tens of milliseconds, and a kill landing after them would be absorbed by the
    harness's own waits instead of the agents'. 0: at round start, before any agent acts."""


class RunSpec(BaseModel):
    """One team run: project, team, coordination, conflict policy, brain and faults."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    experiment: str = "sweep"
    suite: str
    level: str
    project: str = ""
    """The project's name (two generated projects of one level differ here)."""
    p: float = Field(ge=0, le=1)
    mode: str
    policy: str = "last-writer-wins"
    brain: str = "sim"
    model: str = "gpt-5.2"
    """The simulated profile (calibrated on this model's figures), or the LLM's model name."""
    agents: int = Field(ge=1, le=64)
    rep: int = Field(default=0, ge=0)
    seed: int = 0
    sync: SyncMode = "rounds"
    round_cap: int = Field(default=60, ge=1, le=10_000)
    claim_ttl_s: float = Field(default=60.0, gt=0)
    """A claim whose owner has not heartbeated for this long (run time) may be taken over."""
    task_time: TaskTime = "task"
    work_seed: int | None = None
    """Seed of the tasks' work times (``task_time="task"``); None: ``seed``. Sweeps derive it
    from the project and repetition only, so every team size and mode of one repetition faces
    the same work."""
    board_time: bool = True
    """Add the measured wall time of each agent's board operations (view catch-up and the
    reply's actions) to its run time, so board latency and failover stalls cost run time.
    False: run time is the brains' alone (bit-for-bit reproducible runs)."""
    faults: tuple[AgentFault, ...] = ()
    board_fault: BoardFault | None = None
    harness: Harness = "board"
    assume: str = ""
    """Study brains' assumption knobs, ``name=value,...`` (``agents.studybrain.Assumptions``);
    empty: the defaults."""
    fix: str = ""
    """Study rules replaced by correct ones (``--harness study`` only): a canonical comma list
    of :data:`~agents.team.study_harness.FIXES`; empty: the study's rules."""
    prompt: str = Field(default="", max_length=200)
    """The system prompt LLM agents got under the study harness: ``ours:<sha256>`` (this
    toolkit's teammate prompt) or ``study:<sha256>`` (read from a checkout of the study's
    repository, ``--study-repo``); empty for every other run."""

    @model_validator(mode="after")
    def _study_rounds_only(self) -> RunSpec:
        check_harness(self.harness, self.sync)
        if self.fix and self.harness != "study":
            raise ValueError("--fix replaces study rules: it needs --harness study")
        return self

    @property
    def cell(self) -> tuple[str, ...]:
        """The cell this run belongs to (team size and repetition excluded)."""
        faults = json.dumps([f.model_dump() for f in self.faults], sort_keys=True)
        board = json.dumps(self.board_fault.model_dump() if self.board_fault else None)
        return (self.experiment, self.suite, self.level, self.project, f"{self.p:.3f}", self.mode,
                self.policy, self.brain, self.model, self.sync, str(self.round_cap),
                faults, board, self.task_time, str(self.board_time), self.harness, self.assume,
                self.fix, self.prompt)

    @property
    def run_id(self) -> str:
        """Stable name of the run (its output folder): readable prefix + hash of the spec."""
        # Fields added since the first sweeps leave the hash alone at their defaults, so a
        # sweep recorded before them still resumes.
        new = {k for k in ("harness", "assume", "fix", "prompt")
               if getattr(self, k) == type(self).model_fields[k].default}
        digest = hashlib.sha256(self.model_dump_json(exclude=new).encode()).hexdigest()[:10]
        tag = f"-{self.model}" if self.harness == "study" else ""
        return (f"{self.suite}-{self.level}-{self.mode}{tag}-n{self.agents}-r{self.rep}-"
                f"{digest}")
