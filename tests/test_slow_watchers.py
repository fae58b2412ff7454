"""Slow watchers: a bounded buffer per watch, and a watcher that falls a whole buffer behind is
cancelled with :class:`WatchCancelled` carrying the revision to resume from; resuming there
delivers every later event exactly once. Meanwhile the other watches and the requests on the
same Board, and on the same connection, keep flowing.

Real replica processes on 127.0.0.1, one cluster for the module, with a small watch buffer so a
stall is reached in a few hundred small writes."""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterable, Iterator

import pytest

from quorumboard.consensus import Board, Event, LocalCluster, WatchCancelled
from quorumboard.consensus.client.board import _Acks, _Link
from quorumboard.consensus.core.model import Proposal, PutCmd
from quorumboard.consensus.wire.protocol import (
    Failure,
    ProposeReq,
    ReadReq,
    Reply,
    WatchBatch,
    WatchReq,
)
from tests.conftest import wait_until

BUFFER_BYTES = 16 * 1024
VALUE = "v" * 200  # ~330 bytes against the buffer per event: ~50 events fill it
WRITES = 150


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    with LocalCluster(replicas=1, data_dir=tmp_path_factory.mktemp("slow"),
                      log_level="warning", watch_buffer_bytes=BUFFER_BYTES) as c:
        yield c


def _cancelled(cluster: LocalCluster) -> int:
    status = cluster.status()[0]
    assert status is not None
    return status.slow_watches_cancelled


def exactly_once(acknowledged: Iterable[int], delivered: Iterable[int]) -> list[str]:
    """What is wrong with ``delivered`` (event revisions, in the order a watcher saw them)
    against the writer's ``acknowledged`` revisions: missing, duplicated, out of order or
    never written. Empty when each acknowledged write was delivered once, in order."""
    wanted, seen = list(acknowledged), list(delivered)
    problems = []
    if missing := sorted(set(wanted) - set(seen)):
        problems.append(f"missing {missing}")
    if extra := sorted(set(seen) - set(wanted)):
        problems.append(f"never written {extra}")
    if len(seen) != len(set(seen)):
        problems.append(f"duplicated {sorted({r for r in seen if seen.count(r) > 1})}")
    if seen != sorted(seen):
        problems.append("out of order")
    return problems


END = "end"
"""The key (under a prefix) a test writes last, to let a background watcher finish."""


def _collect_until(events: Iterator[Event], last: int, into: list[int]) -> None:
    """Append revisions to ``into`` up to ``last`` or up to an event on the :data:`END` key."""
    for event in events:
        if event.key.endswith(f"/{END}"):
            return
        into.append(event.revision)
        if event.revision >= last:
            return


def _stalled_then_resumed(cluster: LocalCluster, prefix: str, *, resume_offset: int
                          ) -> tuple[list[int], list[int], WatchCancelled]:
    """A watcher on ``prefix`` reads one event, then stops reading while a writer commits
    :data:`WRITES` more; once the replica cancelled it, it reads what it had been sent, and
    resumes from the cancellation's revision plus ``resume_offset`` (0 is right; the negative
    control plants 1). Meanwhile a second watch on the same Board keeps up, and puts through
    that Board succeed. Returns the writer's acknowledged revisions, the revisions the stalled
    watcher saw (before and after resuming), and the cancellation."""
    writer, reader = cluster.board(f"{prefix}writer"), cluster.board(f"{prefix}reader")
    first = writer.put(f"{prefix}0", VALUE)
    acknowledged = [first.mod_revision]
    slow = reader.watch(prefix, start_revision=first.mod_revision)
    seen = [next(slow).revision]  # the watch is established; now it stalls
    baseline = _cancelled(cluster)

    fast_seen: list[int] = []
    fast = reader.watch(prefix, start_revision=first.mod_revision)
    fast_thread = threading.Thread(target=_collect_until, daemon=True,
                                   args=(fast, 2**62, fast_seen))
    fast_thread.start()
    for i in range(1, WRITES):
        acknowledged.append(writer.put(f"{prefix}{i}", VALUE).mod_revision)
        if i % 50 == 0:  # the stalled watcher's Board still writes
            reader.put(f"side/{prefix}{i}", i)
    wait_until(lambda: _cancelled(cluster) > baseline, timeout_s=15,
               what="the replica to cancel the stalled watch")
    # While the one watcher stalled, the other watch on its Board kept up with every write.
    wait_until(lambda: fast_seen[-1:] == acknowledged[-1:], timeout_s=15,
               what="the second watch to see the last write")
    assert exactly_once(acknowledged, fast_seen) == []
    assert reader.get(f"side/{prefix}50") is not None
    end = writer.put(f"{prefix}{END}", None).mod_revision
    fast_thread.join(15)
    assert not fast_thread.is_alive()

    with pytest.raises(WatchCancelled) as caught:
        for event in slow:
            seen.append(event.revision)
    cancel = caught.value
    assert seen[-1] < cancel.resume_revision <= acknowledged[-1]
    resumed = reader.watch(prefix, start_revision=cancel.resume_revision + resume_offset)
    _collect_until(resumed, end, seen)
    return acknowledged, seen, cancel


