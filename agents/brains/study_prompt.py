"""LLM agents under the study's harness (``--brain openai --harness study``): the study's
conversation, board text and action tags, on this toolkit's transport and board.

Why a second LLM brain: the ``board`` harness's prompt (a table, a JSON block, tool calls,
descriptions and file names shown) is not what the study's agents saw, and what an agent sees
decides what it does. Under ``--harness study`` an LLM agent gets what the study's did
(notes/paper-calibration.md §1, rows *board rendering*, *context*, *run_tests*):

* a fixed system prompt offering four actions as tags: ``<claim_task id="…" />``,
  ``<complete_task id="…" />``, ``<edit_file path="…">content</edit_file>``, ``<run_tests />``.
  Ours by default (:func:`our_prompt`, written for this toolkit: the same actions in the same
  syntax, no more guidance than the study's); ``--study-repo PATH`` reads the study's own text
  from a checkout of its repository (:func:`load_study_prompt`), which this project does not ship;
* a conversation: every harness message is a user message ``[From System]: …``; the model sees
  the system prompt, the last ``history_max`` (20) messages of its history and the messages
  that arrived since its last reply. Round one brings, in the study's order, the
  pre-assignment notice (``preassign``: its tasks, in the deal's order), the project's
  name, description, success criteria and repository, and the board; each later round the
  board, preceded by the result of the agent's last test run if it ran one. The first
  messages fall out of the window after some ten rounds, as in the study;
* the board as the study printed it (:func:`render_board`): ``icon id: title (Owner: X)`` or
  ``(Unassigned)``, then `` [Requires: deps]``; tasks in file order; no description, no file
  names; icons ⏳ pending, 📌 assigned, 🔨 in progress, ✅ done;
* as in the study, an agent is not told its own name (outside ``lead`` mode, which has no study
  data): it knows its tasks from the pre-assignment notice and the owners on the board.

The reply is parsed with the study's semantics (:func:`parse_study_reply`): each tag kind is
found anywhere in the text, the engine runs them grouped (edits, claims, completions, one test
run) whatever their order in the text; ``repo/`` and markdown fences are stripped from an edit
as the study did. A malformed tag, silently dropped by the study, becomes a named note in
``Reply.invalid`` (an ``invalid`` event), never an exception.

**Deviation: a test run is a compile check.** The study ran ``pytest`` on the agents' files;
this toolkit never executes code a model wrote. :class:`CompileCheckStore` records each file
the run writes and, at each test run, compiles (``compile()``, never ``exec``) every Python
file written and checks every project file exists. The agent gets the study's ``✅ Tests
passed!`` or ``❌ Tests failed:`` with the tail of the report in its next round's messages.
Code that compiles but is wrong passes, which the study's tests would have failed.
"""

from __future__ import annotations

import ast
import hashlib
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Final, Literal

from quorumboard.agents.brains.llm import LLMConfig, OpenAIBrain
from quorumboard.agents.team.actions import (
    CONTENT_CHARS_MAX,
    REPLY_ACTIONS_MAX,
    Action,
    Feedback,
    Reply,
    TaskView,
    View,
    parse_action,
)
from quorumboard.agents.team.spec import RunSpec
from quorumboard.agents.team.study_harness import Store, study_deal
from quorumboard.agents.team.tasks import Project, Task

__all__ = [
    "FAILED",
    "HISTORY_MESSAGES",
    "ICONS",
    "PASSED",
    "CompileCheckStore",
    "StudyActions",
    "StudyChatBrain",
    "StudyPrompt",
    "StudyRepoError",
    "TagProblem",
    "check_files",
    "compile_error",
    "first_messages",
    "load_study_prompt",
    "our_prompt",
    "parse_study_reply",
    "project_intro",
    "render_board",
    "strip_fences",
    "study_chat_brains",
]

HISTORY_MESSAGES: Final = 20
"""The study's window: the last 20 messages of an agent's history (``LLMConfig.history_max``)."""
PASSED: Final = "✅ Tests passed!"
FAILED: Final = "❌ Tests failed:"
TEST_TAIL_CHARS: Final = 1_500
"""How much of a failed test run's report the agent gets (the study: the last 1,500 chars)."""
FROM_SYSTEM: Final = "[From System]: "
ICONS: Final[Mapping[str, str]] = {"pending": "⏳", "assigned": "📌", "in_progress": "🔨",
                                   "done": "✅"}
