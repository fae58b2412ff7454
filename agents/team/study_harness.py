"""The study's own harness rules (``--harness study``), on the real replicated board.

The study's orchestrator (notes/paper-calibration.md §1) is not this toolkit's ``board``
harness: it has no leases, fences or file checks, and its rules decide its outcomes (a
pre-assigned agent may mark its whole dealt list done in one reply). This module replays those
rules exactly, so simulated teams can be compared with the study's cell for cell:

* synchronous rounds; every agent sees the board as the round starts, and every agent replies
  every round (messages = n x rounds);
* replies take effect one at a time, fastest first, each on the board as earlier replies of the
  round left it;
* inside a reply, actions run grouped by kind: **all edits, then all claims, then all
  completions, then at most one test run** (then a lead's assignments);
* a claim *matches* a task that is (unowned and pending) or (mine and assigned); a match whose
  dependencies are not all done is refused (``claim_blocked``); no match (held by another, in
  progress, done, unknown) is **silently ignored: no event**; no limit on claims or tasks held;
* a completion checks **ownership only** (no status, dependency or file check); completing a done
  task again is logged again (``complete`` with reason ``repeat``); a non-owner's is ignored;
* edits: any path, by anyone, last writer wins; no lock contention; no chat messages;
* a test run blocks the harness (replies that arrive meanwhile wait) and adds its time to the
  round;
* the run ends after a round in which all tasks are done, or at the round cap;
* pre-assignment deals the tasks like the study's script (:func:`study_deal`).

Every action is exactly **one board call** (a granted claim or a completion: a compare-and-set
put of the task record; an edit: a put of the file; a refused or ignored claim or completion: a
linearizable get of the record that decides it; a test run: a list of the run's files), plus one
list per round for the round-start view: ``run_end`` records the counts. Decisions are made on
the harness's copy of the run's records, which is exact because replies apply one at a time
through it; every put carries the version the copy expects, so a divergence would surface as a
refused write, never pass silently.

**Fixes** (``--fix``, the ablation: :data:`FIXES`): each replaces one of the study's rules with
the one a correct system enforces, everything else unchanged:

* ``completion-deps``: a completion needs the task's dependencies done before the reply's
  completions run (refused: ``complete_refused`` reason ``deps``). Decentralized agents already
  obey it (a claim needs the dependencies done); it changes pre-assignment;
* ``reject-stale-files``: a write is a compare-and-set on the version the agent saw at round
  start (its own earlier writes in the reply included), decided by the board; a refused one is
  ``write_rejected`` reason ``stale`` and is reported to the agent next round;
* ``fenced-claims``: a held task (claimed, or dealt) is a lease its holder renews by replying;
  silent past the claim TTL (run time), the holder loses it (``expired``; the task is pending
  and unowned again) and a completion by a holder that lost it is refused (``complete_refused``
  reason ``fenced``) and reported. Leases run in the run's simulated time, so they are kept by
  the harness and their ends written through the board (a board lease runs on the cluster's
  clock, which simulated replies do not advance);
* ``claim-feedback``: a claim on a task another agent holds is refused out loud
  (``claim_held``) and reported to the claimant instead of ignored.

The rules are written once, against :class:`Store`: :class:`BoardStore` is the real board,
:class:`MemoryStore` the same records in a dict (the calibration fits and re-measures brains on
it, thousands of runs a minute; a test checks both give the same events for a seed).
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from quorumboard.agents.team.actions import (
    Assign,
    ClaimTask,
    CompleteTask,
    Feedback,
    FileView,
    Reply,
    TaskStatus,
    TaskView,
    View,
    WriteFile,
)
from quorumboard.agents.team.events import EventLog, RunEvent
from quorumboard.agents.team.tasks import Project, Task
from quorumboard.consensus import StaleVersion

__all__ = ["FIXES", "STUDY_MODES", "BoardStore", "MemoryStore", "ReplyStats", "Store", "StudyEngine",
           "parse_fixes", "reply_stats", "study_deal"]

STUDY_MODES = ("preassign", "decentralized")
"""Modes the study released data for; ``lead`` and ``hybrid`` run under these rules but have
no study data to compare with."""

FIXES = ("completion-deps", "reject-stale-files", "fenced-claims", "claim-feedback")
"""The study rules the ablation can replace, one at a time or together (see the module doc)."""


def parse_fixes(text: str) -> str:
    """``"claim-feedback,completion-deps"`` -> the canonical rule set (sorted, deduplicated,
    comma-joined; ``"all"`` = every fix; ``""`` = the study's rules). Raises ``ValueError``
    naming an unknown rule."""
    names = {x.strip() for x in text.split(",") if x.strip()}
    if "all" in names:
        names = (names - {"all"}) | set(FIXES)
    unknown = sorted(names - set(FIXES))
    if unknown:
        raise ValueError(f"--fix {', '.join(unknown)}: unknown rule (rules: {', '.join(FIXES)}"
                         ", or all)")
    return ",".join(f for f in FIXES if f in names)


TEST_S_P50 = 0.38
TEST_S_P90 = 0.75
"""A test run's duration (pytest on the whole repo): the study's median 0.34-0.42 s and p90
0.7-0.8 s (§5), as a log-normal through these two quantiles."""
_Z90 = 1.2815515655446004


def study_deal(project: Project, team: Sequence[str]) -> dict[str, str]:
    """The study's pre-assignment (run_amdahl_experiment.py:74-118): tasks in topological
    order by depth-first search in file order; a task with dependencies goes to the owner of
    its *last listed* dependency; roots are dealt round-robin (the counter moves on roots
    only)."""
    by_id = {t.id: t for t in project.tasks}
    order: list[Task] = []
    seen: set[str] = set()

    def visit(task: Task) -> None:  # depth bounded by the project's size (<= TASKS_MAX)
        if task.id in seen:
            return
        seen.add(task.id)
        for dep in task.dependencies:
            visit(by_id[dep])
        order.append(task)

    for task in project.tasks:
        visit(task)
    owner: dict[str, str] = {}
    dealt = 0
    for task in order:
        if task.dependencies:
            owner[task.id] = owner[task.dependencies[-1]]
        else:
            owner[task.id] = team[dealt % len(team)]
            dealt += 1
    return owner


# ---------------------------------------------------------------------------------- stores


class Store(Protocol):
    """Where a study run's records live. Each method is one board call (counted in ``ops``)."""

    ops: int

    def snapshot(self) -> tuple[dict[str, tuple[dict[str, Any], int]],
                                dict[str, tuple[str, int]]]:
        """Task id -> (record, version); file path -> (author, version)."""
        ...

    def put_task(self, agent: str, task_id: str, rec: dict[str, Any], expect: int) -> int:
        """Compare-and-set the task record at version ``expect``; returns the new version."""
        ...

    def read_task(self, agent: str, task_id: str) -> dict[str, Any] | None: ...

    def put_file(self, agent: str, path: str, content: str,
                 expect: int | None = None) -> int | None:
        """Write the file (last writer wins), or compare-and-set at version ``expect`` (0:
        absent); returns the new version, None when the compare-and-set was refused."""
        ...

    def files(self, agent: str) -> dict[str, tuple[str, int]]: ...


@dataclass
class MemoryStore:
    """The run's records in a dict: the same rules without a board (calibration)."""

    ops: int = 0
    tasks: dict[str, tuple[dict[str, Any], int]] = field(default_factory=dict)
    file_map: dict[str, tuple[str, int]] = field(default_factory=dict)

    def snapshot(self) -> tuple[dict[str, tuple[dict[str, Any], int]],
                                dict[str, tuple[str, int]]]:
        self.ops += 1
        return dict(self.tasks), dict(self.file_map)

    def put_task(self, agent: str, task_id: str, rec: dict[str, Any], expect: int) -> int:
        self.ops += 1
        version = self.tasks.get(task_id, ({}, 0))[1]
        if version != expect:
            raise RuntimeError(f"task {task_id} at version {version}, expected {expect}")
        self.tasks[task_id] = (dict(rec), version + 1)
        return version + 1

    def read_task(self, agent: str, task_id: str) -> dict[str, Any] | None:
        self.ops += 1
        got = self.tasks.get(task_id)
        return dict(got[0]) if got else None

    def put_file(self, agent: str, path: str, content: str,
                 expect: int | None = None) -> int | None:
        self.ops += 1
        current = self.file_map.get(path, ("", 0))[1]
        if expect is not None and expect != current:
            return None
        self.file_map[path] = (agent, current + 1)
        return current + 1

    def files(self, agent: str) -> dict[str, tuple[str, int]]:
        self.ops += 1
        return dict(self.file_map)


class BoardLike(Protocol):
    """What :class:`BoardStore` uses of :class:`~consensus.Board`."""

    def put(self, key: str, value: Any, *, expect_version: int | None = None) -> Any: ...
    """Raises :class:`~quorumboard.consensus.StaleVersion` when ``expect_version`` is not
    the key's version."""

    def get(self, key: str) -> Any: ...

    def list(self, prefix: str = "") -> Any: ...


class BoardStore:
    """The run's records on the replicated board under ``prefix`` (``tasks/<id>``,
    ``files/<path>``; bound to last-writer-wins by the caller), each agent through its own
    connection (``boards(agent)``: its own session and author name)."""

    def __init__(self, boards: Callable[[str], BoardLike], prefix: str) -> None:
        self.boards = boards
        self.prefix = prefix
        self.ops = 0

    def _task_key(self, task_id: str) -> str:
        return f"{self.prefix}tasks/{task_id}"

    def _file_key(self, path: str) -> str:
        return f"{self.prefix}files/{path}"

    def snapshot(self) -> tuple[dict[str, tuple[dict[str, Any], int]],
                                dict[str, tuple[str, int]]]:
        self.ops += 1
        tasks: dict[str, tuple[dict[str, Any], int]] = {}
        files: dict[str, tuple[str, int]] = {}
        for e in self.boards("harness").list(self.prefix):
            kind, _, rest = e.key[len(self.prefix):].partition("/")
            if kind == "tasks" and isinstance(e.value, dict):
                tasks[rest] = (dict(e.value), int(e.version))
            elif kind == "files":
                files[rest] = (str(e.author), int(e.version))
        return tasks, files

    def put_task(self, agent: str, task_id: str, rec: dict[str, Any], expect: int) -> int:
        self.ops += 1
        entry = self.boards(agent).put(self._task_key(task_id), rec, expect_version=expect)
        return int(entry.version)

    def read_task(self, agent: str, task_id: str) -> dict[str, Any] | None:
        self.ops += 1
        entry = self.boards(agent).get(self._task_key(task_id))
        return dict(entry.value) if entry is not None and isinstance(entry.value, dict) else None

    def put_file(self, agent: str, path: str, content: str,
                 expect: int | None = None) -> int | None:
        self.ops += 1
        try:
            return int(self.boards(agent).put(self._file_key(path), {"content": content},
                                              expect_version=expect).version)
        except StaleVersion:
            return None

    def files(self, agent: str) -> dict[str, tuple[str, int]]:
        self.ops += 1
        return {e.key[len(self.prefix) + len("files/"):]: (str(e.author), int(e.version))
                for e in self.boards(agent).list(f"{self.prefix}files/")}


# ---------------------------------------------------------------------------------- engine


_VIEW_STATUS: dict[str, TaskStatus] = {"pending": "pending", "assigned": "pending", "in_progress": "claimed",
                "done": "done"}


def _valid_path(path: str) -> str | None:
    """The study strips a leading ``repo/``; a path the board cannot key is refused."""
    if path.startswith("repo/"):
        path = path[len("repo/"):]
    parts = path.split("/")
    if not path or any(p in ("", ".", "..") for p in parts) or len(path) > 200:
        return None
    return path


class Clock(Protocol):
    """Wall time in seconds (``time.monotonic``), for the board waits the engine measures."""

    def __call__(self) -> float: ...


@dataclass
class StudyEngine:
    """One run under the study's rules. ``brains`` decide on :class:`View` s (any
    :class:`~agents.simbrain.Brain`); ``stalled(agent, t_s)`` says whether an agent's fault keeps
    it from replying at run time ``t_s``; ``between_rounds(round, t_s)`` runs the board-fault
    schedule. ``board_time``: add each reply's measured board wait to run time."""

    project: Project
    team: tuple[str, ...]
    mode: str
    store: Store
    brains: Mapping[str, Any]
    log: EventLog
    round_cap: int = 60
    seed: int = 0
    board_time: bool = False
    stalled: Callable[[str, float], bool] = lambda agent, t_s: False
    between_rounds: Callable[[int, float], None] = lambda round_, t_s: None
    clock: Clock = time.monotonic
    fixes: frozenset[str] = frozenset()
    """Study rules replaced by a correct one (:data:`FIXES`)."""
    claim_ttl_s: float = 60.0
    """``fenced-claims``: run time a holder may stay silent before its tasks' leases end."""
    rounds: int = 0
    actions: int = 0
    """Actions carried out (each one board call)."""
    ignored: int = 0
    """Claims and completions silently ignored (no event, as in the study)."""
    board_s: float = 0.0
    board_max_s: float = 0.0
    _tasks: dict[str, tuple[dict[str, Any], int]] = field(default_factory=dict)
    _feedback: dict[str, list[Feedback]] = field(default_factory=dict)
    """Per agent, what the fixes report about its last reply (shown in its next view)."""
    _heard_s: dict[str, float] = field(default_factory=dict)
    """Per agent, the run time of its last reply (``fenced-claims``: the lease keepalive)."""
    _lost: dict[str, set[str]] = field(default_factory=dict)
    """Per agent, tasks whose lease it lost (``fenced-claims``: its completions are fenced)."""

    def __post_init__(self) -> None:
        unknown = set(self.fixes) - set(FIXES)
        if unknown:
            raise ValueError(f"unknown study-rule fixes: {sorted(unknown)}")
        self._rng = random.Random(f"study-tests|{self.seed}")
        self._ids = [t.id for t in self.project.tasks]
        self._files_of = {t.id: t.files for t in self.project.tasks}
        self._deps = {t.id: t.dependencies for t in self.project.tasks}
        self._project_files = {f for t in self.project.tasks for f in t.files}
        self._dealt_to: dict[str, str] = {}
        """Pre-assignment: the agent each task file was dealt to (§6 joins edits to the deal)."""

    # ------------------------------------------------------------------------------ setup

    def setup(self) -> None:
        """Write the task records (one put each): owners preset by the study's deal in
        ``preassign`` (status ``assigned``), none otherwise."""
        owners = study_deal(self.project, self.team) if self.mode == "preassign" else {}
        self._dealt_to = {f: owners[t.id] for t in self.project.tasks if t.id in owners
                          for f in t.files}
        for t in self.project.tasks:
            owner = owners.get(t.id)
            rec = {"status": "assigned" if owner else "pending", "owner": owner}
            self._tasks[t.id] = (rec, self.store.put_task("harness", t.id, rec, 0))
        self._heard_s = dict.fromkeys(self.team, 0.0)

    @property
    def done(self) -> bool:
        return all(self._tasks[t][0]["status"] == "done" for t in self._ids)

    # ------------------------------------------------------------------------------ rounds

    def run(self) -> int:
        t = 0.0
        for r in range(1, self.round_cap + 1):
            self.rounds = r
            self.log.emit(t, "round_start", round=r)
            self.between_rounds(r, t)
            if "fenced-claims" in self.fixes:
                self._expire(t, r)
            w0 = self.clock()
            tasks, files = self.store.snapshot()
            view_s = self._waited(w0)
            live = [a for a in self.team if not self.stalled(a, t)]
            replies = {a: self.brains[a].decide(self._view(a, tasks, files, r, t))
                       for a in live}
            order = sorted(live, key=lambda a: (replies[a].latency_s, self.team.index(a)))
            busy = t  # the harness is blocked (a reply's board calls, a test run) until then
            end = t + view_s
            for a in order:
                reply = replies[a]
                at = max(t + view_s + reply.latency_s, busy)
                w0 = self.clock()
                test_s = self._apply(a, reply, at, r, files)
                busy = at + self._waited(w0) + test_s
                end = max(end, busy)
            t = end
            if not live:
                t += 10.0
            if self.done:
                break
        return self.rounds

    def _waited(self, since: float) -> float:
        waited = max(0.0, self.clock() - since)
        self.board_s += waited
        self.board_max_s = max(self.board_max_s, waited)
        return waited if self.board_time else 0.0

    def _view(self, agent: str, tasks: Mapping[str, tuple[dict[str, Any], int]],
              files: Mapping[str, tuple[str, int]], round_: int, t_s: float) -> View:
        views = []
        for t in self.project.tasks:
            rec = tasks.get(t.id, ({}, 0))[0]
            views.append(TaskView(id=t.id, title=t.title, status=_VIEW_STATUS.get(
                str(rec.get("status", "pending")), "pending"), owner=rec.get("owner"),
                dependencies=t.dependencies, files=t.files))
        return View(agent=agent, team=self.team, round=round_, time_s=t_s, mode=self.mode,
                    self_claiming=self.mode in ("decentralized", "hybrid"),
                    tasks=tuple(views), feedback=tuple(self._feedback.pop(agent, ())),
                    files=tuple(FileView(file=p, version=v, author=a, passes=True)
                                for p, (a, v) in sorted(files.items())))

    # ------------------------------------------------------------------------------ a reply

    def _apply(self, agent: str, reply: Reply, t_s: float, round_: int,
               seen_files: Mapping[str, tuple[str, int]]) -> float:
        """Carry out one reply under the study's grouping; returns its test run's seconds."""
        log = self.log
        first = len(log.events)
        for problem in reply.invalid:
            log.emit(t_s, "invalid", agent=agent, round=round_, reason=problem[:300])
        kinds: list[str] = [a.kind for a in reply.actions]
        self._heard_s[agent] = t_s
        seen = {p: v for p, (_, v) in seen_files.items()}
        for w in (a for a in reply.actions if isinstance(a, WriteFile)):
            self._edit(agent, w, t_s, round_, seen)
        for c in (a for a in reply.actions if isinstance(a, ClaimTask)):
            self._claim(agent, c.task, t_s, round_)
        done_before = frozenset(t for t, (rec, _) in self._tasks.items()  # completion-deps
                                if rec["status"] == "done") \
            if "completion-deps" in self.fixes else frozenset()
        for d in (a for a in reply.actions if isinstance(a, CompleteTask)):
            self._complete(agent, d.task, t_s, round_, done_before)
        test_s = 0.0
        if reply.run_tests:
            self.actions += 1
            files = self.store.files(agent)
            passes = all(f in files for t in self._ids for f in self._files_of[t])
            test_s = self._test_s()
            log.emit(t_s, "tests", agent=agent, round=round_, passes=passes,
                     data={"test_s": round(test_s, 4)})
            kinds.append("tests")
        for a in (a for a in reply.actions if isinstance(a, Assign)):
            self._assign(agent, a.task, a.agent, t_s, round_)
        effective = any(e.agent == agent and (e.kind in ("write", "claim", "assign") or (
            e.kind == "complete" and e.reason != "repeat")) for e in log.events[first:])
        log.emit(t_s, "reply", agent=agent, round=round_, latency_s=reply.latency_s,
                 tokens_in=reply.tokens_in, tokens_out=reply.tokens_out,
                 data={"actions": kinds, "effective": effective, "late": False})
        return test_s

    def _test_s(self) -> float:
        sigma = math.log(TEST_S_P90 / TEST_S_P50) / _Z90
        return TEST_S_P50 * math.exp(sigma * self._rng.gauss(0.0, 1.0))

    def _tell(self, agent: str, note: Feedback) -> None:
        self._feedback.setdefault(agent, []).append(note)

    def _edit(self, agent: str, w: WriteFile, t_s: float, round_: int,
              seen: dict[str, int]) -> None:
        """One write. ``seen``: the versions the agent saw at round start, updated by its own
        writes in this reply (a second write of a path in one reply is not stale)."""
        path = _valid_path(w.file)
        if path is None:
            self.log.emit(t_s, "invalid", agent=agent, round=round_, file=w.file[:200],
                          reason="not a path")
            return
        self.actions += 1
        base = seen.get(path, 0)
        stale_check = "reject-stale-files" in self.fixes
        version = self.store.put_file(agent, path, w.content, base if stale_check else None)
        if version is None:
            self.log.emit(t_s, "write_rejected", agent=agent, round=round_, file=path,
                          task=w.task, base_version=base, reason="stale")
            self._tell(agent, Feedback(kind="write_stale", file=path, task=w.task))
            return
        seen[path] = version
        self.log.emit(t_s, "write", agent=agent, round=round_, file=path, task=w.task,
                      version=version, base_version=base, passes=w.passes,
                      reason=self._write_reason(agent, path))

    def _write_reason(self, agent: str, path: str) -> str | None:
        """The §6 class of a write: ``no-task`` (a path of no task: helpers, test dumps),
        ``foreign`` (pre-assignment: a task file dealt to another agent), else none (a file of
        the writer's own task, or any task file when nothing was dealt)."""
        if path not in self._project_files:
            return "no-task"
        dealt = self._dealt_to.get(path)
        return "foreign" if dealt is not None and dealt != agent else None

    def _claim(self, agent: str, task_id: str, t_s: float, round_: int) -> None:
        self.actions += 1
        got = self._tasks.get(task_id)
        if got is None:
            self.store.read_task(agent, task_id)
            self.ignored += 1
            return
        rec, version = got
        match = ((rec["owner"] is None and rec["status"] == "pending")
                 or (rec["owner"] == agent and rec["status"] == "assigned"))
        if not match:
            self.store.read_task(agent, task_id)  # the record that makes it no match
            holder = rec["owner"]
            if ("claim-feedback" in self.fixes and holder not in (None, agent)
                    and rec["status"] != "done"):
                self.log.emit(t_s, "claim_held", agent=agent, round=round_, task=task_id,
                              target=holder)
                self._tell(agent, Feedback(kind="claim_held", task=task_id, holder=holder))
                return
            self.ignored += 1
            return
        blocking = next((d for d in self._deps[task_id]
                         if self._tasks[d][0]["status"] != "done"), None)
        if blocking is not None:
            self.store.read_task(agent, blocking)  # the dependency that refuses it
            self.log.emit(t_s, "claim_blocked", agent=agent, round=round_, task=task_id,
                          target=blocking)
            return
        self._lost.get(agent, set()).discard(task_id)
        new = dict(rec, status="in_progress", owner=agent, fence=int(rec.get("fence", 0)) + 1)
        self._tasks[task_id] = (new, self.store.put_task(agent, task_id, new, version))
        self.log.emit(t_s, "claim", agent=agent, round=round_, task=task_id,
                      fence=new["fence"])

    def _complete(self, agent: str, task_id: str, t_s: float, round_: int,
                  done_before: frozenset[str] = frozenset()) -> None:
        """A completion: ownership only (the study), or also the dependencies done before the
        reply's completions (``completion-deps``); a holder whose lease ended is refused out
        loud under ``fenced-claims`` (the study ignores any non-owner's completion)."""
        self.actions += 1
        got = self._tasks.get(task_id)
        if got is None or got[0]["owner"] != agent:
            self.store.read_task(agent, task_id)
            if got is not None and task_id in self._lost.get(agent, set()):
                self.log.emit(t_s, "complete_refused", agent=agent, round=round_,
                              task=task_id, reason="fenced")
                self._tell(agent, Feedback(kind="complete_refused", task=task_id,
                                           reason="fenced"))
                return
            self.ignored += 1
            return
        rec, version = got
        repeat = rec["status"] == "done"
        if "completion-deps" in self.fixes and not repeat:
            blocking = next((d for d in self._deps[task_id] if d not in done_before), None)
            if blocking is not None:
                self.store.read_task(agent, blocking)  # the dependency that refuses it
                self.log.emit(t_s, "complete_refused", agent=agent, round=round_,
                              task=task_id, target=blocking, reason="deps")
                self._tell(agent, Feedback(kind="complete_refused", task=task_id,
                                           reason="deps"))
                return
        new = dict(rec, status="done")
        self._tasks[task_id] = (new, self.store.put_task(agent, task_id, new, version))
        self.log.emit(t_s, "complete", agent=agent, round=round_, task=task_id,
                      reason="repeat" if repeat else None)

    def _expire(self, t_s: float, round_: int) -> None:
        """``fenced-claims``, at round start: every task held (claimed or dealt) by an agent
        silent for the claim TTL returns to pending and unowned (one compare-and-set put each;
        its fence moves on when it is claimed again)."""
        for agent in self.team:
            if t_s - self._heard_s.get(agent, 0.0) < self.claim_ttl_s:
                continue
            lapsed = sorted(t for t, (rec, _) in self._tasks.items()
                            if rec["owner"] == agent and rec["status"] != "done")
            if not lapsed:
                continue
            for task_id in lapsed:
                rec, version = self._tasks[task_id]
                new = dict(rec, status="pending", owner=None)
                self.actions += 1
                self._tasks[task_id] = (new, self.store.put_task("harness", task_id, new,
                                                                 version))
            self._lost.setdefault(agent, set()).update(lapsed)
            self.log.emit(t_s, "expired", agent=agent, round=round_, data={"tasks": lapsed})
            self._tell(agent, Feedback(kind="claim_lost", reason=",".join(lapsed)[:300]))

    def _assign(self, agent: str, task_id: str, worker: str, t_s: float, round_: int) -> None:
        """A lead's assignment (lead mode only; the study has no data for it): an unowned
        pending task gets an owner, status ``assigned``."""
        self.actions += 1
        got = self._tasks.get(task_id)
        ok = (self.mode == "lead" and agent == self.team[0] and worker in self.team
              and got is not None and got[0]["owner"] is None and got[0]["status"] == "pending")
        if not ok or got is None:
            self.store.read_task(agent, task_id)
            self.ignored += 1
            return
        rec, version = got
        new = dict(rec, status="assigned", owner=worker)
        self._tasks[task_id] = (new, self.store.put_task(agent, task_id, new, version))
        self.log.emit(t_s, "assign", agent=agent, round=round_, task=task_id, target=worker)

    def reassign(self, task_id: str, worker: str, t_s: float, round_: int) -> None:
        """The hybrid monitor's move of a silent agent's task (no study data for it)."""
        rec, version = self._tasks[task_id]
        if rec["status"] == "done":
            return
        new = dict(rec, status="assigned", owner=worker)
        self.actions += 1
        self._tasks[task_id] = (new, self.store.put_task("harness", task_id, new, version))
        self.log.emit(t_s, "takeover", agent="monitor", round=round_, task=task_id,
                      target=rec.get("owner"))
        self.log.emit(t_s, "assign", agent="monitor", round=round_, task=task_id,
                      target=worker)

    def records(self) -> dict[str, dict[str, Any]]:
        return {t: dict(rec) for t, (rec, _) in self._tasks.items()}


# ------------------------------------------------------------------------ per-reply rates


@dataclass(frozen=True)
class ReplyStats:
    """What one reply did, recounted from the events (the study's per-reply tables)."""

    agent: str
    round: int
    edits: int
    claims: int
    """Claim attempts the log shows: granted + blocked (ignored ones leave no event)."""
    blocked: int
    completions: int
    """First-time completions (repeats excluded)."""
    run: int = 0
    """Which run of a set the reply belongs to (for errors clustered by run)."""

    @property
    def idle(self) -> bool:
        """The study's idle reply: no edit, no granted claim, no first-time completion."""
        return self.edits == 0 and self.claims == self.blocked and self.completions == 0


def reply_stats(events: Sequence[RunEvent]) -> list[ReplyStats]:
    """One :class:`ReplyStats` per reply of a round-synchronous run (its actions are the
    events of the same agent and round, each agent replying once a round)."""
    acts: dict[tuple[str, int], list[int]] = {}
    replies: list[tuple[str, int]] = []
    for e in events:
        if e.agent is None:
            continue
        key = (e.agent, e.round)
        if e.kind == "reply":
            replies.append(key)
            continue
        c = acts.setdefault(key, [0, 0, 0, 0])
        if e.kind == "write":
            c[0] += 1
        elif e.kind == "claim":
            c[1] += 1
        elif e.kind == "claim_blocked":
            c[1] += 1
            c[2] += 1
        elif e.kind == "complete" and e.reason != "repeat":
            c[3] += 1
    out = []
    for agent, r in replies:
        c = acts.get((agent, r), [0, 0, 0, 0])
        out.append(ReplyStats(agent=agent, round=r, edits=c[0], claims=c[1], blocked=c[2],
                              completions=c[3]))
    return out
