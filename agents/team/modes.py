"""Coordination modes: who decides which agent does which task.

* ``preassign`` — before the run, a coordinator deals every task out (the study's script: tasks in
  topological order, each kept with the owner of its last dependency so a chain stays on one
  agent, the rest round-robin). Nobody reassigns: a stalled agent's tasks wait for it.
* ``lead`` — the first agent is a lead that assigns ready tasks to workers as the run goes, and
  hands the tasks of a worker whose heartbeat went stale to a live one.
* ``decentralized`` — agents claim ready tasks themselves (``Board.claim``, first come first
  served) and may take over a claim whose owner's heartbeat went stale.
* ``hybrid`` — self-claiming, plus a monitor (not an LLM) that at every round reassigns the
  tasks (claimed or assigned) of agents whose heartbeat went stale to the least-loaded live
  agent.

A mode is a class registered by name (:func:`register_mode`): ``setup`` runs once after the task
records exist, ``tick`` after every round (or monitor period, in asynchronous runs). Both act
only through the coordinator's :class:`~agents.teamboard.Actor` (as actions, so a board fault
is an event, never a crash), so everything they do is on the board and in the event log.
"""

from __future__ import annotations

from typing import ClassVar, Protocol

from quorumboard.agents.team.actions import Assign
from quorumboard.agents.team.tasks import Project, topological_order
from quorumboard.agents.team.teamboard import Actor, ViewCache

__all__ = ["MODES", "Decentralized", "Hybrid", "Lead", "Mode", "Preassign", "RunContext",
           "get_mode", "register_mode", "self_claiming"]


class RunContext(Protocol):
    """What a mode may use of the running team."""

    project: Project
    team: tuple[str, ...]
    coordinator: Actor
    coordinator_view: ViewCache
    claim_ttl_s: float

    def catch_up(self) -> None:
        """Bring the coordinator's view up to every commit of the run so far."""


class Mode:
    """Base: no setup, no monitor (agents coordinate through the board alone)."""

    name: ClassVar[str] = ""
    self_claiming: ClassVar[bool] = True
    """Agents take unassigned ready tasks themselves (the brains read this via the view)."""

    def setup(self, run: RunContext, t_s: float) -> None:
        """Called once before the first turn."""

    def tick(self, run: RunContext, t_s: float, round_: int) -> None:
        """Called after every round (rounds) or every monitor period (async)."""


MODES: dict[str, type[Mode]] = {}


def register_mode(cls: type[Mode]) -> type[Mode]:
    """Register a coordination mode under ``cls.name`` (usable as a decorator)."""
    if not cls.name or not cls.name.replace("-", "").isalnum():
        raise ValueError(f"a mode needs a simple name, not {cls.name!r}")
    MODES[cls.name] = cls
    return cls


def get_mode(name: str) -> Mode:
    try:
        return MODES[name]()
    except KeyError:
        raise ValueError(f"unknown mode {name!r} (known: {', '.join(sorted(MODES))})") from None


def self_claiming(mode: str, team_size: int) -> bool:
    """Whether agents claim unassigned tasks on their own in ``mode`` (a lone agent always
    does: there is nobody to assign to it)."""
    cls = MODES.get(mode)
    return team_size == 1 or cls is None or cls.self_claiming


@register_mode
class Preassign(Mode):
    name = "preassign"
    self_claiming = False

    def setup(self, run: RunContext, t_s: float) -> None:
        owner: dict[str, str] = {}
        dealt = 0
        for task in topological_order(run.project.tasks):
            if task.dependencies:
                owner[task.id] = owner[task.dependencies[-1]]
            else:
                owner[task.id] = run.team[dealt % len(run.team)]
                dealt += 1
            run.coordinator.execute(Assign(task=task.id, agent=owner[task.id]), t_s, 0)


@register_mode
class Lead(Mode):
    name = "lead"
    self_claiming = False


@register_mode
class Decentralized(Mode):
    name = "decentralized"


@register_mode
class Hybrid(Mode):
    name = "hybrid"

    def tick(self, run: RunContext, t_s: float, round_: int) -> None:
        run.catch_up()
        cache = run.coordinator_view
        live = [a for a in run.team if t_s - cache.heartbeats.get(a, 0.0) <= run.claim_ttl_s]
        if not live:
            return
        load = {a: sum(1 for r in cache.tasks.values()
                       if r.get("owner") == a and r.get("status") != "done") for a in live}
        for task_id, rec in sorted(cache.tasks.items()):
            owner = rec.get("owner")
            # Claimed by a silent agent, or assigned to one (it may have gone silent since).
            if rec.get("status") != "done" and owner is not None and owner not in live:
                to = min(live, key=lambda a: (load[a], a))
                load[to] += 1
                run.coordinator.execute(Assign(task=task_id, agent=to), t_s, round_)