BUFFER_MESSAGES_MAX: Final = 40
"""Messages waiting for a model that keeps failing are kept up to this many (newest)."""
PROMPT_FILE_BYTES_MAX: Final = 1 << 20
NOTE_CHARS_MAX: Final = 300
PATH_CHARS_MAX: Final = 200
ID_CHARS_MAX: Final = 64

# ----------------------------------------------------------------------------- the prompt

_OUR_PROMPT: Final = """\
You are a software developer on a small team that builds one Python project together. A \
coordinator runs the team in rounds: each round it sends you the shared task list, and you \
answer once. Only the action tags below do anything; the rest of your answer is ignored.

Actions:

Take a task that nobody owns, or one that is assigned to you:
<claim_task id="task-1" />

Write a file in the repository (give the whole file; it replaces any earlier version):
<edit_file path="relative/path.py">
complete file content
</edit_file>

Mark a task you own as finished:
<complete_task id="task-1" />

Run the tests:
<run_tests />

How to work:
- Work on the tasks assigned to you first.
- With nothing to do, take an unassigned task.
- For a task: write its code, run the tests, then mark it finished.
- Keep your answers short and act through the tags.
"""


class StudyRepoError(ValueError):
    """``--study-repo`` does not point at a checkout of the study's repository: a prompt file
    is missing or unreadable, or its role template has an unexpected shape. The message names
    the file. Raised before any run starts. Not retryable: fix the path."""


@dataclass(frozen=True)
class StudyPrompt:
    """A teammate system prompt and where it came from (``ours`` or ``study``)."""

    text: str
    source: Literal["ours", "study"]
    origin: str = "builtin"

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.text.encode()).hexdigest()

    @property
    def label(self) -> str:
        """What a run records (``RunSpec.prompt``): ``ours:<sha256>`` or ``study:<sha256>``."""
        return f"{self.source}:{self.sha256}"


def our_prompt() -> StudyPrompt:
    """This toolkit's teammate prompt (the default)."""
    return StudyPrompt(text=_OUR_PROMPT, source="ours")


ROLE_FUNCTION: Final = "_build_teammate_prompt"


def _read_prompt_file(path: Path) -> str:
    try:
        if path.stat().st_size > PROMPT_FILE_BYTES_MAX:
            raise StudyRepoError(f"{path}: larger than {PROMPT_FILE_BYTES_MAX} bytes")
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise StudyRepoError(f"{path}: missing (is --study-repo a checkout of the study's "
                             "repository?)") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise StudyRepoError(f"{path}: cannot read: {exc}") from exc


def _role_template(source: str, path: Path, base: str) -> str:
    """The role text of the study's teammate agent with its base prompt filled in, taken from
    the f-string in ``_build_teammate_prompt`` by parsing the file (never importing or running
    it): its literal parts verbatim, its one placeholder (the base-prompt parameter) = ``base``."""
    try:
        tree = ast.parse(source, filename=str(path))
    except (SyntaxError, ValueError, RecursionError) as exc:
        raise StudyRepoError(f"{path}: not parseable Python: {exc}") from exc
    fn = next((n for n in ast.walk(tree)
               if isinstance(n, ast.FunctionDef) and n.name == ROLE_FUNCTION), None)
    if fn is None:
        raise StudyRepoError(f"{path}: no function {ROLE_FUNCTION} (is --study-repo a checkout "
                             "of the study's repository?)")
    params = [a.arg for a in fn.args.args if a.arg != "self"]
    template = next((n for n in ast.walk(fn) if isinstance(n, ast.JoinedStr)), None)
    if template is None or not params:
        raise StudyRepoError(f"{path}: {ROLE_FUNCTION} has no f-string role template")
    parts: list[str] = []
    for value in template.values:
        if isinstance(value, ast.Constant) and isinstance(value.value, str):
            parts.append(value.value)
        elif (isinstance(value, ast.FormattedValue) and isinstance(value.value, ast.Name)
              and value.value.id == params[0] and value.conversion == -1
              and value.format_spec is None):
            parts.append(base)
        else:
            raise StudyRepoError(f"{path}: {ROLE_FUNCTION}'s template has a placeholder other "
                                 f"than {{{params[0]}}} (line {getattr(value, 'lineno', '?')})")
    return "".join(parts)


