"""An LLM brain: renders a :class:`~agents.actions.View` into an OpenAI-compatible
chat-completions request with tools, and turns the tool calls back into validated actions.

Why stdlib HTTP (``urllib.request``): the brain talks to any OpenAI-compatible server (a hosted
API or a local model server) and must not add dependencies. Why it never raises: a run with a
flaky or hostile model server must keep going, so every failure (network, HTTP status, malformed
body, bad tool call) becomes a note in :attr:`Reply.invalid` that the runtime records.

Nothing the model writes is ever executed: :func:`check_source` only compiles and inspects it.
"""

from __future__ import annotations

import ast
import http.client
import ipaddress
import json
import os
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import PurePosixPath
from typing import Any, Final

import structlog
from pydantic import BaseModel, ConfigDict, Field, field_validator

from quorumboard.agents.team.actions import (
    ACTIONS_PER_REPLY_MAX,
    CONTENT_CHARS_MAX,
    Action,
    Reply,
    View,
    parse_action,
)

__all__ = [
    "BACKOFF_CAP_S",
    "RESPONSE_BYTES_MAX",
    "TOOLS",
    "TOOL_KINDS",
    "LLMConfig",
    "OpenAIBrain",
    "backoff_delay",
    "build_messages",
    "check_source",
    "parse_tool_calls",
]

log = structlog.get_logger(__name__)

BACKOFF_CAP_S: Final = 8.0
"""No wait between attempts exceeds this, whatever the server's Retry-After says."""
RESPONSE_BYTES_MAX: Final = 4 * 1024 * 1024
"""A response body larger than this is refused: a hostile server cannot exhaust memory."""
ERROR_SNIPPET_BYTES: Final = 512
"""How much of an HTTP error body is quoted in the error note."""
NOTE_CHARS_MAX: Final = 300
"""Bound on every ``invalid`` note (they quote model output, which is untrusted)."""
MESSAGE_LINE_CHARS_MAX: Final = 1_000
DESCRIPTION_CHARS_MAX: Final = 600
_READ_CHUNK: Final = 64 * 1024

TOOL_KINDS: Final[Mapping[str, str]] = {
    "claim_task": "claim",
    "write_file": "write",
    "complete_task": "complete",
    "assign_task": "assign",
    "send_message": "message",
    "idle": "idle",
}
"""Tool name -> :mod:`agents.actions` kind."""


def _tool(name: str, description: str, properties: dict[str, Any],
          required: Sequence[str]) -> dict[str, Any]:
    return {
        "type": "function",
        "function": {
            "name": name,
            "description": description,
            "parameters": {
                "type": "object",
                "properties": properties,
                "required": list(required),
                "additionalProperties": False,
            },
        },
    }


_STR: Final = {"type": "string"}
TOOLS: Final[tuple[dict[str, Any], ...]] = (
    _tool("claim_task", "Take ownership of a ready task (dependencies done, nobody holds it).",
          {"task": {**_STR, "description": "task id"}}, ["task"]),
    _tool("write_file", "Write the full content of one of a task's files (Python source that "
          "defines a top-level function named after the file's stem).",
          {"file": {**_STR, "description": "file name, as listed on the task"},
           "content": {**_STR, "description": "the whole file content"},
           "task": {**_STR, "description": "id of the task this write is for"}},
          ["file", "content", "task"]),
    _tool("complete_task", "Mark a task you own done (its file must have a passing write).",
          {"task": {**_STR, "description": "task id"}}, ["task"]),
    _tool("assign_task", "Assign a ready task to a worker (lead only).",
          {"task": {**_STR, "description": "task id"},
           "agent": {**_STR, "description": "the worker's name"}}, ["task", "agent"]),
    _tool("send_message", "Post a message to one teammate, or to everyone if `to` is omitted.",
          {"text": _STR, "to": {**_STR, "description": "one agent's name"}}, ["text"]),
    _tool("idle", "Do nothing this turn (waiting, or nothing to do).",
          {"reason": _STR}, []),
)
_TOOL_PARAMS: Final[Mapping[str, frozenset[str]]] = {
    t["function"]["name"]: frozenset(t["function"]["parameters"]["properties"]) for t in TOOLS
}


