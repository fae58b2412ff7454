"""The watch batches of one connection: merged where they hold the same events, and in revision
order for every watch. A cold review found the order broken: a watch that queued a full batch
and then its next one in the same turn of the loop could have the second merged into a group
created before the first, and sent before it."""

from __future__ import annotations

from quorumboard.consensus.replica.server import _BatchQueue


def _order(frames: list[list[tuple[list[int], int]]]) -> dict[int, list[int]]:
    """Each watch's ``through`` revisions, in the order its frames left."""
    seen: dict[int, list[int]] = {}
    for flush in frames:
        for ids, through in flush:
            for watch in ids:
                seen.setdefault(watch, []).append(through)
    return seen


def _queue(q: _BatchQueue, frames: list[list[tuple[list[int], int]]], watch: int, start: int,
           through: int) -> None:
    """What ``_Conn.send_batch`` does: drain first when the watch already has a batch queued."""
    if q.must_drain(watch):
        frames.append([([b.id, *(b.also or [])], b.through) for b in q.drain()])
    q.add("feed/", start, watch, [], through, 0)


def test_a_watch_behind_another_gets_its_batches_in_order() -> None:
    q = _BatchQueue()
    frames: list[list[tuple[list[int], int]]] = []
    _queue(q, frames, watch=2, start=1001, through=1500)  # the watch ahead
    _queue(q, frames, watch=1, start=1, through=1000)     # the one behind: a full batch ...
    _queue(q, frames, watch=1, start=1001, through=1500)  # ... then the same as watch 2's
    frames.append([([b.id, *(b.also or [])], b.through) for b in q.drain()])
    order = _order(frames)
    assert order == {2: [1500], 1: [1000, 1500]}
    assert not q


def test_watches_at_one_place_share_one_frame() -> None:
    q = _BatchQueue()
    for watch in (1, 2, 3):
        q.add("feed/", 7, watch, [], 9, 0)
    q.add("other/", 7, 4, [], 9, 0)
    batches = q.drain()
    assert [(b.id, b.also, b.through) for b in batches] == [(1, [2, 3], 9), (4, None, 9)]


def test_without_the_drain_the_order_breaks() -> None:
    """Negative control: the old rule (merge into any group, flush in creation order) sends
    watch 1's revisions 1001-1500 before 1-1000; the check above would catch it."""
    q = _BatchQueue()
    for watch, start, through in ((2, 1001, 1500), (1, 1, 1000), (1, 1001, 1500)):
        q.add("feed/", start, watch, [], through, 0)  # never drained in between
    order = _order([[([b.id, *(b.also or [])], b.through) for b in q.drain()]])
    assert order[1] == [1500, 1000]