def load_study_prompt(repo: str | Path) -> StudyPrompt:
    """The study's own teammate system prompt from a checkout of its repository:
    ``agents/prompts/teammate_prompt.txt`` inside the role text of
    ``agents/teammate_agent.py``, as its teammate agents were built."""
    root = Path(repo)
    if not root.is_dir():
        raise StudyRepoError(f"--study-repo {root}: not a directory (a checkout of the study's "
                             "repository is expected)")
    base = _read_prompt_file(root / "agents" / "prompts" / "teammate_prompt.txt")
    role_path = root / "agents" / "teammate_agent.py"
    text = _role_template(_read_prompt_file(role_path), role_path, base)
    return StudyPrompt(text=text, source="study", origin=str(root))


# -------------------------------------------------------------------------------- rendering


def study_status(task: TaskView) -> str:
    """The study's four statuses from a view's three: an owned pending task is ``assigned``
    (the study harness shows a dealt or lead-assigned task as pending with its owner)."""
    if task.status == "done":
        return "done"
    if task.status == "claimed":
        return "in_progress"
    return "assigned" if task.owner else "pending"


def board_line(task: TaskView) -> str:
    owner = f" (Owner: {task.owner})" if task.owner else " (Unassigned)"
    deps = f" [Requires: {', '.join(task.dependencies)}]" if task.dependencies else ""
    return f"{ICONS[study_status(task)]} {task.id}: {task.title}{owner}{deps}"


def render_board(view: View) -> str:
    """The board as the study printed it each round: a header, a blank line, one line a task
    in file order (no descriptions, no file names)."""
    return "\n".join(["=== CURRENT TASKS ===\n", *(board_line(t) for t in view.tasks)])


def project_intro(project: Project | None) -> str:
    """Round one's project message: name, description, success criteria, repository."""
    if project is None:
        return "=== PROJECT ==="
    lines = [f"=== PROJECT: {project.name} ===", project.description]
    if project.success_criteria:
        lines += ["", f"Success Criteria: {project.success_criteria}"]
    if project.repository:
        lines += ["", f"Repository: {project.repository}"]
    return "\n".join(lines)


def dealt_tasks(view: View, agent: str) -> list[str]:
    """The agent's pre-assigned tasks in the deal's order (the study's topological order;
    file order if the view's tasks do not form a project, which the harness never shows)."""
    try:
        order = list(study_deal(Project(name="board", tasks=tuple(
            Task(id=t.id, dependencies=t.dependencies) for t in view.tasks)), view.team))
    except ValueError:  # pydantic's ValidationError included
        order = [t.id for t in view.tasks]
    return [tid for tid in order if (t := view.task(tid)) is not None and t.owner == agent]


def first_messages(view: View, agent: str, project: Project | None) -> list[str]:
    """What arrives before the first board: the mode's notice, then the project."""
    notes: list[str] = []
    mine = dealt_tasks(view, agent) if view.mode == "preassign" else []
    if mine:  # an agent dealt nothing gets no notice (as in the study)
        notes.append(f"Pre-assignment: your tasks for this run are {', '.join(mine)}."
                     "\nClaim and complete only these, in this order. Leave tasks that "
                     "belong to other agents alone.")
    elif view.mode == "lead" and len(view.team) > 1:  # no study data: names are needed here
        lead = view.team[0]
        workers = ", ".join(view.team[1:])
        if agent == lead:
            notes.append(f"You are {lead}, the lead of {workers}. Do not write code or claim "
                         "tasks: give every task to a teammate with "
                         '<assign_task id="TASK_ID" to="NAME" />.')
        else:
            notes.append(f"You are {agent}. The lead, {lead}, assigns tasks: work only on "
                         f"tasks the board shows with Owner: {agent}.")
    return [*notes, project_intro(project)]


# ---------------------------------------------------------------------------------- parsing


@dataclass(frozen=True)
class TagProblem:
    """What was wrong with a tag in a reply. ``kind``: ``malformed`` (an opening that is not a
    complete tag: the study dropped it silently), ``unsupported`` (a tag this harness does not
    carry out), ``too-long`` (an id, path or content over its bound), ``invalid`` (a value that
    does not validate), ``no-text`` (the reply had no text), ``cut`` (over the action cap)."""

    kind: Literal["malformed", "unsupported", "too-long", "invalid", "no-text", "cut"]
    tag: str
    detail: str

    def __str__(self) -> str:
        note = f"{self.kind} <{self.tag}>: {self.detail}"
        return note if len(note) <= NOTE_CHARS_MAX else note[: NOTE_CHARS_MAX - 1] + "…"


