"""One team run on a real replicated board: the turn loop, virtual time, faults, outputs.

Time is *run time*: for simulated brains a discrete-event clock (a reply "takes" its sampled
latency; nothing sleeps), for LLM brains the measured latency of each reply. Board operations
are always real. Two schedules:

* ``rounds`` (the study's): every live agent gets the board as it stands when the round starts
  and all answer "concurrently"; replies take effect in order of their latency (so an early
  claim beats a late one), and the round lasts as long as its slowest reply (capped at
  ``ROUND_TIMEOUT_S``: a later reply is discarded, the agent's turn lost).
* ``async``: each agent asks again as soon as its last reply took effect; the view it gets is
  the board at that moment. A slow agent slows only itself.

Outputs in the run's folder: ``events.jsonl`` (every reply, action outcome and fault) and
``final.json`` (the run's task records and files as the board holds them at the end, read
linearizably, plus the check that no acknowledged completion or write was lost).
"""

from __future__ import annotations

import contextlib
import heapq
import json
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from quorumboard.agents.brains.sim import PROFILES, Brain, SimBrain
from quorumboard.agents.brains.study import StudyBrain, load_calibration, parse_assumptions
from quorumboard.agents.study.metrics import RunRecord, run_metrics
from quorumboard.agents.team.actions import Idle, Reply, View
from quorumboard.agents.team.events import EventLog, RunEvent
from quorumboard.agents.team.modes import Mode, get_mode, self_claiming
from quorumboard.agents.team.spec import RunSpec
from quorumboard.agents.team.study_harness import BoardStore, Store, StudyEngine
from quorumboard.agents.team.tasks import Project
from quorumboard.agents.team.teamboard import VIEW_KEYS_MAX, Actor, Layout, ViewCache, task_record
from quorumboard.agents.version import code_version
from quorumboard.consensus import Board, BoardError, LocalCluster, connect
from quorumboard.consensus.testing import Fault, FaultStep, Nemesis, NemesisConfig

__all__ = ["BrainFactory", "TeamEnv", "run_team", "sim_brains"]

ROUND_TIMEOUT_S = 300.0
"""A round-synchronous reply later than this misses its round (the round does not wait longer)."""
SIM_LEASE_TTL_S = 3_600.0
"""Real-time TTL of a simulated agent's claim leases: longer than any sweep, because simulated
runs keep *virtual* time. Their expiry is virtual too: when an agent has been silent for the
claim TTL of run time, the harness ends its leases through the log (``Actor.expire``), at the
same run time for the same seed, whatever the machine's speed."""
IDLE_ROUND_S = 10.0
"""How far the clock moves in a round in which no agent could reply (all stalled)."""
ASYNC_EVENTS_MAX = 200_000
LEADER_WAIT_S = 30.0
"""How long a board fault aimed at the leader waits for one to be elected."""
EFFECTIVE = frozenset({"claim", "write", "complete", "assign", "message", "takeover"})
"""Event kinds that make a reply effective (the study's idle reply has none)."""

BrainFactory = Callable[[RunSpec, int, str], Brain]
"""``(spec, agent index, agent name) -> brain`` for one agent of one run."""


def sim_brains(spec: RunSpec, index: int, name: str) -> Brain:
    """The default brains: the spec's simulated profile, seeded per run and agent (under the
    study harness: the model's study brain, calibrated on the study's replies)."""
    if spec.harness == "study":
        return study_brain(spec, index)
    try:
        profile = PROFILES[spec.model]
    except KeyError:
        raise ValueError(f"no simulated profile {spec.model!r} "
                         f"(known: {', '.join(sorted(PROFILES))})") from None
    slowdown = 1.0
    for f in spec.faults:
        if f.agent == index:
            slowdown = f.slowdown
    work_seed = spec.seed if spec.work_seed is None else spec.work_seed
    return SimBrain(profile, seed=spec.seed * 1_000_003 + index * 7_919 + spec.rep,
                    slowdown=slowdown, work_seed=work_seed if spec.task_time == "task" else None)


def study_brain(spec: RunSpec, index: int) -> StudyBrain:
    """The spec's model's calibrated study brain, with the spec's assumption knobs."""
    cal = load_calibration(spec.model)
    slowdown = next((f.slowdown for f in spec.faults if f.agent == index), 1.0)
    return StudyBrain(cal, spec.mode, seed=spec.seed * 1_000_003 + index * 7_919 + spec.rep,
                      assumptions=parse_assumptions(spec.assume, cal, spec.mode),
                      slowdown=slowdown)


