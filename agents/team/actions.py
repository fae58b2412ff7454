"""What an agent sees (a :class:`View` of the board) and what it may do (:data:`Action`).

A brain maps a view to a :class:`Reply`: a short list of actions plus what the reply cost
(latency, tokens). Actions are validated pydantic models, so an LLM's tool call that does not
parse becomes an ``invalid`` note on the reply (recorded, costs the round) instead of a crash.
Pure: no I/O.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

__all__ = [
    "ACTIONS_PER_REPLY_MAX",
    "Action",
    "Assign",
    "ClaimTask",
    "CompleteTask",
    "Feedback",
    "FileView",
    "Idle",
    "Message",
    "Reply",
    "TaskView",
    "View",
    "WriteFile",
    "parse_action",
]

ACTIONS_PER_REPLY_MAX = 8
REPLY_ACTIONS_MAX = 256
"""A reply's actions at most, whoever decided them: an LLM brain is held to
``ACTIONS_PER_REPLY_MAX`` tool calls, but a study agent may claim, edit and complete its whole
dealt list in one reply (the study's replies did: up to 20 completions and more edits)."""
"""A reply carrying more actions is cut here (and says so): bounds the work one reply does."""
CONTENT_CHARS_MAX = 16_000
MESSAGE_CHARS_MAX = 2_000

TaskStatus = Literal["pending", "claimed", "done"]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ClaimTask(_Frozen):
    """Take ownership of a ready task (its dependencies done, nobody holding it)."""

    kind: Literal["claim"] = "claim"
    task: str = Field(min_length=1, max_length=64)


class WriteFile(_Frozen):
    """Write ``content`` to ``file``. ``task`` says which task the write is for (the study's
    agents sometimes write another task's file). ``passes``: whether the written code passes the
    task's check (a simulated brain decides; an LLM brain's write is checked by the runtime)."""

    kind: Literal["write"] = "write"
    file: str = Field(min_length=1, max_length=200)
    content: str = Field(default="", max_length=CONTENT_CHARS_MAX)
    task: str | None = None
    passes: bool = True


class CompleteTask(_Frozen):
    """Mark an owned task done (refused if its file has no passing write)."""

    kind: Literal["complete"] = "complete"
    task: str = Field(min_length=1, max_length=64)


class Assign(_Frozen):
    """A lead's or coordinator's assignment of a ready task to a worker."""

    kind: Literal["assign"] = "assign"
    task: str = Field(min_length=1, max_length=64)
    agent: str = Field(min_length=1, max_length=64)


class Message(_Frozen):
    """Post a message to the team (``to`` = one agent, or everyone)."""

    kind: Literal["message"] = "message"
    text: str = Field(min_length=1, max_length=MESSAGE_CHARS_MAX)
    to: str | None = None


class Idle(_Frozen):
    """Do nothing this turn (waiting, or nothing ready)."""

    kind: Literal["idle"] = "idle"
    reason: str = ""


Action = Annotated[ClaimTask | WriteFile | CompleteTask | Assign | Message | Idle,
                   Field(discriminator="kind")]
_ACTION: TypeAdapter[Action] = TypeAdapter(Action)


def parse_action(data: object) -> Action | str:
    """Validate one action (a dict from a tool call); on failure return what was wrong."""
    try:
        return _ACTION.validate_python(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(x) for x in first["loc"]) or "action"
        return f"{where}: {first['msg']}"


class Reply(_Frozen):
    """A brain's answer for one turn, and what it cost."""

    actions: tuple[Action, ...] = Field(default=(), max_length=REPLY_ACTIONS_MAX)
    latency_s: float = Field(ge=0)
    tokens_in: int = Field(default=0, ge=0)
    tokens_out: int = Field(default=0, ge=0)
    invalid: tuple[str, ...] = ()
    """Actions the brain asked for that did not validate (each costs the turn, never crashes)."""
    run_tests: bool = False
    """Run the project's tests after the reply's other actions (the study harness: one test
    run per reply at most, which blocks the harness for its duration)."""


class TaskView(_Frozen):
    id: str
    title: str = ""
    description: str = ""
    status: TaskStatus = "pending"
    owner: str | None = None
    assigned_by: str | None = None
    dependencies: tuple[str, ...] = ()
    files: tuple[str, ...] = ()
    fence: int | None = None
    """Fencing token of the owner's claim (decentralized and hybrid modes)."""


class FileView(_Frozen):
    file: str
    version: int
    author: str
    passes: bool


class Feedback(_Frozen):
    """What the harness told an agent about its previous reply. The study's harness told its
    agents nothing of a refused claim or write; the ablation's fixes (``--fix``) report them:
    ``claim_held`` (a claim refused: ``holder`` has the task), ``write_stale`` (a write refused:
    the file changed since the round-start view), ``complete_refused`` (dependencies not done,
    or the claim fenced out), ``claim_lost`` (the agent's claim lapsed: it was silent past the
    claim TTL)."""

    kind: Literal["claim_held", "write_stale", "complete_refused", "claim_lost"]
    task: str | None = None
    file: str | None = None
    holder: str | None = None
    reason: str = ""


class View(_Frozen):
    """One agent's picture of the board when it is asked to act.

    Built from the agent's own watch of the run's keys (so it can lag the board in async
    mode, exactly as a real agent's would). ``ready`` lists pending tasks whose dependencies
    are all done in this view."""

    agent: str
    team: tuple[str, ...]
    round: int
    time_s: float
    mode: str
    self_claiming: bool = True
    """Whether this agent may claim unassigned ready tasks itself (else it waits for an
    assignment: ``preassign`` and ``lead`` workers)."""
    tasks: tuple[TaskView, ...]
    files: tuple[FileView, ...] = ()
    messages: tuple[str, ...] = ()
    """The last messages addressed to this agent or to everyone, oldest first."""
    stale_owners: tuple[str, ...] = ()
    """Agents whose heartbeat is older than the claim TTL (their claims may be taken over)."""
    feedback: tuple[Feedback, ...] = ()
    """What the harness reported about this agent's previous reply (study harness fixes)."""

    def task(self, task_id: str) -> TaskView | None:
        for t in self.tasks:
            if t.id == task_id:
                return t
        return None

    @property
    def done(self) -> frozenset[str]:
        return frozenset(t.id for t in self.tasks if t.status == "done")

    @property
    def ready(self) -> tuple[TaskView, ...]:
        done = self.done
        return tuple(t for t in self.tasks
                     if t.status == "pending" and all(d in done for d in t.dependencies))

    def file(self, name: str) -> FileView | None:
        for f in self.files:
            if f.file == name:
                return f
        return None
