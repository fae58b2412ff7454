"""Projects of tasks with dependencies: the study's task-file format, and generated task DAGs.

Pure (no I/O but :func:`load_project`, which only reads a file). The parallel fraction is the
study's ``p = (N - critical path) / N``, where the critical path counts tasks on the longest
dependency chain: a team of any size needs at least that many sequential task completions.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

__all__ = [
    "Project",
    "Task",
    "TaskFileError",
    "critical_path",
    "generate_project",
    "load_project",
    "load_projects",
    "topological_order",
]

TASKS_MAX = 500
"""A project holds at most this many tasks (the study's have 20): bounds every walk of the DAG."""
TASK_FILE_BYTES_MAX = 4 * 1024 * 1024
TASK_FILES_MAX = 1_000
"""A folder of task files is read up to this many files (the study has nine)."""

TaskId = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")]
FileName = Annotated[str, Field(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9_./-]+$")]


class TaskFileError(ValueError):
    """A task file or a generated project is malformed: unreadable JSON, a field of the wrong
    type, a dependency on an unknown task, a cycle, or two tasks sharing a file. Raised before
    any run starts; nothing is written. Not retryable: fix the file."""


class Task(BaseModel):
    """One subtask: what to build, which tasks must be done first, which files it writes."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    id: TaskId
    title: str = ""
    description: str = ""
    priority: int = 0
    dependencies: tuple[TaskId, ...] = ()
    files: tuple[FileName, ...] = Field(default=(), max_length=16)


class Project(BaseModel):
    """A named set of tasks forming a DAG. ``suite``/``level`` say where it came from
    (``amdahl_svgutils``/``p05``, or ``generated``/``cp4-s7``)."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    name: str
    suite: str = ""
    level: str = ""
    description: str = ""
    success_criteria: str = ""
    repository: str = ""
    """The task file's ``success_criteria`` and ``repository``: only an LLM agent's first
    message under the study harness shows them (the study's did)."""
    tasks: tuple[Task, ...] = Field(min_length=1, max_length=TASKS_MAX)

    @model_validator(mode="after")
    def _check_dag(self) -> Project:
        ids = [t.id for t in self.tasks]
        if len(set(ids)) != len(ids):
            raise ValueError("task ids are not unique")
        known = set(ids)
        owners: dict[str, str] = {}
        for t in self.tasks:
            for dep in t.dependencies:
                if dep not in known:
                    raise ValueError(f"task {t.id} depends on unknown task {dep}")
                if dep == t.id:
                    raise ValueError(f"task {t.id} depends on itself")
            for f in t.files:
                if f in owners:
                    raise ValueError(f"tasks {owners[f]} and {t.id} share file {f}")
                owners[f] = t.id
        topological_order(self.tasks)  # raises on a cycle
        return self

    @property
    def size(self) -> int:
        return len(self.tasks)

    @property
    def critical_path(self) -> int:
        return critical_path(self.tasks)

    @property
    def parallel_fraction(self) -> float:
        """The study's p = (N - critical path) / N."""
        return (self.size - self.critical_path) / self.size

    def task(self, task_id: str) -> Task:
        for t in self.tasks:
            if t.id == task_id:
                return t
        raise KeyError(task_id)


def topological_order(tasks: Iterable[Task]) -> list[Task]:
    """Tasks in dependency order (Kahn's algorithm; ties by position in the input, so the order
    is deterministic). Raises ``ValueError`` naming a task on a cycle."""
    items = list(tasks)
    by_id = {t.id: t for t in items}
    waiting = {t.id: sum(1 for d in t.dependencies if d in by_id) for t in items}
    dependents: dict[str, list[str]] = {t.id: [] for t in items}
    for t in items:
        for d in t.dependencies:
            if d in dependents:
                dependents[d].append(t.id)
    position = {t.id: i for i, t in enumerate(items)}
    ready = sorted((tid for tid, n in waiting.items() if n == 0), key=position.__getitem__)
    order: list[Task] = []
    for _ in range(len(items)):  # bounded: each pass emits one task
        if not ready:
            break
        tid = ready.pop(0)
        order.append(by_id[tid])
        freed = []
        for nxt in dependents[tid]:
            waiting[nxt] -= 1
            if waiting[nxt] == 0:
                freed.append(nxt)
        ready = sorted(ready + freed, key=position.__getitem__)
    if len(order) != len(items):
        stuck = sorted(tid for tid, n in waiting.items() if n > 0)
        raise ValueError(f"dependency cycle through task {stuck[0]}")
    return order


def critical_path(tasks: Iterable[Task]) -> int:
    """Number of tasks on the longest dependency chain (1 for independent tasks)."""
    depth: dict[str, int] = {}
    for t in topological_order(tasks):
        depth[t.id] = 1 + max((depth[d] for d in t.dependencies if d in depth), default=0)
    return max(depth.values(), default=0)


def load_project(path: str | Path) -> Project:
    """Read one task file in the study's format (``project``, ``description``, ``tasks``: each
    with ``id``, ``title``, ``description``, ``priority``, ``dependencies``, ``files``; the
    ``status``/``owner``/``assigned_by`` fields describe a fresh board and are ignored)."""
    p = Path(path)
    try:
        if p.stat().st_size > TASK_FILE_BYTES_MAX:
            raise TaskFileError(f"{p}: larger than {TASK_FILE_BYTES_MAX} bytes")
        raw = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise TaskFileError(f"{p}: cannot read a JSON task file: {exc}") from exc
    if not isinstance(raw, Mapping):
        raise TaskFileError(f"{p}: the top level is not a JSON object")
    try:
        return Project(name=str(raw.get("project") or p.stem), suite=p.parent.name,
                       level=p.stem, description=str(raw.get("description") or ""),
                       success_criteria=str(raw.get("success_criteria") or ""),
                       repository=str(raw.get("repository") or ""), tasks=raw.get("tasks"))
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(x) for x in first["loc"])
        raise TaskFileError(f"{p}: {where}: {first['msg']}") from exc


def load_projects(root: str | Path) -> list[Project]:
    """Every ``*.json`` task file under ``root`` (one folder per suite, as in the study), or
    ``root`` itself if it is a file; sorted by suite then level."""
    base = Path(root)
    if base.is_file():
        return [load_project(base)]
    files = sorted(base.glob("*/*.json")) + sorted(base.glob("*.json"))
    if not files:
        raise TaskFileError(f"{base}: no task files (*.json) found")
    return sorted((load_project(f) for f in files[:TASK_FILES_MAX]),
                  key=lambda p: (p.suite, p.level))


def generate_project(subtasks: int, critical_path_len: int, extra_edges: int = 0,
                     seed: int = 0) -> Project:
    """A random DAG of ``subtasks`` tasks whose longest chain is exactly ``critical_path_len``.

    A chain of ``critical_path_len`` tasks is laid first; every other task gets a depth below
    that and, if its depth is > 1, one dependency one level up (so depths are exact). Then up to
    ``extra_edges`` more edges are added from a lower to a higher depth, which can never lengthen
    the critical path. Deterministic in ``seed``.
    """
    if not 1 <= subtasks <= TASKS_MAX:
        raise TaskFileError(f"subtasks must be in 1..{TASKS_MAX}, not {subtasks}")
    if not 1 <= critical_path_len <= subtasks:
        raise TaskFileError(f"critical path must be in 1..{subtasks}, not {critical_path_len}")
    if extra_edges < 0:
        raise TaskFileError("extra edges must be >= 0")
    rng = random.Random(seed)
    depth = list(range(1, critical_path_len + 1))
    depth += [rng.randint(1, critical_path_len) for _ in range(subtasks - critical_path_len)]
    ids = [f"task-{i + 1}" for i in range(subtasks)]
    deps: list[set[int]] = [set() for _ in range(subtasks)]
    by_depth: dict[int, list[int]] = {}
    for i, d in enumerate(depth):
        by_depth.setdefault(d, []).append(i)
    for i, d in enumerate(depth):
        if d > 1:
            deps[i].add(i - 1 if i < critical_path_len else rng.choice(by_depth[d - 1]))
    candidates = [(a, b) for a in range(subtasks) for b in range(subtasks)
                  if depth[a] < depth[b] and a not in deps[b]]
    rng.shuffle(candidates)
    for a, b in candidates[:extra_edges]:
        deps[b].add(a)
    tasks = tuple(
        Task(id=ids[i], title=f"Implement unit {i + 1}", priority=depth[i],
             description=f"Write module_{i + 1}.py (generated task at depth {depth[i]}).",
             dependencies=tuple(ids[j] for j in sorted(deps[i])), files=(f"module_{i + 1}.py",))
        for i in range(subtasks))
    return Project(name=f"generated n{subtasks} cp{critical_path_len} e{extra_edges} s{seed}",
                   suite="generated", level=f"cp{critical_path_len}", tasks=tasks)
