"""``quorumboard mcp``, tested with the MCP SDK's own ``Client`` against a real 3-replica cluster:
in process (``Client(server)``) and over stdio (``quorumboard mcp`` launched as the host config
in examples/ says), plus the OpenAI Agents SDK example (against the fake chat server) and the
two-agent example on the public API."""

from __future__ import annotations

import json
import math
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client, StdioServerParameters
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client
from mcp.types import CallToolResult

from quorumboard.consensus import (
    Board,
    InvalidCommand,
    Limits,
    LocalCluster,
    OutcomeUnknown,
    Unavailable,
)
from quorumboard.consensus.adapters.mcp import (
    WAIT_EVENTS_MAX,
    main,
    serving,
)
from tests.conftest import wait_until
from tests.fake_llm import FakeLLM

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
SECRET = "mcp-test-secret-0123456789"
TOOLS = {
    "board_get": ({"key", "stale"}, {"key"}),
    "board_put": ({"key", "value", "expect_version", "claim"}, {"key", "value"}),
    "board_delete": ({"key", "expect_version", "claim"}, {"key"}),
    "board_list": ({"prefix", "limit", "after_key"}, {"prefix"}),
    "board_history": ({"key", "limit"}, {"key"}),
    "board_claim": ({"key", "ttl_s"}, {"key", "ttl_s"}),
    "board_keepalive": ({"key"}, {"key"}),
    "board_release": ({"key"}, {"key"}),
    "board_wait": ({"prefix", "after_revision", "timeout_s"}, {"prefix", "after_revision"}),
    "board_status": (set(), set()),
}
EVENTS_RETAINED = 150

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # Board.wait_events is asyncio, as is the server under its transports


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalCluster]:
    with LocalCluster(replicas=3, secret=SECRET,
                      limits=Limits(events_retained_max=EVENTS_RETAINED)) as c:
        c.wait_for_leader()
        yield c


@asynccontextmanager
async def agents(cluster: LocalCluster, *names: str) -> AsyncIterator[list[Client]]:
    """One server (its own Board) and one SDK client per agent name, all in process. A failure
    in the body comes out as itself, not wrapped in the task groups' exception groups."""
    try:
        async with AsyncExitStack() as stack:
            clients = []
            for name in names:
                server = await stack.enter_async_context(serving(cluster.board(name)))
                clients.append(await stack.enter_async_context(Client(server)))
            yield clients
    except BaseExceptionGroup as group:
        leaf: BaseException = group
        while isinstance(leaf, BaseExceptionGroup) and len(leaf.exceptions) == 1:
            leaf = leaf.exceptions[0]
        raise leaf from None


def ok(result: CallToolResult) -> dict[str, Any]:
    assert not result.is_error, result.content
    assert isinstance(result.structured_content, dict)
    return result.structured_content


def refused(result: CallToolResult, error: str) -> dict[str, Any]:
    """The error text: ``Class (reason): message`` first, then the JSON object."""
    assert result.is_error, result.structured_content
    text = "".join(getattr(c, "text", "") for c in result.content)
    head, _, body = text.partition("\n")
    assert head.startswith(f"{error}:") or head.startswith(f"{error} ("), text
    obj = json.loads(body)
    assert {"error", "message", "retry_safe", "current"} <= obj.keys()
    assert obj["error"] == error
    return dict(obj)


def key(tag: str) -> str:
    return f"mcp/{tag}/{time.time_ns()}"


def open_sockets() -> int:
    """Sockets this process has open (the in-process servers' watch connections among them)."""
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            count += os.readlink(f"/proc/self/fd/{fd}").startswith("socket:")
        except OSError:  # closed meanwhile
            continue
    return count


