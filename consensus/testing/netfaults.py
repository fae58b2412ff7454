"""Network faults between replicas: a userspace TCP proxy on every replica-to-replica link.

``LocalCluster(network_faults=True)`` makes each replica dial its peers through one proxy per
ordered pair (a replica still proves its identity through the proxy, so nothing about
authentication changes). Each *direction* between two replicas (bytes from ``a`` to ``b``,
on whichever connection carries them) is *open*, *cut*, *delayed* or *lossy*:

* **cut** — the proxy stops moving those bytes and holds new connections between the two
  without connecting them: what a dropped-packet partition looks like to TCP. Bytes already in
  flight wait in socket buffers (the sender's buffer fills and it stops), and Raft's own
  timeouts decide when to give up on the peer — exactly as with a real partition. On heal, held
  bytes flow again or the replicas reconnect. Cutting only ``a -> b`` is one-way loss: ``b``
  still hears ``a``'s silence as a dead peer while ``a`` hears ``b``.
* **delayed** — each chunk is forwarded ``delay_s`` (plus up to ``jitter_s``) after it arrived,
  in order.
* **lossy** — each chunk is lost with probability ``loss`` and, since TCP retransmits what it
  lost, arrives one retransmission timeout late (``RETRANSMIT_S``..``2 * RETRANSMIT_S``), in
  order. A userspace proxy cannot drop a TCP segment; this is the delay a dropped segment costs.

Partitions are expressed over replica indices (:meth:`NetworkFaults.partition`,
:meth:`NetworkFaults.cut`); client
traffic never passes through the proxies, so clients keep reaching every replica — the case
where a partitioned replica must not serve stale reads. Only 127.0.0.1 is used. Everything runs
on one daemon thread's event loop; :meth:`NetworkFaults.close` stops it and every connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import random
import threading
from collections.abc import Iterable

import structlog

__all__ = ["NetworkFaults"]

log = structlog.get_logger("quorumboard.consensus.testing.netfaults")

CHUNK_BYTES = 65_536
RETRANSMIT_S = 0.2
"""Linux's minimum TCP retransmission timeout: what one lost segment delays a stream by."""
CONNECTIONS_PER_LINK_MAX = 16
HANDSHAKE_ROUNDS_MAX = 8
IN_FLIGHT_CHUNKS_MAX = 256
START_TIMEOUT_S = 5.0
CALL_TIMEOUT_S = 5.0
STOP_ROUNDS_MAX = 8


@dataclasses.dataclass
class _Way:
    """One direction of traffic between two replicas."""

    open: asyncio.Event = dataclasses.field(default_factory=asyncio.Event)
    delay_s: float = 0.0
    jitter_s: float = 0.0
    loss: float = 0.0


@dataclasses.dataclass
class _Link:
    """The proxy for connections ``src`` dials to ``dst``; bytes ``src -> dst`` flow through
    ``ways[(src, dst)]`` and replies through ``ways[(dst, src)]``."""

    src: int
    dst: int
    target: tuple[str, int]
    port: int = 0
    conns: set[asyncio.StreamWriter] = dataclasses.field(default_factory=set)
    server: asyncio.base_events.Server | None = None