@dataclass
class TeamEnv:
    """What the runs of a sweep share: one cluster, a key root, pooled agent connections."""

    endpoints: list[str]
    root: str
    cluster: LocalCluster | None = None
    secret: str | None = None
    brains: BrainFactory = sim_brains
    _boards: dict[str, Board] = field(default_factory=dict)
    _bound: set[str] = field(default_factory=set)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _bind_lock: threading.Lock = field(default_factory=threading.Lock)

    def board(self, name: str) -> Board:
        with self._lock:
            if name not in self._boards:
                self._boards[name] = connect(self.endpoints, agent=name, secret=self.secret)
            return self._boards[name]

    def bind(self, layout: Layout, coordinator: Board) -> None:
        """Bind the run's file policy (once per policy) and heartbeats / tasks /
        messages to last-writer-wins (their writes carry ``expect_version`` where it matters).
        A prefix counts as bound only once the binding committed (concurrent jobs wait)."""
        for prefix, policy in ((f"{self.root}/r/", "last-writer-wins"),
                               (layout.policy_prefix, layout.policy)):
            with self._bind_lock:
                if prefix not in self._bound:
                    coordinator.set_policy(prefix, policy)
                    self._bound.add(prefix)

    def close(self) -> None:
        with self._lock:
            boards, self._boards = list(self._boards.values()), {}
        for b in boards:
            with contextlib.suppress(BoardError):
                b.close()


