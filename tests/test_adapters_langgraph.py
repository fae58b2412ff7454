"""The LangGraph adapters on a real 3-replica cluster: LangGraph's own conformance suite, a
compiled graph, one writer per thread across processes, the store through a leader SIGKILL,
large checkpoints, the strict serializer, and the example."""

from __future__ import annotations

import asyncio
import dataclasses
import importlib.util
import operator
import os
import select
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from types import ModuleType
from typing import Annotated, Any, TypedDict

import ormsgpack
import pytest
from langgraph.checkpoint.base import BaseCheckpointSaver, Checkpoint, empty_checkpoint
from langgraph.checkpoint.conformance import checkpointer_test, validate
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer
from langgraph.graph import END, START, StateGraph
from langgraph.store.base import BaseStore
from langgraph.types import Command, interrupt

from quorumboard.consensus import (
    BoardError,
    ClaimHeld,
    CorruptData,
    FencedOut,
    FenceRef,
    InvalidCommand,
    LocalCluster,
    StaleVersion,
    connect,
)
from quorumboard.consensus.adapters.langgraph import (
    BoardCheckpointSaver,
    BoardStore,
    UnsupportedOperation,
)
from tests.conftest import wait_until

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "langgraph_team.py"
WORKER = ROOT / "tests" / "langgraph_worker.py"
SHORT_TTL_S = 2.0
"""Claim lease of the takeover tests: long enough for a write (or a renewal) under contention,
short enough that waiting for a lapse costs little."""


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalCluster]:
    with LocalCluster(replicas=3, log_level="warning") as c:
        yield c


def _prefix(what: str) -> str:
    return f"lg-test/{what}-{uuid.uuid4().hex[:8]}/"


