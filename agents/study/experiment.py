"""Sweeps of team runs: expand a grid into run specs, run them on one local cluster, resume.

``results.jsonl`` gets one :class:`~agents.metrics.RunRecord` per finished run, appended and
flushed as each run ends, so an interrupted sweep resumes where it stopped: specs already
recorded are skipped (a run's identity is a hash of its spec). Each run's own folder under
``runs/`` holds its ``events.jsonl`` and ``final.json``.

Seeds use common random numbers: a run's seed depends on the sweep seed, the project, the team
size and the repetition, *not* on the mode or policy, so the modes of one repetition face the
same simulated agents and their differences are the modes', not the dice's. The tasks' work
times (``task_time="task"``) come from a work seed of the project and repetition alone, so
every team size of one repetition does the same work too.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import sys
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Literal, TextIO

import structlog
from pydantic import BaseModel, ConfigDict, Field, model_validator

from quorumboard.agents.study.metrics import RunRecord
from quorumboard.agents.team.runner import BrainFactory, TeamEnv, run_team, sim_brains
from quorumboard.agents.team.spec import (
    AgentFault,
    BoardFault,
    Harness,
    RunSpec,
    SyncMode,
    TaskTime,
    check_harness,
)
from quorumboard.agents.team.tasks import Project, generate_project, load_projects
from quorumboard.agents.version import code_version
from quorumboard.consensus import LocalCluster
from quorumboard.consensus.testing import drop_torn_tail, read_jsonl

__all__ = ["EXPERIMENTS", "SweepConfig", "expand", "parse_range", "read_records", "read_results",
           "run_sweep"]

log = structlog.get_logger(__name__)

EXPERIMENTS = ("sweep", "straggler", "stall", "board-fault")
RUNS_MAX = 100_000
Experiment = Literal["sweep", "straggler", "stall", "board-fault"]


class SweepConfig(BaseModel):
    """A grid of runs. ``experiments`` chooses which fault experiments to add to the grid:
    ``straggler`` (the last agent ``slowdown``x slower), ``stall`` (the last agent stops for
    ``stall_s``, at its first turn from ``stall_at_s`` on in which it is working on a task), ``board-fault`` (the board's leader is killed and a
    follower partitioned at round ``board_fault_round``); each comes with fault-free runs of the
    same cells, and covers team sizes >= 2 only (a fault needs someone else to notice)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    modes: tuple[str, ...] = ("preassign", "decentralized")
    agents: tuple[int, ...] = (1, 2, 3, 4, 5)
    reps: int = Field(default=5, ge=1, le=1_000)
    policies: tuple[str, ...] = ("last-writer-wins",)
    brain: str = "sim"
    model: str = "gpt-5.2"
    """A comma list: each model is a dimension of the grid (like ``modes``)."""
    harness: Harness = "board"
    assume: str = ""
    fixes: tuple[str, ...] = ("",)
    """Rule sets (a grid dimension, ``--harness study``): each a comma list of study rules
    replaced by correct ones (``""``: the study's rules; see ``study_harness.FIXES``)."""
    clean_arms: bool = True
    """Fault experiments come with fault-free runs of the same cells (False: the faulty arm
    only, when a ``sweep`` of the same cells is in the grid already)."""
    prompt: str = ""
    """LLM agents under the study harness: which system prompt (``RunSpec.prompt``)."""
    sync: SyncMode = "rounds"
    task_time: TaskTime = "task"
    board_time: bool = True
    round_cap: int = Field(default=60, ge=1, le=10_000)
    seed: int = 0
    experiments: tuple[Experiment, ...] = ("sweep",)
    slowdown: float = Field(default=4.0, ge=1.0)
    stall_at_s: float = Field(default=15.0, ge=0)
    stall_s: float = Field(default=600.0, ge=0)
    claim_ttl_s: float = Field(default=60.0, gt=0)
    board_fault_round: int = Field(default=3, ge=1)


    @property
    def models(self) -> tuple[str, ...]:
        return tuple(m.strip() for m in self.model.split(",") if m.strip())

    @model_validator(mode="after")
    def _study_rounds_only(self) -> SweepConfig:
        check_harness(self.harness, self.sync)
        if any(self.fixes) and self.harness != "study":
            raise ValueError("--fix replaces study rules: it needs --harness study")
        return self


def parse_range(text: str) -> tuple[int, ...]:
    """``"1-5"`` -> (1, 2, 3, 4, 5); ``"1,2,4"`` -> (1, 2, 4); ``"3"`` -> (3,)."""
    out: list[int] = []
    for part in text.split(","):
        part = part.strip()
        lo, sep, hi = part.partition("-")
        try:
            values = range(int(lo), int(hi) + 1) if sep else range(int(part), int(part) + 1)
        except ValueError:
            raise ValueError(f"not a number or range: {part!r}") from None
        if len(values) > 64 or not values:
            raise ValueError(f"bad range {part!r} (1..64 values)")
        out.extend(values)
    return tuple(sorted(set(out)))