@dataclass(frozen=True)
class StudyActions:
    """A reply's actions in the study's group order (edits, claims, completions, assignments),
    whether it asked for a test run, and its problems."""

    actions: tuple[Action, ...] = ()
    run_tests: bool = False
    problems: tuple[TagProblem, ...] = ()


_ID: Final = r'"([^"]+)"'
_EDIT: Final = re.compile(r'<edit_file\s+path=' + _ID + r'>\s*(.*?)\s*</edit_file>', re.DOTALL)
_CLAIM: Final = re.compile(r'<claim_task\s+id=' + _ID + r'\s*/>')
_COMPLETE: Final = re.compile(r'<complete_task\s+id=' + _ID + r'\s*/>')
_TESTS: Final = re.compile(r'<run_tests\s*/>')
_ASSIGN: Final = re.compile(r'<assign_task\s+id=' + _ID + r'\s+to=' + _ID + r'\s*/>')
_OPENING: Final = re.compile(
    r"<(edit_file|claim_task|complete_task|run_tests|assign_task|broadcast|request_status|"
    r"synthesize)\b")
_UNSUPPORTED: Final = frozenset({"broadcast", "request_status", "synthesize"})
_LEADING_FENCE: Final = re.compile(r"\A```[^\n]*\n")
_TRAILING_FENCE: Final = re.compile(r"\n```\s*\Z")


def strip_fences(content: str) -> str:
    """The study's edit clean-up: a markdown fence line opening the content and a fence
    closing it are dropped (each only where it is)."""
    return _TRAILING_FENCE.sub("", _LEADING_FENCE.sub("", content, count=1), count=1)


def _snippet(text: str, at: int) -> str:
    return repr(text[at:at + 60])


def compile_error(path: str, content: str) -> str | None:
    """Why ``content`` does not compile as Python, or None. ``compile()`` only: nothing runs."""
    try:
        compile(content, path, "exec", dont_inherit=True)
    except SyntaxError as exc:
        return f"line {exc.lineno}: {exc.msg}"
    except (ValueError, RecursionError, MemoryError) as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


def _is_python(path: str) -> bool:
    return PurePosixPath(path).suffix == ".py"


def _edit(path: str, raw: str) -> Action | TagProblem:
    if path.startswith("repo/"):  # the study's agents sometimes prefixed the repository
        path = path[len("repo/"):]
    content = strip_fences(raw)
    if len(path) > PATH_CHARS_MAX:
        return TagProblem("too-long", "edit_file", f"path of {len(path)} chars > "
                          f"{PATH_CHARS_MAX}: {path[:60]!r}")
    if len(content) > CONTENT_CHARS_MAX:
        return TagProblem("too-long", "edit_file", f"{path}: content of {len(content)} chars "
                          f"> {CONTENT_CHARS_MAX}")
    passes = not _is_python(path) or compile_error(path, content) is None
    got = parse_action({"kind": "write", "file": path, "content": content, "passes": passes})
    return TagProblem("invalid", "edit_file", got) if isinstance(got, str) else got


def _task_action(kind: str, tag: str, task_id: str, **extra: str) -> Action | TagProblem:
    if len(task_id) > ID_CHARS_MAX or any(len(v) > ID_CHARS_MAX for v in extra.values()):
        return TagProblem("too-long", tag, f"id over {ID_CHARS_MAX} chars: {task_id[:60]!r}")
    got = parse_action({"kind": kind, "task": task_id, **extra})
    return TagProblem("invalid", tag, got) if isinstance(got, str) else got