async def poll(fn: Any, timeout_s: float = 15.0) -> Any:
    """Await ``fn()`` until it returns something truthy, within the deadline."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = await fn()
        if value:
            return value
        await anyio.sleep(0.05)
    raise AssertionError("condition not met before the deadline")


# ------------------------------------------------------------------------------- the API


async def test_the_ten_tools_with_their_arguments(cluster: LocalCluster) -> None:
    async with agents(cluster, "lister") as (client,):
        listed = {t.name: t for t in (await client.list_tools()).tools}
        assert set(listed) == set(TOOLS)
        for name, (params, required) in TOOLS.items():
            schema = listed[name].input_schema
            assert set(schema.get("properties", {})) == params, name
            assert set(schema.get("required", [])) == required, name
        for name in ("board_put", "board_delete", "board_claim"):  # when refused, what next
            assert "refused" in (listed[name].description or "").lower(), name


async def test_core_import_never_loads_the_sdk() -> None:
    code = ("import sys, quorumboard.consensus, quorumboard.consensus.cli, "
            "quorumboard.consensus.adapters; "
            "from quorumboard.consensus.cli import _parser; _parser(); "
            "assert not any(m == 'mcp' or m.startswith('mcp.') for m in sys.modules), "
            "sorted(m for m in sys.modules if m.startswith('mcp'))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       timeout=60, check=False)
    assert r.returncode == 0, r.stderr
    # The control: the adapter does load it (so the check above can fail).
    r = subprocess.run([sys.executable, "-c", code.replace(
        "quorumboard.consensus.adapters;", "quorumboard.consensus.adapters.mcp;")],
        capture_output=True, text=True, timeout=60, check=False)
    assert r.returncode != 0 and "AssertionError" in r.stderr


def test_the_adapter_builds_on_the_public_client_only() -> None:
    import ast

    from quorumboard import consensus

    tree = ast.parse((ROOT / "consensus" / "adapters" / "mcp.py").read_text())
    imported = [n for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)
                and "quorumboard" in (n.module or "")]
    assert imported and all(n.module == "quorumboard.consensus" for n in imported)
    assert {a.name for n in imported for a in n.names} <= set(consensus.__all__)


async def test_two_agents_racing_compare_and_set(cluster: LocalCluster) -> None:
    k = key("race")
    async with agents(cluster, "alice", "bob") as (alice, bob):
        created = ok(await alice.call_tool("board_put", {"key": k, "value": {"n": 0},
                                                         "expect_version": 0}))
        seen = ok(await bob.call_tool("board_get", {"key": k}))
        assert seen["version"] == created["version"] == 1 and seen["value"] == {"n": 0}
        results: dict[str, CallToolResult] = {}

        async def put(name: str, client: Client) -> None:
            results[name] = await client.call_tool(
                "board_put", {"key": k, "value": {"n": 1, "by": name}, "expect_version": 1})

        async with anyio.create_task_group() as group:
            group.start_soon(put, "alice", alice)
            group.start_soon(put, "bob", bob)
        winners = [n for n, r in results.items() if not r.is_error]
        losers = [n for n, r in results.items() if r.is_error]
        assert len(winners) == 1 and len(losers) == 1, results
        error = refused(results[losers[0]], "StaleVersion")
        assert error["retry_safe"] is False
        assert error["current"] == {"key": k, "version": 2, "author": winners[0],
                                    "revision": ok(results[winners[0]])["revision"]}
        # The loser recovers as the hint says: read, merge, write with the current version.
        loser = alice if losers[0] == "alice" else bob
        merged = ok(await loser.call_tool("board_put", {
            "key": k, "value": {"n": 2}, "expect_version": error["current"]["version"]}))
        assert merged["version"] == 3 and merged["author"] == losers[0]


async def test_claims_are_exclusive_and_fence_writes(cluster: LocalCluster) -> None:
    task, out = key("task"), key("result")
    async with agents(cluster, "owner", "rival") as (owner, rival):
        claim = ok(await owner.call_tool("board_claim", {"key": task, "ttl_s": 30}))
        assert claim["owner"] == "owner" and claim["fence"] > 0
        held = refused(await rival.call_tool("board_claim", {"key": task, "ttl_s": 30}),
                       "ClaimHeld")
        assert held["current"]["author"] == "owner"
        # The owner's writes to the claimed key carry the fence by themselves ...
        ok(await owner.call_tool("board_put", {"key": task, "value": {"state": "working"},
                                               "expect_version": 1}))
        # ... a write elsewhere carries it with claim=K ...
        ok(await owner.call_tool("board_put", {"key": out, "value": "draft", "claim": task}))
        # ... and nobody else can write the claimed key.
        refused(await rival.call_tool("board_put", {"key": task, "value": "mine"}), "FencedOut")
        refused(await rival.call_tool("board_put", {"key": out, "value": "x", "claim": task}),
                "InvalidCommand")  # the rival holds no claim on the task
        status = ok(await owner.call_tool("board_status", {}))
        assert status["agent"] == "owner"
        assert [c["key"] for c in status["claims"]] == [task]
        released = ok(await owner.call_tool("board_release", {"key": task}))
        assert released == {"key": task, "released": True, "was_live": True}
        taken = ok(await rival.call_tool("board_claim", {"key": task, "ttl_s": 30}))
        assert taken["fence"] > claim["fence"]


async def test_a_claim_lives_while_its_agent_acts_and_lapses_after_silence(
        cluster: LocalCluster) -> None:
    task, out = key("stall"), key("stall-out")
    ttl_s = 1.0
    async with agents(cluster, "staller", "taker") as (staller, taker):
        claim = ok(await staller.call_tool("board_claim", {"key": task, "ttl_s": ttl_s}))
        # Active for 2.5 TTLs (a tool call every ttl/4): the claim stays.
        for _ in range(10):
            ok(await staller.call_tool("board_get", {"key": out}))
            await anyio.sleep(ttl_s / 4)
        refused(await taker.call_tool("board_claim", {"key": task, "ttl_s": 30}), "ClaimHeld")
        # A board_wait longer than the TTL is activity too.
        waited = ok(await staller.call_tool("board_wait", {
            "prefix": out, "after_revision": 10**9, "timeout_s": 2.5}))
        assert waited["events"] == []
        refused(await taker.call_tool("board_claim", {"key": task, "ttl_s": 30}), "ClaimHeld")
        # Silence: the claim lapses and the other agent takes the task.
        silent_from = time.monotonic()

        async def take() -> dict[str, Any] | None:
            r = await taker.call_tool("board_claim", {"key": task, "ttl_s": 30})
            return None if r.is_error else ok(r)

        taken = await poll(take)
        assert time.monotonic() - silent_from >= ttl_s * 0.9
        assert taken["owner"] == "taker" and taken["fence"] > claim["fence"]
        # The staller wakes up: its writes for the task are refused, whatever it names.
        lost = refused(await staller.call_tool(
            "board_put", {"key": out, "value": "late", "claim": task}), "FencedOut")
        assert "stop" in lost["hint"]
        refused(await staller.call_tool("board_put", {"key": task, "value": "late"}),
                "FencedOut")
        refused(await staller.call_tool("board_keepalive", {"key": task}), "FencedOut")
        status = ok(await staller.call_tool("board_status", {}))
        assert status["claims"] == [{"key": task, "fence": claim["fence"], "ttl_s": ttl_s,
                                     "lapsed": True}]


async def test_claims_are_released_when_the_server_exits(cluster: LocalCluster) -> None:
    task = key("exit")
    async with agents(cluster, "leaver") as (leaver,):
        ok(await leaver.call_tool("board_claim", {"key": task, "ttl_s": 60}))
    async with agents(cluster, "heir") as (heir,):
        taken = ok(await heir.call_tool("board_claim", {"key": task, "ttl_s": 60}))
        assert taken["owner"] == "heir"  # at once, not after the 60 s TTL


# ------------------------------------------------------------------------------ board_wait


async def test_board_wait_pages_times_out_and_reports_compaction(cluster: LocalCluster) -> None:
    prefix = key("page") + "/"
    async with agents(cluster, "pager") as (client,):
        start = ok(await client.call_tool("board_status", {}))["revision"]
        board = cluster.board("bulk")

        def write(keys: list[str]) -> None:
            for i, k in enumerate(keys):
                board.put(k, i)

        # Enough events that, with the filler below, the board must drop some old ones.
        assert WAIT_EVENTS_MAX + 20 < EVENTS_RETAINED < WAIT_EVENTS_MAX + 20 + 40
        await anyio.to_thread.run_sync(
            write, [f"{prefix}{i:04}" for i in range(WAIT_EVENTS_MAX + 20)])
        first = ok(await client.call_tool("board_wait", {"prefix": prefix,
                                                         "after_revision": start}))
        assert len(first["events"]) == WAIT_EVENTS_MAX and first["more"] is True
        assert first["revision"] == first["events"][-1]["revision"]
        # The wait may be served by a follower, which learns a lone writer's last commit up
        # to a few milliseconds after the writer does (README, guarantees): the last events
        # may come in a later page.
        rest_events: list[dict[str, Any]] = []
        rest = first
        for _ in range(20):  # bounded: each page brings at least one event
            rest = ok(await client.call_tool("board_wait", {"prefix": prefix,
                                                            "after_revision": rest["revision"]}))
            rest_events += rest["events"]
            if len(rest_events) >= 20:
                break
        assert len(rest_events) == 20 and rest["more"] is False
        values = [e["value"] for e in first["events"] + rest_events]
        assert values == list(range(WAIT_EVENTS_MAX + 20))
        # Nothing new: an empty answer after the timeout, with a revision to resume from.
        began = time.monotonic()
        quiet = ok(await client.call_tool("board_wait", {
            "prefix": prefix, "after_revision": rest["revision"], "timeout_s": 1.5}))
        assert quiet["events"] == [] and quiet["revision"] >= rest["revision"]
        assert 1.4 <= time.monotonic() - began < 10
        # From the beginning, after the board dropped old events: the oldest it keeps.
        try:
            await anyio.to_thread.run_sync(write, [f"{prefix}filler/{i}" for i in range(40)])
        finally:
            board.close()
        compacted = refused(await client.call_tool("board_wait", {
            "prefix": "", "after_revision": 0, "timeout_s": 1}), "RevisionCompacted")
        assert compacted["compact_revision"] > 1


@pytest.mark.parametrize(("args", "kwargs", "named"), [
    (("/x", 0), {"timeout_s": 1}, "prefix"),
    ((5, 0), {"timeout_s": 1}, "prefix"),
    (("", -1), {"timeout_s": 1}, "after_revision"),
    (("", 2**64), {"timeout_s": 1}, "after_revision"),
    (("", "3"), {"timeout_s": 1}, "after_revision"),
    (("", 1.5), {"timeout_s": 1}, "after_revision"),
    (("", None), {"timeout_s": 1}, "after_revision"),
    (("", 0), {"timeout_s": -1}, "timeout_s"),
    (("", 0), {"timeout_s": math.nan}, "timeout_s"),
    (("", 0), {"timeout_s": math.inf}, "timeout_s"),
    (("", 0), {"timeout_s": "soon"}, "timeout_s"),
    (("", 0), {"timeout_s": 1, "limit": 0}, "limit"),
    (("", 0), {"timeout_s": 1, "limit": True}, "limit"),
])
async def test_wait_events_refuses_bad_arguments_at_once(
        cluster: LocalCluster, args: tuple[Any, ...], kwargs: dict[str, Any], named: str) -> None:
    board = cluster.board("fuzzer")
    try:
        with anyio.fail_after(2), pytest.raises(InvalidCommand, match=named):
            await board.wait_events(*args, **kwargs)
    finally:
        board.close()


async def test_a_wait_no_replica_accepts_is_an_error_not_silence(cluster: LocalCluster) -> None:
    """A wrong secret (every handshake fails) must not look like a quiet board."""
    board = Board(list(cluster.endpoints), "intruder", secret=b"not-the-secret-0123456789")
    try:
        with pytest.raises(Unavailable, match="no replica could serve the wait"):
            await board.wait_events("", 0, timeout_s=1)
    finally:
        board.close()


async def test_waits_hold_no_thread_and_end_with_their_request(cluster: LocalCluster) -> None:
    prefix = key("many") + "/"
    async with agents(cluster, "waiter", "poker") as (waiter, poker):
        start = ok(await waiter.call_tool("board_status", {}))["revision"]
        threads_before = threading.active_count()
        sockets_before = open_sockets()
        answers: list[dict[str, Any]] = []

        async def wait() -> None:
            answers.append(ok(await waiter.call_tool("board_wait", {
                "prefix": prefix, "after_revision": start, "timeout_s": 20})))

        async def all_pending() -> bool:  # each pending wait holds its own watch connection
            return open_sockets() - sockets_before >= 30

        async with anyio.create_task_group() as group:
            for _ in range(30):
                group.start_soon(wait)
            await poll(all_pending)
            assert not answers
            # 30 pending waits: no thread each (a few for the SDK and the board at most).
            assert threading.active_count() - threads_before < 10
            ok(await poker.call_tool("board_put", {"key": f"{prefix}x", "value": 1}))
        assert len(answers) == 30
        assert all([e["key"] for e in a["events"]] == [f"{prefix}x"] for a in answers)
        # Cancelled requests end their waits on the server: their connections close.
        base = open_sockets()
        async with anyio.create_task_group() as group:
            for _ in range(5):
                group.start_soon(waiter.call_tool, "board_wait", {
                    "prefix": prefix, "after_revision": 10**9, "timeout_s": 20})

            async def waiting() -> bool:
                return open_sockets() - base == 5

            await poll(waiting)
            group.cancel_scope.cancel()

        async def closed() -> bool:
            return open_sockets() == base

        await poll(closed)
        ok(await waiter.call_tool("board_get", {"key": f"{prefix}x"}))  # and the server is up


def write_keys(board: Board, keys: list[str], after_first: Any = None) -> int:
    """Create ``keys`` in order (retrying through the same Board: at most once each); call
    ``after_first(i)`` after each write; return the last write's revision."""
    revision = 0
    for i, k in enumerate(keys):
        for _ in range(20):
            try:
                revision = board.put(k, i).mod_revision
                break
            except (OutcomeUnknown, Unavailable):
                continue
        else:
            raise AssertionError(f"{k} could not be written")
        if after_first is not None:
            after_first(i)
    return revision


