"""Group commit (consensus/replica/batching.py): batching, bounds, and no wedge on a failing submit."""

from __future__ import annotations

from collections.abc import Callable

import msgpack

from quorumboard.consensus.replica.batching import GroupCommit, pack_batch

Done = Callable[[object, object], None]


def test_batches_form_while_one_is_in_flight_and_answer_in_order() -> None:
    submitted: list[tuple[bytes, Done]] = []
    group = GroupCommit(lambda payload, done: submitted.append((payload, done)),
                        batch_items_max=3)
    answers: list[tuple[int, object, object]] = []
    for i in range(5):
        group.propose(msgpack.packb(i), lambda r, f, i=i: answers.append((i, r, f)))
    assert [msgpack.unpackb(p) for p, _ in submitted] == [[0]]  # alone: no added latency
    submitted[0][1](["r0"], None)
    assert answers == [(0, "r0", None)]
    assert [msgpack.unpackb(p) for p, _ in submitted[1:]] == [[1, 2, 3]]  # bounded by items
    assert msgpack.unpackb(pack_batch([msgpack.packb(1), msgpack.packb("x")])) == [1, "x"]


def test_a_submit_that_raises_fails_its_batch_and_the_next_batch_still_goes() -> None:
    """A batch the raft layer refuses (e.g. over the entry bound) must not wedge the queue:
    its proposals get "unavailable" (nothing was proposed) and the next batch is submitted."""
    held: list[Done] = []
    calls = 0

    def submit(payload: bytes, done: Done) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            held.append(done)  # the first batch stays in flight while two more queue up
        elif calls == 2:
            raise ValueError("entry too large")
        else:
            done([f"r{n}" for n in msgpack.unpackb(payload)], None)

    group = GroupCommit(submit, batch_items_max=1)
    answers: list[tuple[int, object, object]] = []
    for n in (1, 2, 3):
        group.propose(msgpack.packb(n), lambda r, f, n=n: answers.append((n, r, f)))
    held[0](["r1"], None)
    assert answers == [(1, "r1", None), (2, None, "unavailable"), (3, "r3", None)]
    assert calls == 3
