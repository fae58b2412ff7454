"""A run's shared state on the blackboard, and one agent's hands and eyes on it.

Key layout under a sweep's ``root`` (every run of a sweep shares one cluster):

* ``<root>/r/<run>/tasks/<task>``  a task record: status, owner, assigned_by, fence, lease,
  dependencies, files. Every change is a compare-and-set on its version, so two agents cannot both
  move a task (the loser sees :class:`~consensus.StaleVersion`).
* ``<root>/r/<run>/claims/<task>``  the owner's claim (``Board.claim``): exclusive, with a fencing
  token that the owner passes to its writes and to the completion. Its lease is kept alive by
  every reply of the owner (a keepalive with each heartbeat).
* ``<root>/r/<run>/hb/<agent>``      the agent's heartbeat (run time of its last reply).
* ``<root>/r/<run>/msgs/<agent>/<n>`` messages.
* ``<root>/f/<policy>/<run>/<file>`` file artifacts, under the run's conflict policy (one
  binding per policy and sweep, not per run: the board bounds its number of bindings).

An :class:`Actor` executes one agent's actions through its own ``Board`` (its own session, so
retries are exactly-once) and logs every outcome as a :class:`~agents.events.RunEvent`. Its
:class:`ViewCache` follows the run by *watching* the sweep's keys: before a decision the cache
catches up to the revision the runner names (a commit the agent must see), never re-reading the
board.

Taking a task over from an owner that went quiet goes through the board's own guarantees: the
taker (an agent, the lead, or the hybrid monitor) judges staleness from the owner's heartbeat in
*run* time with a linearizable read, moves the task record by compare-and-set, and then claims
the task once the owner's lease has expired *on the board* (the board lets no agent revoke
another's lease, and expiry enters through the log). The owner's later writes carry its old
fencing token and are refused. For simulated brains, run time is virtual and a sweep runs much
faster than real time, so their leases are short in real time (``sim_lease_ttl_s``) and only a
stalled owner, which stops its keepalives, lets one lapse.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from quorumboard.agents.team.actions import (
    Action,
    Assign,
    ClaimTask,
    CompleteTask,
    FileView,
    Idle,
    Message,
    TaskView,
    View,
    WriteFile,
)
from quorumboard.agents.team.events import EventLog
from quorumboard.agents.team.tasks import Project
from quorumboard.consensus import (
    Board,
    BoardError,
    Claim,
    ClaimHeld,
    Entry,
    Event,
    FencedOut,
    NotFound,
    OutcomeUnknown,
    PolicyRejected,
    RevisionCompacted,
    StaleVersion,
    Unavailable,
    WatchCancelled,
)

__all__ = ["Actor", "Layout", "ViewCache"]

CLAIM_WAIT_SLICE_S = 0.05
CLAIM_WAIT_EXTRA_S = 5.0
"""A taker waits at most the lease TTL plus this for a stale owner's lease to expire."""
MESSAGES_IN_VIEW_MAX = 20
WATCH_IDLE_S = 1.0
"""A watch that delivers no event for this long while the cache waits for a revision is
restarted from its cursor, after a linearizable read has moved the agent's connection to the
current leader (a watch on a replica that was partitioned away would otherwise wait for the
heal). Bounded by ``CATCH_UP_S``."""
CATCH_UP_S = 30.0
VIEW_KEYS_MAX = 100_000
"""Keys a rebuilt view may hold (the board's largest read): a run's tasks, claims, heartbeats,
messages and files. A run past it gets a clear InvalidCommand, not a silently cut view."""
EVENTS_PER_CATCH_UP_MAX = 1_000_000


@dataclass(frozen=True)
class Layout:
    """Where a run's keys live (see the module docstring)."""

    root: str
    run: str
    policy: str

    @property
    def watch_prefix(self) -> str:
        return f"{self.root}/"

    @property
    def run_prefix(self) -> str:
        return f"{self.root}/r/{self.run}/"

    @property
    def policy_prefix(self) -> str:
        return f"{self.root}/f/{self.policy}/"

    @property
    def files_prefix(self) -> str:
        return f"{self.policy_prefix}{self.run}/"

    def task(self, task_id: str) -> str:
        return f"{self.run_prefix}tasks/{task_id}"

    def claim(self, task_id: str) -> str:
        return f"{self.run_prefix}claims/{task_id}"

    def heartbeat(self, agent: str) -> str:
        return f"{self.run_prefix}hb/{agent}"

    def message(self, agent: str, n: int) -> str:
        return f"{self.run_prefix}msgs/{agent}/{n:06d}"

    def file(self, name: str) -> str:
        return f"{self.files_prefix}{name}"


