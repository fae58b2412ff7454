"""Network faults between replicas: a userspace TCP proxy on every replica-to-replica link.

``LocalCluster(network_faults=True)`` makes each replica dial its peers through one proxy per
ordered pair (a replica still proves its identity through the proxy, so nothing about
authentication changes). A link is *open*, *cut* or *delayed*:

* **cut** — the proxy stops moving bytes in both directions and holds new connections without
  connecting them: what a dropped-packet partition looks like to TCP. Bytes already in flight
  wait in socket buffers (the sender's buffer fills and it stops), and Raft's own timeouts
  decide when to give up on the peer — exactly as with a real partition. On heal, held bytes
  flow again or the replicas reconnect.
* **delayed** — each chunk is forwarded ``delay_s`` (plus up to ``jitter_s``) after it arrived,
  in order.

Partitions are expressed over replica indices (:meth:`NetworkFaults.partition`); client
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

log = structlog.get_logger("consensus.netfaults")

CHUNK_BYTES = 65_536
CONNECTIONS_PER_LINK_MAX = 16
START_TIMEOUT_S = 5.0
CALL_TIMEOUT_S = 5.0
STOP_ROUNDS_MAX = 8


@dataclasses.dataclass
class _Link:
    src: int
    dst: int
    target: tuple[str, int]
    port: int = 0
    open: asyncio.Event = dataclasses.field(default_factory=asyncio.Event)
    delay_s: float = 0.0
    jitter_s: float = 0.0
    conns: set[asyncio.StreamWriter] = dataclasses.field(default_factory=set)
    server: asyncio.base_events.Server | None = None


class NetworkFaults:
    """Proxies for the links between ``size`` replicas whose raft ports are ``targets``."""

    def __init__(self, targets: list[tuple[str, int]], seed: int = 0) -> None:
        self.size = len(targets)
        self._rnd = random.Random(seed)
        self._loop = asyncio.new_event_loop()
        self._links: dict[tuple[int, int], _Link] = {}
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

    def partition(self, groups: Iterable[Iterable[int]]) -> None:
        """Cut every link between replicas in different groups; open the rest. A replica in
        no group is cut from everyone."""
        side: dict[int, int] = {}
        for g, members in enumerate(groups):
            for i in members:
                side[i] = g
        cut = {k for k in self._links if side.get(k[0], -1 - k[0]) != side.get(k[1], -1 - k[1])}
        self._call(self._set_cut(cut))
        log.info("network partition", groups=[sorted(g) for g in self._groups(side)])

    def isolate(self, i: int) -> None:
        """Cut replica ``i`` from every other replica (clients still reach it)."""
        self.partition([[j for j in range(self.size) if j != i]])

    def delay(self, delay_s: float, jitter_s: float = 0.0,
              links: Iterable[tuple[int, int]] | None = None) -> None:
        """Forward every chunk on ``links`` (default: all) ``delay_s`` + U(0, jitter_s) late."""
        if delay_s < 0 or jitter_s < 0:
            raise ValueError("delay and jitter must be >= 0")
        chosen = list(self._links) if links is None else list(links)
        self._call(self._set_delay(chosen, delay_s, jitter_s))

    def heal(self) -> None:
        """Open every link and remove every delay."""
        self._call(self._set_cut(set()))
        self._call(self._set_delay(list(self._links), 0.0, 0.0))
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

    async def _start(self, targets: list[tuple[str, int]]) -> None:
        for src in range(self.size):
            for dst in range(self.size):
                if src == dst:
                    continue
                link = _Link(src, dst, targets[dst])
                link.open.set()
                link.server = await asyncio.start_server(
                    functools.partial(self._serve, link), "127.0.0.1", 0)
                link.port = link.server.sockets[0].getsockname()[1]
                self._links[(src, dst)] = link

    async def _set_cut(self, cut: set[tuple[int, int]]) -> None:
        for key, link in self._links.items():
            if key in cut:
                link.open.clear()
            else:
                link.open.set()

    async def _set_delay(self, links: list[tuple[int, int]], delay_s: float,
                         jitter_s: float) -> None:
        for key in links:
            self._links[key].delay_s = delay_s
            self._links[key].jitter_s = jitter_s

    async def _stop(self) -> None:
        """Close listeners, abort every connection and cancel every task, and wait for them:
        no connection is (re)opened or left half-closed once this returns."""
        self._closing = True
        for link in self._links.values():
            if link.server is not None:
                link.server.close()
            for w in list(link.conns):
                w.transport.abort()
            link.open.set()  # wake held connections: they see _closing and give up
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
        try:
            await link.open.wait()  # a cut link holds new connections unanswered
            if self._closing:
                return
            up_reader, upstream = await asyncio.open_connection(*link.target)
            link.conns.add(upstream)
            await asyncio.gather(self._pump(link, reader, upstream),
                                 self._pump(link, up_reader, writer))
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

    async def _pump(self, link: _Link, reader: asyncio.StreamReader,
                    writer: asyncio.StreamWriter) -> None:
        try:
            while not writer.is_closing():  # bounded by the connection's life
                data = await reader.read(CHUNK_BYTES)
                if not data:
                    break
                await link.open.wait()  # cut: hold the bytes; the sender's buffers fill up
                if link.delay_s or link.jitter_s:
                    await asyncio.sleep(link.delay_s + self._rnd.uniform(0, link.jitter_s))
                    await link.open.wait()
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.transport.abort()