class LLMConfig(BaseModel):
    """Where the model is and how patiently to ask it. Every knob is bounded so a typo in a
    sweep file cannot make a run hang for hours or retry forever."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    base_url: str = Field(min_length=1, max_length=2_000)
    """Up to the API root, e.g. ``http://127.0.0.1:8000/v1`` (``/chat/completions`` is added)."""
    model: str = Field(min_length=1, max_length=200)
    temperature: float = Field(default=0.2, ge=0.0, le=2.0)
    max_tokens: int = Field(default=1024, ge=1, le=131_072)
    timeout_s: float = Field(default=60.0, gt=0.0, le=600.0)
    """Bounds each socket wait and the body read of each attempt."""
    retries_max: int = Field(default=3, ge=0, le=10)
    """Attempts after the first, on connection errors, timeouts, HTTP 429 and 5xx."""
    backoff_s: float = Field(default=0.5, ge=0.0, le=BACKOFF_CAP_S)
    """First wait between attempts; doubles each retry, capped at :data:`BACKOFF_CAP_S`."""
    api_key_env: str = Field(default="OPENAI_API_KEY", min_length=1, max_length=200)
    """Environment variable holding the API key, read at call time (never stored or logged)."""
    history_max: int = Field(default=20, ge=0, le=500)
    """How many of the view's most recent messages go into the prompt."""

    @field_validator("base_url")
    @classmethod
    def _http_only(cls, v: str) -> str:
        """Refuse ``file://`` and friends: urllib would happily read local files."""
        parts = urllib.parse.urlsplit(v)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("base_url must be an http(s) URL with a host")
        return v.rstrip("/")


# ---------------------------------------------------------------------------------------------
# The runtime's check of a write


def check_source(file: str, content: str) -> bool:
    """Whether ``content`` compiles as Python and defines a top-level ``def <stem>(`` where
    ``<stem>`` is the file's stem (``fmt_num.py`` -> ``fmt_num``).

    This is the runtime's stand-in for running the task's tests: it parses and compiles only,
    never executes (top-level statements such as ``os._exit(1)`` are not run)."""
    if len(content) > CONTENT_CHARS_MAX:
        return False
    stem = PurePosixPath(file.replace("\\", "/")).stem
    if not stem.isidentifier():
        return False
    try:
        tree = ast.parse(content, filename=file, mode="exec")
        compile(tree, file, "exec")  # catches what the parser lets through (e.g. bare return)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return False
    return any(isinstance(node, ast.FunctionDef) and node.name == stem for node in tree.body)


# ---------------------------------------------------------------------------------------------
# Prompt


_ROLE: Final[Mapping[str, str]] = {
    "preassign": (
        "Tasks were assigned up front. Work ONLY on tasks whose owner is you: when one is ready "
        "(its dependencies are done), write its files with write_file and then complete_task it. "
        "Never claim or touch anyone else's task."),
    "decentralized": (
        "There is no lead. Claim a ready, unowned task yourself with claim_task; once you own "
        "it, write its files with write_file and then complete_task it. Claims by agents listed "
        "as stale may be taken over."),
    "hybrid": (
        "Claim ready, unowned tasks yourself with claim_task (assignments may also appear); once "
        "you own a task, write its files with write_file and then complete_task it. Claims by "
        "agents listed as stale may be taken over."),
}
_LEAD: Final = (
    "You are the LEAD: do not write code. Assign each ready, unowned task to a worker with "
    "assign_task, spreading the work evenly across workers and avoiding stale workers.")
_LEAD_WORKER: Final = (
    "The lead ({lead}) assigns tasks. Work ONLY on tasks assigned to you (owner is you): write "
    "their files with write_file and then complete_task them. Do not claim tasks.")
_DEFAULT_ROLE: Final = (
    "Coordinate through the board: work on tasks you own, writing their files with write_file "
    "and then complete_task; claim ready, unowned tasks with claim_task when allowed.")