def task_record(project: Project, task_id: str, **fields: Any) -> dict[str, Any]:
    t = project.task(task_id)
    rec: dict[str, Any] = {"status": "pending", "owner": None, "assigned_by": None,
                           "fence": None, "lease": None, "title": t.title,
                           "dependencies": list(t.dependencies), "files": list(t.files)}
    rec.update(fields)
    return rec


@dataclass
class ViewCache:
    """One agent's picture of the run, maintained from a watch of the sweep's keys."""

    board: Board
    layout: Layout
    start_revision: int
    tasks: dict[str, dict[str, Any]] = field(default_factory=dict)
    files: dict[str, FileView] = field(default_factory=dict)
    heartbeats: dict[str, float] = field(default_factory=dict)
    messages: list[tuple[str, str, str | None]] = field(default_factory=list)
    revision: int = 0
    _stream: Iterator[Event] | None = None

    def _apply(self, ev: Event) -> None:
        self.revision = max(self.revision, ev.revision)
        self._set(ev.key, ev.entry if ev.kind == "put" else None)

    def _set(self, key: str, entry: Entry | None) -> None:
        """Record ``key``'s current entry (None: deleted) in the view."""
        lay = self.layout
        value = entry.value if entry is not None else None
        if key.startswith(lay.files_prefix):
            name = key[len(lay.files_prefix):]
            if entry is None or not isinstance(value, dict):
                self.files.pop(name, None)
            else:
                self.files[name] = FileView(file=name, version=entry.version,
                                            author=str(value.get("author", entry.author)),
                                            passes=bool(value.get("passes", False)))
            return
        if not key.startswith(lay.run_prefix) or entry is None or not isinstance(value, dict):
            return
        kind, _, rest = key[len(lay.run_prefix):].partition("/")
        if kind == "tasks":
            self.tasks[rest] = dict(value, _version=entry.version)
        elif kind == "hb":
            self.heartbeats[rest] = float(value.get("t_s", 0.0))
        elif kind == "msgs":
            self.messages.append((rest.partition("/")[0], str(value.get("text", "")),
                                  value.get("to")))
            del self.messages[:-MESSAGES_IN_VIEW_MAX * 8]

    def _resync(self) -> None:
        """The watch's start was compacted away: rebuild the view from one read of both
        prefixes at one revision and watch on from there. (Two separate lists would resume the
        watch at the later one's revision and never see a change under the first prefix
        committed between them.)"""
        listing = self.board.list_many([self.layout.run_prefix, self.layout.files_prefix],
                                       limit=VIEW_KEYS_MAX)
        self.tasks.clear()
        self.files.clear()
        self.heartbeats.clear()
        self.messages.clear()
        for entry in listing.entries:
            self._set(entry.key, entry)
        self.revision = max(self.revision, listing.revision)

    def catch_up(self, revision: int) -> None:
        """Consume watch events until this cache has seen ``revision`` (a commit of this run).

        Raises :class:`~consensus.Unavailable` if the board cannot deliver it within
        ``CATCH_UP_S`` (the watch itself survives replica failures)."""
        deadline = time.monotonic() + CATCH_UP_S
        for _ in range(EVENTS_PER_CATCH_UP_MAX):
            if self.revision >= revision:
                return
            if time.monotonic() > deadline:
                break
            if self._stream is None:
                start = self.revision + 1 if self.revision else self.start_revision
                self._stream = self.board.watch(self.layout.watch_prefix, start,
                                                idle_timeout_s=WATCH_IDLE_S)
            try:
                ev = next(self._stream, None)
            except RevisionCompacted:
                self._stream = None
                self._resync()
                continue
            except WatchCancelled:  # this agent fell a whole watch buffer behind while it
                self._stream = None  # thought: every event before the cut was applied, so
                continue  # the watch restarts from this cache's revision, gap-free
            if ev is not None and ev.value_dropped:  # resumed past the retained values: the
                self._stream = None  # event says what changed but not to what, so read the
                self._resync()  # board as after a compaction
                continue
            if ev is None:  # no event in WATCH_IDLE_S: find the leader, restart at the cursor
                self._stream = None
                with contextlib.suppress(BoardError):  # a board fault: try again until deadline
                    self.board.get(f"{self.layout.run_prefix}meta")
                continue
            self._apply(ev)
        raise Unavailable(f"watch did not reach revision {revision} in {CATCH_UP_S:.0f}s")

    def close(self) -> None:
        if self._stream is not None:
            close = getattr(self._stream, "close", None)
            if close is not None:
                close()
            self._stream = None

    def view(self, agent: str, team: tuple[str, ...], mode: str, round_: int, now_s: float,
             claim_ttl_s: float, project: Project, self_claiming: bool) -> View:
        tasks = []
        for t in project.tasks:
            rec = self.tasks.get(t.id, {})
            tasks.append(TaskView(id=t.id, title=t.title, description=t.description,
                                  status=rec.get("status", "pending"), owner=rec.get("owner"),
                                  assigned_by=rec.get("assigned_by"),
                                  dependencies=t.dependencies, files=t.files,
                                  fence=rec.get("fence")))
        mine = [f"{src}: {text}" for src, text, to in self.messages if to in (None, agent)]
        stale = tuple(a for a in team
                      if now_s - self.heartbeats.get(a, 0.0) > claim_ttl_s)
        return View(agent=agent, team=team, round=round_, time_s=now_s, mode=mode,
                    self_claiming=self_claiming,
                    tasks=tuple(tasks), files=tuple(sorted(self.files.values(),
                                                           key=lambda f: f.file)),
                    messages=tuple(mine[-MESSAGES_IN_VIEW_MAX:]), stale_owners=stale)