def test_a_stalled_watcher_is_cancelled_and_resumes_exactly_once(cluster: LocalCluster) -> None:
    acknowledged, seen, cancel = _stalled_then_resumed(cluster, "slow/", resume_offset=0)
    assert exactly_once(acknowledged, seen) == []
    assert "watch again from revision" in str(cancel)
    assert f"{BUFFER_BYTES} bytes" in str(cancel)


def test_negative_control_an_off_by_one_resume_is_caught(cluster: LocalCluster) -> None:
    """The same run resuming one revision late (a bug planted here, by the test): the check
    above must name exactly the one event it lost."""
    acknowledged, seen, cancel = _stalled_then_resumed(cluster, "late/", resume_offset=1)
    assert exactly_once(acknowledged, seen) == [f"missing [{cancel.resume_revision}]"]


def test_one_connection_a_stalled_watch_does_not_hold_up_the_others(
        cluster: LocalCluster) -> None:
    """Two watches and a stream of requests on ONE connection: the watch nobody reads is
    cancelled (its batches, then the cancel, wait in its box, gap-free); the read one gets
    every event, and every request is answered, all while the other stalls."""
    writer = cluster.board("conn-writer")
    first = writer.put("conn/0", VALUE)
    link = _Link(cluster.endpoints[0], cluster.secret, "agent:conn-reader")
    try:
        slow_id, slow_box = link.open_box(stream=True)
        fast_id, fast_box = link.open_box(stream=True)
        for rid in (slow_id, fast_id):
            link.send(WatchReq(id=rid, prefix="conn/", start_revision=first.mod_revision))
        acknowledged = [first.mod_revision]
        fast_seen: list[int] = []
        done = threading.Event()

        def consume_fast() -> None:  # reads the shared socket, acknowledging as Board.watch
            acks = _Acks(link, fast_id)
            for _ in range(100_000):
                if done.is_set():
                    return
                try:
                    msg = link.wait(fast_box, 0.2)
                except queue.Empty:
                    continue
                if isinstance(msg, Reply):
                    assert msg.wire_error is None, msg
                    acks.buffer_bytes = msg.watch_buffer_bytes or 0
                elif isinstance(msg, WatchBatch):
                    fast_seen.extend(e.revision for e in msg.events)
                    acks.consumed(msg.size_bytes)
                else:
                    return

        baseline = _cancelled(cluster)
        thread = threading.Thread(target=consume_fast, daemon=True)
        thread.start()
        try:
            for i in range(1, WRITES):
                acknowledged.append(writer.put(f"conn/{i}", VALUE).mod_revision)
                if i % 25 == 0:  # requests on the shared connection are answered meanwhile
                    reply = link.request(lambda rid, i=i: ProposeReq(id=rid, proposal=Proposal(
                        agent="conn-reader", command=PutCmd(key=f"side/conn{i}", value=i))),
                        5.0)
                    assert reply.result is not None and reply.result.error is None, reply
                    read = link.request(lambda rid: ReadReq(id=rid, what="get", key="conn/0"),
                                        5.0)
                    assert read.entry is not None
            wait_until(lambda: _cancelled(cluster) > baseline, timeout_s=15,
                       what="the replica to cancel the unread watch")
            assert link.request(lambda rid: ReadReq(id=rid, what="get", key="conn/0", stale=True),
                                5.0).entry is not None
            wait_until(lambda: fast_seen[-1:] == acknowledged[-1:], timeout_s=15,
                       what="the read watch to see the last write")
        finally:
            done.set()
            thread.join(10)
        assert exactly_once(acknowledged, fast_seen) == []

        # The unread watch's box: its first reply, whole batches gap-free from the start, and
        # the cancellation with the revision right after the last one sent.
        messages = []
        for _ in range(10_000):
            try:
                messages.append(slow_box.get_nowait())
            except queue.Empty:
                break
        assert isinstance(messages[0], Reply) and messages[0].wire_error is None
        cancel = messages[-1]
        assert isinstance(cancel, Reply) and cancel.wire_error is Failure.SLOW_WATCHER
        sent = [e.revision for m in messages[1:-1] if isinstance(m, WatchBatch)
                for e in m.events]
        assert sent, "the unread watch was sent nothing before it was cancelled"
        assert sent == acknowledged[:len(sent)]
        assert cancel.resume_revision == sent[-1] + 1
        # What the replica let it hold: one buffer (a batch always fits an empty buffer).
        held = sum(m.size_bytes for m in messages if isinstance(m, WatchBatch))
        assert held <= BUFFER_BYTES
    finally:
        link.close()


def test_a_watcher_that_keeps_up_is_never_cancelled(cluster: LocalCluster) -> None:
    """Counterpart: a backlog many buffers long, replayed by a reader that keeps consuming,
    arrives whole with no cancellation (acknowledgements free the buffer as it goes)."""
    writer, reader = cluster.board("replay-writer"), cluster.board("replay-reader")
    acknowledged = [writer.put(f"replay/{i}", VALUE).mod_revision for i in range(WRITES)]
    baseline = _cancelled(cluster)
    seen: list[int] = []
    board: Board = reader
    _collect_until(board.watch("replay/", start_revision=acknowledged[0]), acknowledged[-1], seen)
    assert exactly_once(acknowledged, seen) == []
    assert _cancelled(cluster) == baseline