_COMMON: Final = (
    "Every file is Python and must define a top-level function named after the file's stem "
    "(file fmt_num.py -> def fmt_num(...)). Act only through the tools; call idle if there is "
    "nothing useful to do. At most {n} tool calls per reply.")


def _system_prompt(view: View, agent: str) -> str:
    if view.mode == "lead":
        lead = view.team[0] if len(view.team) > 1 else None
        role = _LEAD if lead == agent else (
            _LEAD_WORKER.format(lead=lead) if lead is not None else _ROLE["decentralized"])
    else:
        role = _ROLE.get(view.mode, _DEFAULT_ROLE)
    return (f"You are agent {agent} in a team of {len(view.team)} "
            f"({', '.join(view.team)}) building a software project on a shared task board, "
            f"coordination mode '{view.mode}'. {role} "
            + _COMMON.format(n=ACTIONS_PER_REPLY_MAX))


def _cell(s: str, limit: int = 80) -> str:
    """One table cell: no newlines or pipes (they would break the table), bounded."""
    s = " ".join(s.replace("|", "/").split())
    return s if len(s) <= limit else s[: limit - 1] + "…"


def _unfence(s: str) -> str:
    """Messages are other agents' free text: keep them from opening a fenced block that could
    be mistaken for the board's machine-readable block."""
    return s.replace("```", "'''")


def _board_json(view: View, agent: str) -> str:
    data = {
        "agent": agent,
        "mode": view.mode,
        "round": view.round,
        "team": list(view.team),
        "tasks": [{"id": t.id, "status": t.status, "owner": t.owner,
                   "dependencies": list(t.dependencies), "files": list(t.files)}
                  for t in view.tasks],
        "ready": [t.id for t in view.ready],
        "files": [{"file": f.file, "version": f.version, "author": f.author,
                   "passes": f.passes} for f in view.files],
        "stale_owners": list(view.stale_owners),
    }
    return _unfence(json.dumps(data, separators=(",", ":")))


def _user_prompt(view: View, agent: str, history_max: int) -> str:
    lines = [f"Round {view.round}, t={view.time_s:.1f}s. You are {agent}.", "",
             "## Tasks", "id | status | owner | deps | files | title"]
    lines += [" | ".join((_cell(t.id, 64), t.status, _cell(t.owner or "-", 64),
                          _cell(",".join(t.dependencies) or "-", 200),
                          _cell(",".join(t.files) or "-", 200), _cell(t.title)))
              for t in view.tasks]
    ready = view.ready
    lines += ["", "## Ready (pending, dependencies done)",
              ", ".join(t.id for t in ready) or "(none)"]
    mine = [t for t in view.tasks if t.owner == agent and t.status != "done"]
    details = {t.id: t for t in (*mine, *ready) if t.description}
    if details:
        lines += ["", "## Details"]
        lines += [f"- {_cell(t.id, 64)}: {_cell(t.description, DESCRIPTION_CHARS_MAX)}"
                  for t in details.values()]
    lines += ["", "## Files (file | version | author | passes)"]
    lines += [f"{_cell(f.file, 200)} | v{f.version} | {_cell(f.author, 64)} | "
              f"{'yes' if f.passes else 'no'}" for f in view.files] or ["(none)"]
    lines += ["", "## Stale owners", ", ".join(view.stale_owners) or "(none)"]
    recent = view.messages[-history_max:] if history_max > 0 else ()
    lines += ["", f"## Messages (last {len(recent)}, oldest first)"]
    lines += [f"- {_unfence(_cell(m, MESSAGE_LINE_CHARS_MAX))}" for m in recent] or ["(none)"]
    lines += ["", "## Board (machine-readable)", "```json", _board_json(view, agent), "```"]
    return "\n".join(lines)


def build_messages(view: View, agent: str, history_max: int = 20) -> list[dict[str, str]]:
    """The chat messages for one decision: the agent's role for ``view.mode`` (system), then
    the board as a table plus a fenced JSON block of the same facts (user). The JSON block is
    there so tools and test doubles can read the board without scraping the table."""
    return [{"role": "system", "content": _system_prompt(view, agent)},
            {"role": "user", "content": _user_prompt(view, agent, history_max)}]