class _Run:
    """The state of one run while it executes (single-threaded but for LLM replies)."""

    def __init__(self, spec: RunSpec, project: Project, env: TeamEnv, log: EventLog,
                 job: str) -> None:
        self.spec = spec
        self.project = project
        self.env = env
        self.log = log
        # A run's keys are its own even when the same spec runs again (a resumed sweep, a
        # determinism check): the spec's id plus a nonce.
        self.layout = Layout(root=env.root, run=f"{spec.run_id}-{uuid.uuid4().hex[:8]}",
                             policy=spec.policy)
        self.team = tuple(f"a{i}" for i in range(spec.agents))
        self.claim_ttl_s = spec.claim_ttl_s
        self.mode: Mode = get_mode(spec.mode)
        self.self_claiming = self_claiming(spec.mode, spec.agents)
        # Simulated runs: virtual time, leases ended by the harness (see SIM_LEASE_TTL_S).
        # LLM runs: run time is real time and the board's own clock ends leases; a lease
        # outlives a whole round (replies are renewals), a takeover waits for it to end.
        self.virtual = spec.brain == "sim"
        lease_ttl_s = SIM_LEASE_TTL_S if self.virtual else spec.claim_ttl_s + ROUND_TIMEOUT_S
        lead = self.team[0] if spec.mode == "lead" and spec.agents > 1 else None

        def actor(name: str, board: str) -> Actor:
            return Actor(name, env.board(f"{job}-{board}"), self.layout, project, log,
                         team=self.team, claim_ttl_s=spec.claim_ttl_s, lease_ttl_s=lease_ttl_s,
                         wait_for_lease=not self.virtual,
                         may_assign=name in ("coordinator", lead))

        self.coordinator = actor("coordinator", "coordinator")
        self.actors = {name: actor(name, name) for name in self.team}
        self.brains = {name: env.brains(spec, i, name) for i, name in enumerate(self.team)}
        self.faults = {self.team[f.agent]: f for f in spec.faults if f.agent < spec.agents}
        self.state = dict.fromkeys(self.team, "up")  # up | stalled | crashed
        self.stalled_at: dict[str, float] = {}
        self.seen_s = dict.fromkeys(self.team, 0.0)  # run time of each agent's last heartbeat
        self.expired: set[str] = set()
        self.caches: dict[str, ViewCache] = {}
        self.coordinator_view: ViewCache
        self.completed: set[str] = set()
        self.replies = 0
        self.board_total_s = 0.0
        self.board_max_s = 0.0

    # ------------------------------------------------------------------ RunContext for modes

    @property
    def revision(self) -> int:
        return max(a.last_revision for a in [self.coordinator, *self.actors.values()])

    def catch_up(self) -> None:
        self._catch_up(self.coordinator_view, "coordinator")

    def _catch_up(self, cache: ViewCache, agent: str) -> None:
        """Bring ``cache`` up to every commit of the run so far. If the board cannot deliver
        (a fault outlasting ``CATCH_UP_S``), the agent goes on with the view it has, as a real
        one would, and the event log says so."""
        try:
            cache.catch_up(self.revision)
        except BoardError as exc:
            self.log.emit(max((e.t_s for e in self.log.events[-1:]), default=0.0),
                          "board_error", agent=agent, reason=type(exc).__name__,
                          data={"message": f"view not caught up: {str(exc)[:200]}"})

    # -------------------------------------------------------------------------------- setup

    def setup(self) -> None:
        coord = self.coordinator
        self.env.bind(self.layout, coord.board)
        start = coord.board.put(f"{self.layout.run_prefix}meta",
                                {"spec": self.spec.model_dump(mode="json"),
                                 "project": self.project.name}).mod_revision
        coord.ops += 2
        self.caches = {name: ViewCache(self.actors[name].board, self.layout, start)
                       for name in self.team}
        self.coordinator_view = ViewCache(coord.board, self.layout, start)
        for task in self.project.tasks:
            coord._put(self.layout.task(task.id), task_record(self.project, task.id),
                       expect_version=0)
        for name in self.team:
            self.heartbeat(name, 0.0, 0)
        self.mode.setup(self, 0.0)

    # ----------------------------------------------------------------- liveness and leases

    def heartbeat(self, agent: str, t_s: float, round_: int) -> None:
        self.actors[agent].heartbeat(t_s, round_)
        self.seen_s[agent] = t_s
        self.expired.discard(agent)

    def tick_leases(self, t_s: float, round_: int) -> None:
        """Run time advanced to ``t_s``. A live agent keeps a keepalive going (as a real
        agent's process would while its model thinks): its heartbeat is renewed once half the
        claim TTL has passed. A silent one (stalled, crashed) has its claims end once the whole
        TTL has passed: through the log, at a run time fixed by the seed."""
        ttl = self.claim_ttl_s
        for agent in self.team:
            age = t_s - self.seen_s[agent]
            crash = self.faults[agent].crash_at_s if agent in self.faults else None
            if self.state[agent] == "up" and (crash is None or t_s < crash):
                if age >= ttl / 2:
                    self.heartbeat(agent, t_s, round_)
            elif age > ttl and agent not in self.expired and self.virtual:
                self.expired.add(agent)
                self.actors[agent].expire(self.seen_s[agent] + ttl, round_)

    # ------------------------------------------------------------------------ agent faults

    def _held(self, agent: str) -> dict[str, list[str]]:
        """The tasks ``agent`` is working on (claimed) and those only assigned to it."""
        self.catch_up()
        mine = [(t, r.get("status")) for t, r in sorted(self.coordinator_view.tasks.items())
                if r.get("owner") == agent]
        return {"tasks": [t for t, st in mine if st == "claimed"],
                "assigned": [t for t, st in mine if st == "pending"]}

    def can_reply(self, agent: str, t_s: float) -> bool:
        """Apply the agent's fault schedule at ``t_s``; whether it can take a turn now."""
        f = self.faults.get(agent)
        if f is None or self.state[agent] == "crashed":
            return self.state[agent] != "crashed"
        if f.crash_at_s is not None and t_s >= f.crash_at_s:
            self.state[agent] = "crashed"
            self.log.emit(t_s, "crash", agent=agent, data=dict(self._held(agent)))
            return False
        if f.stall_at_s is not None and agent not in self.stalled_at and t_s >= f.stall_at_s:
            held = self._held(agent)
            if held["tasks"]:  # the stall hits mid-task: its first turn from stall_at_s working
                self.stalled_at[agent] = t_s
                self.state[agent] = "stalled"
                self.log.emit(t_s, "stall", agent=agent, data=dict(held, stall_s=f.stall_s))
        start = self.stalled_at.get(agent)
        if start is not None and t_s < start + f.stall_s:
            return False
        if self.state[agent] == "stalled":
            self.state[agent] = "up"
            self.log.emit(t_s, "resume", agent=agent)
        return True

    def wake_s(self, agent: str | None = None) -> float | None:
        """When ``agent`` (or, without one, the first stalled agent) can reply again."""
        wakes = [self.stalled_at[a] + f.stall_s for a, f in self.faults.items()
                 if self.state[a] == "stalled" and agent in (None, a)]
        return min(wakes) if wakes else None

    # --------------------------------------------------------------------------- one turn

    def view(self, agent: str, t_s: float, round_: int) -> View:
        cache = self.caches[agent]
        self._catch_up(cache, agent)
        return cache.view(agent, self.team, self.spec.mode, round_, t_s, self.claim_ttl_s,
                          self.project, self.self_claiming)

    def take_effect(self, agent: str, reply: Reply, view: View, t_s: float,
                    round_: int) -> None:
        """Carry out the reply's actions at run time ``t_s``, then log the reply itself (its
        ``effective`` flag needs their outcomes)."""
        self.tick_leases(t_s, round_)
        first = len(self.log.events)
        for problem in reply.invalid:
            self.log.emit(t_s, "invalid", agent=agent, round=round_, reason=problem[:300])
        actor = self.actors[agent]
        for action in reply.actions:
            actor.execute(action, t_s, round_, view)
        if not reply.actions and not reply.invalid:
            actor.execute(Idle(reason="no action"), t_s, round_, view)
        effective = any(e.kind in EFFECTIVE and e.agent == agent
                        for e in self.log.events[first:])
        self.log_reply(agent, reply, t_s, round_, effective=effective)
        self.heartbeat(agent, t_s, round_)
        self.completed |= actor.completed

    def log_reply(self, agent: str, reply: Reply, t_s: float, round_: int, *,
                  effective: bool, late: bool = False) -> None:
        self.replies += 1
        self.log.emit(t_s, "reply", agent=agent, round=round_, latency_s=reply.latency_s,
                      tokens_in=reply.tokens_in, tokens_out=reply.tokens_out,
                      data={"actions": [a.kind for a in reply.actions], "effective": effective,
                            "late": late})

    def board_s(self, since: float) -> float:
        """Wall time spent on the board since ``since`` (``time.monotonic``) by one agent step
        (a view catch-up, or a reply's actions): recorded, and added to the agent's run time
        when the spec's ``board_time`` is on."""
        waited = max(0.0, time.monotonic() - since)
        self.board_total_s += waited
        self.board_max_s = max(self.board_max_s, waited)
        return waited if self.spec.board_time else 0.0

    @property
    def done(self) -> bool:
        return len(self.completed) >= self.project.size