def parse_study_reply(text: str) -> StudyActions:
    """The actions of a reply in the study's tag syntax, with its semantics: every tag kind is
    found anywhere in the text (a tag inside an edit's content counts too, as it did), grouped
    edits, claims, completions, assignments; one test run however many tags ask for it.

    Every opening of a known tag that is not the start of a complete tag is a ``malformed``
    problem (the study ignored it without a trace); never raises."""
    found: list[tuple[str, re.Match[str]]] = [
        *(("edit_file", m) for m in _EDIT.finditer(text)),
        *(("claim_task", m) for m in _CLAIM.finditer(text)),
        *(("complete_task", m) for m in _COMPLETE.finditer(text)),
        *(("assign_task", m) for m in _ASSIGN.finditer(text)),
        *(("run_tests", m) for m in _TESTS.finditer(text)),
    ]
    starts = {(tag, m.start()) for tag, m in found}
    problems: list[TagProblem] = []
    for m in _OPENING.finditer(text):
        tag = m.group(1)
        if tag in _UNSUPPORTED:
            problems.append(TagProblem("unsupported", tag, "no messages under the study "
                                       "harness (the study's teammates were not offered it)"))
        elif (tag, m.start()) not in starts:
            problems.append(TagProblem("malformed", tag, f"not a complete tag at char "
                                       f"{m.start()}: {_snippet(text, m.start())}"))
    actions: list[Action] = []
    for tag, m in found:
        got: Action | TagProblem
        if tag == "edit_file":
            got = _edit(m.group(1), m.group(2))
        elif tag == "claim_task":
            got = _task_action("claim", tag, m.group(1))
        elif tag == "complete_task":
            got = _task_action("complete", tag, m.group(1))
        elif tag == "assign_task":
            got = _task_action("assign", tag, m.group(1), agent=m.group(2))
        else:
            continue
        if isinstance(got, TagProblem):
            problems.append(got)
        else:
            actions.append(got)
    if len(actions) > REPLY_ACTIONS_MAX:
        problems.append(TagProblem("cut", "reply", f"{len(actions) - REPLY_ACTIONS_MAX} "
                                   f"action(s) over the cap of {REPLY_ACTIONS_MAX}"))
        actions = actions[:REPLY_ACTIONS_MAX]
    return StudyActions(actions=tuple(actions), run_tests=any(t == "run_tests" for t, _ in found),
                        problems=tuple(problems))


# ------------------------------------------------------------------------------- test runs


def check_files(contents: Mapping[str, str], project: Project) -> tuple[bool, str]:
    """The compile check standing in for the study's ``pytest -q``: every project file must
    have been written, and every Python file written must compile. Returns (passed, report)."""
    lines: list[str] = []
    project_files = [f for t in project.tasks for f in t.files]
    for f in project_files:
        if f not in contents:
            lines.append(f"MISSING {f}: not written yet")
    for path in sorted(contents):
        if _is_python(path):
            error = compile_error(path, contents[path])
            if error is not None:
                lines.append(f"FAILED {path}: does not compile: {error}")
    checked = sum(1 for p in contents if _is_python(p))
    lines.append(f"{len(lines)} problem(s); {checked} Python file(s) compiled, "
                 f"{len(project_files)} project file(s) expected")
    return len(lines) == 1, "\n".join(lines)


@dataclass
class CompileCheckStore:
    """The run's :class:`~agents.team.study_harness.Store`, seen through the compile check.

    Every call goes to ``inner`` unchanged; besides, each file write's content is kept, and a
    test run (the engine's one ``files`` call per ``<run_tests />``) compiles the files as they
    stand at that moment in the round, tells the agent's listener the outcome, and leaves files
    that do not compile out of the listing it returns, so the engine's ``tests`` event says
    what the agent is told about the project's files."""

    inner: Store
    project: Project
    contents: dict[str, str] = field(default_factory=dict)
    listeners: dict[str, Callable[[bool, str], None]] = field(default_factory=dict)

    @property
    def ops(self) -> int:
        return self.inner.ops

    @ops.setter
    def ops(self, value: int) -> None:
        self.inner.ops = value

    def snapshot(self) -> tuple[dict[str, tuple[dict[str, Any], int]],
                                dict[str, tuple[str, int]]]:
        return self.inner.snapshot()

    def put_task(self, agent: str, task_id: str, rec: dict[str, Any], expect: int) -> int:
        return self.inner.put_task(agent, task_id, rec, expect)

    def read_task(self, agent: str, task_id: str) -> dict[str, Any] | None:
        return self.inner.read_task(agent, task_id)

    def put_file(self, agent: str, path: str, content: str,
                 expect: int | None = None) -> int | None:
        version = self.inner.put_file(agent, path, content, expect)
        if version is not None:  # only once the write is acknowledged
            self.contents[path] = content
        return version

    def files(self, agent: str) -> dict[str, tuple[str, int]]:
        listing = self.inner.files(agent)
        passed, report = check_files(self.contents, self.project)
        listener = self.listeners.get(agent)
        if listener is not None:
            listener(passed, report)
        return {p: v for p, v in listing.items()
                if not (_is_python(p) and p in self.contents
                        and compile_error(p, self.contents[p]) is not None)}


