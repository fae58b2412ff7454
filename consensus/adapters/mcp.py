"""``quorumboard mcp``: one agent's seat at the board, served over MCP (the official SDK).

An MCP host (Claude Code, Cursor, the OpenAI Agents SDK, Letta ...) starts one of these per
agent; ``--agent`` is the agent's identity, and every write goes through this process's one
:class:`~quorumboard.consensus.Board` session, so a retried call applies at most once. The
server builds on the public client only.

Why the shapes below:

* **Claims live while the agent is active.** Each tool call renews the claims this process
  holds, ``board_keepalive`` renews one, a pending ``board_wait`` keeps them alive, and a claim
  lapses after ``ttl_s`` without any of these: a stalled model loses its task to another agent,
  which is the board's recovery story. They are released when the server exits.
* **Writes are fenced by themselves.** A write to a key this agent has claimed carries that
  claim's fencing token; ``claim=K`` attaches the token of the claim on K to a write elsewhere
  (a task's output), so a write after the claim was lost is refused (``FencedOut``) instead of
  overwriting the new owner's work.
* **Errors a model can act on.** A refusal is an MCP tool error whose text starts with the error
  class and reason, then a JSON object ``{"error", "message", "retry_safe", "current", "hint"}``
  (``current``: the key's version as the refusal saw it, to merge and retry with).
* **Waiting without a thread.** ``board_wait`` is a long poll on asyncio (at most
  :data:`WAIT_TIMEOUT_S_MAX`, so hosts with short tool timeouts can use it): a waiting call
  holds no worker thread, and cancelling its request closes its connection.
* **Resources are cues.** ``board://{+key}`` reads a key; hosts that listen get a
  resource-updated notification when it changes. Notifications carry no payload and are not
  replayed: ``board_wait`` is the gap-free path.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import hmac
import inspect
import json
import os
import signal
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import anyio
import anyio.to_thread
from mcp.server import MCPServer
from mcp.server.mcpserver.exceptions import (
    ResourceError,
    ResourceNotFoundError,
    ToolError,
    UnexpectedToolError,
)
from mcp.server.subscriptions import InMemorySubscriptionBus, ResourceUpdated, ServerEvent
from mcp.types import CallToolResult, TextContent
from pydantic import ValidationError

from quorumboard.consensus import (
    AuthError,
    Board,
    BoardError,
    Claim,
    ClaimHeld,
    Conflict,
    Entry,
    Event,
    EventPage,
    FencedOut,
    FenceRef,
    InvalidCommand,
    InvalidKey,
    NotFound,
    OutcomeUnknown,
    PolicyRejected,
    RevisionCompacted,
    SessionExpired,
    SpaceQuotaExceeded,
    StaleVersion,
    TooManyConnections,
    Unavailable,
    configure_logging,
    connect,
)

__all__ = ["BoardAgent", "build_server", "main", "running", "serving", "tool_error"]

T = TypeVar("T")

WAIT_TIMEOUT_S_MAX = 25.0
"""``board_wait`` never waits longer: many hosts time a tool call out at about 30 s."""
WAIT_EVENTS_MAX = 100
"""Events per ``board_wait`` answer (``more: true`` when cut): a model's context is small."""
LIST_LIMIT_MAX = 1_000
HISTORY_LIMIT_MAX = 1_000
CLAIM_TTL_S_MAX = 86_400.0
RENEW_SKIP_FRACTION = 20
"""A tool call within ttl/20 of a claim's last renewal does not renew it again (bursts of
parallel calls cost one keepalive, and the claim still lapses within 5% of ttl_s of silence)."""
RENEW_DURING_WAIT_FRACTION = 3
"""A pending ``board_wait`` renews the claims every ttl/3 (the agent is active: it waits)."""
CUE_BACKOFF_S = 1.0
EXIT_TIMEOUT_S = 5.0
"""Releasing the claims at exit gives up after this long (a cluster that is down cannot be told;
the claims then lapse after their TTL)."""
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")