class _FaultHost(Protocol):
    """What the board-fault schedule needs of a run (either harness)."""

    @property
    def env(self) -> TeamEnv: ...

    @property
    def spec(self) -> RunSpec: ...

    @property
    def log(self) -> EventLog: ...


class _BoardFaults:
    """The board-fault schedule (``BoardFault``), one fault at a time so a majority of the
    three replicas stays up throughout: at ``at_round`` the leader is SIGKILLed (from a timer,
    ``kill_delay_s`` into the round); ``heal_after`` rounds later it restarts and the *new*
    leader is partitioned away (a second election); ``heal_after`` rounds after that the
    partition heals. The faults are the chaos nemesis's (its step-wise API): this class only
    maps rounds to its steps, each healing the fault in force and then injecting its own, and
    the nemesis's faults to ``board_fault`` / ``board_heal`` events. A step that fails (a
    leader not elected in time) is logged and the run goes on."""

    def __init__(self, run: _FaultHost) -> None:
        self.run = run
        spec, cluster = run.spec.board_fault, run.env.cluster
        self.plan: list[tuple[int, FaultStep | None]] = []
        """``(round, fault)``: from that round (tick) on, heal the fault in force and inject
        this one (``None``: only heal)."""
        if spec is not None and cluster is not None:
            kill = FaultStep("kill", "leader", delay_s=spec.kill_delay_s,
                             leader_wait_s=LEADER_WAIT_S) if spec.kill_leader else None
            cut = FaultStep("partition", "isolate-leader", leader_wait_s=LEADER_WAIT_S) \
                if spec.partition_one and cluster.net is not None else None
            self.plan = [(spec.at_round, kill), (spec.at_round + spec.heal_after, cut),
                         (spec.at_round + 2 * spec.heal_after, None)]
        self.nemesis: Nemesis | None = None
        self.fault: Fault | None = None

    def step(self, tick: int, t_s: float) -> None:
        """Advance the schedule to ``tick`` (a round, or replies per agent: ticks can skip)."""
        while self.plan and tick >= self.plan[0][0]:
            fault = self.plan.pop(0)[1]
            try:
                self.heal(t_s)
                if fault is not None:
                    self._inject(fault, t_s)
            except BoardError as exc:
                self.run.log.emit(t_s, "board_error", reason=type(exc).__name__,
                                  data={"message": f"fault harness: {str(exc)[:200]}"})

    def _inject(self, step: FaultStep, t_s: float) -> None:
        if self.nemesis is None:
            assert self.run.env.cluster is not None  # the plan is empty without one
            kinds = [f.kind for _, f in self.plan if f is not None]
            self.nemesis = Nemesis(self.run.env.cluster,
                                   NemesisConfig(faults=[step.kind, *kinds]))
        self.fault = self.nemesis.inject(step)
        what = "SIGKILLed" if step.kind == "kill" else "partitioned away"
        when = (f" {step.delay_s:g} s into the round, board calls in flight"
                if step.delay_s > 0 else "")
        self.run.log.emit(t_s, "board_fault",
                          reason=f"leader r{self.fault.targets[0]} {what}{when}")

    def heal(self, t_s: float, *, call_off: bool = False) -> None:
        """Heal the fault in force (a delayed one is let happen first, or with ``call_off``
        withdrawn: the run ended before it was done)."""
        fault = self.fault
        if fault is None or self.nemesis is None:
            return
        if self.nemesis.heal(fault, call_off=call_off):  # a failed heal raises: kept in force
            what = "restarted" if fault.kind == "kill" else "healed"
            self.run.log.emit(t_s, "board_heal", reason=f"r{fault.targets[0]} {what}")
        self.fault = None

    def close(self, t_s: float) -> None:
        """At the end of a run, whatever happened: undo whatever is still injected."""
        try:
            self.heal(t_s, call_off=True)
        finally:
            if self.nemesis is not None:
                self.nemesis.stop()