# ---------------------------------------------------------------------------------------------
# Tool calls -> actions


def _short(x: object, limit: int = 80) -> str:
    s = x if isinstance(x, str) else repr(x)
    return s if len(s) <= limit else s[: limit - 1] + "…"


def _note(s: str) -> str:
    return s if len(s) <= NOTE_CHARS_MAX else s[: NOTE_CHARS_MAX - 1] + "…"


def _one_call(call: object) -> Action | str:
    """One tool call to an action, or a note saying what was wrong with it."""
    if not isinstance(call, Mapping):
        return f"tool call is not an object: {_short(call)}"
    fn = call.get("function")
    if not isinstance(fn, Mapping) or not isinstance(fn.get("name"), str):
        return f"tool call without a function name: {_short(call)}"
    name: str = fn["name"]
    kind = TOOL_KINDS.get(name)
    if kind is None:
        return f"unknown tool {_short(name, 64)!r}"
    raw = fn.get("arguments")
    if raw is None or raw == "":
        args: object = {}
    elif isinstance(raw, str):
        try:
            args = json.loads(raw)
        except (ValueError, RecursionError) as exc:
            return f"{name}: arguments are not JSON ({_short(str(exc))}): {_short(raw)}"
    else:
        args = raw  # some servers send the object itself instead of a JSON string
    if not isinstance(args, dict):
        return f"{name}: arguments are not a JSON object: {_short(args)}"
    extra = sorted(str(k) for k in args if k not in _TOOL_PARAMS[name])
    if extra:
        return f"{name}: unexpected argument(s) {_short(', '.join(extra))}"
    data: dict[str, object] = {**args, "kind": kind}
    if kind == "write":
        file, content = args.get("file"), args.get("content", "")
        data["passes"] = (isinstance(file, str) and isinstance(content, str)
                          and check_source(file, content))
    parsed = parse_action(data)
    if isinstance(parsed, str):  # "complete.task: Field required" -> "task: Field required"
        return f"{name}: {parsed.removeprefix(kind + '.')}"
    return parsed


def parse_tool_calls(calls: object) -> tuple[tuple[Action, ...], tuple[str, ...]]:
    """Validated actions and notes on what did not validate. A write's ``passes`` is set by
    :func:`check_source`, never by the model. Calls beyond ACTIONS_PER_REPLY_MAX are cut."""
    if calls is None:
        return (), ()
    if not isinstance(calls, list):
        return (), (f"tool_calls is not a list: {_short(calls)}",)
    actions: list[Action] = []
    invalid: list[str] = []
    for call in calls[:ACTIONS_PER_REPLY_MAX]:
        result = _one_call(call)
        if isinstance(result, str):
            invalid.append(_note(result))
        else:
            actions.append(result)
    if len(calls) > ACTIONS_PER_REPLY_MAX:
        invalid.append(f"{len(calls) - ACTIONS_PER_REPLY_MAX} tool call(s) cut: at most "
                       f"{ACTIONS_PER_REPLY_MAX} per reply")
    return tuple(actions), tuple(invalid)


# ---------------------------------------------------------------------------------------------
# HTTP


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """A redirect could carry the bearer key to another host: refuse them all."""

    def redirect_request(self, req: urllib.request.Request, fp: Any, code: int, msg: str,
                         headers: Any, newurl: str) -> None:
        return None


class _Failure(Exception):
    """One failed attempt; ``retry`` says whether another attempt may help."""

    def __init__(self, what: str, *, retry: bool, retry_after_s: float | None = None) -> None:
        super().__init__(what)
        self.what = what
        self.retry = retry
        self.retry_after_s = retry_after_s