async def follow(client: Client, prefix: str, after: int, until: Any,
                 timeout_s: float = 40.0) -> list[dict[str, Any]]:
    """board_wait from ``after`` until the revision ``until()`` names (None: not known yet)."""
    seen: list[dict[str, Any]] = []
    revision = after
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        last = until()
        if last is not None and revision >= last:
            return seen
        page = ok(await client.call_tool("board_wait", {
            "prefix": prefix, "after_revision": revision, "timeout_s": 5}))
        assert page["revision"] >= revision
        seen.extend(page["events"])
        revision = page["revision"]
    raise AssertionError(f"board_wait did not reach revision {until()} (at {revision})")


def lost_or_repeated(seen: list[dict[str, Any]], written: list[str]) -> list[str]:
    """What a gap-free, once-only stream of ``written`` (in order) got wrong."""
    keys = [e["key"] for e in seen]
    problems = [f"missing {k}" for k in written if k not in keys]
    problems += [f"repeated {k}" for k in set(keys) if keys.count(k) > 1]
    if not problems and keys != written:
        problems.append("out of order")
    return problems


async def test_board_wait_loses_no_event_across_a_leader_sigkill(cluster: LocalCluster) -> None:
    prefix = key("kill") + "/"
    keys = [f"{prefix}{i:03}" for i in range(60)]
    async with agents(cluster, "follower") as (client,):
        ok(await client.call_tool("board_put", {"key": key("kill-start"), "value": 0}))
        status = ok(await client.call_tool("board_status", {}))  # the write found the leader
        leader = cluster.wait_for_leader()
        # The waits start on the replica the agent's board talks to: the leader, killed below.
        assert status["replica"] == cluster.endpoints[leader] == status["leader"]
        writer = cluster.board("writer")
        last: list[int] = []

        def write_all() -> None:
            last.append(write_keys(writer, keys, lambda i: cluster.kill(leader)
                                   if i == len(keys) // 3 else None))

        try:
            async with anyio.create_task_group() as group:
                group.start_soon(anyio.to_thread.run_sync, write_all)
                seen = await follow(client, prefix, status["revision"],
                                    lambda: last[0] if last else None)
        finally:
            writer.close()
            cluster.restart(leader)
        assert lost_or_repeated(seen, keys) == []


async def test_the_gap_check_catches_a_stream_that_skips_events() -> None:
    """Negative control: replicas planted with ``watch-gap`` (every 50th revision is left out of
    watch streams) make the check above fail."""
    keys = [f"gap/{i:03}" for i in range(60)]
    with LocalCluster(replicas=3, secret=SECRET, planted_bug="watch-gap") as bad:
        bad.wait_for_leader()
        writer = bad.board("writer")
        try:
            last = await anyio.to_thread.run_sync(write_keys, writer, keys)
        finally:
            writer.close()
        async with agents(bad, "follower") as (client,):
            seen = await follow(client, "gap/", 0, lambda: last)
    assert any(p.startswith("missing gap/") for p in lost_or_repeated(seen, keys))


# ------------------------------------------------------------------------- hostile input


async def test_hostile_arguments_are_tool_errors_and_the_server_stays_up(
        cluster: LocalCluster) -> None:
    deep: Any = 1
    for _ in range(40):
        deep = [deep]
    cases: list[tuple[str, dict[str, Any], str]] = [
        ("board_put", {"key": "", "value": 1}, "InvalidKey"),
        ("board_put", {"key": "k" * 600, "value": 1}, "InvalidKey"),
        ("board_put", {"key": "a//b", "value": 1}, "InvalidKey"),
        ("board_put", {"key": "a/\x00", "value": 1}, "InvalidKey"),
        ("board_put", {"key": "mcp/deep", "value": deep}, "InvalidValue"),
        ("board_put", {"key": "mcp/big", "value": "x" * (2 << 20)}, "InvalidValue"),
        ("board_put", {"key": "mcp/v", "value": 1, "expect_version": -1}, "InvalidCommand"),
        ("board_put", {"key": "mcp/v", "value": 1, "claim": "nobody/claimed"},
         "InvalidCommand"),
        ("board_claim", {"key": "mcp/c", "ttl_s": -5}, "InvalidCommand"),
        ("board_claim", {"key": "mcp/c", "ttl_s": 0}, "InvalidCommand"),
        ("board_claim", {"key": "mcp/c", "ttl_s": 1e12}, "InvalidCommand"),
        ("board_list", {"prefix": "/x"}, "InvalidKey"),
        ("board_list", {"prefix": "", "limit": 0}, "InvalidCommand"),
        ("board_list", {"prefix": "", "limit": 10**9}, "InvalidCommand"),
        ("board_list", {"prefix": "", "after_key": ""}, "InvalidKey"),
        ("board_history", {"key": "mcp/h", "limit": -1}, "InvalidCommand"),
        ("board_wait", {"prefix": "", "after_revision": -1}, "InvalidCommand"),
        ("board_wait", {"prefix": "", "after_revision": 0, "timeout_s": -1}, "InvalidCommand"),
        ("board_wait", {"prefix": "a//", "after_revision": 0}, "InvalidKey"),
        ("board_keepalive", {"key": "mcp/never-claimed"}, "NotFound"),
        ("board_delete", {"key": "mcp/never-written"}, "NotFound"),
    ]
    async with agents(cluster, "hostile") as (client,):
        for tool, arguments, error in cases:
            refused(await client.call_tool(tool, arguments), error)
        # Arguments that fail the tools' schema (checked by the SDK) and an unknown tool are
        # refused in the same contract: class first, then the JSON object naming the field.
        for tool, arguments, field in [
                ("board_put", {"key": 5, "value": 1}, "key"),
                ("board_get", {}, "key"),
                ("board_wait", {"prefix": "", "after_revision": "soon"}, "after_revision")]:
            body = refused(await client.call_tool(tool, arguments), "InvalidCommand")
            assert f"{field}:" in body["message"] and tool in body["message"], body
        body = refused(await client.call_tool("launch_missiles", {"target": "moon"}),
                       "InvalidCommand")
        assert "launch_missiles" in body["message"] and "board_put" in body["message"]
        assert ok(await client.call_tool("board_status", {}))["agent"] == "hostile"
        k = key("after")
        assert ok(await client.call_tool("board_put", {"key": k, "value": [1]}))["version"] == 1


# ---------------------------------------------------------------------------- resources


async def test_resources_read_keys_and_cue_changes(cluster: LocalCluster) -> None:
    k = key("res") + "/deep/key"
    async with agents(cluster, "reader", "editor") as (reader, editor):
        ok(await editor.call_tool("board_put", {"key": k, "value": {"v": 1}}))
        read = await reader.read_resource(f"board://{k}")
        text = getattr(read.contents[0], "text", "")
        assert json.loads(text)["value"] == {"v": 1}
        templates = (await reader.list_resource_templates()).resource_templates
        assert [t.uri_template for t in templates] == ["board://{+key}"]
        async with reader.listen(resource_subscriptions=[f"board://{k}"]) as cues:
            ok(await editor.call_tool("board_put", {"key": k, "value": {"v": 2},
                                                    "expect_version": 1}))
            with anyio.fail_after(15):
                async for cue in cues:
                    assert getattr(cue, "uri", None) == f"board://{k}"
                    break
        again = await reader.read_resource(f"board://{k}")
        assert json.loads(getattr(again.contents[0], "text", ""))["version"] == 2


# ----------------------------------------------------------- stdio, examples, the command


def _host_env(cluster: LocalCluster, env: dict[str, str]) -> dict[str, str]:
    """The config's environment with this cluster's values, and PATH to find the command."""
    assert set(env) == {"QUORUMBOARD_ENDPOINTS", "QUORUMBOARD_SECRET"}
    return {"QUORUMBOARD_ENDPOINTS": ",".join(cluster.endpoints), "QUORUMBOARD_SECRET": SECRET,
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}


async def test_host_config_launches_over_stdio(cluster: LocalCluster) -> None:
    config = json.loads((EXAMPLES / "mcp-host-config.json").read_text())
    entry = config["mcpServers"]["quorumboard"]
    params = StdioServerParameters(command=entry["command"], args=entry["args"],
                                   env=_host_env(cluster, entry["env"]))
    k = key("stdio")
    with anyio.fail_after(60):
        async with Client(params) as client:
            assert len((await client.list_tools()).tools) == len(TOOLS)
            claim = ok(await client.call_tool("board_claim", {"key": k, "ttl_s": 60}))
            assert claim["owner"] == "planner"
            ok(await client.call_tool("board_put", {"key": k + "/out", "value": 1,
                                                    "claim": k}))
            refused(await client.call_tool("board_put", {"key": "", "value": 1}), "InvalidKey")
    # The stdio server exited with its host and released its claim.
    board = cluster.board("checker")
    try:
        assert await anyio.to_thread.run_sync(lambda: board.get(k)) is None
    finally:
        board.close()


def _pid_of(agent: str) -> int | None:
    """The ``quorumboard mcp --agent AGENT`` process the SDK's stdio client started."""
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                argv = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if b"mcp" in argv and agent.encode() in argv:
                return int(entry)
    return None


async def test_a_stdio_server_sigterminated_releases_its_claims_and_dies(
        cluster: LocalCluster) -> None:
    agent, task = f"term-{time.time_ns()}", key("term")
    params = StdioServerParameters(
        command=sys.executable, args=["-m", "quorumboard.consensus.cli", "mcp", "--agent", agent,
                                      "--secret-env", "QUORUMBOARD_SECRET"],
        env={"QUORUMBOARD_ENDPOINTS": ",".join(cluster.endpoints), "QUORUMBOARD_SECRET": SECRET})
    board = cluster.board("checker")
    try:
        with anyio.fail_after(60):
            async with Client(params) as client:
                ok(await client.call_tool("board_claim", {"key": task, "ttl_s": 60}))
                pid = _pid_of(agent)
                assert pid is not None
                os.kill(pid, signal.SIGTERM)  # stdin stays open: the signal alone ends it

                async def released() -> bool:
                    return await anyio.to_thread.run_sync(lambda: board.get(task)) is None

                await poll(released)  # long before the 60 s TTL

                async def dead() -> bool:  # gone, or a zombie its parent has yet to reap
                    try:
                        return Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"
                    except OSError:
                        return True

                await poll(dead)
    finally:
        board.close()


async def test_the_secret_must_reach_the_server(cluster: LocalCluster) -> None:
    """Without the secret in the host's env the server refuses to start, naming the variable."""
    code = main(["--endpoints", ",".join(cluster.endpoints), "--agent", "a",
                 "--secret-env", "QUORUMBOARD_TEST_UNSET_SECRET"])
    assert code == 2
    assert main(["--endpoints", "x:1", "--agent", "a", "--transport", "http",
                 "--host", "0.0.0.0"]) == 2  # reachable from elsewhere: a token is required


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def test_the_bearer_guard_lets_only_lifespan_through_without_the_token() -> None:
    """The guard in front of the HTTP app, served by uvicorn on loopback, with an app behind
    it that would accept anything: lifespan events reach it, HTTP only with the token, and a
    websocket never (token or not)."""
    import uvicorn
    from websockets.asyncio.client import connect as ws_connect
    from websockets.exceptions import InvalidStatus

    from quorumboard.consensus.adapters.mcp import require_bearer

    reached: list[str] = []

    async def open_door(scope: dict[str, Any], receive: Any, send: Any) -> None:
        reached.append(scope["type"])
        if scope["type"] == "lifespan":
            for _ in range(2):  # startup, then shutdown
                message = await receive()
                await send({"type": message["type"] + ".complete"})
        elif scope["type"] == "websocket":
            await receive()
            await send({"type": "websocket.accept"})
            await send({"type": "websocket.close", "code": 1000})
        else:
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"in"})

    port, token = _free_port(), "tok-" + "7" * 24
    server = uvicorn.Server(uvicorn.Config(require_bearer(open_door, token), host="127.0.0.1",
                                           port=port, lifespan="on", log_level="warning"))
    async with anyio.create_task_group() as group:
        group.start_soon(server.serve)
        try:
            async def started() -> bool:
                return bool(server.started)

            await poll(started)
            assert reached == ["lifespan"]
            url = f"http://127.0.0.1:{port}/mcp"
            async with create_mcp_http_client() as plain:
                assert (await plain.get(url)).status_code == 401
            async with create_mcp_http_client(
                    headers={"Authorization": f"Bearer {token}"}) as authorized:
                assert (await authorized.get(url)).status_code == 200
            assert reached == ["lifespan", "http"]
            for headers in ({}, {"Authorization": f"Bearer {token}"}):
                with pytest.raises(InvalidStatus):
                    async with ws_connect(f"ws://127.0.0.1:{port}/mcp",
                                          additional_headers=headers, open_timeout=10):
                        pass
            assert reached == ["lifespan", "http"]
        finally:
            server.should_exit = True