_HINTS: list[tuple[type[BoardError], str]] = [
    (StaleVersion, "someone wrote first: board_get the key, merge your change into its value, "
                   "then board_put again with expect_version=current.version"),
    (FencedOut, "you no longer own this claim (it lapsed or was taken over): stop the task; "
                "board_get to see the new owner, board_claim again to retry it"),
    (ClaimHeld, "another agent holds it (current.author): pick other work, or board_wait on the "
                "key until its claim is released or lapses"),
    (PolicyRejected, "the key's conflict policy refused the edit: read the key and its "
                     "board_history to see why, then adapt the value"),
    (Conflict, "read the key (board_get) and write again from what is there now"),
    (RevisionCompacted, "the board no longer keeps events that old: board_list the prefix and "
                        "board_wait from its revision"),
    (SessionExpired, "the outcome of that write cannot be known: board_get the key to see "
                     "whether it applied before writing again"),
    (SpaceQuotaExceeded, "the board is full (its space quota): delete keys that are no longer "
                         "needed, or write a smaller value, then write again"),
    (OutcomeUnknown, "retry the same call: it applies at most once"),
    (TooManyConnections, "the replica is at its connection cap: retry later; if it persists "
                         "the operator must raise the replicas' connections_max"),
    (Unavailable, "the cluster is electing a leader or unreachable: retry the same call"),
    (NotFound, "the key or claim does not exist: board_list the prefix to see what does"),
    (InvalidCommand, "fix the argument named in the message; retrying it unchanged fails again"),
    (AuthError, "the cluster refused this server's secret: the host config must pass the "
                "cluster's secret in the variable --secret-env names"),
]


# ----------------------------------------------------------------------------------- errors


def _current(exc: BoardError) -> dict[str, Any] | None:
    entry = exc.current if isinstance(exc, Conflict) else None
    if entry is None:
        return None
    return {"key": entry.key, "version": entry.version, "author": entry.author,
            "revision": entry.mod_revision}


def tool_error(exc: BoardError) -> ToolError:
    """The MCP tool error for a board refusal or failure: ``Class (reason): message`` on the
    first line (what a model reads first), then a JSON object a program can parse."""
    name = type(exc).__name__
    reason = exc.reason if isinstance(exc, Conflict) else ""
    message = str(exc)
    head = f"{name} ({reason}): {message}" if reason else f"{name}: {message}"
    body: dict[str, Any] = {
        "error": name,
        "message": message,
        "retry_safe": isinstance(exc, Unavailable),
        "current": _current(exc),
        "hint": next((hint for cls, hint in _HINTS if isinstance(exc, cls)), ""),
    }
    if isinstance(exc, RevisionCompacted):
        body["compact_revision"] = exc.compact_revision
    return ToolError(f"{head}\n{json.dumps(body, sort_keys=True)}")


def _invalid(message: str, key: bool = False) -> ToolError:
    return tool_error(InvalidKey(message) if key else InvalidCommand(message))