def parse_generated(text: str, count_max: int = 64) -> list[Project]:
    """``"20:2:0,20:10:3:7"`` -> generated projects (subtasks:critical-path:extra-edges[:seed])."""
    projects = []
    for part in text.split(",")[:count_max]:
        fields = [int(x) for x in part.split(":")]
        if len(fields) not in (3, 4):
            raise ValueError(f"expected subtasks:critical-path:extra-edges[:seed], not {part!r}")
        projects.append(generate_project(*fields))
    return projects


def _seed(base: int, project: Project, agents: int | None, rep: int) -> int:
    """A run's seed (``agents`` given) or its work seed (None: shared by every team size)."""
    text = f"{base}|{project.suite}|{project.level}|{project.name}|{agents}|{rep}"
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "big")


def expand(cfg: SweepConfig, projects: Sequence[Project]) -> list[tuple[RunSpec, Project]]:
    """Every run of the grid, in a stable order (cells together, small teams first)."""
    runs: list[tuple[RunSpec, Project]] = []
    for experiment, model, fix in itertools.product(cfg.experiments, cfg.models, cfg.fixes):
        for project in projects:
            for mode in cfg.modes:
                for policy in cfg.policies:
                    for n in cfg.agents:
                        if experiment != "sweep" and n < 2:
                            continue
                        variants = _variants(cfg, experiment, n)
                        if experiment != "sweep" and not cfg.clean_arms:
                            variants = variants[1:]
                        for variant in variants:
                            for rep in range(cfg.reps):
                                faults, board = variant
                                runs.append((RunSpec(
                                    experiment=experiment, suite=project.suite,
                                    level=project.level, project=project.name,
                                    p=project.parallel_fraction,
                                    mode=mode, policy=policy, brain=cfg.brain,
                                    model=model, agents=n, rep=rep,
                                    harness=cfg.harness, assume=cfg.assume, fix=fix,
                                    prompt=cfg.prompt,
                                    seed=_seed(cfg.seed, project, n, rep),
                                    work_seed=_seed(cfg.seed, project, None, rep),
                                    task_time=cfg.task_time, board_time=cfg.board_time,
                                    sync=cfg.sync,
                                    round_cap=cfg.round_cap, claim_ttl_s=cfg.claim_ttl_s,
                                    faults=faults, board_fault=board), project))
                                if len(runs) > RUNS_MAX:
                                    raise ValueError(f"more than {RUNS_MAX} runs in the grid")
    return runs


def _variants(cfg: SweepConfig, experiment: str, n: int
              ) -> list[tuple[tuple[AgentFault, ...], BoardFault | None]]:
    """The fault-free arm and the faulty arm of an experiment. The faulty agent is the last
    one: a worker in every mode (in ``lead`` mode the first agent is the lead)."""
    clean: tuple[tuple[AgentFault, ...], BoardFault | None] = ((), None)
    if experiment == "straggler":
        return [clean, ((AgentFault(agent=n - 1, slowdown=cfg.slowdown),), None)]
    if experiment == "stall":
        return [clean, ((AgentFault(agent=n - 1, stall_at_s=cfg.stall_at_s,
                                    stall_s=cfg.stall_s),), None)]
    if experiment == "board-fault":
        return [clean, ((), BoardFault(at_round=cfg.board_fault_round))]
    return [clean]


def read_records(path: Path) -> tuple[list[RunRecord], int]:
    """The records of a ``results.jsonl`` and how many duplicates (same run id: a run recorded
    twice by overlapping invocations) were dropped, the last one winning. A torn last line
    (a sweep killed mid-write) is skipped. No file: no records."""
    if not path.exists():
        return [], 0
    records = read_jsonl(path, RunRecord.model_validate_json, what="run record")[0]
    by_id = {r.spec.run_id: r for r in records}
    return list(by_id.values()), len(records) - len(by_id)


def read_results(path: Path) -> list[RunRecord]:
    """The records of a ``results.jsonl`` (see :func:`read_records`)."""
    return read_records(path)[0]


class _Progress:
    """One status line: done / total, failures, rate and time left."""

    def __init__(self, total: int, skipped: int, stream: TextIO) -> None:
        self.total, self.done, self.failed = total, skipped, 0
        self.stream = stream
        self.t0 = time.monotonic()
        self.fresh = 0
        self.tty = stream.isatty()

    def step(self, record: RunRecord | None, run_id: str) -> None:
        self.done += 1
        self.fresh += 1
        if record is None or not record.metrics.success:
            self.failed += 1
        elapsed = time.monotonic() - self.t0
        left = (self.total - self.done) * elapsed / max(1, self.fresh)
        width = 30
        filled = int(width * self.done / max(1, self.total))
        line = (f"[{'#' * filled}{'.' * (width - filled)}] {self.done}/{self.total} runs"
                f"  {self.failed} unsuccessful  {elapsed:.0f}s elapsed  ~{left:.0f}s left"
                f"  {run_id}")
        if self.tty:
            self.stream.write("\r" + line[:150].ljust(150))
            if self.done == self.total:
                self.stream.write("\n")
        else:
            self.stream.write(line + "\n")
        self.stream.flush()