async def test_http_transport_needs_its_bearer_token_and_releases_claims_on_sigterm(
        cluster: LocalCluster) -> None:
    port, token, task = _free_port(), "tok-" + "9" * 24, key("http")
    env = {**os.environ, "QUORUMBOARD_ENDPOINTS": ",".join(cluster.endpoints),
           "QUORUMBOARD_SECRET": SECRET, "MCP_TEST_TOKEN": token}
    proc = subprocess.Popen(
        [sys.executable, "-m", "quorumboard.consensus.cli", "mcp", "--agent", "web",
         "--transport", "http", "--port", str(port), "--token-env", "MCP_TEST_TOKEN",
         "--secret-env", "QUORUMBOARD_SECRET"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}/mcp"
    try:
        def listening() -> bool:
            with socket.socket() as sock:
                return sock.connect_ex(("127.0.0.1", port)) == 0

        await anyio.to_thread.run_sync(lambda: wait_until(listening, timeout_s=30))
        async with create_mcp_http_client() as plain:
            assert (await plain.post(url, json={})).status_code == 401
        async with create_mcp_http_client(headers={"Authorization": "Bearer wrong"}) as wrong:
            assert (await wrong.post(url, json={})).status_code == 401
        http = create_mcp_http_client(headers={"Authorization": f"Bearer {token}"})
        async with http, Client(streamable_http_client(url, http_client=http)) as client:
            claim = ok(await client.call_tool("board_claim", {"key": task, "ttl_s": 60}))
            assert claim["owner"] == "web"
        proc.send_signal(signal.SIGTERM)
        assert await anyio.to_thread.run_sync(lambda: proc.wait(30)) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)
        if proc.stderr is not None:
            proc.stderr.close()
    board = cluster.board("checker")
    try:  # released on the way out, not left for its 60 s TTL
        assert await anyio.to_thread.run_sync(lambda: board.get(task)) is None
    finally:
        board.close()