def _int_arg(name: str, value: object, low: int, high: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low \
            or (high is not None and value > high):
        bound = f"{low}..{high}" if high is not None else f">= {low}"
        raise _invalid(f"{name} must be an integer {bound}, got {value!r}")
    return value


def _seconds_arg(name: str, value: object, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) \
            or not 0 < value <= high:  # also refuses NaN
        raise _invalid(f"{name} must be a number of seconds in (0, {high:g}], got {value!r}")
    return float(value)


# --------------------------------------------------------------------------------- outputs


def _entry_out(entry: Entry, *, value: bool = True) -> dict[str, Any]:
    out: dict[str, Any] = {"key": entry.key, "version": entry.version, "author": entry.author,
                           "revision": entry.mod_revision}
    if value:
        out["value"] = entry.value
    return out


def _event_out(event: Event) -> dict[str, Any]:
    out: dict[str, Any] = {"revision": event.revision, "kind": event.kind, "key": event.key,
                           "version": event.entry.version, "author": event.entry.author,
                           "cause": event.cause}
    if event.value_sha256 is not None:  # past the board's retained-value bound
        out["value_dropped"] = True
        out["value_sha256"] = event.value_sha256
    elif event.kind == "put":
        out["value"] = event.entry.value
    return out


# ----------------------------------------------------------------------------- the agent


@dataclass
class _Held:
    claim: Claim
    renewed_at: float
    lapsed: bool = False

    def out(self) -> dict[str, Any]:
        return {"key": self.claim.key, "fence": self.claim.fence, "ttl_s": self.claim.ttl,
                "lapsed": self.lapsed}


class _CueBus(InMemorySubscriptionBus):
    """The SDK's in-process bus, counting listeners so the change watcher runs only while some
    host listens (a server nobody listens to holds no watch)."""

    def __init__(self) -> None:
        super().__init__()
        self.listeners = 0
        self.wake: anyio.Event | None = None

    def subscribe(self, listener: Callable[[ServerEvent], None]) -> Callable[[], None]:
        unsubscribe = super().subscribe(listener)
        self.listeners += 1
        if self.wake is not None:
            self.wake.set()
        done = False

        def off() -> None:
            nonlocal done
            if not done:
                done = True
                self.listeners -= 1
                unsubscribe()

        return off


class BoardAgent:
    """One agent's state behind the tools: its :class:`Board` and the claims it holds.

    The claims table is touched only on the event loop (tool bodies run their blocking board
    calls on worker threads but update the table after they return), so it needs no lock."""

    def __init__(self, board: Board) -> None:
        self.board = board
        self.held: dict[str, _Held] = {}
        self.bus = _CueBus()

    # --- blocking calls, renewals ------------------------------------------------------------

    async def call(self, fn: Callable[[], T], *, renew: bool = True) -> T:
        """Run a blocking board call on a worker thread (renewing the claims first), turning
        refusals into tool errors."""
        if renew:
            await self.renew()
        try:
            return await anyio.to_thread.run_sync(fn)
        except BoardError as exc:
            raise tool_error(exc) from exc
        except ValidationError as exc:  # a bound the command model enforces
            raise tool_error(InvalidCommand(_validation_text(exc))) from exc

    async def renew(self, *, force: bool = False) -> None:
        """Keep every live claim alive (the agent just acted). A claim whose lease is gone is
        marked lapsed and kept: writes still carry its fence, so they are refused
        (``FencedOut``) instead of going through unfenced.

        One keepalive at a time, on purpose: an agent holds a handful of claims, a renewal is
        skipped within ttl/20 of the last one (so a burst of calls costs one round), and
        sequential calls keep the board session's requests in order. An agent holding many
        claims pays one round trip per claim on the first call after each ttl/20."""
        now = time.monotonic()
        for held in list(self.held.values()):
            if held.lapsed or (not force and
                               now - held.renewed_at < held.claim.ttl / RENEW_SKIP_FRACTION):
                continue
            before, held.renewed_at = held.renewed_at, now  # one renewal for a burst of calls
            try:
                await anyio.to_thread.run_sync(self.board.keepalive, held.claim)
            except NotFound:
                held.lapsed = True
            except BoardError:  # unreachable now: the call itself will say so
                held.renewed_at = before

    async def renew_while_waiting(self) -> None:
        """Renew the claims every ttl/3 for as long as it runs (cancelled when the wait ends)."""
        for _ in range(2**62):  # bounded by the wait's cancellation
            live = [h.claim.ttl for h in self.held.values() if not h.lapsed]
            await anyio.sleep(min(live, default=WAIT_TIMEOUT_S_MAX) / RENEW_DURING_WAIT_FRACTION)
            await self.renew(force=True)

    def fence_for(self, key: str, claim: str | None) -> FenceRef | None:
        """The fence a write to ``key`` carries: the claim on ``claim`` if named, else this
        agent's claim on ``key`` itself, else none."""
        if claim is not None:
            held = self.held.get(claim)
            if held is None:
                raise _invalid(f"claim={claim!r}: this agent holds no claim on {claim!r} "
                               "(board_claim it first)")
            return FenceRef(key=held.claim.key, fence=held.claim.fence)
        held = self.held.get(key)
        return None if held is None else FenceRef(key=key, fence=held.claim.fence)

    async def release_all(self) -> None:
        """Give every claim up (the server is exiting), best effort."""
        held, self.held = list(self.held.values()), {}
        for h in held:
            if not h.lapsed:
                try:
                    await anyio.to_thread.run_sync(self.board.release, h.claim)
                except BoardError:
                    continue

    # --- change cues ---------------------------------------------------------------------------

    async def cue_changes(self) -> None:
        """While some host listens, publish ``board://KEY`` updated for every committed change
        (read from the gap-free watch; the cues themselves are not replayed)."""
        bus = self.bus
        for _ in range(2**62):  # bounded by the server's life (cancelled at exit)
            if bus.listeners == 0:
                bus.wake = anyio.Event()
                await bus.wake.wait()
                continue
            try:
                status = await anyio.to_thread.run_sync(self.board.status)
                cursor = status.revision
                for _ in range(2**62):  # until nobody listens (or the server exits)
                    if not bus.listeners:
                        break
                    page = await self.board.wait_events("", cursor, timeout_s=WAIT_TIMEOUT_S_MAX)
                    for key in dict.fromkeys(e.key for e in page.events):
                        await bus.publish(ResourceUpdated(uri=f"board://{key}"))
                    cursor = page.revision
            except BoardError:  # compacted or unreachable: start again from the current state
                await anyio.sleep(CUE_BACKOFF_S)


def _validation_text(exc: ValidationError) -> str:
    parts = [f"{'.'.join(str(p) for p in err['loc']) or 'argument'}: {err['msg']}"
             for err in exc.errors()[:3]]
    return "invalid argument: " + "; ".join(parts)


# -------------------------------------------------------------------------------- the server


INSTRUCTIONS = """\
A shared blackboard for a team of agents, replicated with Raft: every write you make is
committed on a majority of replicas before the tool returns, and concurrent agents cannot
silently overwrite each other.

Read with board_get / board_list; write with board_put. To change an existing key, pass
expect_version (the version you read; 0 = the key must not exist yet): if another agent wrote
first you get StaleVersion with the current version, so read again, merge, retry.
To own a task, board_claim its key; your writes to it, and to any key with claim=<task key>,
carry your claim's fence. Your claims stay alive while you keep calling tools and lapse after
ttl_s of silence (another agent may then take the task; your late writes are refused with
FencedOut). Follow changes with board_wait(prefix, after_revision): pass back the revision it
returns. Errors start with the error class, then a JSON object with a hint on what to do."""


class _BoardServer(MCPServer):
    """The SDK's server, with the refusals the SDK decides itself (arguments its schema check
    rejects, an unknown tool) in the error contract too: ``Class: message`` first, then the
    JSON object, as the tools' own refusals are. The SDK would answer them in its own words
    ("Error executing tool ...: 1 validation error ..."), with no class and no JSON."""

    async def call_tool(self, name: str, arguments: dict[str, Any],
                        context: Any = None) -> Any:
        try:
            return await super().call_tool(name, arguments, context)
        except UnexpectedToolError:
            raise
        except ToolError as exc:
            if isinstance(exc.__cause__, ValidationError):
                refusal = tool_error(InvalidCommand(
                    f"{name}: {_validation_text(exc.__cause__)}"))
            elif self._tool_manager.get_tool(name) is None:
                tools = ", ".join(sorted(t.name for t in self._tool_manager.list_tools()))
                refusal = tool_error(InvalidCommand(f"no tool named {name!r}; the tools are "
                                                    f"{tools}"))
            else:
                raise
            return CallToolResult(content=[TextContent(type="text", text=str(refusal))],
                                  is_error=True)


def build_server(agent: BoardAgent, *, name: str = "quorumboard") -> MCPServer:
    """The MCP server for ``agent``: the ten tools and the ``board://{+key}`` resources."""
    server = _BoardServer(name, instructions=INSTRUCTIONS, subscriptions=agent.bus)
    board = agent.board

    def tool(fn: Callable[..., Awaitable[dict[str, Any]]]) -> None:
        """Register ``fn`` as a tool whose refusals reach the model as ``Class (reason): ...``.

        A raised ToolError would reach it prefixed with the SDK's "Error executing tool NAME: ";
        an ``is_error`` result (the same MCP tool error on the wire) keeps the error class
        first, where a model reads it. The schema still comes from ``fn``'s signature."""

        @functools.wraps(fn)
        async def guarded(*args: Any, **kwargs: Any) -> Any:
            try:
                return await fn(*args, **kwargs)
            except ToolError as exc:
                return CallToolResult(content=[TextContent(type="text", text=str(exc))],
                                      is_error=True)

        server.add_tool(guarded, name=fn.__name__, description=inspect.cleandoc(fn.__doc__ or ""))

    @tool
    async def board_get(key: str, stale: bool = False) -> dict[str, Any]:
        """Read one key: its value, version, author and revision, or found=false.

        Linearizable (you see every write committed before the call) unless stale=true, which
        may be slightly behind but is cheaper. To update it safely afterwards, pass the version
        you read as expect_version to board_put."""
        entry = await agent.call(lambda: board.get(key, stale=stale))
        if entry is None:
            return {"key": key, "found": False}
        return {"found": True, **_entry_out(entry)}

    @tool
    async def board_put(key: str, value: Any, expect_version: int | None = None,
                        claim: str | None = None) -> dict[str, Any]:
        """Write a JSON value at key (committed on a majority before this returns).

        expect_version: write only if the key is still at this version (0 = only if it does not
        exist): refused with StaleVersion otherwise, and the error's current.version is what to
        read, merge and retry with. Under the default policy an existing key is only ever
        overwritten with expect_version (a blind write is refused: it could erase an edit you
        never saw), so read it with board_get first. Writes to a key you claimed carry your claim by themselves;
        claim=K attaches your claim on K to a write elsewhere (e.g. a task's result). A write
        after your claim was lost is refused with FencedOut: stop working on that task. A string
        value holding a JSON object or array is stored parsed."""
        if expect_version is not None:
            _int_arg("expect_version", expect_version, 0)
        fence = agent.fence_for(key, claim)
        entry = await agent.call(lambda: board.put(key, value, expect_version=expect_version,
                                                   fence=fence))
        return _entry_out(entry, value=False)

    @tool
    async def board_delete(key: str, expect_version: int | None = None,
                           claim: str | None = None) -> dict[str, Any]:
        """Delete key. Refused like board_put: StaleVersion if expect_version is not the
        current version (read again), FencedOut if the key is claimed by someone else or your
        claim was lost; a key that does not exist is a NotFound error."""
        if expect_version is not None:
            _int_arg("expect_version", expect_version, 0)
        fence = agent.fence_for(key, claim)
        entry = await agent.call(lambda: board.delete(key, expect_version=expect_version,
                                                      fence=fence))
        return {"deleted": True, **_entry_out(entry, value=False)}

    @tool
    async def board_list(prefix: str, limit: int = 100,
                         after_key: str | None = None) -> dict[str, Any]:
        """List the entries under prefix (e.g. "tasks/"), in key order, with their values.

        At most limit (1..1000) per call; when more=true, call again with
        after_key=next_after_key. revision is the board revision the listing was read at: pass
        it to board_wait as after_revision to follow every later change, with none missed."""
        count = _int_arg("limit", limit, 1, LIST_LIMIT_MAX)
        if after_key is not None and not after_key:
            raise _invalid("after_key is empty (omit it to start at the first key)", key=True)

        def read() -> tuple[int, list[Entry]]:
            # The status first: its revision is at most the listing's, so waiting from it can
            # repeat an event but never skip one (used when the listing is empty).
            before = board.status().revision
            return before, board.list(prefix, limit=count + 1, start_after=after_key or "")

        before, entries = await agent.call(read)
        more = len(entries) > count
        entries = entries[:count]
        return {"entries": [_entry_out(e) for e in entries], "more": more,
                "next_after_key": entries[-1].key if more else None,
                "revision": entries[0].revision if entries else before}

    @tool
    async def board_history(key: str, limit: int = 50) -> dict[str, Any]:
        """The audit trail of key, oldest first: every committed version and every refused
        attempt, with author, the policy that decided and why. Use it to see who changed a key
        and why your write was refused."""
        count = _int_arg("limit", limit, 1, HISTORY_LIMIT_MAX)
        records = await agent.call(lambda: board.history(key, limit=count))
        return {"key": key, "records": [r.model_dump(mode="json") for r in records]}

    @tool
    async def board_claim(key: str, ttl_s: float) -> dict[str, Any]:
        """Take exclusive ownership of key (a task) for ttl_s seconds.

        Refused with ClaimHeld while another agent holds it (current.author is the owner).
        The claim stays alive while you keep calling tools (or board_keepalive) and lapses after
        ttl_s without any: then another agent may take it and your writes to it are refused
        with FencedOut. Claiming a key you already hold returns your claim. Release it with
        board_release when done."""
        ttl = _seconds_arg("ttl_s", ttl_s, CLAIM_TTL_S_MAX)
        claim = await agent.call(lambda: board.claim(key, ttl))
        agent.held[key] = _Held(claim, time.monotonic())
        return {"key": key, "owner": claim.owner, "fence": claim.fence, "ttl_s": claim.ttl}

    @tool
    async def board_keepalive(key: str) -> dict[str, Any]:
        """Renew your claim on key now (any tool call also does). FencedOut if it already
        lapsed: claim the key again before working on it."""
        held = agent.held.get(key)
        if held is None:
            raise tool_error(NotFound(f"this agent holds no claim on {key!r}"))
        try:
            await agent.call(lambda: board.keepalive(held.claim), renew=False)
        except ToolError as exc:
            if isinstance(exc.__cause__, NotFound):
                held.lapsed = True
                raise tool_error(FencedOut(
                    f"your claim on {key} (fence {held.claim.fence}) lapsed",
                    reason="lapsed")) from exc.__cause__
            raise
        held.renewed_at = time.monotonic()
        held.lapsed = False
        await agent.renew()
        return held.out()

    @tool
    async def board_release(key: str) -> dict[str, Any]:
        """Give up your claim on key (done, or handing the task back): the claim key is
        deleted and another agent may claim it at once. released=false if you held none."""
        held = agent.held.pop(key, None)
        await agent.renew()
        if held is None:
            return {"key": key, "released": False}
        try:
            await anyio.to_thread.run_sync(board.release, held.claim)
        except NotFound:
            return {"key": key, "released": True, "was_live": False}
        except BoardError as exc:
            agent.held[key] = held  # still ours: a retry may release it
            raise tool_error(exc) from exc
        return {"key": key, "released": True, "was_live": True}

    @tool
    async def board_wait(prefix: str, after_revision: int,
                         timeout_s: float = 20) -> dict[str, Any]:
        """Wait for committed changes under prefix with revision > after_revision, and return
        them (puts with values, deletes) in revision order: as soon as there are some, or an
        empty list after timeout_s (capped at 25 s).

        Pass the returned revision as the next after_revision to see every change exactly once
        (0 = from the oldest the board retains). more=true: there are more (at most 100 per
        call), call again at once. RevisionCompacted: board_list and wait from its revision.
        Your claims stay alive while you wait."""
        after = _int_arg("after_revision", after_revision, 0)
        if isinstance(timeout_s, bool) or not isinstance(timeout_s, int | float) \
                or not timeout_s >= 0:
            raise _invalid(f"timeout_s must be a number of seconds >= 0, got {timeout_s!r}")
        await agent.renew()
        page: EventPage | BoardError
        async with anyio.create_task_group() as group:
            group.start_soon(agent.renew_while_waiting)
            try:
                page = await board.wait_events(prefix, after, limit=WAIT_EVENTS_MAX,
                                               timeout_s=min(timeout_s, WAIT_TIMEOUT_S_MAX))
            except BoardError as exc:  # raised outside the group, not as an exception group
                page = exc
            group.cancel_scope.cancel()
        await agent.renew()  # the wait's end is activity too: ttl_s of silence starts now
        if isinstance(page, BoardError):
            raise tool_error(page) from page
        return {"events": [_event_out(e) for e in page.events], "revision": page.revision,
                "more": page.more}

    @tool
    async def board_status() -> dict[str, Any]:
        """Who you are on the board, the cluster's leader and current revision, and the claims
        you hold (lapsed=true: lost, claim again before working on it)."""
        status = await agent.call(board.status)
        return {"agent": board.agent, "revision": status.revision, "role": status.role,
                "leader": status.leader_client, "term": status.term,
                "replica": status.client_address,
                "claims": [h.out() for h in agent.held.values()]}

    @server.resource("board://{+key}", name="board entry", mime_type="application/json",
                     description="One key of the board (value, version, author, revision). "
                                 "Hosts that listen get an update cue when it changes; cues are "
                                 "not replayed: board_wait is the gap-free way to follow "
                                 "changes.")
    async def board_entry(key: str) -> str:
        try:
            entry = await anyio.to_thread.run_sync(lambda: board.get(key))
        except InvalidCommand as exc:  # not a key: no such resource
            raise ResourceNotFoundError(str(tool_error(exc))) from exc
        except BoardError as exc:
            raise ResourceError(str(tool_error(exc))) from exc
        if entry is None:
            raise ResourceNotFoundError(f"no key {key!r} on the board")
        return json.dumps(_entry_out(entry), sort_keys=True)

    return server


@asynccontextmanager
async def serving(board: Board, *, close: bool = True) -> AsyncIterator[MCPServer]:
    """The server for ``board``'s agent, with its change watcher running; on exit the claims
    are released and (``close``) the board closed. Run a transport inside, or connect the
    SDK's ``Client(server)`` to it."""
    async with running(BoardAgent(board), close=close) as server:
        yield server


@asynccontextmanager
async def running(agent: BoardAgent, *, close: bool = True) -> AsyncIterator[MCPServer]:
    """:func:`serving` for an agent the caller keeps a hand on (to release its claims early)."""
    server = build_server(agent)
    try:
        async with anyio.create_task_group() as group:
            group.start_soon(agent.cue_changes)
            try:
                yield server
            finally:
                group.cancel_scope.cancel()
    finally:
        with anyio.move_on_after(EXIT_TIMEOUT_S, shield=True):
            await agent.release_all()
            if close:
                await anyio.to_thread.run_sync(agent.board.close)


# -------------------------------------------------------------------------------- transports


def require_bearer(app: Any, token: str) -> Any:
    """Wrap an ASGI app: HTTP requests without ``Authorization: Bearer <token>`` get 401.

    Only the server's own ``lifespan`` events pass without the token (they come from the
    ASGI server, not a peer). A websocket is refused outright, token or not (the MCP app
    serves none, and a connection it never answers must not reach it unauthenticated), and
    any other scope type is an error: whatever a future ASGI server sends is refused rather
    than passed through."""
    expected = f"Bearer {token}".encode()

    async def guarded(scope: dict[str, Any], receive: Any, send: Any) -> None:
        kind = scope.get("type")
        if kind == "lifespan":
            await app(scope, receive, send)
            return
        if kind == "websocket":
            await send({"type": "websocket.close", "code": 1008,
                        "reason": "this server has no websocket endpoint"})
            return
        if kind != "http":
            raise InvalidCommand(f"ASGI scope type {kind!r} is not served (http only)")
        got = dict(scope.get("headers") or []).get(b"authorization", b"")
        if not hmac.compare_digest(got, expected):
            await send({"type": "http.response.start", "status": 401,
                        "headers": [(b"content-type", b"text/plain"),
                                    (b"www-authenticate", b"Bearer")]})
            await send({"type": "http.response.body",
                        "body": b"missing or wrong bearer token\n"})
            return
        await app(scope, receive, send)

    return guarded


async def _on_signal(stop: Callable[[int], Awaitable[None]]) -> None:
    with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async for signum in signals:
            await stop(signum)
            return


async def _serve(args: argparse.Namespace, board: Board, token: str | None) -> None:
    agent = BoardAgent(board)
    async with running(agent) as server, anyio.create_task_group() as group:
        if args.transport == "stdio":

            async def die(signum: int) -> None:
                """Release the claims, then die of the signal as a host expects: the stdio
                reader blocks in a thread until stdin closes, so a clean return could wait for
                the host's SIGKILL (and leave the claims to lapse)."""
                with anyio.move_on_after(EXIT_TIMEOUT_S, shield=True):
                    await agent.release_all()
                signal.signal(signum, signal.SIG_DFL)
                signal.raise_signal(signum)

            group.start_soon(_on_signal, die)
            await server.run_stdio_async()
        else:
            import uvicorn

            class Uvicorn(uvicorn.Server):
                """Serves only: the signals are ours. (uvicorn's own handling re-raises a
                SIGTERM after its shutdown, which would kill us before the claims are
                released.)"""

                @contextlib.contextmanager
                def capture_signals(self) -> Iterator[None]:
                    yield

            app = server.streamable_http_app(host=args.host)
            if token is not None:
                app = require_bearer(app, token)
            http = Uvicorn(uvicorn.Config(app, host=args.host, port=args.port,
                                          log_level=args.log_level, lifespan="on"))

            async def shut_down(signum: int) -> None:  # a graceful stop, then the normal exit
                http.should_exit = True

            group.start_soon(_on_signal, shut_down)
            await http.serve()
        group.cancel_scope.cancel()


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="quorumboard mcp",
        description="Serve one agent's seat at the board over MCP (stdio by default).")
    p.add_argument("--endpoints", default=None,
                   help="replica client addresses host:port,... (or QUORUMBOARD_ENDPOINTS)")
    p.add_argument("--agent", required=True, help="this agent's identity on the board")
    p.add_argument("--transport", choices=("stdio", "http"), default="stdio")
    p.add_argument("--host", default="127.0.0.1",
                   help="HTTP bind address (anything but loopback requires --token-env)")
    p.add_argument("--port", type=int, default=8765)
    p.add_argument("--secret-env", default=None,
                   help="environment variable holding the cluster secret "
                        "(default: QUORUMBOARD_SECRET if set; named here, it must be set)")
    p.add_argument("--token-env", default=None,
                   help="environment variable holding the bearer token HTTP clients must send")
    p.add_argument("--timeout", type=float, default=15.0, help="per-call deadline, seconds")
    p.add_argument("--log-level", default="warning")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """``quorumboard mcp ...``: 0 after a clean exit, 2 for a usage error."""
    args = _parser().parse_args(list(sys.argv[1:] if argv is None else argv))

    def usage(message: str) -> int:
        print(f"quorumboard mcp: error: {message}", file=sys.stderr)
        return 2

    endpoints = args.endpoints or os.environ.get("QUORUMBOARD_ENDPOINTS")
    if not endpoints:
        return usage("--endpoints (or QUORUMBOARD_ENDPOINTS) is required")
    secret = os.environ.get(args.secret_env or "QUORUMBOARD_SECRET") or None
    if args.secret_env and secret is None:
        return usage(f"--secret-env {args.secret_env}: that variable is not set "
                     "(MCP hosts pass stdio servers an explicit environment: add it there)")
    token: str | None = None
    if args.token_env:
        token = os.environ.get(args.token_env) or None
        if token is None:
            return usage(f"--token-env {args.token_env}: that variable is not set")
    if args.transport == "http" and args.host not in LOOPBACK_HOSTS and token is None:
        return usage(f"--host {args.host} is reachable from other machines: "
                     "--token-env is required (a bearer token)")
    configure_logging(args.log_level)
    try:
        board = connect(endpoints, agent=args.agent, secret=secret, timeout_s=args.timeout)
    except BoardError as exc:
        return usage(str(exc))
    anyio.run(_serve, args, board, token, backend="asyncio")
    return 0


if __name__ == "__main__":
    sys.exit(main())
