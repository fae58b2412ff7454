"""LocalCluster: N real replica processes on 127.0.0.1, for tests, demos and experiments.

Each replica is a separate OS process (``python -m quorumboard.consensus.replica``; with
``planted_bug``, the test harness's ``python -m quorumboard.consensus.testing.replica``) with its own data dir,
raft port and client port, so SIGKILL, SIGSTOP and restart are real faults. Every process this
class starts is stopped on :meth:`stop`, on ``with`` exit (also when the body raises), and at
interpreter exit as a last resort.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import weakref
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal

import structlog

from quorumboard.consensus.client.board import Board, _Link, _Lost
from quorumboard.consensus.core.invariant import check
from quorumboard.consensus.core.state import Limits
from quorumboard.consensus.errors import BoardError, InvalidCommand, Unavailable
from quorumboard.consensus.logs import LOG_LEVELS, configure_logging
from quorumboard.consensus.replica.lifeline import Lifeline
from quorumboard.consensus.replica.polling import POLL_SPIN_US_RANGE
from quorumboard.consensus.replica.server import CONNECTIONS_MAX_RANGE, WATCH_BUFFER_BYTES_RANGE
from quorumboard.consensus.wire.protocol import ReplicaStatus, StatusReq

if TYPE_CHECKING:
    from quorumboard.consensus.replica.machine import Replica
    from quorumboard.consensus.testing.netfaults import NetworkFaults

__all__ = ["LocalCluster"]

Convergence = Literal["converged", "diverged", "unknown"]

START_TIMEOUT_S = 30.0
CONVERGE_POLL_S = 0.1
DIVERGED_POLLS = 20
"""Polls in a row (2 s) with different digests at one applied index before "diverged"."""
CONVERGE_POLLS_MAX = 100_000
STOP_TIMEOUT_S = 10.0
POLL_S = 0.05
CLOCK_FAULT_FILE = "clock-fault.msgpack"
REPLICA_MODULE = "quorumboard.consensus.replica"
TESTING_REPLICA_MODULE = "quorumboard.consensus.testing.replica"
SECRET_BYTES_MAX = 4096
"""Longest secret handed to a replica process (through a pipe, which holds far more)."""

_LIVE: weakref.WeakSet[LocalCluster] = weakref.WeakSet()


def _configure_embedded_logging(level: str) -> None:
    """Log embedded replicas at ``level`` to stderr, unless structlog is configured already:
    by the host program (its configuration decides) or by an earlier embedded cluster (loggers
    cache their level on first use, so the first one's level stays). Leaves the stdlib root
    logger alone."""
    if not structlog.is_configured():
        configure_logging(level, stdlib_root=False)


@atexit.register
def _stop_all() -> None:  # pragma: no cover - last resort for a caller that forgot stop()
    for cluster in list(_LIVE):
        cluster.stop()


def _free_ports(count: int, host: str) -> list[int]:
    """Ports the kernel just handed out (bound together, so they are distinct)."""
    with _reserved_ports(count, host) as ports:
        return ports


@contextlib.contextmanager
def _reserved_ports(count: int, host: str, keep: Sequence[int] = ()) -> Iterator[list[int]]:
    """``count`` fresh ports, held bound (with the ``keep`` ports, where they are free) until
    the block ends: whatever else binds meanwhile — the network fault proxies — cannot be handed
    one of them by the kernel and steal a replica's port."""
    socks = []
    try:
        for port in keep:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            try:
                s.bind((host, port))
                socks.append(s)
            except OSError:
                s.close()
        fresh = []
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind((host, 0))
            socks.append(s)
            fresh.append(s.getsockname()[1])
        yield fresh
    finally:
        for s in socks:
            s.close()


def _split_address(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host, int(port)


class LocalCluster:
    """A local cluster of ``replicas`` processes (default 3) sharing ``data_dir``.

    ``data_dir=None`` uses a fresh temporary directory, removed on stop. Passing an existing
    ``data_dir`` restarts the cluster from it (same ports are chosen anew; replica identity is
    its name ``r0..rN-1``, and membership is re-derived from the saved layout).

    ``log_level`` (``debug`` … ``critical``): replica processes log to ``rI/replica.log`` at
    ``info`` by default; ``embedded=True`` replicas log into this program's stderr, at
    ``warning`` by default (a library is quiet unless asked: pass ``log_level="info"`` to see
    elections and rejections). If the program configured structlog itself, its configuration
    decides what embedded replicas print; otherwise the first embedded cluster of the process
    sets the level.

    ``connections_max`` and ``watch_buffer_bytes`` (per-replica settings, here the same for
    every replica; ``None`` keeps the replica's default: 1,024 connections, 8 MiB): how many
    client connections each replica serves before refusing more (``TooManyConnections``), and
    how far a watcher may fall behind before its watch is cancelled (``WatchCancelled``).

    ``poll_spin_us`` (per replica): while a lone client is served, a replica's loop polls its
    sockets this long before it sleeps, which makes that client's requests faster for CPU
    time the loop would have slept (consensus/replica/polling.py). ``None`` keeps the
    replica's default, 200 us, for replica processes and 0 (never) for ``embedded=True``
    ones, which share this process and its GIL.

    ``compaction_min_entries`` / ``compaction_journal_bytes``: each replica snapshots and
    compacts its log past this many entries, and each time its journal grew this many bytes
    (20,000 entries; ``None`` keeps the replica's default, 64 MiB).

    ``planted_bug`` (negative controls only; replica processes only) starts every replica
    through the test harness's entry point with that bug planted (see
    :mod:`quorumboard.consensus.testing.replica`); without it the harness is never loaded.
    """

    def __init__(self, replicas: int = 3, data_dir: str | os.PathLike[str] | None = None, *,
                 secret: bytes | str | None = None, fsync: bool = False,
                 limits: Limits | None = None, policy_modules: list[str] | None = None,
                 log_level: str | None = None, host: str = "127.0.0.1",
                 election_timeout_min_s: float = 0.4, election_timeout_max_s: float = 1.4,
                 embedded: bool = False, network_faults: bool = False,
                 clock_faults: bool = False, compaction_min_entries: int = 20_000,
                 compaction_journal_bytes: int | None = None,
                 planted_bug: str | None = None, start: bool = True,
                 connections_max: int | None = None,
                 watch_buffer_bytes: int | None = None,
                 poll_spin_us: int | None = None) -> None:
        if not 1 <= replicas <= 15:
            raise InvalidCommand("replicas must be between 1 and 15")
        self._per_replica: dict[str, int] = {}
        for name, value, (low, high) in (
                ("connections_max", connections_max, CONNECTIONS_MAX_RANGE),
                ("watch_buffer_bytes", watch_buffer_bytes, WATCH_BUFFER_BYTES_RANGE),
                # embedded replicas share this process and its GIL: they poll only if asked
                ("poll_spin_us", 0 if poll_spin_us is None and embedded else poll_spin_us,
                 POLL_SPIN_US_RANGE),
                # its lower bound is the replica's to check (consensus/raft/node.py)
                ("compaction_journal_bytes", compaction_journal_bytes, (1, 2**62))):
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
                raise InvalidCommand(f"{name} must be an integer in {low}..{high} "
                                     f"(got {value!r:.80})")
            self._per_replica[name] = value
        if planted_bug is not None:
            if embedded:
                raise InvalidCommand("a planted bug needs replica processes: embedded=False")
            from quorumboard.consensus.testing.planted import PLANTED_BUGS

            if planted_bug not in PLANTED_BUGS:
                raise InvalidCommand(f"planted_bug {planted_bug!r} is not one of "
                                     f"{sorted(PLANTED_BUGS)}")
        self._planted_bug = planted_bug
        if log_level is None:
            # Embedded replicas log into the host program's stderr: a library stays quiet
            # unless asked. Replica processes log into their own replica.log files.
            log_level = "warning" if embedded else "info"
        if log_level.lower() not in LOG_LEVELS:
            raise InvalidCommand(f"log_level {log_level!r} is not one of {list(LOG_LEVELS)}")
        self.size = replicas
        self.embedded = embedded
        self._inproc: list[Replica | None] = [None] * replicas
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        if data_dir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="quorumboard-")
            data_dir = self._tmp.name
        self.data_dir = Path(data_dir).resolve()
        self.secret = secret.encode() if isinstance(secret, str) else secret
        if self.secret is not None and len(self.secret) > SECRET_BYTES_MAX:
            raise InvalidCommand(f"secret longer than {SECRET_BYTES_MAX} bytes")
        self.host = host
        self._lock = threading.Lock()
        self._procs: list[subprocess.Popen[bytes] | None] = [None] * replicas
        self._lifeline: Lifeline | None = None
        """Replicas stop by themselves when this process dies (see consensus/replica/lifeline.py)."""
        self._network_faults = network_faults
        self.net: NetworkFaults | None = None
        """With ``network_faults=True``: partition / isolate / delay / heal the raft links."""
        self._clock_faults = clock_faults
        self._compaction_min_entries = compaction_min_entries
        self._clock_serial = 0
        self._configs = self._layout(fsync=fsync, limits=limits or Limits(),
                                     policy_modules=policy_modules or [], log_level=log_level,
                                     emin=election_timeout_min_s, emax=election_timeout_max_s)
        self._boards: list[Board] = []
        self._log_level = log_level
        self._stopped = False
        _LIVE.add(self)
        if start:
            self.start()

    # ------------------------------------------------------------------------------ layout

    def _layout(self, *, fsync: bool, limits: Limits, policy_modules: list[str],
                log_level: str, emin: float, emax: float) -> list[Path]:
        """Write one config per replica; reuse the saved raft addresses of an existing dir
        (a replica's raft address is its identity in the log)."""
        layout_file = self.data_dir / "cluster.json"
        saved: list[str] | None = None
        if layout_file.exists():
            layout = json.loads(layout_file.read_text())
            if len(layout["raft"]) != self.size:
                raise InvalidCommand(f"{self.data_dir} holds a {len(layout['raft'])}-replica "
                                     f"cluster, not {self.size}")
            saved = [str(a) for a in layout["raft"]]
        keep = [_split_address(a)[1] for a in saved or []]
        with _reserved_ports(self.size * (1 if saved else 2), self.host, keep) as ports:
            raft = saved or [f"{self.host}:{p}" for p in ports[self.size:]]
            client = [f"{self.host}:{p}" for p in ports[:self.size]]
            if self._network_faults:  # proxies bind while every replica port is held
                from quorumboard.consensus.testing.netfaults import NetworkFaults

                self.net = NetworkFaults([_split_address(a) for a in raft])
                proxies = {self.net.dial_address(i, j) for i in range(self.size)
                           for j in range(self.size) if i != j}
                check(not proxies & set(raft + client), "a fault proxy holds a replica's port")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        layout_file.write_text(json.dumps({"raft": raft}))
        paths = []
        for i in range(self.size):
            rdir = self.data_dir / f"r{i}"
            rdir.mkdir(parents=True, exist_ok=True)
            config = {
                "name": f"r{i}", "raft_address": raft[i], "client_address": client[i],
                "peers": {raft[j]: client[j] for j in range(self.size) if j != i},
                "data_dir": str(rdir), "fsync": fsync, "limits": limits.model_dump(),
                "policy_modules": policy_modules, "log_level": log_level,
                "election_timeout_min_s": emin, "election_timeout_max_s": emax,
                "raft_dial": {} if self.net is None else {
                    raft[j]: self.net.dial_address(i, j) for j in range(self.size) if j != i},
                "clock_fault_file": str(rdir / CLOCK_FAULT_FILE) if self._clock_faults else None,
                "compaction_min_entries": self._compaction_min_entries,
                **self._per_replica,
            }
            path = rdir / "config.json"
            path.write_text(json.dumps(config, indent=2))
            paths.append(path)
        self.raft_addresses = raft
        self.endpoints = client
        return paths

    # ---------------------------------------------------------------------------- processes

    def _spawn(self, i: int) -> None:
        # Under the lock stop() sets ``_stopped`` with: a late restart (a nemesis heal racing
        # the end of a run) either happens before stop() stops everything, or not at all.
        with self._lock:
            if self._stopped:
                raise Unavailable(f"cluster stopped: not starting r{i}")
            self._spawn_locked(i)

    def _spawn_locked(self, i: int) -> None:
        if self.embedded:
            # Imported here: a process that only talks to replicas need not load Raft.
            from quorumboard.consensus.replica.machine import Replica, ReplicaConfig

            _configure_embedded_logging(self._log_level)
            config = ReplicaConfig.model_validate_json(self._configs[i].read_text())
            replica = Replica(config, secret=self.secret)
            replica.start()
            self._inproc[i] = replica
            return
        if self._lifeline is None:
            self._lifeline = Lifeline()
        args = [*self._replica_command(), str(self._configs[i]), *self._lifeline.child_args()]
        fds = [self._lifeline.read_fd]
        secret_fd: int | None = None
        if self.secret is not None:  # through a pipe: the secret is in no environment
            secret_fd, write_fd = os.pipe()
            try:
                os.write(write_fd, self.secret)
            finally:
                os.close(write_fd)
            args += ["--secret-fd", str(secret_fd)]
            fds.append(secret_fd)
        log_file = open(self.data_dir / f"r{i}" / "replica.log", "ab")  # noqa: SIM115
        try:
            self._procs[i] = subprocess.Popen(
                args, stdin=subprocess.DEVNULL, stdout=log_file, stderr=log_file,
                start_new_session=True, pass_fds=fds)
        finally:
            log_file.close()
            if secret_fd is not None:
                os.close(secret_fd)

    def _replica_command(self) -> list[str]:
        """How a replica process starts (its config and descriptors follow): the replica
        module, or with ``planted_bug`` the test harness's entry point. The harness's
        power-cut cluster overrides it (consensus/testing/powercut.py)."""
        if self._planted_bug is not None:
            return [sys.executable, "-m", TESTING_REPLICA_MODULE, "--planted-bug",
                    self._planted_bug]
        return [sys.executable, "-m", REPLICA_MODULE]

    def start(self, timeout_s: float = START_TIMEOUT_S) -> None:
        """Start every replica and wait until a leader has been elected and is serving."""
        try:
            for i in range(self.size):
                if self.pid(i) is None:
                    self._spawn(i)
            self.wait_for_leader(timeout_s)
        except BaseException:
            self.stop()
            raise

    def pid(self, i: int) -> int | None:
        """OS pid of replica ``i`` (this process's pid in embedded mode), ``None`` if down."""
        if self.embedded:
            return os.getpid() if self._inproc[i] is not None else None
        proc = self._procs[i]
        return proc.pid if proc is not None and proc.poll() is None else None

    def alive(self) -> list[int]:
        return [i for i in range(self.size) if self.pid(i) is not None]

    def _processes_only(self, what: str) -> None:
        if self.embedded:
            raise InvalidCommand(f"{what} needs replica processes: use LocalCluster(embedded=False)")

    def kill(self, i: int) -> None:
        """SIGKILL replica ``i`` (no chance to flush anything) and reap it."""
        self._processes_only("kill")
        proc = self._procs[i]
        if proc is None or proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGCONT)
            proc.kill()
        proc.wait(STOP_TIMEOUT_S)

    def pause(self, i: int, timeout_s: float = STOP_TIMEOUT_S) -> None:
        """SIGSTOP replica ``i``: it keeps its sockets but does nothing (a GC pause, a VM stall).

        Returns once the replica *is* stopped (on Linux, read from ``/proc``): a signal is
        delivered asynchronously, and on a loaded machine a replica could otherwise still
        answer a message sent right after this call."""
        self._processes_only("pause")
        proc = self._procs[i]
        if proc is not None and proc.poll() is None:
            os.kill(proc.pid, signal.SIGSTOP)
            stat = Path(f"/proc/{proc.pid}/stat")
            deadline = time.monotonic() + timeout_s
            while stat.exists() and time.monotonic() < deadline:  # bounded by the deadline
                try:
                    if stat.read_text().rpartition(")")[2].split()[0] in ("T", "t"):
                        return
                except (OSError, IndexError):
                    return  # exited meanwhile
                time.sleep(0.001)

    def resume(self, i: int) -> None:
        self._processes_only("resume")
        proc = self._procs[i]
        if proc is not None and proc.poll() is None:
            os.kill(proc.pid, signal.SIGCONT)

    @property
    def clock_faults(self) -> bool:
        """Whether replicas read their lease clock through a fault clock (:meth:`skew_clock`)."""
        return self._clock_faults

    def skew_clock(self, i: int, *, jump_s: float = 0.0, rate: float = 1.0) -> None:
        """Clock fault (``clock_faults=True`` only): replica ``i``'s lease clock jumps by
        ``jump_s`` now and runs ``rate`` times real time from now on. ``rate=1.0`` with no jump
        keeps whatever offset earlier jumps left; see :mod:`quorumboard.consensus.testing.clocks`."""
        if not self._clock_faults:
            raise InvalidCommand("clock faults need LocalCluster(clock_faults=True)")
        with self._lock:
            self._clock_serial += 1
            serial = self._clock_serial
        from quorumboard.consensus.testing.clocks import ClockFault, write_clock_fault

        write_clock_fault(self.data_dir / f"r{i}" / CLOCK_FAULT_FILE,
                          ClockFault(serial=serial, jump_s=jump_s, rate=rate))

    def restart(self, i: int, timeout_s: float = START_TIMEOUT_S) -> None:
        """Start replica ``i`` again from its data dir and wait until it serves status
        (embedded mode: a clean close and start, since a thread cannot be SIGKILLed)."""
        if self.embedded:
            replica, self._inproc[i] = self._inproc[i], None
            if replica is not None:
                replica.close()
        else:
            self.kill(i)
        self._spawn(i)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._status_of(i) is not None:
                return
            if not self.embedded and self._procs[i] is not None and \
                    self._procs[i].poll() is not None:  # type: ignore[union-attr]
                raise Unavailable(f"replica r{i} exited with {self._procs[i].returncode}; "  # type: ignore[union-attr]
                                  f"see {self.data_dir / f'r{i}' / 'replica.log'}")
            time.sleep(POLL_S)
        raise Unavailable(f"replica r{i} did not come back within {timeout_s}s")

    def stop(self) -> None:
        """Stop every replica (SIGTERM, then SIGKILL after a grace period) and close boards."""
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
        for board in self._boards:
            with contextlib.suppress(Exception):
                board.close()
        for i, replica in enumerate(self._inproc):
            if replica is not None:
                self._inproc[i] = None
                with contextlib.suppress(Exception):
                    replica.close()
        for proc in self._procs:
            if proc is not None and proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGCONT)
                    proc.terminate()
        deadline = time.monotonic() + STOP_TIMEOUT_S
        for proc in self._procs:
            if proc is None:
                continue
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(STOP_TIMEOUT_S)
        if self.net is not None:
            self.net.close()
        if self._lifeline is not None:
            self._lifeline.close()
            self._lifeline = None
        _LIVE.discard(self)
        if self._tmp is not None:
            with contextlib.suppress(OSError):
                self._tmp.cleanup()

    def __enter__(self) -> LocalCluster:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def __del__(self) -> None:  # pragma: no cover - safety net
        with contextlib.suppress(Exception):
            if not self._stopped:
                self.stop()

    # -------------------------------------------------------------------------- observation

    def board(self, agent: str, **kwargs: Any) -> Board:
        """A client handle for ``agent`` (closed when the cluster stops)."""
        board = Board(list(self.endpoints), agent, secret=self.secret, **kwargs)
        self._boards.append(board)
        return board

    def _status_of(self, i: int, digest: bool = False) -> ReplicaStatus | None:
        """Replica ``i``'s own status (pinned to it: no leader redirection), or ``None``."""
        if self.pid(i) is None:
            return None
        try:
            link = _Link(self.endpoints[i], self.secret, "cluster-observer", timeout_s=1.0)
        except (OSError, BoardError):
            return None
        try:
            return link.request(lambda rid: StatusReq(id=rid, digest=digest), 5.0).status
        except (OSError, BoardError, _Lost):
            return None
        finally:
            link.close()

    def status(self, digest: bool = False) -> list[ReplicaStatus | None]:
        """Each replica's status (``None`` for one that is down or not answering); with
        ``digest=True`` each includes its state digest (a hash of the whole state: slower)."""
        return [self._status_of(i, digest=digest) for i in range(self.size)]

    def leader(self) -> int | None:
        """Index of the replica that a majority of live replicas name as leader, if any."""
        votes: dict[str, int] = {}
        statuses = self.status()
        for st in statuses:
            if st is not None and st.leader is not None:
                votes[st.leader] = votes.get(st.leader, 0) + 1
        for addr, count in votes.items():
            if count > self.size // 2 and addr in self.raft_addresses:
                i = self.raft_addresses.index(addr)
                st = statuses[i]
                if st is not None and st.role == "leader":
                    return i
        return None

    def wait_for_leader(self, timeout_s: float = START_TIMEOUT_S) -> int:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            dead = [i for i, p in enumerate(self._procs) if p is not None and p.poll() is not None]
            if dead and len(dead) == self.size:
                raise Unavailable(f"every replica exited; see logs under {self.data_dir}")
            leader = self.leader()
            if leader is not None:
                return leader
            time.sleep(POLL_S)
        raise Unavailable(f"no leader elected within {timeout_s}s; logs under {self.data_dir}")

    def digests(self) -> list[str | None]:
        """State digest per replica (``None`` if down). Equal digests = identical state."""
        return [st.digest if st else None for st in
                (self._status_of(i, digest=True) for i in range(self.size))]

    def convergence(self, timeout_s: float = 30.0, *, replicas: list[int] | None = None
                    ) -> tuple[Convergence, list[str | None]]:
        """The one definition of convergence (the chaos verdict and :meth:`wait_converged`
        both use it): poll ``replicas`` (default: every replica) for their state digests.

        * ``converged``: every one answers and all digests are equal. The digest covers the
          count of applied proposals, so equal digests are equal state machines whatever Raft
          index each reports (a restarted replica may report another index for a while).
        * ``diverged``: different digests at the same applied index on ``DIVERGED_POLLS``
          polls in a row (the log is quiet and they still differ): no need to wait out the
          timeout.
        * ``unknown``: neither by ``timeout_s``; a replica that never answers (down, or still
          catching up) leaves it unknown, never diverged.

        Returns the verdict and the last digests seen (``None``: no answer)."""
        which = list(range(self.size)) if replicas is None else replicas
        deadline = time.monotonic() + timeout_s
        digests: list[str | None] = []
        diverged = 0
        for _ in range(CONVERGE_POLLS_MAX):  # bounded by the deadline too
            if time.monotonic() >= deadline:
                break
            statuses = [self._status_of(i, digest=True) for i in which]
            digests = [st.digest if st else None for st in statuses]
            applied = {st.last_applied if st else None for st in statuses}
            if which and None not in digests and len(set(digests)) == 1:
                return "converged", digests
            if len(applied) == 1 and None not in applied:
                diverged += 1
                if diverged >= DIVERGED_POLLS:
                    return "diverged", digests
            else:
                diverged = 0
            time.sleep(CONVERGE_POLL_S)
        return "unknown", digests

    def wait_converged(self, timeout_s: float = 30.0) -> str:
        """Wait until every live replica has the same state digest (:meth:`convergence`);
        return it. Raises :class:`Unavailable` otherwise, saying whether they diverged."""
        verdict, digests = self.convergence(timeout_s, replicas=self.alive())
        if verdict != "converged" or digests[0] is None:
            raise Unavailable(f"replicas did not converge within {timeout_s}s ({verdict}): "
                              f"{digests}")
        return digests[0]