def backoff_delay(attempt: int, backoff_s: float, retry_after_s: float | None = None) -> float:
    """Wait before retry number ``attempt`` (1-based): ``backoff_s * 2**(attempt-1)``, or the
    server's Retry-After if longer, never more than :data:`BACKOFF_CAP_S`."""
    delay = backoff_s * 2.0 ** min(max(attempt - 1, 0), 16)
    if retry_after_s is not None and retry_after_s > delay:
        delay = retry_after_s
    return max(0.0, min(delay, BACKOFF_CAP_S))


def _is_loopback(host: str | None) -> bool:
    if host is None:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _retry_after(headers: Any) -> float | None:
    value = headers.get("Retry-After") if headers is not None else None
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None  # an HTTP date: fall back to our own backoff


def _read_bounded(resp: Any, limit: int, deadline: float) -> bytes:
    """Read the body in chunks, refusing more than ``limit`` bytes or reading past
    ``deadline`` (a server trickling bytes cannot hold the agent forever)."""
    length = resp.headers.get("Content-Length")
    if length is not None and length.strip().isdigit() and int(length) > limit:
        raise _Failure(f"response too large ({int(length)} bytes > {limit})", retry=False)
    chunks: list[bytes] = []
    total = 0
    read = getattr(resp, "read1", resp.read)
    while True:
        if time.monotonic() > deadline:
            raise _Failure("timed out reading the response body", retry=True)
        chunk: bytes = read(_READ_CHUNK)
        if not chunk:
            return b"".join(chunks)
        total += len(chunk)
        if total > limit:
            raise _Failure(f"response too large (> {limit} bytes)", retry=False)
        chunks.append(chunk)


def _error_snippet(exc: urllib.error.HTTPError) -> str:
    try:
        body = exc.read(ERROR_SNIPPET_BYTES)
    except (OSError, http.client.HTTPException):
        return ""
    finally:
        exc.close()
    return _short(" ".join(body.decode("utf-8", "replace").split()), 200) if body else ""