def _decide_all(run: _Run, views: dict[str, View]) -> dict[str, Reply]:
    """Ask every agent at once: LLM brains in parallel threads, simulated ones in turn."""
    if run.virtual or len(views) <= 1:
        return {a: run.brains[a].decide(v) for a, v in views.items()}
    with ThreadPoolExecutor(max_workers=len(views)) as pool:
        futures = {a: pool.submit(run.brains[a].decide, v) for a, v in views.items()}
        return {a: f.result() for a, f in futures.items()}


def _rounds(run: _Run, faults: _BoardFaults) -> int:
    t = 0.0
    rounds = 0
    for r in range(1, run.spec.round_cap + 1):
        if run.done:
            break
        rounds = r
        run.log.emit(t, "round_start", round=r)
        faults.step(r, t)
        live = [a for a in run.team if run.can_reply(a, t)]
        run.tick_leases(t, r)
        if not live:
            wake = run.wake_s()
            t = max(t + IDLE_ROUND_S, wake if wake is not None else t)
            run.mode.tick(run, t, r)
            continue
        views: dict[str, View] = {}
        view_s: dict[str, float] = {}
        for a in live:
            w0 = time.monotonic()
            views[a] = run.view(a, t, r)
            view_s[a] = run.board_s(w0)
        replies = _decide_all(run, views)
        # An agent's reply lands after its view caught up and its brain answered.
        order = sorted(live, key=lambda a: (view_s[a] + replies[a].latency_s,
                                            run.team.index(a)))
        ends = [t + min(ROUND_TIMEOUT_S, max(replies[a].latency_s for a in live))]
        for a in order:
            reply = replies[a]
            if reply.latency_s > ROUND_TIMEOUT_S:  # it was paid for, but acts on nothing
                late = t + ROUND_TIMEOUT_S
                run.log.emit(late, "idle", agent=a, round=r,
                             reason=f"reply missed the round ({reply.latency_s:.0f}s)")
                run.log_reply(a, reply, late, r, effective=False, late=True)
                continue
            at = t + view_s[a] + reply.latency_s
            w0 = time.monotonic()
            run.take_effect(a, reply, views[a], at, r)
            ends.append(at + run.board_s(w0))
        t = max(ends)  # the round lasts as long as its slowest reply and its board calls
        run.tick_leases(t, r)
        run.mode.tick(run, t, r)
    return rounds