class Actor:
    """One agent's (or the coordinator's) operations on the run, each logged as events.

    Every method returns normally: board refusals and failures become events (a refused claim,
    a rejected write, a ``board_error``), because an agent's turn must never crash the run.

    A claim this actor lost (its lease lapsed, or a write came back fenced out) is kept as a
    tombstone: later writes still carry its old fence and are refused, instead of going out
    unfenced. Only a successful re-claim replaces it.
    """

    def __init__(self, name: str, board: Board, layout: Layout, project: Project,
                 log: EventLog, *, team: tuple[str, ...], claim_ttl_s: float,
                 lease_ttl_s: float, wait_for_lease: bool, may_assign: bool) -> None:
        self.name = name
        self.board = board
        self.layout = layout
        self.project = project
        self.log = log
        self.team = team
        self.claim_ttl_s = claim_ttl_s
        self.lease_ttl_s = lease_ttl_s
        self.wait_for_lease = wait_for_lease
        self.may_assign = may_assign
        self.claims: dict[str, Claim] = {}
        self.lost: set[str] = set()
        """Tasks whose claim (still in ``claims``, as a tombstone) is known to be gone."""
        self.completed: set[str] = set()
        """Tasks this actor completed (acknowledged by the board)."""
        self.ops = 0
        self.last_revision = 0
        self._messages_sent = 0
        self._tasks = {t.id for t in project.tasks}
        self._files = {f: t.id for t in project.tasks for f in t.files}

    # ----------------------------------------------------------------------------- plumbing

    def _put(self, key: str, value: Any, **kwargs: Any) -> int:
        self.ops += 1
        entry = self.board.put(key, value, **kwargs)
        self.last_revision = max(self.last_revision, entry.mod_revision)
        return entry.version

    def _get(self, key: str) -> tuple[dict[str, Any], int] | None:
        self.ops += 1
        entry = self.board.get(key)
        if entry is None or not isinstance(entry.value, dict):
            return None
        return dict(entry.value), entry.version

    def _task(self, task_id: str) -> tuple[dict[str, Any], int]:
        got = self._get(self.layout.task(task_id))
        if got is None:
            raise NotFound(f"task {task_id} has no record")
        return got

    def _stale(self, agent: str, now_s: float) -> bool:
        """Linearizable check that ``agent``'s last heartbeat is older than the claim TTL."""
        got = self._get(self.layout.heartbeat(agent))
        last = float(got[0].get("t_s", 0.0)) if got else 0.0
        return now_s - last > self.claim_ttl_s

    def _lose(self, task_id: str, t_s: float, round_: int, why: str) -> None:
        if task_id in self.claims and task_id not in self.lost:
            self.lost.add(task_id)
            self.log.emit(t_s, "claim_lost", agent=self.name, round=round_, task=task_id,
                          reason=why)

    def _claim_key(self, task_id: str, wait: bool) -> Claim | None:
        """Claim the task's key. With ``wait`` (the holder is known silent) and real-time
        leases, poll until its lease expires on the board: at most the lease TTL plus
        ``CLAIM_WAIT_EXTRA_S``. In virtual time the harness has already ended it. None: held."""
        budget_s = self.lease_ttl_s + CLAIM_WAIT_EXTRA_S if wait and self.wait_for_lease else 0.0
        deadline = time.monotonic() + budget_s
        for _ in range(int(budget_s / CLAIM_WAIT_SLICE_S) + 1):
            try:
                self.ops += 1
                return self.board.claim(self.layout.claim(task_id), ttl=self.lease_ttl_s,
                                        value=self.name)
            except ClaimHeld:
                if time.monotonic() >= deadline:
                    return None
            time.sleep(CLAIM_WAIT_SLICE_S)  # waiting on the board's clock, not a condition here
        return None

    def _take(self, task_id: str, rec: dict[str, Any], version: int, wait: bool) -> Claim | str:
        """Claim ``task_id`` and record this agent as its owner with the claim's fence (a
        compare-and-set on the record read at ``version``). Returns the claim, or why not."""
        claim = self._claim_key(task_id, wait)
        if claim is None:
            return "claim"
        try:
            self._put(self.layout.task(task_id),
                      dict(rec, status="claimed", owner=self.name, fence=claim.fence,
                           lease=claim.lease), expect_version=version)
        except StaleVersion:
            self._release(claim)
            return "raced"
        except BoardError:
            self._release(claim)  # best effort: an unknown outcome would hold the task forever
            raise
        self.claims[task_id] = claim
        self.lost.discard(task_id)
        return claim

    def _release(self, claim: Claim) -> None:
        with contextlib.suppress(BoardError):
            self.ops += 1
            self.board.release(claim)

    # ------------------------------------------------------------------------------ actions

    def execute(self, action: Action, t_s: float, round_: int, view: View | None = None) -> None:
        """Carry out one action decided on ``view``, logging what happened."""
        ev: dict[str, Any] = {"agent": self.name, "round": round_}
        try:
            if isinstance(action, ClaimTask):
                self.claim(action.task, t_s, round_)
            elif isinstance(action, WriteFile):
                seen = view.file(action.file) if view is not None else None
                self.write(action, t_s, round_, seen.version if seen is not None else 0)
            elif isinstance(action, CompleteTask):
                self.complete(action.task, t_s, round_)
            elif isinstance(action, Assign):
                self.assign(action.task, action.agent, t_s, round_)
            elif isinstance(action, Message):
                self._messages_sent += 1
                self._put(self.layout.message(self.name, self._messages_sent),
                          {"text": action.text, "to": action.to, "t_s": t_s}, expect_version=0)
                self.log.emit(t_s, "message", target=action.to, **ev)
            elif isinstance(action, Idle):
                self.log.emit(t_s, "idle", reason=action.reason or "idle", **ev)
        except BoardError as exc:
            self.log.emit(t_s, "board_error", reason=type(exc).__name__,
                          task=getattr(action, "task", None),
                          data={"message": str(exc)[:300]}, **ev)

    def heartbeat(self, t_s: float, round_: int = 0) -> None:
        """Record this agent's run time as seen and keep its claims' leases alive. A lease that
        already ended (expired, or ended by the harness for a silent agent) is a lost claim."""
        try:
            self._put(self.layout.heartbeat(self.name), {"t_s": t_s})
            for task_id, claim in list(self.claims.items()):
                if task_id in self.lost:
                    continue
                try:
                    self.ops += 1
                    self.board.keepalive(claim)
                except NotFound:
                    self._lose(task_id, t_s, round_, "lease ended")
        except BoardError as exc:
            self.log.emit(t_s, "board_error", agent=self.name, reason=type(exc).__name__,
                          data={"message": f"heartbeat: {str(exc)[:200]}"})

    def expire(self, t_s: float, round_: int) -> None:
        """End this silent agent's claims (run time past its last heartbeat + claim TTL).

        Simulated runs keep virtual time, so the harness plays the board's lease clock: it ends
        the leases through the agent's *own* session (the board lets no one else), the same log
        entry the board's expiry would commit, at the same run time for the same seed."""
        tasks = sorted(t for t in self.claims if t not in self.lost)
        for task_id in tasks:
            self._release(self.claims[task_id])
            self.lost.add(task_id)
        if tasks:
            self.log.emit(t_s, "expired", agent=self.name, round=round_, data={"tasks": tasks})

    def claim(self, task_id: str, t_s: float, round_: int) -> None:
        ev: dict[str, Any] = {"agent": self.name, "round": round_, "task": task_id}
        if task_id not in self._tasks:
            self.log.emit(t_s, "invalid", reason=f"no task {task_id}", **ev)
            return
        rec, version = self._task(task_id)
        if rec["status"] == "claimed" and rec["owner"] == self.name:
            if task_id in self.claims and task_id not in self.lost:
                self.log.emit(t_s, "invalid", reason="task is already mine", **ev)
            else:  # the record says mine, but the claim lapsed: take it again if free
                self._retake(task_id, rec, version, t_s, round_)
            return
        if rec["status"] == "done":
            self.log.emit(t_s, "invalid", reason="task is done", **ev)
            return
        if self._blocked(rec, t_s, ev):
            return
        owner = rec["owner"]
        takeover = False
        if owner not in (None, self.name):
            if not self._stale(owner, t_s):
                self.log.emit(t_s, "claim_held", target=owner, reason=rec["status"], **ev)
                return
            takeover = rec["status"] == "claimed"
        # Assigned to me after a takeover, or taking over: the old lease may still be running.
        got = self._take(task_id, rec, version, wait=takeover or owner == self.name)
        if isinstance(got, str):
            self.log.emit(t_s, "claim_held", target=owner, reason=got, **ev)
            return
        if takeover:
            self.log.emit(t_s, "takeover", target=owner, **ev)
        self.log.emit(t_s, "claim", fence=got.fence, **ev)

    def _blocked(self, rec: dict[str, Any], t_s: float, ev: dict[str, Any]) -> bool:
        for dep in rec["dependencies"]:
            if self._task(dep)[0]["status"] != "done":
                self.log.emit(t_s, "claim_blocked", target=dep, **ev)
                return True
        return False

    def _retake(self, task_id: str, rec: dict[str, Any], version: int, t_s: float,
                round_: int) -> Claim | None:
        """The record still names this agent but its claim is gone (a lapsed lease, a board
        fault longer than the lease): claim the key again, if nobody else did."""
        got = self._take(task_id, rec, version, wait=False)
        if isinstance(got, str):
            self._lose(task_id, t_s, round_, f"re-claim failed ({got})")
            return None
        self.log.emit(t_s, "claim", agent=self.name, round=round_, task=task_id,
                      fence=got.fence, reason="re-claim")
        return got

    def write(self, action: WriteFile, t_s: float, round_: int, base: int) -> None:
        """Write a file; ``base`` is its version in the writer's view (0: absent), which is
        the ``expect_version`` under reject-stale and the measure of lost updates otherwise."""
        ev: dict[str, Any] = {"agent": self.name, "round": round_, "file": action.file,
                              "task": action.task}
        owner_task = self._files.get(action.file)
        if owner_task is None:
            self.log.emit(t_s, "invalid", reason=f"no file {action.file} in the project", **ev)
            return
        kwargs: dict[str, Any] = {}
        if self.layout.policy == "reject-stale":
            kwargs["expect_version"] = base
        claim = self.claims.get(owner_task)
        if claim is not None:
            kwargs["fence"] = claim
        value = {"content": action.content, "task": action.task, "author": self.name,
                 "passes": action.passes}
        try:
            version = self._put(self.layout.file(action.file), value, **kwargs)
        except StaleVersion:
            self.log.emit(t_s, "write_rejected", reason="stale", base_version=base, **ev)
            return
        except FencedOut:
            self.log.emit(t_s, "write_rejected", reason="fenced", base_version=base, **ev)
            self._lose(owner_task, t_s, round_, "fenced out")
            return
        except PolicyRejected as exc:
            self.log.emit(t_s, "write_rejected", reason="policy", base_version=base,
                          data={"message": str(exc)[:200]}, **ev)
            return
        self.log.emit(t_s, "write", version=version, base_version=base, passes=action.passes,
                      **ev)

    def complete(self, task_id: str, t_s: float, round_: int) -> None:
        """Mark a task done: it must be this agent's (claimed, or assigned to it and ready, in
        which case it is claimed now), and each of its files must hold a passing write. The
        write of ``done`` is fenced by the claim and compare-and-set on the record."""
        ev: dict[str, Any] = {"agent": self.name, "round": round_, "task": task_id}
        if task_id not in self._tasks:
            self.log.emit(t_s, "invalid", reason=f"no task {task_id}", **ev)
            return
        rec, version = self._task(task_id)
        if rec["owner"] != self.name or rec["status"] == "done":
            self.log.emit(t_s, "complete_refused", reason="not-owner", **ev)
            return
        claim: Claim | None = None
        rewritten = True  # taking the claim now rewrites the record: read it again below
        if rec["status"] == "pending":  # assigned to me (preassign, lead): claim it first
            if self._blocked(rec, t_s, ev):
                return
            got = self._take(task_id, rec, version, wait=True)
            if isinstance(got, str):
                self.log.emit(t_s, "claim_held", reason=got, **ev)
                return
            self.log.emit(t_s, "claim", fence=got.fence, **ev)
            claim = got
        elif task_id not in self.claims or task_id in self.lost:
            claim = self._retake(task_id, rec, version, t_s, round_)
            if claim is None:
                self.log.emit(t_s, "complete_refused", reason="not-owner", **ev)
                return
        else:
            claim, rewritten = self.claims[task_id], False
        if rewritten:
            rec, version = self._task(task_id)
        for name in rec["files"]:
            got_file = self._get(self.layout.file(name))
            if got_file is None or not got_file[0].get("passes"):
                self.log.emit(t_s, "complete_refused", reason="no-passing-write", file=name,
                              **ev)
                return
        try:
            self._put(self.layout.task(task_id), dict(rec, status="done"),
                      expect_version=version, fence=claim)
        except FencedOut:
            self.log.emit(t_s, "complete_refused", reason="fenced", **ev)
            self._lose(task_id, t_s, round_, "fenced out")
            return
        except StaleVersion:
            self.log.emit(t_s, "complete_refused", reason="stale", **ev)
            return
        except OutcomeUnknown:
            # It may have committed: the record says (linearizably) whether it did.
            after, _ = self._task(task_id)
            if not (after["status"] == "done" and after.get("fence") == claim.fence):
                raise
        self.claims.pop(task_id, None)
        self.completed.add(task_id)
        self.log.emit(t_s, "complete", fence=claim.fence, **ev)
        self._release(claim)

    def assign(self, task_id: str, worker: str, t_s: float, round_: int) -> None:
        """Reserve a task for ``worker`` (the coordinator, a lead, the hybrid monitor). A
        task held by a silent owner is taken back first (the new owner's claim waits for the
        old lease to end)."""
        ev: dict[str, Any] = {"agent": self.name, "round": round_, "task": task_id}
        problem = (f"no task {task_id}" if task_id not in self._tasks
                   else f"{self.name} may not assign tasks" if not self.may_assign
                   else f"no agent {worker} in the team" if worker not in self.team else None)
        if problem is not None:
            self.log.emit(t_s, "invalid", reason=problem, **ev)
            return
        rec, version = self._task(task_id)
        if rec["status"] == "done":
            self.log.emit(t_s, "invalid", reason="task is done", **ev)
            return
        previous = rec["owner"]
        if rec["status"] == "claimed" and (previous == worker or not self._stale(previous, t_s)):
            self.log.emit(t_s, "invalid", reason=f"task is held by {previous}", **ev)
            return
        try:
            self._put(self.layout.task(task_id),
                      dict(rec, status="pending", owner=worker, assigned_by=self.name,
                           fence=None, lease=None), expect_version=version)
        except StaleVersion:
            self.log.emit(t_s, "invalid", reason="task changed meanwhile", **ev)
            return
        if previous not in (None, worker):
            self.log.emit(t_s, "takeover", target=previous, **ev)
        self.log.emit(t_s, "assign", target=worker, **ev)

    def release_all(self) -> None:
        for task_id, claim in list(self.claims.items()):
            if task_id not in self.lost:
                self._release(claim)
        self.claims.clear()