def _team() -> ModuleType:
    spec = importlib.util.spec_from_file_location("langgraph_team", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # typing.get_type_hints looks the module up there
    spec.loader.exec_module(module)
    return module


def _checkpoint(saver: BaseCheckpointSaver[Any], values: dict[str, Any]) -> Checkpoint:
    cp = empty_checkpoint()
    cp["channel_values"] = dict(values)
    cp["channel_versions"] = {k: saver.get_next_version(None, None) for k in values}
    return cp


def _config(thread: str, checkpoint_id: str | None = None) -> Any:
    conf: dict[str, Any] = {"thread_id": thread, "checkpoint_ns": ""}
    if checkpoint_id:
        conf["checkpoint_id"] = checkpoint_id
    return {"configurable": conf}


def _put(saver: BaseCheckpointSaver[Any], thread: str, values: dict[str, Any],
         parent: str | None = None, **metadata: Any) -> str:
    cp = _checkpoint(saver, values)
    saver.put(_config(thread, parent), cp, {"source": "loop", "step": 0, **metadata},
              dict(cp["channel_versions"]))
    return cp["id"]


def _assert_one_chain(saver: BaseCheckpointSaver[Any], thread: str) -> list[str]:
    """The thread's checkpoints, newest first, form one chain: each one's parent is the next."""
    tuples = list(saver.list(_config(thread)))
    ids = [t.config["configurable"]["checkpoint_id"] for t in tuples]
    parents = [t.parent_config["configurable"]["checkpoint_id"] if t.parent_config else None
               for t in tuples]
    assert parents == [*ids[1:], None], f"the chain forked: ids {ids}, parents {parents}"
    return ids


# ------------------------------------------------------------------- conformance suite


class _ForgetsWrites(BoardCheckpointSaver):
    """Planted bug for the negative control: pending writes are dropped."""

    def put_writes(self, *args: Any, **kwargs: Any) -> None:
        return None


def _register(cluster: LocalCluster, cls: type[BoardCheckpointSaver], name: str,
              **options: Any) -> Any:
    board = cluster.board(agent=f"conformance-{name}")

    @checkpointer_test(name=name)
    async def factory() -> AsyncIterator[BoardCheckpointSaver]:
        # fresh keys per capability: thread ids repeat
        saver = cls(board, prefix=_prefix(name), **options)
        yield saver
        await saver.aclose()

    return factory


def test_conformance_suite_passes_every_base_capability(cluster: LocalCluster) -> None:
    """The default saver passes every base capability of LangGraph's own suite. (The suite's
    list tests start one thread afresh several times, with no parent: the saver accepts that
    from the writer that has seen the current head, never from one with a stale view.)"""
    report = asyncio.run(validate(_register(cluster, BoardCheckpointSaver, "board")))
    failures = [f for r in report.results.values() for f in r.failures]
    assert failures == [] and report.passed_all_base(), failures
    for cap in ("put", "put_writes", "get_tuple", "list", "delete_thread"):
        assert report.results[cap].tests_passed > 0

    # Negative control: the same suite on a saver with a planted bug must fail.
    bad = asyncio.run(validate(_register(cluster, _ForgetsWrites, "forgets-writes"),
                               capabilities={"put_writes"}))
    assert bad.results["put_writes"].tests_failed > 0
    assert not bad.passed_all_base()


# --------------------------------------------------------------- a compiled graph


def test_graph_compiled_with_store_and_checkpointer(cluster: LocalCluster) -> None:
    """The example team's graph, sync and async, resumes its thread and shares its notes."""
    board = cluster.board(agent="graph")
    team = _team()
    store = BoardStore(board, prefix=_prefix("store"))
    with BoardCheckpointSaver(board, prefix=_prefix("cp")) as saver:
        graph = team.build_graph("ann", saver, store)
        thread = {"configurable": {"thread_id": "t-graph"}}
        state = graph.invoke({"topic": "raft", "log": []}, thread)
        assert state["log"] == ["ann researched raft", "ann drafted from 1 note(s)"]
        state = asyncio.run(graph.ainvoke({"topic": "paxos"}, thread))
        assert state["log"][2:] == ["ann researched paxos", "ann drafted from 2 note(s)"]
        assert graph.get_state(thread).values["log"] == state["log"]
        assert len(list(graph.get_state_history(thread))) == 8
        _assert_one_chain(saver, "t-graph")
        notes = store.search(team.NOTES)
        assert {n.key: n.value["by"] for n in notes} == {"raft": "ann", "paxos": "ann"}


class _Log(TypedDict):
    log: Annotated[list[str], operator.add]


def _ask(state: _Log) -> dict[str, Any]:
    return {"log": [f"answer {interrupt('need input')}"]}


def test_graph_subgraph_interrupt_and_resume(cluster: LocalCluster) -> None:
    """A subgraph (its own checkpoint namespace) that interrupts for input and resumes: the
    interrupt and resume writes go through put_writes, across two savers of one worker."""
    inner = StateGraph(_Log)
    inner.add_node("ask", _ask)
    inner.add_edge(START, "ask")
    inner.add_edge("ask", END)
    outer = StateGraph(_Log)
    outer.add_node("pre", lambda state: {"log": ["pre"]})
    outer.add_node("sub", inner.compile())
    outer.add_edge(START, "pre")
    outer.add_edge("pre", "sub")
    outer.add_edge("sub", END)
    prefix = _prefix("interrupt")
    board = cluster.board(agent="asker")
    config: Any = {"configurable": {"thread_id": "t"}}
    with BoardCheckpointSaver(board, prefix=prefix) as saver:
        paused = outer.compile(checkpointer=saver).invoke({"log": []}, config)
        assert [i.value for i in paused["__interrupt__"]] == ["need input"]
    with BoardCheckpointSaver(board, prefix=prefix) as saver:  # e.g. after a restart
        done = outer.compile(checkpointer=saver).invoke(Command(resume="42"), config)
        assert done["log"][-1] == "answer 42"
        namespaces = {t.config["configurable"]["checkpoint_ns"]
                      for t in saver.list({"configurable": {"thread_id": "t"}})}
        assert "" in namespaces and any(ns.startswith("sub:") for ns in namespaces)


# ----------------------------------------------------------- one writer per thread


def _read_line(proc: subprocess.Popen[str], timeout_s: float) -> str:
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        ready, _, _ = select.select([proc.stdout], [], [], 0.1)
        if ready:
            return proc.stdout.readline()
        if proc.poll() is not None:
            break
    raise AssertionError(f"worker said nothing in {timeout_s}s (exit {proc.poll()})")


def test_two_workers_one_thread_second_refused_then_takes_over(cluster: LocalCluster) -> None:
    """Worker A (its own process) holds the thread; worker B is refused; A is SIGKILLed; once
    A's claim lapses B continues A's chain, which stays one chain."""
    thread = f"t-{uuid.uuid4().hex[:8]}"
    endpoints = ",".join(cluster.endpoints)
    proc = subprocess.Popen([sys.executable, str(WORKER), endpoints, thread, "worker-a",
                             str(SHORT_TTL_S)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True, cwd=ROOT)
    try:
        assert _read_line(proc, 60.0).strip() == "READY"
        board = cluster.board(agent="worker-b")
        with BoardCheckpointSaver(board, claim_ttl_s=SHORT_TTL_S) as saver:
            graph = _team().build_graph("worker-b", saver, BoardStore(board))
            config = {"configurable": {"thread_id": thread}}
            with pytest.raises(ClaimHeld, match="one writer per thread") as refused:
                graph.invoke({"topic": "b"}, config, durability="sync")
            assert isinstance(refused.value, BoardError)
            assert refused.value.detail["owner"] == "worker-a"

            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(10)

            def take_over() -> dict[str, Any] | None:
                try:
                    result: dict[str, Any] = graph.invoke({"topic": "b"}, config,
                                                          durability="sync")
                    return result
                except ClaimHeld:
                    return None

            state = wait_until(take_over, timeout_s=30.0, interval_s=0.2,
                               what="worker B to take the thread over")
            assert state["log"] == ["worker-a researched worker-a",
                                    "worker-a drafted from 1 note(s)",
                                    "worker-b researched b", "worker-b drafted from 2 note(s)"]
            _assert_one_chain(saver, thread)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)


class _KeepsStaleClaim(BoardCheckpointSaver):
    """Planted bug: never renews nor re-checks its claim, so it writes with whatever fence it
    first got. Only the fence every write carries can stop it."""

    def _claim(self, thread: str) -> tuple[FenceRef, bool]:
        held = self._claims.get(thread)
        return ((FenceRef(key=held.key, fence=held.fence), False) if held
                else super()._claim(thread))


def test_chain_checker_catches_the_fork_langgraphs_own_saver_allows() -> None:
    """Negative control of ``_assert_one_chain``: two workers sharing LangGraph's in-memory
    saver both extend the same checkpoint (LangGraph issue #8796), and the checker says so."""
    shared = InMemorySaver()
    root = _put(shared, "t", {"a": 0})
    _put(shared, "t", {"a": 1}, parent=root)  # worker 1
    _put(shared, "t", {"a": 2}, parent=root)  # worker 2, unaware of worker 1
    with pytest.raises(AssertionError, match="forked"):
        _assert_one_chain(shared, "t")


def test_lapsed_claim_fenced_and_stale_head_refused(cluster: LocalCluster) -> None:
    """After writers' claims lapse and another worker takes their threads: a write with an old
    fence is fenced out (planted saver that never renews), a live saver is refused the claim,
    and once the thread is free again its stale view of the head is refused. Two savers sharing
    one identity (hence one claim) cannot fork a chain either."""
    prefix = _prefix("fence")
    stale = _KeepsStaleClaim(cluster.board(agent="stale"), prefix=prefix, claim_ttl_s=1.0)
    zombie = BoardCheckpointSaver(cluster.board(agent="zombie"), prefix=prefix, claim_ttl_s=1.0)
    t1 = _put(stale, "t", {"a": 1})
    u1 = _put(zombie, "u", {"a": 1})
    observer = cluster.board(agent="observer")
    wait_until(lambda: not observer.list(f"{prefix}claims/"), timeout_s=20.0,
               what="both claims to lapse")
    with BoardCheckpointSaver(cluster.board(agent="heir"), prefix=prefix) as heir:
        t2 = _put(heir, "t", {"a": 2}, parent=t1)
        u2 = _put(heir, "u", {"a": 2}, parent=u1)
        with pytest.raises(FencedOut):  # even on the current head: its fence is old
            _put(stale, "t", {"a": 3}, parent=t2)
        with pytest.raises(ClaimHeld, match="one writer per thread"):
            _put(zombie, "u", {"a": 3}, parent=u1)
    with pytest.raises(StaleVersion, match="fork"):  # free again, but zombie missed u2
        _put(zombie, "u", {"a": 3}, parent=u1)
    zombie.close()
    assert _assert_one_chain(heir, "t") == [t2, t1]
    assert _assert_one_chain(heir, "u") == [u2, u1]

    twin1 = BoardCheckpointSaver(cluster.board(agent="twin"), prefix=prefix)
    twin2 = BoardCheckpointSaver(cluster.board(agent="twin"), prefix=prefix)
    v1 = _put(twin1, "v", {"a": 1})
    v2 = _put(twin2, "v", {"a": 2}, parent=v1)  # same identity: shares twin1's claim
    with pytest.raises(StaleVersion, match="fork"):
        _put(twin1, "v", {"a": 3}, parent=v1)  # twin1 last saw the head before v2
    assert _assert_one_chain(twin2, "v") == [v2, v1]
    twin1.close()


def _keys(board: Any, prefix: str, part: str) -> set[str]:
    return {e.key for e in board.list(f"{prefix}threads/_t/{part}/")}


def test_a_saver_that_read_an_old_head_cannot_fork(cluster: LocalCluster) -> None:
    """Worker B reads the head (as every graph run starts), worker A extends the chain and
    hands the thread over: B's put on what it read is refused, as is every blind retry of it,
    and the refused puts leave nothing behind."""
    prefix = _prefix("stale-read")
    board = cluster.board(agent="observer")
    a = BoardCheckpointSaver(cluster.board(agent="A"), prefix=prefix)
    b = BoardCheckpointSaver(cluster.board(agent="B"), prefix=prefix)
    c1 = _put(a, "t", {"x": 1})
    seen = b.get_tuple(_config("t"))
    assert seen is not None and seen.checkpoint["id"] == c1
    c2 = _put(a, "t", {"x": 2}, parent=c1)
    a.close()
    values_before = _keys(board, prefix, "v")
    for _ in range(3):  # a wrapper that retries on BoardError must not fork the chain either
        with pytest.raises(StaleVersion, match="would fork") as refused:
            _put(b, "t", {"x": 99}, parent=c1)
        assert refused.value.reason == "head-moved"
    assert _assert_one_chain(b, "t") == [c2, c1]
    assert _keys(board, prefix, "v") == values_before
    fresh = b.get_tuple(_config("t"))  # starting over from the head works
    assert fresh is not None and fresh.checkpoint["id"] == c2
    cp = _checkpoint(b, {"x": 3})
    for _ in range(2):  # the same put again (a retry after an unknown outcome) is a no-op
        b.put(_config("t", c2), cp, {"source": "loop", "step": 3}, dict(cp["channel_versions"]))
    assert _assert_one_chain(b, "t") == [cp["id"], c2, c1]
    b.close()


class _RacedHead(BoardCheckpointSaver):
    """Harness: the head another writer replaces right after this saver read it, i.e. between
    the parent check and the compare-and-set (the race only the compare-and-set can catch)."""

    rival: BoardCheckpointSaver

    def _read_head(self, thread: str, ns: str) -> tuple[int, dict[str, Any] | None]:
        seen = super()._read_head(thread, ns)
        assert seen[1] is not None
        _put(self.rival, thread, {"x": "rival"}, parent=str(seen[1]["id"]))
        return seen


class _DiesBeforeCleanup(_RacedHead):
    """Harness: a worker that dies right after losing the race, before deleting what it wrote."""

    def _discard(self, thread: str, written: Any, fence: FenceRef) -> None:
        return None


def test_head_compare_and_set_refuses_a_race_and_cleans_up(cluster: LocalCluster) -> None:
    """A put that loses the head compare-and-set is refused and deletes the values and parts
    it wrote; the head is the last accepted put even when ids would order it otherwise (a
    worker whose clock is behind is refused, not hidden below the head)."""
    prefix = _prefix("race")
    board = cluster.board(agent="twin")
    first = BoardCheckpointSaver(board, prefix=prefix, value_bytes_max=16_384)
    c1 = _put(first, "t", {"x": 1})
    raced = _RacedHead(board, prefix=prefix, value_bytes_max=16_384)  # shares the claim
    raced.rival = first
    values, parts = _keys(board, prefix, "v"), _keys(board, prefix, "p")
    with pytest.raises(StaleVersion, match="moved while this put was written"):
        _put(raced, "t", {"x": os.urandom(40_000)}, parent=c1)  # large: written in parts
    ids = _assert_one_chain(first, "t")
    assert len(ids) == 2 and ids[1] == c1
    assert _keys(board, prefix, "p") == parts  # the loser's parts are gone
    assert len(_keys(board, prefix, "v")) == len(values) + 1  # only the rival's value

    behind = _checkpoint(first, {"x": "late"})
    behind["id"] = "00000000-0000-6000-8000-000000000000"  # sorts before every real id
    with pytest.raises(InvalidCommand, match="clock is behind"):
        first.put(_config("t", ids[0]), behind, {"source": "loop", "step": 9},
                  dict(behind["channel_versions"]))
    latest = first.get_tuple(_config("t"))
    assert latest is not None and latest.checkpoint["id"] == ids[0]
    assert _assert_one_chain(first, "t") == ids

    # What a crash leaves (values and parts no record names) is removed by sweep().
    values = _keys(board, prefix, "v")
    dead = _DiesBeforeCleanup(board, prefix=prefix, value_bytes_max=16_384)
    dead.rival = first
    with pytest.raises(StaleVersion):
        _put(dead, "t", {"x": os.urandom(40_000)}, parent=ids[0])
    assert len(_keys(board, prefix, "p")) > len(parts)
    ids = _assert_one_chain(first, "t")
    assert first.sweep("t") > 0
    assert _keys(board, prefix, "p") == parts
    assert len(_keys(board, prefix, "v")) == len(values) + 1  # the rival's new value stays
    for cid in ids:
        assert first.get_tuple(_config("t", cid)) is not None  # every checkpoint still reads
    assert first.sweep("t") == 0
    first.close()


def test_branching_is_an_opt_in(cluster: LocalCluster) -> None:
    """Time travel (a put from an older checkpoint) is refused by default and, with
    ``branching=True``, becomes the head while the old branch stays readable by id."""
    prefix = _prefix("branch")
    board = cluster.board(agent="traveller")
    with BoardCheckpointSaver(board, prefix=prefix) as saver:
        c1 = _put(saver, "t", {"x": 1})
        c2 = _put(saver, "t", {"x": 2}, parent=c1)
        with pytest.raises(StaleVersion, match="branching=True"):
            _put(saver, "t", {"x": 3}, parent=c1)
    with BoardCheckpointSaver(board, prefix=prefix, branching=True) as saver:
        c3 = _put(saver, "t", {"x": 3}, parent=c1)
        latest = saver.get_tuple(_config("t"))
        assert latest is not None and latest.checkpoint["channel_values"] == {"x": 3}
        assert latest.parent_config is not None
        assert latest.parent_config["configurable"]["checkpoint_id"] == c1
        old = saver.get_tuple(_config("t", c2))
        assert old is not None and old.checkpoint["channel_values"] == {"x": 2}
        assert [t.checkpoint["id"] for t in saver.list(_config("t"))] == [c3, c2, c1]

    # The same with a compiled graph: replaying from an older checkpoint (LangGraph's time
    # travel) is refused by the default saver and a branch with branching=True.
    builder = StateGraph(_Log)
    builder.add_node("step", lambda state: {"log": [f"step {len(state['log'])}"]})
    builder.add_edge(START, "step")
    builder.add_edge("step", END)
    config: Any = {"configurable": {"thread_id": "g"}}
    with BoardCheckpointSaver(board, prefix=prefix) as saver:
        graph = builder.compile(checkpointer=saver)
        graph.invoke({"log": []}, config)
        assert graph.invoke({"log": []}, config)["log"] == ["step 0", "step 1"]
        history = list(graph.get_state_history(config))
        older = next(h.config for h in history if h.values.get("log") == ["step 0"])
        with pytest.raises(StaleVersion, match="would fork"):
            graph.invoke(None, older)
        assert _assert_one_chain(saver, "g")[0] == history[0].config["configurable"][
            "checkpoint_id"]
    with BoardCheckpointSaver(board, prefix=prefix, branching=True) as saver:
        graph = builder.compile(checkpointer=saver)
        replayed = graph.invoke({"log": []}, older)
        assert replayed["log"] == ["step 0", "step 1"]
        assert graph.get_state(config).values["log"] == ["step 0", "step 1"]
        assert len(list(graph.get_state_history(config))) > len(history)


def test_late_pending_writes_after_a_lapse_are_refused(cluster: LocalCluster) -> None:
    """A worker whose claim lapsed while another continued the thread cannot attach pending
    writes to the new owner's checkpoints (nor, retrying, to its own old one) until it has
    read the head again."""
    prefix = _prefix("late-writes")
    slow = BoardCheckpointSaver(cluster.board(agent="slow"), prefix=prefix, claim_ttl_s=1.0)
    cp = _put(slow, "w", {"x": 1})
    observer = cluster.board(agent="observer")
    wait_until(lambda: not observer.list(f"{prefix}claims/"), timeout_s=20.0,
               what="the slow worker's claim to lapse")
    with BoardCheckpointSaver(cluster.board(agent="heir"), prefix=prefix) as heir:
        cpn = _put(heir, "w", {"x": 2}, parent=cp)
    for target in (cpn, cp, cp):  # the new head it never read; its own old one, twice
        with pytest.raises(StaleVersion, match="has not read") as refused:
            slow.put_writes(_config("w", target), [("x", "late result")], "task-1")
        assert refused.value.reason == "head-moved"
    reader = BoardCheckpointSaver(observer, prefix=prefix, policy=None)
    for target in (cp, cpn):
        tup = reader.get_tuple(_config("w", target))
        assert tup is not None and tup.pending_writes == []
    latest = slow.get_tuple(_config("w"))  # read the head: now its writes are for it
    assert latest is not None and latest.checkpoint["id"] == cpn
    slow.put_writes(_config("w", cpn), [("x", "fresh result")], "task-2")
    tup = reader.get_tuple(_config("w"))
    assert tup is not None and tup.pending_writes == [("task-2", "x", "fresh result")]
    slow.close()


def test_sync_methods_and_claim_release(cluster: LocalCluster) -> None:
    prefix = _prefix("sync")
    board = cluster.board(agent="sync-a")
    saver = BoardCheckpointSaver(board, prefix=prefix)
    first = _put(saver, "t1", {"x": "one"}, step=1)
    second = _put(saver, "t1", {"x": "two"}, parent=first, step=2)
    saver.put_writes(_config("t1", second), [("x", "w0"), ("y", {"k": 1})], "task-1", "p")
    saver.put_writes(_config("t1", second), [("x", "w0")], "task-1", "p")  # kept once
    with pytest.raises(StaleVersion, match="different value") as kept:
        saver.put_writes(_config("t1", second), [("x", "again")], "task-1", "p")
    assert kept.value.reason == "write-kept"
    tup = saver.get_tuple(_config("t1"))
    assert tup is not None and tup.checkpoint["id"] == second
    assert tup.checkpoint["channel_values"] == {"x": "two"}
    assert tup.pending_writes == [("task-1", "x", "w0"), ("task-1", "y", {"k": 1})]
    assert tup.parent_config is not None
    assert tup.parent_config["configurable"]["checkpoint_id"] == first
    old = saver.get_tuple(_config("t1", first))
    assert old is not None and old.checkpoint["channel_values"] == {"x": "one"}
    assert [t.metadata["step"] for t in saver.list(_config("t1"))] == [2, 1]
    assert [t.checkpoint["id"] for t in saver.list(None, filter={"step": 1})] == [first]
    assert [t.checkpoint["id"] for t in saver.list(_config("t1"), limit=1)] == [second]

    claim = board.get(f"{prefix}claims/_t1")
    assert claim is not None and claim.lease is not None
    before = board.lease(claim.lease)
    assert saver.keepalive() == ["t1"]  # renewed without a write
    after = board.lease(claim.lease)
    assert before is not None and after is not None
    assert after.refreshes == before.refreshes + 1

    other = BoardCheckpointSaver(cluster.board(agent="sync-b"), prefix=prefix)
    with pytest.raises(ClaimHeld):
        _put(other, "t1", {"x": "three"}, parent=second)
    with pytest.raises(ClaimHeld):  # deleting a held thread is refused too
        other.delete_thread("t1")

    saver.close()
    assert board.get(f"{prefix}claims/_t1") is None  # released at once, no lapse to wait for
    third = _put(other, "t1", {"x": "three"}, parent=second)
    assert other.release("t1") and not other.release("t1")
    # Handed back: the first holder reads the head afresh on its new claim, no stale refusal.
    fourth = _put(saver, "t1", {"x": "four"}, parent=third)
    assert _assert_one_chain(other, "t1") == [fourth, third, second, first]
    saver.delete_thread("t1")
    assert other.get_tuple(_config("t1")) is None
    assert list(other.list(_config("t1"))) == []
    assert board.list(prefix) == []  # checkpoints, values, writes and the claim are all gone


# ------------------------------------------------------------------ large checkpoints


def test_large_checkpoint_split_across_keys(cluster: LocalCluster) -> None:
    board = cluster.board(agent="large")
    prefix = _prefix("large")
    big = os.urandom(3 * 1024 * 1024 + 17)  # three times the board's 1 MiB value bound
    with BoardCheckpointSaver(board, prefix=prefix) as saver:
        cid = _put(saver, "t", {"big": big, "small": "s"})
        parts = board.list(f"{prefix}threads/_t/p/")
        assert len(parts) == 5  # 3 MiB + 17 B in parts of 768 KiB (base64 fits one value)
        tup = saver.get_tuple(_config("t"))
        assert tup is not None and tup.checkpoint["id"] == cid
        assert tup.checkpoint["channel_values"]["big"] == big

    # A small value bound splits the record fields (metadata) and values into many parts; a
    # damaged part is detected by its length and SHA-256, never returned.
    prefix = _prefix("parts")
    with BoardCheckpointSaver(board, prefix=prefix, value_bytes_max=16_384) as saver:
        value = {"text": "x" * 100_000, "n": list(range(1000))}
        _put(saver, "t", {"v": value}, notes="m" * 5_000)
        tup = saver.get_tuple(_config("t"))
        assert tup is not None and tup.checkpoint["channel_values"]["v"] == value
        assert tup.metadata["notes"] == "m" * 5_000
        parts = board.list(f"{prefix}threads/_t/p/")
        assert len(parts) > 10
        board.put(parts[3].key, {"b64": "AAAA"})
        with pytest.raises(CorruptData, match="SHA-256"):
            saver.get_tuple(_config("t"))


# -------------------------------------------------------------- the strict serializer

PLANTED = "qb_planted_module"


@dataclasses.dataclass
class _Note:
    text: str


class _Planting:
    """A serializer that writes crafted bytes for the marker values (what an attacker with
    write access to the board could store), and LangGraph's serializer otherwise."""

    def __init__(self, payload: bytes) -> None:
        self.payload = payload
        self.inner = JsonPlusSerializer()

    def dumps_typed(self, obj: Any) -> tuple[str, bytes]:
        if obj == "PLANT":
            return "msgpack", self.payload
        if obj == "PICKLE":
            return "pickle", b"\x80\x04K\x01."
        if obj == "ODD":
            return "odd-format", b"\x00"
        return self.inner.dumps_typed(obj)

    def loads_typed(self, data: tuple[str, bytes]) -> Any:
        return self.inner.loads_typed(data)


def test_strict_serializer_never_imports_a_module_named_in_the_data(
        cluster: LocalCluster, tmp_path: Path) -> None:
    marker = tmp_path / "imported"
    (tmp_path / f"{PLANTED}.py").write_text(
        f"open({str(marker)!r}, 'w').write('imported')\n"
        "class Boom:\n    def __init__(self, arg):\n        self.arg = arg\n")
    # msgpack ext 0 (constructor, one argument): module, class, argument.
    payload = ormsgpack.packb(ormsgpack.Ext(0, ormsgpack.packb([PLANTED, "Boom", "payload"])))
    board = cluster.board(agent="strict")
    prefix = _prefix("strict")
    sys.path.insert(0, str(tmp_path))
    try:
        planter = BoardCheckpointSaver(board, prefix=prefix, serde=_Planting(payload))
        _put(planter, "t", {"x": "PLANT"})
        _put(planter, "p", {"x": "PICKLE"})
        _put(planter, "o", {"x": "ODD"})
        planter.close()
        writer = BoardCheckpointSaver(board, prefix=prefix)
        reader = BoardCheckpointSaver(board, prefix=prefix, policy=None)
        tup = reader.get_tuple(_config("t"))
        assert tup is not None
        assert tup.checkpoint["channel_values"]["x"] == "payload"  # the plain data, no object
        assert PLANTED not in sys.modules and not marker.exists()
        with pytest.raises(CorruptData, match="pickle"):
            reader.get_tuple(_config("p"))
        with pytest.raises(CorruptData, match="odd-format"):  # an allowlist, not a denylist
            reader.get_tuple(_config("o"))
        with pytest.raises(InvalidCommand, match="pickle"):
            BoardCheckpointSaver(board, prefix=prefix, policy=None, serde_types={"pickle"})

        # A type of the user's own is rebuilt only once named in code: LangGraph derives such
        # an allowlist from the graph's schema (LANGGRAPH_STRICT_MSGPACK=true) via
        # with_allowlist, which the saver honours; until then it reads back as plain data.
        _put(writer, "n", {"note": _Note("hi")})
        plain = reader.get_tuple(_config("n"))
        assert plain is not None and plain.checkpoint["channel_values"]["note"] == {"text": "hi"}
        allowed = reader.with_allowlist({(_Note.__module__, "_Note")})
        rebuilt = allowed.get_tuple(_config("n"))
        assert rebuilt is not None and rebuilt.checkpoint["channel_values"]["note"] == _Note("hi")

        # Negative control: LangGraph's permissive default would have imported and run it.
        revived = JsonPlusSerializer(allowed_msgpack_modules=True).loads_typed(
            ("msgpack", payload))
        assert type(revived).__name__ == "Boom" and marker.exists()
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop(PLANTED, None)


# ----------------------------------------------------------------------------- the store


def test_store_namespaces_timestamps_ttl_search_and_compare_and_set(
        cluster: LocalCluster) -> None:
    board = cluster.board(agent="store-a")
    prefix = _prefix("store")
    store = BoardStore(board, prefix=prefix, page_entries=5)
    ns = ("users/ann", "memories", "a%2Fb", "ünï")
    store.put(ns, "pref/color", {"v": 1})
    item = store.get(ns, "pref/color")
    assert item is not None and item.namespace == ns and item.key == "pref/color"
    entry = board.list(prefix)[0]
    assert entry.key.count("/") == prefix.count("/") + len(ns)  # one segment per label
    created = item.created_at
    store.put(ns, "pref/color", {"v": 2})
    again = store.get(ns, "pref/color")
    assert again is not None and again.value == {"v": 2}
    assert again.created_at == created and again.updated_at > created

    # The prefix is bound to last-writer-wins: any agent's plain put is an upsert.
    other = BoardStore(cluster.board(agent="store-b"), prefix=prefix, policy=None)
    other.put(ns, "pref/color", {"v": 3})
    # Compare-and-set: writes only at the version read.
    got, version = store.get_versioned(ns, "pref/color")
    assert got is not None and got.value == {"v": 3}
    assert store.put_if_version(ns, "pref/color", {"v": 4}, version) == version + 1
    with pytest.raises(StaleVersion):
        store.put_if_version(ns, "pref/color", {"v": 5}, version)
    with pytest.raises(StaleVersion):
        store.put_if_version(ns, "new", {"v": 1}, 3)
    assert store.put_if_version(ns, "new", {"v": 1}, 0) == 1

    # Search pages through the list (page of 5, 23 items): filter, offset, limit, none lost.
    docs = ("docs", "x/y")
    for i in range(23):
        store.put(docs, f"d{i:02d}", {"i": i, "odd": i % 2 == 1})
    store.put(("docs", "x/y", "deeper"), "z", {"i": 99, "odd": True})
    found = store.search(docs, limit=100)
    assert len(found) == 24
    odd = store.search(docs, filter={"odd": True}, limit=100)
    assert sorted(x.value["i"] for x in odd) == [*range(1, 23, 2), 99]
    page = store.search(docs, filter={"i": {"$gte": 10}}, offset=4, limit=5)
    assert [x.value["i"] for x in page] == [14, 15, 16, 17, 18]
    assert store.search(docs, filter={"missing": {"$gt": 1}}) == []  # no match, no error
    with pytest.raises(InvalidCommand, match="unknown operator"):
        store.search(docs, filter={"i": {"$gtt": 1}})
    with pytest.raises(UnsupportedOperation, match="vector index"):
        store.search(docs, query="semantic please")
    assert store.list_namespaces(prefix=("docs",)) == [docs, (*docs, "deeper")]
    assert store.list_namespaces(suffix=("deeper",)) == [(*docs, "deeper")]
    assert store.list_namespaces(max_depth=1) == [("docs",), ("users/ann",)]
    store.delete(docs, "d00")
    assert store.get(docs, "d00") is None

    # TTL: a lease; a read with refresh renews it only for its holder (the writer's agent).
    store.put(("ttl",), "k", {"v": 1}, ttl=1.0)
    held = board.get(store._key(("ttl",), "k"))
    assert held is not None and held.lease is not None
    before = board.lease(held.lease)
    assert before is not None and before.ttl == 60.0
    assert other.get(("ttl",), "k", refresh_ttl=True) is not None
    after_other = board.lease(held.lease)
    assert after_other is not None and after_other.refreshes == before.refreshes
    assert store.get(("ttl",), "k", refresh_ttl=True) is not None
    after_own = board.lease(held.lease)
    assert after_own is not None and after_own.refreshes == before.refreshes + 1
    store.put(("ttl",), "short", {"v": 1}, ttl=1.0 / 60)  # one second
    wait_until(lambda: store.get(("ttl",), "short", refresh_ttl=False) is None, timeout_s=20.0,
               what="the item's TTL lease to expire")


def test_store_ttl_refresh_never_fails_a_read(cluster: LocalCluster) -> None:
    """A renewal that cannot reach the cluster is logged and skipped: the read it rides on
    already succeeded (the store is then pointed at a port nothing listens on)."""
    board = cluster.board(agent="refresher")
    prefix = _prefix("refresh")
    store = BoardStore(board, prefix=prefix)
    store.put(("ns",), "k", {"v": 1}, ttl=1.0)
    entry = board.get(f"{prefix}_ns/_k")
    assert entry is not None and entry.lease is not None
    with socket.socket() as free:  # a loopback port nobody listens on
        free.bind(("127.0.0.1", 0))
        dead = f"127.0.0.1:{free.getsockname()[1]}"
    cut_off = connect(dead, agent="refresher", timeout_s=0.5)
    try:
        with pytest.raises(BoardError):  # the control: that board cannot renew anything
            cut_off.keepalive(entry.lease)
        BoardStore(cut_off, prefix=prefix, policy=None)._refresh(entry)  # no raise
    finally:
        cut_off.close()


def test_store_through_leader_sigkill(cluster: LocalCluster) -> None:
    """The store keeps serving, with everything it wrote, while its leader is SIGKILLed."""
    store = BoardStore(cluster.board(agent="failover"), prefix=_prefix("failover"))
    for i in range(5):
        store.put(("team",), f"k{i}", {"i": i})
    leader = cluster.wait_for_leader()
    cluster.kill(leader)
    try:
        for i in range(5, 10):
            store.put(("team",), f"k{i}", {"i": i})
        assert sorted(x.value["i"] for x in store.search(("team",), limit=100)) == \
            list(range(10))
        assert asyncio.run(store.aget(("team",), "k7")) is not None
        new_leader = cluster.wait_for_leader()
        assert new_leader != leader
    finally:
        cluster.restart(leader)
    cluster.wait_for_leader()


# -------------------------------------------------------------------------- the example


def test_example_team_runs(cluster: LocalCluster) -> None:
    out = subprocess.run([sys.executable, str(EXAMPLE), "--endpoints",
                          ",".join(cluster.endpoints)], capture_output=True, text=True,
                         timeout=120, cwd=ROOT, check=False)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "bob: refused: thread" in out.stdout
    assert "bob: took over: ['alice researched raft'" in out.stdout
    assert "checkpoints, one chain" in out.stdout


def test_store_is_a_base_store_and_adapters_package_imports_nothing_optional() -> None:
    assert issubclass(BoardStore, BaseStore)
    code = ("import sys; import quorumboard.consensus.adapters; "
            "assert 'langgraph' not in sys.modules, 'adapters imported langgraph'")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