def feedback_text(note: Feedback) -> str:
    """What the ablation's fixes tell an agent about its previous reply, in the harness's voice
    (the study's harness never said any of it: ``--fix``)."""
    if note.kind == "claim_held":
        return f"⚠️ Your claim on {note.task} was refused: {note.holder} holds it."
    if note.kind == "write_stale":
        return (f"⚠️ Your edit of {note.file} was refused: the file changed since the board "
                "you answered was shown. Read the board again before writing it.")
    if note.kind == "complete_refused":
        why = ("its dependencies are not done" if note.reason == "deps"
               else "you no longer hold it")
        return f"⚠️ Your completion of {note.task} was refused: {why}."
    return f"⚠️ Your claims lapsed while you were silent: {note.reason}. Claim again."


# ------------------------------------------------------------------------------------ brain


class StudyChatBrain(OpenAIBrain):
    """An LLM agent as the study ran one: a conversation in the study's shape (see the module
    docstring), answered in action tags. Same transport, retries and bounds as
    :class:`~agents.brains.llm.OpenAIBrain`; ``decide`` never raises.

    The study harness calls :meth:`bind_study_run` before the first round: it hands over the
    project (for round one's message) and the run's store (wrapped once per run in a
    :class:`CompileCheckStore`, which reports this agent's test runs back to it)."""

    def __init__(self, config: LLMConfig, agent: str, prompt: StudyPrompt | None = None) -> None:
        super().__init__(config, agent)
        self.prompt = prompt or our_prompt()
        self.project: Project | None = None
        self.history: list[dict[str, str]] = []
        """What the model saw and said, kept to the window (older messages are never sent)."""
        self.buffer: list[dict[str, str]] = []
        """Messages since the last answered exchange (kept if the exchange fails)."""
        self._started = False

    def bind_study_run(self, project: Project, store: Store) -> Store:
        self.project = project
        checked = store if isinstance(store, CompileCheckStore) else CompileCheckStore(store,
                                                                                       project)
        checked.listeners[self.agent] = self.tests_ran
        return checked

    def receive(self, text: str) -> None:
        self.buffer.append({"role": "user", "content": FROM_SYSTEM + text})
        del self.buffer[:-BUFFER_MESSAGES_MAX]

    def tests_ran(self, passed: bool, report: str) -> None:
        """A test run of this agent's: its result is in the next round's messages."""
        self.receive(PASSED if passed else f"{FAILED}\n{report[-TEST_TAIL_CHARS:]}")

    def decide(self, view: View) -> Reply:
        if not self._started:
            self._started = True
            for text in first_messages(view, self.agent, self.project):
                self.receive(text)
        for note in view.feedback:  # only under the ablation's fixes (the study said nothing)
            self.receive(feedback_text(note))
        self.receive(render_board(view))
        return super().decide(view)

    def messages(self) -> list[dict[str, str]]:
        """The system prompt, the history window, then the messages since the last reply."""
        window = self.history[-self.config.history_max:] if self.config.history_max else []
        return [{"role": "system", "content": self.prompt.text}, *window, *self.buffer]

    def request_body(self, view: View) -> dict[str, Any]:
        return {"model": self.config.model, "messages": self.messages(),
                "temperature": self.config.temperature, "max_tokens": self.config.max_tokens}

    def reply_from(self, message: Mapping[str, Any], latency_s: float, tokens_in: int,
                   tokens_out: int) -> Reply:
        content = message.get("content")
        text = content if isinstance(content, str) else ""
        keep = self.config.history_max
        self.history = [*self.history, *self.buffer,
                        {"role": "assistant", "content": text}][-keep:] if keep else []
        self.buffer = []
        parsed = parse_study_reply(text)
        problems: Sequence[TagProblem] = parsed.problems
        if not isinstance(content, str):
            problems = [TagProblem("no-text", "reply", "the answer had no text content"),
                        *problems]
        return Reply(actions=parsed.actions, run_tests=parsed.run_tests, latency_s=latency_s,
                     tokens_in=tokens_in, tokens_out=tokens_out,
                     invalid=tuple(str(p) for p in problems))


def study_chat_brains(config: LLMConfig, prompt: StudyPrompt | None = None
                      ) -> Callable[[RunSpec, int, str], OpenAIBrain]:
    """The ``--brain openai`` factory: :class:`StudyChatBrain` under the study harness, the
    board harness's :class:`OpenAIBrain` otherwise."""

    def factory(spec: RunSpec, index: int, name: str) -> OpenAIBrain:
        if spec.harness == "study":
            return StudyChatBrain(config, name, prompt)
        return OpenAIBrain(config, name)

    return factory