class OpenAIBrain:
    """A brain backed by an OpenAI-compatible chat-completions server.

    ``decide`` never raises: failures become ``Reply.invalid`` notes (``"llm error: ..."`` for
    the exchange itself), so a dead model server costs turns, not the run."""

    def __init__(self, config: LLMConfig, agent: str) -> None:
        self.config = config
        self.agent = agent
        self._url = f"{config.base_url}/chat/completions"
        handlers: list[urllib.request.BaseHandler] = [_NoRedirect()]
        if _is_loopback(urllib.parse.urlsplit(config.base_url).hostname):
            handlers.append(urllib.request.ProxyHandler({}))  # a local server is never proxied
        self._opener = urllib.request.build_opener(*handlers)

    def request_body(self, view: View) -> dict[str, Any]:
        """The chat-completions request for one decision (exposed for inspection and tests)."""
        return {
            "model": self.config.model,
            "messages": build_messages(view, self.agent, self.config.history_max),
            "tools": list(TOOLS),
            "tool_choice": "auto",
            "temperature": self.config.temperature,
            "max_tokens": self.config.max_tokens,
        }

    def decide(self, view: View) -> Reply:
        """Ask the model what to do; ``latency_s`` is the wall time of the exchange(s),
        including waits between retries (the agent was not acting during them)."""
        start = time.monotonic()
        try:
            body = json.dumps(self.request_body(view)).encode()
        except (TypeError, ValueError) as exc:  # not reachable with a valid View; belt and braces
            return Reply(latency_s=0.0, invalid=(_note(f"llm error: cannot encode request: {exc}"),))
        try:
            data = self._exchange(body)
        except _Failure as exc:
            return Reply(latency_s=time.monotonic() - start,
                         invalid=(_note(f"llm error: {exc.what}"),))
        latency = time.monotonic() - start
        tokens_in, tokens_out = _usage(data)
        try:
            message = data["choices"][0]["message"]
            if not isinstance(message, dict):
                raise TypeError("message is not an object")
        except (KeyError, IndexError, TypeError) as exc:
            return Reply(latency_s=latency, tokens_in=tokens_in, tokens_out=tokens_out,
                         invalid=(_note(f"llm error: malformed response: no "
                                        f"choices[0].message ({_short(str(exc))})"),))
        return self.reply_from(message, latency, tokens_in, tokens_out)

    def reply_from(self, message: Mapping[str, Any], latency_s: float, tokens_in: int,
                   tokens_out: int) -> Reply:
        """The reply an answered exchange makes: its tool calls, validated. A brain that asks
        for another answer format (the study's action tags) overrides this and
        :meth:`request_body`, and keeps the transport."""
        actions, invalid = parse_tool_calls(message.get("tool_calls"))
        return Reply(actions=actions, latency_s=latency_s, tokens_in=tokens_in,
                     tokens_out=tokens_out, invalid=invalid)

    def _headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        key = os.environ.get(self.config.api_key_env)
        if key:
            headers["Authorization"] = f"Bearer {key}"
        return headers

    def _exchange(self, body: bytes) -> dict[str, Any]:
        """POST with bounded retries; the parsed JSON object, or :class:`_Failure`."""
        attempts = self.config.retries_max + 1
        for attempt in range(1, attempts + 1):
            try:
                return self._attempt(body)
            except _Failure as exc:
                last = attempt == attempts or not exc.retry
                delay = 0.0 if last else backoff_delay(attempt, self.config.backoff_s,
                                                       exc.retry_after_s)
                log.warning("llm_attempt_failed", agent=self.agent, url=self._url,
                            attempt=attempt, attempts=attempts, error=exc.what,
                            retry=not last, delay_s=round(delay, 3))
                if last:
                    if exc.retry and attempts > 1:
                        raise _Failure(f"{exc.what} (after {attempts} attempts)",
                                       retry=False) from exc
                    raise
                time.sleep(delay)
        raise AssertionError("unreachable")  # pragma: no cover

    def _attempt(self, body: bytes) -> dict[str, Any]:
        timeout = self.config.timeout_s
        req = urllib.request.Request(self._url, data=body, headers=self._headers(),
                                     method="POST")
        deadline = time.monotonic() + timeout
        try:
            with self._opener.open(req, timeout=timeout) as resp:
                raw = _read_bounded(resp, RESPONSE_BYTES_MAX, deadline)
        except urllib.error.HTTPError as exc:
            status = exc.code
            snippet = _error_snippet(exc)
            what = f"HTTP {status}" + (f": {snippet}" if snippet else "")
            retry = status == 429 or 500 <= status <= 599
            raise _Failure(what, retry=retry, retry_after_s=_retry_after(exc.headers)) from exc
        except urllib.error.URLError as exc:  # refused, DNS, timeout while connecting/sending
            what = (f"timed out after {timeout:g}s" if isinstance(exc.reason, TimeoutError)
                    else f"connection failed: {_short(str(exc.reason), 200)}")
            raise _Failure(what, retry=True) from exc
        except TimeoutError as exc:
            raise _Failure(f"timed out after {timeout:g}s", retry=True) from exc
        except (OSError, http.client.HTTPException) as exc:  # reset, bad status line, ...
            raise _Failure(f"connection failed: {type(exc).__name__}: {_short(str(exc), 200)}",
                           retry=True) from exc
        except ValueError as exc:  # e.g. a header value urllib refuses: retrying won't help
            raise _Failure(f"bad request: {_short(str(exc), 200)}", retry=False) from exc
        try:
            data = json.loads(raw)
        except (ValueError, RecursionError) as exc:
            raise _Failure(f"malformed response: body is not JSON: "
                           f"{_short(raw.decode('utf-8', 'replace'))}", retry=False) from exc
        if not isinstance(data, dict):
            raise _Failure(f"malformed response: body is not a JSON object: {_short(data)}",
                           retry=False)
        return data


def _usage(data: Mapping[str, Any]) -> tuple[int, int]:
    """Token counts from ``usage`` (0 when absent or not a non-negative integer)."""
    usage = data.get("usage")
    if not isinstance(usage, Mapping):
        return 0, 0

    def count(key: str) -> int:
        v = usage.get(key)
        return v if isinstance(v, int) and not isinstance(v, bool) and v >= 0 else 0

    return count("prompt_tokens"), count("completion_tokens")