def _async(run: _Run, faults: _BoardFaults) -> None:
    """Discrete-event schedule: (time, order, kind, agent) with kinds decide / act / tick.

    With LLM brains the decisions are taken one at a time (each measured), so the wall time of
    an asynchronous LLM run is the sum of its replies; its run time is what the schedule says."""
    queue: list[tuple[float, int, str, str]] = []
    pending: dict[str, tuple[Reply, View]] = {}
    n = 0

    def push(t: float, kind: str, agent: str = "") -> None:
        nonlocal n
        n += 1
        heapq.heappush(queue, (t, n, kind, agent))

    for a in run.team:
        push(0.0, "decide", a)
    tick_s = run.claim_ttl_s / 4
    push(tick_s, "tick")
    replies_max = run.spec.round_cap * run.spec.agents
    for _ in range(ASYNC_EVENTS_MAX):
        if run.done or run.replies >= replies_max or all(k == "tick" for *_, k, _a in queue):
            break  # finished, out of budget, or nobody left to act (all crashed)
        t, _, kind, agent = heapq.heappop(queue)
        run.tick_leases(t, 0)
        if kind == "tick":
            faults.step(run.replies // max(1, run.spec.agents), t)
            run.mode.tick(run, t, 0)
            push(t + tick_s, "tick")
            continue
        if not run.can_reply(agent, t):
            wake = run.wake_s(agent)
            if run.state[agent] != "stalled" or wake is None:
                continue  # crashed: its pending reply is lost with it
            if kind == "decide" and run.stalled_at.get(agent) == t:
                # The stall hits during this turn: the agent decides on what it sees now and
                # its reply hangs until it wakes (a zombie, which fencing exists to refuse).
                view = run.view(agent, t, 0)
                pending[agent] = (run.brains[agent].decide(view), view)
                kind = "act"
            push(wake, kind, agent)  # a frozen reply lands, or the agent asks, when it wakes
            continue
        w0 = time.monotonic()
        if kind == "decide":
            view = run.view(agent, t, 0)
            waited = run.board_s(w0)
            reply = run.brains[agent].decide(view)
            pending[agent] = (reply, view)
            push(t + waited + reply.latency_s, "act", agent)
        else:
            reply, view = pending.pop(agent)
            run.take_effect(agent, reply, view, t, 0)
            push(t + run.board_s(w0), "decide", agent)


FINAL_READ_ATTEMPTS = 5


def _end_run(log: EventLog, end_s: float, out_dir: Path | None, final: dict[str, Any],
             wall0: float, board_time: bool, *, board_s: float, board_max_s: float,
             **fields: Any) -> None:
    """The ``run_end`` event every harness logs (its own ``fields``, then the figures all
    share) and the run's ``final.json``."""
    log.emit(end_s, "run_end",
             data={**fields, "wall_s": round(time.monotonic() - wall0, 3),
                   "board_s": round(board_s, 4), "board_wait_max_s": round(board_max_s, 4),
                   "board_time": board_time, "version": code_version(),
                   "lost": len(final["lost"]), "lost_detail": final["lost"][:20]})
    if out_dir is not None:
        (out_dir / "final.json").write_text(json.dumps(final, indent=1, sort_keys=True))


def _final_state(run: _Run) -> dict[str, Any]:
    """Read the run back linearizably and check no acknowledged work was lost (retried: the
    board may still be electing a leader after the last heal)."""
    board = run.coordinator.board
    for attempt in range(FINAL_READ_ATTEMPTS):
        try:
            listing = board.list_many([f"{run.layout.run_prefix}tasks/",
                                       run.layout.files_prefix], limit=VIEW_KEYS_MAX)
            break
        except BoardError:
            if attempt == FINAL_READ_ATTEMPTS - 1:
                raise
    tasks = {e.key.rsplit("/", 1)[1]: e.value
             for e in listing.under(f"{run.layout.run_prefix}tasks/")}
    files = {e.key[len(run.layout.files_prefix):]: {"version": e.version, "author": e.author,
                                                     "value": e.value}
             for e in listing.under(run.layout.files_prefix)}
    lost: list[str] = []
    for ev in run.log.events:
        if ev.kind == "complete" and ev.task is not None:
            rec = tasks.get(ev.task)
            if not isinstance(rec, dict) or rec.get("status") != "done":
                lost.append(f"completion of {ev.task}")
        elif (ev.kind == "write" and ev.file is not None and ev.version is not None
              and files.get(ev.file, {}).get("version", 0) < ev.version):
            lost.append(f"write of {ev.file} v{ev.version}")
    return {"tasks": tasks, "files": files, "lost": lost}


def run_team(spec: RunSpec, project: Project, env: TeamEnv, out_dir: Path | None,
             job: str = "j0") -> RunRecord:
    """Run one team on the board; write ``events.jsonl`` and ``final.json`` to ``out_dir``.

    Raises only for a bad spec (unknown mode or profile), a board that cannot be reached at
    setup, or a final read-back that fails after the faults healed; everything during the run
    is an event."""
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
    log = EventLog(out_dir / "events.jsonl" if out_dir is not None else None)
    wall0 = time.monotonic()
    if spec.harness == "study":
        return _run_study(spec, project, env, out_dir, job, log, wall0)
    run = _Run(spec, project, env, log, job)
    faults = _BoardFaults(run)
    try:
        log.emit(0.0, "run_start", data={"spec": spec.model_dump(mode="json"),
                                         "project": project.name, "tasks": project.size,
                                         "critical_path": project.critical_path})
        run.setup()
        rounds = _rounds(run, faults) if spec.sync == "rounds" else 0
        if spec.sync == "async":
            _async(run, faults)
        faults.heal(_end_time(log.events), call_off=True)
        final = _final_state(run)
        ops = run.coordinator.ops + sum(a.ops for a in run.actors.values())
        _end_run(log, _end_time(log.events), out_dir, final, wall0, spec.board_time,
                 board_s=run.board_total_s, board_max_s=run.board_max_s,
                 success=run.done, tasks_done=len(run.completed), rounds=rounds, board_ops=ops)
    finally:
        faults.close(_end_time(log.events))
        for actor in run.actors.values():
            actor.release_all()
        for cache in [*run.caches.values(), getattr(run, "coordinator_view", None)]:
            if cache is not None:
                cache.close()
        log.close()
    return RunRecord(spec=spec, metrics=run_metrics(log.events),
                     out=out_dir.name if out_dir is not None else "", version=code_version())


def _end_time(events: list[RunEvent]) -> float:
    return max((e.t_s for e in events), default=0.0)


@dataclass
class _StudyHost:
    env: TeamEnv
    spec: RunSpec
    log: EventLog


def _run_study(spec: RunSpec, project: Project, env: TeamEnv, out_dir: Path | None, job: str,
               log: EventLog, wall0: float) -> RunRecord:
    """One run under the study's rules (:mod:`agents.study`) on the real board: rounds only,
    one board call per action, stalls, stragglers and board faults as in the board harness
    (they go beyond the study), the hybrid monitor reassigning a silent agent's tasks."""
    layout = Layout(root=env.root, run=f"{spec.run_id}-{uuid.uuid4().hex[:8]}",
                    policy="last-writer-wins")
    coordinator = env.board(f"{job}-coordinator")
    env.bind(layout, coordinator)  # binds <root>/r/: the run's records are last-writer-wins
    coordinator.put(f"{layout.run_prefix}meta", {"spec": spec.model_dump(mode="json"),
                                                 "project": project.name})
    setup_ops = 2
    team = tuple(f"a{i}" for i in range(spec.agents))
    names = {"harness": f"{job}-coordinator", **{a: f"{job}-{a}" for a in team}}
    store: Store = BoardStore(lambda agent: env.board(names[agent]), layout.run_prefix)
    brains = {a: env.brains(spec, i, a) for i, a in enumerate(team)}
    for brain in brains.values():  # an LLM agent reads the project, and its test runs' results
        bind = getattr(brain, "bind_study_run", None)
        if bind is not None:
            store = bind(project, store)
    faults = _BoardFaults(_StudyHost(env, spec, log))
    by_agent = {team[f.agent]: f for f in spec.faults if f.agent < spec.agents}
    state = dict.fromkeys(team, "up")
    stalled_at: dict[str, float] = {}
    silent_since: dict[str, float] = {}
    engine: StudyEngine

    def held(agent: str) -> list[str]:
        return sorted(t for t, r in engine.records().items()
                      if r["owner"] == agent and r["status"] == "in_progress")

    def stalled(agent: str, t_s: float) -> bool:
        f = by_agent.get(agent)
        if f is None or state[agent] == "crashed":
            return state[agent] == "crashed"
        if f.crash_at_s is not None and t_s >= f.crash_at_s:
            state[agent] = "crashed"
            silent_since[agent] = t_s
            log.emit(t_s, "crash", agent=agent, data={"tasks": held(agent)})
            return True
        if f.stall_at_s is not None and agent not in stalled_at and t_s >= f.stall_at_s \
                and held(agent):
            stalled_at[agent] = t_s
            silent_since[agent] = t_s
            state[agent] = "stalled"
            log.emit(t_s, "stall", agent=agent, data={"tasks": held(agent),
                                                      "stall_s": f.stall_s})
        if agent in stalled_at and t_s < stalled_at[agent] + f.stall_s:
            return True
        if state[agent] == "stalled":
            state[agent] = "up"
            silent_since.pop(agent, None)
            log.emit(t_s, "resume", agent=agent)
        return False

    def between_rounds(round_: int, t_s: float) -> None:
        faults.step(round_, t_s)
        if spec.mode != "hybrid":
            return
        silent = {a for a, since in silent_since.items() if t_s - since >= spec.claim_ttl_s}
        live = [a for a in team if a not in silent and state[a] == "up"]
        if not silent or not live:
            return
        recs = engine.records()
        load = {a: sum(1 for r in recs.values() if r["owner"] == a and r["status"] != "done")
                for a in live}
        for task_id, rec in sorted(recs.items()):
            if rec["owner"] in silent and rec["status"] != "done":
                to = min(live, key=lambda a: (load[a], a))
                load[to] += 1
                engine.reassign(task_id, to, t_s, round_)

    engine = StudyEngine(project=project, team=team, mode=spec.mode, store=store, brains=brains,
                         log=log, round_cap=spec.round_cap, seed=spec.seed,
                         board_time=spec.board_time, stalled=stalled,
                         between_rounds=between_rounds,
                         fixes=frozenset(f for f in spec.fix.split(",") if f),
                         claim_ttl_s=spec.claim_ttl_s)
    try:
        log.emit(0.0, "run_start", data={"spec": spec.model_dump(mode="json"),
                                         "project": project.name, "tasks": project.size,
                                         "critical_path": project.critical_path,
                                         "harness": "study"})
        engine.setup()
        rounds = engine.run()
        end_s = _end_time(log.events)
        faults.heal(end_s, call_off=True)
        final = _study_final(coordinator, layout, engine)
        _end_run(log, end_s, out_dir, final, wall0, spec.board_time,
                 board_s=engine.board_s, board_max_s=engine.board_max_s,
                 success=engine.done, rounds=rounds, harness="study",
                 tasks_done=sum(1 for r in engine.records().values() if r["status"] == "done"),
                 board_ops=setup_ops + store.ops, actions=engine.actions,
                 ignored=engine.ignored)
    finally:
        faults.close(_end_time(log.events))
        log.close()
    return RunRecord(spec=spec, metrics=run_metrics(log.events),
                     out=out_dir.name if out_dir is not None else "", version=code_version())


def _study_final(board: Board, layout: Layout, engine: StudyEngine) -> dict[str, Any]:
    """Read the run back linearizably (retried: the board may be electing a leader after the
    last heal) and check it holds every record the harness acknowledged."""
    for attempt in range(FINAL_READ_ATTEMPTS):
        try:
            entries = board.list(layout.run_prefix)
            break
        except BoardError:
            if attempt == FINAL_READ_ATTEMPTS - 1:
                raise
    tasks = {e.key.rsplit("/", 1)[1]: e.value for e in entries
             if e.key.startswith(f"{layout.run_prefix}tasks/")}
    files = {e.key[len(f"{layout.run_prefix}files/"):]: {"version": e.version, "author": e.author}
             for e in entries if e.key.startswith(f"{layout.run_prefix}files/")}
    lost = [f"task {t}" for t, rec in engine.records().items() if tasks.get(t) != rec]
    return {"tasks": tasks, "files": files, "lost": lost}
