"""A one-member Raft group is not timer-bound, and an embedded replica is quiet by default.

How the timer-bound behaviour is shown without asserting a timing: every node here runs with an
idle tick of an hour (``tick_period_s=IDLE_TICK_S``), so the only ticks are the ones something
wakes (a proposal, a read barrier, or a call the test sends in). pysyncobj commits a leader's
entry at the top of a tick, from its followers' replies; a lone leader gets no reply, so before
the fix an entry appended in one tick waited for the next *idle* tick to commit — here an hour,
far past every deadline below (which are generous: 20 s for work that takes a millisecond).
After the fix it commits in the tick that appends it. The deadlines only bound a failing run;
nothing is timed.

Both ways a node runs are covered: a tick thread of its own (``RaftNode`` default) and an
asyncio loop (``loop=``, what every replica uses, embedded or as a process).
"""

from __future__ import annotations

import asyncio
import json
import pathlib
import subprocess
import sys
import textwrap
import threading
from collections.abc import Callable, Iterator

import msgpack
import pytest

from quorumboard.consensus.raft._pysyncobj import SyncObjReplica
from quorumboard.consensus.raft.node import ProposeFailure, RaftNode, RaftSettings
from tests.conftest import wait_until
from tests.raft_replica_main import CounterMachine, Waiter
from tests.test_raft import REPO_ROOT, free_port

IDLE_TICK_S = 3600.0
DEADLINE_S = 20.0
SUBPROCESS_TIMEOUT_S = 90.0


class ReadingMachine(CounterMachine):
    """A counter machine that can start a read barrier, or a ReadIndex read, from inside
    ``apply`` (the tick thread, with the entry being applied committed but not yet applied),
    recording what it saw: at completion, and (ReadIndex) in ``prepare`` as ``("prepared",
    count)``."""

    def __init__(self) -> None:
        super().__init__()
        self.node: RaftNode | None = None
        self.seen: list[int | tuple[str, int | None] | None] = []
        self.read_done = threading.Event()

    def apply(self, payload: bytes) -> object:
        key, _delta = msgpack.unpackb(payload, raw=False)
        if key in ("read-inside", "read-index-inside") and self.node is not None:
            def done(_result: object, failure: ProposeFailure | None) -> None:
                self.seen.append(self.counts.get(key) if failure is None else None)
                self.read_done.set()

            if key == "read-inside":
                self.node.barrier(done)
            else:
                self.node.read_index(
                    done, lambda: self.seen.append(("prepared", self.counts.get(key))))
        return super().apply(payload)


class Lone:
    """A started one-member node and what drives it."""

    def __init__(self, node: RaftNode, machine: ReadingMachine) -> None:
        self.node = node
        self.machine = machine

    def on_tick(self, fn: Callable[[], object]) -> object:
        """Run ``fn`` on the tick thread (the call itself wakes a tick) and return its value."""
        box: list[object] = []
        ran = threading.Event()

        def run() -> None:
            box.append(fn())
            ran.set()

        self.node.call_in_tick(run)
        assert ran.wait(DEADLINE_S), "the tick thread did not run the call"
        return box[0]


def _poke_and_check(node: RaftNode) -> bool:
    """Wake one tick (elections only happen on a tick), then report leadership."""
    node.call_in_tick(lambda: None)
    return node.is_leader()


@pytest.fixture(scope="module", params=["tick-thread", "asyncio-loop"])
def lone(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
         ) -> Iterator[Lone]:
    loop_mode = request.param == "asyncio-loop"
    settings = RaftSettings(
        self_address=f"127.0.0.1:{free_port()}", peers=(),
        data_dir=tmp_path_factory.mktemp(request.param),
        # fsync on one of the two: commit must follow the journal's fsync there.
        fsync=loop_mode, tick_period_s=IDLE_TICK_S)
    machine = ReadingMachine()
    loop = asyncio.new_event_loop() if loop_mode else None
    node = RaftNode(settings, machine, loop=loop)
    machine.node = node
    thread = None
    if loop is not None:
        thread = threading.Thread(target=loop.run_forever, daemon=True)
        thread.start()
    try:
        wait_until(lambda: _poke_and_check(node), DEADLINE_S, what="the lone node to lead")
        yield Lone(node, machine)
    finally:
        node.close()
        if loop is not None and thread is not None:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(5.0)
            loop.close()


def test_lone_leader_commits_in_the_tick_that_appends(lone: Lone) -> None:
    """Raft §5.3/§5.4 with a majority of one: an entry is committed once it is in the leader's
    (fsynced) log. Before the fix this waited for the idle tick (an hour here)."""
    for n in (1, 2, 3):
        waiter = Waiter()
        lone.node.propose(msgpack.packb(["k", 1]), waiter)
        assert waiter.event.wait(DEADLINE_S), "the entry did not commit without an idle tick"
        assert waiter.failure is None
        assert waiter.result == lone.on_tick(lambda: lone.machine.counts["k"])
        status = lone.node.status()
        assert status.commit_index == status.last_applied == status.last_log_index, status
        assert n <= lone.machine.counts["k"]


def test_lone_read_barrier_from_another_thread_commits_at_once(lone: Lone) -> None:
    """Off the tick thread the barrier takes the entry path: its no-op commits in the tick
    that appends it (before the fix: the next idle tick)."""
    waiter = Waiter()
    lone.node.barrier(waiter)
    assert waiter.event.wait(DEADLINE_S), "the read barrier did not complete without an idle tick"
    assert waiter.failure is None