class NetworkFaults:
    """Proxies for the links between ``size`` replicas whose raft ports are ``targets``."""

    def __init__(self, targets: list[tuple[str, int]], seed: int = 0) -> None:
        self.size = len(targets)
        self._rnd = random.Random(seed)
        self._loop = asyncio.new_event_loop()
        self._links: dict[tuple[int, int], _Link] = {}
        self._ways: dict[tuple[int, int], _Way] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._closing = False
        self._thread = threading.Thread(target=self._loop.run_forever, name="netfaults",
                                        daemon=True)
        self._thread.start()
        self._call(self._start(targets))

    # ------------------------------------------------------------------ public (any thread)

    def dial_address(self, src: int, dst: int) -> str:
        """Where replica ``src`` dials to reach replica ``dst``."""
        return f"127.0.0.1:{self._links[(src, dst)].port}"

    def partition(self, groups: Iterable[Iterable[int]], *, reset: bool = False) -> None:
        """Cut every link between replicas in different groups; open the rest. A replica in
        no group is cut from everyone. ``reset``: the connections across the cut are also
        reset (as a firewall rejecting them would), not just held, so the replicas see their
        peers disconnected at once; new ones are held as with any cut."""
        side: dict[int, int] = {}
        for g, members in enumerate(groups):
            for i in members:
                side[i] = g
        cut = {k for k in self._ways if side.get(k[0], -1 - k[0]) != side.get(k[1], -1 - k[1])}
        self._call(self._set_cut(cut, reset=reset))
        log.info("network partition", groups=[sorted(g) for g in self._groups(side)],
                 reset=reset)

    def cut(self, pairs: Iterable[tuple[int, int]], *, one_way: bool = False) -> None:
        """Cut exactly ``pairs`` and open every other direction: ``(a, b)`` stops bytes from
        ``a`` to ``b``, and from ``b`` to ``a`` too unless ``one_way``. Expresses partitions
        that are not groups (a ring, a bridge) and one-way loss."""
        cut: set[tuple[int, int]] = set()
        for a, b in pairs:
            if (a, b) not in self._ways:
                raise ValueError(f"no link between replicas {a} and {b}")
            cut.add((a, b))
            if not one_way:
                cut.add((b, a))
        self._call(self._set_cut(cut))
        log.info("network cut", pairs=sorted(cut), one_way=one_way)

    def isolate(self, i: int, *, reset: bool = False) -> None:
        """Cut replica ``i`` from every other replica (clients still reach it); ``reset`` as
        for :meth:`partition`."""
        self.partition([[j for j in range(self.size) if j != i]], reset=reset)

    def delay(self, delay_s: float, jitter_s: float = 0.0,
              links: Iterable[tuple[int, int]] | None = None) -> None:
        """Forward every chunk from ``a`` to ``b`` for ``(a, b)`` in ``links`` (default: every
        direction) ``delay_s`` + U(0, jitter_s) late."""
        if delay_s < 0 or jitter_s < 0:
            raise ValueError("delay and jitter must be >= 0")
        self._call(self._set_ways(self._chosen(links), delay_s=delay_s, jitter_s=jitter_s))
        log.info("network delay", delay_s=delay_s, jitter_s=jitter_s)

    def lose(self, loss: float, links: Iterable[tuple[int, int]] | None = None) -> None:
        """Lose each chunk on ``links`` (default: every direction) with probability ``loss``:
        it arrives one retransmission timeout late (see the module docstring)."""
        if not 0 <= loss <= 1:
            raise ValueError("loss must be a probability")
        self._call(self._set_ways(self._chosen(links), loss=loss))
        log.info("network loss", loss=loss)

    def connections(self) -> int:
        """Connections the proxies hold open (each proxied connection counts twice: both
        ends); a healed, idle fault layer holds only what the replicas use."""
        async def count() -> int:
            return sum(len(link.conns) for link in self._links.values())

        result: int = asyncio.run_coroutine_threadsafe(count(), self._loop).result(CALL_TIMEOUT_S)
        return result

    def heal(self) -> None:
        """Open every direction and remove every delay and loss."""
        self._call(self._set_cut(set()))
        self._call(self._set_ways(list(self._ways), delay_s=0.0, jitter_s=0.0, loss=0.0))
        log.info("network healed")

    def close(self) -> None:
        """Stop every proxy and connection, then the thread; idempotent."""
        if self._loop.is_closed():
            return
        with contextlib.suppress(Exception):
            self._call(self._stop())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(CALL_TIMEOUT_S)
        if not self._thread.is_alive():
            self._loop.close()

    # --------------------------------------------------------------------- on the loop

    def _call(self, coro: object) -> None:
        asyncio.run_coroutine_threadsafe(coro, self._loop).result(CALL_TIMEOUT_S)  # type: ignore[arg-type]

    @staticmethod
    def _groups(side: dict[int, int]) -> list[set[int]]:
        out: dict[int, set[int]] = {}
        for i, g in side.items():
            out.setdefault(g, set()).add(i)
        return list(out.values())

    def _chosen(self, links: Iterable[tuple[int, int]] | None) -> list[tuple[int, int]]:
        chosen = list(self._ways) if links is None else list(links)
        unknown = [k for k in chosen if k not in self._ways]
        if unknown:
            raise ValueError(f"no link between replicas {unknown[0]}")
        return chosen

    async def _start(self, targets: list[tuple[str, int]]) -> None:
        for src in range(self.size):
            for dst in range(self.size):
                if src == dst:
                    continue
                way = _Way()
                way.open.set()
                self._ways[(src, dst)] = way
        for src in range(self.size):
            for dst in range(self.size):
                if src == dst:
                    continue
                link = _Link(src, dst, targets[dst])
                link.server = await asyncio.start_server(
                    functools.partial(self._serve, link), "127.0.0.1", 0)
                link.port = link.server.sockets[0].getsockname()[1]
                self._links[(src, dst)] = link

    async def _set_cut(self, cut: set[tuple[int, int]], reset: bool = False) -> None:
        for key, way in self._ways.items():
            if key in cut:
                way.open.clear()
            else:
                way.open.set()
        if reset:
            for key, link in self._links.items():
                if key in cut or (key[1], key[0]) in cut:
                    for w in list(link.conns):
                        w.transport.abort()

    async def _set_ways(self, ways: list[tuple[int, int]], **fields: float) -> None:
        for key in ways:
            for name, value in fields.items():
                setattr(self._ways[key], name, value)

    async def _stop(self) -> None:
        """Close listeners, abort every connection and cancel every task, and wait for them:
        no connection is (re)opened or left half-closed once this returns."""
        self._closing = True
        for link in self._links.values():
            if link.server is not None:
                link.server.close()
            for w in list(link.conns):
                w.transport.abort()
        for way in self._ways.values():
            way.open.set()  # wake held connections: they see _closing and give up
        # Connections accepted just before the listeners closed have a handler task that has
        # not run yet; every task on this private loop is ours, so wait for all of them (each
        # sees _closing first thing and aborts its connection).
        me = asyncio.current_task()
        for _ in range(STOP_ROUNDS_MAX):  # an accept spawns a task that spawns the handler
            await asyncio.sleep(0)
            tasks = [t for t in asyncio.all_tasks() if t is not me and not t.done()]
            if not tasks:
                break
            _, pending = await asyncio.wait(tasks, timeout=CALL_TIMEOUT_S / 4)
            for t in pending:
                t.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        for link in self._links.values():
            if link.server is not None:
                await link.server.wait_closed()

    async def _serve(self, link: _Link, reader: asyncio.StreamReader,
                     writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if self._closing or task is None or len(link.conns) >= CONNECTIONS_PER_LINK_MAX:
            writer.transport.abort()
            return
        self._tasks.add(task)
        link.conns.add(writer)
        upstream: asyncio.StreamWriter | None = None
        out, back = self._ways[(link.src, link.dst)], self._ways[(link.dst, link.src)]
        try:
            for _ in range(HANDSHAKE_ROUNDS_MAX):  # a TCP handshake needs both directions open
                await out.open.wait()
                await back.open.wait()
                if out.open.is_set() or self._closing:
                    break
            else:  # the links keep flapping: drop this connection (the dialer retries)
                return
            if self._closing:
                return
            up_reader, upstream = await asyncio.open_connection(*link.target)
            link.conns.add(upstream)
            await asyncio.gather(self._pump(out, reader, upstream),
                                 self._pump(back, up_reader, writer))
        except (ConnectionError, OSError):
            pass
        except asyncio.CancelledError:  # only _stop cancels, and only stragglers
            pass
        finally:
            for w in (writer, upstream):
                if w is not None:
                    link.conns.discard(w)
                    w.transport.abort()
            self._tasks.discard(task)

    async def _pump(self, way: _Way, reader: asyncio.StreamReader,
                    writer: asyncio.StreamWriter) -> None:
        """Move bytes one way. Chunks are read as they come and delivered in order, each at
        its arrival time plus this direction's delay (and jitter, and loss): a delay slows every
        message by that much without limiting how many are in flight."""
        queue: asyncio.Queue[tuple[float, bytes] | None] = asyncio.Queue(IN_FLIGHT_CHUNKS_MAX)
        deliver = asyncio.ensure_future(self._deliver(way, queue, writer))
        loop = asyncio.get_running_loop()
        due = 0.0
        try:
            while not writer.is_closing():  # bounded by the connection's life
                await way.open.wait()  # cut: stop reading, so the sender's buffer fills
                data = await reader.read(CHUNK_BYTES)
                if not data:
                    break
                late_s = way.delay_s + (self._rnd.uniform(0, way.jitter_s) if way.jitter_s
                                        else 0.0)
                if way.loss and self._rnd.random() < way.loss:
                    late_s += RETRANSMIT_S * (1 + self._rnd.random())
                due = max(due, loop.time() + late_s)  # in order, like TCP
                await queue.put((due, data))  # full: stop reading, the sender's buffer fills
            await queue.put(None)
            await deliver
        except (ConnectionError, OSError):
            pass
        finally:
            deliver.cancel()
            writer.transport.abort()

    @staticmethod
    async def _deliver(way: _Way, queue: asyncio.Queue[tuple[float, bytes] | None],
                       writer: asyncio.StreamWriter) -> None:
        loop = asyncio.get_running_loop()
        broken = False
        for _ in range(2**62):  # bounded by the connection's life: the pump ends it with None
            item = await queue.get()
            if item is None:
                return
            if broken:  # keep taking chunks so the pump never blocks on a full queue
                continue
            due, data = item
            wait_s = due - loop.time()
            if wait_s > 0:
                await asyncio.sleep(wait_s)
            await way.open.wait()  # cut: hold the bytes
            try:
                writer.write(data)
                await writer.drain()
            except (ConnectionError, OSError):
                # Drop the destination: the opposite pump reads EOF from it and aborts the
                # source, so this direction's pump ends too (the queue is drained meanwhile).
                broken = True
                writer.transport.abort()
