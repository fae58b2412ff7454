"""Group commit: proposals that arrive while earlier ones are in flight share one log entry.

pysyncobj (unbatched, for latency) sends an AppendEntries per log entry to every follower and
writes a journal record per entry; under load that per-entry cost dominates. The leader's
replica therefore queues proposals and submits them as one entry — a msgpack array of the
already-encoded proposals, concatenated without re-encoding — whenever fewer than
``inflight_max`` batches are awaiting commit. A lone writer finds nothing in flight and gets a
batch of one (no added latency); under load, batches grow with the commit latency. The state
machine applies a batch's proposals in order, each with its own session/seq (exactly-once is
per proposal), and each proposer gets its own result.
"""

from __future__ import annotations

import struct
import threading
from collections.abc import Callable

from quorumboard.consensus.wire.protocol import Failure

__all__ = ["GroupCommit", "pack_batch"]

Done = Callable[[object | None, Failure | None], None]
Submit = Callable[[bytes, Done], None]

_ARRAY32 = struct.Struct(">BI")


def pack_batch(payloads: list[bytes]) -> bytes:
    """A msgpack array (array32 header) of already-msgpack-encoded items."""
    return _ARRAY32.pack(0xDD, len(payloads)) + b"".join(payloads)


class GroupCommit:
    """Adaptive batching in front of a ``submit(payload, on_done)`` function (Raft propose).

    Bounded: at most ``queue_max`` proposals wait (beyond that, ``done(None, UNAVAILABLE)``
    at once: backpressure), a batch holds at most ``batch_items_max`` proposals and
    ``batch_bytes_max`` bytes, and at most ``inflight_max`` batches await commit.
    """

    def __init__(self, submit: Submit, *, inflight_max: int = 1, batch_items_max: int = 256,
                 batch_bytes_max: int = 1 << 20, queue_max: int = 20_000) -> None:
        self._submit = submit
        self._inflight_max = inflight_max
        self._items_max = batch_items_max
        self._bytes_max = batch_bytes_max
        self._queue_max = queue_max
        self._lock = threading.Lock()
        self._queue: list[tuple[bytes, Done]] = []
        self._inflight = 0
        self.batches = 0
        self.proposals = 0

    def propose(self, payload: bytes, done: Done) -> None:
        with self._lock:
            if len(self._queue) >= self._queue_max:
                full = True
            else:
                full = False
                self._queue.append((payload, done))
                batch = self._take() if self._inflight < self._inflight_max else None
        if full:
            done(None, Failure.UNAVAILABLE)
            return
        if batch:
            self._send(batch)

    def _take(self) -> list[tuple[bytes, Done]]:
        """Pop the next batch (caller holds the lock and checked the in-flight bound)."""
        size = 0
        count = 0
        for payload, _ in self._queue:
            if count and (count >= self._items_max or size + len(payload) > self._bytes_max):
                break
            size += len(payload)
            count += 1
        batch, self._queue = self._queue[:count], self._queue[count:]
        if batch:
            self._inflight += 1
        return batch

    def _send(self, batch: list[tuple[bytes, Done]]) -> None:
        self.batches += 1
        self.proposals += len(batch)

        def on_done(result: object | None, failure: Failure | None) -> None:
            results = result if isinstance(result, list) and len(result) == len(batch) else None
            for i, (_, done) in enumerate(batch):
                if failure is None and results is not None:
                    done(results[i], None)
                else:
                    done(result if failure is None else None, failure or Failure.OUTCOME_UNKNOWN)
            with self._lock:
                self._inflight -= 1
                nxt = self._take() if self._queue else None
            if nxt:
                self._send(nxt)

        try:
            self._submit(pack_batch([payload for payload, _ in batch]), on_done)
        except Exception:  # e.g. over the raft entry bound: nothing was proposed
            on_done(None, Failure.UNAVAILABLE)