def run_sweep(cfg: SweepConfig, projects: Sequence[Project], out: Path, *, jobs: int = 2,
              replicas: int = 3, brains: BrainFactory = sim_brains,
              stream: TextIO | None = None,
              on_record: Callable[[RunRecord], None] | None = None) -> list[RunRecord]:
    """Run every run of the grid not yet in ``out/results.jsonl`` on one local cluster.

    Returns all records (old and new). ``jobs`` runs go at once (each with its own agents'
    connections); board-fault runs go one at a time, as they restart the cluster's replicas."""
    out.mkdir(parents=True, exist_ok=True)
    _log_invocation(out / "sweep.json", cfg)
    results = out / "results.jsonl"
    old = read_results(results)
    seen = {r.spec.run_id for r in old}
    grid = expand(cfg, projects)
    todo = [(s, p) for s, p in grid if s.run_id not in seen]
    progress = _Progress(len(grid), len(grid) - len(todo), stream or sys.stderr)
    if not todo:
        return old
    needs_net = any(s.board_fault is not None for s, _ in todo)
    records = list(old)
    drop_torn_tail(results)
    lock = threading.Lock()
    with LocalCluster(replicas=replicas, network_faults=needs_net, log_level="warning") as cluster, \
            results.open("a", encoding="utf-8") as sink:
        env = TeamEnv(endpoints=list(cluster.endpoints), root=f"x{cfg.seed}", cluster=cluster,
                      brains=brains)
        try:
            _run_all(todo, env, out, jobs, progress, lambda rec: _keep(rec, sink, records, lock,
                                                                     on_record))
        finally:
            env.close()
    return records


def _log_invocation(path: Path, cfg: SweepConfig) -> None:
    """Append this invocation's config to ``sweep.json`` (a list, one entry per invocation
    into the folder: a second command adding fault experiments keeps the first's entry)."""
    entries: list[object] = []
    if path.exists():
        try:
            old = json.loads(path.read_text(encoding="utf-8"))
        except ValueError:
            old = []
        entries = old if isinstance(old, list) else [old]
    entries.append({"config": cfg.model_dump(mode="json"), "version": code_version()})
    path.write_text(json.dumps(entries, indent=1) + "\n", encoding="utf-8")


def _keep(record: RunRecord, sink: TextIO, records: list[RunRecord], lock: threading.Lock,
          on_record: Callable[[RunRecord], None] | None) -> None:
    with lock:
        sink.write(record.model_dump_json() + "\n")
        sink.flush()
        records.append(record)
    if on_record is not None:
        on_record(record)


def _run_all(todo: Iterable[tuple[RunSpec, Project]], env: TeamEnv, out: Path, jobs: int,
             progress: _Progress, keep: Callable[[RunRecord], None]) -> None:
    parallel = [(s, p) for s, p in todo if s.board_fault is None]
    serial = [(s, p) for s, p in todo if s.board_fault is not None]
    jobs = max(1, min(jobs, 8))
    free = [f"j{i}" for i in range(jobs)]
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        running: dict[Future[RunRecord], tuple[str, str]] = {}
        queue = list(reversed(parallel))
        for _ in range(len(parallel) + jobs + 1):
            while queue and free:
                spec, project = queue.pop()
                job = free.pop()
                fut = pool.submit(run_team, spec, project, env, out / "runs" / spec.run_id, job)
                running[fut] = (job, spec.run_id)
            if not running:
                break
            finished, _ = wait(running, return_when=FIRST_COMPLETED)
            for fut in finished:
                job, run_id = running.pop(fut)
                free.append(job)
                rec = _record(fut, run_id)
                progress.step(rec, run_id)
                if rec is not None:
                    keep(rec)
    for spec, project in serial:
        rec = None
        try:
            rec = run_team(spec, project, env, out / "runs" / spec.run_id, "jf")
            keep(rec)
        except Exception as exc:
            log.error("run failed", run=spec.run_id, error=f"{type(exc).__name__}: {exc}")
        progress.step(rec, spec.run_id)


def _record(fut: Future[RunRecord], run_id: str) -> RunRecord | None:
    exc = fut.exception()
    if exc is not None:
        log.error("run failed", run=run_id, error=f"{type(exc).__name__}: {exc}")
        return None
    return fut.result()


def load_tasks(tasks: str | None, generate: str | None) -> list[Project]:
    """Projects from task files (``tasks``: a folder of suites, or a file) and/or generated
    ones (``generate``: ``subtasks:critical-path:extra-edges[:seed],...``)."""
    projects: list[Project] = []
    if tasks:
        projects += load_projects(tasks)
    if generate:
        projects += parse_generated(generate)
    if not projects:
        raise ValueError("no projects: give --tasks and/or --generate")
    return projects


def dump_grid(cfg: SweepConfig, projects: Sequence[Project]) -> str:
    """The grid as JSON lines (for ``--dry-run``)."""
    return "\n".join(json.dumps({"run": s.run_id, "experiment": s.experiment, "p": s.p,
                                 "mode": s.mode, "model": s.model, "harness": s.harness,
                                 "agents": s.agents})
                     for s, _ in expand(cfg, projects))