def test_lone_read_barrier_on_the_tick_thread_needs_no_entry(lone: Lone) -> None:
    """A one-member group's leader is confirmed by itself: with everything committed applied,
    the barrier completes during the call, and appends nothing to the log."""
    before = lone.node.status().last_log_index
    waiter = Waiter()

    def read() -> bool:
        lone.node.barrier(waiter)
        return waiter.event.is_set()

    assert lone.on_tick(read) is True, "the barrier did not complete within the call"
    assert waiter.failure is None
    assert lone.node.status().last_log_index == before


def _read_inside_apply(lone: Lone, key: str = "read-inside") -> int | None:
    """Propose the entry whose apply starts a read; return what that read saw of the entry."""
    lone.machine.read_done.clear()
    before = lone.on_tick(lambda: lone.machine.counts.get(key, 0))
    waiter = Waiter()
    lone.node.propose(msgpack.packb([key, 1]), waiter)
    assert waiter.event.wait(DEADLINE_S) and waiter.failure is None
    assert lone.machine.read_done.wait(DEADLINE_S), "the read never completed"
    seen = lone.machine.seen[-1]
    assert isinstance(before, int) and not isinstance(seen, tuple)
    return None if seen is None else seen - before


def test_lone_read_waits_until_everything_committed_is_applied(lone: Lone) -> None:
    """A read started while a committed entry is being applied (on the tick thread, so the
    shortcut is tempting) must see that entry: the barrier takes the entry path and completes
    after it."""
    assert _read_inside_apply(lone) == 1


def test_read_index_prepares_only_once_its_read_index_is_applied(lone: Lone) -> None:
    """ReadIndex's ``prepare`` (the caller builds its answer while the round travels) runs
    before the read completes and sees what the read sees, and only when the state is applied
    up to the read index. Started inside apply, where the entry being applied is committed but
    not applied, the read gets no ``prepare``: its answer is read once the entry is applied."""
    lone.machine.seen.clear()
    count = lone.on_tick(lambda: lone.machine.counts.get("k", 0))

    def read() -> None:
        def done(_result: object, failure: object) -> None:
            lone.machine.seen.append(lone.machine.counts.get("k", 0) if failure is None else None)

        lone.node.read_index(
            done, lambda: lone.machine.seen.append(("prepared", lone.machine.counts.get("k", 0))))

    lone.on_tick(read)  # a one-member group confirms itself: both run within the call
    assert lone.machine.seen == [("prepared", count), count]

    lone.machine.seen.clear()
    assert _read_inside_apply(lone, "read-index-inside") == 1
    assert not [s for s in lone.machine.seen if isinstance(s, tuple)], lone.machine.seen


def test_negative_control_read_shortcut_without_the_applied_check(
        lone: Lone, monkeypatch: pytest.MonkeyPatch) -> None:
    """Planted bug, injected here: the shortcut checks leadership only. The read started inside
    apply then completes before the entry is applied, and the test above would catch it."""
    monkeypatch.setattr(SyncObjReplica, "_qb_alone_caught_up", SyncObjReplica._qb_alone_leading)
    assert _read_inside_apply(lone) == 0


def test_peers_need_a_tick_at_least_every_heartbeat(tmp_path: pathlib.Path) -> None:
    """The long idle tick the tests above use is refused for a group with other members,
    whose heartbeats and elections run on ticks."""
    with pytest.raises(ValueError, match="tick_period_s"):
        RaftSettings(self_address="127.0.0.1:1", peers=("127.0.0.1:2",), data_dir=tmp_path,
                     tick_period_s=IDLE_TICK_S)


# --- logging of an embedded replica -------------------------------------------------------------

_HOST_PROGRAM = textwrap.dedent("""
    import sys
    from quorumboard.consensus import LocalCluster

    kwargs = {"log_level": sys.argv[1]} if len(sys.argv) > 1 else {}
    with LocalCluster(replicas=1, embedded=True, **kwargs) as cluster:
        board = cluster.board("host")
        board.put("k", "v")
        assert board.get("k").value == "v"
""")


def _levels(lines: list[str]) -> list[str]:
    out = []
    for line in lines:
        try:
            record = json.loads(line)
        except ValueError:
            out.append("unparsed")
            continue
        out.append(str(record.get("level")) if isinstance(record, dict) else "unparsed")
    return out


def test_embedded_replica_is_quiet_unless_asked(tmp_path: pathlib.Path) -> None:
    """A program using ``LocalCluster(replicas=1, embedded=True)`` gets no info lines on its
    stderr; ``log_level="info"`` turns them on (which also shows this test sees them)."""
    quiet, asked = (_host_stderr([]), _host_stderr(["info"]))
    chatty = [line for line, level in zip(quiet, _levels(quiet), strict=True)
              if level in ("debug", "info")]
    assert not chatty, f"an embedded replica printed below warning by default: {chatty[:5]}"
    assert "info" in _levels(asked), asked[:20]


def _host_stderr(args: list[str]) -> list[str]:
    proc = subprocess.run([sys.executable, "-c", _HOST_PROGRAM, *args], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=SUBPROCESS_TIMEOUT_S)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return [line for line in proc.stderr.splitlines() if line.strip()]