def _run_example(name: str, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(EXAMPLES / name), *args], capture_output=True,
                          text=True, timeout=90, check=False, cwd=ROOT,
                          env={**os.environ, **env, "OPENAI_AGENTS_DISABLE_TRACING": "1"})


async def test_openai_agents_example_over_mcp(cluster: LocalCluster) -> None:
    """The agent (the fake chat server answering one tool call per turn) claims the task,
    writes its result fenced by the claim and releases it, all through quorumboard mcp."""
    env = {"QUORUMBOARD_ENDPOINTS": ",".join(cluster.endpoints), "QUORUMBOARD_SECRET": SECRET}
    task = key("agents-llm")
    name = task.rsplit("/", 1)[-1]
    script = [("board_claim", {"key": task, "ttl_s": 60}),
              ("board_put", {"key": f"results/{name}", "value": "written by the model",
                             "claim": task}),
              ("board_release", {"key": task})]
    with FakeLLM(behaviour="sequence", script=script) as llm:
        r = await anyio.to_thread.run_sync(lambda: _run_example(
            "openai_agents_board.py", "--agent", "sdk-llm", "--task", task, "--model", "fake",
            "--base-url", llm.base_url, env=env))
        assert r.returncode == 0, r.stderr[-3000:]
        assert llm.chat_requests == len(script) + 1
        tool_names = {t["function"]["name"] for t in llm.requests[0]["tools"]}
        assert tool_names == set(TOOLS)
        # What the model was shown back: the three results, none an error.
        shown = [m for m in llm.requests[-1]["messages"] if m.get("role") == "tool"]
        assert len(shown) == len(script)
        assert '"fence"' in str(shown[0]["content"]) and '"released"' in str(shown[2]["content"])
        assert json.loads(r.stdout.strip().splitlines()[-1])["final_output"] == "Nothing to do."
    board = cluster.board("checker")
    try:
        entry = await anyio.to_thread.run_sync(lambda: board.get(f"results/{name}"))
        assert entry is not None and entry.author == "sdk-llm"
        assert entry.value == "written by the model"
        assert await anyio.to_thread.run_sync(lambda: board.get(task)) is None  # released
    finally:
        board.close()


async def test_two_agents_example(cluster: LocalCluster) -> None:
    r = await anyio.to_thread.run_sync(lambda: _run_example(
        "two_agents.py", "--endpoints", ",".join(cluster.endpoints),
        env={"QUORUMBOARD_SECRET": SECRET}))
    assert r.returncode == 0, r.stdout + r.stderr[-3000:]
    steps = [json.loads(line) for line in r.stdout.splitlines()]
    assert [s["step"] for s in steps] == ["race", "merged", "claim-held", "taken-over",
                                          "late-write", "done"]
    assert steps[-1]["ok"] is True
